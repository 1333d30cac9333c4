"""Plain 2-D near-field MUSIC baseline (blocks/music2d.py): physics oracles and the block."""

import numpy as np
import pytest

from nearfield.array import ULA
from nearfield.block import BadFrame, ParamError
from nearfield.blocks.music2d import Music2DLocalizer
from nearfield.bounds import root_bounds
from nearfield.estimators.music2d import music2d_localize, music2d_spectrum
from nearfield.frame import Frame
from nearfield.music import signal_subspace
from nearfield.scenario import paper_scenario
from nearfield.steering import steering


def _scenario(p_fault, seed=1, n=128, snr_db=20.0):
    rng = np.random.default_rng(seed)
    sc = paper_scenario(rng, n_antennas=n, p_fault=p_fault, snr_db=snr_db, n_snapshots=50)
    return sc, rng


def _noiseless_cov(sc):
    mu = sc.mean()
    return mu @ mu.conj().T / mu.shape[1]


def _errors(res, sc):
    o = np.argsort(sc.theta)
    return np.abs(res.theta - sc.theta[o]), np.abs(res.r - sc.r[o])


def test_noise_free_fault_free_covariance_gives_exact_positions():
    sc, _ = _scenario(0.0)
    res = music2d_localize(_noiseless_cov(sc), sc.array, 3)
    et, er = _errors(res, sc)
    assert np.all(et < 1e-9) and np.all(er < 1e-6 * sc.r.max())
    assert np.all(np.diff(res.theta) > 0)
    # the grid peaks sit within one grid cell of the truth
    assert np.all(np.abs(np.sin(res.grid_theta) - np.sin(np.sort(sc.theta))) < 2.0 / res.theta_grid.size * 1.01)
    assert res.spectrum.max() == pytest.approx(1.0)


def test_fresnel_model_on_fresnel_data_is_exact():
    array = ULA(64, wavelength_m=0.01)
    th, r = np.array([-0.4, 0.2]), np.array([1.5, 3.0])
    A = steering(array, th, r, "fresnel")
    res = music2d_localize(A @ A.conj().T, array, 2, model="fresnel")
    np.testing.assert_allclose(res.theta, th, atol=1e-9)
    np.testing.assert_allclose(res.r, r, rtol=1e-7)


def test_spectrum_is_the_noise_subspace_projection():
    sc, rng = _scenario(0.02)
    Y = sc.sample(rng).astype(complex)
    R = Y @ Y.conj().T / Y.shape[1]
    U, _ = signal_subspace(R, 3)
    th, rr = np.array([0.1, -0.3]), np.array([9.0, 30.0])
    den = music2d_spectrum(U, sc.array, th, rr)
    w, V = np.linalg.eigh(R)
    Un = V[:, :-3]  # independent oracle: the full noise subspace
    for i, r in enumerate(rr):
        a = steering(sc.array, th, r)
        np.testing.assert_allclose(den[i], np.sum(np.abs(Un.conj().T @ a) ** 2, axis=0), rtol=1e-4)


def test_faults_degrade_the_noise_free_estimate():
    """Unknown phase biases rotate the signal subspace: no exact null any more."""
    sc0, _ = _scenario(0.0)
    sc, _ = _scenario(0.02)
    assert sc.faulty.size > 0
    et0, er0 = _errors(music2d_localize(_noiseless_cov(sc0), sc0.array, 3), sc0)
    et, er = _errors(music2d_localize(_noiseless_cov(sc), sc.array, 3), sc)
    assert et.max() > 1e3 * et0.max() and et.max() > 1e-6
    assert er.max() > 1e3 * er0.max() and er.max() > 0.01  # metres


def test_fault_free_noisy_error_is_near_the_crb():
    sc, rng = _scenario(0.0, seed=2)
    res = music2d_localize(sc.sample(rng), sc.array, 3)  # snapshots in
    et, er = _errors(res, sc)
    rb = root_bounds(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.sigma2, sc.c)
    assert et.max() < 6 * rb["crb_angle"] and er.max() < 6 * rb["crb_range"]


def test_snapshots_and_covariance_inputs_agree():
    sc, rng = _scenario(0.02, n=64)
    Y = sc.sample(rng)
    R = Y.astype(complex) @ Y.conj().T.astype(complex) / Y.shape[1]
    a = music2d_localize(Y, sc.array, 3)
    b = music2d_localize(R, sc.array, 3, kind="covariance")
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-7)
    np.testing.assert_allclose(a.r, b.r, rtol=1e-5)
    with pytest.raises(ValueError, match="data: expected"):
        music2d_localize(Y[:10], sc.array, 3)
    with pytest.raises(ValueError, match="n_targets"):
        music2d_localize(R, sc.array, 64)


def _frame(sc, rng, with_cov=True, with_pilots=True):
    Y = sc.sample(rng)
    arrays = {"snapshots": Y}
    if with_cov:
        arrays["covariance"] = (Y @ Y.conj().T / Y.shape[1]).astype(np.complex64)
    if with_pilots:
        arrays["pilots"] = sc.pilots.astype(np.complex64)
    return Frame(seq=0, t0=0.0, arrays=arrays, meta={"array": sc.array.describe()})


def test_block_uses_covariance_or_snapshots_and_emits_sorted_targets():
    sc, rng = _scenario(0.0, seed=4, n=64, snr_db=30)
    blk = Music2DLocalizer(emit_spectra=True)
    out = blk.process(_frame(sc, rng))
    th = [t["theta"] for t in out.meta["targets"]]
    assert th == sorted(th) and out.meta["n_targets"] == 3
    np.testing.assert_allclose(th, np.sort(sc.theta), atol=5e-3)
    assert out.arrays["angle_spectrum"].shape == out.arrays["angle_grid"].shape == (128,)
    assert out.arrays["range_spectrum"].shape == out.arrays["range_grid"].shape == (3, 48)
    assert out.arrays["angle_spectrum"].max() == pytest.approx(1.0)
    np.testing.assert_allclose(out.arrays["range_spectrum"].max(axis=1), 1.0)
    out2 = Music2DLocalizer().process(_frame(sc, rng, with_cov=False))  # R from snapshots, K from pilots
    np.testing.assert_allclose([t["theta"] for t in out2.meta["targets"]], np.sort(sc.theta), atol=5e-3)


def test_block_bad_frames_and_params():
    sc, rng = _scenario(0.0, n=64)
    with pytest.raises(BadFrame, match="n_targets"):
        Music2DLocalizer().process(_frame(sc, rng, with_pilots=False))
    f = _frame(sc, rng)
    f.arrays["covariance"] = f.arrays["covariance"][:10]
    with pytest.raises(BadFrame, match="covariance"):
        Music2DLocalizer().process(f)
    with pytest.raises(BadFrame, match="neither"):
        Music2DLocalizer(n_targets=3).process(Frame(0, 0.0, {}, {"array": sc.array.describe()}))
    with pytest.raises(ParamError, match="range_max"):
        Music2DLocalizer(range_min=10.0, range_max=5.0)
    with pytest.raises(ParamError, match="model"):
        Music2DLocalizer(model="parabolic")
