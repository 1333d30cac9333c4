"""One generic block for any localizer of the core (:mod:`nearfield.estimators`).

A subclass names the core function (``estimator``), declares its ``params``, ``reads``
and ``adds``, and maps the frame's inputs to the call in :meth:`EstimatorBlock.estimate`.
The base validates the frame (``Block.read``), turns an estimator's ``ValueError`` into
:class:`~nearfield.block.BadFrame`, and writes the :class:`~nearfield.estimators.Estimate`
into the frame: meta ``targets`` (finite positions, sorted by theta) always, and each of
``gains`` (same order, ``[re, im]``), ``faulty``, ``n_targets``, ``noise_var`` and the
array ``c_hat`` (complex64) that the class declares in ``adds``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from nearfield.block import BadFrame, Block
from nearfield.contract import ARRAY, PILOTS, SNAPSHOTS, TARGETS
from nearfield.estimators.interface import Estimate
from nearfield.frame import Frame, positions_meta


class EstimatorBlock(Block):
    """Run one core localizer per frame and write its estimate (base class)."""

    estimator: ClassVar[Callable[..., Estimate]]
    reads = (ARRAY, SNAPSHOTS, PILOTS)
    adds = (TARGETS,)

    def estimate(self, inputs: dict[str, Any], frame: Frame) -> Estimate:
        """Call the core localizer on the values of ``self.read(frame)``; override to map params."""
        return type(self).estimator(inputs["snapshots"], inputs["array"], inputs.get("pilots"))

    def process(self, frame: Frame) -> Frame:
        inputs = self.read(frame)
        try:
            est = self.estimate(inputs, frame)
        except (ValueError, np.linalg.LinAlgError) as exc:  # data the scheme cannot use
            raise BadFrame(f"{type(self).estimator.__name__}: {exc}") from None
        self.write(frame, est)
        return frame

    def write(self, frame: Frame, est: Estimate) -> None:
        """Write ``est`` into ``frame`` (the keys declared in ``adds``; see the module docstring)."""
        declared = {(f.kind, f.name) for f in self.adds}
        ok = np.isfinite(est.theta) & np.isfinite(est.r)
        order = [i for i in est.order() if ok[i]]
        meta = frame.meta
        meta["targets"] = positions_meta(est.theta[ok], est.r[ok])
        if est.theta_std is not None and est.r_std is not None:  # schemes with error bars: std and status too
            for entry, i in zip(meta["targets"], order, strict=True):
                entry.update(theta_std=float(est.theta_std[i]), range_std=float(est.r_std[i]),
                             status=str(est.status[i]))
            if est.residual is not None:
                meta["residual"] = float(est.residual)
            mc = est.diagnostics.get("model_check")
            if isinstance(mc, dict) and "ratio" in mc:
                meta["model_check"] = float(mc["ratio"])
        if ("meta", "gains") in declared and est.gains is not None:
            meta["gains"] = [[float(est.gains[i].real), float(est.gains[i].imag)] for i in order]
        if ("meta", "faulty") in declared and est.faulty is not None:
            meta["faulty"] = [int(i) for i in est.faulty]
        if ("meta", "n_targets") in declared:
            meta["n_targets"] = est.n_targets
        if ("meta", "noise_var") in declared and "noise_var" in est.diagnostics:
            meta["noise_var"] = float(est.diagnostics["noise_var"])
        if ("array", "c_hat") in declared and est.c_hat is not None:
            frame.arrays["c_hat"] = np.asarray(est.c_hat).astype(np.complex64)
