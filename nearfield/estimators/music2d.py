"""Baseline: plain 2-D near-field MUSIC on the uncalibrated covariance (Huang & Barkat 1991, ref. [20]).

The estimator a user reaches for first: no fault detection, no calibration, no
decoupling.  With the K leading eigenvectors U_s of the sample covariance R,

    P(theta, r) = 1 / (||a(theta, r)||^2 - ||U_s^H a(theta, r)||^2)

is scanned on a coarse 2-D grid (theta uniform in sin(theta) over [-pi/2, pi/2], r
uniform in 1/r over [Z_Fres, Z_Rayl] by default), the K highest 2-D local maxima are
picked (``scipy.ndimage.maximum_filter``), and each is refined by minimising the
continuous MUSIC denominator (``scipy.optimize.minimize``, Nelder-Mead, within one grid
cell around the peak, in the scaled variables (sin theta, 1/r)).  The noise subspace
(N x (N - K)) is never formed: on the grid the denominator is ``N - ||U_s^H a||^2``
for the unit-modulus steering vectors; the refinement evaluates the same quantity as
``||a - U_s U_s^H a||^2``, which has no cancellation near a null (so a noiseless
covariance gives positions exact to ~1e-9 relative rather than ~1e-6).

The steering model (``model``) defaults to the exact spherical model that generates
the synthetic data (eq. (1)); ``"fresnel"`` uses eq. (2).  On a fault-free noiseless
covariance the estimate is exact; faulty antennas (unknown phase biases) rotate the
signal subspace away from every a(theta, r), which is what the paper's method fixes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter
from scipy.optimize import minimize

from ..array import ULA
from ..music import signal_subspace
from ..steering import MODELS, steering
from .interface import Estimate, resolve_order

__all__ = ["Music2DResult", "music2d_localize", "music2d", "music2d_spectrum", "default_grids"]


@dataclass
class Music2DResult(Estimate):
    """Output of :func:`music2d_localize`: an :class:`~nearfield.estimators.interface.Estimate`
    (targets sorted by theta; no gains, no fault detection) plus:

    theta_grid : (Ga,) rad.  range_grid : (Gr,) m.
    spectrum : (Gr, Ga) linear MUSIC pseudo-spectrum on the grid, normalised to max 1.
    grid_theta, grid_r : (K,) the grid peaks before refinement (same order as theta).
    """

    theta_grid: np.ndarray | None = None
    range_grid: np.ndarray | None = None
    spectrum: np.ndarray | None = None
    grid_theta: np.ndarray | None = None
    grid_r: np.ndarray | None = None


def _as_covariance(data, n_antennas: int, kind: str) -> np.ndarray:
    X = np.asarray(data)
    if X.ndim != 2 or X.shape[0] != n_antennas:
        raise ValueError(
            f"data: expected an ({n_antennas}, {n_antennas}) covariance or ({n_antennas}, T) "
            f"snapshots, got shape {X.shape}"
        )
    if kind == "auto":
        kind = (
            "covariance"
            if X.shape == (n_antennas, n_antennas)
            and np.allclose(X, X.conj().T, rtol=1e-5, atol=1e-6 * max(float(np.abs(X).max()), 1e-300))
            else "snapshots"
        )
    if kind == "covariance":
        if X.shape != (n_antennas, n_antennas):
            raise ValueError(f"covariance: expected ({n_antennas}, {n_antennas}), got {X.shape}")
        R = np.asarray(X, dtype=np.complex128)
        return 0.5 * (R + R.conj().T)
    if kind == "snapshots":
        Y = np.asarray(X, dtype=np.complex128)
        return Y @ Y.conj().T / Y.shape[1]
    raise ValueError(f"kind: expected 'auto', 'covariance' or 'snapshots', got {kind!r}")


def default_grids(
    array: ULA,
    theta_points: int | None = None,
    range_points: int = 48,
    range_min: float | None = None,
    range_max: float | None = None,
):
    """Default search grids: theta uniform in sin(theta) over [-pi/2, pi/2] (2N points),
    r uniform in 1/r over [Z_Fres, Z_Rayl] (``range_points`` points), ascending."""
    lo = array.fresnel_distance if range_min is None else float(range_min)
    hi = array.rayleigh_distance if range_max is None else float(range_max)
    if not 0 < lo < hi:
        raise ValueError(f"range_min, range_max: expected 0 < min < max, got {lo}, {hi}")
    theta_grid = np.arcsin(np.linspace(-1.0, 1.0, theta_points or 2 * array.n_antennas))
    range_grid = np.sort(1.0 / np.linspace(1.0 / lo, 1.0 / hi, range_points))
    return theta_grid, range_grid


def music2d_spectrum(U_s: np.ndarray, array: ULA, theta_grid, range_grid, model: str = "exact") -> np.ndarray:
    """MUSIC denominator ``N - ||U_s^H a||^2`` on the grid, shape (Gr, Ga).

    Computed one range row at a time in single precision (a coarse scan: the phases are
    formed in float64, so the only loss is the float32 rounding of cos/sin, ~1e-7
    relative); the refinement works in double precision.
    """
    theta_grid = np.asarray(theta_grid, float)
    out = np.empty((len(range_grid), theta_grid.size))
    Uh = np.ascontiguousarray(U_s.conj().T, dtype=np.complex64)
    n = array.n_antennas
    for i, r in enumerate(range_grid):
        B = steering(array, theta_grid, r, model, np.complex64)
        proj = Uh @ B
        out[i] = np.maximum(n - np.sum(proj.real**2 + proj.imag**2, axis=0), 1e-12 * n)
    return out


def _pick_peaks(spec: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The k highest 2-D local maxima of ``spec`` (Gr, Ga), highest first; padded with the
    highest remaining grid points when there are fewer than k."""
    is_max = maximum_filter(spec, size=3, mode="nearest") == spec
    idx = np.flatnonzero(is_max.ravel())
    idx = idx[np.argsort(spec.ravel()[idx])[::-1]]
    picked = [tuple(np.unravel_index(i, spec.shape)) for i in idx[:k]]
    if len(picked) < k:
        for i in np.argsort(spec.ravel())[::-1]:
            p = tuple(np.unravel_index(i, spec.shape))
            if p not in picked:
                picked.append(p)
            if len(picked) == k:
                break
    return picked


def music2d_localize(
    data,
    array: ULA,
    n_targets: int,
    theta_grid=None,
    range_grid=None,
    model: str = "exact",
    refine: bool = True,
    kind: str = "auto",
) -> Music2DResult:
    """Plain 2-D near-field MUSIC (Huang & Barkat 1991) on an uncalibrated covariance.

    Parameters
    ----------
    data : ndarray
        Either the (N, N) sample covariance R or the (N, T) snapshots Y
        (then ``R = Y Y^H / T``); see ``kind``.
    array : ULA
    n_targets : int
        K, the signal-subspace dimension (1 <= K < N).
    theta_grid : array_like, optional
        Angle grid in rad; default 2N points uniform in sin(theta) over [-pi/2, pi/2].
    range_grid : array_like, optional
        Range grid in m (ascending); default 48 points uniform in 1/r over [Z_Fres, Z_Rayl].
    model : {"exact", "fresnel"}
        Steering model of the spectrum.
    refine : bool
        Refine each grid peak on the continuous spectrum (default True).
    kind : {"auto", "covariance", "snapshots"}
        How to read ``data``; "auto" takes a square Hermitian matrix as a covariance.

    Returns
    -------
    Music2DResult
    """
    if model not in MODELS:
        raise ValueError(f"model: expected one of {MODELS}, got {model!r}")
    R = _as_covariance(data, array.n_antennas, kind)
    if not np.all(np.isfinite(R)):
        raise ValueError("data: contains NaN or Inf")
    U_s, _ = signal_subspace(R, int(n_targets))
    dg_t, dg_r = default_grids(array)
    theta_grid = dg_t if theta_grid is None else np.sort(np.asarray(theta_grid, float))
    range_grid = dg_r if range_grid is None else np.sort(np.asarray(range_grid, float))
    if theta_grid.size < 2 or range_grid.size < 2 or range_grid[0] <= 0:
        raise ValueError("theta_grid, range_grid: expected at least 2 points each and positive ranges")
    den = music2d_spectrum(U_s, array, theta_grid, range_grid, model)
    spec = 1.0 / den
    peaks = _pick_peaks(spec, int(n_targets))
    s_grid = np.sin(theta_grid)
    q_grid = 1.0 / range_grid  # descending
    th = np.empty(len(peaks))
    rr = np.empty(len(peaks))
    g_th = theta_grid[[p[1] for p in peaks]]
    g_r = range_grid[[p[0] for p in peaks]]
    for j, (ir, it) in enumerate(peaks):
        s0, q0 = s_grid[it], q_grid[ir]
        if not refine:
            th[j], rr[j] = theta_grid[it], range_grid[ir]
            continue
        ds = max(abs(s_grid[min(it + 1, s_grid.size - 1)] - s0), abs(s0 - s_grid[max(it - 1, 0)]))
        dq = max(abs(q_grid[min(ir + 1, q_grid.size - 1)] - q0), abs(q0 - q_grid[max(ir - 1, 0)]))
        s_lo, s_hi = max(-1.0, s0 - ds), min(1.0, s0 + ds)
        q_lo, q_hi = max(q_grid.min(), q0 - dq), min(q_grid.max(), q0 + dq)

        def cost(x, s0=s0, ds=ds, s_lo=s_lo, s_hi=s_hi, q0=q0, dq=dq, q_lo=q_lo, q_hi=q_hi):
            s = np.clip(s0 + x[0] * ds, s_lo, s_hi)
            q = np.clip(q0 + x[1] * dq, q_lo, q_hi)
            a = steering(array, np.arcsin(s), 1.0 / q, model)[:, 0]
            resid = a - U_s @ (U_s.conj().T @ a)  # ||P_N a||^2 without the cancellation of N - ||U_s^H a||^2
            return float(np.real(np.vdot(resid, resid)))

        res = minimize(
            cost,
            np.zeros(2),
            method="Nelder-Mead",
            bounds=[((s_lo - s0) / ds, (s_hi - s0) / ds), ((q_lo - q0) / dq, (q_hi - q0) / dq)],
            options={
                "xatol": 1e-9,
                "fatol": 1e-16 * array.n_antennas,
                "maxiter": 2000,
                "initial_simplex": [[0.0, 0.0], [0.3, 0.0], [0.0, 0.3]],
            },
        )
        x = res.x if res.fun <= den[ir, it] else np.zeros(2)
        th[j] = np.arcsin(np.clip(s0 + x[0] * ds, -1.0, 1.0))
        rr[j] = 1.0 / (q0 + x[1] * dq)
    order = np.argsort(th, kind="stable")
    return Music2DResult(
        th[order],
        rr[order],
        theta_grid=theta_grid,
        range_grid=range_grid,
        spectrum=spec / spec.max(),
        grid_theta=g_th[order],
        grid_r=g_r[order],
    )


def music2d(Y: np.ndarray, array: ULA, pilots: np.ndarray | None = None, n_targets=None, **options) -> Music2DResult:
    """:func:`music2d_localize` as a localizer: K from ``n_targets`` or the pilot rows.

    ``Y`` (N, T) snapshots (or an (N, N) covariance with ``kind="covariance"``); the pilots
    only fix K.  ``options`` go to :func:`music2d_localize`.
    """
    k = resolve_order(pilots, n_targets) if n_targets is None else resolve_order(None, n_targets)
    if k is None:
        raise ValueError("n_targets: 2-D MUSIC needs K (an integer, or pilots whose rows give it)")
    return music2d_localize(Y, array, k, **options)
