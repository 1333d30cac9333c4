"""Static hardware-impairment (HI) model, paper Sec. II-B, eq. (4).

Each antenna is faulty independently with probability ``p_fault`` (Bernoulli); a faulty
antenna multiplies its signal by ``c_n = exp(j zeta_n)`` with zeta_n ~ U(0, 2 pi);
an intact one has ``c_n = 1``.
"""
from __future__ import annotations

import numpy as np


def draw_impairments(n_antennas: int, p_fault: float, rng: np.random.Generator):
    """Draw the HI vector c of eq. (4).

    Parameters
    ----------
    n_antennas : int
        N.
    p_fault : float
        Fault probability in [0, 1].
    rng : numpy.random.Generator
        The only source of randomness.

    Returns
    -------
    c : ndarray, shape (N,), complex128
        HI coefficients (1 on intact antennas, unit-modulus on faulty ones).
    faulty : ndarray, shape (N,), bool
        The fault mask rho_n.
    """
    if not 0.0 <= p_fault <= 1.0:
        raise ValueError(f"p_fault: expected a probability in [0, 1], got {p_fault!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng: expected a numpy.random.Generator")
    faulty = rng.random(n_antennas) < p_fault
    zeta = rng.uniform(0.0, 2.0 * np.pi, n_antennas)
    c = np.where(faulty, np.exp(1j * zeta), 1.0 + 0.0j)
    return c, faulty


def hi_nmse(c_hat: np.ndarray, c: np.ndarray) -> float:
    """NMSE of an HI-vector estimate, ||c_hat - c||^2 / ||c||^2 (Sec. VI-C, Fig. 10)."""
    c = np.asarray(c)
    return float(np.sum(np.abs(np.asarray(c_hat) - c) ** 2) / np.sum(np.abs(c) ** 2))
