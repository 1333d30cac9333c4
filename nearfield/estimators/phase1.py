"""Phase 1: faulty-antenna detection and coarse localization (paper Sec. IV-A).

:func:`detect_faults` alternates: coarse positions (:func:`coarse_positions`)
-> exact-model polish (:func:`robust_polish`) -> gains (20) or waveforms -> ISTA on (P3)
(:func:`ista_detect`) -> faulty set (12), until the faulty set stops changing.

Choices the paper leaves open, all parameters:

* "Polish": before ISTA, the coarse positions are refined by the exact-model ML fit
  (:func:`nearfield.ml.refine_ml`) on the antennas not flagged so far. Without it the
  model x_t inherits the triangulation error, whose phase error grows towards the array
  ends and reads as faults; with it, detection is limited by noise only.
  ``polish=False`` gives the paper's Phase 1 as written.
* Noise level: ``sigma^2 = median_n mean_t |y_{n,t} - x_{n,t}|^2`` (robust to the few
  faulty antennas); rho = kappa sigma sqrt(mean_n sum_t |x_n|^2) (:func:`nearfield.ista.noise_rho`),
  so an intact antenna survives the shrinkage with probability ~exp(-kappa^2); then
  D = {n : |z_n| > tau}.
* Without pilots, the waveforms are estimated by LS from the current model
  (:func:`nearfield.ml.ls_waveforms`); with unknown K, ``n_targets="auto"`` takes the
  median MDL order over the subarray covariances.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..array import ULA
from ..ista import ista_solve, ista_stats, noise_rho
from ..ml import ls_gains, ls_gains_stats, ls_waveforms, refine_ml, suff_stats
from ..scenario import noiseless_signal
from ..steering import steering
from .interface import resolve_order
from .subarrays import coarse_localize, estimate_order, match_to_pilots


@dataclass
class Phase1Result:
    """Output of :func:`detect_faults` (entries k follow the pilot rows when pilots are given).

    faulty : (D,) int, sorted. z : (N,) complex fault mask. coarse_theta, coarse_r : (K,)
    triangulated positions (the paper's coarse estimate). theta, r : (K,) positions of the
    HI model (polished when ``polish``). gains : (K,). waveforms : (K, T) pilots or their LS
    estimate. sigma2 : noise variance estimate. stats : (e, b) per-antenna ISTA statistics
    of this frame. iterations : alternation rounds. n_subarrays : Q of the last round.
    """

    faulty: np.ndarray
    z: np.ndarray
    coarse_theta: np.ndarray
    coarse_r: np.ndarray
    theta: np.ndarray
    r: np.ndarray
    gains: np.ndarray
    waveforms: np.ndarray
    sigma2: float
    stats: tuple = field(repr=False, default=())
    iterations: int = 0
    n_subarrays: int = 0

    @property
    def n_targets(self) -> int:
        return int(self.theta.size)


#: per-antenna residuals from the sufficient statistics are trusted while their median is above this share of
#: the median data power (below, e.g. noise-free data, the subtraction ||y||^2 - ... has lost the digits)
_CANCEL_RTOL = 1e-8


class _PilotStats:
    """Sufficient statistics of one frame for known pilots S (K, T): ``Q = Y S^H`` (N, K), ``yy = ||y_n||^2``
    (N,), ``P = S^* S^T`` (K, K), formed once per frame (O(N T K)).  With them the per-antenna residual
    power and the ISTA statistics of a model ``X = A diag(beta) S`` are O(N K^2) (:meth:`model_stats`)
    instead of forming X (N, T)."""

    def __init__(self, Y: np.ndarray, S: np.ndarray):
        self.Q, self.yy = suff_stats(Y, S)
        self.P = S.conj() @ S.T
        self.T = Y.shape[1]
        self.floor = _CANCEL_RTOL * _median(self.yy) / self.T

    def model_stats(self, A: np.ndarray, gains: np.ndarray):
        """(res (N,), e (N,), b (N,)) of the model: ``res_n = mean_t |y - x|^2``, ``e_n = sum_t |x|^2``,
        ``b_n = sum_t conj(x) (y - x)`` (:func:`nearfield.ista.ista_stats`); None when the data are so
        clean that ``res`` would be rounding noise (the caller then forms X)."""
        M = A * gains[None, :]
        mq = np.sum(M.conj() * self.Q, axis=1)
        e = np.real(np.sum(M.conj() * (M @ self.P.T), axis=1))
        res = (self.yy - 2.0 * mq.real + e) / self.T
        if not _median(res) > self.floor:
            return None
        return res, e, mq - e


def _median(x: np.ndarray) -> float:
    """``np.median`` of a 1-D float array (same value) by one partition, without its checks and copies."""
    n = x.size
    k = n // 2
    if n == 0:
        return float("nan")  # as np.median (which also warns)
    if n % 2:
        return float(np.partition(x, k)[k])
    p = np.partition(x, (k - 1, k))
    return float((p[k - 1] + p[k]) / 2.0)


def robust_polish(
    Y, array, theta, r, pilots, w, rounds: int = 3, factor: float = 4.0, max_share: float = 0.4, stats=None
):
    """Exact-model ML fit of the positions, excluding outlying antennas (undetected faults).

    Returns theta, r and the antenna weights used (0 on excluded antennas).

    After each fit, antennas whose residual power exceeds ``factor`` x the median are
    given zero weight and the fit is repeated (at most ``rounds`` times, and only while the
    outliers are fewer than ``max_share`` of the array: otherwise the model, not the
    antennas, is off).  With many faults (p_fault of several per cent) an unweighted first
    fit is biased enough that ISTA would flag most of the array.  ``stats``: the frame's
    :class:`_PilotStats` (pilots only), so neither the fit nor the residuals pass over Y again.
    """
    w = w.copy()
    best = (theta, r)
    for _ in range(rounds):
        fit = refine_ml(Y, array, best[0], best[1], pilots, w=w, stats=None if stats is None else (stats.Q, stats.yy))
        if not (np.all(np.isfinite(fit.theta)) and np.all(fit.r > 0)):
            break
        best = (fit.theta, fit.r)
        S, g = (fit.pilots, np.ones(fit.theta.size)) if pilots is None else (pilots, fit.gains)
        ms = None if stats is None else stats.model_stats(steering(array, fit.theta, fit.r), fit.gains)
        if ms is not None:
            res = ms[0]
        else:
            X = noiseless_signal(array, fit.theta, fit.r, g, S)
            res = np.mean(np.abs(Y - X) ** 2, axis=1)
        out = (res > factor * _median(res[w > 0])) & (w > 0)
        if not out.any() or out.sum() + np.sum(w == 0) > max_share * w.size:
            break
        w[out] = 0.0
    return best[0], best[1], w


def coarse_positions(
    Y: np.ndarray,
    array: ULA,
    n_targets: int,
    faulty,
    pilots: np.ndarray | None,
    w: np.ndarray,
    min_subarray: int = 10,
    grid_size: int = 256,
):
    """Coarse positions avoiding ``faulty``, rows following the pilots when given (weights ``w`` for the match).

    Returns theta (K,), r (K,) and the number of subarrays Q; ``ValueError`` when a target's
    bearing lines do not intersect.
    """
    c_th, c_r, Q = coarse_localize(Y, array, n_targets, faulty, min_subarray, grid_size)
    if not np.all(np.isfinite(c_th)):
        raise ValueError("coarse localization: a target's bearing lines do not intersect")
    if pilots is not None:
        perm = match_to_pilots(Y, array, c_th, c_r, pilots, w)
        c_th, c_r = c_th[perm], c_r[perm]
    return c_th, c_r, Q


def fit_signal(Y: np.ndarray, array: ULA, theta, r, pilots: np.ndarray | None, w: np.ndarray):
    """Gains (eq. 20) with pilots, else LS waveforms, on the antennas with weight ``w > 0``.

    Returns gains (K,), waveforms S (K, T) (the pilots when given) and the fault-free
    model X = A(theta, r) diag(gains) S, shape (N, T).
    """
    A = steering(array, theta, r)
    if pilots is not None:
        S, gains = pilots, ls_gains(A, pilots, Y, w=w)
    else:
        S, gains = ls_waveforms(A, Y, w=w), np.ones(np.size(theta), complex)
    return gains, S, noiseless_signal(array, theta, r, gains, S)


def ista_detect(Y: np.ndarray, X: np.ndarray, sigma2: float, kappa: float, tau: float):
    """Fault mask of (P3) with rho from the noise level, and the faulty set of eq. (12).

    Returns faulty (D,) int, z (N,) complex and the per-antenna statistics (e, b).
    """
    e, b = ista_stats(Y, X)
    z = ista_solve(e, b, noise_rho(X, sigma2, kappa))
    return np.flatnonzero(np.abs(z) > tau), z, (e, b)


def detect_faults(
    Y: np.ndarray,
    array: ULA,
    pilots: np.ndarray | None = None,
    n_targets=None,
    *,
    prior_faulty=(),
    kappa: float = 3.0,
    tau: float = 0.05,
    max_iter: int = 5,
    min_subarray: int = 10,
    grid_size: int = 256,
    polish: bool = True,
    start=None,
) -> Phase1Result:
    """Phase 1 of the paper: alternate coarse localization and ISTA fault detection.

    Parameters
    ----------
    Y : ndarray, shape (N, T), complex
        Snapshots of eq. (5).
    array : ULA
    pilots : ndarray, shape (K, T), optional
        Known probing signals; without them the waveforms are estimated.
    n_targets : int or "auto", optional
        K; taken from ``pilots`` when given; "auto" (or None without pilots) uses MDL.
    prior_faulty : iterable of int
        Faulty set to start from (streaming state).
    kappa, tau : float
        Shrinkage in noise standard deviations, and detection threshold on |z| (eq. 12).
    max_iter : int
        Alternation rounds at most (stops when the faulty set repeats).
    min_subarray, grid_size : int
        Smallest subarray kept; points of the sin(theta) MUSIC scan.
    polish : bool
        Refine the coarse positions by the exact-model ML fit before ISTA (see module doc).
    start : (theta, r), optional
        Tracking: skip the subarray search and start the ML fit from these positions (rows
        following the pilots), e.g. the previous frame's; ``coarse_theta``/``coarse_r`` of
        the result are then these positions.

    Returns
    -------
    Phase1Result

    Raises
    ------
    ValueError
        When fewer than two subarrays or no usable position can be formed.
    """
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != array.n_antennas:
        raise ValueError(f"snapshots: expected shape ({array.n_antennas}, T), got {Y.shape}")
    Yd = Y.astype(np.complex128)
    N = array.n_antennas
    if pilots is not None:
        pilots = np.asarray(pilots, dtype=np.complex128)
        if pilots.ndim != 2 or pilots.shape[1] != Y.shape[1]:
            raise ValueError(f"pilots: expected shape (K, {Y.shape[1]}), got {pilots.shape}")
    K = resolve_order(pilots, n_targets)
    if K is None:
        K = estimate_order(Yd, array, prior_faulty, min_subarray)
        if K < 1:
            raise ValueError("n_targets=auto: no target found (MDL order 0)")
    faulty = np.unique(np.asarray(list(prior_faulty), dtype=int))
    seen: list[np.ndarray] = []
    res: Phase1Result | None = None
    if start is not None:
        start = (np.asarray(start[0], float), np.asarray(start[1], float))
        if start[0].size != K:
            raise ValueError(f"start: expected {K} positions, got {start[0].size}")
    # known pilots: Y S^H and ||y_n||^2 once; the fits, residuals and ISTA statistics below are then O(N K^2)
    stats = None if pilots is None else _PilotStats(Yd, pilots)
    for it in range(1, max_iter + 1):
        w = np.ones(N)
        w[faulty] = 0.0
        if start is not None:
            (c_th, c_r), Q = start, 0
        else:
            c_th, c_r, Q = coarse_positions(Yd, array, K, faulty, pilots, w, min_subarray, grid_size)
        th, rr = c_th, c_r
        if polish:
            th, rr, w = robust_polish(Yd, array, c_th, c_r, pilots, w, stats=stats)  # gains skip the outliers too
        ms = None
        if stats is not None and pilots is not None:
            A = steering(array, th, rr)
            gains, S = ls_gains_stats(A, stats.P, stats.Q, w=w), pilots
            ms = stats.model_stats(A, gains)
        if ms is not None:
            resid, e, b = ms
            sigma2 = _median(resid)
            # as ista_detect, with rho = kappa sigma sqrt(mean_n e_n) (nearfield.ista.noise_rho)
            z = ista_solve(e, b, float(kappa * np.sqrt(sigma2) * np.sqrt(np.mean(e))))
            new = np.flatnonzero(np.abs(z) > tau)
        else:
            gains, S, X = fit_signal(Yd, array, th, rr, pilots, w)
            sigma2 = float(np.median(np.mean(np.abs(Yd - X) ** 2, axis=1)))
            new, z, (e, b) = ista_detect(Yd, X, sigma2, kappa, tau)
        res = Phase1Result(new, z, c_th, c_r, th, rr, gains, S, sigma2, (e, b), it, Q)
        if np.array_equal(new, faulty) or any(np.array_equal(new, s) for s in seen):
            break
        seen.append(faulty)
        faulty = new
    if res is None:  # the loop ran no iteration
        raise ValueError(f"max_iter: expected >= 1, got {max_iter}")
    return res
