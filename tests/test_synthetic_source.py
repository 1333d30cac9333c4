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
    dist = np.sqrt(px**2 + (py - y[:, None]) ** 2)
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
        assert f.meta["array"] == {
            "n_antennas": 32,
            "carrier_hz": 30e9,
            "spacing": C0 / 30e9 / 2,
            "wavelength_m": C0 / 30e9,
        }
        thetas = [t["theta"] for t in f.meta["truth"]["targets"]]
        assert thetas == sorted(thetas)
        assert thetas == pytest.approx([-np.pi / 6, -np.pi / 12, np.pi / 12])
        assert [t["range"] for t in f.meta["truth"]["targets"]] == pytest.approx([8.0, 18.0, 10.0])


def test_noiseless_frames_match_independent_model_with_static_impairments():
    gains = [[1.0, 0.0], [0.0, 2.0], [-0.5, 0.5]]
    src = SyntheticSource(
        n_antennas=64, snapshots=16, frames=3, snr_db=250.0, p_fault=0.2, seed=7, gains=gains, wavelength_m=0.01
    )
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
        assert f.meta["truth"]["faulty"] == truth["faulty"]  # static HI vector
        assert f.meta["truth"]["fault_phase"] == truth["fault_phase"]
        S = f.arrays["pilots"].astype(complex)
        expected = c[:, None] * (A @ (beta[:, None] * S))
        Y = f.arrays["snapshots"]
        assert np.max(np.abs(Y - expected)) < 1e-5 * np.max(np.abs(expected))
    # fresh pilots every frame
    assert not np.allclose(frames[0].arrays["pilots"], frames[1].arrays["pilots"])


def test_noise_variance_matches_snr_definition():
    src = SyntheticSource(
        n_antennas=128,
        snapshots=200,
        frames=1,
        snr_db=0.0,
        p_fault=0.0,
        seed=3,
        gains=[1.0, 1.0, 1.0],
        wavelength_m=0.01,
    )
    f = next(src.generate())
    th = np.array([np.pi / 12, -np.pi / 12, -np.pi / 6])
    A = exact_steering(128, 0.01, 0.005, th, np.array([10.0, 18.0, 8.0]))
    x = A @ f.arrays["pilots"].astype(complex)
    sig_power = np.mean(np.abs(x) ** 2)  # per antenna and snapshot
    sigma2 = f.meta["truth"]["noise_var"]
    assert sigma2 == pytest.approx(sig_power, rel=1e-5)  # SNR 0 dB, signal-part definition
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


@pytest.mark.parametrize(
    "targets, words",
    [
        ([{"theta": 0.1, "range": 5.0}, {"theta": 1.6, "range": 5.0}], ["targets", "target 1", "pi/2"]),
        ([{"theta": 0.1, "range": -1.0}], ["targets", "target 0", "range > 0"]),
        ([{"theta": 0.1}], ["targets", "target 0", "'range'"]),
        ([{"theta": 0.1, "range": 5.0, "speed": 3}], ["targets", "target 0", "speed"]),
    ],
)
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
    assert elapsed >= 5 / 50.0 * 0.95  # 5 periods between 6 frames


# -- dense impairments, the fast path and its legacy twin ---------------------------------------------------


def _hi(truth):
    return np.array([complex(*v) for v in truth["hi"]])


def test_legacy_noise_reproduces_the_draw_sequence_of_the_scenario_functions():
    """legacy_noise: c, beta once; per frame pilots then float64 noise -- rebuilt here from the library."""
    from nearfield.array import ULA
    from nearfield.impairments import draw_impairments
    from nearfield.scenario import complex_noise, make_pilots, noise_variance, noiseless_signal

    src = SyntheticSource(n_antennas=24, snapshots=12, frames=3, seed=11, p_fault=0.2, legacy_noise=True)
    rng = np.random.default_rng(11)
    c, _ = draw_impairments(24, 0.2, rng)
    beta = np.exp(2j * np.pi * rng.random(3))
    arr = ULA(24)
    th = np.array([np.pi / 12, -np.pi / 12, -np.pi / 6])
    rr = np.array([10.0, 18.0, 8.0])
    for f in src.generate():
        S = make_pilots(3, 12, rng)
        mu = noiseless_signal(arr, th, rr, beta, S, c)
        y = (mu + complex_noise(mu.shape, noise_variance(mu, 20.0), rng)).astype(np.complex64)
        assert np.array_equal(f.arrays["snapshots"], y)
        assert np.array_equal(f.arrays["pilots"], S.astype(np.complex64))


def test_fast_and_legacy_paths_share_hi_gains_and_pilots():
    kw = dict(n_antennas=32, snapshots=40, frames=3, seed=4, p_fault=0.1)
    fast = list(SyntheticSource(**kw).generate())
    old = list(SyntheticSource(legacy_noise=True, **kw).generate())
    # the first pilots come before any noise draw; later ones follow a noise stream of another type
    assert np.array_equal(fast[0].arrays["pilots"], old[0].arrays["pilots"])
    assert fast[0].meta["truth"]["noise_var"] == pytest.approx(old[0].meta["truth"]["noise_var"], rel=1e-9)
    for a, b in zip(fast, old):
        assert a.meta["truth"]["faulty"] == b.meta["truth"]["faulty"]
        assert a.meta["truth"]["fault_phase"] == b.meta["truth"]["fault_phase"]
        assert not np.array_equal(a.arrays["snapshots"], b.arrays["snapshots"])  # the noise stream differs


def test_fast_noise_is_circular_white_with_the_set_variance():
    src = SyntheticSource(
        n_antennas=64,
        snapshots=400,
        frames=1,
        snr_db=0.0,
        p_fault=0.0,
        seed=2,
        gains=[1.0, 1.0, 1.0],
        wavelength_m=0.01,
    )
    f = next(src.generate())
    th = np.array([np.pi / 12, -np.pi / 12, -np.pi / 6])
    x = exact_steering(64, 0.01, 0.005, th, np.array([10.0, 18.0, 8.0])) @ f.arrays["pilots"].astype(complex)
    e = f.arrays["snapshots"] - x
    s2 = f.meta["truth"]["noise_var"]
    assert s2 == pytest.approx(np.mean(np.abs(x) ** 2), rel=1e-5)
    # 25600 samples: each moment within ~4 standard errors
    assert np.mean(e.real**2) == pytest.approx(s2 / 2, rel=0.04)
    assert np.mean(e.imag**2) == pytest.approx(s2 / 2, rel=0.04)
    assert abs(np.mean(e * e)) < 0.04 * s2  # circular: E[e^2] = 0
    assert abs(np.mean(e[:, 1:] * e[:, :-1].conj())) < 0.04 * s2  # white in time


def test_fast_path_follows_moving_targets():
    tgt = [{"theta": 0.2, "range": 6.0, "velocity": [-3.0, 4.0]}]
    src = SyntheticSource(
        n_antennas=32,
        snapshots=8,
        frames=4,
        sample_rate_hz=100.0,
        targets=tgt,
        p_fault=0.0,
        snr_db=250.0,
        gains=[1.0],
        wavelength_m=0.01,
    )
    for f in src.generate():
        (t,) = f.meta["truth"]["targets"]
        a = exact_steering(32, 0.01, 0.005, np.array([t["theta"]]), np.array([t["range"]]))
        expected = a @ f.arrays["pilots"].astype(complex)
        assert np.max(np.abs(f.arrays["snapshots"] - expected)) < 1e-5


def test_default_run_has_no_dense_truth():
    f = next(SyntheticSource(n_antennas=16, frames=1).generate())
    assert not {"hi", "dead", "position_offsets"} & set(f.meta["truth"])


def test_dense_impairments_match_an_independent_model():
    src = SyntheticSource(
        n_antennas=16,
        carrier_hz=5.8e9,
        snapshots=30,
        frames=2,
        snr_db=250.0,
        p_fault=0.0,
        seed=3,
        gain_std_db=1.5,
        phase_std="uniform",
        dead_channels=[2, 9],
        position_std=0.002,
        targets=[{"theta": 0.3, "range": 1.5}, {"theta": -0.2, "range": 2.5}],
        gains=[1.0, 0.5],
    )
    frames = list(src.generate())
    truth = frames[0].meta["truth"]
    c = _hi(truth)
    assert truth["dead"] == [2, 9] and np.all(c[[2, 9]] == 0)
    live = np.abs(c) > 0
    gdb = 20 * np.log10(np.abs(c[live]))
    assert 0.5 < np.std(gdb) < 3.0  # 1.5 dB std over 14 channels
    assert frames[0].meta["array"]["n_antennas"] == 16  # the nominal array is described
    lam = C0 / 5.8e9
    y_nom = (np.arange(16) - 7.5) * lam / 2
    y_true = y_nom + np.array(truth["position_offsets"])
    assert 0.0005 < np.std(truth["position_offsets"]) < 0.004
    th, rr = np.array([0.3, -0.2]), np.array([1.5, 2.5])
    dist = np.sqrt((rr * np.cos(th)) ** 2 + (rr * np.sin(th) - y_true[:, None]) ** 2)
    A = np.exp(-2j * np.pi / lam * (dist - rr))
    for f in frames:
        S = f.arrays["pilots"].astype(complex)
        expected = c[:, None] * (A @ (np.array([1.0, 0.5])[:, None] * S))
        assert np.max(np.abs(f.arrays["snapshots"] - expected)) < 1e-5 * np.max(np.abs(expected))
        assert _hi(f.meta["truth"]).tolist() == c.tolist()  # static over the run


def test_dead_channel_receives_noise_only():
    src = SyntheticSource(n_antennas=16, snapshots=2000, frames=1, snr_db=10.0, p_fault=0.0, dead_channels=[4])
    f = next(src.generate())
    y = f.arrays["snapshots"]
    s2 = f.meta["truth"]["noise_var"]
    assert np.mean(np.abs(y[4]) ** 2) == pytest.approx(s2, rel=0.1)
    assert np.mean(np.abs(y[5]) ** 2) > 5 * s2


def test_dense_count_of_dead_channels_and_gaussian_phase():
    src = SyntheticSource(n_antennas=64, frames=1, dead_channels=3, phase_std=0.1, seed=9)
    t = next(src.generate()).meta["truth"]
    c = _hi(t)
    assert len(t["dead"]) == 3 and np.count_nonzero(c == 0) == 3
    ph = np.angle(c[c != 0] / np.exp(1j * np.angle(c[c != 0]).mean()))
    assert np.std(ph) < 0.5 and np.allclose(np.abs(c[c != 0]), 1.0)  # p_fault adds a few uniform phases


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"gain_std_db": -1.0}, "gain_std_db"),
        ({"phase_std": "gaussian"}, "phase_std"),
        ({"phase_std": -0.1}, "phase_std"),
        ({"position_std": -0.1}, "position_std"),
        ({"dead_channels": 16}, "dead_channels"),
        ({"dead_channels": [0, 16]}, "dead_channels"),
        ({"dead_channels": [1, 1]}, "dead_channels"),
    ],
)
def test_bad_dense_parameters_are_named(kw, name):
    with pytest.raises(ParamError, match=f"parameter '{name}'"):
        SyntheticSource(name="src", n_antennas=16, **kw)


def test_fast_noise_is_complex_gaussian():
    """The polar draw gives CN(0, sigma^2): |z|^2 / sigma^2 ~ Exp(1) (mean 1, E|z|^4 = 2 sigma^4, the tail
    P(|z|^2 > 3 sigma^2) = e^-3) and real and imaginary parts each N(0, sigma^2 / 2) (kurtosis 3)."""
    src = SyntheticSource(n_antennas=64, snapshots=500, frames=1, seed=4)
    src.start()
    s2 = 0.7
    z = src._circular_noise(64, 500, s2).astype(complex).ravel()  # 32000 samples
    q = np.abs(z) ** 2 / s2
    assert np.mean(q) == pytest.approx(1.0, abs=0.03)
    assert np.mean(q**2) == pytest.approx(2.0, abs=0.12)
    assert np.mean(q > 3.0) == pytest.approx(np.exp(-3.0), abs=0.006)
    for part in (z.real, z.imag):
        x = part / np.sqrt(s2 / 2)
        assert np.mean(x**2) == pytest.approx(1.0, abs=0.04)
        assert np.mean(x**4) == pytest.approx(3.0, abs=0.25)
    assert abs(np.mean(z.real * z.imag)) < 0.03 * s2
