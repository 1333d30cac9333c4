"""BCD baseline of Sec. III-B (blocks/bcd.py): line-search algebra, noise estimate, behaviour, block."""

import numpy as np
import pytest

from nearfield.array import ULA
from nearfield.block import BadFrame, ParamError
from nearfield.blocks.bcd import BCDLocalizer
from nearfield.bounds import root_bounds
from nearfield.estimators.bcd import _Search, bcd_localize, pilot_noise_variance
from nearfield.frame import Frame
from nearfield.scenario import complex_noise, make_pilots, paper_scenario
from nearfield.steering import steering


def test_line_search_gain_equals_explicit_projection():
    """|phi^H P_o y|^2 / phi^H P_o phi == ||P_o^perp y||^2 - ||P_[o,phi]^perp y||^2 with Phi built explicitly."""
    rng = np.random.default_rng(0)
    array = ULA(12, wavelength_m=0.01)
    n, t, K = 12, 6, 3
    S = make_pilots(K, t, rng)
    Y = complex_noise((n, t), 1.0, rng)
    c = 1.0 + 0.3 * complex_noise(n, 1.0, rng)  # ISTA's c_hat is not unit-modulus
    A = steering(array, [0.2, -0.5, 0.7], [0.3, 0.5, 0.2])
    cand = steering(array, np.linspace(-1.2, 1.2, 7), 0.4)
    search = _Search(Y @ S.conj().T, S.conj() @ S.T, c)
    y = Y.ravel()

    def resid(cols):  # columns vec(diag(c) a s_k^T)
        Phi = np.stack(cols, axis=1)
        beta = np.linalg.lstsq(Phi, y, rcond=None)[0]
        return np.sum(np.abs(y - Phi @ beta) ** 2)

    for k in range(K):
        search.prepare(A, k)
        others = [np.outer(c * A[:, j], S[j]).ravel() for j in range(K) if j != k]
        base = resid(others)
        want = [base - resid(others + [np.outer(c * cand[:, g], S[k]).ravel()]) for g in range(cand.shape[1])]
        np.testing.assert_allclose(search.gain(cand), want, rtol=1e-9, atol=1e-9 * base)


def test_pilot_noise_variance_is_unbiased_and_ignores_the_signal():
    rng = np.random.default_rng(1)
    sc = paper_scenario(rng, n_antennas=64, p_fault=0.1, n_snapshots=40, snr_db=10)
    est = np.array([pilot_noise_variance(sc.sample(rng), sc.pilots) for _ in range(20)])
    # each estimate averages N (T - K) = 2368 |CN|^2 samples: relative sd 1/sqrt(2368) ~ 2 %
    assert np.mean(est) == pytest.approx(sc.sigma2, rel=4 * 0.0206 / np.sqrt(20))
    assert np.all(np.abs(est / sc.sigma2 - 1) < 5 * 0.0206)
    with pytest.raises(ValueError, match="T > K"):
        pilot_noise_variance(np.ones((4, 3)), np.ones((3, 3)))


def test_converges_where_the_near_field_coupling_is_weak():
    """N = 32, targets at 60-80 % of Z_Rayl (4.8 m): BCD localizes to a few R-CRB and finds the faults."""
    rng = np.random.default_rng(3)
    sc = paper_scenario(rng, n_antennas=32, p_fault=0.05, snr_db=20, n_snapshots=50, targets=((0.3, 3.0), (-0.4, 4.0)))
    assert sc.faulty.size > 0
    res = bcd_localize(sc.sample(rng), sc.array, sc.pilots)
    rb = root_bounds(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.sigma2)  # CRB with HI known
    assert np.all(np.abs(res.theta - sc.theta) < 5 * rb["crb_angle"])
    assert np.all(np.abs(res.r - sc.r) < 5 * rb["crb_range"])
    np.testing.assert_array_equal(res.faulty, sc.faulty)
    np.testing.assert_allclose(np.abs(res.gains), np.abs(sc.gains), rtol=0.05)


def test_fails_in_range_on_the_paper_scenario_as_the_paper_says():
    """Sec. III-B / Example 1: from the far-field start, BCD stays tens of metres off in range."""
    rng = np.random.default_rng(2)
    sc = paper_scenario(rng, p_fault=0.02, snr_db=20)
    res = bcd_localize(sc.sample(rng), sc.array, sc.pilots)
    assert np.mean(np.abs(res.r - sc.r)) > 10.0  # metres (targets at 8-18 m)
    assert np.all(res.r_init == sc.array.rayleigh_distance)
    assert 1 <= res.n_iter <= 10
    # the far-field beamscan start is within a few beamwidths of the true angles
    assert np.all(np.abs(res.theta_init - sc.theta) < 0.1)


def _frame(sc, rng, pilots=True):
    arrays = {"snapshots": sc.sample(rng)}
    if pilots:
        arrays["pilots"] = sc.pilots.astype(np.complex64)
    return Frame(seq=3, t0=0.0, arrays=arrays, meta={"array": sc.array.describe()})


def test_block_adds_sorted_targets_gains_faulty_and_c_hat():
    rng = np.random.default_rng(3)
    sc = paper_scenario(rng, n_antennas=32, p_fault=0.05, snr_db=20, n_snapshots=50, targets=((0.3, 3.0), (-0.4, 4.0)))
    out = BCDLocalizer(n_iter=5).process(_frame(sc, rng))
    th = [t["theta"] for t in out.meta["targets"]]
    assert th == sorted(th) and len(th) == 2 and out.meta["n_targets"] == 2
    o = np.argsort(sc.theta)
    np.testing.assert_allclose(th, sc.theta[o], atol=2e-3)
    g = np.array([complex(*x) for x in out.meta["gains"]])
    np.testing.assert_allclose(np.abs(g), np.abs(sc.gains[o]), rtol=0.05)
    assert out.meta["faulty"] == [int(i) for i in sc.faulty]
    assert out.arrays["c_hat"].shape == (32,) and out.arrays["c_hat"].dtype == np.complex64
    assert out.meta["noise_var"] == pytest.approx(sc.sigma2, rel=0.2)


def test_block_rejects_bad_frames_and_params():
    rng = np.random.default_rng(4)
    sc = paper_scenario(rng, n_antennas=32, p_fault=0.0, n_snapshots=20, targets=((0.3, 3.0),))
    assert BCDLocalizer.requires == ("snapshots", "pilots")
    with pytest.raises(BadFrame, match="n_targets"):
        BCDLocalizer(n_targets=2).process(_frame(sc, rng))
    f = _frame(sc, rng)
    f.arrays["pilots"] = f.arrays["pilots"][:, :5]
    with pytest.raises(BadFrame, match="pilots"):
        BCDLocalizer().process(f)
    f = _frame(sc, rng)
    del f.meta["array"]
    with pytest.raises(BadFrame, match="meta.array"):
        BCDLocalizer().process(f)
    with pytest.raises(ParamError, match="n_iter"):
        BCDLocalizer(n_iter=0)
    with pytest.raises(ValueError, match="n_targets"):
        bcd_localize(sc.sample(rng), sc.array, sc.pilots, n_targets=3)
