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


def refine_peak(cost, grid: np.ndarray, i: int, rounds: int = 4, points: int = 9) -> float:
    """Sub-grid refinement of a spectrum peak at ``grid[i]``.

    ``cost(xs)`` is the MUSIC denominator, vectorised over an array of the scalar grid
    variable (minimised).  The bracket between the neighbouring grid points is zoomed
    ``rounds`` times on ``points`` samples (each evaluation is one matrix product,
    which is why this beats a scalar optimiser called point by point), then a parabola
    through the best three samples gives the vertex.
    """
    lo = grid[max(i - 1, 0)]
    hi = grid[min(i + 1, grid.size - 1)]
    if not hi > lo:
        return float(grid[i])
    for _ in range(rounds):
        xs = np.linspace(lo, hi, points)
        f = np.asarray(cost(xs), dtype=float)
        j = int(np.argmin(f))
        step = xs[1] - xs[0]
        lo, hi = xs[max(j - 1, 0)], xs[min(j + 1, points - 1)]
    x0 = xs[j]
    if 0 < j < points - 1:
        f0, fm, fp = f[j], f[j - 1], f[j + 1]
        den = fm - 2.0 * f0 + fp
        if den > 0:
            x0 = x0 + 0.5 * step * (fm - fp) / den
    return float(x0)


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
