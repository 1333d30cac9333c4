"""Reference calibration (nearfield.estimators.reference) against truth, independent fits and a variance formula."""
import numpy as np
import pytest
from scipy.optimize import least_squares

from nearfield.array import ULA
from nearfield.estimators.reference import (CalibrationStats, apply_hi, calibrate, calibrate_stats, dead_channels,
                                            hi_error, normalize_hi)
from nearfield.scenario import paper_scenario
from nearfield.steering import steering

REFS = [(0.3, 2.0), (-0.4, 3.0)]


def scene(rng, k, snr_db=300.0, t=200, n=16, **kw):
    kw = {"gain_std_db": 1.5, "phase_std": "uniform", **kw}
    return paper_scenario(rng, n_antennas=n, snr_db=snr_db, p_fault=0.0, n_snapshots=t, targets=REFS[:k],
                          wavelength_m=None, carrier_hz=5.8e9, **kw)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("blind", [False, True])
def test_noiseless_gives_exact_hi_vector(k, blind):
    rng = np.random.default_rng(10 + k + 2 * blind)
    sc = scene(rng, k)
    Y = sc.mean()
    c_hat = calibrate(Y, sc.array, sc.theta, sc.r, None if blind else sc.pilots)
    # the common factor is fixed by the documented normalisation: compare with the truth so normalised
    assert np.allclose(c_hat, normalize_hi(sc.c), atol=1e-9)
    assert np.mean(np.abs(c_hat)) == pytest.approx(1.0)
    assert np.angle(np.sum(c_hat)) == pytest.approx(0.0, abs=1e-12)
    assert np.std(np.abs(sc.c)) > 0.05  # the test really has gain errors, not only phases


def test_pilot_k1_error_matches_the_ls_variance_and_shrinks_with_t():
    """Per-antenna LS: var(c_n) = sigma^2 / T (|a_n s_t| = 1); removing the common factor takes 1 of N dof."""
    n, trials = 16, 12
    nmse = {}
    for t in (100, 1600):
        rng = np.random.default_rng(t)
        errs, pred = [], []
        for _ in range(trials):
            sc = scene(rng, 1, snr_db=10.0, t=t, n=n)
            c_hat = calibrate(sc.sample(rng, np.complex128), sc.array, sc.theta, sc.r, sc.pilots)
            errs.append(hi_error(c_hat, sc.c))
            pred.append((n - 1) / n * sc.sigma2 / t / np.mean(np.abs(sc.c * sc.gains[0]) ** 2))
        nmse[t] = np.mean(errs)
        assert nmse[t] == pytest.approx(np.mean(pred), rel=0.25)
    assert 10.0 < nmse[100] / nmse[1600] < 25.0  # 1/T: factor 16


@pytest.mark.parametrize("blind", [False, True])
def test_noisy_k2_error_shrinks_like_one_over_t(blind):
    nmse = {}
    for t in (100, 1600):
        rng = np.random.default_rng(7 * t + blind)
        e = []
        for _ in range(8):
            sc = scene(rng, 2, snr_db=10.0, t=t)
            e.append(hi_error(calibrate(sc.sample(rng, np.complex128), sc.array, sc.theta, sc.r,
                                        None if blind else sc.pilots), sc.c))
        nmse[t] = np.mean(e)
    assert nmse[1600] < 3e-3
    assert 8.0 < nmse[100] / nmse[1600] < 32.0


def test_k2_pilots_is_the_least_squares_optimum():
    """Independent: scipy least_squares over (c, beta) with beta_0 = 1 fixing the common factor."""
    rng = np.random.default_rng(3)
    sc = scene(rng, 2, snr_db=5.0, t=60, n=8)
    Y = sc.sample(rng, np.complex128)
    A = steering(sc.array, sc.theta, sc.r)
    n = 8

    def resid(p):
        c = p[:n] + 1j * p[n:2 * n]
        beta = np.array([1.0, p[2 * n] + 1j * p[2 * n + 1]])
        e = Y - c[:, None] * (A @ (beta[:, None] * sc.pilots))
        return np.concatenate([e.real.ravel(), e.imag.ravel()])

    c0 = sc.c * sc.gains[0]
    b1 = sc.gains[1] / sc.gains[0]
    fit = least_squares(resid, np.concatenate([c0.real, c0.imag, [b1.real, b1.imag]]), xtol=1e-14, ftol=1e-14)
    c_ls = fit.x[:n] + 1j * fit.x[n:2 * n]
    c_hat = calibrate(Y, sc.array, sc.theta, sc.r, sc.pilots, n_iter=500, tol=1e-14)
    assert hi_error(c_hat, c_ls) < 1e-10


def test_blind_k1_is_the_rank_one_fit_of_the_snapshots():
    """Independent: the ML fit with an unknown waveform is the leading left singular vector of Y, over a."""
    rng = np.random.default_rng(4)
    sc = scene(rng, 1, snr_db=5.0, t=50)
    Y = sc.sample(rng, np.complex128)
    u = np.linalg.svd(Y)[0][:, 0]
    a = steering(sc.array, sc.theta, sc.r)[:, 0]
    assert hi_error(calibrate(Y, sc.array, sc.theta, sc.r), u / a) < 1e-20


@pytest.mark.parametrize("k, blind", [(1, False), (1, True), (2, False), (2, True)])
def test_dead_channel_comes_out_near_zero(k, blind):
    rng = np.random.default_rng(20 + k)
    sc = scene(rng, k, snr_db=20.0, t=400, dead_channels=[5])
    assert sc.c[5] == 0
    Y = sc.sample(rng, np.complex128)
    c_hat = calibrate(Y, sc.array, sc.theta, sc.r, None if blind else sc.pilots)
    assert np.all(np.isfinite(c_hat))
    assert list(dead_channels(c_hat)) == [5]
    assert abs(c_hat[5]) < 0.05
    assert hi_error(c_hat, sc.c) < 1e-3
    Z = apply_hi(Y.astype(np.complex64), c_hat)
    assert Z.dtype == np.complex64 and not np.any(Z[5])
    live = np.arange(16) != 5
    assert np.allclose(Z[live], Y[live] / c_hat[live, None], rtol=1e-5)


def test_noiseless_dead_channel_gives_no_nan():
    rng = np.random.default_rng(6)
    for blind in (False, True):
        sc = scene(rng, 2, dead_channels=2)
        c_hat = calibrate(sc.mean(), sc.array, sc.theta, sc.r, None if blind else sc.pilots)
        assert np.all(np.isfinite(c_hat))
        dead = np.flatnonzero(sc.c == 0)
        assert list(dead_channels(c_hat)) == list(dead)
        assert hi_error(c_hat, sc.c) < 1e-12


def test_apply_hi_is_eq27_for_unit_modulus():
    rng = np.random.default_rng(8)
    c = np.exp(2j * np.pi * rng.random(12))
    Y = rng.standard_normal((12, 5)) + 1j * rng.standard_normal((12, 5))
    assert np.allclose(apply_hi(Y, c), c.conj()[:, None] * Y)
    assert np.allclose(apply_hi(Y[:, 0], c), c.conj() * Y[:, 0])


def test_dead_channels_threshold():
    c = np.array([1.0, 0.9, 0.05, 1.2, 0.0, 0.3])
    assert list(dead_channels(c)) == [2, 4]
    assert list(dead_channels(c, threshold=0.6)) == [2, 4, 5]  # median 0.6: below 0.36
    with pytest.raises(ValueError, match="threshold"):
        dead_channels(c, threshold=2.0)


def test_statistics_accumulate_across_frames():
    rng = np.random.default_rng(9)
    sc = scene(rng, 2, snr_db=10.0, t=300)
    Y = sc.sample(rng, np.complex128)
    for blind in (False, True):
        st = CalibrationStats(16, 2, blind)
        for sl in (slice(0, 100), slice(100, 250), slice(250, 300)):
            st.update(Y[:, sl], None if blind else sc.pilots[:, sl])
        assert st.n_snapshots == 300
        whole = calibrate(Y, sc.array, sc.theta, sc.r, None if blind else sc.pilots)
        assert np.allclose(calibrate_stats(st, sc.array, sc.theta, sc.r), whole, atol=1e-10)


@pytest.mark.parametrize("args, word", [
    (dict(Y=np.zeros((15, 10), complex)), "Y"),
    (dict(Y=np.full((16, 10), np.nan, complex)), "Y"),
    (dict(theta=[0.1, 0.2], r=[2.0]), "r"),
    (dict(theta=[2.0], r=[2.0]), "theta"),
    (dict(r=[-1.0]), "r"),
    (dict(pilots=np.ones((2, 10), complex)), "pilots"),
    (dict(pilots=np.ones((1, 9), complex)), "pilots"),
    (dict(n_iter=-1), "n_iter"),
    (dict(array="ula"), "array"),
])
def test_bad_arguments_are_named(args, word):
    kw = dict(Y=np.ones((16, 10), complex), array=ULA(16, 5.8e9), theta=[0.1], r=[2.0], pilots=None)
    kw.update(args)
    with pytest.raises(ValueError, match=rf"^{word}\b"):
        calibrate(**kw)
