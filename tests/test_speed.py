"""Issue 11 (real time): the fast paths equal the slow ones they replace."""

import numpy as np
import pytest

from nearfield.array import ULA
from nearfield.estimators.phase3 import antidiagonal, antidiagonal_from_snapshots, fine_positions, snapshot_subspace
from nearfield.ml import _cost, _suff_cost, ml_cost, refine_ml
from nearfield.music import signal_subspace
from nearfield.scenario import paper_scenario
from nearfield.steering import steering


def _data(seed=3, n=64, snr_db=20.0):
    rng = np.random.default_rng(seed)
    sc = paper_scenario(rng, snr_db=snr_db, n_antennas=n or 256)
    return rng, sc


def test_antidiagonal_from_snapshots_equals_the_covariance_antidiagonal():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((33, 20)) + 1j * rng.standard_normal((33, 20))
    R = Y @ Y.conj().T / 20
    np.testing.assert_allclose(antidiagonal_from_snapshots(Y), antidiagonal(R), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("warm", [False, True])
def test_snapshot_subspace_spans_the_leading_eigenvectors(warm):
    rng = np.random.default_rng(1)
    n, t, k = 80, 50, 3
    A = rng.standard_normal((n, k)) + 1j * rng.standard_normal((n, k))
    Y = A @ (rng.standard_normal((k, t)) + 1j * rng.standard_normal((k, t))) * 3
    Y += 0.1 * (rng.standard_normal((n, t)) + 1j * rng.standard_normal((n, t)))
    R = Y @ Y.conj().T / t
    U_ref, w_ref = signal_subspace(R, k)
    U0 = None
    if warm:  # a perturbed previous subspace
        U0, _ = np.linalg.qr(U_ref + 0.01 * rng.standard_normal((n, k)))
    U, w = snapshot_subspace(Y, k, U0)
    np.testing.assert_allclose(U @ U.conj().T, U_ref @ U_ref.conj().T, atol=1e-6)
    np.testing.assert_allclose(np.sort(w), np.sort(np.real(w_ref)), rtol=1e-6)


def test_sufficient_statistics_cost_equals_the_residual_cost():
    rng = np.random.default_rng(2)
    arr = ULA(48, 30e9)
    A = steering(arr, np.array([0.1, -0.3]), np.array([3.0, 5.0]))
    S = rng.standard_normal((2, 40)) + 1j * rng.standard_normal((2, 40))
    Y = rng.standard_normal((48, 40)) + 1j * rng.standard_normal((48, 40))
    b = np.array([1 + 0.5j, -0.3j])
    c = np.exp(1j * rng.uniform(0, 1, 48))
    w = rng.uniform(0, 1, 48)
    M = c[:, None] * A * b[None, :]
    yy = np.sum(np.abs(Y) ** 2, axis=1)
    cost, ES = _suff_cost(yy, Y @ S.conj().T, S.conj() @ S.T, M, w)
    ref, E = _cost(Y, A, b, S, c, w)
    assert cost == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(ES, E @ S.conj().T, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("pilots", [True, False])
def test_refine_ml_reaches_the_true_minimum(pilots):
    rng, sc = _data(4, n=0)
    Y = sc.sample(rng)
    Yc = Y / sc.c[:, None]
    S = sc.pilots if pilots else None
    th0, r0 = sc.theta + 0.002, sc.r * 1.05
    fit = refine_ml(Yc, sc.array, th0, r0, S)
    # the reported cost is the exact residual cost, and no nearby point is lower (a minimum)
    assert fit.cost == pytest.approx(ml_cost(Yc, sc.array, fit.theta, fit.r, S), rel=1e-6)
    for dt in (-1e-4, 1e-4):
        assert ml_cost(Yc, sc.array, fit.theta + dt, fit.r, S) >= fit.cost
    assert np.max(np.abs(fit.theta - sc.theta)) < 2e-3


def test_fine_positions_from_snapshots_equals_from_covariance():
    rng, sc = _data(5, n=0)
    Y = sc.sample(rng)
    Yc = Y / sc.c[:, None]
    R = Yc @ Yc.conj().T / Yc.shape[1]
    th0, r0 = sc.theta + 0.003, sc.r * 1.1
    a = fine_positions(R, Yc, sc.array, th0, r0, sc.pilots)
    b = fine_positions(None, Yc, sc.array, th0, r0, sc.pilots)
    np.testing.assert_allclose(b.music_theta, a.music_theta, atol=1e-9)
    np.testing.assert_allclose(b.music_r, a.music_r, rtol=1e-6)
    np.testing.assert_allclose(b.theta, a.theta, atol=1e-9)


def _stream(seed, frames, jump_at=None):
    rng, sc = _data(seed, n=0)
    for i in range(frames):
        if i == jump_at:  # target 0 jumps by far more than a beamwidth
            sc.theta = sc.theta.copy()
            sc.theta[0] += 0.15
        Y = sc.sample(rng)
        yield sc, Y / sc.c[:, None]


def test_tracking_fast_path_matches_searching_every_frame_on_a_static_scene():
    warm_t, warm_s = {"search_every": 5}, {}
    for i, (sc, Yc) in enumerate(_stream(6, 7)):
        c_th, c_r = sc.theta + 0.003, sc.r * 1.1
        t = fine_positions(None, Yc, sc.array, c_th, c_r, sc.pilots, warm=warm_t)
        s = fine_positions(None, Yc, sc.array, c_th, c_r, sc.pilots, warm=warm_s)
        np.testing.assert_allclose(t.theta, s.theta, atol=1e-7)
        np.testing.assert_allclose(t.r, s.r, rtol=1e-5)
        assert warm_t["track"]["since"] == i % 5  # searched on frames 0 and 5 only


def test_tracking_searches_again_when_the_fit_residual_jumps():
    warm = {"search_every": 100}
    for sc, Yc in _stream(7, 4, jump_at=2):
        est = fine_positions(None, Yc, sc.array, sc.theta + 0.003, sc.r * 1.1, sc.pilots, warm=warm)
        assert np.max(np.abs(est.theta - sc.theta)) < 1e-3  # the jumped target is found, not tracked astray
    assert warm["track"]["since"] == 1  # frame 2 ran the full search (the tracked fit was poor), frame 3 tracked


@pytest.mark.parametrize("warm", [False, True])
def test_hankel_subspace_equals_the_smoothed_covariance_eigenvectors(warm):
    from nearfield.estimators.phase3 import hankel_subspace, smoothed_covariance

    rng = np.random.default_rng(8)
    n, m, k = 301, 150, 3
    u = np.array([0.1, -0.35, 0.4])
    rvec = np.exp(1j * np.pi * np.outer(np.arange(n), u)) @ np.array([1.0, 0.7, 0.5])
    rvec = rvec + 0.05 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    U_ref, w_ref = signal_subspace(smoothed_covariance(rvec, m), k)
    U0 = np.linalg.qr(U_ref + 0.01 * rng.standard_normal(U_ref.shape))[0] if warm else None
    U, w = hankel_subspace(rvec, m, k, U0)
    np.testing.assert_allclose(U @ U.conj().T, U_ref @ U_ref.conj().T, atol=1e-5)
    np.testing.assert_allclose(w, np.real(w_ref), rtol=1e-6)


def test_phase1_sufficient_statistics_equal_the_direct_residuals(monkeypatch):
    """Phase 1 with pilots forms Y S^H and ||y_n||^2 once and takes the residuals and the ISTA statistics
    from them; forcing the direct O(N T) formulas (the cancellation guard's path) gives the same result."""
    from nearfield.estimators import phase1

    rng = np.random.default_rng(12)
    sc = paper_scenario(rng, snr_db=10)
    Y = sc.sample(rng)
    fast = phase1.detect_faults(Y, sc.array, sc.pilots)
    monkeypatch.setattr(phase1, "_CANCEL_RTOL", np.inf)  # model_stats declines: X (N, T) is formed
    slow = phase1.detect_faults(Y, sc.array, sc.pilots)
    assert np.array_equal(fast.faulty, slow.faulty) and fast.faulty.size > 0
    np.testing.assert_allclose(fast.theta, slow.theta, rtol=1e-10)
    np.testing.assert_allclose(fast.r, slow.r, rtol=1e-10)
    np.testing.assert_allclose(fast.gains, slow.gains, rtol=1e-9)
    np.testing.assert_allclose(fast.sigma2, slow.sigma2, rtol=1e-9)
    np.testing.assert_allclose(fast.z, slow.z, atol=1e-9)
    e, b = fast.stats
    np.testing.assert_allclose(e, slow.stats[0], rtol=1e-9)
    np.testing.assert_allclose(b, slow.stats[1], rtol=1e-7, atol=1e-9 * np.max(np.abs(slow.stats[1])))
    # noise-free data: the guard declines by itself (rounding noise is not read as residual power)
    monkeypatch.setattr(phase1, "_CANCEL_RTOL", 1e-8)
    mu = sc.mean()
    st = phase1._PilotStats(mu.astype(np.complex128), sc.pilots)
    assert st.model_stats(steering(sc.array, sc.theta, sc.r), sc.gains) is None


@pytest.mark.parametrize("pilots", [True, False])
def test_compiled_lm_takes_the_numpy_lm_iterates(pilots, monkeypatch):
    """lm_kernel.lm_exact is the NumPy LM of nearfield.ml compiled: same stopping rule, same estimate."""
    import nearfield.ml

    rng, sc = _data(seed=21, n=128)
    Y = sc.sample(rng)
    th0, r0 = sc.theta + 2e-4, sc.r * 1.02
    S = sc.pilots if pilots else None
    fits = []
    for compiled in (True, False):
        monkeypatch.setattr(nearfield.ml, "USE_NUMBA", compiled)
        fits.append(refine_ml(Y, sc.array, th0, r0, S))
    a, b = fits
    assert a.iterations == b.iterations and a.converged and b.converged
    np.testing.assert_allclose(a.theta, b.theta, rtol=0, atol=1e-11)
    np.testing.assert_allclose(a.r, b.r, rtol=1e-10)
    np.testing.assert_allclose(a.cost, b.cost, rtol=1e-10)
