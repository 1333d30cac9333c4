"""Phase 3: fine localization with the decoupled near-field MUSIC (paper Sec. IV-C),
then a refinement on the exact model.

1. Anti-diagonal of the calibrated covariance, eqs. (29)-(30):
   ``[r]_n = R[n, N-1-n] ~ sum_k g_k exp(j k 2 l_n sin(theta_k))`` under the Fresnel form
   (2): one snapshot of a virtual ULA with spacing 2d = lambda.
2. Spatial smoothing, eqs. (31)-(32): M overlapping sub-vectors of length L = N - M + 1
   (default M = N // 2, the usual compromise between aperture and rank restoration).
3. Angle MUSIC (33) on R_r, searched in sin(theta) within ``angle_window`` of each coarse
   angle: the virtual array's spectrum repeats with period 1 in sin(theta),
   so any window narrower than 0.5 excludes every alias; the highest peak nearer this
   target's coarse angle than any other's wins, refined below the grid step.
4. Range MUSIC (34) with the K-dimensional signal subspace of R only
   (``||a||^2 - ||U_S^H a||^2``; no N x (N - K) noise subspace), searched uniformly in 1/r
   within a factor ``range_window`` of the coarse range, refined below the grid step.
5. ``refine=True``: Levenberg-Marquardt on the deterministic ML cost of the exact model
   (:func:`nearfield.ml.refine_ml`) from the MUSIC estimate, using the calibrated
   snapshots and the pilots (or estimated waveforms). With exact spherical data the
   anti-diagonal keeps a phase term ~ -k l^3 sin cos^2 / r^2 that biases the decoupled
   angle; the refinement removes it. ``refine=False`` gives the paper's
   estimate as written.

Functions: :func:`decoupled_music` is the paper's Phase 3 (steps 1-4);
:func:`fine_positions` is Phase 3 with the refinement (steps 1-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..array import ULA
from ..ml import ml_cost, refine_ml
from ..music import leading_subspace, music_denominator, refine_brackets, top_peaks
from ..steering import cis, steering


def antidiagonal(R: np.ndarray) -> np.ndarray:
    """[r]_n = R[n, N-1-n] (eq. 30), shape (N,)."""
    return np.ascontiguousarray(np.fliplr(R).diagonal())


def antidiagonal_from_snapshots(Y: np.ndarray) -> np.ndarray:
    """[r]_n = (1/T) sum_t y_n(t) y_{N-1-n}(t)^* (eq. 30 without forming R = Y Y^H / T), shape (N,).

    O(N T) instead of the O(N^2 T) covariance; equal to ``antidiagonal(Y @ Y.conj().T / T)``.
    """
    Y = np.asarray(Y)
    return np.einsum("nt,nt->n", Y, Y[::-1].conj()) / Y.shape[1]


def snapshot_subspace(
    Y: np.ndarray, k: int, U0: np.ndarray | None = None, iters: int = 2, tol: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """K leading eigenpairs of R = Y Y^H / T from the snapshots, without forming R.

    Parameters
    ----------
    Y : (N, T) complex snapshots.  k : subspace dimension.
    U0 : (N, k), optional -- previous frame's subspace: ``iters`` steps of orthogonal iteration
        with ``R U = Y (Y^H U) / T`` (O(N T k) each) and a Rayleigh-Ritz step; accepted when the
        eigen-residual is below ``tol * w_max * sqrt(k)``, else (and without ``U0``) a thin SVD
        of Y (O(N T min(N, T))).

    Returns
    -------
    U : (N, k) orthonormal, leading first.  w : (k,) eigenvalues of R, descending.
    """
    Y = np.asarray(Y)
    n, t = Y.shape
    if U0 is not None and U0.shape == (n, k):
        U = U0.astype(Y.dtype, copy=False)
        for _ in range(iters):
            U, _ = np.linalg.qr(Y @ (Y.conj().T @ U))
        RU = Y @ (Y.conj().T @ U) / t
        w, V = np.linalg.eigh(U.conj().T @ RU)
        w, V = w[::-1], V[:, ::-1]
        U, RU = U @ V, RU @ V
        if np.linalg.norm(RU - U * w[None, :]) <= tol * abs(w[0]) * np.sqrt(k):
            return U, w
    U, sv, _ = np.linalg.svd(Y, full_matrices=False)
    return U[:, :k], sv[:k] ** 2 / t


def smoothed_covariance(rvec: np.ndarray, m: int) -> np.ndarray:
    """Spatially smoothed covariance of eq. (32): (1/M) sum_m r_m r_m^H, shape (L, L), L = N - M + 1."""
    n = rvec.size
    if not 1 <= m <= n - 1:
        raise ValueError(f"smoothing: expected 1 <= M <= N - 1 = {n - 1}, got {m}")
    sub = sliding_window_view(rvec, n - m + 1)  # (M, L): sub-vectors r_m
    return (sub.T @ sub.conj()) / m


#: smoothed covariances larger than this (L x L) are never formed: their subspace comes from
#: FFT products with the Hankel matrix of the anti-diagonal (:func:`hankel_subspace`)
HANKEL_MIN_L = 257


class _Hankel:
    """H (L, M) with H[i, m] = r[i + m] (the sub-vectors of eq. (31) as columns), applied by FFT.

    ``R_r = H H^H / M`` is the smoothed covariance of eq. (32); ``H @ X`` and ``H^H @ Z`` are
    correlations with r, O(N log N) per column instead of O(L M).
    """

    def __init__(self, rvec: np.ndarray, m: int):
        self.n, self.m, self.l = rvec.size, m, rvec.size - m + 1
        self.nfft = 1 << int(np.ceil(np.log2(self.n + max(self.m, self.l) - 1)))
        self.rf = np.fft.fft(rvec, self.nfft)

    def dot(self, X: np.ndarray) -> np.ndarray:  # (M, k) -> (L, k): y_i = sum_m r[i+m] x_m
        c = np.fft.ifft(self.rf[:, None] * np.fft.fft(X[::-1], self.nfft, axis=0), axis=0)
        return c[self.m - 1 : self.m - 1 + self.l]

    def hdot(self, Z: np.ndarray) -> np.ndarray:  # (L, k) -> (M, k): w_m = sum_i r[i+m]^* z_i
        c = np.fft.ifft(self.rf[:, None] * np.fft.fft(Z[::-1].conj(), self.nfft, axis=0), axis=0)
        return c[self.l - 1 : self.l - 1 + self.m].conj()

    def cov_dot(self, U: np.ndarray) -> np.ndarray:
        return self.dot(self.hdot(U)) / self.m


def hankel_subspace(
    rvec: np.ndarray, m: int, k: int, U0: np.ndarray | None = None, tol: float = 1e-6, max_iter: int = 60, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """K leading eigenpairs of the smoothed covariance of eq. (32) without forming it.

    Orthogonal (block power) iteration with ``R_r U = H (H^H U) / M`` by FFT (:class:`_Hankel`),
    started from ``U0`` (the previous frame's subspace) or, without it, from a random block of
    K + 4 columns; a Rayleigh-Ritz step each round; stops when the eigen-residual
    ``||R_r U - U diag(w)||_F <= tol * w_max * sqrt(k)``.  O(N log N (K + 4)) per round instead
    of the O(N^3) of forming and decomposing R_r (L x L, L = N - M + 1).

    Returns U (L, k) orthonormal, leading first, and w (k,) descending.
    """
    H = _Hankel(np.asarray(rvec, complex), m)
    L = H.l
    if U0 is not None and U0.shape == (L, k):
        U = U0
    else:
        rng = np.random.default_rng(seed)
        U = rng.standard_normal((L, k + 4)) + 1j * rng.standard_normal((L, k + 4))
    U, _ = np.linalg.qr(U)
    for _ in range(max_iter):
        RU = H.cov_dot(U)
        w, V = np.linalg.eigh(U.conj().T @ RU)
        w, V = w[::-1], V[:, ::-1]
        Uk, RUk = U @ V[:, :k], RU @ V[:, :k]
        if np.linalg.norm(RUk - Uk * w[None, :k]) <= tol * abs(w[0]) * np.sqrt(k):
            return Uk, w[:k]
        U, _ = np.linalg.qr(RU @ V)
    return Uk, w[:k]


def virtual_steering(array: ULA, length: int, u) -> np.ndarray:
    """b(theta) of eq. (31) for the anti-diagonal virtual array (spacing 2d), (L, P); u = sin(theta)."""
    pos = 2.0 * array.d * np.arange(length)
    return cis(array.wavenumber * np.outer(pos, np.atleast_1d(u)))


def angle_music(
    R: np.ndarray,
    array: ULA,
    coarse_theta,
    n_targets: int,
    smoothing: int | None = None,
    window: float = 0.05,
    grid_size: int = 61,
    warm: dict | None = None,
):
    """Decoupled angle estimates, eqs. (29)-(33), one per coarse angle.

    ``R`` is the (N, N) calibrated covariance or directly its anti-diagonal r (N,) of eq. (30)
    (e.g. :func:`antidiagonal_from_snapshots`).  ``warm`` (optional, mutated) caches the subspace
    between calls to warm-start
    :func:`nearfield.music.leading_subspace` on a stream.

    Returns
    -------
    theta : (K,) rad, in the order of ``coarse_theta``.
    grid : (G,) sin(theta) grid of the spectrum (the union of the windows).
    spectrum : (G,) MUSIC spectrum on ``grid`` (normalised to max 1).
    """
    rvec = R if np.ndim(R) == 1 else antidiagonal(R)
    N = rvec.shape[0]
    m = N // 2 if smoothing is None else smoothing
    warm = {} if warm is None else warm
    if not 1 <= m <= N - 1:
        raise ValueError(f"smoothing: expected 1 <= M <= N - 1 = {N - 1}, got {m}")
    L = N - m + 1
    if L >= HANKEL_MIN_L:  # large arrays: never form the L x L smoothed covariance
        U_s, _ = hankel_subspace(rvec, m, n_targets, warm.get("virtual"))
    else:
        U_s, _ = leading_subspace(smoothed_covariance(rvec, m), n_targets, warm.get("virtual"))
    warm["virtual"] = U_s
    coarse_theta = np.asarray(coarse_theta, float)
    u0 = np.sin(coarse_theta)
    frac = np.linspace(-window, window, grid_size)
    u = np.clip(u0[:, None] + frac[None, :], -1.0, 1.0)  # (K', G)
    spec = (1.0 / music_denominator(U_s, virtual_steering(array, L, u.ravel()))).reshape(u.shape)
    out = coarse_theta.copy()
    rows, picks = [], []
    for k in range(u.shape[0]):
        peaks = top_peaks(spec[k], 4)  # highest first
        if peaks.size:
            # the highest peak that is nearer this target's coarse angle than any other's
            # (overlapping windows must not steal a neighbour's peak)
            own = [i for i in peaks if np.argmin(np.abs(u[k, i] - u0)) == k]
            rows.append(k)
            picks.append(own[0] if own else peaks[0])
    if rows:
        rows_a, picks_a = np.asarray(rows), np.asarray(picks)

        def cost(x):
            return music_denominator(U_s, virtual_steering(array, L, x))

        last = u.shape[1] - 1
        ref = refine_brackets(cost, u[rows_a, np.maximum(picks_a - 1, 0)], u[rows_a, np.minimum(picks_a + 1, last)])
        out[rows_a] = np.arcsin(np.clip(ref, -1.0, 1.0))
    grid, spectrum = u.ravel(), spec.ravel()
    order = np.argsort(grid)
    return out, grid[order], spectrum[order] / spectrum.max()


def range_music(
    U_s: np.ndarray, array: ULA, theta, coarse_r, window: float = 2.0, grid_size: int = 41, model: str = "exact"
):
    """Range estimates of eq. (34) for each angle, searched uniformly in 1/r.

    ``U_s`` (N, K) is the signal subspace of the calibrated covariance. The search covers
    [r / window, r * window] around each coarse range, clipped to [d, 2 Z_Rayl].

    Returns r (K,), grids (K, G) in metres and spectra (K, G) normalised to max 1.
    """
    theta = np.asarray(theta, float)
    coarse_r = np.asarray(coarse_r, float)
    K = theta.size
    lo = np.maximum(coarse_r / window, array.d)
    hi = np.minimum(coarse_r * window, 2.0 * array.rayleigh_distance)
    frac = np.linspace(0.0, 1.0, grid_size)
    inv = (1.0 / hi)[:, None] + (1.0 / lo - 1.0 / hi)[:, None] * frac[None, :]  # (K, G), uniform in 1/r
    th = np.repeat(theta, grid_size)
    den = music_denominator(U_s, steering(array, th, 1.0 / inv.ravel(), model)).reshape(K, grid_size)
    spec = 1.0 / den
    best = np.argmax(spec, axis=1)
    rows = np.arange(K)
    lo_b, hi_b = inv[rows, np.maximum(best - 1, 0)], inv[rows, np.minimum(best + 1, grid_size - 1)]
    points = 9

    def cost(x):  # x: (K * points,) inverse ranges, bracket k's samples contiguous -> its own angle
        return music_denominator(U_s, steering(array, np.repeat(theta, x.size // K), 1.0 / x, model))

    r_out = 1.0 / refine_brackets(cost, lo_b, hi_b, points=points)
    grids = 1.0 / inv[:, ::-1]
    specs = spec[:, ::-1] / spec.max(axis=1, keepdims=True)
    return r_out, grids, specs


def decoupled_music(
    R: np.ndarray | None,
    array: ULA,
    coarse_theta,
    coarse_r,
    *,
    smoothing: int | None = None,
    angle_window: float = 0.05,
    range_window: float = 2.0,
    angle_grid: int = 61,
    range_grid: int = 41,
    model: str = "exact",
    warm: dict | None = None,
    snapshots: np.ndarray | None = None,
):
    """The paper's Phase 3 (decoupled angle MUSIC, then range MUSIC).

    Parameters
    ----------
    R : (N, N) calibrated sample covariance, or None with ``snapshots``.  array : ULA.
    coarse_theta, coarse_r : (K,) coarse positions (windows' centres).
    smoothing : M of eq. (31) (default N // 2).
    angle_window : half-width in sin(theta); range_window : factor around the coarse range.
    angle_grid, range_grid : grid points per window.
    model : steering model of the range search.
    warm : dict, optional -- subspace cache for streams (mutated).
    snapshots : (N, T), optional -- the calibrated snapshots Y; used when ``R`` is None: the
        anti-diagonal (:func:`antidiagonal_from_snapshots`, O(N T)) and the signal subspace
        (:func:`snapshot_subspace`, O(N T K) warm) come from Y, and R is never formed.

    Returns
    -------
    theta, r : (K,) in the order of the coarse positions.
    spectra : dict with angle_grid (G,) [rad], angle_spectrum (G,), range_grid (K, G) [m],
        range_spectrum (K, G).
    """
    coarse_theta = np.asarray(coarse_theta, float)
    K = coarse_theta.size
    warm = {} if warm is None else warm
    if R is None:
        if snapshots is None:
            raise ValueError("decoupled_music: expected the covariance R or the snapshots, got neither")
        theta, ugrid, aspec = angle_music(
            antidiagonal_from_snapshots(snapshots), array, coarse_theta, K, smoothing, angle_window, angle_grid, warm
        )
        U_s, _ = snapshot_subspace(snapshots, K, warm.get("full"))
    else:
        theta, ugrid, aspec = angle_music(R, array, coarse_theta, K, smoothing, angle_window, angle_grid, warm)
        U_s, _ = leading_subspace(R, K, warm.get("full"))
    warm["full"] = U_s
    r, rgrid, rspec = range_music(U_s, array, theta, np.asarray(coarse_r, float), range_window, range_grid, model)
    spectra = {"angle_grid": np.arcsin(ugrid), "angle_spectrum": aspec, "range_grid": rgrid, "range_spectrum": rspec}
    return theta, r, spectra


@dataclass
class FineEstimate:
    """Output of :func:`fine_positions`; arrays in the order of the coarse positions.

    theta, r : final positions (refined when asked). gains : (K,) or None.
    music_theta, music_r : the paper's Phase-3 MUSIC estimate. spectra : see :func:`decoupled_music`.
    stats : the refinement's sufficient statistics of (Y, pilots) (:attr:`nearfield.ml.MLFit.stats`), or None.
    """

    theta: np.ndarray
    r: np.ndarray
    gains: np.ndarray | None
    music_theta: np.ndarray
    music_r: np.ndarray
    spectra: dict
    stats: tuple | None = None


def fine_positions(
    R: np.ndarray | None,
    Y: np.ndarray,
    array: ULA,
    coarse_theta,
    coarse_r,
    pilots=None,
    *,
    refine: bool = True,
    fallback=None,
    search_every: int | None = None,
    **kw,
) -> FineEstimate:
    """Phase 3 with the exact-model refinement: MUSIC (:func:`decoupled_music`), then ML.

    ``Y`` are the calibrated snapshots; ``pilots`` rows follow the coarse positions
    (estimated waveforms are used when None).  ``fallback`` (theta, r), e.g. Phase 1's
    model positions: the refinement starts from whichever of the MUSIC estimate and
    ``fallback`` has the lower ML cost (guards against a MUSIC peak outside the basin of
    the ML minimum, and saves iterations).  ``R`` None: MUSIC works from ``Y`` alone (the
    covariance is never formed).  ``kw`` go to :func:`decoupled_music`.

    Tracking fast path (streams: ``warm`` given in ``kw`` and ``refine``): with
    ``search_every`` = S > 1 (default ``warm.get("search_every", 1)``), the full MUSIC
    search runs on the first frame and then once every S frames; in between, one
    warm-started ML refinement starts from ``fallback`` (this frame's Phase-1 fit) or, without
    it, from the previous frame's estimate.  A tracked fit whose residual power per sample
    (cost / (N T)) exceeds twice the running value of the searched frames -- a target
    jumped, appeared or left -- is discarded and the full search runs on that frame.
    On tracked frames ``music_theta``, ``music_r`` and ``spectra`` repeat the last search's.
    """
    warm = kw.get("warm")
    every = search_every if search_every is not None else (warm or {}).get("search_every", 1)
    # the caller's state dict when tracking (None otherwise)
    track_state = warm if (refine and warm is not None and every > 1) else None
    coarse_theta = np.asarray(coarse_theta, float)
    if track_state is not None:
        prev = track_state.get("track")
        if prev is not None and prev["theta"].size == coarse_theta.size and prev["since"] < every - 1:
            # this frame's Phase-1 fit when given (closer for moving targets), else the previous estimate;
            # no cost comparison here: the residual test below catches a bad start
            start = fallback if fallback is not None else (prev["theta"], prev["r"])
            fit = refine_ml(Y, array, start[0], start[1], pilots)
            per = fit.cost / Y.size
            if np.all(np.isfinite(fit.theta)) and per <= 2.0 * prev["resid"]:
                prev.update(theta=fit.theta, r=fit.r, since=prev["since"] + 1)
                music, spectra = prev["music"], prev["spectra"]
                return FineEstimate(fit.theta, fit.r, fit.gains, music[0], music[1], spectra, fit.stats)
    if R is None:
        kw.setdefault("snapshots", Y)
    mt, mr, spectra = decoupled_music(R, array, coarse_theta, coarse_r, **kw)
    if not refine:
        return FineEstimate(mt, mr, None, mt, mr, spectra)
    start = (mt, mr)
    if fallback is not None and ml_cost(Y, array, fallback[0], fallback[1], pilots) < ml_cost(Y, array, mt, mr, pilots):
        start = fallback
    fit = refine_ml(Y, array, start[0], start[1], pilots)
    if track_state is not None:
        per = fit.cost / Y.size
        old = track_state.get("track")
        resid = per if old is None else 0.8 * old["resid"] + 0.2 * per
        track_state["track"] = dict(theta=fit.theta, r=fit.r, since=0, resid=resid, music=(mt, mr), spectra=spectra)
    return FineEstimate(fit.theta, fit.r, fit.gains, mt, mr, spectra, fit.stats)
