"""Fault-free subarrays: partition, far-field MUSIC per subarray, triangulation (paper Sec. IV-A2).

* :func:`partition_subarrays` -- criteria 1 and 2 of Sec. IV-A2;
* :func:`subarray_angles` -- far-field MUSIC per subarray, eqs. (14)-(16);
* :func:`triangulate` -- Lemma 1, eq. (18), made robust to outlying lines;
* :func:`match_to_pilots` -- pairs unlabelled positions with pilot rows;
* :func:`estimate_order` -- K by MDL over the subarray covariances;
* :func:`coarse_localize` -- the three above in a row: Phase 1's coarse positions.

Choices the paper leaves open, all parameters:

* every run of intact antennas is cut into ``ceil(len / N_sub)`` near-equal pieces; pieces
  shorter than ``min_subarray`` (default 10; capped at N_sub for small arrays; at least
  K + 2) are dropped, since MUSIC on a handful of antennas gives wild angles;
* triangulation: the LS point of Lemma 1, then lines farther than ``3 x`` the median line
  distance (and more than 1 mm) are dropped and the point recomputed (3 rounds);
* the K angles are associated across subarrays by sorting (the paper's ascending order);
* the positions found by triangulation carry no label: with pilots they are paired with
  the pilot rows by the assignment that maximises the total matched-filter power.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..array import ULA
from ..music import mdl_order, music_denominator, refine_peaks, signal_subspace, top_peaks
from ..steering import far_field_steering, steering


# ----------------------------------------------------------------------------- partition
def partition_subarrays(n_antennas: int, faulty, n_sub: int, min_size: int) -> list[np.ndarray]:
    """Fault-free contiguous subarrays (criteria 1 and 2 of Sec. IV-A2).

    Parameters
    ----------
    n_antennas : int
    faulty : iterable of int
        0-based indices of (detected) faulty antennas.
    n_sub : int
        Largest subarray size N_sub (all targets in each subarray's far field).
    min_size : int
        Smallest subarray kept.

    Returns
    -------
    list of ndarray
        Antenna indices of each subarray, in array order.
    """
    bad = np.zeros(n_antennas, bool)
    bad[np.asarray(list(faulty), dtype=int)] = True
    good = np.flatnonzero(~bad)
    if good.size == 0:
        return []
    runs = np.split(good, np.flatnonzero(np.diff(good) > 1) + 1)
    out = []
    for run in runs:
        pieces = int(np.ceil(run.size / n_sub))
        for piece in np.array_split(run, pieces):
            if piece.size >= min_size:
                out.append(piece)
    return out


# ----------------------------------------------------------------------------- angles
def _scan_grid(grid_size: int) -> np.ndarray:
    """Uniform sin(theta) grid on the open interval (-1, 1)."""
    return np.linspace(-1.0, 1.0, grid_size + 2)[1:-1]


@lru_cache(maxsize=64)
def _scan_matrix(size: int, d: float, lam: float, grid_size: int) -> np.ndarray:
    """Far-field steering of a centred ``size``-antenna subarray on the scan grid (cached across frames)."""
    rel = (np.arange(size) - (size - 1) / 2.0) * d
    B = far_field_steering(rel, lam, np.arcsin(_scan_grid(grid_size)))
    B.setflags(write=False)
    return B


def subarray_angles(Y: np.ndarray, array: ULA, subarrays, n_targets: int, grid_size: int = 256):
    """Far-field MUSIC angles of every subarray (eqs. (14)-(16)).

    The angle of each subarray is measured from its centre; the far-field steering
    vector uses the sign of eq. (2) (the sign convention of the steering model).  The scan is uniform in sin(theta)
    over (-1, 1), each peak refined below the grid step.

    Returns
    -------
    angles : ndarray, shape (Q, K)
        Ascending angles per subarray (rad); NaN where fewer than K peaks were found.
    centres : ndarray, shape (Q,)
        y-coordinate of each subarray centre (m).
    """
    T = Y.shape[1]
    u = _scan_grid(grid_size)
    angles = np.full((len(subarrays), n_targets), np.nan)
    centres = np.empty(len(subarrays))
    lam = array.wavelength
    for q, idx in enumerate(subarrays):
        pos = array.positions[idx]
        centres[q] = pos.mean()
        rel = pos - centres[q]
        Yq = Y[idx]
        Rq = (Yq @ Yq.conj().T) / T
        if idx.size <= n_targets:
            continue
        U_s, _ = signal_subspace(Rq, n_targets)
        spec = 1.0 / music_denominator(U_s, _scan_matrix(idx.size, array.d, lam, grid_size))
        peaks = top_peaks(spec, n_targets)
        if peaks.size < n_targets:
            continue

        def cost(x, U_s=U_s, rel=rel):
            return music_denominator(U_s, far_field_steering(rel, lam, np.arcsin(np.clip(x, -1, 1))))

        us = refine_peaks(cost, u, peaks)
        angles[q] = np.sort(np.arcsin(np.clip(us, -1.0, 1.0)))
    return angles, centres


# ----------------------------------------------------------------------------- triangulation
def triangulate(angles: np.ndarray, centres: np.ndarray, rounds: int = 3, factor: float = 3.0, floor: float = 1e-3):
    """Intersection of the subarray bearing lines, Lemma 1 (eq. 18), robust to outliers.

    Line q passes through p_q = (0, centres[q]) with direction e_q = (cos, sin)(angles[q]).
    The LS point is ``(sum_q P_q)^-1 sum_q P_q p_q`` with ``P_q = I - e_q e_q^T``; lines
    farther than ``max(factor * median distance, floor)`` from it are dropped and the point
    recomputed, ``rounds`` times.

    Returns
    -------
    theta, r : float
        Polar position (eq. 19): r = |xi|, theta = arcsin(xi_y / r). NaN if fewer than two
        usable lines.
    n_used : int
    """
    ok = np.isfinite(angles)
    a, c = angles[ok], centres[ok]
    keep = np.ones(a.size, bool)
    xi = None
    for _ in range(rounds + 1):
        if keep.sum() < 2:
            break
        e = np.stack([np.cos(a[keep]), np.sin(a[keep])], axis=1)
        p = np.stack([np.zeros(keep.sum()), c[keep]], axis=1)
        P = np.eye(2)[None] - e[:, :, None] * e[:, None, :]
        M = P.sum(axis=0)
        if np.linalg.cond(M) > 1e12:
            break
        xi = np.linalg.solve(M, np.einsum("qij,qj->i", P, p))
        e_all = np.stack([np.cos(a), np.sin(a)], axis=1)
        d_all = xi[None, :] - np.stack([np.zeros(a.size), c], axis=1)
        dist = np.abs(d_all[:, 0] * e_all[:, 1] - d_all[:, 1] * e_all[:, 0])
        new_keep = dist <= max(factor * np.median(dist[keep]), floor)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    if xi is None:
        return np.nan, np.nan, 0
    r = float(np.hypot(*xi))
    return float(np.arcsin(np.clip(xi[1] / r, -1, 1))), r, int(keep.sum())


def match_to_pilots(Y: np.ndarray, array: ULA, theta, r, pilots: np.ndarray, w=None) -> np.ndarray:
    """Permutation pairing positions with pilot rows.

    Maximises sum_k |a(theta_j, r_j)^H W Y s_k^*|^2 over assignments
    (``scipy.optimize.linear_sum_assignment``). Returns ``perm`` such that position
    ``perm[k]`` belongs to pilot row k.
    """
    A = steering(array, theta, r)
    AW = A.conj().T if w is None else A.conj().T * w[None, :]
    score = np.abs((AW @ Y) @ pilots.conj().T) ** 2  # (J positions, K pilots)
    rows, cols = linear_sum_assignment(-score)
    perm = np.empty(pilots.shape[0], dtype=int)
    perm[cols] = rows
    return perm


def _min_size(array: ULA, min_subarray: int, n_targets: int) -> int:
    """Smallest subarray kept: ``min_subarray``, capped at N_sub for small arrays, and > K + 1."""
    return max(min(min_subarray, array.n_sub), n_targets + 2)


def estimate_order(Y: np.ndarray, array: ULA, faulty=(), min_subarray: int = 10, k_max: int = 8) -> int:
    """K by MDL: the median of the MDL orders of the fault-free subarray covariances."""
    subs = partition_subarrays(array.n_antennas, faulty, array.n_sub, _min_size(array, min_subarray, 1))
    if not subs:
        raise ValueError("n_targets=auto: no fault-free subarray to estimate the order from")
    T = Y.shape[1]
    orders = []
    for idx in subs:
        Yq = Y[idx]
        lam = np.linalg.eigvalsh(Yq @ Yq.conj().T / T)
        orders.append(mdl_order(lam, T, min(k_max, idx.size - 2)))
    return int(np.median(orders))


def coarse_localize(Y: np.ndarray, array: ULA, n_targets: int, faulty=(), min_subarray: int = 10, grid_size: int = 256):
    """Coarse positions by subarray MUSIC + robust triangulation (Sec. IV-A2).

    Returns theta (K,), r (K,) (ascending theta; NaN where triangulation failed) and Q.
    """
    subs = partition_subarrays(array.n_antennas, faulty, array.n_sub, _min_size(array, min_subarray, n_targets))
    if len(subs) < 2:
        raise ValueError(f"coarse localization: {len(subs)} usable fault-free subarray(s), need >= 2")
    angles, centres = subarray_angles(Y, array, subs, n_targets, grid_size)
    th, rr = np.empty(n_targets), np.empty(n_targets)
    for k in range(n_targets):
        th[k], rr[k], _ = triangulate(angles[:, k], centres)
    return th, rr, len(subs)
