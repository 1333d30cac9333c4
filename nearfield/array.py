"""Uniform linear array (ULA) geometry, paper Sec. II-A.

The array lies on the y-axis, centred at the origin; antenna n (1-based) sits at
``y = l_n = (2n - N - 1) d / 2``.  Angles are measured from broadside (the x-axis,
the array normal) and ranges from the array centre.  Units: metres, hertz, radians.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

SPEED_OF_LIGHT = 299_792_458.0  # m/s


@dataclass(frozen=True)
class ULA:
    """A centred uniform linear array.

    Parameters
    ----------
    n_antennas : int
        Number of antennas N (>= 2).
    carrier_hz : float
        Carrier frequency f in Hz; the wavelength is ``c0 / f``.
    spacing : float, optional
        Inter-antenna spacing d in metres; half a wavelength when omitted.
    wavelength_m : float, optional
        Overrides the wavelength (metres). The paper rounds 30 GHz to
        lambda = 0.01 m; :func:`paper_array` does the same.
    """

    n_antennas: int
    carrier_hz: float = 30.0e9
    spacing: float | None = None
    wavelength_m: float | None = None

    def __post_init__(self):
        if int(self.n_antennas) != self.n_antennas or self.n_antennas < 2:
            raise ValueError(f"n_antennas: expected an integer >= 2, got {self.n_antennas!r}")
        if not (self.carrier_hz > 0 and np.isfinite(self.carrier_hz)):
            raise ValueError(f"carrier_hz: expected a positive frequency in Hz, got {self.carrier_hz!r}")
        if self.spacing is not None and not self.spacing > 0:
            raise ValueError(f"spacing: expected a positive distance in metres, got {self.spacing!r}")
        if self.wavelength_m is not None and not self.wavelength_m > 0:
            raise ValueError(f"wavelength_m: expected a positive length, got {self.wavelength_m!r}")

    @property
    def wavelength(self) -> float:
        """Wavelength lambda in metres."""
        return float(self.wavelength_m) if self.wavelength_m else SPEED_OF_LIGHT / self.carrier_hz

    @property
    def wavenumber(self) -> float:
        """k = 2 pi / lambda in rad/m."""
        return 2.0 * np.pi / self.wavelength

    @property
    def d(self) -> float:
        """Inter-antenna spacing in metres (lambda/2 by default)."""
        return float(self.spacing) if self.spacing is not None else self.wavelength / 2.0

    @cached_property
    def positions(self) -> np.ndarray:
        """Antenna y-coordinates l_n, shape (N,), metres, centred (Sec. II-A)."""
        n = np.arange(1, self.n_antennas + 1)
        pos = (2 * n - self.n_antennas - 1) * self.d / 2.0
        pos.setflags(write=False)
        return pos

    @property
    def aperture(self) -> float:
        """D = (N - 1) d in metres."""
        return (self.n_antennas - 1) * self.d

    @property
    def fresnel_distance(self) -> float:
        """Z_Fres = 0.5 sqrt(D^3 / lambda) in metres."""
        return 0.5 * np.sqrt(self.aperture**3 / self.wavelength)

    @property
    def rayleigh_distance(self) -> float:
        """Z_Rayl = 2 D^2 / lambda in metres."""
        return 2.0 * self.aperture**2 / self.wavelength

    @property
    def n_sub(self) -> int:
        """Largest far-field subarray N_sub (Sec. IV-A2, criterion 2).

        From 2 D_q^2 / lambda <= Z_Fres with D_q = N_q d and, as the paper does,
        D ~= N d in Z_Fres; for d = lambda/2 this is floor(2^{-3/4} N^{3/4})
        (38 for N = 256).
        """
        z_f = 0.5 * np.sqrt((self.n_antennas * self.d) ** 3 / self.wavelength)
        return int(np.floor(np.sqrt(z_f * self.wavelength / 2.0) / self.d + 1e-9))

    def describe(self) -> dict:
        """JSON-serialisable geometry, as carried in frame ``meta['array']``."""
        return {
            "n_antennas": int(self.n_antennas),
            "carrier_hz": float(self.carrier_hz),
            "spacing": float(self.d),
            "wavelength_m": float(self.wavelength),
        }

    @classmethod
    def from_meta(cls, meta: dict) -> "ULA":
        """Inverse of :meth:`describe`; raises ``ValueError`` naming the bad field."""
        try:
            return cls(
                n_antennas=int(meta["n_antennas"]),
                carrier_hz=float(meta["carrier_hz"]),
                spacing=float(meta["spacing"]) if meta.get("spacing") is not None else None,
                wavelength_m=float(meta["wavelength_m"]) if meta.get("wavelength_m") is not None else None,
            )
        except KeyError as exc:
            raise ValueError(f"array geometry: missing field {exc.args[0]!r}") from None


def paper_array(n_antennas: int = 256) -> ULA:
    """The array of Sec. VI-A: f = 30 GHz rounded to lambda = 0.01 m, d = lambda/2."""
    return ULA(n_antennas=n_antennas, carrier_hz=30.0e9, wavelength_m=0.01)
