"""Full-array near-field localizer with no single point of failure.

The paper's coarse stage needs fault-free far-field subarrays; it fails when the
subarrays cannot resolve the scene (targets closer than a *subarray* beamwidth), when
most antennas look faulty (dense gain/phase errors) or when the array is small.  This
estimator uses the whole aperture from the start and never needs a fault-free subarray:

1. **Channel screening** -- per-channel power ``p_n = mean_t |y_nt|^2``; channels with
   ``p_n < dead_ratio * median(p)`` (dead) get weight 0.  With a large spread of the
   channel powers (robust std of ``10 log10 p_n`` above ``normalize_db``, i.e. per-channel
   gain errors far beyond what interference patterns give), the *coarse search* runs on
   the amplitude-normalised data ``y_n / sqrt(p_n)``.
2. **Coarse near-field grid** (:func:`coarse_grid`) -- uniform in ``u = sin(theta)`` at
   half the full-array beamwidth (step ``1/N`` for d = lambda/2, 2N points) and uniform in
   ``q = 1/r`` inside ``r_bounds`` at the step where the curvature phase at the array edge,
   ``k D^2 q / 8``, changes by ``phase_step`` (pi/2 by default).  Exact spherical steering.
3. **Detection** -- with full-rank pilots S (K, T) the decorrelated matched filter
   ``Z = Y S^H (S S^H)^-1`` leaves one target per column (``z_k ~ beta_k a_k``): each target
   is the peak of its own single-target beamscan ``|a^H z_k|^2 / ||a||^2``, so targets
   closer than a beamwidth are separated by their waveforms.  Blind, or with
   rank-deficient pilots (identical / collinear rows, e.g. two echoes of one transmitter):
   the data are reduced to ``X`` (the signal subspace of the sample covariance weighted
   by ``sqrt(lambda_i - sigma2)``, or, with pilots, ``Y V^H`` on an orthonormal basis V of
   the pilots' row space), and targets are found one at a time by *alternating
   projection* (sequential ML / CLEAN): the next target maximises
   ``||P_found^perp ... a^H X||^2 / ||P_found^perp a||^2``, i.e. the ML cost decrease of
   adding one source with the ones found so far held fixed; after each detection all
   found targets are re-fitted jointly (ML on X), and a RELAX round re-scans each target
   with the others projected out.  Coherent sources (rank-one covariance) are handled
   because nothing relies on the covariance rank: the deterministic ML model with K
   spatial signatures explains a rank-one X with K steering vectors.
4. **Exact-model ML refinement** (:func:`nearfield.ml.refine_ml`, LM with the range window
   ``r_bounds``) on all snapshots.  When the residual is significantly more than the noise
   floor, a *static model error* (calibration residue, reflections, see
   :mod:`~.model_error`) is estimated and the antenna weights become
   ``1 / (noise_n + model error)``; the detection is then repeated with these weights and the
   better fit under them is kept (the noise weights of a calibrated array trust a few strong
   channels, and with a model error that can pin a spurious fit at the range bound).  Antennas
   whose residual is an outlier beyond noise *and* model error (a fault, a dead channel that
   still carries noise) are excluded, and per-channel real gains are fitted when the amplitudes
   are significantly off (chi-square test) -- but, with a model error, only when the gains
   explain it (pure gain errors); otherwise they would bend the positions.
5. **Honest output** -- noise level, residual, the model check and the CRB error bars of
   :mod:`nearfield.estimators.uncertainty`, with a static model error counted T-fold
   (:func:`~.model_error.model_error_bars`) when the check flags a mismatch, and a status per target.

Identical pilots make the assignment of positions to pilot rows (and hence the per-target
gains' labels) unidentifiable; the common waveform is then treated once (the row-space
reduction above) and K spatial signatures are fitted; the result follows an arbitrary
assignment among the identical rows and ``diagnostics["pilot_rank"] < K`` says so.

Range window (:func:`default_r_bounds`): the array's own default,
:meth:`nearfield.array.ULA.range_window` (one implementation, documented there):
``[max(D/2, 2 lambda), max(2 D^2 / lambda, 4 r_min)]``.  Beyond the Rayleigh distance the
wavefront curvature across the aperture is below pi/8 rad, so range is practically
unobservable: an estimate reaching that edge is reported with status ``range_at_bound``
instead of running off to 10^14 m.  The exact spherical model is used everywhere, so no
Fresnel-region assumption is needed.

Cost: one grid scan is O(N Gu Gq) with Gu ~ 2N and Gq ~ (pi / (2 phase_step)) D / lambda for the
default window (compiled loop, single thread).  Measured on the shared 2-core machine:
N = 256 (512 x 129 grid) ~0.25 s per scan, N = 1024 (2048 x 513) ~15-20 s; N <= 32 a few ms.
Full-rank pilots need one scan; blind / rank-deficient pilots K scans plus up to K per RELAX
round.  A narrower ``r_bounds`` or a larger ``phase_step`` shrinks Gq proportionally.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import chi2

from ..array import ULA
from ..ml import ls_waveforms, ml_cost, refine_ml
from ..music import mdl_order
from ..steering import steering
from .model_error import detect_model_error, in_span_ratio, model_error_bars, residual_power
from .uncertainty import _f_quantile, _pilot_rank, estimate_uncertainty, model_check, noise_floor

__all__ = [
    "FullArrayResult",
    "coarse_grid",
    "default_r_bounds",
    "estimate_order",
    "full_array_localize",
    "grid_scan",
]

STATUSES = ("ok", "model_mismatch", "range_at_bound", "unresolved")


@dataclass
class FullArrayResult:
    """Output of :func:`full_array_localize`.

    theta, r : (K,) rad, m (pilot-row order with pilots, ascending theta blind).
    gains : (K,) complex gains (pilots; ones blind).
    waveforms : (K, T) complex, ``gains[:, None] * pilots`` or the LS waveforms (blind).
    residual : float, fit cost / (N_eff T) (mean squared residual per antenna and snapshot).
    sigma2 : float, noise variance from the fit (cost per residual degree of freedom).
    status : list of K str, one of ``ok``, ``model_mismatch``, ``range_at_bound``, ``unresolved``.
    theta_std, r_std : (K,) 1-sigma error bars (rad, m), CRB at the estimate.
    diagnostics : dict, see :func:`full_array_localize`.
    """

    theta: np.ndarray
    r: np.ndarray
    gains: np.ndarray
    waveforms: np.ndarray
    residual: float
    sigma2: float
    status: list
    theta_std: np.ndarray
    r_std: np.ndarray
    diagnostics: dict = field(default_factory=dict, repr=False)


# ----------------------------------------------------------------------------- geometry
def default_r_bounds(array: ULA) -> tuple[float, float]:
    """Default range window in metres: :meth:`nearfield.array.ULA.range_window` (the one implementation)."""
    return array.range_window()


def _check_bounds(array, r_bounds):
    lo, hi = default_r_bounds(array) if r_bounds is None else (float(r_bounds[0]), float(r_bounds[1]))
    if not (0 < lo < hi and np.isfinite(hi)):
        raise ValueError(f"r_bounds: expected 0 < r_min < r_max < inf (metres), got {r_bounds!r}")
    return lo, hi


def coarse_grid(
    array: ULA, r_bounds=None, phase_step: float = np.pi / 2, angle_oversample: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Coarse near-field search grid.

    Returns
    -------
    u : ndarray, shape (Gu,)
        sin(theta) grid, uniform on the open interval (-1, 1) at step ``lambda / (angle_oversample
        * N d)`` (half the full-array beamwidth by default; 2N points for d = lambda/2).
    q : ndarray, shape (Gq,)
        1/r grid (1/m), uniform between 1/r_max and 1/r_min at the step where the curvature
        phase at the array edge ``k D^2 q / 8`` changes by ``phase_step`` rad (at least 4 points).
    """
    lo, hi = _check_bounds(array, r_bounds)
    n = array.n_antennas
    du = array.wavelength / (angle_oversample * n * array.d)
    gu = max(int(np.ceil(2.0 / du)), 8)
    u = np.linspace(-1.0, 1.0, gu + 2)[1:-1]
    D = max(array.aperture, array.d)
    dq = 8.0 * phase_step / (array.wavenumber * D * D)
    gq = max(int(np.ceil((1.0 / lo - 1.0 / hi) / dq)) + 1, 4)
    return u, np.linspace(1.0 / hi, 1.0 / lo, gq)


def grid_scan(
    array: ULA,
    X: np.ndarray,
    u: np.ndarray,
    q: np.ndarray,
    sw: np.ndarray | None = None,
    Q: np.ndarray | None = None,
    per_column: bool = False,
) -> np.ndarray:
    """Projected beamscan ``sum_m |b^H x_m|^2 / ||P^perp b||^2`` on the (q, u) grid.

    Parameters
    ----------
    X : (N, M) complex, already weighted by ``sw`` and projected by ``P^perp``.
    u, q : grids of :func:`coarse_grid`.
    sw : (N,) square roots of the antenna weights (b is weighted by them); ones by default.
    Q : (N, J) orthonormal basis of the (weighted) steering of targets already found, or None.
    per_column : return one spectrum per column of X.

    Returns
    -------
    ndarray, shape (Gq, Gu) or (Gq, Gu, M) when ``per_column``.
    Computed by a compiled loop (numba), exact phase in float64, cos/sin in single precision (a coarse scan).
    """
    sw = np.ones(array.n_antennas) if sw is None else np.asarray(sw, float)
    X = np.ascontiguousarray(X, dtype=np.complex64)
    Q = np.zeros((X.shape[0], 0), np.complex64) if Q is None else np.ascontiguousarray(Q, dtype=np.complex64)
    num, den = _scan_kernel(
        np.asarray(array.positions, float),
        float(array.wavenumber),
        np.asarray(u, float),
        1.0 / np.asarray(q, float),
        sw.astype(np.float32),
        X,
        Q,
    )
    wsum = float(np.sum(sw**2))
    den = np.maximum(den, 0.05 * wsum)  # ignore directions (almost) inside the span already found
    if per_column:
        return num / den[:, :, None]
    return np.sum(num, axis=2) / den


@numba.njit(cache=True, fastmath=True)
def _scan_kernel(pos, k, u, rr, sw, X, Q):  # pragma: no cover - compiled
    """num[i, j, m] = |b_ij^H x_m|^2, den[i, j] = ||b_ij||^2 - ||Q^H b_ij||^2, b = sw o a(asin u_j, rr_i).

    Hand-written loop (numba): the (N x Gu) steering block of each range row is never stored, and the
    exact phase of eq. (1) is formed in float64 and wrapped before the single-precision cos/sin.
    """
    n, m = X.shape
    jq = Q.shape[1]
    gq, gu = rr.size, u.size
    num = np.zeros((gq, gu, m))
    den = np.zeros((gq, gu))
    two_pi = 2.0 * np.pi
    acc = np.zeros(m, np.complex64)
    accq = np.zeros(max(jq, 1), np.complex64)
    for i in range(gq):
        r = rr[i]
        for j in range(gu):
            acc[:] = 0
            accq[:] = 0
            pw = 0.0
            for a in range(n):
                ell = pos[a]
                psi = -k * (np.sqrt(r * r + ell * ell - 2.0 * r * ell * u[j]) - r)
                psi -= two_pi * np.floor(psi / two_pi + 0.5)
                p32 = np.float32(psi)
                b = (np.cos(p32) + 1j * np.sin(p32)) * sw[a]  # b_a; conj(b_a) x_a accumulates b^H x
                bc = np.conj(np.complex64(b))
                for c in range(m):
                    acc[c] += bc * X[a, c]
                for c in range(jq):
                    accq[c] += np.conj(Q[a, c]) * np.complex64(b)
                pw += sw[a] * sw[a]
            for c in range(m):
                num[i, j, c] = acc[c].real ** 2 + acc[c].imag ** 2
            s = 0.0
            for c in range(jq):
                s += accq[c].real ** 2 + accq[c].imag ** 2
            den[i, j] = pw - s
    return num, den


def estimate_order(Y: np.ndarray, w=None, k_max: int = 8) -> int:
    """Number of targets by MDL (:func:`nearfield.music.mdl_order`) on the full array.

    Uses the eigenvalues of ``Y W Y^H / T`` (N <= T) or, when there are fewer snapshots than
    antennas, of the T x T Gram matrix ``Y^H W Y / N`` (same non-zero spectrum, roles of
    antennas and snapshots swapped), so MDL always sees more samples than dimensions.
    Coherent sources count once (rank one); :func:`full_array_localize` then tests for more.
    """
    Y = np.asarray(Y, np.complex128)
    N, T = Y.shape
    w = np.ones(N) if w is None else np.asarray(w, float)
    Yw = np.sqrt(w)[:, None] * Y
    n_eff = int(np.sum(w > 0))
    sv = np.linalg.svd(Yw, compute_uv=False)
    p, n = (n_eff, T) if n_eff <= T else (T, n_eff)
    lam = np.zeros(p)
    lam[: min(p, sv.size)] = (sv**2)[:p] / n
    lam = np.maximum(lam, 1e-12 * max(lam[0], 1e-300))
    return max(1, mdl_order(lam, n, min(k_max, p - 1)))


# ----------------------------------------------------------------------------- helpers
def _orth(M: np.ndarray) -> np.ndarray:
    if M.shape[1] == 0:
        return M
    Q, _ = np.linalg.qr(M)
    return Q


def _peak(spec: np.ndarray, u, q):
    i, j = np.unravel_index(int(np.argmax(spec)), spec.shape)
    return float(np.arcsin(u[j])), float(1.0 / q[i])


def _subspace_data(Yw: np.ndarray, k: int, sigma2: float) -> np.ndarray:
    """Signal-subspace data X = U_k diag(sqrt(max(s_i^2 - T sigma2, 0))) (N, k), from the SVD of Y (weighted)."""
    U, sv, _ = np.linalg.svd(Yw, full_matrices=False)
    k = min(k, sv.size)
    T = Yw.shape[1]
    return U[:, :k] * np.sqrt(np.maximum(sv[:k] ** 2 - T * sigma2, 0.0))[None, :]


class _Search:
    """Sequential (alternating-projection) search on reduced data X (N, M)."""

    def __init__(self, array, X, sw, u, q, lo, hi):
        self.array, self.X, self.sw, self.u, self.q, self.lo, self.hi = array, X, sw, u, q, lo, hi
        self.scans = 0

    def scan(self, th, rr):
        A = self.sw[:, None] * steering(self.array, th, rr) if len(th) else np.zeros((self.X.shape[0], 0))
        Q = _orth(A)
        Xp = self.X - Q @ (Q.conj().T @ self.X) if Q.shape[1] else self.X
        self.scans += 1
        return _peak(grid_scan(self.array, Xp, self.u, self.q, self.sw, Q), self.u, self.q)

    def fit(self, th, rr):
        # X is already weighted by sw, so the model's steering is too (c = sw, no extra weights)
        f = refine_ml(self.X, self.array, th, rr, None, c=self.sw, r_min=self.lo, r_max=self.hi)
        return f.theta, f.r, f.cost

    def cost(self, th, rr):
        return ml_cost(self.X, self.array, th, rr, None, c=self.sw)

    def detect(self, k_total, th=(), rr=(), relax_rounds=1):
        th, rr = list(th), list(rr)
        while len(th) < k_total:
            t, r = self.scan(np.array(th), np.array(rr))
            th.append(t)
            rr.append(r)
            th_a, rr_a, _ = self.fit(np.array(th), np.array(rr))
            th, rr = list(th_a), list(rr_a)
        th, rr = np.array(th), np.array(rr)
        if len(th) < 2:
            return th, rr
        best = self.cost(th, rr)
        for _ in range(relax_rounds):  # RELAX: re-detect each target with the others fixed
            changed = False
            for k in range(len(th)):
                others = np.delete(np.arange(len(th)), k)
                t, r = self.scan(th[others], rr[others])
                cand_t, cand_r = th.copy(), rr.copy()
                cand_t[k], cand_r[k] = t, r
                ct, cr, _ = self.fit(cand_t, cand_r)
                c = self.cost(ct, cr)
                if c < best * (1 - 1e-9):
                    th, rr, best, changed = ct, cr, c, True
            if not changed:
                break
        return th, rr


def _robust_refine(
    Y,
    array,
    th,
    rr,
    S,
    w,
    lo,
    hi,
    sigma2=None,
    floor_dof=None,
    w0=None,
    max_rounds=4,
    outlier_alpha=1e-4,
    gain_alpha=1e-3,
    max_outlier_share=0.25,
    mismatch_alpha=0.01,
):
    """refine_ml, then model-error weights, outlying antennas and per-channel real amplitudes (module doc, step 4).

    ``w`` are the starting weights, ``w0`` the noise weights (antenna n's noise variance
    ``sigma2 / w0_n``; default ``w``) and ``sigma2``
    the fit-independent noise floor (:func:`~.uncertainty.noise_floor`, weighted data).  When
    the fit leaves significantly more than noise (an F test at ``mismatch_alpha``), a static
    model error of power ``sigma_m2`` per antenna is estimated (:func:`~.model_error.detect_model_error`)
    and enters the weights and both tests below; otherwise they are the pure-noise tests.
    """
    N, T = Y.shape
    w0 = w.copy() if w0 is None else w0.copy()
    w = w.copy()
    c = None
    sm2 = 0.0
    info = {"excluded": [], "amplitude_fit": False, "amplitude_rejected": False, "model_error": 0.0}
    fit = None
    amp_ok = True
    K = np.atleast_1d(th).size
    for _ in range(max_rounds):
        fit = refine_ml(Y, array, th, rr, S, c=c, w=w, r_min=lo, r_max=hi)
        th, rr = fit.theta, fit.r
        M, eu = residual_power(Y, array, fit, S, c)
        good = w > 0
        changed = False
        if sigma2 is not None and sigma2 > 0:
            w_new, sm2 = detect_model_error(
                eu, np.where(good, w0, 0.0), sigma2, K, T, S is None, mismatch_alpha, floor_dof
            )
            if w_new is not None and np.max(np.abs(w_new[good] - w[good])) > 0.05 * np.max(w[good]):
                w = w_new
                changed = True
            var_n = sigma2 / np.where(good, w0, 1.0)
            # H0 per antenna: noise ~ (var_n / 2T) chi2(2T) plus a model error ~ sm2 Exp(1)
            thr = var_n * chi2.ppf(1.0 - outlier_alpha, 2 * T) / (2 * T) + sm2 * np.log(1.0 / outlier_alpha)
            out = good & (eu > thr)
        else:  # no noise floor: the residual median sets the noise level
            e = w * eu
            sig = max(float(np.median(e[good])), 1e-30 * float(np.mean(np.abs(Y) ** 2)) + 1e-300)
            var_n = sig / np.where(good, w, 1.0)
            out = good & (e > sig * chi2.ppf(1.0 - outlier_alpha, 2 * T) / (2 * T))
        if 0 < out.sum() <= max_outlier_share * good.sum():
            w[out] = 0.0
            w0[out] = 0.0
            info["excluded"] += np.flatnonzero(out).tolist()
            good = w > 0
            changed = True
        # per-channel real amplitudes g_n = Re<m_n, y_n> / ||m_n||^2,
        # var = (var_n + sm2 P_n) / (2 ||m_n||^2) with P_n = ||m_n||^2 / T
        mm = np.sum(np.abs(M) ** 2, axis=1)
        g = np.real(np.sum(M.conj() * Y, axis=1)) / np.maximum(mm, 1e-300)
        gm = np.median(g[good])
        var_g = (var_n + sm2 * mm / T) / (2.0 * np.maximum(mm, 1e-300))
        x2 = float(np.sum((g[good] - gm) ** 2 / var_g[good]))
        if amp_ok and x2 > chi2.ppf(1.0 - gain_alpha, max(int(good.sum()) - 1, 1)) and gm > 0:
            c_new = np.clip(g / gm, 0.1, 10.0).astype(complex)
            if c is None or np.max(np.abs(c_new - c)) > 1e-3:
                # the amplitudes are the right model only when they explain the excess (pure gain
                # errors): if the residual along the targets' waveforms stays significant (a phase
                # error, a reflection), N fitted amplitudes re-weight the antennas by how well each
                # fits and bend the positions while their error bars treat them as known (measured:
                # worse in angle and range on the multipath stand-in, 75-84 % 2-sigma coverage with a
                # small static error), so they are refused
                trial = refine_ml(Y, array, th, rr, S, c=c_new, w=w, r_min=lo, r_max=hi)
                X = trial.gains[:, None] * S if S is not None else trial.pilots
                floor_w = noise_floor(Y, K, S, w)[0]
                F_t, m_t = in_span_ratio(Y, array, trial.theta, trial.r, X, w, floor_w, c_new)
                # the N - 1 free real amplitudes took (N - 1) / 2 complex degrees of freedom of the in-span residual
                m_a = max(m_t - (float(np.sum(w > 0)) - 1.0) / 2.0, 1.0)
                if np.any(F_t * m_t / m_a > _f_quantile(1.0 - mismatch_alpha, 2 * m_a, 2 * float(np.sum(w > 0)) * T)):
                    amp_ok = False
                    info["amplitude_rejected"] = True
                if amp_ok:
                    c = c_new
                    info["amplitude_fit"] = True
                    changed = True
        if not changed:
            break
    else:
        fit = refine_ml(Y, array, th, rr, S, c=c, w=w, r_min=lo, r_max=hi)
    info["model_error"] = sm2
    return fit, w, c, info


def _detect(Y, Ys, array, S, n_targets, w, u, q, lo, hi_r, relax_rounds, max_targets, add_alpha):
    """Steps 2-3 of the module doc with antenna weights ``w``: initial positions (th0, r0), K and counters."""
    N = Y.shape[0]
    sw = np.sqrt(w)
    Yw = sw[:, None] * Ys
    k_mdl = None
    pilot_rank = None
    if S is not None:
        K = S.shape[0]
        pilot_rank, V = _pilot_rank(S)
        if pilot_rank == K:
            Z = Yw @ S.conj().T @ np.linalg.inv(S @ S.conj().T)  # column k ~ beta_k a_k
            spec = grid_scan(array, Z, u, q, sw, None, per_column=True)
            init = [_peak(spec[:, :, k], u, q) for k in range(K)]
            th0 = np.array([t for t, _ in init])
            r0 = np.array([r for _, r in init])
            scans = 1
        else:
            srch = _Search(array, Yw @ V.conj().T, sw, u, q, lo, hi_r)
            th0, r0 = srch.detect(K, relax_rounds=relax_rounds)
            scans = srch.scans
            # assign positions to pilot rows: compare fitted coefficients with the pilots in V coordinates
            Bh = ls_waveforms(steering(array, th0, r0), Yw @ V.conj().T, sw, None)
            Sv = S @ V.conj().T
            sim = np.abs(Bh.conj() @ Sv.T) / (
                np.linalg.norm(Bh, axis=1)[:, None] * np.linalg.norm(Sv, axis=1)[None] + 1e-300
            )
            rows, cols = linear_sum_assignment(-sim)
            order = np.empty(K, int)
            order[cols] = rows
            th0, r0 = th0[order], r0[order]
    else:
        if n_targets is None:
            k_mdl = estimate_order(Y, w, min(max_targets, N - 1))
            K = k_mdl
        else:
            K = int(n_targets)
        s2_floor, _ = noise_floor(Ys, K, None, w)
        X = _subspace_data(Yw, max(K, 1), s2_floor)
        srch = _Search(array, X, sw, u, q, lo, hi_r)
        th0, r0 = srch.detect(K, relax_rounds=relax_rounds)
        if n_targets is None:
            th0, r0 = _add_targets(Y, array, w, th0, r0, s2_floor, u, q, lo, hi_r, max_targets, add_alpha)
            K = th0.size
        scans = srch.scans
    return th0, r0, K, k_mdl, pilot_rank, scans


# ----------------------------------------------------------------------------- main
def full_array_localize(
    Y: np.ndarray,
    array: ULA,
    n_targets: int | None = None,
    pilots: np.ndarray | None = None,
    *,
    hi: np.ndarray | None = None,
    r_bounds=None,
    weights=None,
    phase_step: float = np.pi / 2,
    relax_rounds: int = 1,
    dead_ratio: float = 0.05,
    normalize_db: float = 3.0,
    max_targets: int = 8,
    add_alpha: float = 0.01,
    mismatch_alpha: float = 0.01,
    robust: bool = True,
) -> FullArrayResult:
    """Localize K near-field targets from one block of snapshots with the full array (module doc).

    Parameters
    ----------
    Y : ndarray, shape (N, T), complex
        Snapshots (eq. (5)).
    array : ULA
    n_targets : int, optional
        K.  With pilots it must equal their rows (default: the rows).  Blind and None: MDL
        on the full array (:func:`estimate_order`), then targets are added one at a time
        while the ML cost drops by more than a noise-only maximum would (chi-square bound
        over the grid, false-alarm ``add_alpha``), which finds coherent sources MDL counts once.
    pilots : ndarray, shape (K, T), optional
        Known waveforms; identical or collinear rows are allowed.
    hi : ndarray, shape (N,), optional
        Known HI vector (gain and phase per antenna, e.g. from a reference calibration);
        the data are divided by it first (antennas with hi = 0 are excluded) and antenna n
        is weighted by ``|hi_n|^2`` (its noise was scaled by ``1 / |hi_n|``).
    r_bounds : (float, float), optional
        Range window in metres; :func:`default_r_bounds` by default.
    weights : ndarray, shape (N,), optional
        Antenna weights (0 excludes), combined with the dead-channel screen.
    phase_step : float
        Curvature-phase step of the range grid (rad), see :func:`coarse_grid`.
    relax_rounds : int
        RELAX re-detection rounds (blind / rank-deficient pilots).
    dead_ratio, normalize_db : channel screen thresholds (power ratio to the median; robust
        std of the channel powers in dB above which the coarse search normalises amplitudes).
    max_targets : int
        Upper bound of K when it is estimated.
    mismatch_alpha : float
        False-alarm rate of the ``model_mismatch`` flag (:func:`~.uncertainty.model_check`).
    robust : bool
        Exclude outlying antennas / fit channel amplitudes in the refinement.

    Returns
    -------
    FullArrayResult
        ``diagnostics``: ``r_bounds``, ``grid_shape``, ``weights`` (N,), ``excluded``
        (antennas dropped as outliers), ``amplitude_fit`` (bool), ``channel_gain`` (N,) fitted
        real amplitudes (or None), ``amplitude_rejected`` (bool: significant amplitudes that did not
        explain the residual), ``model_error`` (static model-error power, data units), ``in_span_ratio``
        (K,) (:func:`~.model_error.in_span_ratio`, 1 where not significant), ``pilot_rank``, ``k_mdl``,
        ``model_check`` (dict),
        ``init_theta``, ``init_r`` (before the final refinement), ``scans``, ``normalized``.

    Raises
    ------
    ValueError
        Bad shapes, non-finite data, inconsistent n_targets/pilots, bad r_bounds.
    """
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != array.n_antennas:
        raise ValueError(f"Y: expected ({array.n_antennas}, T) snapshots, got shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y: contains NaN or Inf")
    Y = Y.astype(np.complex128)
    N, T = Y.shape
    lo, hi_r = _check_bounds(array, r_bounds)
    w = np.ones(N) if weights is None else np.asarray(weights, float).copy()
    if w.shape != (N,) or np.any(w < 0):
        raise ValueError(f"weights: expected ({N},) non-negative values, got shape {w.shape}")
    if hi is not None:
        hv = np.asarray(hi, complex)
        if hv.shape != (N,):
            raise ValueError(f"hi: expected an ({N},) complex HI vector, got shape {hv.shape}")
        ok = np.abs(hv) > 1e-12
        Y = np.where(ok[:, None], Y / np.where(ok, hv, 1.0)[:, None], 0.0)
        w[~ok] = 0.0
        # after the division the noise of antenna n has variance sigma2 / |hi_n|^2: weight by |hi_n|^2
        # (normalised), which makes the weighted LS fit the ML fit and the weighted CRB the data's
        if np.any(ok):
            w[ok] *= np.abs(hv[ok]) ** 2 / np.mean(np.abs(hv[ok]) ** 2)
    S = None
    if pilots is not None:
        S = np.atleast_2d(np.asarray(pilots, np.complex128))
        if S.ndim != 2 or S.shape[1] != T:
            raise ValueError(f"pilots: expected (K, {T}), got shape {S.shape}")
        if n_targets is not None and int(n_targets) != S.shape[0]:
            raise ValueError(f"n_targets: {n_targets} differs from the {S.shape[0]} pilot rows")
    elif n_targets is not None and not 1 <= int(n_targets) < N:
        raise ValueError(f"n_targets: expected an integer in [1, {N - 1}], got {n_targets!r}")

    # 1. channel screen
    p = np.mean(np.abs(Y) ** 2, axis=1)
    alive = w > 0
    if not np.any(alive & (p > 0)):
        raise ValueError("Y: every channel is dead (zero power or zero weight)")
    med = float(np.median(p[alive]))
    w[p < dead_ratio * med] = 0.0
    alive = w > 0
    pdb = 10 * np.log10(np.maximum(p[alive], 1e-300))
    spread = 1.4826 * float(np.median(np.abs(pdb - np.median(pdb))))
    normalized = spread > normalize_db
    Ys = Y / np.sqrt(np.where(alive, p, 1.0))[:, None] if normalized else Y
    u, q = coarse_grid(array, (lo, hi_r), phase_step)
    diag = {
        "r_bounds": (lo, hi_r),
        "grid_shape": (q.size, u.size),
        "normalized": bool(normalized),
        "channel_spread_db": spread,
    }

    # 2-3. detection
    th0, r0, K, k_mdl, pilot_rank, scans = _detect(
        Y, Ys, array, S, n_targets, w, u, q, lo, hi_r, relax_rounds, max_targets, add_alpha
    )
    diag.update(k_mdl=k_mdl, pilot_rank=pilot_rank, scans=scans, init_theta=th0.copy(), init_r=r0.copy())

    # 4. refinement on all snapshots (original amplitudes; model error, outliers, channel gains handled here)
    s2_fit, dof_fl = noise_floor(Y, K, S, w)  # noise level of the w-weighted data, fit-independent
    if robust:
        fit0 = refine_ml(Y, array, th0, r0, S, w=w, r_min=lo, r_max=hi_r)
        w_me, _ = detect_model_error(
            residual_power(Y, array, fit0, S)[1], w, s2_fit, K, T, S is None, mismatch_alpha, dof_fl
        )
        w_start = w
        if w_me is not None and np.max(np.abs(w_me - w)) > 0.05 * np.max(w):
            # the noise weights trust a few strong channels whose errors the model lacks, which can
            # mislead the detection: detect again with the model-error weights and keep the fit that
            # explains the data better under them
            th1, r1, _, _, _, sc1 = _detect(
                Y, Ys, array, S, K if S is None else None, w_me, u, q, lo, hi_r, relax_rounds, K, add_alpha
            )
            fa = refine_ml(Y, array, fit0.theta, fit0.r, S, w=w_me, r_min=lo, r_max=hi_r)
            fb = refine_ml(Y, array, th1, r1, S, w=w_me, r_min=lo, r_max=hi_r)
            best = fb if fb.cost < fa.cost else fa
            diag.update(scans=diag["scans"] + sc1, redetected={"theta": fb.theta, "r": fb.r, "kept": best is fb})
            th0, r0, w_start = best.theta, best.r, w_me
        fit, w_fin, c_amp, info = _robust_refine(
            Y, array, th0, r0, S, w_start, lo, hi_r, s2_fit, dof_fl, w0=w, mismatch_alpha=mismatch_alpha
        )
    else:
        fit = refine_ml(Y, array, th0, r0, S, w=w, r_min=lo, r_max=hi_r)
        w_fin, c_amp, info = w, None, {"excluded": [], "amplitude_fit": False, "model_error": 0.0}
    th, rr = fit.theta, fit.r
    if S is None:
        order = np.argsort(th, kind="stable")
        th, rr = th[order], rr[order]
        gains = np.ones(K, complex)
        wave = fit.pilots[order]
    else:
        gains = fit.gains
        wave = gains[:, None] * S

    # 5. honest output
    mc = model_check(Y, array, th, rr, S, c_amp, w_fin, alpha=mismatch_alpha)
    th_std, r_std, ud = estimate_uncertainty(
        Y,
        array,
        th,
        rr,
        S,
        gains if S is not None else None,
        c_amp,
        waveforms=None if S is not None else wave,
        sigma2=mc["sigma2_fit"],
        w=w_fin,
    )
    # a static model error does not average over the snapshots: its own per-target test (in-span ratio)
    g_b = gains if S is not None else None
    th_std, r_std, in_span = model_error_bars(
        Y, array, th, rr, g_b, S, w_fin, mc, th_std, r_std, mismatch_alpha, c=c_amp
    )
    status = []
    A = steering(array, th, rr)
    Gm = np.abs(A.conj().T @ (w_fin[:, None] * A)) / max(float(np.sum(w_fin)), 1e-300)
    np.fill_diagonal(Gm, 0.0)
    for k in range(K):
        if Gm[k].size and Gm[k].max() > 0.9:
            status.append("unresolved")
        elif rr[k] <= lo * (1 + 1e-6) or rr[k] >= hi_r * (1 - 1e-6):
            status.append("range_at_bound")
        elif mc["mismatch"][k]:
            status.append("model_mismatch")
        else:
            status.append("ok")
    diag.update(
        weights=w_fin,
        excluded=info["excluded"],
        amplitude_fit=info["amplitude_fit"],
        amplitude_rejected=info.get("amplitude_rejected", False),
        model_error=info["model_error"],
        in_span_ratio=in_span,
        channel_gain=c_amp,
        model_check=mc,
        crb=ud["crb"],
        iterations=fit.iterations,
        converged=fit.converged,
    )
    return FullArrayResult(th, rr, gains, wave, mc["residual"], mc["sigma2_fit"], status, th_std, r_std, diag)


def _add_targets(Y, array, w, th, rr, s2, u, q, lo, hi, max_targets, alpha):
    """Add targets while the blind ML cost drops by more than the noise-only maximum over the grid.

    Under "no further target" the cost decrease of the best added source is at most the
    largest of ~G per-cell decreases, each ``(sigma2 / 2) chi2(2 T)``; the bound uses the
    (1 - alpha / G) quantile (Bonferroni over the G grid cells).
    """
    T = Y.shape[1]
    G = u.size * q.size
    thr = s2 * chi2.ppf(1.0 - alpha / G, 2 * T) / 2.0
    sw = np.sqrt(w)
    # the scan sees the leading singular components of the data (the projected energy of the
    # remaining noise directions hardly depends on the candidate); K + 4 columns
    U, sv, _ = np.linalg.svd(sw[:, None] * Y, full_matrices=False)
    m = min(sv.size, max_targets + 4)
    srch = _Search(array, U[:, :m] * sv[:m], sw, u, q, lo, hi)
    cost = ml_cost(Y, array, th, rr, None, w=w)
    while th.size < max_targets:
        t, r = srch.scan(th, rr)
        f = refine_ml(Y, array, np.append(th, t), np.append(rr, r), None, w=w, r_min=lo, r_max=hi)
        if cost - f.cost <= thr:
            break
        th, rr, cost = f.theta, f.r, f.cost
    return th, rr
