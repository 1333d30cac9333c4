"""Per-estimate error bars and a model check, from the data of one block.

Error bar (:func:`estimate_uncertainty`)
    The 1-sigma of each angle and range is the square root of the Cramer-Rao bound
    *evaluated at the estimate*: the estimated positions, the estimated gains (or waveforms)
    and the estimated noise variance replace the unknown true ones.  Two bounds:

    * known pilots S (K, T), unknown complex gains: the [theta, r] block of
      :func:`nearfield.bounds.crb` (FIM ``(2 / sigma2) Re{(G^H G) o (S^* S^T)}``);
    * no pilots (blind): the deterministic CRB with the waveforms as unknown nuisance
      parameters, :func:`nearfield.bounds.crb_unknown_waveforms` -- the derivatives are
      projected onto the orthogonal complement of the steering columns before the
      Fisher matrix is formed (Stoica & Nehorai's conditional CRB, 2-D near-field form).

    Where the ML estimator is efficient (high enough SNR, the target resolved) the
    estimate's error is ~ N(0, CRB), so ``theta +- 2 theta_std`` covers the truth in
    about 95 % of cases; plugging in the estimates instead of the truth changes the bound
    by a relative O(error), i.e. negligibly at that point.

Model check (:func:`model_check`)
    The fit residual is compared with a noise floor that does not use the fitted positions:

    * with pilots: the energy of the data *outside* the pilots' row space,
      ``||Y (I - P_S)||^2 / (N (T - rank S))`` (signal-free by construction);
    * blind: the residual of the best *unstructured* rank-k fit (the sum of all but the k
      largest eigenvalues of ``Y Y^H``), per degree of freedom ``(N - k)(T - k)``, with k the
      signal rank (MDL, at most K; coherent sources give k < K).

    With pilots the fit residual splits into the floor (outside the pilot rows) and the
    part inside the pilot rows, ``D = cost - floor_cost``; under the model (white circular
    Gaussian noise, exact steering, ML fit) D is ``(sigma2 / 2) chi2(2 m)`` with
    ``m = N rank(S) - 2K`` complex degrees of freedom and independent of the floor, so
    ``F = (D / m) / sigma2_floor`` follows an F(2 m, 2 m_floor) law.  Blind, the snapshots
    are split in two halves: the K leading left singular vectors U1 of the first half of the
    residual ``E = P_A^perp Y`` span whatever signal the model leaves unexplained (a
    mismatch leaks into a fixed K-dimensional set of antenna-domain directions), and the
    energy of the second half in them, ``||U1^H E2||^2``, is ``(sigma2 / 2) chi2(2 K T2)``
    under the model because U1 lies in range(P_A^perp) and does not depend on the second
    half's noise; so ``m = K T2``.  (Neither the blind excess over the unstructured floor nor
    the residual along the leading *right* singular vectors of Y is used: the first is far
    from chi-square when the signal rank is below K (coherent sources), the second is biased
    up at low SNR because those vectors are partly aligned with the noise.)  A target whose
    F exceeds the (1 - alpha) quantile is flagged
    ``model_mismatch`` (alpha = 1 % by default: one block in a hundred is flagged when the
    model holds).  With full-rank pilots the test is done per target, on the residual
    projected on that target's (decorrelated) pilot; blind, or with rank-deficient pilots,
    the test is global and the flag applies to all targets.

One pass for a streamed estimate (:func:`assess_estimate`)
    With pilots, everything above depends on the data only through the sufficient
    statistics ``Q = Y S^H`` (N, K) and ``||y_n||^2`` (N,), formed once (O(N T K)): the LS
    gains, the fit cost, the floor (``||y_n||^2`` minus the energy in the pilots' row space,
    ``||Q_n U_r diag(1 / sv_r)||^2`` with ``S = U diag(sv) V^H``), the per-target residuals
    ``E S^H = sqrt(w) (Q - M S S^H)`` and the Fisher matrix are then O(N K^2), and the
    steering vector and its first derivatives are computed once for the check, the bound
    and nothing else.  The figures are the same as :func:`model_check` followed by
    :func:`estimate_uncertainty` (equal to rounding, a test checks it); nothing is cached
    between frames, so every frame's error bars and check are those of its own data.  The
    subtraction ``||y||^2 - ...`` loses relative precision ~ eps x (signal / noise energy);
    when the noise energy is below 1e-8 of the data energy (SNR above ~80 dB, e.g.
    noise-free tests) the direct O(N T) formulas are used instead.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.stats import f as f_dist

from ..array import ULA
from ..bounds import _inv_sym, crb_positions, crb_unknown_waveforms
from ..ml import _suff_cost, check_fit_inputs, ls_gains, ls_waveforms
from ..steering import cis, phase_derivatives, steering

__all__ = ["assess_estimate", "estimate_uncertainty", "model_check", "noise_floor"]


@lru_cache(maxsize=256)
def _f_quantile(q: float, dfn: float, dfd: float) -> float:
    """The q quantile of F(dfn, dfd) (a pure function of its arguments: cached, scipy's ppf costs ~0.2 ms)."""
    return float(f_dist.ppf(q, dfn, dfd))


def _weights(w, n):
    if w is None:
        return np.ones(n)
    w = np.asarray(w, float)
    if w.shape != (n,) or np.any(w < 0):
        raise ValueError(f"w: expected ({n},) non-negative antenna weights, got shape {w.shape}")
    return w


def _pilot_rank(S: np.ndarray, rtol: float = 1e-6) -> tuple[int, np.ndarray]:
    """Numerical rank of the pilots and an orthonormal basis V (rank, T) of their row space."""
    _, sv, Vh = np.linalg.svd(S, full_matrices=False)
    rank = int(np.sum(sv > rtol * max(sv[0], 1e-300)))
    return max(rank, 1), Vh[: max(rank, 1)]


def noise_floor(Y: np.ndarray, n_targets: int, pilots: np.ndarray | None = None, w=None) -> tuple[float, float]:
    """Fit-independent noise variance estimate and its complex degrees of freedom.

    Parameters
    ----------
    Y : (N, T) snapshots.  n_targets : K.  pilots : (K, T) or None.  w : (N,) antenna weights
    (0 excludes an antenna).

    Returns
    -------
    sigma2 : float
        Noise variance estimate (data units squared).
    dof : float
        Complex degrees of freedom of the floor residual (``floor_cost = sigma2 * dof``).
    """
    Y = np.asarray(Y, np.complex128)
    N, T = Y.shape
    w = _weights(w, N)
    Yw = np.sqrt(w)[:, None] * Y
    n_eff = float(np.sum(w > 0))
    if pilots is not None:
        rank, V = _pilot_rank(np.atleast_2d(pilots))
        if T > rank:
            E = Yw - (Yw @ V.conj().T) @ V
            dof = n_eff * (T - rank)
            return float(np.sum(np.abs(E) ** 2) / dof), dof
    K = int(n_targets)
    sv = np.linalg.svd(Yw, compute_uv=False)
    tail = float(np.sum(sv[K:] ** 2))
    dof = max((n_eff - K) * (T - K), 1.0)
    return tail / dof, dof


def model_check(
    Y: np.ndarray,
    array: ULA,
    theta,
    r,
    pilots: np.ndarray | None = None,
    c=None,
    w=None,
    alpha: float = 0.01,
    model: str = "exact",
) -> dict:
    """Does the exact near-field model with K point targets explain the data? (see module doc).

    Parameters
    ----------
    Y : (N, T) snapshots.  array : ULA.  theta, r : (K,) estimate (rad, m).
    pilots : (K, T) known waveforms, or None (blind).  c : (N,) known HI vector of the model.
    w : (N,) antenna weights (0 = excluded).  alpha : false-alarm rate of the flag.

    Returns
    -------
    dict
        ``sigma2_fit`` (cost per residual degree of freedom), ``sigma2_floor``,
        ``ratio`` = sigma2_fit / sigma2_floor (~1 when the model holds), ``F`` (K,) test
        statistic per target, ``threshold`` the F(1 - alpha) quantile, ``mismatch`` (K,) bool,
        ``per_target`` bool, ``residual`` cost / (N_eff T).
    """
    check_fit_inputs(Y, array, theta, r, pilots, None, w)
    Y = np.asarray(Y, np.complex128)
    N, T = Y.shape
    theta = np.atleast_1d(np.asarray(theta, float))
    r = np.atleast_1d(np.asarray(r, float))
    K = theta.size
    w = _weights(w, N)
    n_eff = float(np.sum(w > 0))
    A = steering(array, theta, r, model)
    Ac = A if c is None else np.asarray(c)[:, None] * A
    sw = np.sqrt(w)[:, None]
    if pilots is not None:
        S = np.atleast_2d(np.asarray(pilots, np.complex128))
        g = ls_gains(A, S, Y, c, w)
        M = Ac @ (g[:, None] * S)
        E = sw * (Y - M)
        cost = float(np.sum(np.abs(E) ** 2))
        sig_floor, dof_floor = noise_floor(Y, K, S, w)
        rank, _ = _pilot_rank(S)
        dof_fit = n_eff * T - 2 * K
        if rank == K and T > K:
            # residual along each decorrelated pilot: E S^H (S S^H)^-1/2, column k ~ CN(0, sigma2 I) under H0
            wv, U = np.linalg.eigh(S @ S.conj().T)
            iso = U @ np.diag(1.0 / np.sqrt(wv)) @ U.conj().T
            Ek = E @ S.conj().T @ iso
            m = max(n_eff - 2.0, 1.0)
            per_target = True
        else:
            inspan = max(cost - sig_floor * dof_floor, 0.0)
            m = max(n_eff * rank - 2.0 * K, 1.0)
            per_target = False
    else:
        Sh = ls_waveforms(A, Y, c, w)
        E = sw * (Y - Ac @ Sh)
        cost = float(np.sum(np.abs(E) ** 2))
        dof_fit = n_eff * T - K * T - K
        # signal rank (coherent sources: below K): MDL, at most K
        from .fullarray import estimate_order

        kf = min(K, estimate_order(Y, w, K))
        sv = np.linalg.svd(sw * Y, compute_uv=False)
        dof_floor = max((n_eff - kf) * (T - kf), 1.0)
        sig_floor = float(np.sum(sv[kf:] ** 2)) / dof_floor
        # split the snapshots: the K leading left singular vectors U1 of the residual's first half
        # (inside range(P_A^perp), independent of the second half's noise) collect any signal the
        # model cannot explain; on the second half ||U1^H E2||^2 ~ (sigma2 / 2) chi2(2 K T2) under H0
        T2 = T // 2
        if T2 >= 1 and T - T2 >= 1:
            U1 = np.linalg.svd(E[:, : T - T2], full_matrices=False)[0][:, :K]
            res_sig = float(np.sum(np.abs(U1.conj().T @ E[:, T - T2 :]) ** 2))
            m = float(U1.shape[1] * T2)
        else:
            res_sig, m = 0.0, 1.0
        per_target = False
    tiny = 1e-30 * max(float(np.mean(np.abs(Y) ** 2)), 1e-300)  # noise-free data: keep the ratios finite
    sig_floor = max(sig_floor, tiny)
    if per_target and pilots is not None:
        F = np.sum(np.abs(Ek) ** 2, axis=0) / m / sig_floor
    elif pilots is not None:
        F = np.full(K, inspan / m / sig_floor)
    else:
        F = np.full(K, res_sig / m / sig_floor)
    thr = _f_quantile(1.0 - alpha, 2 * float(m), 2 * float(dof_floor))
    sig_fit = max(cost / max(dof_fit, 1.0), tiny)
    return {
        "sigma2_fit": sig_fit,
        "sigma2_floor": sig_floor,
        "ratio": sig_fit / sig_floor,
        "F": F,
        "threshold": thr,
        "mismatch": F > thr,
        "per_target": per_target,
        "residual": cost / (n_eff * T),
        "cost": cost,
        "alpha": alpha,
    }


def estimate_uncertainty(
    Y: np.ndarray,
    array: ULA,
    theta,
    r,
    pilots: np.ndarray | None = None,
    gains=None,
    c=None,
    *,
    waveforms: np.ndarray | None = None,
    sigma2: float | None = None,
    w=None,
    model: str = "exact",
) -> tuple[np.ndarray, np.ndarray, dict]:
    """1-sigma error bars of (theta, r) from the CRB at the estimate.

    Parameters
    ----------
    Y : ndarray, shape (N, T)
        The snapshots the estimate was computed from.
    array : ULA
    theta, r : array_like, shape (K,)
        The estimate (rad, m).
    pilots : ndarray, shape (K, T), optional
        Known waveforms (rows matched to theta); None = blind.
    gains : array_like, shape (K,), optional
        Estimated complex gains (pilot case); LS-fitted at the estimate when None.
    c : array_like, shape (N,), optional
        HI vector assumed by the estimate (known calibration).
    waveforms : ndarray, shape (K, T), optional
        Estimated waveforms (blind case, gains included); LS-fitted when None.
    sigma2 : float, optional
        Noise variance; by default the fit residual per degree of freedom,
        ``cost / (N_eff T - p)`` (p the complex parameters fitted: 2K with pilots, K T + K blind).
    w : array_like, shape (N,), optional
        Antenna weights (0 excludes an antenna; it then carries no information in the bound).

    Returns
    -------
    theta_std : ndarray, shape (K,), rad
    r_std : ndarray, shape (K,), m
    diagnostics : dict
        ``crb`` (2K, 2K) the [theta, r] bound used, ``sigma2``, ``bound`` ("pilots" or
        "unknown_waveforms").
    """
    check_fit_inputs(Y, array, theta, r, pilots, gains, w)
    Y = np.asarray(Y, np.complex128)
    N, T = Y.shape
    theta = np.atleast_1d(np.asarray(theta, float))
    r = np.atleast_1d(np.asarray(r, float))
    K = theta.size
    w = _weights(w, N)
    n_eff = float(np.sum(w > 0))
    A = steering(array, theta, r, model)
    c_eff = (np.ones(N, complex) if c is None else np.asarray(c, complex)) * np.sqrt(w)
    tiny = 1e-30 * max(float(np.mean(np.abs(Y) ** 2)), 1e-300)  # noise-free data: a (tiny) positive bound
    if pilots is not None:
        S = np.atleast_2d(np.asarray(pilots, np.complex128))
        g = ls_gains(A, S, Y, c, w) if gains is None else np.atleast_1d(np.asarray(gains, complex))
        if sigma2 is None:
            cw = np.ones(N, complex) if c is None else np.asarray(c, complex)
            E = Y - (cw[:, None] * A) @ (g[:, None] * S)
            sigma2 = float(np.sum(w[:, None] * np.abs(E) ** 2) / max(n_eff * T - 2 * K, 1.0))
        sigma2 = max(float(sigma2), tiny)
        C = crb_positions(array, theta, r, g, S, sigma2, c_eff, model)
        kind = "pilots"
    else:
        Sh = ls_waveforms(A, Y, c, w) if waveforms is None else np.atleast_2d(np.asarray(waveforms, complex))
        if sigma2 is None:
            cw = np.ones(N, complex) if c is None else np.asarray(c, complex)
            E = Y - (cw[:, None] * A) @ Sh
            sigma2 = float(np.sum(w[:, None] * np.abs(E) ** 2) / max(n_eff * T - K * T - K, 1.0))
        sigma2 = max(float(sigma2), tiny)
        C = crb_unknown_waveforms(array, theta, r, Sh, sigma2, c_eff, model)
        kind = "unknown_waveforms"
    d = np.sqrt(np.maximum(np.diag(C), 0.0))
    return d[:K], d[K:], {"crb": C, "sigma2": float(sigma2), "bound": kind}


#: below this ratio of (noise-floor energy / data energy) the sufficient-statistics floor and cost of
#: :func:`assess_estimate` lose too many digits to cancellation: the direct O(N T) formulas are used
_CANCEL_RTOL = 1e-8


def assess_estimate(
    Y: np.ndarray,
    array: ULA,
    theta,
    r,
    pilots: np.ndarray | None = None,
    gains=None,
    w=None,
    alpha: float = 0.01,
    model: str = "exact",
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """Model check and error bars of one estimate in one pass (see the module doc).

    Equal to ``model_check(Y, array, theta, r, pilots, None, w, alpha)`` followed by
    ``estimate_uncertainty(Y, array, theta, r, pilots, gains, None, sigma2=mc["sigma2_fit"], w=w)``;
    with full-rank pilots (K < T) and data that are not nearly noise-free, both come from the
    sufficient statistics ``Y S^H``, ``||y_n||^2``, ``S S^H`` and one steering evaluation
    (O(N T K) + O(N K^2) instead of several O(N T K) passes); otherwise the two calls are made.

    Parameters
    ----------
    Y : (N, T) snapshots.  array : ULA.  theta, r : (K,) the estimate (rad, m).
    pilots : (K, T) or None (blind).  gains : (K,) complex gains of the fit (pilots; LS at the
    estimate when None) for the bound.  w : (N,) antenna weights (0 = excluded).
    alpha : false-alarm rate of the model check.
    stats : ``(Y S^H (N, K), ||y_n||^2 (N,))`` of these Y and pilots in double precision, when the
    caller already formed them (:func:`nearfield.ml.suff_stats`, ``MLFit.stats``); else formed here.

    Returns
    -------
    mc : dict
        As :func:`model_check`.
    theta_std : (K,) rad.  r_std : (K,) m.
    diagnostics : dict
        As :func:`estimate_uncertainty` (``crb`` (2K, 2K), ``sigma2``, ``bound``).

    Raises
    ------
    ValueError
        Inputs that do not fit together (:func:`nearfield.ml.check_fit_inputs`) or all weights 0.
    """
    check_fit_inputs(Y, array, theta, r, pilots, gains, w, stats if pilots is not None else None)
    if w is not None and not np.any(np.asarray(w) > 0):
        raise ValueError("w: every antenna has weight 0")
    theta = np.atleast_1d(np.asarray(theta, float))
    r = np.atleast_1d(np.asarray(r, float))
    K = theta.size
    fast = None
    if pilots is not None:
        S = np.atleast_2d(np.asarray(pilots, np.complex128))
        if S.shape[0] == K and S.shape[1] > K:
            fast = _assess_pilots(Y, array, theta, r, S, gains, w, alpha, model, stats)
    if fast is not None:
        return fast
    mc = model_check(Y, array, theta, r, pilots, None, w, alpha=alpha, model=model)
    g = None if pilots is None or gains is None else gains
    th_std, r_std, ud = estimate_uncertainty(
        Y, array, theta, r, pilots, g, None, sigma2=mc["sigma2_fit"], w=w, model=model
    )
    return mc, th_std, r_std, ud


class _PilotBasis:
    """What the check needs of the pilots alone (S (K, T)): ``P = S^* S^T``, the left singular vectors
    over the singular values ``U / sv`` (Y V^H = Q U / sv), the rank and ``(S S^H)^-1/2``.  A pure
    function of S; the last one is kept (pilots repeat across frames only when they are equal)."""

    _last: tuple[bytes, _PilotBasis] | None = None

    def __init__(self, S: np.ndarray):
        U, sv, _ = np.linalg.svd(S, full_matrices=False)
        self.rank = int(np.sum(sv > 1e-6 * max(sv[0], 1e-300)))  # as _pilot_rank
        self.P = S.conj() @ S.T  # (K, K), P_kl = sum_t s_k^* s_l;  S S^H = P^T
        self.Usv = U / np.maximum(sv, 1e-300)[None, :]
        if self.rank == S.shape[0]:
            wv, V = np.linalg.eigh(self.P.T)
            self.iso = (V / np.sqrt(wv)[None, :]) @ V.conj().T
        for a in (self.P, self.Usv):
            a.flags.writeable = False

    @classmethod
    def of(cls, S: np.ndarray) -> _PilotBasis:
        key = S.tobytes() + str(S.shape).encode()
        last = cls._last
        if last is not None and last[0] == key:  # equal bytes, equal shape: the same pilots
            return last[1]
        basis = cls(S)
        cls._last = (key, basis)
        return basis


def _assess_pilots(Y, array, theta, r, S, gains, w, alpha, model, stats=None):
    """The pilot branch of :func:`assess_estimate` on sufficient statistics; None when it does not apply
    (rank-deficient pilots, or data so clean that the subtractions would lose the noise floor)."""
    from .. import ml

    Y = np.asarray(Y)
    N, T = Y.shape
    K = theta.size
    w = _weights(w, N)
    n_eff = float(np.sum(w > 0))
    basis = _PilotBasis.of(S)
    if basis.rank != K:
        return None
    P = basis.P
    if stats is not None and stats[0].shape == (N, K) and stats[1].shape == (N,):
        Q, yy = stats  # the fit's own Y S^H and ||y_n||^2 (same Y, same pilots)
    else:
        Q, yy = ml.suff_stats(Y, S)  # (N, K) Y S^H and (N,) ||y_n||^2, accumulated in double
    total = float(np.sum(w * yy))
    g_fim = None if gains is None else np.atleast_1d(np.asarray(gains, complex))
    compiled = model == "exact" and ml.USE_NUMBA
    if compiled:
        # one compiled pass each for the gain system, and for the cost, E S^H and the Fisher matrix
        # (the loops of the LM kernel: the steering vector and its derivatives are never stored)
        from ..lm_kernel import check_fisher, gain_normal

        pos, kw = np.ascontiguousarray(array.positions, dtype=float), float(array.wavenumber)
        theta, r, w = (np.ascontiguousarray(x, dtype=float) for x in (theta, r, w))
        AWA, rhs = gain_normal(pos, kw, w, theta, r, Q)
        g_ls = np.linalg.lstsq(AWA * P, rhs, rcond=None)[0]
        g_fim = g_ls if g_fim is None else g_fim
        cost, ES, JJ = check_fisher(pos, kw, yy, Q, np.ascontiguousarray(P), w, theta, r, g_ls, g_fim)
    else:
        pd = phase_derivatives(array, theta, r, model)  # steering and its first derivatives once
        A = cis(pd.psi)
        AW = A.conj().T * w[None, :]  # LS gains (eq. 20) from Q: rhs_k = sum_n w_n a_nk^* Q_nk
        g_ls = np.linalg.lstsq((AW @ A) * P, np.sum(AW.T * Q, axis=0), rcond=None)[0]
        cost, ES = _suff_cost(yy, Q, P, A * g_ls[None, :], w)  # ES = (Y - M S) S^H
        g_fim = g_ls if g_fim is None else g_fim
        # FIM / (2 / sigma2) = Re{(G^H W G) o P[kidx, kidx]}, G = [a, j a, beta a_theta, beta a_r] (N, 4K)
        Gd = np.concatenate([A, 1j * A, (1j * pd.t * A) * g_fim[None, :], (1j * pd.r * A) * g_fim[None, :]], axis=1)
        kidx = np.tile(np.arange(K), 4)
        JJ = np.real(((Gd.conj().T * w[None, :]) @ Gd) * P[np.ix_(kidx, kidx)])
    # floor: energy outside the pilots' row space, ||y_n||^2 - ||Q_n U diag(1/sv)||^2
    YV = Q @ basis.Usv
    floor_cost = total - float(np.sum(w * np.sum(YV.real**2 + YV.imag**2, axis=1)))
    if not (floor_cost > _CANCEL_RTOL * total and cost > _CANCEL_RTOL * total):
        return None  # nearly noise-free: the direct formulas keep the digits
    dof_floor = n_eff * (T - basis.rank)
    tiny = 1e-30 * max(float(np.sum(yy)) / (N * T), 1e-300)  # as model_check: keeps the ratios finite
    sig_floor = max(floor_cost / dof_floor, tiny)
    dof_fit = n_eff * T - 2 * K
    # residual along each decorrelated pilot: E S^H (S S^H)^-1/2, column k ~ CN(0, sigma2 I) under H0
    Ek = np.sqrt(w)[:, None] * (ES @ basis.iso)
    m = max(n_eff - 2.0, 1.0)
    F = np.sum(Ek.real**2 + Ek.imag**2, axis=0) / m / sig_floor
    thr = _f_quantile(1.0 - alpha, 2 * float(m), 2 * float(dof_floor))
    sig_fit = max(cost / max(dof_fit, 1.0), tiny)
    mc = {
        "sigma2_fit": sig_fit,
        "sigma2_floor": sig_floor,
        "ratio": sig_fit / sig_floor,
        "F": F,
        "threshold": thr,
        "mismatch": F > thr,
        "per_target": True,
        "residual": cost / (n_eff * T),
        "cost": cost,
        "alpha": alpha,
    }
    # error bars: the CRB with known pilots and unknown gains at the estimate (bounds.crb_positions)
    C = _inv_sym((2.0 / sig_fit) * JJ)[2 * K :, 2 * K :]
    d = np.sqrt(np.maximum(np.diag(C), 0.0))
    return mc, d[:K], d[K:], {"crb": C, "sigma2": float(sig_fit), "bound": "pilots"}
