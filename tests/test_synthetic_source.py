"""QA of the synthetic source: frames against an independent evaluation of eq. (5)."""
import time

import numpy as np
import pytest

from nearfield.block import ParamError
from nearfield.sources.synthetic import SyntheticSource

C0 = 299_792_458.0


def exact_steering(n, wavelength, d, theta, r):
    """Independent eq. (1): a_n = exp(-j 2pi/lambda (|p - q_n| - r)), antennas centred on y."""
    y = (np.arange(n) - (n - 1) / 2.0) * d
    px, py = r * np.cos(theta), r * np.sin(theta)
    dist = np.sqrt(px ** 2 + (py - y[:, None]) ** 2)
    return np.exp(-2j * np.pi / wavelength * (dist - r))


def test_frames_shapes_seq_and_time():
    src = SyntheticSource(n_antennas=32, snapshots=20, frames=4, sample_rate_hz=1000.0)
    frames = list(src.generate())
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert [f.t0 for f in frames] == pytest.approx([0.0, 0.02, 0.04, 0.06])
    for f in frames:
        assert f.arrays["snapshots"].shape == (32, 20) and f.arrays["snapshots"].dtype == np.complex64
        assert f.arrays["pilots"].shape == (3, 20) and f.arrays["pilots"].dtype == np.complex64
        assert np.allclose(np.abs(f.arrays["pilots"]), 1.0, atol=1e-6)
        assert f.meta["array"] == {"n_antennas": 32, "carrier_hz": 30e9, "spacing": C0 / 30e9 / 2,
                                   "wavelength_m": C0 / 30e9}
        thetas = [t["theta"] for t in f.meta["truth"]["targets"]]
        assert thetas == sorted(thetas)
        assert thetas == pytest.approx([-np.pi / 6, -np.pi / 12, np.pi / 12])
        assert [t["range"] for t in f.meta["truth"]["targets"]] == pytest.approx([8.0, 18.0, 10.0])


def test_noiseless_frames_match_independent_model_with_static_impairments():
    gains = [[1.0, 0.0], [0.0, 2.0], [-0.5, 0.5]]
    src = SyntheticSource(n_antennas=64, snapshots=16, frames=3, snr_db=250.0, p_fault=0.2, seed=7,
                          gains=gains, wavelength_m=0.01)
    frames = list(src.generate())
    truth = frames[0].meta["truth"]
    assert 3 <= len(truth["faulty"]) <= 30  # Binomial(64, 0.2): mean 12.8
    c = np.ones(64, complex)
    c[truth["faulty"]] = np.exp(1j * np.array(truth["fault_phase"]))
    beta = np.array([complex(*g) for g in gains])
    th = np.array([np.pi / 12, -np.pi / 12, -np.pi / 6])
    rr = np.array([10.0, 18.0, 8.0])
    A = exact_steering(64, 0.01, 0.005, th, rr)
    for f in frames:
        assert f.meta["truth"]["faulty"] == truth["faulty"]          # static HI vector
        assert f.meta["truth"]["fault_phase"] == truth["fault_phase"]
        S = f.arrays["pilots"].astype(complex)
        expected = c[:, None] * (A @ (beta[:, None] * S))
        Y = f.arrays["snapshots"]
        assert np.max(np.abs(Y - expected)) < 1e-5 * np.max(np.abs(expected))
    # fresh pilots every frame
    assert not np.allclose(frames[0].arrays["pilots"], frames[1].arrays["pilots"])


def test_noise_variance_matches_snr_definition():
    src = SyntheticSource(n_antennas=128, snapshots=200, frames=1, snr_db=0.0, p_fault=0.0, seed=3,
                          gains=[1.0, 1.0, 1.0], wavelength_m=0.01)
    f = next(src.generate())
    th = np.array([np.pi / 12, -np.pi / 12, -np.pi / 6])
    A = exact_steering(128, 0.01, 0.005, th, np.array([10.0, 18.0, 8.0]))
    x = A @ f.arrays["pilots"].astype(complex)
    sig_power = np.mean(np.abs(x) ** 2)                   # per antenna and snapshot
    sigma2 = f.meta["truth"]["noise_var"]
    assert sigma2 == pytest.approx(sig_power, rel=1e-5)    # SNR 0 dB, signal-part definition
    resid = f.arrays["snapshots"] - x
    # 25600 complex samples: the sample variance is within a few percent of sigma^2
    assert np.mean(np.abs(resid) ** 2) == pytest.approx(sigma2, rel=0.05)


def test_seed_reproducible_and_distinct():
    a = [f.arrays["snapshots"] for f in SyntheticSource(n_antennas=16, frames=2, seed=5).generate()]
    b = [f.arrays["snapshots"] for f in SyntheticSource(n_antennas=16, frames=2, seed=5).generate()]
    c = [f.arrays["snapshots"] for f in SyntheticSource(n_antennas=16, frames=2, seed=6).generate()]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_recorded_data_like_without_pilots():
    f = next(SyntheticSource(n_antennas=16, frames=1, pilots=False).generate())
    assert set(f.arrays) == {"snapshots"}


def test_moving_target_truth_follows_kinematics():
    tgt = [{"theta": 0.3, "range": 12.0, "velocity": [-20.0, 35.0]}]
    src = SyntheticSource(n_antennas=16, snapshots=10, frames=5, sample_rate_hz=100.0, targets=tgt, p_fault=0.0)
    for f in src.generate():
        t = f.seq * 10 / 100.0
        x = 12.0 * np.cos(0.3) - 20.0 * t
        y = 12.0 * np.sin(0.3) + 35.0 * t
        (got,) = f.meta["truth"]["targets"]
        assert got["theta"] == pytest.approx(np.arctan2(y, x), abs=1e-12)
        assert got["range"] == pytest.approx(np.hypot(x, y), rel=1e-12)


@pytest.mark.parametrize("targets, words", [
    ([{"theta": 0.1, "range": 5.0}, {"theta": 1.6, "range": 5.0}], ["targets", "target 1", "pi/2"]),
    ([{"theta": 0.1, "range": -1.0}], ["targets", "target 0", "range > 0"]),
    ([{"theta": 0.1}], ["targets", "target 0", "'range'"]),
    ([{"theta": 0.1, "range": 5.0, "speed": 3}], ["targets", "target 0", "speed"]),
])
def test_bad_targets_are_named(targets, words):
    with pytest.raises(ParamError) as err:
        SyntheticSource(name="src", targets=targets)
    for w in words:
        assert w in str(err.value)
    assert "'src'" in str(err.value)


def test_target_leaving_the_field_of_view_is_refused():
    tgt = [{"theta": 0.0, "range": 10.0, "velocity": [-100.0, 0.0]}]
    with pytest.raises(ParamError, match="target 0 moves behind"):
        SyntheticSource(targets=tgt, frames=200, snapshots=100, sample_rate_hz=1000.0)


def test_gains_count_must_match_targets():
    with pytest.raises(ParamError, match="gains"):
        SyntheticSource(gains=[1.0, 1.0])


def test_rate_hz_paces_frames():
    src = SyntheticSource(n_antennas=8, snapshots=4, frames=6, rate_hz=50.0)
    t = time.monotonic()
    n = sum(1 for _ in src.generate())
    elapsed = time.monotonic() - t
    assert n == 6
    assert elapsed >= 5 / 50.0 * 0.95    # 5 periods between 6 frames
