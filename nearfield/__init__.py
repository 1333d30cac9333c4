"""nearfield: near-field target localization with XL-arrays under hardware impairments.

Library entry points (plain functions on numpy arrays) are re-exported here --
``localize`` (the chain with its full-array fallback), ``calibrate`` (reference calibration
of the HI vector from a transmitter at a known position) and ``apply_hi``; the
streaming blocks live in :mod:`nearfield.blocks`, :mod:`nearfield.sources` and
:mod:`nearfield.sinks`.
"""
from .array import ULA, paper_array
from .frame import Frame
from .impairments import draw_impairments, hi_nmse
from .estimators import Estimate, Localization, apply_hi, calibrate, localize
from .scenario import Scenario, make_pilots, noiseless_signal, paper_scenario
from .steering import far_field_steering, steering, steering_derivatives

__version__ = "0.1.0"

__all__ = [
    "ULA", "paper_array", "localize", "calibrate", "apply_hi", "Localization", "Estimate", "Frame",
    "draw_impairments", "hi_nmse", "Scenario", "make_pilots", "noiseless_signal", "paper_scenario", "steering",
    "steering_derivatives", "far_field_steering",
]
