"""Baseline block: plain 2-D near-field MUSIC on the uncalibrated covariance (ref. [20]).

The estimator is :func:`nearfield.estimators.music2d.music2d_localize`.
"""

from __future__ import annotations

import numpy as np

from nearfield.block import BadFrame, Param, positive
from nearfield.blocks.estimator import EstimatorBlock
from nearfield.contract import ARRAY, COVARIANCE, N_TARGETS, PILOTS, SNAPSHOTS, SPECTRA, TARGETS, optional
from nearfield.estimators.music2d import default_grids, music2d_localize
from nearfield.steering import MODELS


class Music2DLocalizer(EstimatorBlock):
    """Baseline: plain 2-D near-field MUSIC on the uncalibrated covariance (ref. [20]).

    Uses ``covariance`` when the frame carries it, else ``R = Y Y^H / T`` from
    ``snapshots``.  K is the parameter ``n_targets``, else meta ``n_targets``, else the
    rows of ``pilots``.  Adds meta ``targets`` (sorted by theta) and ``n_targets``; with
    ``emit_spectra``, arrays ``angle_grid`` (Ga,), ``angle_spectrum`` (Ga,) (max over
    range), ``range_grid`` (K, Gr) and ``range_spectrum`` (K, Gr) (the spectrum along r
    at each target's grid angle), all normalised to max 1.
    """

    params = (
        Param(
            "n_targets",
            (int, type(None)),
            None,
            "K; null = meta n_targets or the pilot rows",
            check=lambda v: None if v is None or v >= 1 else "an integer >= 1 or null",
        ),
        Param(
            "theta_points",
            (int, type(None)),
            None,
            "angle grid points (uniform in sin theta); null = 2N",
            check=lambda v: None if v is None or v >= 3 else "an integer >= 3 or null",
        ),
        Param(
            "range_points",
            int,
            48,
            "range grid points (uniform in 1/r)",
            check=lambda v: None if v >= 3 else "an integer >= 3",
        ),
        Param("range_min", (float, type(None)), None, "smallest range searched, m; null = Z_Fres", check=positive),
        Param("range_max", (float, type(None)), None, "largest range searched, m; null = Z_Rayl", check=positive),
        Param("model", str, "exact", "steering model of the spectrum", choices=MODELS),
        Param("refine", bool, True, "refine grid peaks on the continuous spectrum"),
        Param("emit_spectra", bool, False, "add angle/range spectra arrays to the frame"),
    )

    estimator = staticmethod(music2d_localize)
    reads = (ARRAY, optional(COVARIANCE), optional(SNAPSHOTS), PILOTS, optional(N_TARGETS))
    adds = (TARGETS, N_TARGETS) + SPECTRA

    def validate(self):
        if self.range_min is not None and self.range_max is not None and not self.range_min < self.range_max:
            raise self.param_error("range_max", f"expected a value > range_min={self.range_min}, got {self.range_max}")

    def estimate(self, x, frame):
        n = x["array"].n_antennas
        if x["covariance"] is not None:
            data, kind = x["covariance"], "covariance"
        elif x["snapshots"] is not None:
            data, kind = x["snapshots"], "snapshots"
        else:
            raise BadFrame("frame carries neither 'covariance' nor 'snapshots'")
        k = self.n_targets
        if k is None:
            k = x["n_targets"]
        if k is None and x["pilots"] is not None:
            k = x["pilots"].shape[0]
        if not isinstance(k, int) or not 1 <= k < n:
            raise BadFrame(
                f"n_targets: expected an integer in [1, {n - 1}] from the parameter, meta "
                f"'n_targets' or the pilots, got {k!r}"
            )
        tg, rg = default_grids(x["array"], self.theta_points, self.range_points, self.range_min, self.range_max)
        return music2d_localize(data, x["array"], k, tg, rg, model=self.model, refine=self.refine, kind=kind)

    def write(self, frame, est):
        super().write(frame, est)
        if self.emit_spectra:
            k = est.n_targets
            frame.arrays["angle_grid"] = est.theta_grid.astype(np.float32)
            ang = est.spectrum.max(axis=0)
            frame.arrays["angle_spectrum"] = (ang / ang.max()).astype(np.float32)
            cols = np.searchsorted(est.theta_grid, est.grid_theta).clip(0, est.theta_grid.size - 1)
            rs = est.spectrum[:, cols].T
            frame.arrays["range_grid"] = np.tile(est.range_grid, (k, 1)).astype(np.float32)
            frame.arrays["range_spectrum"] = (rs / rs.max(axis=1, keepdims=True)).astype(np.float32)
