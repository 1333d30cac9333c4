"""Pieces shared by the live SDR sources (:mod:`.krakensdr`, :mod:`.coherent_rtlsdr`).

No sockets here: channel selection, the device frame counter (uint32, with gaps, wrap-around
and restarts), the frame ``seq`` that follows it, the reconnect back-off and the
"device stopped" error.  Each device frame of L samples (a KrakenSDR CPI, a coherent-rtlsdr
packet) is cut into ``L // T`` frames of T snapshots; frames never span two device frames,
because the device may re-calibrate, retune or drop data between them.
"""

from __future__ import annotations

import math

import numpy as np

from ..array import ULA

__all__ = [
    "U32",
    "Backoff",
    "DeviceStopped",
    "IndexTracker",
    "SeqMapper",
    "check_channels",
    "check_truth",
    "cut_frames",
    "make_array",
    "truth_meta",
]

#: Device counters are uint32 and wrap at 2**32.
U32 = 1 << 32
#: A forward jump larger than this many device frames is taken as a restart, not a loss.
MAX_GAP = 1 << 20


class DeviceStopped(RuntimeError):
    """The device sent nothing for ``timeout_s`` seconds (raised with ``on_timeout: fail``)."""


def check_channels(value) -> str | None:
    """``Param.check`` for ``channels``: null or a list of >= 2 distinct integers >= 0."""
    if value is None:
        return None
    ok = (
        isinstance(value, list)
        and len(value) >= 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        and len(set(value)) == len(value)
    )
    return None if ok else "null or a list of at least 2 distinct device channel indices (integers >= 0)"


def check_truth(value) -> str | None:
    """``Param.check`` for ``truth``: null or a list of ``{theta: rad, range: m}``."""
    if value is None:
        return None
    try:
        ok = isinstance(value, list) and all(
            isinstance(t, dict)
            and set(t) == {"theta", "range"}
            and math.isfinite(float(t["theta"]))
            and float(t["range"]) > 0
            for t in value
        )
    except (TypeError, ValueError):
        ok = False
    return None if ok else "null or a list of {theta: rad, range: m > 0}"


def truth_meta(value) -> dict | None:
    """``meta['truth']`` for a ``truth`` parameter (targets sorted by theta, no faults known)."""
    if value is None:
        return None
    targets = sorted(
        ({"theta": float(t["theta"]), "range": float(t["range"])} for t in value), key=lambda t: t["theta"]
    )
    return {"targets": targets}


def make_array(n: int, carrier_hz: float, spacing_m: float | None) -> ULA:
    """The ULA of ``n`` selected channels (spacing lambda/2 at ``carrier_hz`` when null)."""
    return ULA(n, float(carrier_hz), spacing_m)


def cut_frames(Y: np.ndarray, T: int):
    """Yield ``(k, Y[:, k*T:(k+1)*T])`` for the ``L // T`` whole frames of a (C, L) block."""
    for k in range(Y.shape[1] // T):
        yield k, np.ascontiguousarray(Y[:, k * T : (k + 1) * T])


class IndexTracker:
    """Follow a uint32 device frame counter; count lost frames, duplicates and restarts.

    ``update(index, skipped=0)`` returns ``(status, lost)``: status is ``"first"``,
    ``"next"`` (with ``lost`` frames missing before it), ``"duplicate"`` (the same index
    again: dropped) or ``"restart"`` (the counter went back, or jumped ahead by more than
    ``MAX_GAP``: a new stream, nothing counted as lost).  ``skipped`` is the number of device frames
    already accounted for since the last good index (e.g. headers dropped as malformed), which
    are not counted again as lost.  ``unwrapped`` is the index as an unbounded int.
    """

    def __init__(self) -> None:
        self.last: int | None = None
        self.unwrapped = 0

    def update(self, index: int, skipped: int = 0) -> tuple[str, int]:
        index = int(index) % U32
        if self.last is None:
            self.last, self.unwrapped = index, index
            return "first", 0
        diff = (index - self.last) % U32
        if diff == 0:  # the same frame again
            return "duplicate", 0
        self.last = index
        if diff > MAX_GAP:  # went back, or jumped implausibly far
            self.unwrapped = index
            return "restart", 0
        self.unwrapped += diff
        return "next", max(0, diff - 1 - skipped)


class SeqMapper:
    """Frame ``seq`` = base + (unwrapped device index - index base) * frames per device frame + k.

    Gaps in ``seq`` then mark every frame the device sent but we did not emit (lost,
    invalid, dropped).  Call :meth:`anchor` with the unwrapped index of the first device frame
    of a stream (the first header, and after a restart); a change of the frames per device
    frame re-bases the mapping at the current frame.  ``seq`` always increases.
    """

    def __init__(self) -> None:
        self.fpd: int | None = None  # frames per device frame of the current mapping
        self.index_base = 0
        self.seq_base = 0
        self.next_seq = 0
        self._anchor: int | None = None

    def anchor(self, unwrapped: int) -> None:
        self._anchor = unwrapped

    def seq(self, unwrapped: int, fpd: int, k: int) -> int:
        if self._anchor is not None:
            self.index_base, self.seq_base, self.fpd = self._anchor, self.next_seq, fpd
            self._anchor = None
        elif self.fpd != fpd:
            self.index_base, self.seq_base, self.fpd = unwrapped, self.next_seq, fpd
        s = self.seq_base + (unwrapped - self.index_base) * fpd + k
        self.next_seq = max(self.next_seq, s + 1)
        return s


class Backoff:
    """Reconnect delays: ``first``, doubling up to ``cap`` seconds; ``reset()`` after success."""

    def __init__(self, first: float = 0.05, cap: float = 2.0):
        self.first, self.cap = first, cap
        self.delay = first

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.cap, self.delay * 2)
        return d

    def reset(self) -> None:
        self.delay = self.first
