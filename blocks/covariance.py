"""Sample covariance of the snapshots, optionally averaged across frames.

Per frame (paper eq. (28) for the snapshot matrix Y of eq. (5)):

    R_new = Y Y^H / T,        Y: (N, T) complex64  ->  R: (N, N) complex64 (Hermitian),

computed with one BLAS product in complex64 (``cgemm``).  With a forgetting factor
``forget = f`` in [0, 1) -- the weight kept by the past, as in the fault detector and the
calibrator -- the block keeps an exponentially weighted average across frames,

    R <- f R_prev + (1 - f) R_new,       R <- R_new on the first frame (or after a reset),

so ``f = 0`` (the default) emits each frame's own covariance and ``f`` close to 1 averages
over about 1 / (1 - f) frames: a frame j frames back weighs (1 - f) f^j.  Averaging suits
static targets only.  A frame whose antenna count N differs from the
running average's restarts the average (logged), it does not stop the graph.
"""

from __future__ import annotations

import logging

import numpy as np

from ..block import BadFrame, Block, Param
from ..contract import COVARIANCE, SNAPSHOTS
from ..frame import Frame

log = logging.getLogger(__name__)


def sample_covariance(Y: np.ndarray) -> np.ndarray:
    """Sample covariance R = Y Y^H / T.

    Parameters
    ----------
    Y : ndarray, shape (N, T), complex
        Snapshots, antenna-major.

    Returns
    -------
    R : ndarray, shape (N, N), same complex dtype as ``Y`` (complex64 stays complex64)
        Hermitian, positive semi-definite.
    """
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"snapshots: expected an (N, T) array, got shape {Y.shape}")
    n_snap = Y.shape[1]
    if n_snap == 0:
        raise ValueError("snapshots: expected T >= 1 snapshots, got 0")
    if not np.iscomplexobj(Y):
        Y = Y.astype(np.complex64)
    R = Y @ Y.conj().T
    R *= R.dtype.type(1.0 / n_snap)
    return R


def _check_forget(value) -> str | None:
    return None if 0.0 <= value < 1.0 else "a forgetting factor in [0, 1) (0 = no averaging)"


class Covariance(Block):
    """Sample covariance Y Y^H / T per frame, optionally exponentially averaged across frames."""

    params = (
        Param(
            "forget",
            float,
            0.0,
            "weight f kept by the past in R <- f R_prev + (1-f) R_new; 0 = per-frame only",
            check=_check_forget,
        ),
    )
    reads = (SNAPSHOTS,)
    adds = (COVARIANCE,)

    def start(self) -> None:
        self._avg: np.ndarray | None = None
        self.resets = 0

    def process(self, frame: Frame) -> Frame:
        if not hasattr(self, "_avg"):
            self.start()
        Y = frame.arrays["snapshots"]
        if Y.ndim != 2 or Y.shape[1] < 1 or not np.iscomplexobj(Y):
            raise BadFrame(
                f"block {self.name!r}: snapshots: expected an (N, T) complex array with T >= 1, "
                f"got shape {Y.shape} dtype {Y.dtype}"
            )
        R = sample_covariance(Y)
        f = self.forget
        if f > 0.0:
            if self._avg is not None and self._avg.shape != R.shape:
                log.warning(
                    "block %r: frame %d has N = %d antennas, the running average N = %d; restarting the average",
                    self.name,
                    frame.seq,
                    R.shape[0],
                    self._avg.shape[0],
                )
                self._avg = None
                self.resets += 1
            if self._avg is None:
                self._avg = R
            else:
                avg = self._avg * np.float32(f)
                avg += np.float32(1.0 - f) * R
                self._avg = avg
            R = self._avg.copy()
        frame.arrays["covariance"] = R
        return frame
