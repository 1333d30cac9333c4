"""Phase 2: phase calibration of the detected faulty antennas (paper Sec. IV-B).

The ideal fault-free signal of antenna i at time t is the *sum over targets*
``x_{i,t} = [A(theta, r) diag(beta) s_t]_i`` (eqs. (21)-(22) are written for one target).
Two estimators of the phase bias zeta_i:

* ``"circular"`` (default): ``zeta_i = angle(sum_t y_{i,t} conj(x_{i,t}))`` -- the ML
  estimate of a unit-modulus c_i given x, which a deep fade (|x_{i,t}| ~ 0) cannot
  derail since each snapshot is weighted by |x_{i,t}|.  Across frames the sums add up.
* ``"unwrap"``: the paper's eqs. (23)-(25): per-snapshot phase differences, unwrapped
  along t (``numpy.unwrap``) and averaged; fragile with K > 1 (kept for comparison).
  Across frames, per-frame estimates are averaged on the circle.

The calibrated snapshots are ``y_hat_t = conj(c_hat) * y_t`` (eq. (27)), with
``c_hat_i = exp(j zeta_i)`` on detected antennas and 1 elsewhere (eq. (26)).
"""
from __future__ import annotations

import numpy as np

from ..array import ULA
from ..scenario import noiseless_signal

def ideal_signal(array: ULA, theta, r, gains, waveforms, rows=None) -> np.ndarray:
    """x = A(theta, r) diag(beta) S on the exact model, rows ``rows`` only -> (|rows|, T)."""
    X = noiseless_signal(array, theta, r, gains, waveforms)
    return X if rows is None else X[np.asarray(rows, dtype=int)]


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


def phase_evidence(Y: np.ndarray, array: ULA, faulty, theta, r, gains, waveforms,
                   method: str = "circular") -> np.ndarray:
    """Per-antenna phase evidence on the ``faulty`` rows, shape (D,) complex.

    ``"circular"``: the sums g_i of :func:`phase_sums` (they add up across frames);
    ``"unwrap"``: unit phasors exp(j zeta_i) of the paper's estimate (averaged on the circle
    across frames).  ``angle()`` of the (accumulated) evidence is zeta_i.
    """
    if method not in ("circular", "unwrap"):
        raise ValueError(f"method: expected 'circular' or 'unwrap', got {method!r}")
    faulty = np.asarray(faulty, dtype=int)
    X = ideal_signal(array, theta, r, gains, waveforms, faulty)
    Yf = np.asarray(Y)[faulty].astype(np.complex128)
    return phase_sums(Yf, X) if method == "circular" else np.exp(1j * unwrap_phase(Yf, X))



def calibrate_phases(Y: np.ndarray, array: ULA, faulty, theta, r, gains, waveforms, method: str = "circular"):
    """Phase 2 on one block of snapshots (the faulty antennas' phases; the reference calibration of
    the full HI vector is :func:`nearfield.estimators.reference.calibrate`, ``nearfield.calibrate``).

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
    zeta = np.angle(phase_evidence(Y, array, faulty, theta, r, gains, waveforms, method))
    c_hat = hi_vector(array.n_antennas, faulty, zeta)
    return c_hat, (c_hat.conj()[:, None] * Y).astype(np.asarray(Y).dtype, copy=False)


#: Former name of :func:`calibrate_phases` (kept for old callers).
calibrate = calibrate_phases
