"""The estimators (the core): plain functions on numpy arrays, no frames, no sockets.

Every localization scheme is a :class:`~nearfield.estimators.interface.Localizer` returning
an :class:`~nearfield.estimators.interface.Estimate`; :data:`LOCALIZERS` names them.
"""
from __future__ import annotations

from .bcd import bcd_localize
from .coarse import coarse
from .interface import Estimate, Localizer
from .localize import Localization, localize, paper
from .music2d import music2d, music2d_localize
from .phase1 import detect_faults
from .phase2 import calibrate_phases
from .reference import apply_hi, calibrate
from .phase3 import decoupled_music, fine_positions
from .subarrays import coarse_localize, estimate_order

#: The schemes by name (the ``schemes`` of the Monte Carlo runner).
LOCALIZERS: dict[str, Localizer] = {
    "proposed": localize,
    "paper": paper,
    "coarse": coarse,
    "bcd": bcd_localize,
    "music2d": music2d,
}

__all__ = ["Estimate", "Localizer", "Localization", "localize", "paper", "coarse", "bcd_localize", "music2d",
           "music2d_localize", "detect_faults", "calibrate", "calibrate_phases", "apply_hi", "decoupled_music",
           "fine_positions", "coarse_localize",
           "estimate_order", "LOCALIZERS"]
