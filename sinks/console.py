"""Console sink: one short human-readable line per frame (every k-th frame).

Example::

    seq 7  t0 0.0007 s  targets: (-30.00 deg, 8.00 m) (-15.00 deg, 18.00 m)  faulty: 4  truth: 3 targets, 4 faulty

Angles are printed in degrees and ranges in metres, both labelled (degrees only at the
edges; radians inside).
"""
from __future__ import annotations

import math
import sys

from ..contract import FAULTY, TARGETS, TRUTH, optional
from ..block import BadFrame, Param, Sink, positive
from ..frame import Frame


def _fmt_targets(targets) -> str:
    items = sorted(targets or [], key=lambda t: t["theta"])
    if not items:
        return "none"
    return " ".join(f"({math.degrees(float(t['theta'])):.2f} deg, {float(t['range']):.2f} m"
                    + (f", {t['status']}" if t.get("status") not in (None, "ok") else "") + ")" for t in items)


def format_line(frame: Frame) -> str:
    """The one-line summary of a frame printed by :class:`ConsoleSink`."""
    meta = frame.meta or {}
    parts = [f"seq {frame.seq}", f"t0 {frame.t0:.6g} s", f"targets: {_fmt_targets(meta.get('targets'))}"]
    faulty = meta.get("faulty")
    parts.append(f"faulty: {len(faulty) if faulty is not None else 'n/a'}")
    truth = meta.get("truth")
    if truth is not None:
        parts.append(f"truth: {_fmt_targets(truth.get('targets'))}, {len(truth.get('faulty') or [])} faulty")
    return "  ".join(parts)


class ConsoleSink(Sink):
    """Print one short line per frame: seq, targets (deg, m), number of faulty antennas."""

    reads = (optional(TARGETS), optional(FAULTY), TRUTH)  # frame contract (nearfield.contract)
    params = (
        Param("every", int, 1, "print every k-th frame (by arrival order)", check=positive),
        Param("stream", str, "stdout", "where to print", choices=("stdout", "stderr")),
    )

    def start(self) -> None:
        self._n = 0

    def process(self, frame: Frame) -> None:
        if self._n % self.every == 0:
            out = sys.stdout if self.stream == "stdout" else sys.stderr
            try:
                line = format_line(frame)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise BadFrame(f"console: malformed meta ({type(exc).__name__}: {exc})") from None
            print(line, file=out, flush=True)
        self._n += 1
        return None
