"""Phase 3 as a streaming block: decoupled near-field MUSIC, then the exact-model refinement.

The math is :func:`nearfield.estimators.phase3.fine_positions`; this block reads the
calibrated covariance and snapshots and the coarse positions of the fault detector, keeps
the subspaces of the previous frame as a warm start, and writes ``targets``.
"""

from __future__ import annotations

import numpy as np

from nearfield.block import BadFrame, Block, Param, positive
from nearfield.contract import (
    ARRAY,
    COARSE,
    COARSE_METHOD,
    COVARIANCE,
    FAULTY,
    MODEL_CHECK,
    MODEL_TARGETS,
    MUSIC_TARGETS,
    PILOTS,
    RESIDUAL,
    SNAPSHOTS,
    SPECTRA,
    TARGETS,
    optional,
)
from nearfield.estimators.localize import finish_estimate
from nearfield.estimators.phase3 import fine_positions
from nearfield.frame import positions_meta
from nearfield.ml import refine_ml


class MusicLocalizer(Block):
    """Phase 3: decoupled near-field MUSIC on the calibrated covariance, then exact-model ML refinement.

    Reads ``covariance`` when a covariance block feeds it (else works from the snapshots), the calibrated
    ``snapshots`` and meta ``coarse`` (or ``model_targets``) from the fault detector.
    Sets meta ``targets`` (sorted by theta) and ``music_targets`` (the paper's un-refined
    estimate); with ``emit_spectra`` adds the angle and range spectra arrays.
    """

    params = (
        Param(
            "smoothing",
            (int, type(None)),
            None,
            "M sub-vectors of the spatial smoothing; null = N // 2",
            check=lambda v: None if v is None or v >= 1 else "an integer >= 1 or null",
        ),
        Param(
            "angle_window",
            float,
            0.05,
            "half-width of the angle search in sin(theta) (< 0.5 excludes aliases)",
            check=lambda v: None if 0 < v < 0.5 else "a value in (0, 0.5)",
        ),
        Param(
            "range_window",
            float,
            2.0,
            "range search from r/w to r*w around the coarse range",
            check=lambda v: None if v > 1 else "a factor > 1",
        ),
        Param("angle_grid", int, 61, "grid points per angle window (refined below the step)", check=positive),
        Param("range_grid", int, 41, "grid points per range window, uniform in 1/r", check=positive),
        Param("refine", bool, True, "refine on the exact model (false = the paper's Phase 3 as written)"),
        Param(
            "centre",
            str,
            "coarse",
            "window centres: coarse (triangulation) or model (Phase-1 polished)",
            choices=("coarse", "model"),
        ),
        Param("emit_spectra", bool, False, "add angle/range spectra arrays to the frame (for the plot sink)"),
        Param(
            "search_every",
            int,
            10,
            "full MUSIC search every this many frames; in between one warm-started ML fit from the previous "
            "estimate (a poor fit searches again); 1 = search every frame",
            check=positive,
        ),
    )
    reads = (
        ARRAY,
        optional(COVARIANCE),
        SNAPSHOTS,
        COARSE,
        optional(MODEL_TARGETS),
        PILOTS,  # no covariance: from Y
        optional(COARSE_METHOD),
        optional(FAULTY),
    )
    adds = (TARGETS, MUSIC_TARGETS, RESIDUAL, MODEL_CHECK) + SPECTRA

    def validate(self):
        if self.centre == "model":  # the window centres come from model_targets, coarse is not needed
            self.reads = (
                ARRAY,
                optional(COVARIANCE),
                SNAPSHOTS,
                optional(COARSE),
                MODEL_TARGETS,
                PILOTS,
                optional(COARSE_METHOD),
                optional(FAULTY),
            )

    def start(self):
        self._warm = {"search_every": self.search_every}  # subspaces and estimate of the previous frame

    def process(self, frame):
        x = self.read(frame)
        if x["coarse_method"] == "fallback":
            return self._process_fallback(frame, x)
        key = "coarse" if self.centre == "coarse" else "model_targets"
        c_th, c_r = x[key]
        if np.any(c_r <= 0) or np.any(np.abs(c_th) >= np.pi / 2):
            raise BadFrame(f"meta.{key}: expected ranges > 0 m and |theta| < pi/2")
        try:
            est = fine_positions(
                x["covariance"],
                x["snapshots"],
                x["array"],
                c_th,
                c_r,
                x["pilots"],
                refine=self.refine,
                fallback=x["model_targets"],
                smoothing=self.smoothing,
                angle_window=self.angle_window,
                range_window=self.range_window,
                angle_grid=self.angle_grid,
                range_grid=self.range_grid,
                warm=self._warm,
            )
        except ValueError as exc:  # LinAlgError included: unusable data, not a code fault
            raise BadFrame(f"localization failed: {exc}") from None
        self._finish(frame, x, est.theta, est.r, est.gains, np.ones(x["array"].n_antennas), "ok", est.stats)
        frame.meta["music_targets"] = positions_meta(est.music_theta, est.music_r)
        if self.emit_spectra:
            for name, arr in est.spectra.items():
                frame.arrays[name] = np.asarray(arr, dtype=np.float32)
        return frame

    # -- honest output and the full-array fallback frames ------------------------------------
    def _finish(self, frame, x, theta, r, gains, w, base, stats=None):
        """Meta ``targets`` (sorted by theta, with theta_std, range_std, status), ``residual``, ``model_check``."""
        array = x["array"]
        w = w * np.any(x["snapshots"] != 0, axis=1)  # channels zeroed upstream (hi_apply: dead) carry nothing
        try:
            fin = finish_estimate(
                x["snapshots"],
                array,
                theta,
                r,
                gains,
                x["pilots"],
                w,
                array.range_window(),
                refine=self.refine,
                base=base,
                stats=stats,  # the refinement's Y S^H and ||y_n||^2 of these snapshots and pilots
            )
        except ValueError as exc:
            raise BadFrame(f"localization failed: {exc}") from None
        order = np.argsort(fin["theta"], kind="stable")
        frame.meta["targets"] = [
            {
                "theta": float(fin["theta"][k]),
                "range": float(fin["r"][k]),
                "theta_std": float(fin["theta_std"][k]),
                "range_std": float(fin["r_std"][k]),
                "status": fin["status"][k],
            }
            for k in order
        ]
        frame.meta["residual"] = fin["residual"]
        frame.meta["model_check"] = float(fin["model_check"]["ratio"])
        return frame

    def _process_fallback(self, frame, x):
        """A frame the fault detector localized with the full array: no decoupled MUSIC (its subarray
        premise failed); refine from ``model_targets`` on the snapshots, dead channels weighted 0."""
        if x["model_targets"] is None:
            raise BadFrame("meta.model_targets: missing on a fallback frame (coarse_method 'fallback')")
        array = x["array"]
        th, r = x["model_targets"]
        w = np.ones(array.n_antennas)
        if x["faulty"] is not None and x["faulty"].size:
            w[x["faulty"]] = 0.0
        lo, hi = array.range_window()
        try:
            fit = refine_ml(x["snapshots"], array, th, np.clip(r, lo, hi), x["pilots"], w=w, r_min=lo, r_max=hi)
        except ValueError as exc:
            raise BadFrame(f"localization failed: {exc}") from None
        frame.meta["music_targets"] = []
        gains = fit.gains if x["pilots"] is not None else None
        return self._finish(frame, x, fit.theta, fit.r, gains, w, "fallback", fit.stats)
