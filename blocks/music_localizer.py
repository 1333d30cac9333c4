"""Phase 3 as a streaming block: decoupled near-field MUSIC, then the exact-model refinement.

The math is :func:`nearfield.estimators.phase3.fine_positions`; this block reads the
calibrated covariance and snapshots and the coarse positions of the fault detector, keeps
the subspaces of the previous frame as a warm start, and writes ``targets``.
"""
from __future__ import annotations

import numpy as np

from nearfield.block import BadFrame, Block, Param, positive
from nearfield.contract import (ARRAY, COARSE, COVARIANCE, MODEL_TARGETS, MUSIC_TARGETS, PILOTS, SNAPSHOTS, SPECTRA,
                                TARGETS, optional)
from nearfield.estimators.phase3 import fine_positions
from nearfield.frame import positions_meta


class MusicLocalizer(Block):
    """Phase 3: decoupled near-field MUSIC on the calibrated covariance, then exact-model ML refinement.

    Reads ``covariance`` when a covariance block feeds it (else works from the snapshots), the calibrated
    ``snapshots`` and meta ``coarse`` (or ``model_targets``) from the fault detector.
    Sets meta ``targets`` (sorted by theta) and ``music_targets`` (the paper's un-refined
    estimate); with ``emit_spectra`` adds the angle and range spectra arrays.
    """

    params = (
        Param("smoothing", (int, type(None)), None, "M sub-vectors of the spatial smoothing; null = N // 2",
              check=lambda v: None if v is None or v >= 1 else "an integer >= 1 or null"),
        Param("angle_window", float, 0.05, "half-width of the angle search in sin(theta) (< 0.5 excludes aliases)",
              check=lambda v: None if 0 < v < 0.5 else "a value in (0, 0.5)"),
        Param("range_window", float, 2.0, "range search from r/w to r*w around the coarse range",
              check=lambda v: None if v > 1 else "a factor > 1"),
        Param("angle_grid", int, 61, "grid points per angle window (refined below the step)", check=positive),
        Param("range_grid", int, 41, "grid points per range window, uniform in 1/r", check=positive),
        Param("refine", bool, True, "refine on the exact model (false = the paper's Phase 3 as written)"),
        Param("centre", str, "coarse", "window centres: coarse (triangulation) or model (Phase-1 polished)",
              choices=("coarse", "model")),
        Param("emit_spectra", bool, False, "add angle/range spectra arrays to the frame (for the plot sink)"),
        Param("search_every", int, 10,
              "full MUSIC search every this many frames; in between one warm-started ML fit from the previous "
              "estimate (a poor fit searches again); 1 = search every frame", check=positive),
    )
    reads = (ARRAY, optional(COVARIANCE), SNAPSHOTS, COARSE, optional(MODEL_TARGETS), PILOTS)  # no covariance: from Y
    adds = (TARGETS, MUSIC_TARGETS) + SPECTRA

    def validate(self):
        if self.centre == "model":  # the window centres come from model_targets, coarse is not needed
            self.reads = (ARRAY, optional(COVARIANCE), SNAPSHOTS, optional(COARSE), MODEL_TARGETS, PILOTS)

    def start(self):
        self._warm = {"search_every": self.search_every}  # subspaces and estimate of the previous frame

    def process(self, frame):
        x = self.read(frame)
        key = "coarse" if self.centre == "coarse" else "model_targets"
        c_th, c_r = x[key]
        if np.any(c_r <= 0) or np.any(np.abs(c_th) >= np.pi / 2):
            raise BadFrame(f"meta.{key}: expected ranges > 0 m and |theta| < pi/2")
        try:
            est = fine_positions(x["covariance"], x["snapshots"], x["array"], c_th, c_r, x["pilots"],
                                 refine=self.refine, fallback=x["model_targets"], smoothing=self.smoothing,
                                 angle_window=self.angle_window, range_window=self.range_window,
                                 angle_grid=self.angle_grid, range_grid=self.range_grid, warm=self._warm)
        except ValueError as exc:  # LinAlgError included: unusable data, not a code fault
            raise BadFrame(f"localization failed: {exc}") from None
        frame.meta["targets"] = positions_meta(est.theta, est.r)
        frame.meta["music_targets"] = positions_meta(est.music_theta, est.music_r)
        if self.emit_spectra:
            for name, arr in est.spectra.items():
                frame.arrays[name] = np.asarray(arr, dtype=np.float32)
        return frame
