"""Run results: the per-block summary table, drop reasons and the exit codes.

Exit codes of ``nearfield run`` (and :func:`exit_code`):

====  =====================================================================
code  meaning
====  =====================================================================
0     every block finished and the output is complete enough
1     a block failed while running, a worker died, or a block stalled
2     invalid input: flowgraph, ``--set``, usage, or an error raised in a
      block's ``start()`` (a device or file that cannot be opened)
3     the run ended normally but produced nothing (no frame reached a sink) or
      dropped more than ``max_drop_share`` of the frames the blocks received
130   interrupted (Ctrl-C, SIGTERM)
====  =====================================================================
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = [
    "RunResult",
    "format_summary",
    "exit_code",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_DEGRADED",
    "EXIT_INTERRUPTED",
    "DROP_KINDS",
]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_DEGRADED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: Drop counters of a block: undecodable message, failed ``requires`` check, BadFrame.
DROP_KINDS = ("wire", "invalid", "bad")
_MAX_REASONS = 32  # distinct drop reasons kept per block (the rest are "other")


def reason_key(kind: str, reason: str) -> str:
    """A drop reason without its numbers, so that equal causes add up (``seq=7`` -> ``seq=#``)."""
    return f"{kind}: " + re.sub(r"\d+", "#", str(reason))[:120]


def add_reason(reasons: dict, kind: str, reason: str) -> None:
    """Count one drop in ``reasons`` (at most ``_MAX_REASONS`` keys; then ``"<kind>: other"``)."""
    key = reason_key(kind, reason)
    if key not in reasons and len(reasons) >= _MAX_REASONS:
        key = f"{kind}: other"
    reasons[key] = reasons.get(key, 0) + 1


@dataclass
class RunResult:
    """Outcome of :func:`nearfield.runtime.run_flowgraph`.

    Attributes
    ----------
    ok : bool
        True when every block finished normally.
    summary : list of dict
        One dict per block (see :func:`format_summary` for the fields).
    error : str or None
        ``"block 'X' failed on frame seq=N: <Error>: <msg>"``, ``"interrupted"``, ...
    traceback : str or None
        Traceback of the failing block, when there is one.
    wall_s : float
        Wall time of the run, seconds.
    interrupted : bool
        True if stopped by Ctrl-C / SIGTERM.
    failed_stage : str or None
        Where the first failing block was (``"start"``, ``"process"``, ...), or ``"stall"``
        (watchdog) / ``"died"`` (worker died).
    """

    ok: bool
    summary: list
    error: str | None = None
    traceback: str | None = None
    wall_s: float = 0.0
    interrupted: bool = False
    failed_stage: str | None = None
    stats: dict = field(default_factory=dict)

    def block(self, name: str) -> dict:
        """The summary row of block ``name``."""
        for row in self.summary:
            if row["block"] == name:
                return row
        raise KeyError(name)

    def drop_reasons(self) -> list[tuple[str, str, int]]:
        """(block, reason, count) of every dropped frame, most frequent first."""
        out = [(r["block"], k, n) for r in self.summary for k, n in (r.get("drop_reasons") or {}).items()]
        return sorted(out, key=lambda t: -t[2])

    def drop_share(self) -> float:
        """Frames dropped / frames received, over every block with inputs (0 when none)."""
        rows = [r for r in self.summary if r.get("kind") != "source"]
        dropped = sum(r["dropped"] for r in rows)
        seen = sum(r["frames_in"] + r["dropped_detail"].get("wire", 0) for r in rows)
        return dropped / seen if seen else 0.0

    def delivered(self) -> int:
        """Frames the sinks accepted (received and not dropped)."""
        return sum(
            r["frames_in"] - r["dropped_detail"]["invalid"] - r["dropped_detail"]["bad"]
            for r in self.summary
            if r.get("kind") == "sink"
        )

    def degraded(self, max_drop_share: float = 0.5) -> str | None:
        """Why the run counts as degraded (exit code 3), or None.

        Degraded: no frame reached a sink, or more than ``max_drop_share`` of the frames
        received by the blocks were dropped.  The message names the top drop reasons.
        """
        has_sink = any(r.get("kind") == "sink" for r in self.summary)
        share = self.drop_share()
        why = None
        if has_sink and self.delivered() == 0:
            why = "the run produced nothing: no frame reached a sink"
        elif share > max_drop_share:
            why = f"dropped {100 * share:.0f}% of the frames (more than --max-drop-share {max_drop_share:g})"
        if why is None:
            return None
        top = self.drop_reasons()[:3]
        if top:
            why += "; top drop reasons: " + "; ".join(f"{n} x block {b!r} {k}" for b, k, n in top)
        return why


def exit_code(result: RunResult, max_drop_share: float = 0.5) -> int:
    """The documented exit code of a run (see the module docstring)."""
    if result.interrupted:
        return EXIT_INTERRUPTED
    if not result.ok:
        return EXIT_INVALID if result.failed_stage == "start" else EXIT_FAILED
    return EXIT_DEGRADED if result.degraded(max_drop_share) else EXIT_OK


def format_error(msg: dict) -> str:
    """The one-line error of a block failure report."""
    name = msg["block"]
    err = f"{msg['error']}: {msg['message']}" if msg.get("message") else msg["error"]
    if msg.get("seq") is not None:
        return f"block {name!r} failed on frame seq={msg['seq']}: {err}"
    stage = msg.get("stage") or "setup"
    after = f" (after frame seq={msg['last_seq']})" if msg.get("last_seq") is not None else ""
    where = {
        "generate": "in generate()",
        "start": "in start()",
        "finish": "in finish()",
        "close": "in close()",
        "setup": "during set-up",
        "eos": "sending end of stream",
        "process": "in process()",
        "emit": "sending a frame",
        "checkpoint": "in checkpoint()",
    }.get(stage, f"in {stage}")
    return f"block {name!r} failed {where}{after}: {err}"


def _fmt(x, spec="{:.2f}"):
    return "-" if x is None else spec.format(x)


def format_summary(summary: list, wall_s: float | None = None) -> str:
    """The per-block summary table as text.

    Columns: frames in/out; ``drop`` = frames dropped for bad data (invalid message,
    missing/non-finite required array, BadFrame); ``lost`` = frames dropped on lossy
    outgoing links; processing time per frame (mean, 95th percentile, ms); latency since
    the source emitted the frame (mean, p95, ms); ``busy`` = processing time / run time (a
    source placed with stages counts the source's ``generate()``, which runs in a helper thread,
    and the stages: the two overlap, so its busy share can exceed 100 %);
    ``blocked`` = time waiting for a slow downstream / run time.  When frames were
    dropped, the three most frequent reasons follow the table, then the non-zero counters a
    device source keeps of its own (``all_counters()``: invalid, incoherent, lost device frames).
    """
    head = [
        "block",
        "type",
        "in",
        "out",
        "drop",
        "lost",
        "proc ms",
        "p95 ms",
        "lat ms",
        "lat p95",
        "busy",
        "blocked",
        "status",
    ]
    rows = []
    for r in summary:
        rows.append(
            [
                r["block"],
                r["type"],
                str(r["frames_in"]),
                str(r["frames_out"]),
                str(r["dropped"]),
                str(r["lost"]),
                _fmt(r["proc_mean_ms"]),
                _fmt(r["proc_p95_ms"]),
                _fmt(r["latency_mean_ms"]),
                _fmt(r["latency_p95_ms"]),
                _fmt(None if r["busy"] is None else 100 * r["busy"], "{:.0f}%"),
                _fmt(None if r["blocked"] is None else 100 * r["blocked"], "{:.0f}%"),
                r["status"],
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    reasons: Counter[tuple[str, str]] = Counter()
    for r in summary:
        for k, n in (r.get("drop_reasons") or {}).items():
            reasons[(r["block"], k)] += n
    for (b, k), n in reasons.most_common(3):
        lines.append(f"dropped {n} x in block {b!r}: {k}")
    for r in summary:  # a device source's own counters (what it dropped before making frames)
        shown = {k: v for k, v in (r.get("counters") or {}).items() if v}
        if shown:
            lines.append(f"counters of block {r['block']!r}: " + ", ".join(f"{k} {v:g}" for k, v in shown.items()))
    if wall_s is not None:
        lines.append(f"wall time {wall_s:.3f} s")
    return "\n".join(lines)


def empty_row(name: str, spec, status: str) -> dict:
    """The summary row of a block that never reported (killed, never started)."""
    return {
        "block": name,
        "type": spec.type,
        "kind": spec.kind,
        "status": status,
        "frames_in": 0,
        "frames_out": 0,
        "dropped": 0,
        "dropped_detail": dict.fromkeys(DROP_KINDS, 0),
        "drop_reasons": {},
        "lost": 0,
        "proc_mean_ms": None,
        "proc_p95_ms": None,
        "latency_mean_ms": None,
        "latency_p95_ms": None,
        "busy": None,
        "blocked": None,
        "wall_s": 0.0,
        "cpu_s": None,
    }
