"""Phase 2: phase calibration of the detected faulty antennas (paper Sec. IV-B).

The ideal fault-free signal of antenna i at time t is the *sum over targets*
``x_{i,t} = [A(theta, r) diag(beta) s_t]_i`` (PAPER-NOTES 3; eqs. (21)-(22) are written
for one target).  Two estimators of the phase bias zeta_i:

* ``"circular"`` (default): ``zeta_i = angle(sum_t y_{i,t} conj(x_{i,t}))`` -- the ML
  estimate of a unit-modulus c_i given x, which a deep fade (|x_{i,t}| ~ 0) cannot
  derail since each snapshot is weighted by |x_{i,t}| (PAPER-NOTES 4).  Across frames
  the sums simply add up.
* ``"unwrap"``: the paper's eqs. (23)-(25): per-snapshot phase differences, unwrapped
  along t (``numpy.unwrap``) and averaged (the average of the unwrapped values);
  fragile with K > 1 (kept for comparison).  Across frames, per-frame estimates are
  averaged on the circle.

The calibrated snapshots are ``y_hat_t = conj(c_hat) * y_t`` (eq. (27)), with
``c_hat_i = exp(j zeta_i)`` on detected antennas and 1 elsewhere (eq. (26)).
"""
from __future__ import annotations

import logging
import os

import numpy as np

from nearfield.array import ULA
from nearfield.block import BadFrame, Block, Param, frame_array, optional_finite, unit_interval
from nearfield.frame import meta_gains, meta_positions
from nearfield.state import complex_from_json, complex_to_json, load_json, save_json_atomic
from nearfield.steering import steering

log = logging.getLogger(__name__)


def ideal_signal(array: ULA, theta, r, gains, waveforms, rows=None) -> np.ndarray:
    """x = A(theta, r) diag(beta) S on the exact model, rows ``rows`` only -> (|rows|, T)."""
    A = steering(array, theta, r)
    if rows is not None:
        A = A[np.asarray(rows, dtype=int)]
    return A @ (np.asarray(gains)[:, None] * np.asarray(waveforms))


def phase_sums(Y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Circular evidence g_i = sum_t y_{i,t} conj(x_{i,t}), shape (rows,)."""
    return np.einsum("it,it->i", Y, X.conj())


def unwrap_phase(Y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The paper's eqs. (23)-(25): mean over t of the unwrapped phase differences (rad)."""
    d = np.angle(Y * X.conj())
    return np.mean(np.unwrap(d, axis=1), axis=1)


def hi_vector(n_antennas: int, faulty, zeta) -> np.ndarray:
    """c_hat of eq. (26): exp(j zeta_i) on ``faulty``, 1 elsewhere, shape (N,)."""
    c = np.ones(n_antennas, dtype=np.complex128)
    faulty = np.asarray(faulty, dtype=int)
    c[faulty] = np.exp(1j * np.asarray(zeta, dtype=float))
    return c


def calibrate(Y: np.ndarray, array: ULA, faulty, theta, r, gains, waveforms, method: str = "circular"):
    """Phase 2 on one block of snapshots.

    Parameters
    ----------
    Y : (N, T) snapshots.  array : ULA.  faulty : detected faulty antennas (0-based).
    theta, r, gains : (K,) model of Phase 1.  waveforms : (K, T) pilots or their estimate.
    method : "circular" or "unwrap".

    Returns
    -------
    c_hat : (N,) complex HI estimate (eq. 26).
    Y_cal : (N, T) calibrated snapshots conj(c_hat) * Y (eq. 27), dtype of Y.
    """
    faulty = np.asarray(faulty, dtype=int)
    X = ideal_signal(array, theta, r, gains, waveforms, faulty)
    Yf = np.asarray(Y)[faulty].astype(np.complex128)
    if method == "circular":
        zeta = np.angle(phase_sums(Yf, X))
    elif method == "unwrap":
        zeta = unwrap_phase(Yf, X)
    else:
        raise ValueError(f"method: expected 'circular' or 'unwrap', got {method!r}")
    c_hat = hi_vector(array.n_antennas, faulty, zeta)
    return c_hat, (c_hat.conj()[:, None] * Y).astype(np.asarray(Y).dtype, copy=False)


class Calibrator(Block):
    """Phase 2: estimate the faulty antennas' phase biases and calibrate the snapshots.

    Needs the meta of the fault detector (``faulty``, ``model_targets``, ``gains``) and the
    pilots (or the detector's ``waveforms``).  Evidence accumulates across frames per
    antenna, so c_hat improves with every frame; an antenna that leaves the faulty set
    keeps its evidence.  Replaces ``snapshots`` by the calibrated ones and adds ``c_hat``.
    """

    params = (
        Param("method", str, "circular", "phase estimator: circular (ML) or unwrap (paper eqs. 23-25)",
              choices=("circular", "unwrap")),
        Param("forget", float, 1.0, "weight kept by past evidence per frame (1 = keep all)", check=unit_interval),
        Param("state_path", (str, type(None)), None, "JSON file to load the evidence from and save it to"),
    )
    requires = ("snapshots",)

    def start(self):
        self.evidence = None  # complex (N,): circular sums, or sums of unit phasors (unwrap)
        if self.state_path and os.path.exists(self.state_path):
            st = load_json(self.state_path, f"block {self.name!r}")
            try:
                self.evidence = complex_from_json(st["evidence"])
                if not np.all(np.isfinite(self.evidence)):
                    raise ValueError("non-finite values")
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"block {self.name!r}, state_path {self.state_path!r}: bad 'evidence' ({exc})") from None

    def process(self, frame):
        meta = frame.meta
        missing = [k for k in ("array", "faulty", "model_targets", "gains") if k not in meta]
        if missing:
            raise BadFrame(f"meta: missing {missing} (is a fault_detector upstream?)")
        array = frame_array(frame)
        try:
            theta, r = meta_positions(meta, "model_targets")
            gains = meta_gains(meta)
            faulty = np.asarray(meta["faulty"], dtype=int).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise BadFrame(str(exc)) from None
        Y = frame.arrays["snapshots"]
        if Y.ndim != 2 or Y.shape[0] != array.n_antennas:
            raise BadFrame(f"snapshots: expected ({array.n_antennas}, T), got {Y.shape}")
        if faulty.size and (faulty.min() < 0 or faulty.max() >= array.n_antennas):
            raise BadFrame(f"meta.faulty: indices outside 0..{array.n_antennas - 1}")
        pilots, waveforms = optional_finite(frame, "pilots", "waveforms")
        S = pilots if pilots is not None else waveforms
        if S is None:
            raise BadFrame("arrays: neither 'pilots' nor 'waveforms' present")
        if self.evidence is not None and self.evidence.size != array.n_antennas:
            if self.state_path:  # a state file for another array: a configuration error, say so and stop
                raise ValueError(f"block {self.name!r}, state_path {self.state_path!r}: the state holds "
                                 f"{self.evidence.size} antennas, the frames {array.n_antennas}")
            raise BadFrame(f"snapshots: N={array.n_antennas} differs from the calibrator state's {self.evidence.size}")
        if S.shape != (theta.size, Y.shape[1]) or gains.size != theta.size:
            raise BadFrame(f"waveforms: expected ({theta.size}, {Y.shape[1]}) and {theta.size} gains, "
                           f"got {S.shape} and {gains.size}")
        evidence = np.zeros(array.n_antennas, np.complex128) if self.evidence is None else self.forget * self.evidence
        if faulty.size:
            X = ideal_signal(array, theta, r, gains, S, faulty)
            Yf = Y[faulty].astype(np.complex128)
            new = phase_sums(Yf, X) if self.method == "circular" else np.exp(1j * unwrap_phase(Yf, X))
            if not np.all(np.isfinite(new)):
                raise BadFrame("calibration gave non-finite phases; frame not accumulated")
            evidence[faulty] += new
        self.evidence = evidence
        c_hat = hi_vector(array.n_antennas, faulty, np.angle(self.evidence[faulty]))
        frame.arrays["snapshots"] = (c_hat.conj()[:, None] * Y).astype(np.complex64)
        frame.arrays["c_hat"] = c_hat.astype(np.complex64)
        return frame

    def close(self):
        # close() runs also after Ctrl-C or another block's failure: the evidence is never lost
        if self.state_path and getattr(self, "evidence", None) is not None:
            save_json_atomic(self.state_path, {"version": 1, "evidence": complex_to_json(self.evidence)})
