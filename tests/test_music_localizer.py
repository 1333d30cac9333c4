"""Phase 3: decoupled MUSIC with physics oracles, and the exact-model refinement."""

import numpy as np
import pytest

from nearfield.array import paper_array
from nearfield.blocks.music_localizer import MusicLocalizer
from nearfield.estimators.phase3 import angle_music, antidiagonal, decoupled_music, fine_positions, smoothed_covariance
from nearfield.frame import Frame
from nearfield.scenario import paper_scenario
from nearfield.steering import steering

TH = np.array([np.pi / 12, -np.pi / 12, -np.pi / 6])
R_ = np.array([10.0, 18.0, 8.0])


def _cov(model, sigma2=0.0):
    a = paper_array(256)
    A = steering(a, TH, R_, model)
    return a, A @ A.conj().T + sigma2 * np.eye(256)


def test_antidiagonal_and_smoothing_shapes():
    R = np.arange(16).reshape(4, 4)
    assert list(antidiagonal(R)) == [3, 6, 9, 12]
    r = np.array([1, 2, 3, 4], complex)
    Rr = smoothed_covariance(r, 2)
    assert Rr.shape == (3, 3)
    assert np.allclose(Rr, (np.outer(r[:3], r[:3].conj()) + np.outer(r[1:], r[1:].conj())) / 2)


def test_noise_free_fresnel_covariance_gives_exact_angles_and_ranges():
    a, R = _cov("fresnel", sigma2=1e-3)
    th, r, spec = decoupled_music(R, a, TH + 2e-3, R_ * 1.2, model="fresnel")
    assert np.allclose(th, TH, atol=1e-6)  # eqs. (29)-(33) are exact under eq. (2)
    assert np.allclose(r, R_, rtol=1e-4)
    assert spec["angle_spectrum"].max() == pytest.approx(1.0)
    assert spec["range_grid"].shape == spec["range_spectrum"].shape == (3, 41)


def test_exact_model_data_biases_the_decoupled_angle():
    # errata 5: the anti-diagonal keeps an odd-order phase on spherical data.
    a, R = _cov("exact", sigma2=1e-3)
    th, _, _ = angle_music(R, a, TH, 3)
    bias = np.abs(th - TH)
    assert np.all(bias > 1e-5) and np.all(bias < 3e-3)


def test_aliases_are_excluded_by_the_window():
    from nearfield.estimators.phase3 import virtual_steering
    from nearfield.music import music_spectrum, signal_subspace

    a, R = _cov("fresnel", sigma2=1e-3)
    Rr = smoothed_covariance(antidiagonal(R), 128)
    U, _ = signal_subspace(Rr, 3)
    u0 = np.sin(TH[0])
    # the lambda-spaced virtual array cannot tell sin(theta) from sin(theta) - 1 (errata 6)
    spec = music_spectrum(U, virtual_steering(a, Rr.shape[0], [u0, u0 - 1.0, u0 - 0.5]))
    assert spec[1] == pytest.approx(spec[0], rel=1e-6) and spec[2] < 1e-3 * spec[0]
    # a coarse angle near the alias side still gives the true angle: the window excludes the alias
    th, _, _ = angle_music(R, a, TH + np.array([0.02, -0.02, 0.02]), 3)
    assert np.allclose(th, TH, atol=1e-6)


def test_refinement_removes_the_fresnel_bias():
    rng = np.random.default_rng(8)
    sc = paper_scenario(rng, snr_db=30, p_fault=0.0)
    Y = sc.sample(rng).astype(complex)
    R = Y @ Y.conj().T / Y.shape[1]
    est = fine_positions(R, Y, sc.array, sc.theta + 1e-3, sc.r * 1.1, sc.pilots)
    assert np.max(np.abs(est.theta - sc.theta)) < 0.2 * np.max(np.abs(est.music_theta - sc.theta))
    assert np.max(np.abs(est.theta - sc.theta)) < 2e-5


def test_block_sorts_targets_and_emits_spectra():
    rng = np.random.default_rng(9)
    sc = paper_scenario(rng, snr_db=20, p_fault=0.0)
    Y = sc.sample(rng)
    meta = {
        "array": sc.array.describe(),
        "coarse": [{"theta": float(t + 1e-3), "range": float(r * 1.1)} for t, r in zip(sc.theta, sc.r)],
    }
    blk = MusicLocalizer(name="locate", emit_spectra=True)
    blk.start()
    out = blk.process(
        Frame(
            0,
            0.0,
            {
                "snapshots": Y,
                "pilots": sc.pilots.astype(np.complex64),
                "covariance": (Y @ Y.conj().T / 100).astype(np.complex64),
            },
            meta,
        )
    )
    th = [t["theta"] for t in out.meta["targets"]]
    assert th == sorted(th)
    assert np.allclose(th, np.sort(sc.theta), atol=1e-4)
    assert out.arrays["range_spectrum"].shape == (3, 41) and "angle_grid" in out.arrays


def test_block_reports_malformed_meta_as_bad_frame():
    from nearfield.block import BadFrame

    rng = np.random.default_rng(10)
    sc = paper_scenario(rng, n_antennas=64, snr_db=20, p_fault=0.0)
    Y = sc.sample(rng)
    arrays = {"snapshots": Y, "covariance": (Y @ Y.conj().T / 100).astype(np.complex64)}
    blk = MusicLocalizer(name="locate")
    blk.start()
    for meta, msg in [
        ({"array": sc.array.describe()}, "coarse"),
        ({"array": sc.array.describe(), "coarse": [{"theta": 0.1}]}, "range"),
        ({"array": sc.array.describe(), "coarse": [{"theta": "x", "range": 3}]}, "coarse"),
    ]:
        with pytest.raises(BadFrame, match=msg):
            blk.process(Frame(0, 0.0, dict(arrays), meta))
