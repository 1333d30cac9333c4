"""Tests of nearfield.bounds: CRB, pseudo-true parameters, MCRB, LB (paper Sec. V)."""

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.stats import chi2

from nearfield.array import ULA, paper_array
from nearfield.bounds import (
    c_matrix_and_j_tilde,
    crb,
    fim,
    jacobian,
    mean_model,
    misspecified_bounds,
    pack,
    pseudo_true,
    root_bounds,
    unpack,
)
from nearfield.scenario import complex_noise, make_pilots, noise_variance, paper_scenario


def small_case(seed=0, n=16, t=8, faulty=(3, 11)):
    """A small 2-target near-field scenario (N=16, lambda=1 cm) with two faulty antennas."""
    rng = np.random.default_rng(seed)
    array = ULA(n, wavelength_m=0.01)
    theta = np.array([0.3, -0.2])
    r = np.array([0.25, 0.4])  # Z_Fres ~ 0.08 m, Z_Rayl ~ 1.1 m for N = 16
    gains = np.exp(2j * np.pi * rng.random(2)) * np.array([1.0, 0.7])
    S = make_pilots(2, t, rng)
    c = np.ones(n, complex)
    c[list(faulty)] = np.exp(1j * np.array([2.0, -2.5]))
    return array, theta, r, gains, S, c


def fd_jacobian(array, eta, S, c, h=1e-6):
    cols = []
    for i in range(eta.size):
        step = h * max(1.0, abs(eta[i]))
        ep, em = eta.copy(), eta.copy()
        ep[i] += step
        em[i] -= step
        mp = mean_model(array, *unpack(ep), S, c).ravel()
        mm = mean_model(array, *unpack(em), S, c).ravel()
        cols.append((mp - mm) / (2 * step))
    return np.stack(cols, axis=1)


def test_jacobian_and_fim_match_finite_differences():
    array, theta, r, gains, S, c = small_case()
    eta = pack(theta, r, gains)
    D = jacobian(array, theta, r, gains, S, c)
    D_fd = fd_jacobian(array, eta, S, c)
    np.testing.assert_allclose(D, D_fd, rtol=0, atol=1e-6 * np.abs(D).max())
    sigma2 = 0.05
    F = fim(array, theta, r, gains, S, sigma2, c)
    F_fd = (2.0 / sigma2) * np.real(D_fd.conj().T @ D_fd)
    np.testing.assert_allclose(F, F_fd, rtol=1e-6, atol=1e-8 * np.abs(F).max())
    # unit-modulus HI known: the FIM equals the fault-free one
    np.testing.assert_allclose(
        F, fim(array, theta, r, gains, S, sigma2, None), rtol=1e-10, atol=1e-12 * np.abs(F).max()
    )


def test_c_and_j_tilde_match_finite_differences_of_expected_loglik():
    """C = Hessian and J~ = grad grad^T + (2/s2) Re D^H D of E_true[ln p~(y|eta)] (CN noise)."""
    array, theta, r, gains, S, c = small_case(seed=1)
    sigma2 = 0.1
    mu_true = mean_model(array, theta, r, gains, S, c)
    # evaluate away from the pseudo-true point so the score-mean term of J~ is non-zero
    eta = pack(theta + 0.01, r * 1.02, gains * 1.05)

    def L(e):  # E_true[ln p~(y | e)] up to a constant
        return -np.sum(np.abs(mu_true - mean_model(array, *unpack(e), S)) ** 2) / sigma2

    n = eta.size
    h = 1e-4 * np.maximum(1.0, np.abs(eta))
    grad = np.zeros(n)
    hess = np.zeros((n, n))
    for i in range(n):
        ei = np.zeros(n)
        ei[i] = h[i]
        grad[i] = (L(eta + ei) - L(eta - ei)) / (2 * h[i])
        for j in range(n):
            ej = np.zeros(n)
            ej[j] = h[j]
            hess[i, j] = (L(eta + ei + ej) - L(eta + ei - ej) - L(eta - ei + ej) + L(eta - ei - ej)) / (4 * h[i] * h[j])
    C, Jt = c_matrix_and_j_tilde(array, eta, mu_true, S, sigma2)
    np.testing.assert_allclose(C, hess, rtol=0, atol=2e-5 * np.abs(C).max())
    D_fd = fd_jacobian(array, eta, S, None)
    Jt_fd = np.outer(grad, grad) + (2.0 / sigma2) * np.real(D_fd.conj().T @ D_fd)
    np.testing.assert_allclose(Jt, Jt_fd, rtol=0, atol=1e-5 * np.abs(Jt).max())


def test_j_tilde_is_the_score_covariance_for_circular_noise():
    """Monte Carlo E[score score^T] under CN(0, s2) noise equals J~ (checks the factor 2/s2)."""
    array, theta, r, gains, S, c = small_case(seed=2, n=8, t=4, faulty=(2, 6))
    sigma2 = 0.2
    mu_true = mean_model(array, theta, r, gains, S, c)
    eta = pack(theta + 0.005, r, gains)
    D = jacobian(array, *unpack(eta), S)
    mu = mean_model(array, *unpack(eta), S)
    rng = np.random.default_rng(7)
    m = 40000
    noise = complex_noise((m, mu.size), sigma2, rng)
    resid = (mu_true - mu).ravel()[None, :] + noise
    scores = (2.0 / sigma2) * np.real(resid @ D.conj())  # (m, 4K)
    emp = scores.T @ scores / m
    _, Jt = c_matrix_and_j_tilde(array, eta, mu_true, S, sigma2)
    d = np.sqrt(np.diag(Jt))
    # correlation-scale error of a sample second moment with m draws: ~ sqrt(2/m) ~ 0.007
    assert np.max(np.abs(emp - Jt) / np.outer(d, d)) < 0.04


def test_no_faults_gives_mcrb_equal_crb_and_zero_bias():
    sc = paper_scenario(
        np.random.default_rng(3),
        n_antennas=64,
        p_fault=0.0,
        n_snapshots=20,
        snr_db=10,
        targets=((0.26, 3.0), (-0.4, 5.0)),
    )
    b = misspecified_bounds(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.sigma2, sc.c)
    np.testing.assert_allclose(b.eta_pt, b.eta_true, rtol=0, atol=1e-9)
    assert np.max(np.abs(b.bias)) < 1e-16
    np.testing.assert_allclose(b.mcrb, b.crb, rtol=1e-6, atol=1e-9 * np.max(np.abs(b.crb)))
    np.testing.assert_allclose(b.lb, b.crb, rtol=1e-6, atol=1e-9 * np.max(np.abs(b.crb)))


def test_crb_falls_10_db_per_decade_of_snr_and_bias_does_not():
    sc = paper_scenario(
        np.random.default_rng(4), n_antennas=64, p_fault=0.05, n_snapshots=20, targets=((0.26, 3.0), (-0.4, 5.0))
    )
    assert sc.faulty.size > 0
    mu = sc.mean()
    pt = pseudo_true(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.c)
    rb = {}
    for snr in (10.0, 20.0, 30.0):
        s2 = noise_variance(mu, snr)
        rb[snr] = root_bounds(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, s2, sc.c, pseudo=pt)
    for key in ("crb_angle", "crb_range", "mcrb_angle", "mcrb_range"):
        for lo, hi in ((10.0, 20.0), (20.0, 30.0)):
            assert rb[lo][key] / rb[hi][key] == pytest.approx(np.sqrt(10.0), rel=1e-6), key
    for key in ("bias_angle", "bias_range"):
        assert rb[10.0][key] == rb[30.0][key] > 0
    for snr in rb:  # LB = bias + MCRB on the diagonal
        for dim in ("angle", "range"):
            assert rb[snr][f"lb_{dim}"] ** 2 == pytest.approx(
                rb[snr][f"bias_{dim}"] ** 2 + rb[snr][f"mcrb_{dim}"] ** 2, rel=1e-9
            )


def test_pseudo_true_is_a_stationary_minimum_below_the_truth():
    sc = paper_scenario(np.random.default_rng(5), n_antennas=128, p_fault=0.04, n_snapshots=30)
    assert sc.faulty.size > 0
    pt = pseudo_true(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.c)
    assert pt.cost < pt.cost_truth
    assert pt.grad_norm < 1e-7
    # all five starts reached the same point
    K = sc.theta.size
    assert np.all(pt.spread[2 * K : 3 * K] < 1e-7) and np.all(pt.spread[3 * K :] < 1e-5 * sc.r)
    # independent check: perturbing the solution in any direction raises the cost
    mu_true = sc.mean()

    def cost(e):
        return np.sum(np.abs(mu_true - mean_model(sc.array, *unpack(e), sc.pilots)) ** 2)

    rng = np.random.default_rng(0)
    scale = np.concatenate([np.full(2 * K, 1e-3), np.full(K, 1e-5), 1e-3 * sc.r])
    for _ in range(20):
        assert cost(pt.eta + scale * rng.standard_normal(4 * K)) > pt.cost
    # and the score mean vanishes there, so J~ is the assumed FIM
    C, Jt = c_matrix_and_j_tilde(sc.array, pt.eta, mu_true, sc.pilots, 1.0)
    F = fim(sc.array, pt.theta, pt.r, pt.gains, sc.pilots, 1.0)
    np.testing.assert_allclose(Jt, F, rtol=1e-6, atol=1e-9 * np.abs(F).max())


def test_root_bounds_average_over_targets():
    sc = paper_scenario(
        np.random.default_rng(6),
        n_antennas=64,
        p_fault=0.05,
        n_snapshots=20,
        targets=((0.26, 3.0), (-0.4, 5.0), (0.6, 2.5)),
    )
    rb = root_bounds(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.sigma2, sc.c)
    assert set(rb) == {
        "crb_angle",
        "crb_range",
        "lb_angle",
        "lb_range",
        "mcrb_angle",
        "mcrb_range",
        "bias_angle",
        "bias_range",
    }
    C = crb(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.sigma2, sc.c)
    assert rb["crb_angle"] == pytest.approx(np.sqrt(np.mean(np.diag(C)[6:9])), rel=1e-12)
    assert rb["crb_range"] == pytest.approx(np.sqrt(np.mean(np.diag(C)[9:12])), rel=1e-12)


def test_bad_inputs_are_named():
    array = paper_array(16)
    with pytest.raises(ValueError, match="c: expected shape"):
        fim(array, [0.1], [1.0], [1.0], np.ones((1, 4)), 1.0, c=np.ones(5))
    with pytest.raises(ValueError, match="sigma2"):
        fim(array, [0.1], [1.0], [1.0], np.ones((1, 4)), 0.0)
    with pytest.raises(ValueError, match="theta, r, gains, pilots"):
        crb(array, [0.1, 0.2], [1.0], [1.0], np.ones((1, 4)), 1.0)


def test_crb_matches_ml_spread_for_one_target():
    """ML (least squares from the truth) at high SNR is efficient: its MSE matches the CRB.

    With n trials of an unbiased Gaussian estimator, n * MSE / CRB ~ chi2(n); we accept
    the 0.1 % - 99.9 % band of that law for the angle and the range.
    """
    rng = np.random.default_rng(11)
    array = ULA(64, wavelength_m=0.01)  # Z_Fres ~ 0.88 m, Z_Rayl ~ 20 m
    theta, r = np.array([0.3]), np.array([2.0])
    gains = np.array([np.exp(0.7j)])
    S = make_pilots(1, 20, rng)
    mu = mean_model(array, theta, r, gains, S)
    sigma2 = noise_variance(mu, 10.0)
    bound = np.diag(crb(array, theta, r, gains, S, sigma2))
    eta0 = pack(theta, r, gains)

    def fun(e, y):
        d = (y - mean_model(array, *unpack(e), S)).ravel()
        return np.concatenate([d.real, d.imag])

    def jac(e, y):
        D = jacobian(array, *unpack(e), S)
        return -np.concatenate([D.real, D.imag])

    n = 300
    est = np.empty((n, 4))
    for i in range(n):
        y = mu + complex_noise(mu.shape, sigma2, rng)
        est[i] = least_squares(fun, eta0, jac=jac, args=(y,), method="lm", x_scale="jac").x
    mse = np.mean((est - eta0) ** 2, axis=0)
    lo, hi = chi2.ppf([0.001, 0.999], n) / n
    for i in (2, 3):  # theta, r
        assert lo < mse[i] / bound[i] < hi, (i, mse[i] / bound[i])


def test_pseudo_true_is_the_global_minimum_along_each_target():
    """N = 64 (weak range information): the faults bias the range by metres; a coarse scan of
    each target's (theta, r) over a wide window (others at the solution, gains by LS) finds
    no point with a lower cost than the pseudo-true solution."""
    from nearfield.ml import ls_gains
    from nearfield.steering import steering

    sc = paper_scenario(np.random.default_rng(1), n_antennas=64, p_fault=0.02, n_snapshots=20)
    assert sc.faulty.size > 0
    pt = pseudo_true(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.c)
    assert np.max(np.abs(pt.r - sc.r)) > 1.0  # a large bias: metres
    mu = sc.mean()
    for k in range(sc.theta.size):
        for th in pt.theta[k] + np.linspace(-0.05, 0.05, 21):
            for r in np.geomspace(sc.array.fresnel_distance, sc.array.rayleigh_distance, 40):
                t2, r2 = pt.theta.copy(), pt.r.copy()
                t2[k], r2[k] = th, r
                A = steering(sc.array, t2, r2)
                g = ls_gains(A, sc.pilots, mu)
                assert np.sum(np.abs(mu - A @ (g[:, None] * sc.pilots)) ** 2) >= pt.cost * (1 - 1e-9)
