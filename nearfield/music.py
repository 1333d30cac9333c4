"""MUSIC kernels shared by every localizer: subspaces, spectra, peaks, model order.

The MUSIC pseudo-spectrum of a steering vector b against a K-dimensional signal
subspace U_S (orthonormal columns) is

    F(b) = 1 / (b^H U_N U_N^H b) = 1 / (||b||^2 - ||U_S^H b||^2),

so the (possibly huge) noise subspace U_N is never formed: only the K leading
eigenvectors are computed, with ``scipy.linalg.eigh(subset_by_index=...)``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.signal import find_peaks


def signal_subspace(R: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k leading eigenpairs of a Hermitian matrix.

    Returns
    -------
    U_s : ndarray, shape (n, k)
        Eigenvectors, strongest first.
    w : ndarray, shape (k,)
        Eigenvalues, descending.
    """
    n = R.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"n_targets: expected 1 <= K < {n} (matrix size), got {k}")
    w, U = scipy.linalg.eigh(R, subset_by_index=[n - k, n - 1], check_finite=False)
    return U[:, ::-1], w[::-1]


def leading_subspace(
    R: np.ndarray, k: int, U0: np.ndarray | None = None, iters: int = 3, tol: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`signal_subspace`, warm-started from a previous estimate ``U0`` when given.

    Streaming covariances change little from frame to frame, so a few steps of orthogonal
    iteration from the previous subspace, followed by a Rayleigh-Ritz step, replace the
    O(n^3) eigensolver by O(n^2 k) products.  The result is accepted only when the
    eigen-residual ``||R U - U diag(w)||_F`` is below ``tol * |w_max| * sqrt(k)``; otherwise
    (first frame, a target appeared, ...) ``scipy.linalg.eigh`` decides.
    """
    n = R.shape[0]
    if U0 is None or U0.shape != (n, k):
        return signal_subspace(R, k)
    U = U0
    for _ in range(iters):
        U, _ = np.linalg.qr(R @ U)
    RU = R @ U
    w, V = np.linalg.eigh(U.conj().T @ RU)
    w, V = w[::-1], V[:, ::-1]
    U, RU = U @ V, RU @ V
    resid = np.linalg.norm(RU - U * w[None, :])
    if not resid <= tol * abs(w[0]) * np.sqrt(k):
        return signal_subspace(R, k)
    return U, w


def music_denominator(U_s: np.ndarray, B: np.ndarray) -> np.ndarray:
    """b^H U_N U_N^H b for each column b of ``B`` (n, P) -> (P,), real, >= 0."""
    proj = U_s.conj().T @ B
    val = np.sum(np.abs(B) ** 2, axis=0) - np.sum(np.abs(proj) ** 2, axis=0)
    return np.maximum(val, 1e-12 * np.sum(np.abs(B) ** 2, axis=0))


def music_spectrum(U_s: np.ndarray, B: np.ndarray) -> np.ndarray:
    """MUSIC pseudo-spectrum 1 / (b^H U_N U_N^H b) for each column of ``B`` -> (P,)."""
    return 1.0 / music_denominator(U_s, B)


def top_peaks(spectrum: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest local maxima of a 1-D spectrum, highest first.

    Uses ``scipy.signal.find_peaks``; edge samples count as peaks only when they
    exceed their single neighbour (so a window that cuts a slope does not invent a
    peak at its edge unless nothing else is there).  Fewer than k indices are returned
    when the spectrum has fewer peaks.
    """
    idx, _ = find_peaks(spectrum)
    if len(idx) < k and spectrum.size > 1:
        edges = []
        if spectrum[0] > spectrum[1]:
            edges.append(0)
        if spectrum[-1] > spectrum[-2]:
            edges.append(spectrum.size - 1)
        idx = np.concatenate([idx, np.asarray(edges, dtype=int)])
    order = np.argsort(spectrum[idx])[::-1]
    return idx[order[:k]]


def refine_brackets(cost, lo, hi, rounds: int = 2, points: int = 9) -> np.ndarray:
    """Minimise ``cost`` in each bracket [lo_p, hi_p], all brackets at once.

    ``cost(xs)`` is vectorised over a flat array of the scalar variable.  Each bracket is
    zoomed ``rounds`` times on ``points`` samples -- one matrix product per round for
    every bracket together, which is why this beats a scalar optimiser called point by
    point -- then a parabola through the best three samples gives the vertex.
    """
    lo = np.atleast_1d(np.asarray(lo, dtype=float))
    hi = np.atleast_1d(np.asarray(hi, dtype=float))
    frac = np.linspace(0.0, 1.0, points)
    rows = np.arange(lo.size)
    for _ in range(rounds):
        xs = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
        f = np.asarray(cost(xs.ravel()), dtype=float).reshape(xs.shape)
        j = np.argmin(f, axis=1)
        step = (hi - lo) / (points - 1)
        lo, hi = xs[rows, np.maximum(j - 1, 0)], xs[rows, np.minimum(j + 1, points - 1)]
    x0 = xs[rows, j]
    jm, jp = np.maximum(j - 1, 0), np.minimum(j + 1, points - 1)
    fm, f0, fp = f[rows, jm], f[rows, j], f[rows, jp]
    den = fm - 2.0 * f0 + fp
    ok = (j > 0) & (j < points - 1) & (den > 0)
    return np.where(ok, x0 + 0.5 * step * (fm - fp) / np.where(ok, den, 1.0), x0)


def refine_peaks(cost, grid: np.ndarray, idx, **kw) -> np.ndarray:
    """Sub-grid refinement of spectrum peaks at ``grid[idx]`` (brackets: the neighbouring
    grid points), see :func:`refine_brackets`. Returns (len(idx),)."""
    idx = np.atleast_1d(np.asarray(idx, dtype=int))
    if idx.size == 0:
        return np.zeros(0)
    return refine_brackets(cost, grid[np.maximum(idx - 1, 0)], grid[np.minimum(idx + 1, grid.size - 1)], **kw)


def refine_peak(cost, grid: np.ndarray, i: int, **kw) -> float:
    """:func:`refine_peaks` for one peak."""
    return float(refine_peaks(cost, grid, [i], **kw)[0])


def mdl_order(eigvals: np.ndarray, n_snapshots: int, k_max: int | None = None) -> int:
    """Number of sources by the MDL criterion (Wax & Kailath, 1985).

    ``eigvals``: eigenvalues of a p x p sample covariance from ``n_snapshots``
    snapshots (any order).  Returns argmin_k MDL(k) over k = 0 .. k_max
    (default p - 1), with
    MDL(k) = -T (p - k) log(g_k / a_k) + k (2p - k) log(T) / 2, where g_k and a_k are
    the geometric and arithmetic means of the p - k smallest eigenvalues.
    This replaces the paper's 95 %-energy rule (Remark 2), which depends on the SNR.
    """
    lam = np.sort(np.maximum(np.real(eigvals), 1e-300))[::-1]
    p = lam.size
    t = float(n_snapshots)
    k_max = p - 1 if k_max is None else min(k_max, p - 1)
    best, best_k = np.inf, 0
    for k in range(k_max + 1):
        tail = lam[k:]
        g = np.exp(np.mean(np.log(tail)))
        a = np.mean(tail)
        mdl = -t * (p - k) * np.log(g / a) + 0.5 * k * (2 * p - k) * np.log(t)
        if mdl < best:
            best, best_k = mdl, k
    return best_k
