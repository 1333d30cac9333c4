"""ISTA for (P3) against its closed-form minimiser (the problem is separable)."""

import numpy as np
import pytest

from nearfield.ista import closed_form, ista, ista_iterate, ista_solve, ista_stats, lipschitz, noise_rho, soft_threshold


def _problem(seed=0, n=64, t=40, sigma=0.1):
    rng = np.random.default_rng(seed)
    X = np.exp(2j * np.pi * rng.random((n, t)))
    z = np.zeros(n, complex)
    z[[3, 17, 40]] = np.exp(1j * np.array([1.0, 2.5, -2.0])) - 1
    Y = (1 + z)[:, None] * X + sigma * (rng.standard_normal((n, t)) + 1j * rng.standard_normal((n, t))) / np.sqrt(2)
    return Y, X, z


def test_ista_converges_to_closed_form():
    Y, X, _ = _problem()
    rho = noise_rho(X, 0.01, 3.0)
    z, it = ista(Y, X, rho, tol=1e-12)
    assert np.allclose(z, closed_form(Y, X, rho), atol=1e-9)
    assert it < 1000


def test_ista_recovers_support_and_values():
    Y, X, z_true = _problem(sigma=0.05)
    z, _ = ista(Y, X, noise_rho(X, 0.05**2, 3.0))
    assert set(np.flatnonzero(np.abs(z) > 0)) == {3, 17, 40}
    assert np.allclose(z[[3, 17, 40]], z_true[[3, 17, 40]], atol=0.05)


def test_statistics_of_frames_add_up():
    Y, X, _ = _problem(seed=1, t=60)
    e, b = ista_stats(Y, X)
    e1, b1 = ista_stats(Y[:, :25], X[:, :25])
    e2, b2 = ista_stats(Y[:, 25:], X[:, 25:])
    assert np.allclose(e, e1 + e2) and np.allclose(b, b1 + b2)
    assert np.allclose(e, np.sum(np.abs(X) ** 2, axis=1))
    z, _ = ista_iterate(e1 + e2, b1 + b2, 2.0, tol=1e-12)
    assert np.allclose(z, closed_form(Y, X, 2.0), atol=1e-9)


def test_lipschitz_and_soft_threshold():
    X = np.array([[1, 1j], [2, 0]])
    assert lipschitz(X) == 4.0
    v = np.array([3 + 4j, 0.1, -2.0])
    s = soft_threshold(v, 1.0)
    assert np.allclose(s, [(3 + 4j) * 0.8, 0, -1.0])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        ista(np.zeros((4, 3)), np.zeros((4, 2)), 1.0)


def test_closed_form_flags_the_same_antennas_as_the_iterations_on_phase1_data():
    """The detectors use the closed form; on seeded Phase-1 statistics (the fault-free model of
    the paper's scenario, noise-calibrated rho) it flags exactly the antennas ISTA flags."""
    from nearfield.estimators.phase1 import detect_faults
    from nearfield.scenario import noiseless_signal, paper_scenario

    for seed in range(6):
        rng = np.random.default_rng(seed)
        sc = paper_scenario(rng, snr_db=(0, 10, 20)[seed % 3], p_fault=0.04)
        Y = sc.sample(rng)
        p1 = detect_faults(Y, sc.array, sc.pilots)
        X = noiseless_signal(sc.array, p1.theta, p1.r, p1.gains, p1.waveforms)
        e, b = ista_stats(Y, X)
        rho = noise_rho(X, p1.sigma2, 3.0)
        z_it, _ = ista_iterate(e, b, rho, tol=1e-10, max_iter=20000)
        z_cf = ista_solve(e, b, rho)
        assert np.array_equal(np.flatnonzero(np.abs(z_it) > 0.05), np.flatnonzero(np.abs(z_cf) > 0.05))
        assert np.allclose(z_it, z_cf, atol=1e-6)
        assert np.array_equal(p1.faulty, np.flatnonzero(np.abs(z_cf) > 0.05))


def test_ista_solve_gives_zero_where_there_is_no_signal():
    z = ista_solve(np.array([0.0, 4.0]), np.array([1.0 + 0j, 8.0 + 0j]), 4.0)
    assert np.allclose(z, [0.0, 1.0])
