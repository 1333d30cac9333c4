"""Received-signal model, paper Sec. II-C, eq. (5), and the default scenario of Sec. VI-A.

``y_t = diag(c) A(theta, r) diag(beta) s_t + n_t``, with ``n_t ~ CN(0, sigma^2 I)``.

SNR definition (docs/paper-errata.md, errata 1; the paper's Sec. VI-A writes ||y_t||^2, which
includes the noise): the *signal* part only,

    SNR = E_t || diag(c) A diag(beta) s_t ||^2 / (N sigma^2),

evaluated on the realised noiseless signal of the frame, so a given ``snr_db`` fixes
sigma^2 exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .array import ULA, paper_array
from .impairments import check_dense_params, dense_is_default, draw_dense_impairments, draw_impairments
from .steering import steering

#: Targets of Sec. VI-A: (theta rad, range m).
PAPER_TARGETS = ((np.pi / 12, 10.0), (-np.pi / 12, 18.0), (-np.pi / 6, 8.0))


def make_pilots(n_targets: int, n_snapshots: int, rng: np.random.Generator) -> np.ndarray:
    """Known probing signals s_{k,t}, shape (K, T), complex128.

    Unit-modulus with i.i.d. uniform phases (constant envelope, p_k = 1), the paper
    leaving them unspecified (docs/paper-errata.md, errata 14).
    """
    return np.exp(2j * np.pi * rng.random((n_targets, n_snapshots)))


def noiseless_signal(array: ULA, theta, r, gains, pilots, c=None, model: str = "exact") -> np.ndarray:
    """Mean of eq. (5), diag(c) A diag(beta) S, shape (N, T), complex128.

    ``theta`` (K,) rad, ``r`` (K,) m, ``gains`` beta (K,), ``pilots`` S (K, T),
    ``c`` (N,) HI vector (ones when omitted).
    """
    A = steering(array, theta, r, model)
    x = A @ (np.asarray(gains)[:, None] * np.asarray(pilots))
    if c is not None:
        x = np.asarray(c)[:, None] * x
    return x


def noise_variance(signal: np.ndarray, snr_db: float) -> float:
    """sigma^2 such that mean_t ||signal_t||^2 / (N sigma^2) = 10^(snr_db/10)."""
    n = signal.shape[0]
    power = np.mean(np.sum(np.abs(signal) ** 2, axis=0)) / n
    return float(power / 10.0 ** (snr_db / 10.0))


def complex_noise(shape, sigma2: float, rng: np.random.Generator) -> np.ndarray:
    """CN(0, sigma2) samples, complex128."""
    scale = np.sqrt(sigma2 / 2.0)
    return scale * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


def draw_reflections(
    rng: np.random.Generator,
    theta: float,
    r: float,
    n: int,
    angle_deg=(20.0, 60.0),
    extra_path_m=(1.0, 4.0),
    loss_db=(8.0, 14.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image sources of ``n`` specular reflections of a transmitter at (theta rad, r m).

    A wall reflection arrives as a coherent copy of the transmitter's waveform from its image
    source: here at an angle ``angle_deg`` (uniform, either side, clipped to +-75 deg) away from
    the direct path, ``extra_path_m`` metres farther and ``loss_db`` weaker, with a uniform
    phase.  A stand-in for the multipath of an indoor recording (our test and benchmark
    scenes; not a room model).

    Returns
    -------
    theta_m, r_m : (n,) rad, m.  rho : (n,) complex amplitudes relative to the direct path.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n: expected a count >= 0 of reflections, got {n!r}")
    for name, (a, b) in (("angle_deg", angle_deg), ("extra_path_m", extra_path_m), ("loss_db", loss_db)):
        if not a <= b:
            raise ValueError(f"{name}: expected (low, high) with low <= high, got {(a, b)!r}")
    n = int(n)
    lo, hi = np.radians(angle_deg)
    theta_m = np.clip(theta + rng.choice([-1, 1], n) * rng.uniform(lo, hi, n), -np.radians(75), np.radians(75))
    r_m = r + rng.uniform(extra_path_m[0], extra_path_m[1], n)
    rho = 10 ** (-rng.uniform(loss_db[0], loss_db[1], n) / 20) * np.exp(2j * np.pi * rng.random(n))
    return theta_m, r_m, rho


def multipath_snapshots(
    array: ULA, c, theta: float, r: float, reflections, T: int, snr_db: float, rng: np.random.Generator
) -> np.ndarray:
    """Snapshots (N, T) of one transmitter plus its reflections (:func:`draw_reflections`).

    ``y_t = diag(c) (a(theta, r) + sum_m rho_m a(theta_m, r_m)) s_t + n_t`` with a unit-modulus
    random-phase waveform s (:func:`make_pilots`) and the SNR of the whole signal (module doc).
    """
    theta_m, r_m, rho = reflections
    c = np.asarray(c)
    if c.shape != (array.n_antennas,):
        raise ValueError(f"c: expected an ({array.n_antennas},) HI vector, got shape {c.shape}")
    a = steering(array, np.r_[theta, theta_m], np.r_[r, r_m]) @ np.r_[1.0, rho]
    s = make_pilots(1, T, rng)[0]
    mu = c[:, None] * np.outer(a, s)
    return mu + complex_noise(mu.shape, noise_variance(mu, snr_db), rng)


@dataclass
class Scenario:
    """Everything that defines a snapshot block: array, targets, gains, pilots, HI, SNR.

    Attributes
    ----------
    array : ULA
    theta, r : ndarray, shape (K,)
        True angles (rad, from broadside) and ranges (m, from the array centre).
    gains : ndarray, shape (K,), complex
        Channel gains beta.
    pilots : ndarray, shape (K, T), complex
        Probing signals S.
    c : ndarray, shape (N,), complex
        HI vector (unit modulus in the paper; any complex value with dense impairments,
        0 on a dead channel).
    snr_db : float
        SNR as defined in the module docstring.
    true_array : ULA, optional
        The array that generates the data when it differs from ``array`` (element position
        errors: ``array.with_offsets(...)``); ``array`` stays the nominal geometry the
        estimators assume.  ``None``: the same as ``array``.
    """

    array: ULA
    theta: np.ndarray
    r: np.ndarray
    gains: np.ndarray
    pilots: np.ndarray
    c: np.ndarray
    snr_db: float
    true_array: ULA | None = None
    sigma2: float = field(init=False)

    def __post_init__(self):
        self.theta = np.asarray(self.theta, float)
        self.r = np.asarray(self.r, float)
        self.sigma2 = noise_variance(self.mean(), self.snr_db)

    @property
    def faulty(self) -> np.ndarray:
        """Indices of faulty antennas (c_n != 1), sorted."""
        return np.flatnonzero(np.abs(self.c - 1.0) > 0)

    def mean(self) -> np.ndarray:
        """Noiseless received signal (N, T) on the exact model, on the true element positions."""
        return noiseless_signal(self.true_array or self.array, self.theta, self.r, self.gains, self.pilots, self.c)

    def sample(self, rng: np.random.Generator, dtype=np.complex64) -> np.ndarray:
        """One realisation of Y (N, T) of eq. (5)."""
        mu = self.mean()
        return (mu + complex_noise(mu.shape, self.sigma2, rng)).astype(dtype, copy=False)


def paper_scenario(
    rng: np.random.Generator,
    n_antennas: int = 256,
    snr_db: float = 20.0,
    p_fault: float = 0.02,
    n_snapshots: int = 100,
    targets=PAPER_TARGETS,
    wavelength_m: float | None = 0.01,
    *,
    carrier_hz: float = 30.0e9,
    gain_std_db: float = 0.0,
    phase_std=0.0,
    dead_channels=None,
    position_std: float = 0.0,
) -> Scenario:
    """The default scenario of Sec. VI-A with fresh gains, pilots and HI vector.

    Gains are unit-modulus with uniform phase (unspecified in the paper).

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws, in order: sparse faults (eq. 4), gains, pilots, then the dense impairments
        (only when one of their parameters is set, so the default stream is the paper's).
    n_antennas, snr_db, p_fault, n_snapshots, targets
        N, SNR in dB (module docstring), fault probability, T, ((theta rad, r m), ...).
    wavelength_m : float or None
        Wavelength in metres; ``None``: ``c0 / carrier_hz``.
    carrier_hz : float
        Carrier in Hz (used when ``wavelength_m`` is None).
    gain_std_db, phase_std, dead_channels, position_std
        Dense impairments of real receivers, see
        :func:`nearfield.impairments.draw_dense_impairments`: per-channel gain std (dB),
        phase std (rad, or ``"uniform"``), dead channels (count or indices), element
        position std along the axis (m).  The HI vector is the sparse one times the dense
        gains; with ``position_std > 0`` the data come from ``Scenario.true_array``.
    """
    array = (
        paper_array(n_antennas)
        if wavelength_m == 0.01
        else ULA(n_antennas, carrier_hz=carrier_hz, wavelength_m=wavelength_m)
    )
    check_dense_params(n_antennas, gain_std_db, phase_std, dead_channels, position_std)
    targets = np.asarray(targets, float)
    k = len(targets)
    c, _ = draw_impairments(n_antennas, p_fault, rng)
    gains = np.exp(2j * np.pi * rng.random(k))
    pilots = make_pilots(k, n_snapshots, rng)
    true_array = None
    if not dense_is_default(gain_std_db, phase_std, dead_channels, position_std):
        dense = draw_dense_impairments(n_antennas, rng, gain_std_db, phase_std, dead_channels, position_std)
        c = c * dense.gain
        if dense.offsets is not None:
            true_array = array.with_offsets(dense.offsets)
    return Scenario(array, targets[:, 0], targets[:, 1], gains, pilots, c, snr_db, true_array)
