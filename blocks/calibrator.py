"""Phase 2 as a streaming block: phase calibration of the detected faulty antennas.

The math is :mod:`nearfield.estimators.phase2`; this block accumulates the per-antenna
phase evidence across frames (circular sums, or unit phasors for ``"unwrap"``), so c_hat
improves with every frame, and keeps it in ``state_path``.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from nearfield.block import BadFrame, Block, Param, unit_interval
from nearfield.contract import ARRAY, C_HAT, FAULTY, GAINS, MODEL_TARGETS, PILOTS, SNAPSHOTS, WAVEFORMS
from nearfield.estimators.phase2 import hi_vector, phase_evidence
from nearfield.state import complex_from_json, complex_to_json, load_json, save_json_atomic

log = logging.getLogger(__name__)


class Calibrator(Block):
    """Phase 2: estimate the faulty antennas' phase biases and calibrate the snapshots.

    Needs the meta of the fault detector (``faulty``, ``model_targets``, ``gains``) and the
    pilots (or the detector's ``waveforms``).  Evidence accumulates across frames per
    antenna, so c_hat improves with every frame; an antenna that leaves the faulty set
    keeps its evidence.  Replaces ``snapshots`` by the calibrated ones and adds ``c_hat``.
    """

    params = (
        Param(
            "method",
            str,
            "circular",
            "phase estimator: circular (ML) or unwrap (paper eqs. 23-25)",
            choices=("circular", "unwrap"),
        ),
        Param("forget", float, 1.0, "weight kept by past evidence per frame (1 = keep all)", check=unit_interval),
        Param("state_path", (str, type(None)), None, "JSON file to load the evidence from and save it to"),
    )
    reads = (ARRAY, SNAPSHOTS, FAULTY, MODEL_TARGETS, GAINS, PILOTS, WAVEFORMS)
    adds = (SNAPSHOTS, C_HAT)

    def start(self):
        self.evidence = None  # complex (N,): circular sums, or sums of unit phasors (unwrap)
        if self.state_path and os.path.exists(self.state_path):
            st = load_json(self.state_path, f"block {self.name!r}")
            try:
                self.evidence = complex_from_json(st["evidence"])
                if not np.all(np.isfinite(self.evidence)):
                    raise ValueError("non-finite values")
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(
                    f"block {self.name!r}, state_path {self.state_path!r}: bad state field 'evidence' ({exc})"
                ) from None

    def process(self, frame):
        x = self.read(frame)
        array, Y, faulty = x["array"], x["snapshots"], x["faulty"]
        (theta, r), gains = x["model_targets"], x["gains"]
        S = x["pilots"] if x["pilots"] is not None else x["waveforms"]
        if S is None:
            raise BadFrame("arrays: neither 'pilots' nor 'waveforms' present")
        N = array.n_antennas
        if self.evidence is not None and self.evidence.size != N:
            raise self.state_size_error(self.evidence.size, N)
        evidence = np.zeros(N, np.complex128) if self.evidence is None else self.forget * self.evidence
        if faulty.size:
            new = phase_evidence(Y, array, faulty, theta, r, gains, S, self.method)
            if not np.all(np.isfinite(new)):
                raise BadFrame("calibration gave non-finite phases; frame not accumulated")
            evidence[faulty] += new
        self.evidence = evidence
        c_hat = hi_vector(N, faulty, np.angle(self.evidence[faulty]))
        # conj(c_hat) * Y (eq. 27): c_hat is 1 off the faulty rows, so only those are multiplied (the
        # others are copied: the same values as multiplying them by 1, a tenth of the work)
        Yc = np.array(Y, dtype=np.complex64)
        if faulty.size:
            Yc[faulty] = (c_hat[faulty].conj()[:, None] * Y[faulty]).astype(np.complex64)
        frame.arrays["snapshots"] = Yc
        frame.arrays["c_hat"] = c_hat.astype(np.complex64)
        return frame

    def checkpoint(self) -> None:
        """Save the evidence to ``state_path`` atomically (nothing to save before a frame)."""
        if self.state_path and getattr(self, "evidence", None) is not None:
            save_json_atomic(self.state_path, {"version": 1, "evidence": complex_to_json(self.evidence)})

    def close(self):
        self.checkpoint()  # close() runs also after Ctrl-C or another block's failure: the evidence is never lost
