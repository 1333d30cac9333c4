"""Reference calibration as blocks: estimate the HI vector once, apply it live.

Thin adapters over :mod:`nearfield.estimators.reference` (the math lives there):

* :class:`ReferenceCalibrator` (``reference_calibrator``) accumulates the sufficient
  statistics of frames recorded while transmitters at known positions are on (``Y S^H``,
  ``S S^H`` with pilots, ``Y Y^H`` without), estimates the complex HI vector c after every
  accumulated frame, and writes it to ``state_path`` (atomically) when ``frames`` frames
  are in and again at close.  Frames pass on with ``arrays["c_hat"]`` (N,) complex64 and,
  with ``apply: true``, the snapshots calibrated as ``Y / c`` (dead channels zeroed).
* :class:`HIApply` (``hi_apply``) loads such a state file and calibrates every frame's
  snapshots with it, before the localization chain (the SDR workflow: record a
  reference, calibrate once, localize live).

State file (JSON, version 1): ``{"version": 1, "kind": "hi_vector", "n_antennas", "hi":
[[re, im]], "dead", "array", "references", "method", "frames", "snapshots",
"normalisation"}`` (:func:`nearfield.estimators.reference.hi_state`).
"""

from __future__ import annotations

import logging

import numpy as np

from nearfield.array import ULA
from nearfield.block import BadFrame, Block, Param, positive
from nearfield.contract import ARRAY, C_HAT, PILOTS, SNAPSHOTS, meta_field
from nearfield.estimators.reference import CalibrationStats, apply_hi, calibrate_stats, hi_error, hi_state, load_hi
from nearfield.state import save_json_atomic

log = logging.getLogger(__name__)


def _check_refs(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        return "null or a non-empty list of {theta: rad, range: m}"
    for i, t in enumerate(value):
        if not isinstance(t, dict) or set(t) != {"theta", "range"}:
            return f"target {i} as {{theta: rad, range: m}}"
        th, r = t["theta"], t["range"]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) for v in (th, r)):
            return f"target {i} with finite numbers"
        if not abs(th) < np.pi / 2 or not r > 0:
            return f"target {i} with |theta| < pi/2 rad and range > 0 m"
    return None


class ReferenceCalibrator(Block):
    """Estimate the complex HI vector from transmitters at known positions; save it as state."""

    params = (
        Param(
            "targets",
            (list, type(None)),
            None,
            "known reference positions [{theta: rad, range: m}] (several transmitters); null = theta/range",
            check=_check_refs,
        ),
        Param("theta", (float, type(None)), None, "angle of a single reference transmitter in rad (from broadside)"),
        Param("range", (float, type(None)), None, "range of a single reference transmitter in m", check=positive),
        Param("state_path", str, doc="JSON file the HI vector is written to (when 'frames' are in, and at close)"),
        Param(
            "frames",
            int,
            0,
            "frames to accumulate; 0 = every frame of the run; later frames are only calibrated",
            check=lambda v: None if v >= 0 else "an integer >= 0",
        ),
        Param("use_pilots", bool, True, "use the frames' pilots when they carry them (false: blind)"),
        Param("n_iter", int, 50, "alternation rounds at most (K > 1)", check=positive),
        Param("apply", bool, True, "pass the frames on calibrated (Y / c, dead channels zeroed)"),
    )
    reads = (ARRAY, SNAPSHOTS, PILOTS)
    adds = (
        SNAPSHOTS,
        C_HAT,
        meta_field("hi_frames", "int", doc="frames accumulated into the HI vector"),
        meta_field("hi_nmse", "float", doc="HI-vector NMSE against the truth", optional=True),
    )

    # set by start(); filled by the first accumulated frame
    stats: CalibrationStats | None
    c: np.ndarray | None  # HI vector estimate, (N,) complex
    array: ULA | None
    n_frames: int

    def validate(self) -> None:
        if self.targets is None:
            if self.theta is None or self.range is None:
                raise self.param_error("targets", "expected the reference positions: targets, or theta and range")
            if not abs(self.theta) < np.pi / 2:
                raise self.param_error("theta", f"expected |theta| < pi/2 rad, got {self.theta!r}")
            self._theta, self._r = np.array([self.theta]), np.array([self.range])
        else:
            if self.theta is not None or self.range is not None:
                raise self.param_error("targets", "expected either targets or theta/range, not both")
            self._theta = np.array([t["theta"] for t in self.targets], float)
            self._r = np.array([t["range"] for t in self.targets], float)

    def start(self) -> None:
        self.stats = None
        self.c = None
        self.array = None
        self.done = False
        self.saved = False

    def _save(self) -> None:
        stats, c, array = self.stats, self.c, self.array
        if stats is None or c is None or array is None:  # callers save only after a frame was accumulated
            raise RuntimeError(f"{self.name}: no HI vector to save")
        st = hi_state(
            c,
            array,
            self._theta,
            self._r,
            method="blind" if stats.blind else "pilots",
            frames=self.n_frames,
            snapshots=stats.n_snapshots,
        )
        save_json_atomic(self.state_path, st)
        self.saved = True
        log.info(
            "%s: HI vector of %d antennas from %d frames saved to %s",
            self.name,
            c.size,
            self.n_frames,
            self.state_path,
        )

    def process(self, frame):
        x = self.read(frame)
        Y, array = x["snapshots"], x["array"]
        n, k = array.n_antennas, self._theta.size
        if self.c is not None and n != self.c.size:
            raise BadFrame(f"snapshots: N={n} differs from the calibrated {self.c.size} antennas")
        if not self.done:
            pilots = x["pilots"]
            if not self.use_pilots:
                pilots = None
            blind = pilots is None if self.stats is None else self.stats.blind
            if not blind and pilots is None:
                raise BadFrame("pilots: missing, but the calibration started with pilots")
            if blind:
                pilots = None
            elif pilots.shape != (k, Y.shape[1]):
                raise BadFrame(f"pilots: expected ({k}, {Y.shape[1]}) for {k} reference(s), got {pilots.shape}")
            stats = CalibrationStats(n, k, blind)
            try:
                stats.update(Y, pilots)
            except ValueError as exc:
                raise BadFrame(str(exc)) from None
            # commit only a frame whose statistics give an estimate (the state stays as is otherwise)
            if self.stats is not None:
                stats.n_snapshots += self.stats.n_snapshots
                for f in ("ys", "ss", "yy", "power"):
                    a, b = getattr(self.stats, f), getattr(stats, f)
                    if a is not None:
                        setattr(stats, f, a + b)
            try:
                c = calibrate_stats(stats, array, self._theta, self._r, n_iter=self.n_iter)
            except ValueError as exc:
                raise BadFrame(f"reference calibration failed: {exc}") from None
            if self.stats is None:
                self.array, self.n_frames = array, 0
            self.stats, self.c = stats, c
            self.n_frames += 1
            if self.frames and self.n_frames >= self.frames:
                self.done = True
                self._save()
        if self.c is None:
            return frame
        truth_hi = (frame.meta.get("truth") or {}).get("hi")
        if truth_hi is not None:
            c_true = np.array([complex(*v) for v in truth_hi])
            if c_true.size == self.c.size:
                frame.meta["hi_nmse"] = hi_error(self.c, c_true)
        frame.meta["hi_frames"] = self.n_frames
        frame.arrays["c_hat"] = self.c.astype(np.complex64)
        if self.apply:
            frame.arrays["snapshots"] = apply_hi(Y, self.c).astype(np.complex64, copy=False)
        return frame

    def close(self) -> None:
        # close() runs also after Ctrl-C or another block's failure: what was accumulated is saved
        if getattr(self, "c", None) is not None and not (getattr(self, "done", False) and self.saved):
            self._save()


class HIApply(Block):
    """Calibrate every frame with a saved HI vector (Y / c; dead channels zeroed)."""

    params = (
        Param("state_path", str, doc="HI state file written by reference_calibrator"),
        Param(
            "threshold",
            float,
            0.1,
            "dead channel: |c_n| below this share of the median |c|",
            check=lambda v: None if 0 < v < 1 else "a ratio in (0, 1)",
        ),
    )
    reads = (SNAPSHOTS,)
    adds = (SNAPSHOTS, C_HAT)

    def start(self) -> None:
        self.c = load_hi(self.state_path, who=f"block {self.name!r}")

    def process(self, frame):
        Y = self.read(frame)["snapshots"]
        if Y.shape[0] != self.c.size:
            raise BadFrame(f"snapshots: expected ({self.c.size}, T) for the saved HI vector, got {Y.shape}")
        frame.arrays["snapshots"] = apply_hi(Y, self.c, self.threshold).astype(np.complex64, copy=False)
        frame.arrays["c_hat"] = self.c.astype(np.complex64)
        return frame
