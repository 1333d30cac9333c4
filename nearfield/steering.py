"""Near-field and far-field steering vectors and their derivatives (Sec. II-A).

Two models of the phase psi_n(theta, r) of ``[a(theta, r)]_n = exp(j psi_n)``:

* ``"exact"`` -- spherical wavefront, eq. (1):
  ``psi_n = -k (r_n - r)``, ``r_n = sqrt(r^2 + l_n^2 - 2 l_n r sin(theta))``.
  Synthetic data is always generated with this model.
* ``"fresnel"`` -- second-order (Fresnel) approximation, eq. (2):
  ``psi_n = k (l_n sin(theta) - l_n^2 cos^2(theta) / (2 r))``.
  Estimators that need the decoupled form (the anti-diagonal MUSIC) assume it.

The sign convention is the paper's eq. (1): a positive angle (target at +y) gives a
phase that grows along +y.  Steering vectors are unnormalised (unit-modulus entries).

The derivatives are our own (paper Appendix B carries 1/sqrt(N) factors that do not
belong to eq. (1), misses a square, and differentiates only the Fresnel phase):
with ``a = exp(j psi)``,

    da/dx      = j psi_x a
    d2a/dx dy  = (j psi_xy - psi_x psi_y) a

and, for the exact model, with s = sin(theta), c = cos(theta):

    dr_n/dtheta   = -l r c / r_n
    dr_n/dr       = (r - l s) / r_n
    d2r_n/dtheta2 = l r s / r_n - (l r c)^2 / r_n^3
    d2r_n/dr2     = l^2 c^2 / r_n^3
    d2r_n/dtheta dr = -l c / r_n + l r c (r - l s) / r_n^3

so that psi_x = -k dr_n/dx (and psi_r = -k (dr_n/dr - 1)).  Tests compare all of them
with finite differences.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .array import ULA

MODELS = ("exact", "fresnel")


def _grid(array: ULA, theta, r):
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    r = np.atleast_1d(np.asarray(r, dtype=float))
    theta, r = np.broadcast_arrays(theta, r)
    ell = array.positions[:, None]
    return ell, theta.ravel()[None, :], r.ravel()[None, :]


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"model: expected one of {MODELS}, got {model!r}")


def phase(array: ULA, theta, r, model: str = "exact") -> np.ndarray:
    """Phase psi_n(theta, r) of the steering vector, shape (N, P), radians.

    ``theta`` (rad) and ``r`` (m) broadcast to P points.
    """
    _check_model(model)
    ell, th, rr = _grid(array, theta, r)
    k = array.wavenumber
    if model == "exact":
        rn = np.sqrt(rr**2 + ell**2 - 2.0 * ell * rr * np.sin(th))
        return -k * (rn - rr)
    c = np.cos(th)
    return k * (ell * np.sin(th) - ell**2 * c**2 / (2.0 * rr))


def cis(psi: np.ndarray, dtype=np.complex128) -> np.ndarray:
    """exp(j psi) computed as cos + j sin into one buffer (about 2x faster than
    ``np.exp(1j * psi)``, which forms a complex argument first)."""
    out = np.empty(np.shape(psi), dtype)
    np.cos(psi, out=out.real)
    np.sin(psi, out=out.imag)
    return out


def steering(array: ULA, theta, r, model: str = "exact", dtype=np.complex128) -> np.ndarray:
    """Near-field steering matrix A = [a(theta_1, r_1), ...], shape (N, P).

    Eq. (1) for ``model="exact"``, eq. (2) for ``model="fresnel"``; the phase is always
    computed in float64, ``dtype`` (complex128 or complex64) is the output's.
    """
    return cis(phase(array, theta, r, model), dtype)


class PhaseDerivatives(NamedTuple):
    """psi and its partial derivatives, each (N, P)."""

    psi: np.ndarray
    t: np.ndarray
    r: np.ndarray
    tt: np.ndarray
    tr: np.ndarray
    rr: np.ndarray


def phase_derivatives(array: ULA, theta, r, model: str = "exact") -> PhaseDerivatives:
    """psi, d psi/d theta, d psi/d r and the second derivatives, each (N, P)."""
    _check_model(model)
    ell, th, rr = _grid(array, theta, r)
    k = array.wavenumber
    s, c = np.sin(th), np.cos(th)
    if model == "exact":
        rn = np.sqrt(rr**2 + ell**2 - 2.0 * ell * rr * s)
        rn3 = rn**3
        d_t = -ell * rr * c / rn
        d_r = (rr - ell * s) / rn
        d_tt = ell * rr * s / rn - (ell * rr * c) ** 2 / rn3
        d_rr = (ell * c) ** 2 / rn3
        d_tr = -ell * c / rn + ell * rr * c * (rr - ell * s) / rn3
        return PhaseDerivatives(-k * (rn - rr), -k * d_t, -k * (d_r - 1.0), -k * d_tt, -k * d_tr, -k * d_rr)
    l2 = ell**2
    psi = k * (ell * s - l2 * c**2 / (2.0 * rr))
    p_t = k * (ell * c + l2 * c * s / rr)
    p_r = k * l2 * c**2 / (2.0 * rr**2)
    p_tt = k * (-ell * s + l2 * (c**2 - s**2) / rr)
    p_tr = -k * l2 * c * s / rr**2
    p_rr = -k * l2 * c**2 / rr**3
    return PhaseDerivatives(psi, p_t, p_r, p_tt, p_tr, p_rr)


class SteeringDerivatives(NamedTuple):
    """a and its partial derivatives in theta and r, each (N, P) complex."""

    a: np.ndarray
    a_t: np.ndarray
    a_r: np.ndarray
    a_tt: np.ndarray
    a_tr: np.ndarray
    a_rr: np.ndarray


def steering_derivatives(array: ULA, theta, r, model: str = "exact") -> SteeringDerivatives:
    """a(theta, r) with its first and second derivatives (see module docstring)."""
    p = phase_derivatives(array, theta, r, model)
    a = cis(p.psi)
    return SteeringDerivatives(
        a,
        1j * p.t * a,
        1j * p.r * a,
        (1j * p.tt - p.t**2) * a,
        (1j * p.tr - p.t * p.r) * a,
        (1j * p.rr - p.r**2) * a,
    )


def far_field_steering(positions: np.ndarray, wavelength: float, theta) -> np.ndarray:
    """Far-field steering matrix b(theta) for antennas at ``positions`` (m), shape (M, P).

    ``[b(theta)]_m = exp(j 2 pi / lambda * p_m sin(theta))`` -- the sign agrees with
    eq. (2) (docs/paper-errata.md, errata 2: eq. (14) as printed mirrors every angle).
    ``positions`` are measured from the subarray's reference point (its centre).
    """
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    k = 2.0 * np.pi / wavelength
    return cis(k * np.outer(np.asarray(positions, float), np.sin(theta)))
