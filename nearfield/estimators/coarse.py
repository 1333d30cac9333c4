"""Baseline: Phase 1's coarse localization alone (subarray MUSIC + triangulation, Fig. 6 "Coarse")."""

from __future__ import annotations

import numpy as np

from ..array import ULA
from .interface import Estimate, resolve_order
from .phase1 import detect_faults
from .subarrays import coarse_localize, estimate_order


def coarse(
    Y: np.ndarray,
    array: ULA,
    pilots: np.ndarray | None = None,
    n_targets=None,
    *,
    faulty=None,
    min_subarray: int = 10,
    grid_size: int = 256,
) -> Estimate:
    """Coarse positions of the targets, as a localizer.

    Parameters
    ----------
    Y : ndarray, shape (N, T), complex
        Snapshots of eq. (5).
    array : ULA
    pilots : ndarray, shape (K, T), optional
        Pilot rows fix K (and, without ``faulty``, the order of the targets).
    n_targets : int or "auto", optional
        K when there are no pilots; "auto"/None = MDL.
    faulty : sequence of int, optional
        Antennas known to be faulty (e.g. an upstream detector's set): the subarrays avoid
        them and the positions are triangulated directly (ascending theta).  When None,
        Phase 1 (:func:`~nearfield.estimators.phase1.detect_faults`) runs first and its
        coarse positions and faulty set are returned (the "coarse" scheme of the experiments).
    min_subarray, grid_size : int
        Smallest subarray kept; points of the sin(theta) MUSIC scan.

    Returns
    -------
    Estimate
        theta, r (NaN where a target's bearing lines do not intersect); ``faulty`` only
        when Phase 1 ran.
    """
    if faulty is None:
        p1 = detect_faults(Y, array, pilots, n_targets, min_subarray=min_subarray, grid_size=grid_size)
        return Estimate(
            p1.coarse_theta,
            p1.coarse_r,
            faulty=p1.faulty,
            diagnostics={"noise_var": p1.sigma2, "n_subarrays": p1.n_subarrays},
        )
    Y = np.asarray(Y, dtype=np.complex128)
    faulty = np.asarray(faulty, dtype=int).reshape(-1)
    k = resolve_order(pilots, n_targets)
    if k is None:
        k = estimate_order(Y, array, faulty, min_subarray)
    th, r, q = coarse_localize(Y, array, k, faulty, min_subarray, grid_size)
    status = ["ok" if np.isfinite(a) and np.isfinite(b) else "no_intersection" for a, b in zip(th, r)]
    return Estimate(th, r, status=status, diagnostics={"n_subarrays": q})
