"""The array and signal model (paper Sec. II) against independent formulas and limits."""

import numpy as np
import pytest

from nearfield.array import ULA, paper_array
from nearfield.impairments import draw_impairments, hi_nmse
from nearfield.scenario import noise_variance, noiseless_signal, paper_scenario
from nearfield.steering import far_field_steering, phase_derivatives, steering, steering_derivatives


def test_paper_geometry():
    a = paper_array(256)
    assert a.wavelength == 0.01 and a.d == 0.005
    assert a.aperture == pytest.approx(1.275)
    assert a.fresnel_distance == pytest.approx(0.5 * np.sqrt(1.275**3 / 0.01))
    assert a.fresnel_distance == pytest.approx(7.198, abs=1e-3)
    assert a.rayleigh_distance == pytest.approx(2 * 1.275**2 / 0.01)
    assert a.n_sub == 38  # docs/paper-errata.md: N_sub = 38 for N = 256
    pos = a.positions
    assert pos.shape == (256,) and pos.mean() == pytest.approx(0, abs=1e-12)
    assert np.allclose(np.diff(pos), a.d) and pos[0] == pytest.approx(-255 * a.d / 2)


def test_wavelength_from_carrier_and_spacing():
    a = ULA(64, carrier_hz=3e9, spacing=0.04)
    assert a.wavelength == pytest.approx(299_792_458.0 / 3e9)
    assert a.d == 0.04 and a.aperture == pytest.approx(63 * 0.04)
    assert ULA.from_meta(a.describe()) == ULA(64, 3e9, 0.04, a.wavelength)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n_antennas": 1}, "n_antennas"),
        ({"n_antennas": 8, "carrier_hz": -1}, "carrier_hz"),
        ({"n_antennas": 8, "spacing": 0}, "spacing"),
    ],
)
def test_bad_geometry_names_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ULA(**kwargs)


def test_exact_steering_is_eq1():
    a = paper_array(32)
    th, r = 0.3, 9.0
    rn = np.sqrt(r**2 + a.positions**2 - 2 * a.positions * r * np.sin(th))
    expected = np.exp(-1j * 2 * np.pi / a.wavelength * (rn - r))
    assert np.allclose(steering(a, th, r)[:, 0], expected, atol=1e-12)


def test_fresnel_is_eq2_and_converges_to_exact_with_range():
    a = paper_array(128)
    th = -0.4
    fres = steering(a, th, 5.0, "fresnel")[:, 0]
    ell = a.positions
    eq2 = np.exp(1j * 2 * np.pi / a.wavelength * (ell * np.sin(th) - ell**2 * np.cos(th) ** 2 / (2 * 5.0)))
    assert np.allclose(fres, eq2)
    errs = [
        np.max(np.abs(np.angle(steering(a, th, r)[:, 0] * steering(a, th, r, "fresnel")[:, 0].conj())))
        for r in (2.0, 8.0, 32.0, 128.0)
    ]
    assert all(e2 < e1 / 4 for e1, e2 in zip(errs, errs[1:]))  # third-order term falls like 1/r^2
    assert errs[-1] < 1e-3


def test_far_field_limit_matches_eq2_linear_term():
    a = paper_array(16)
    b = far_field_steering(a.positions, a.wavelength, 0.2)[:, 0]
    near = steering(a, 0.2, 1e7, "fresnel")[:, 0]
    assert np.allclose(b, near, atol=1e-5)


@pytest.mark.parametrize("model", ["exact", "fresnel"])
def test_derivatives_match_finite_differences(model):
    a = paper_array(256)
    th = np.array([0.2618, -0.5236])
    r = np.array([10.0, 8.0])
    d = steering_derivatives(a, th, r, model)
    ht, hr = 1e-6, 1e-5

    def fd(f, h):
        return (f(+h) - f(-h)) / (2 * h)

    def rel(x, y):
        return np.max(np.abs(x - y)) / np.max(np.abs(y))

    assert rel(fd(lambda h: steering(a, th + h, r, model), ht), d.a_t) < 1e-6
    assert rel(fd(lambda h: steering(a, th, r + h, model), hr), d.a_r) < 1e-6
    assert rel(fd(lambda h: steering_derivatives(a, th + h, r, model).a_t, ht), d.a_tt) < 1e-6
    assert rel(fd(lambda h: steering_derivatives(a, th, r + h, model).a_r, hr), d.a_rr) < 1e-6
    assert rel(fd(lambda h: steering_derivatives(a, th, r + h, model).a_t, hr), d.a_tr) < 1e-6
    assert rel(fd(lambda h: steering_derivatives(a, th + h, r, model).a_r, ht), d.a_tr) < 1e-6


def test_phase_derivatives_agree_between_models_far_away():
    a = paper_array(64)
    pe = phase_derivatives(a, 0.3, 400.0, "exact")
    pf = phase_derivatives(a, 0.3, 400.0, "fresnel")
    assert np.allclose(pe.t, pf.t, rtol=1e-3, atol=1e-6)


def test_impairments_bernoulli_and_unit_modulus():
    rng = np.random.default_rng(5)
    c, faulty = draw_impairments(20000, 0.1, rng)
    assert abs(faulty.mean() - 0.1) < 4 * np.sqrt(0.1 * 0.9 / 20000)
    assert np.allclose(np.abs(c), 1) and np.all(c[~faulty] == 1)
    zeta = np.angle(c[faulty]) % (2 * np.pi)
    assert abs(zeta.mean() - np.pi) < 0.1  # U(0, 2 pi)
    with pytest.raises(ValueError, match="p_fault"):
        draw_impairments(8, 1.5, rng)
    assert hi_nmse(c, c) == 0.0


def test_snr_definition_is_signal_power_only():
    rng = np.random.default_rng(7)
    sc = paper_scenario(rng, n_antennas=64, snr_db=-10.0, n_snapshots=50)
    mu = sc.mean()
    snr = np.mean(np.sum(np.abs(mu) ** 2, axis=0)) / (64 * sc.sigma2)
    assert 10 * np.log10(snr) == pytest.approx(-10.0)
    Y = np.stack([sc.sample(rng) for _ in range(40)])
    noise_power = np.mean(np.abs(Y - mu[None]) ** 2)
    assert noise_power == pytest.approx(sc.sigma2, rel=0.03)
    assert Y.dtype == np.complex64


def test_noiseless_signal_is_sum_over_targets():
    rng = np.random.default_rng(2)
    sc = paper_scenario(rng, n_antennas=32, n_snapshots=5)
    ref = sum(
        sc.gains[k] * np.outer(sc.c * steering(sc.array, sc.theta[k], sc.r[k])[:, 0], sc.pilots[k]) for k in range(3)
    )
    assert np.allclose(sc.mean(), ref)
    assert noise_variance(ref, 0.0) == pytest.approx(np.mean(np.abs(ref) ** 2))
    assert np.allclose(noiseless_signal(sc.array, sc.theta, sc.r, sc.gains, sc.pilots), ref / sc.c[:, None])


# -- perturbed elements, small arrays, dense impairments -------------------------------------------------------


def test_offsets_move_the_elements_and_steering_follows():
    a = ULA(8, 5.8e9)
    off = np.linspace(-1e-3, 2e-3, 8)
    b = a.with_offsets(off)
    assert np.allclose(b.positions, a.positions + off) and b.nominal() == a
    assert a.positions is a.nominal_positions  # default path: no copy, no offsets
    th, r = 0.4, 1.3
    y = b.positions
    dist = np.sqrt((r * np.cos(th)) ** 2 + (r * np.sin(th) - y) ** 2)  # independent eq. (1)
    assert np.allclose(steering(b, th, r)[:, 0], np.exp(-1j * b.wavenumber * (dist - r)))
    assert ULA.from_meta(b.describe()).offsets is None  # offsets are not part of the description
    with pytest.raises(ValueError, match="offsets"):
        ULA(8, offsets=(0.0,) * 7)
    with pytest.raises(ValueError, match="offsets"):
        ULA(4, offsets=(0.0, np.nan, 0.0, 0.0))


@pytest.mark.parametrize("n, carrier", [(4, 5.8e9), (9, 1.24e9), (16, 5.8e9), (16, 1.24e9), (32, 5.8e9), (256, 30e9)])
def test_small_array_properties_make_sense(n, carrier):
    a = ULA(n, carrier)
    assert 2 <= a.n_sub <= n
    lam, D = a.wavelength, a.aperture
    r_min, r_max = a.range_window()
    assert r_min == pytest.approx(max(D / 2, 2 * lam))
    assert r_max == pytest.approx(max(2 * D**2 / lam, 4 * r_min))
    assert 0 < r_min < r_max
    assert r_max >= a.rayleigh_distance


def test_range_window_holds_the_paper_targets_and_the_sdr_example():
    r_min, r_max = paper_array(256).range_window()
    assert r_min < 8.0 and 18.0 < r_max  # the three targets of Sec. VI-A
    r_min, r_max = ULA(9, 1.24e9).range_window()  # a 9-element SDR array, 0.5 to 5.5 m
    assert r_min < 0.5 and 5.5 < r_max
    assert paper_array(256).n_sub == 38 and ULA(4, 5.8e9).n_sub == 2


def test_dense_impairments_statistics_and_default_stream():
    from nearfield.impairments import draw_dense_impairments

    rng = np.random.default_rng(0)
    dense = draw_dense_impairments(4000, rng, gain_std_db=1.5, phase_std="uniform", dead_channels=40, position_std=1e-3)
    live = ~dense.dead
    assert dense.dead.sum() == 40 and np.all(dense.gain[dense.dead] == 0)
    g_db = 20 * np.log10(np.abs(dense.gain[live]))
    assert np.std(g_db) == pytest.approx(1.5, rel=0.05) and abs(np.mean(g_db)) < 0.1
    ph = np.angle(dense.gain[live])
    assert abs(np.mean(np.exp(1j * ph))) < 0.05  # uniform phase: mean phasor ~ 0
    assert np.std(dense.offsets) == pytest.approx(1e-3, rel=0.05)
    # paper scenario: the dense draws come last and only when asked for
    s0 = paper_scenario(np.random.default_rng(5), n_antennas=32)
    s1 = paper_scenario(np.random.default_rng(5), n_antennas=32, gain_std_db=1.0, position_std=1e-3)
    assert np.array_equal(s0.pilots, s1.pilots) and np.array_equal(s0.gains, s1.gains)
    assert s0.true_array is None and s1.true_array is not None and s1.array == s0.array
    assert np.allclose(np.abs(s1.c / s0.c), np.abs(s1.c))  # c = c_sparse * gain
    assert not np.allclose(np.abs(s1.c), 1.0)


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"gain_std_db": -1}, "gain_std_db"),
        ({"phase_std": "normal"}, "phase_std"),
        ({"dead_channels": 8}, "dead_channels"),
        ({"dead_channels": [9]}, "dead_channels"),
        ({"position_std": np.inf}, "position_std"),
    ],
)
def test_dense_bad_parameters_named(kw, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        paper_scenario(np.random.default_rng(0), n_antennas=8, **kw)
