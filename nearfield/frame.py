"""The unit that flows between blocks (DESIGN.md, "Frames and the wire")."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One frame of snapshots and what the stages add to it.

    Attributes
    ----------
    seq : int
        Frame counter set by the source; gaps reveal drops.
    t0 : float
        Time of the first snapshot, seconds (source clock).
    arrays : dict[str, ndarray]
        Named arrays: ``snapshots`` (N, T) complex64, and where present ``pilots`` (K, T),
        ``c_hat`` (N,), ``covariance`` (N, N), ...  Arrays received from the wire are
        read-only views of the message buffers: blocks must not write into them.
    meta : dict
        JSON-serialisable: ``array`` geometry (see :meth:`nearfield.array.ULA.describe`),
        what each stage adds (``faulty``, ``coarse``, ``gains``, ``targets``) and
        ``truth`` when the source knows it.
    """

    seq: int
    t0: float
    arrays: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def snapshots(self) -> np.ndarray:
        """The (N, T) snapshot array (``KeyError`` if absent)."""
        return self.arrays["snapshots"]
