"""Deterministic maximum-likelihood fit on the exact model: LS gains and LM refinement.

With white circular Gaussian noise and known probing signals S (K, T), the ML
estimate of (beta, theta, r) minimises the least-squares cost of (P1)/(P4),

    J(beta, theta, r) = sum_t || W^{1/2} (y_t - diag(c) A(theta, r) diag(beta) s_t) ||^2,

with ``W = diag(w)`` optional per-antenna weights (0 excludes an antenna, e.g. one
flagged faulty).  :func:`ls_gains` is its closed-form minimiser in beta (eqs. (8),
(20)); :func:`refine_ml` runs Levenberg-Marquardt on all 4K real parameters
eta = [Re beta, Im beta, theta, r] (the CRB's parameter vector) with the analytic
derivatives of :mod:`nearfield.steering`, on the *exact* spherical model, so the
Fresnel approximation of the decoupled MUSIC leaves no bias (docs/paper-errata.md, errata 5).

Every column of the Jacobian is an outer product g s_k^T (g in C^N), so the
(N T x 4K) Jacobian is never formed; and the cost and the gradient need the data only
through the sufficient statistics ``Y S^H`` (N, K), ``||y_n||^2`` (N,) and ``S S^H`` (K, K),
formed once per fit (O(N T K)), so each LM iteration and each trial step is O(N K^2).

Without pilots, the waveforms are estimated from the current model by weighted LS,
``S_hat = (A^H W A)^-1 A^H W Y`` (gains then absorbed: beta = 1), alternating with
the LM step -- a block-coordinate descent of the same ML cost with unknown waveforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .array import ULA
from .steering import steering, steering_derivatives


def _weighted(A: np.ndarray, c, w):
    if c is not None:
        A = np.asarray(c)[:, None] * A
    AW = A.conj().T if w is None else A.conj().T * np.asarray(w)[None, :]
    return A, AW


def ls_gains(A: np.ndarray, pilots: np.ndarray, Y: np.ndarray, c=None, w=None) -> np.ndarray:
    """Least-squares channel gains beta (eqs. (8), (20)), shape (K,).

    Solves ``G beta = rhs`` with ``G_kl = (A^H W A)_kl (S^* S^T)_kl`` and
    ``rhs_k = a_k^H W Y s_k^*``.  ``A`` (N, K), ``pilots`` S (K, T), ``Y`` (N, T),
    ``c`` (N,) HI vector applied to A, ``w`` (N,) antenna weights.
    """
    A, AW = _weighted(A, c, w)
    S = np.asarray(pilots)
    G = (AW @ A) * (S.conj() @ S.T)
    rhs = np.sum((AW @ Y) * S.conj(), axis=1)
    return np.linalg.lstsq(G, rhs, rcond=None)[0]


def ls_gains_stats(A: np.ndarray, P: np.ndarray, Q: np.ndarray, c=None, w=None) -> np.ndarray:
    """:func:`ls_gains` from the sufficient statistics ``P = S^* S^T`` (K, K) and ``Q = Y S^H`` (N, K):
    ``rhs_k = sum_n w_n (c_n a_nk)^* Q_nk``, O(N K^2) instead of O(N T K); the same solution."""
    A, AW = _weighted(A, c, w)
    return np.linalg.lstsq((AW @ A) * P, np.sum(AW.T * Q, axis=0), rcond=None)[0]


def ls_waveforms(A: np.ndarray, Y: np.ndarray, c=None, w=None) -> np.ndarray:
    """Waveforms S_hat = (A^H W A)^-1 A^H W Y, shape (K, T) (no pilots: beta = 1)."""
    A, AW = _weighted(A, c, w)
    return np.linalg.lstsq(AW @ A, AW @ Y, rcond=None)[0]


@dataclass
class MLFit:
    """Result of :func:`refine_ml`.

    theta, r : (K,) rad, m.  gains : (K,) complex.  cost : final weighted LS cost.
    iterations : LM iterations taken.  converged : bool.  pilots : (K, T) the waveforms used
    (the given pilots, or the estimated ones).  stats : with given pilots, the :func:`suff_stats`
    (Y S^H, ||y_n||^2) of the data fitted (a later pass over the same Y and S can reuse them); else None.
    """

    theta: np.ndarray
    r: np.ndarray
    gains: np.ndarray
    cost: float
    iterations: int
    converged: bool
    pilots: np.ndarray
    stats: tuple[np.ndarray, np.ndarray] | None = None


def _cost(Y, A, gains, S, c, w):
    M = A @ (gains[:, None] * S)
    if c is not None:
        M = np.asarray(c)[:, None] * M
    E = Y - M
    p = np.sum(np.abs(E) ** 2, axis=1)
    return float(np.sum(p if w is None else w * p)), E


def ml_cost(
    Y: np.ndarray, array: ULA, theta, r, pilots: np.ndarray | None, c=None, w=None, model: str = "exact"
) -> float:
    """The LS cost J at (theta, r) with the gains (or, without pilots, the waveforms) concentrated out."""
    A = steering(array, theta, r, model)
    w = None if w is None else np.asarray(w, float)
    if pilots is None:
        S = ls_waveforms(A, Y, c, w)
        return _cost(Y, A, np.ones(A.shape[1], complex), S, c, w)[0]
    return _cost(Y, A, ls_gains(A, pilots, Y, c, w), np.asarray(pilots), c, w)[0]


#: use the compiled LM (:mod:`nearfield.lm_kernel`) for the exact model; False = the NumPy loop below
USE_NUMBA = True


def _suff_cost(yy, Q, P, M, w):
    """Weighted LS cost from sufficient statistics, O(N K^2) instead of O(N T K).

    ``||y_n - sum_k M_nk s_k||^2 = ||y_n||^2 - 2 Re sum_k M_nk^* Q_nk + sum_kl M_nk^* P_kl M_nl`` with
    ``Q = Y S^H`` (N, K), ``P = S^* S^T`` (K, K) and ``yy = ||y_n||^2`` (N,).  Returns the cost and
    ``E S^H = Q - M P^T`` (N, K), the residual correlated with the waveforms (the gradient's data).
    """
    MP = M @ P.T  # (N, K): sum_l M_nl (S S^H)_lk
    ES = Q - MP
    p = yy - 2.0 * np.real(np.sum(M.conj() * Q, axis=1)) + np.real(np.sum(M.conj() * MP, axis=1))
    return float(np.sum(p if w is None else w * p)), ES


def suff_stats(Y: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sufficient statistics of the LS cost for fixed waveforms: ``Q = Y S^H`` (N, K) and ``||y_n||^2`` (N,).

    ``Y`` (N, T) complex (accumulated in double), ``S`` (K, T).  O(N T K); with them every cost and gradient
    of the fit is O(N K^2).  The one place these are formed: passes that share them agree to the last bit.
    """
    Yd = np.ascontiguousarray(Y, dtype=np.complex128)  # complex64 frames: accumulate in double
    Q = Yd @ np.asarray(S).conj().T
    Yv = Yd.view(np.float64)  # (N, 2T): real and imaginary parts interleaved, one pass
    yy = np.einsum("nt,nt->n", Yv, Yv)
    return Q, yy


def _lm(Y, array, S, theta, r, gains, c, w, model, max_iter, tol, r_min, r_max=np.inf, stats=None):
    """LM on the sufficient statistics of (Y, S): Y S^H, ||y_n||^2 and S S^H are formed once (O(N T K)),
    then every cost evaluation and every normal-equation build is O(N K^2) (issue 11).  ``stats``: the
    (Q, yy) of :func:`suff_stats` for these Y and S when the caller already has them."""
    K = theta.size
    cvec = None if c is None else np.asarray(c)
    Q, yy = suff_stats(Y, S) if stats is None else stats
    P = S.conj() @ S.T  # (K, K): sum_t s_k^* s_l

    def model_of(A, b):
        M = A * b[None, :]
        return M if cvec is None else cvec[:, None] * M

    if model == "exact" and USE_NUMBA:
        from .lm_kernel import lm_exact  # compiled on first use (cache=True): see nearfield.warmup

        ww = np.ones(Y.shape[0]) if w is None else np.ascontiguousarray(w, dtype=float)
        cc = np.ones(Y.shape[0], complex) if cvec is None else np.ascontiguousarray(cvec, dtype=complex)
        theta, r, gains, cost, it, converged = lm_exact(
            np.ascontiguousarray(array.positions, dtype=float),
            float(array.wavenumber),
            yy,
            np.ascontiguousarray(Q),
            np.ascontiguousarray(P),
            ww,
            cc,
            theta.astype(float),
            r.astype(float),
            gains.astype(complex),
            int(max_iter),
            float(tol),
            float(r_min),
            float(r_max),
        )
        return theta, r, gains, float(cost), it, bool(converged)
    Pk = P[np.ix_(np.tile(np.arange(K), 4), np.tile(np.arange(K), 4))]
    A = steering(array, theta, r, model)
    cost, ES = _suff_cost(yy, Q, P, model_of(A, gains), w)
    mu = 1e-3
    kidx = np.tile(np.arange(K), 4)
    it = 0
    converged = False
    rel = np.inf
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned after the loop
        d = steering_derivatives(array, theta, r, model)
        G = np.concatenate([d.a, 1j * d.a, d.a_t * gains, d.a_r * gains], axis=1)  # (N, 4K)
        if cvec is not None:
            G = cvec[:, None] * G
        GW = G.conj().T if w is None else G.conj().T * w[None, :]
        JJ = np.real((GW @ G) * Pk)
        g = np.real(np.sum(GW * ES[:, kidx].T, axis=1))
        diag = np.maximum(np.diag(JJ), 1e-300)
        improved = False
        flat = False
        for trial in range(12):
            step = np.linalg.solve(JJ + mu * np.diag(diag), g)
            # Gauss-Newton predicted decrease: below tol * cost no step can pass the test below (as lm_exact)
            if trial == 0 and mu <= 1e-2 and 2.0 * step @ g - step @ JJ @ step <= tol * cost:
                flat = True
                break
            nb = gains + step[:K] + 1j * step[K : 2 * K]
            nt = np.clip(theta + step[2 * K : 3 * K], -np.pi / 2 + 1e-6, np.pi / 2 - 1e-6)
            nr = np.clip(r + step[3 * K :], r_min, r_max)
            nA = steering(array, nt, nr, model)
            ncost, nES = _suff_cost(yy, Q, P, model_of(nA, nb), w)
            if ncost <= cost:
                rel = (cost - ncost) / max(cost, 1e-300)
                gains, theta, r, A, ES, cost = nb, nt, nr, nA, nES, ncost
                mu = max(mu / 10.0, 1e-9)
                improved = True
                break
            mu *= 10.0
        if flat or not improved or rel < tol:
            converged = True
            break
    return theta, r, gains, cost, it, converged


def check_fit_inputs(Y, array: ULA, theta, r, pilots=None, gains=None, w=None, stats=None) -> None:
    """Raise ValueError, naming the parameter, when the inputs of a fit or a check do not fit together.

    ``Y`` (N, T) with N the array's antennas and T >= 1; ``theta``, ``r`` (K,) of one length; ``pilots``
    (K, T); ``gains`` (K,); ``w`` (N,) non-negative; ``stats`` ((N, K), (N,)).  (The compiled kernels
    index the antenna positions by the rows of these arrays and do not check bounds.)
    """
    Y = np.asarray(Y)
    N = array.n_antennas
    if Y.ndim != 2 or Y.shape[0] != N or Y.shape[1] < 1:
        raise ValueError(f"Y: expected ({N}, T) snapshots with T >= 1, got shape {Y.shape}")
    T = Y.shape[1]
    th, rr = np.atleast_1d(np.asarray(theta)), np.atleast_1d(np.asarray(r))
    if th.ndim != 1 or th.shape != rr.shape or th.size < 1:
        raise ValueError(f"theta, r: expected two (K,) vectors of one length, got shapes {th.shape} and {rr.shape}")
    K = th.size
    if pilots is not None and np.atleast_2d(np.asarray(pilots)).shape != (K, T):
        raise ValueError(f"pilots: expected ({K}, {T}), got shape {np.shape(pilots)}")
    if gains is not None and np.atleast_1d(np.asarray(gains)).shape != (K,):
        raise ValueError(f"gains: expected ({K},), got shape {np.shape(gains)}")
    if w is not None:
        wa = np.asarray(w)
        if wa.shape != (N,) or np.any(wa < 0):
            raise ValueError(f"w: expected ({N},) non-negative antenna weights, got shape {wa.shape}")
    if stats is not None:
        if len(stats) != 2 or np.shape(stats[0]) != (N, K) or np.shape(stats[1]) != (N,):
            raise ValueError(f"stats: expected (Y S^H ({N}, {K}), ||y_n||^2 ({N},))")


def refine_ml(
    Y: np.ndarray,
    array: ULA,
    theta0,
    r0,
    pilots: np.ndarray | None = None,
    c=None,
    w=None,
    model: str = "exact",
    max_iter: int = 30,
    tol: float = 1e-10,
    waveform_rounds: int = 3,
    r_min: float | None = None,
    r_max: float | None = None,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> MLFit:
    """Levenberg-Marquardt refinement of (beta, theta, r) on the exact model.

    Parameters
    ----------
    Y : ndarray, shape (N, T)
        Snapshots (already calibrated if ``c`` is None; otherwise ``c`` models the HI).
    array : ULA
    theta0, r0 : array_like, shape (K,)
        Starting positions (rad, m); must lie in the basin of the true minimum
        (within about a beamwidth in angle and the depth of focus in range).
    pilots : ndarray, shape (K, T), optional
        Known probing signals, rows matched to ``theta0``; estimated when None.
    c : ndarray, shape (N,), optional
        HI vector of the model.
    w : ndarray, shape (N,), optional
        Antenna weights (0 excludes an antenna).
    model : {"exact", "fresnel"}
    max_iter, tol : LM limits (relative cost decrease).
    waveform_rounds : int
        Alternations between waveform LS and LM when ``pilots`` is None.
    r_min, r_max : float, optional
        Range window in metres; every LM step is clipped into it, so the fit cannot run off
        to r -> infinity where the wavefront curvature (and with it the range) stops being
        observable.  Defaults: the element spacing d and no upper limit (the behaviour before
        the window existed).  The starting ranges are clipped into the window too.
    stats : (Q (N, K), yy (N,)), optional
        With ``pilots``: :func:`suff_stats` of (Y, pilots) computed by the caller (a caller that
        fits the same frame several times forms them once); ignored without pilots.

    Returns
    -------
    MLFit
    """
    check_fit_inputs(Y, array, theta0, r0, pilots, None, w, stats if pilots is not None else None)
    Y = np.asarray(Y, dtype=np.complex128)
    theta = np.array(theta0, dtype=float, ndmin=1)
    r = np.array(r0, dtype=float, ndmin=1)
    w = None if w is None else np.asarray(w, dtype=float)
    r_min = array.d if r_min is None else float(r_min)
    r_max = np.inf if r_max is None else float(r_max)
    if not 0 < r_min < r_max:
        raise ValueError(f"r_min, r_max: expected 0 < r_min < r_max (metres), got {r_min}, {r_max}")
    r = np.clip(r, r_min, r_max)
    if pilots is not None:
        S = np.asarray(pilots, dtype=np.complex128)
        if stats is None:
            stats = suff_stats(Y, S)
        P = S.conj() @ S.T
        if model == "exact" and USE_NUMBA and c is None:  # the gain system in one compiled pass
            from .lm_kernel import gain_normal

            ww = np.ones(Y.shape[0]) if w is None else np.ascontiguousarray(w, dtype=float)
            AWA, rhs = gain_normal(
                np.ascontiguousarray(array.positions, dtype=float),
                float(array.wavenumber),
                ww,
                theta,
                r,
                np.ascontiguousarray(stats[0]),
            )
            gains = np.linalg.lstsq(AWA * P, rhs, rcond=None)[0]
        else:
            gains = ls_gains_stats(steering(array, theta, r, model), P, stats[0], c, w)
        theta, r, gains, cost, it, conv = _lm(
            Y, array, S, theta, r, gains, c, w, model, max_iter, tol, r_min, r_max, stats
        )
        return MLFit(theta, r, gains, cost, it, conv, S, stats)
    it_total, conv = 0, False
    for _ in range(max(1, waveform_rounds)):
        S = ls_waveforms(steering(array, theta, r, model), Y, c, w)
        gains = np.ones(theta.size, dtype=np.complex128)
        theta, r, gains, cost, it, conv = _lm(Y, array, S, theta, r, gains, c, w, model, max_iter, tol, r_min, r_max)
        it_total += it
    return MLFit(theta, r, gains, cost, it_total, conv, S * gains[:, None])
