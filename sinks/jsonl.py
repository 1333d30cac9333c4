"""JSON Lines sink: the estimates record, one object per frame.

Each line is exactly::

    {"seq": int, "t0": float (s),
     "targets": [{"theta": rad, "range": m,             # sorted by theta; [] when absent
                  "theta_std": rad, "range_std": m,     # 1-sigma error bars (CRB at the estimate)
                  "status": str}, ...],                 # "ok", "fallback", "model_mismatch",
                                                        # "range_at_bound", "unresolved"
     "faulty": [0-based antenna indices],               # [] when absent
     "truth": {"targets": [...], "faulty": [...]},      # only when the frame carries truth
     "latency_s": float,                                # now - meta["t_emit"] (null if unstamped)
     "residual": float,                                 # fit residual per antenna and snapshot (*)
     "model_check": float}                              # sigma2_fit / sigma2_floor, ~1: model holds (*)

Outside tools read this file: the names and units are a contract; fields are only ever added.
``theta_std``, ``range_std`` and ``status`` appear in a target when the localizer produced them
(the chain's music_localizer does; older producers' targets have only theta and range);
``residual`` and ``model_check`` are present only when the frame carries them, so records of
older producers are unchanged.  ``status`` is
``"fallback"`` for a sound target of the full-array path (the subarray stage could not be
used), ``"ok"`` for one of the chain.  ``truth`` keeps the
source's ``targets`` (sorted by theta) and ``faulty`` only.

Earlier output is never destroyed.  By default (``append: false``) the records go to a new
file ``<path>.partial`` (:attr:`JsonlSink.partial_path`), which replaces ``path``
atomically (rename) only at the end of the stream (``finish()``).  A run that fails or is
interrupted -- also one that fails at start, before any frame -- leaves the previous
``path`` untouched; the records it did write stay in ``<path>.partial`` (named in a
warning), contiguous, for the user to keep or delete.  With ``append: true`` the records
are appended to ``path`` itself.  Lines are flushed to the OS every ``flush_every`` frames
(default every frame, so a crash loses nothing written).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from ..contract import FAULTY, MODEL_CHECK, RESIDUAL, TARGETS, TRUTH, optional
from ..block import BadFrame, Param, ParamError, Sink, positive
from ..frame import Frame, finite_or_none

log = logging.getLogger(__name__)


def _targets(items) -> list:
    out = []
    for t in items or []:
        e = {"theta": float(t["theta"]), "range": float(t["range"])}
        for key in ("theta_std", "range_std"):
            if t.get(key) is not None:
                e[key] = float(t[key])
        if t.get("status") is not None:
            e["status"] = str(t["status"])
        out.append(e)
    out.sort(key=lambda t: t["theta"])
    return out


def estimates_record(frame: Frame, now: float | None = None) -> dict:
    """The estimates record of one frame (a dict ready for ``json.dumps``).

    ``latency_s`` is ``now - meta["t_emit"]`` (``now`` defaults to ``time.time()``), or
    ``None`` when the frame was never stamped by a runtime.  Malformed meta fields raise
    :class:`~nearfield.block.BadFrame` naming the field (the frame is dropped, not the graph).
    """
    try:
        return _record(frame, now)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadFrame(f"estimates record: malformed meta ({type(exc).__name__}: {exc})") from None


def _record(frame: Frame, now: float | None) -> dict:
    meta = frame.meta or {}
    rec = {
        "seq": int(frame.seq),
        "t0": float(frame.t0),
        "targets": _targets(meta.get("targets")),
        "faulty": [int(i) for i in (meta.get("faulty") or [])],
    }
    truth = meta.get("truth")
    if truth is not None:
        rec["truth"] = {"targets": _targets(truth.get("targets")),
                        "faulty": [int(i) for i in (truth.get("faulty") or [])]}
    t_emit = meta.get("t_emit")
    if t_emit is None:
        rec["latency_s"] = None
    else:
        now = time.time() if now is None else now
        rec["latency_s"] = float(now - float(t_emit))
    for key in ("residual", "model_check"):  # new fields, only when a localizer produced them
        if meta.get(key) is not None:
            rec[key] = float(meta[key])
    return rec


class JsonlSink(Sink):
    """Write one estimates record per frame to a JSON Lines file."""

    reads = (optional(TARGETS), optional(FAULTY), TRUTH, RESIDUAL, MODEL_CHECK)  # frame contract (nearfield.contract)
    params = (
        Param("path", str, doc="output file (.jsonl); parent directories are created"),
        Param("flush_every", int, 1, "flush to the OS every k frames (1 = nothing lost on a crash)",
              check=positive),
        Param("append", bool, False, "append to an existing file instead of writing <path>.partial "
              "and renaming it over path at the end of the stream"),
    )

    def validate(self) -> None:
        if not self.path.strip():
            raise self.param_error("path", "expected a file path, got an empty string")
        self._fh = None
        self.count = 0
        self.partial_path = self.path if self.append else self.path + ".partial"

    def start(self) -> None:
        path = Path(self.partial_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a" if self.append else "w", encoding="utf-8")
        except OSError as exc:
            raise ParamError(f"block {self.name!r}, parameter 'path': cannot write {str(path)!r}: "
                             f"{exc.strerror or exc}") from None
        self._pending = 0
        self.count = 0

    def process(self, frame: Frame) -> None:
        rec = finite_or_none(estimates_record(frame))
        self._fh.write(json.dumps(rec, allow_nan=False, separators=(", ", ": ")) + "\n")
        self.count += 1
        self._pending += 1
        if self._pending >= self.flush_every:
            self._fh.flush()
            self._pending = 0
        return None

    def finish(self):
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            if not self.append:
                os.replace(self.partial_path, self.path)   # atomic: old file or new file
        return None

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            fh.flush()
        finally:
            fh.close()
        if self.append:
            return
        if self.count == 0:     # nothing written: no trace, the earlier output stays as it was
            os.unlink(self.partial_path)
        else:
            log.warning("block %r: the stream did not end normally; %d record(s) kept in %s "
                        "(%s left unchanged)", self.name, self.count, self.partial_path, self.path)
