"""Baseline block: the BCD-based fault detection and localization of Sec. III-B.

The scheme is :func:`nearfield.estimators.bcd.bcd_localize` (see its module for every choice).
"""

from __future__ import annotations

from nearfield.block import BadFrame, Param, non_negative, positive
from nearfield.blocks.estimator import EstimatorBlock
from nearfield.contract import ARRAY, C_HAT, FAULTY, GAINS, N_TARGETS, NOISE_VAR, PILOTS, SNAPSHOTS, TARGETS, required
from nearfield.estimators.bcd import bcd_localize


class BCDLocalizer(EstimatorBlock):
    """Baseline: BCD-based fault detection and localization of Sec. III-B (far-field start).

    Needs ``snapshots`` and ``pilots``.  Adds meta ``targets`` (sorted by theta),
    ``gains`` (in the same order, [re, im]), ``faulty``, ``n_targets``, ``noise_var``
    and the array ``c_hat`` (N,) complex64.  Stateless: each frame is solved alone.
    """

    params = (
        Param(
            "n_targets",
            (int, type(None)),
            None,
            "K; null = rows of the pilots",
            check=lambda v: None if v is None or v >= 1 else "an integer >= 1 or null",
        ),
        Param("n_iter", int, 10, "outer BCD iterations at most", check=positive),
        Param(
            "theta_points",
            (int, type(None)),
            None,
            "angle line-search grid over [-pi/2, pi/2]; null = 2N",
            check=lambda v: None if v is None or v >= 3 else "an integer >= 3 or null",
        ),
        Param(
            "range_points",
            int,
            256,
            "range line-search grid over [Z_Fres, Z_Rayl] (uniform in 1/r)",
            check=lambda v: None if v >= 3 else "an integer >= 3",
        ),
        Param("r_init", (float, type(None)), None, "starting range of every target, m; null = Z_Rayl", check=positive),
        Param("kappa", float, 3.0, "ISTA shrinkage rho in noise standard deviations", check=positive),
        Param("tau", float, 0.05, "detection threshold on |z_n| (eq. 12)", check=non_negative),
    )
    estimator = staticmethod(bcd_localize)
    reads = (ARRAY, SNAPSHOTS, required(PILOTS))
    adds = (TARGETS, GAINS, FAULTY, N_TARGETS, NOISE_VAR, C_HAT)

    def estimate(self, x, frame):
        S = x["pilots"]
        if self.n_targets is not None and self.n_targets != S.shape[0]:
            raise BadFrame(f"pilots: {S.shape[0]} rows but parameter n_targets={self.n_targets}")
        return bcd_localize(
            x["snapshots"],
            x["array"],
            S,
            n_iter=self.n_iter,
            theta_points=self.theta_points,
            range_points=self.range_points,
            r_init=self.r_init,
            kappa=self.kappa,
            tau=self.tau,
        )
