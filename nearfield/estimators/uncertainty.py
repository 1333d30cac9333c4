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
"""

from __future__ import annotations

import numpy as np
from scipy.stats import f as f_dist

from ..array import ULA
from ..bounds import crb_positions, crb_unknown_waveforms
from ..ml import ls_gains, ls_waveforms
from ..steering import steering

__all__ = ["estimate_uncertainty", "model_check", "noise_floor"]


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
    thr = float(f_dist.ppf(1.0 - alpha, 2 * m, 2 * dof_floor))
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
