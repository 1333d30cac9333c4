"""Uniform linear array (ULA) geometry, paper Sec. II-A.

The array lies on the y-axis, centred at the origin; antenna n (1-based) sits at
``y = l_n = (2n - N - 1) d / 2``.  Angles are measured from broadside (the x-axis,
the array normal) and ranges from the array centre.  Units: metres, hertz, radians.

Perturbed arrays: ``ULA(..., offsets=(dl_1, ..., dl_N))`` moves antenna n along the
array axis to ``l_n + dl_n``; every steering function reads :attr:`ULA.positions`, so the
true (perturbed) geometry that generates synthetic data and the nominal one the
estimators assume (:meth:`ULA.nominal`) share one code path.  Without offsets the
positions are exactly the nominal ones (no extra work on the default path).

Small arrays: :attr:`ULA.n_sub` is at least 2 and at most N, and :meth:`ULA.range_window`
gives a default range window for estimators that holds from N = 4 at any carrier to
N = 256 at 30 GHz.  It is the one implementation of that default: the full-array
estimator (``fullarray.default_r_bounds``), :func:`nearfield.localize` and the streaming
``music_localizer`` all call it, and every range they report lies inside it.
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
    offsets : tuple of float, optional
        Per-antenna displacement along the array axis (metres), shape (N,): antenna n
        sits at ``l_n + offsets[n]``.  Models element position errors; ``None`` (default)
        is the exact ULA.  Use a tuple (the dataclass is frozen and hashable).
    """

    n_antennas: int
    carrier_hz: float = 30.0e9
    spacing: float | None = None
    wavelength_m: float | None = None
    offsets: tuple | None = None

    def __post_init__(self):
        if int(self.n_antennas) != self.n_antennas or self.n_antennas < 2:
            raise ValueError(f"n_antennas: expected an integer >= 2, got {self.n_antennas!r}")
        if not (self.carrier_hz > 0 and np.isfinite(self.carrier_hz)):
            raise ValueError(f"carrier_hz: expected a positive frequency in Hz, got {self.carrier_hz!r}")
        if self.spacing is not None and not self.spacing > 0:
            raise ValueError(f"spacing: expected a positive distance in metres, got {self.spacing!r}")
        if self.wavelength_m is not None and not self.wavelength_m > 0:
            raise ValueError(f"wavelength_m: expected a positive length, got {self.wavelength_m!r}")
        if self.offsets is not None:
            off = np.asarray(self.offsets, dtype=float)
            if off.shape != (int(self.n_antennas),) or not np.all(np.isfinite(off)):
                raise ValueError(f"offsets: expected {int(self.n_antennas)} finite displacements in metres, "
                                 f"got shape {off.shape}")
            object.__setattr__(self, "offsets", tuple(float(x) for x in off))

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
    def nominal_positions(self) -> np.ndarray:
        """Nominal antenna y-coordinates l_n = (2n - N - 1) d / 2, shape (N,), metres (Sec. II-A)."""
        n = np.arange(1, self.n_antennas + 1)
        pos = (2 * n - self.n_antennas - 1) * self.d / 2.0
        pos.setflags(write=False)
        return pos

    @cached_property
    def positions(self) -> np.ndarray:
        """Antenna y-coordinates, shape (N,), metres: l_n plus :attr:`offsets` when given."""
        if self.offsets is None:
            return self.nominal_positions
        pos = self.nominal_positions + np.asarray(self.offsets, dtype=float)
        pos.setflags(write=False)
        return pos

    def nominal(self) -> "ULA":
        """The same array without position offsets (what an estimator assumes)."""
        if self.offsets is None:
            return self
        return ULA(self.n_antennas, self.carrier_hz, self.spacing, self.wavelength_m)

    def with_offsets(self, offsets) -> "ULA":
        """A copy whose antenna n sits at ``l_n + offsets[n]`` (metres, shape (N,))."""
        return ULA(self.n_antennas, self.carrier_hz, self.spacing, self.wavelength_m,
                   offsets=None if offsets is None else tuple(np.asarray(offsets, float).tolist()))

    @property
    def aperture(self) -> float:
        """D = (N - 1) d in metres."""
        return (self.n_antennas - 1) * self.d

    @property
    def fresnel_distance(self) -> float:
        """Z_Fres = 0.5 sqrt(D^3 / lambda) in metres (the paper's lower edge of the radiating near field).

        For small arrays this can fall below a wavelength (N = 4 at lambda/2: 0.92 lambda),
        i.e. inside the reactive near field; :meth:`range_window` is the usable window.
        """
        return 0.5 * np.sqrt(self.aperture**3 / self.wavelength)

    @property
    def rayleigh_distance(self) -> float:
        """Z_Rayl = 2 D^2 / lambda in metres (beyond it the source is practically far field)."""
        return 2.0 * self.aperture**2 / self.wavelength

    @property
    def n_sub(self) -> int:
        """Largest far-field subarray N_sub (Sec. IV-A2, criterion 2).

        From 2 D_q^2 / lambda <= Z_Fres with D_q = N_q d and, as the paper does,
        D ~= N d in Z_Fres; for d = lambda/2 this is floor(2^{-3/4} N^{3/4})
        (38 for N = 256).  Clipped to [2, N]: for tiny arrays (N = 4 at lambda/2 gives 1)
        a subarray still needs two antennas to measure an angle, and it cannot exceed
        the array.
        """
        z_f = 0.5 * np.sqrt((self.n_antennas * self.d) ** 3 / self.wavelength)
        n = int(np.floor(np.sqrt(z_f * self.wavelength / 2.0) / self.d + 1e-9))
        return int(min(max(n, 2), self.n_antennas))

    def range_window(self) -> tuple[float, float]:
        """Default range window (r_min, r_max) in metres for estimators, from the geometry.

        ``r_min = max(D / 2, 2 lambda)``: closer than half the aperture a source sits beside
        the array (the end antennas see it near endfire), and closer than two wavelengths it
        is in the reactive near field, where the point-source, coupling-free model of
        eq. (1) no longer describes the data.  The window is deliberately wider than the
        paper's radiating near field [Z_Fres, Z_Rayl]: it bounds estimates, it must not
        clip a real source (a 9-antenna array at 1.24 GHz sees transmitters from 0.5 m,
        below its Z_Fres of 0.97 m; the paper's target at 8 m is only just above the
        N = 256 array's Z_Fres of 7.2 m).

        ``r_max = max(Z_Rayl, 4 r_min)`` with ``Z_Rayl = 2 D^2 / lambda``: beyond the Rayleigh
        distance the wavefront curvature over the aperture is below pi/8, so range is
        practically unidentifiable and a larger estimate carries no information (this is
        what keeps a flat cost from returning 1e14 m).  The floor of 4 r_min keeps a usable
        window for tiny arrays, whose Rayleigh distance can be a few wavelengths
        (N = 4 at lambda/2: Z_Rayl = 4.5 lambda).

        Returns
        -------
        r_min, r_max : float
            Metres, ``0 < r_min < r_max``.  Examples: N = 256, lambda = 1 cm: (0.64, 325);
            N = 9 at 1.24 GHz: (0.48, 7.7); N = 16 at 5.8 GHz: (0.19, 5.8).
        """
        r_min = max(self.aperture / 2.0, 2.0 * self.wavelength)
        r_max = max(self.rayleigh_distance, 4.0 * r_min)
        return float(r_min), float(r_max)

    def describe(self) -> dict:
        """JSON-serialisable geometry, as carried in frame ``meta['array']``.

        Position offsets are not described: they belong to the true hardware, which the
        receiver of a frame does not know (it assumes the nominal array).
        """
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
