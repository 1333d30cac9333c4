"""Tests of the per-estimate error bars and the model check (nearfield.estimators.uncertainty),
and of the deterministic CRB with unknown waveforms (nearfield.bounds)."""

import numpy as np
import pytest

from nearfield.array import ULA
from nearfield.bounds import crb_positions, crb_unknown_waveforms
from nearfield.estimators.fullarray import full_array_localize
from nearfield.estimators.uncertainty import (
    assess_estimate,
    estimate_uncertainty,
    model_check,
    noise_floor,
)
from nearfield.ml import refine_ml
from nearfield.scenario import (
    complex_noise,
    make_pilots,
    noise_variance,
    noiseless_signal,
)
from nearfield.steering import steering


def fd_steering_derivs(array, theta, r, h=1e-7):
    """Central finite differences of a(theta, r) (independent of steering_derivatives)."""
    at = (steering(array, theta + h, r) - steering(array, theta - h, r)) / (2 * h)
    hr = h * np.maximum(r, 1.0)
    ar = (steering(array, theta, r + hr) - steering(array, theta, r - hr)) / (2 * hr)
    return at, ar


def test_unknown_waveform_crb_is_the_schur_complement_of_the_full_fim():
    """Explicit FIM over [theta, r, Re S, Im S] (N T x (2K + 2KT) Jacobian), inverted in full."""
    rng = np.random.default_rng(0)
    arr = ULA(8, carrier_hz=5.8e9)
    th, r = np.array([-0.3, 0.35]), np.array([0.5, 0.9])
    K, T, s2 = 2, 4, 0.3
    S = rng.standard_normal((K, T)) + 1j * rng.standard_normal((K, T))
    A = steering(arr, th, r)
    at, ar = fd_steering_derivs(arr, th, r)
    cols = []
    for dA in (at, ar):
        for k in range(K):
            cols.append(np.outer(dA[:, k], S[k]).ravel())
    for unit in (1.0, 1j):
        for k in range(K):
            for t in range(T):
                E = np.zeros((K, T), complex)
                E[k, t] = unit
                cols.append((A @ E).ravel())
    D = np.stack(cols, axis=1)
    F = (2 / s2) * np.real(D.conj().T @ D)
    full = np.linalg.inv(F)[: 2 * K, : 2 * K]
    np.testing.assert_allclose(crb_unknown_waveforms(arr, th, r, S, s2), full, rtol=1e-5)


def test_unknown_waveform_crb_vs_known_pilot_crb():
    rng = np.random.default_rng(1)
    arr = ULA(32, carrier_hz=5.8e9)
    S = make_pilots(2, 200, rng)
    g = np.exp(2j * np.pi * rng.random(2))
    # K = 1: projecting a s^T out of d s^T is projecting a out of d -> identical bounds
    c1 = crb_unknown_waveforms(arr, [0.2], [1.5], g[:1, None] * S[:1], 0.1)
    np.testing.assert_allclose(c1, crb_positions(arr, [0.2], [1.5], g[:1], S[:1], 0.1), rtol=1e-9)
    # K = 2: never below the known-pilot bound (more nuisance parameters) ...
    th, r = np.array([-0.1, -0.05]), np.array([1.0, 1.3])
    cb = crb_unknown_waveforms(arr, th, r, g[:, None] * S, 0.1)
    ck = crb_positions(arr, th, r, g, S, 0.1)
    assert np.linalg.eigvalsh(cb - ck).min() > -1e-9 * np.abs(cb).max()
    assert np.all(np.diag(cb) > np.diag(ck) * 1.01)  # close targets: the blind bound is clearly larger
    # ... and equal in the limit of orthogonal steering and waveforms (well-separated, long T)
    th, r = np.array([-0.6, 0.5]), np.array([1.0, 2.5])
    cb = crb_unknown_waveforms(arr, th, r, g[:, None] * S, 0.1)
    ck = crb_positions(arr, th, r, g, S, 0.1)
    np.testing.assert_allclose(np.diag(cb), np.diag(ck), rtol=0.03)


def monte_carlo(pilots, trials=50, seed=3):
    rng = np.random.default_rng(seed)
    arr = ULA(32, carrier_hz=5.8e9)
    th, r = np.array([-0.35, 0.3]), np.array([1.2, 2.2])
    T = 64
    S = make_pilots(2, T, rng)
    g = np.exp(2j * np.pi * rng.random(2))
    mu = noiseless_signal(arr, th, r, g, S)
    s2 = noise_variance(mu, 5.0)
    C = crb_positions(arr, th, r, g, S, s2) if pilots else crb_unknown_waveforms(arr, th, r, g[:, None] * S, s2)
    sd = np.sqrt(np.diag(C))
    et, er, st, sr, flags = [], [], [], [], 0
    for _ in range(trials):
        Y = mu + complex_noise(mu.shape, s2, rng)
        res = full_array_localize(Y, arr, 2, S if pilots else None)
        o = np.arange(2) if pilots else np.argsort(res.theta)
        et.append(res.theta[o] - th)
        er.append(res.r[o] - r)
        st.append(res.theta_std[o])
        sr.append(res.r_std[o])
        flags += sum(s != "ok" for s in res.status)
    return [np.array(x) for x in (et, er, st, sr)] + [sd, flags]


@pytest.mark.parametrize("pilots", [True, False])
def test_error_bars_cover_the_truth_and_match_the_crb(pilots):
    """Seeded MC (50 trials, N = 32, 5 dB): 2-sigma coverage 85-100 %, sigma within 1.5x of the
    true-parameter CRB, the estimator's spread at the CRB, and few model-mismatch flags."""
    et, er, st, sr, sd, flags = monte_carlo(pilots)
    cover_t = np.mean(np.abs(et) <= 2 * st)
    cover_r = np.mean(np.abs(er) <= 2 * sr)
    assert 0.85 <= cover_t <= 1.0 and 0.85 <= cover_r <= 1.0
    assert np.all(st / sd[:2] < 1.5) and np.all(st / sd[:2] > 1 / 1.5)
    assert np.all(sr / sd[2:] < 1.5) and np.all(sr / sd[2:] > 1 / 1.5)
    rmse_t = np.sqrt(np.mean(et**2, axis=0))
    rmse_r = np.sqrt(np.mean(er**2, axis=0))
    # efficient estimator: RMSE at the CRB (50 trials: +-~25 % sampling spread of an RMSE)
    assert np.all((rmse_t / sd[:2] > 0.65) & (rmse_t / sd[:2] < 1.45))
    assert np.all((rmse_r / sd[2:] > 0.65) & (rmse_r / sd[2:] < 1.45))
    assert flags <= 5  # alpha = 1 % per block: 1 expected out of 100 (trial, target) cases


def test_noise_floor_is_unbiased_and_fit_independent():
    rng = np.random.default_rng(4)
    arr = ULA(32, carrier_hz=5.8e9)
    S = make_pilots(2, 80, rng)
    mu = noiseless_signal(arr, [0.1, -0.4], [1.0, 2.0], [1.0, 0.5j], S)
    ests_p, ests_b = [], []
    for _ in range(20):
        Y = mu + complex_noise(mu.shape, 0.5, rng)
        ests_p.append(noise_floor(Y, 2, S)[0])
        ests_b.append(noise_floor(Y, 2)[0])
    assert np.mean(ests_p) == pytest.approx(0.5, rel=0.02)
    assert np.mean(ests_b) == pytest.approx(0.5, rel=0.05)


def test_model_check_flags_a_wrong_model_and_passes_the_right_one():
    rng = np.random.default_rng(5)
    arr = ULA(32, carrier_hz=5.8e9)
    th, r = np.array([0.1, -0.4]), np.array([1.0, 2.0])
    S = make_pilots(2, 80, rng)
    mu = noiseless_signal(arr, th, r, [1.0, 0.8j], S)
    s2 = noise_variance(mu, 10.0)
    Y = mu + complex_noise(mu.shape, s2, rng)
    for P in (S, None):
        ok = model_check(Y, arr, th, r, P)
        assert not np.any(ok["mismatch"]) and ok["ratio"] == pytest.approx(1.0, abs=0.1)
        # a position off by a few beamwidths does not explain the data
        bad = model_check(Y, arr, th + np.array([0.0, 0.1]), r, P)
        assert bad["mismatch"][1] and bad["ratio"] > 1.5
    # per-target with full-rank pilots: only the wrong target is flagged
    bad = model_check(Y, arr, th + np.array([0.0, 0.1]), r, S)
    assert bad["per_target"] and not bad["mismatch"][0]


def test_estimate_uncertainty_uses_the_fit_noise_and_scales_with_it():
    rng = np.random.default_rng(6)
    arr = ULA(16, carrier_hz=2.4e9)
    th, r = np.array([0.3]), np.array([1.5])
    S = make_pilots(1, 100, rng)
    mu = noiseless_signal(arr, th, r, [1.0], S)
    Y = mu + complex_noise(mu.shape, 0.04, rng)
    ts, rs, d = estimate_uncertainty(Y, arr, th, r, S)
    assert d["sigma2"] == pytest.approx(0.04, rel=0.1)
    ref = np.sqrt(np.diag(crb_positions(arr, th, r, [1.0], S, 0.04)))
    assert ts[0] == pytest.approx(ref[0], rel=0.1) and rs[0] == pytest.approx(ref[1], rel=0.1)
    ts4, rs4, _ = estimate_uncertainty(Y, arr, th, r, S, gains=[1.0], sigma2=0.16)
    assert ts4[0] == pytest.approx(2 * ref[0], rel=1e-6) and rs4[0] == pytest.approx(2 * ref[1], rel=1e-6)
    # blind, one target: the same bound
    tb, rb, db = estimate_uncertainty(Y, arr, th, r, None, sigma2=0.04, waveforms=S)
    assert db["bound"] == "unknown_waveforms"
    np.testing.assert_allclose([tb[0], rb[0]], ref, rtol=1e-8)
    # an excluded antenna carries no information: larger error bars
    w = np.ones(16)
    w[:4] = 0
    tw, _, _ = estimate_uncertainty(Y, arr, th, r, S, sigma2=0.04, w=w)
    assert tw[0] > ts[0] * 1.05 or tw[0] > ref[0] * 1.05


def _two_calls(Y, arr, th, r, S, gains, w):
    mc = model_check(Y, arr, th, r, S, None, w)
    ts, rs, d = estimate_uncertainty(Y, arr, th, r, S, gains, None, sigma2=mc["sigma2_fit"], w=w)
    return mc, ts, rs, d


def _assert_same(a, b, rtol=1e-9):
    (mc, ts, rs, d), (mc0, ts0, rs0, d0) = a, b
    for key in ("sigma2_fit", "sigma2_floor", "ratio", "F", "threshold", "residual", "cost"):
        np.testing.assert_allclose(mc[key], mc0[key], rtol=rtol, err_msg=key)
    assert np.array_equal(mc["mismatch"], mc0["mismatch"]) and mc["per_target"] == mc0["per_target"]
    np.testing.assert_allclose(ts, ts0, rtol=rtol)
    np.testing.assert_allclose(rs, rs0, rtol=rtol)
    np.testing.assert_allclose(d["crb"], d0["crb"], rtol=rtol, atol=1e-12 * np.abs(d0["crb"]).max())
    assert d["bound"] == d0["bound"]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("weights", [False, True])
def test_assess_estimate_equals_model_check_and_estimate_uncertainty(weights, compiled, monkeypatch):
    """The one-pass sufficient-statistics form (pilots; compiled kernels or NumPy) gives the figures of
    the two direct calls; complex64 data as on the wire, an estimate off the truth, excluded antennas,
    gains given or LS."""
    import nearfield.ml

    monkeypatch.setattr(nearfield.ml, "USE_NUMBA", compiled)
    rng = np.random.default_rng(7)
    arr = ULA(64, carrier_hz=5.8e9)
    th, r = np.array([0.2, -0.3, 0.5]), np.array([1.5, 2.5, 1.1])
    S = make_pilots(3, 50, rng)
    g = np.array([1.0, 0.6j, -0.8])
    mu = noiseless_signal(arr, th, r, g, S)
    Y = (mu + complex_noise(mu.shape, noise_variance(mu, 15.0), rng)).astype(np.complex64)
    w = np.ones(64)
    if weights:
        w[[0, 7, 40]] = 0.0
        w[10:20] = 0.5
    the, re = th + np.array([1e-3, 0.0, -2e-3]), r * np.array([1.01, 1.0, 0.98])
    for gains in (None, g * 1.01):
        fast = assess_estimate(Y, arr, the, re, S, gains, w)
        _assert_same(fast, _two_calls(Y, arr, the, re, S, gains, w))
    # with the sufficient statistics a fit already formed (refine_ml's MLFit.stats): the same figures, bit for bit
    fit = refine_ml(Y, arr, the, re, S, w=w)
    again = assess_estimate(Y, arr, fit.theta, fit.r, S, fit.gains, w, stats=fit.stats)
    ref = assess_estimate(Y, arr, fit.theta, fit.r, S, fit.gains, w)
    assert again[0]["cost"] == ref[0]["cost"] and np.array_equal(again[1], ref[1]) and np.array_equal(again[2], ref[2])
    # a changed scene (a target moved; new noise) gives its own, fresh figures -- nothing is carried over
    mu2 = noiseless_signal(arr, th + np.array([0.0, 0.05, 0.0]), r, g, S)
    Y2 = (mu2 + complex_noise(mu.shape, noise_variance(mu, 15.0), rng)).astype(np.complex64)
    fast2 = assess_estimate(Y2, arr, the, re, S, None, w)
    _assert_same(fast2, _two_calls(Y2, arr, the, re, S, None, w))
    assert fast2[0]["mismatch"][1] and fast2[0]["F"][1] > 10 * fast[0]["F"][1]
    # other pilots (the pilot-only quantities are kept for the last pilots seen: they must follow)
    S2 = make_pilots(3, 50, rng)
    Y3 = (noiseless_signal(arr, th, r, g, S2) + complex_noise(mu.shape, noise_variance(mu, 15.0), rng)).astype(
        np.complex64
    )
    for Yx, Sx in ((Y3, S2), (Y, S), (Y3, S2)):
        _assert_same(assess_estimate(Yx, arr, the, re, Sx, None, w), _two_calls(Yx, arr, the, re, Sx, None, w))


def test_assess_estimate_takes_the_direct_path_where_the_shortcut_does_not_apply():
    """Rank-deficient pilots, noise-free data (cancellation guard) and the blind case: the two calls."""
    rng = np.random.default_rng(8)
    arr = ULA(32, carrier_hz=5.8e9)
    th, r = np.array([0.1, -0.4]), np.array([1.0, 2.0])
    S = make_pilots(2, 40, rng)
    mu = noiseless_signal(arr, th, r, [1.0, 0.5j], S)
    Y = mu + complex_noise(mu.shape, noise_variance(mu, 10.0), rng)
    S_def = np.vstack([S[0], 2j * S[0]])  # rank 1
    _assert_same(assess_estimate(Y, arr, th, r, S_def), _two_calls(Y, arr, th, r, S_def, None, None))
    _assert_same(assess_estimate(mu, arr, th, r, S), _two_calls(mu, arr, th, r, S, None, None), rtol=1e-6)
    _assert_same(assess_estimate(Y, arr, th, r, None), _two_calls(Y, arr, th, r, None, None, None))
