"""Baseline: the coarse localization of Phase 1 alone (paper Sec. IV-A2, Fig. 6 "Coarse").

Runs :func:`nearfield.estimators.coarse.coarse` (fault-free subarrays, far-field MUSIC per
subarray, robust triangulation) on the raw snapshots, excluding the antennas an upstream
``fault_detector`` flagged (meta ``faulty``) when there is one, and reports its positions
as the frame's ``targets``.  It recomputes the triangulation itself, so a detector in
tracking mode does not leak its ML positions into this baseline.
"""

from __future__ import annotations

from nearfield.block import Param, n_targets_check, positive
from nearfield.blocks.estimator import EstimatorBlock
from nearfield.contract import ARRAY, FAULTY, N_TARGETS, PILOTS, SNAPSHOTS, TARGETS, optional
from nearfield.estimators.coarse import coarse


class CoarseLocalizer(EstimatorBlock):
    """Baseline: Phase-1 coarse localization alone (subarray MUSIC + triangulation)."""

    estimator = staticmethod(coarse)
    params = (
        Param(
            "n_targets",
            (int, str, type(None)),
            None,
            "K; null = pilots' rows or the detector's n_targets, else 'auto' (MDL)",
            check=n_targets_check,
        ),
        Param("min_subarray", int, 10, "smallest fault-free subarray used (antennas)", check=positive),
        Param("grid_size", int, 256, "points of the subarray MUSIC scan in sin(theta)", check=positive),
    )
    reads = (ARRAY, SNAPSHOTS, PILOTS, optional(FAULTY), optional(N_TARGETS))
    adds = (TARGETS,)

    def estimate(self, x, frame):
        k = self.n_targets
        if k is None:
            k = x["pilots"].shape[0] if x["pilots"] is not None else x["n_targets"] or "auto"
        faulty = x["faulty"] if x["faulty"] is not None else []
        return coarse(
            x["snapshots"], x["array"], None, k, faulty=faulty, min_subarray=self.min_subarray, grid_size=self.grid_size
        )
