"""MUSIC kernels with physics oracles: a noise-free covariance gives exact angles."""

import numpy as np
import pytest

from nearfield.music import (
    leading_subspace,
    mdl_order,
    music_denominator,
    music_spectrum,
    refine_peak,
    signal_subspace,
    top_peaks,
)
from nearfield.steering import far_field_steering


def _ff_cov(angles, n=24, sigma2=0.0, lam=0.01):
    pos = (np.arange(n) - (n - 1) / 2) * lam / 2
    B = far_field_steering(pos, lam, angles)
    return B @ B.conj().T + sigma2 * np.eye(n), pos


def test_noise_free_far_field_covariance_gives_exact_angles():
    truth = np.array([-0.41, 0.05, 0.33])
    R, pos = _ff_cov(truth)
    U, w = signal_subspace(R, 3)
    assert U.shape == (24, 3) and np.all(np.diff(w) <= 0)
    u = np.linspace(-1, 1, 400)
    spec = music_spectrum(U, far_field_steering(pos, 0.01, np.arcsin(u)))
    peaks = top_peaks(spec, 3)

    def cost(x):
        return music_denominator(U, far_field_steering(pos, 0.01, np.arcsin(x)))

    est = np.sort(np.arcsin([refine_peak(cost, u, i) for i in peaks]))
    assert np.allclose(est, truth, atol=1e-6)


def test_denominator_equals_noise_subspace_projection():
    R, pos = _ff_cov(np.array([0.2, -0.3]), n=12, sigma2=0.1)
    w, V = np.linalg.eigh(R)
    Un = V[:, :-2]
    B = far_field_steering(pos, 0.01, np.linspace(-1, 1, 7))
    U, _ = signal_subspace(R, 2)
    assert np.allclose(music_denominator(U, B), np.sum(np.abs(Un.conj().T @ B) ** 2, axis=0))


def test_top_peaks_orders_by_height_and_handles_edges():
    s = np.array([0.0, 3.0, 0.0, 5.0, 1.0, 2.0, 0.5])
    assert list(top_peaks(s, 2)) == [3, 1]
    assert list(top_peaks(np.array([5.0, 4.0, 3.0]), 1)) == [0]


@pytest.mark.parametrize("k", [1, 2, 4])
def test_mdl_finds_the_number_of_sources(k):
    rng = np.random.default_rng(k)
    n, t = 20, 100
    angles = np.linspace(-0.6, 0.6, k)
    pos = (np.arange(n) - (n - 1) / 2) * 0.005
    B = far_field_steering(pos, 0.01, angles)
    S = np.exp(2j * np.pi * rng.random((k, t)))
    noise = (rng.standard_normal((n, t)) + 1j * rng.standard_normal((n, t))) / np.sqrt(2)
    Y = B @ S + noise
    lam = np.linalg.eigvalsh(Y @ Y.conj().T / t)
    assert mdl_order(lam, t) == k
    assert mdl_order(np.linalg.eigvalsh(noise @ noise.conj().T / t), t) == 0


def test_signal_subspace_rejects_bad_order():
    with pytest.raises(ValueError, match="n_targets"):
        signal_subspace(np.eye(4), 4)


def test_warm_started_subspace_equals_eigh():
    rng = np.random.default_rng(3)
    R, _ = _ff_cov(np.array([-0.3, 0.1, 0.4]), n=64, sigma2=0.5)
    U_ref, w_ref = signal_subspace(R, 3)
    U0 = np.linalg.qr(U_ref + 0.05 * (rng.standard_normal(U_ref.shape) + 1j * rng.standard_normal(U_ref.shape)))[0]
    U, w = leading_subspace(R, 3, U0)
    assert np.allclose(w, w_ref, rtol=1e-6)
    assert np.allclose(U @ U.conj().T, U_ref @ U_ref.conj().T, atol=1e-4)  # same projector
    U_bad, w_bad = leading_subspace(R, 3, np.eye(64, 3, dtype=complex) * 0 + np.eye(64, 3))  # poor start: falls back
    assert np.allclose(w_bad, w_ref)
