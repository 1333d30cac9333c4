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
from scipy.optimize import minimize_scalar
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


def refine_peak(cost, grid: np.ndarray, i: int) -> float:
    """Sub-grid refinement of a spectrum peak at ``grid[i]``.

    ``cost(x)`` is the MUSIC denominator as a function of the scalar grid variable
    (minimised); the search is bounded by the neighbouring grid points (Brent).
    """
    lo = grid[max(i - 1, 0)]
    hi = grid[min(i + 1, grid.size - 1)]
    if hi <= lo:
        return float(grid[i])
    res = minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": (hi - lo) * 1e-6})
    x = float(res.x)
    return x if cost(x) <= cost(grid[i]) else float(grid[i])


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
