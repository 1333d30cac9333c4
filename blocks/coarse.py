"""Baseline: the coarse localization of Phase 1 alone (paper Sec. IV-A2, Fig. 6 "Coarse").

Runs :func:`nearfield.blocks.fault_detector.coarse_localize` (fault-free subarrays,
far-field MUSIC per subarray, robust triangulation) on the raw snapshots, excluding the
antennas an upstream ``fault_detector`` flagged (meta ``faulty``) when there is one,
and reports its positions as the frame's ``targets``.  It recomputes the triangulation
itself, so a detector in tracking mode does not leak its ML positions into this baseline.
"""
from __future__ import annotations

import numpy as np

from nearfield.block import BadFrame, Block, Param, frame_array, n_targets_check, positive
from nearfield.blocks.fault_detector import coarse_localize, estimate_order
from nearfield.frame import positions_meta


class CoarseLocalizer(Block):
    """Baseline: Phase-1 coarse localization alone (subarray MUSIC + triangulation)."""

    params = (
        Param("n_targets", (int, str, type(None)), None,
              "K; null = pilots' rows or the detector's n_targets, else 'auto' (MDL)",
              check=n_targets_check),
        Param("min_subarray", int, 10, "smallest fault-free subarray used (antennas)", check=positive),
        Param("grid_size", int, 256, "points of the subarray MUSIC scan in sin(theta)", check=positive),
    )
    requires = ("snapshots",)

    def process(self, frame):
        array = frame_array(frame)
        Y = np.asarray(frame.arrays["snapshots"], dtype=np.complex128)
        if Y.ndim != 2 or Y.shape[0] != array.n_antennas:
            raise BadFrame(f"snapshots: expected ({array.n_antennas}, T), got {Y.shape}")
        try:
            faulty = np.asarray(frame.meta.get("faulty", []), dtype=int).reshape(-1)
        except (TypeError, ValueError):
            raise BadFrame("meta.faulty: expected a list of antenna indices") from None
        if faulty.size and (faulty.min() < 0 or faulty.max() >= array.n_antennas):
            raise BadFrame(f"meta.faulty: indices outside 0..{array.n_antennas - 1}")
        k = self.n_targets
        if k is None:
            pilots = frame.arrays.get("pilots")
            k = pilots.shape[0] if pilots is not None else frame.meta.get("n_targets", "auto")
        try:
            if k == "auto":
                k = estimate_order(Y, array, faulty, self.min_subarray)
            th, r, _ = coarse_localize(Y, array, int(k), faulty, self.min_subarray, self.grid_size)
        except (ValueError, TypeError) as exc:
            raise BadFrame(str(exc)) from None
        ok = np.isfinite(th) & np.isfinite(r)
        frame.meta["targets"] = positions_meta(th[ok], r[ok])
        return frame
