"""Tests of nearfield.ml.refine_ml's range window (r_min, r_max)."""

import numpy as np
import pytest

from nearfield.array import ULA
from nearfield.ml import refine_ml
from nearfield.scenario import complex_noise, make_pilots, noiseless_signal


def test_range_window_bounds_the_lm_fit():
    rng = np.random.default_rng(0)
    arr = ULA(16, carrier_hz=2.4e9)  # Rayleigh distance ~ 14 m
    S = make_pilots(1, 50, rng)
    mu = noiseless_signal(arr, [0.2], [500.0], [1.0], S)  # range unobservable
    Y = mu + complex_noise(mu.shape, 0.1, rng)
    free = refine_ml(Y, arr, [0.2], [20.0], S)
    win = refine_ml(Y, arr, [0.2], [20.0], S, r_min=0.5, r_max=14.0)
    assert 0.5 <= win.r[0] <= 14.0
    assert win.cost >= free.cost * (1 - 1e-12)  # the window can only cost fit
    # a start outside the window is clipped into it
    fit = refine_ml(Y, arr, [0.2], [100.0], None, r_min=0.5, r_max=14.0)
    assert 0.5 <= fit.r[0] <= 14.0


def test_range_window_does_not_move_an_interior_optimum():
    rng = np.random.default_rng(1)
    arr = ULA(16, carrier_hz=2.4e9)
    S = make_pilots(1, 50, rng)
    mu = noiseless_signal(arr, [0.2], [2.0], [1.0], S)
    a = refine_ml(mu, arr, [0.21], [2.2], S)
    b = refine_ml(mu, arr, [0.21], [2.2], S, r_min=0.5, r_max=14.0)
    np.testing.assert_allclose([b.theta[0], b.r[0]], [0.2, 2.0], rtol=1e-9)
    np.testing.assert_allclose([a.theta[0], a.r[0]], [b.theta[0], b.r[0]], rtol=1e-12)


def test_bad_window_is_named():
    arr = ULA(8, carrier_hz=2.4e9)
    with pytest.raises(ValueError, match="r_min, r_max"):
        refine_ml(np.ones((8, 4)), arr, [0.0], [1.0], None, r_min=2.0, r_max=1.0)
