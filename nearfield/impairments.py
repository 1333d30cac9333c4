"""Static hardware-impairment (HI) model, paper Sec. II-B, eq. (4).

Each antenna is faulty independently with probability ``p_fault`` (Bernoulli); a faulty
antenna multiplies its signal by ``c_n = exp(j zeta_n)`` with zeta_n ~ U(0, 2 pi);
an intact one has ``c_n = 1``.

Beyond the paper, :func:`draw_dense_impairments` adds what real receivers do: a complex
gain on every channel (``gain_std_db``, ``phase_std``), dead channels and element position
errors.  The HI vector is then ``c = c_sparse * gain``, complex with ``|c_n| != 1`` in general
(0 on a dead channel), and the signal model stays eq. (5): ``Y = diag(c) A diag(beta) S + N``
with white noise of one variance on every channel (noise after the gain; a dead channel
receives noise only).
"""

from __future__ import annotations

from dataclasses import dataclass

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


# -- dense impairments of real receivers (beyond the paper) -------------------------------------------------
#
# A real coherent receiver has a complex gain on *every* channel (cable lengths, LNA and
# mixer spread, ADC clock skew), sometimes a dead channel, and elements that are not
# exactly where the drawing says.  These draws come *after* the paper's sparse faults in
# every caller, and only when a parameter is set, so the paper's scenario keeps its random
# stream bit for bit.


@dataclass(frozen=True)
class DenseImpairments:
    """A draw of :func:`draw_dense_impairments`.

    Attributes
    ----------
    gain : ndarray, shape (N,), complex128
        Per-channel complex gain ``10^(g_n / 20) exp(j phi_n)`` (0 on dead channels); the
        full HI vector is the paper's sparse ``c`` (eq. 4) times this.
    dead : ndarray, shape (N,), bool
        Dead channels (they receive noise only).
    offsets : ndarray, shape (N,), float, or None
        Element displacement along the array axis in metres (``None`` when
        ``position_std`` is 0).
    """

    gain: np.ndarray
    dead: np.ndarray
    offsets: np.ndarray | None


def check_dense_params(
    n_antennas: int, gain_std_db: float = 0.0, phase_std=0.0, dead_channels=None, position_std: float = 0.0
) -> None:
    """Validate the dense-impairment parameters; ``ValueError`` naming the parameter.

    See :func:`draw_dense_impairments` for their meaning.
    """
    if isinstance(gain_std_db, bool) or not (np.isfinite(gain_std_db) and gain_std_db >= 0):
        raise ValueError(f"gain_std_db: expected a standard deviation >= 0 in dB, got {gain_std_db!r}")
    if isinstance(phase_std, str):
        if phase_std != "uniform":
            raise ValueError(f"phase_std: expected a standard deviation >= 0 in rad or 'uniform', got {phase_std!r}")
    elif isinstance(phase_std, bool) or not (np.isfinite(phase_std) and phase_std >= 0):
        raise ValueError(f"phase_std: expected a standard deviation >= 0 in rad or 'uniform', got {phase_std!r}")
    if isinstance(position_std, bool) or not (np.isfinite(position_std) and position_std >= 0):
        raise ValueError(f"position_std: expected a standard deviation >= 0 in metres, got {position_std!r}")
    if dead_channels is None:
        return
    if isinstance(dead_channels, bool):
        raise ValueError(f"dead_channels: expected a count or a list of 0-based indices, got {dead_channels!r}")
    if isinstance(dead_channels, (int, np.integer)):
        if not 0 <= dead_channels < n_antennas:
            raise ValueError(f"dead_channels: expected a count in [0, {n_antennas - 1}], got {dead_channels}")
        return
    try:
        idx = [int(i) for i in dead_channels]
    except (TypeError, ValueError):
        raise ValueError(
            f"dead_channels: expected a count or a list of 0-based indices, got {dead_channels!r}"
        ) from None
    if any(i != j for i, j in zip(idx, dead_channels)) or any(not 0 <= i < n_antennas for i in idx):
        raise ValueError(f"dead_channels: expected integer indices in 0..{n_antennas - 1}, got {dead_channels!r}")
    if len(set(idx)) != len(idx) or len(idx) >= n_antennas:
        raise ValueError(f"dead_channels: expected distinct indices leaving a live channel, got {dead_channels!r}")


def dense_is_default(gain_std_db: float = 0.0, phase_std=0.0, dead_channels=None, position_std: float = 0.0) -> bool:
    """True when no dense impairment is asked for (the paper's scenario)."""
    no_dead = (
        dead_channels is None
        or (not isinstance(dead_channels, (int, np.integer)) and len(dead_channels) == 0)
        or (isinstance(dead_channels, (int, np.integer)) and dead_channels == 0)
    )
    return gain_std_db == 0 and (not isinstance(phase_std, str) and phase_std == 0) and no_dead and position_std == 0


def draw_dense_impairments(
    n_antennas: int,
    rng: np.random.Generator,
    gain_std_db: float = 0.0,
    phase_std=0.0,
    dead_channels=None,
    position_std: float = 0.0,
) -> DenseImpairments:
    """Draw dense per-channel impairments of a real array.

    Parameters
    ----------
    n_antennas : int
        N.
    rng : numpy.random.Generator
        Source of randomness; draws happen in this order and only for the parameters that
        are set: gains (N normals), phases (N normals or uniforms), dead channels (when
        given as a count), position offsets (N normals).
    gain_std_db : float
        Standard deviation of the per-channel gain in dB: ``g_n ~ N(0, gain_std_db^2)``,
        amplitude ``10^(g_n / 20)`` (log-normal; 1.5 dB gives channels several dB apart).
    phase_std : float or "uniform"
        Standard deviation of the per-channel phase in rad, ``phi_n ~ N(0, phase_std^2)``;
        ``"uniform"``: ``phi_n ~ U(0, 2 pi)`` (an uncalibrated receiver).
    dead_channels : int or sequence of int, optional
        Dead channels: a count (that many distinct channels drawn at random) or a list of
        0-based indices.  A dead channel has gain 0: it receives noise only.
    position_std : float
        Standard deviation (m) of each element's displacement along the array axis;
        the data are generated on the displaced elements while estimators assume the
        nominal ULA (:meth:`nearfield.array.ULA.with_offsets`).

    Returns
    -------
    DenseImpairments
        ``gain`` (N,) complex, ``dead`` (N,) bool, ``offsets`` (N,) or None.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng: expected a numpy.random.Generator")
    check_dense_params(n_antennas, gain_std_db, phase_std, dead_channels, position_std)
    amp = np.ones(n_antennas)
    if gain_std_db > 0:
        amp = 10.0 ** (gain_std_db * rng.standard_normal(n_antennas) / 20.0)
    phi = np.zeros(n_antennas)
    if isinstance(phase_std, str):
        phi = rng.uniform(0.0, 2.0 * np.pi, n_antennas)
    elif phase_std > 0:
        phi = phase_std * rng.standard_normal(n_antennas)
    dead = np.zeros(n_antennas, dtype=bool)
    if isinstance(dead_channels, (int, np.integer)):
        if dead_channels > 0:
            dead[rng.choice(n_antennas, size=int(dead_channels), replace=False)] = True
    elif dead_channels is not None:
        dead[np.asarray(list(dead_channels), dtype=int)] = True
    offsets = position_std * rng.standard_normal(n_antennas) if position_std > 0 else None
    gain = np.where(dead, 0.0, amp * np.exp(1j * phi))
    return DenseImpairments(gain=gain, dead=dead, offsets=offsets)
