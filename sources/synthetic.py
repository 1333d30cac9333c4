"""Synthetic snapshot source: the paper's received-signal model, frame by frame.

Every frame carries T snapshots of eq. (5),

    Y = diag(c) A(theta, r) diag(beta) S + N,      Y: (N, T) complex64,

generated on the *exact* spherical model (eq. 1) by :mod:`nearfield.scenario` (this
module only schedules the draws; it does not re-implement the model).

Randomness (one ``numpy.random.Generator`` seeded with ``seed``):

* once per run, in this order: the HI vector c (eq. 4, Bernoulli(``p_fault``) faulty
  antennas with uniform phase biases), then the gains beta when ``gains`` is null
  (unit modulus, uniform phase).  Both stay the same for every frame of the run
  (the impairments are static, Sec. II-B);
* per frame, in this order: fresh pilots S (K, T) (unit modulus, uniform phase,
  :func:`nearfield.scenario.make_pilots`) and fresh noise.  The noise variance is set
  per frame from the realised noiseless signal so that the SNR of the module
  docstring of :mod:`nearfield.scenario` is exactly ``snr_db``.

then, only when one of ``gain_std_db``, ``phase_std``, ``dead_channels``, ``position_std``
is set, the dense impairments of a real receiver
(:func:`nearfield.impairments.draw_dense_impairments`): the HI vector becomes
``c = c_sparse * gain`` (complex, |c_n| != 1, 0 on dead channels, which then receive noise
only) and, with ``position_std``, the data come from elements displaced along the axis
while ``meta["array"]`` keeps describing the nominal ULA.  ``meta["truth"]`` then also
carries ``hi`` ([[re, im]] per antenna), ``dead`` (indices) and ``position_offsets`` (m).

Noise: drawn as complex64 directly in polar form (Box-Muller): the modulus from a float64
uniform u, ``|z| = sqrt(-sigma^2 ln(1 - u))`` (|z|^2 ~ Exp(sigma^2), the modulus law of
CN(0, sigma^2)), the phase uniform from a float32 uniform -- half the cost of drawing two
float32 normals per sample -- and ``diag(c) A diag(beta)`` is cached while the targets do not
move, so a frame costs one (N, K) x (K, T) product and one noise draw.  ``legacy_noise: true`` restores the earlier
path (float64 noise, steering per frame), which reproduces frames of earlier versions
bit for bit; both paths give the same pilots, HI vector and gains for a seed.

So the same ``seed`` gives the same frames, bit for bit.

Motion: a target may carry ``velocity: [vx, vy]`` (m/s, x along broadside, y along the
array).  Its position at time t is ``(r cos(theta), r sin(theta)) + v t``; within one
frame it is held at the frame time ``t0 = seq * T / sample_rate_hz`` (quasi-static
over the T snapshots of a frame).  ``meta["truth"]["targets"]`` is that position,
sorted by theta.

Each frame (``seq`` = 0, 1, ..., ``t0`` = seq T / sample_rate_hz seconds) carries

* ``arrays["snapshots"]`` (N, T) complex64 and, when ``pilots`` is true,
  ``arrays["pilots"]`` (K, T) complex64;
* ``meta["array"]`` (:meth:`nearfield.array.ULA.describe`), ``meta["truth"]`` =
  ``{"targets": [{"theta", "range"}] sorted by theta, "faulty": [0-based indices],
  "fault_phase": [rad], "noise_var": sigma^2}`` (``faulty`` and ``fault_phase`` are the
  paper's sparse faults) and ``meta["sample_rate_hz"]``.

The pilots row k belongs to target k of the ``targets`` parameter (parameter order),
not to the k-th truth entry (which is sorted by theta).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np

from ..array import ULA
from ..block import Param, Source, idle_until, non_negative, positive, unit_interval
from ..contract import ARRAY, PILOTS, SAMPLE_RATE, SNAPSHOTS, TRUTH
from ..frame import Frame
from ..impairments import check_dense_params, dense_is_default, draw_dense_impairments, draw_impairments
from ..scenario import PAPER_TARGETS, complex_noise, make_pilots, noise_variance, noiseless_signal
from ..state import complex_to_json
from ..steering import steering

log = logging.getLogger(__name__)

_DEFAULT_TARGETS = [{"theta": float(th), "range": float(r)} for th, r in PAPER_TARGETS]


def _check_targets(value) -> str | None:
    if not value:
        return "a non-empty list of {theta: rad, range: m[, velocity: [vx, vy] m/s]}"
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            return f"target {i} to be a mapping {{theta, range[, velocity]}}"
        extra = set(t) - {"theta", "range", "velocity"}
        if extra:
            return f"target {i} with keys theta, range[, velocity] only (unknown: {sorted(extra)})"
        for key in ("theta", "range"):
            v = t.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                return f"target {i} to have a finite number {key!r}"
        if not abs(t["theta"]) < np.pi / 2:
            return f"target {i}: |theta| < pi/2 rad (in front of the array)"
        if not t["range"] > 0:
            return f"target {i}: range > 0 m"
        vel = t.get("velocity")
        if vel is not None:
            if (
                not isinstance(vel, (list, tuple))
                or len(vel) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in vel)
            ):
                return f"target {i}: velocity as [vx, vy] in m/s"
    return None


def _check_gains(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        return "null or a list of complex gains, each a number or [re, im]"
    for i, g in enumerate(value):
        if isinstance(g, bool):
            return f"gain {i} as a number or [re, im]"
        if isinstance(g, (int, float)):
            continue
        if (
            isinstance(g, (list, tuple))
            and len(g) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in g)
        ):
            continue
        return f"gain {i} as a number or [re, im]"
    return None


def _check_std(expected: str):
    return lambda v: None if np.isfinite(v) and v >= 0 else expected


def _check_phase_std(value) -> str | None:
    if isinstance(value, str):
        return None if value == "uniform" else "a standard deviation >= 0 in rad or 'uniform'"
    return None if np.isfinite(value) and value >= 0 else "a standard deviation >= 0 in rad or 'uniform'"


def _check_snr(value) -> str | None:
    return None if np.isfinite(value) else "a finite SNR in dB"


def target_positions(theta0, r0, velocity, t: float):
    """Angle and range of targets moving at constant velocity.

    Parameters
    ----------
    theta0, r0 : ndarray, shape (K,)
        Positions at t = 0: angle from broadside (rad) and range from the array centre (m).
    velocity : ndarray, shape (K, 2)
        ``[vx, vy]`` in m/s; x along broadside, y along the array axis.
    t : float
        Time in seconds.

    Returns
    -------
    theta, r : ndarray, shape (K,)
        ``theta = atan2(y, x)``, ``r = hypot(x, y)`` of ``(r0 cos theta0, r0 sin theta0) + v t``
        (exactly ``theta0``, ``r0`` for a target with zero velocity).
    """
    x = r0 * np.cos(theta0) + velocity[:, 0] * t
    y = r0 * np.sin(theta0) + velocity[:, 1] * t
    moving = np.any(velocity != 0.0, axis=1)  # static targets keep their exact parameters
    return np.where(moving, np.arctan2(y, x), theta0), np.where(moving, np.hypot(x, y), r0)


class SyntheticSource(Source):
    """Snapshots of the paper's model (eq. 5): XL-array, near-field targets, faulty antennas."""

    adds = (ARRAY, SNAPSHOTS, PILOTS, TRUTH, SAMPLE_RATE)  # frame contract (nearfield.contract)
    params = (
        Param("n_antennas", int, 256, "number of antennas N", check=lambda v: None if v >= 2 else "an integer >= 2"),
        Param("carrier_hz", float, 30.0e9, "carrier frequency f in Hz", check=positive),
        Param(
            "wavelength_m",
            (float, type(None)),
            None,
            "wavelength in m; null = c0 / carrier_hz (the paper rounds 30 GHz to 0.01 m)",
            check=positive,
        ),
        Param("spacing", (float, type(None)), None, "antenna spacing d in m; null = lambda/2", check=positive),
        Param(
            "targets",
            list,
            _DEFAULT_TARGETS,
            "targets [{theta: rad, range: m[, velocity: [vx, vy] m/s]}]; default the 3 of Sec. VI-A",
            check=_check_targets,
        ),
        Param(
            "gains",
            (list, type(None)),
            None,
            "complex gains beta, one per target, number or [re, im]; null = unit modulus, random phase",
            check=_check_gains,
        ),
        Param("snapshots", int, 100, "snapshots per frame T", check=positive),
        Param("snr_db", float, 20.0, "SNR in dB (signal part, per antenna)", check=_check_snr),
        Param("p_fault", float, 0.02, "probability that an antenna is faulty", check=unit_interval),
        Param("frames", int, 50, "number of frames; 0 = endless", check=non_negative),
        Param("seed", int, 1, "seed of the run's numpy Generator"),
        Param("sample_rate_hz", float, 1.0e6, "snapshot rate in Hz (frame time t0 = seq T / rate)", check=positive),
        Param(
            "rate_hz",
            (float, type(None)),
            None,
            "frames per second to pace at; null = as fast as possible",
            check=positive,
        ),
        Param("pilots", bool, True, "put the (K, T) pilots into each frame (false: like recorded data)"),
        Param(
            "gain_std_db",
            float,
            0.0,
            "dense impairment: per-channel gain std in dB (log-normal amplitude on every channel); 0 = none",
            check=_check_std("a gain standard deviation >= 0 in dB"),
        ),
        Param(
            "phase_std",
            (float, str),
            0.0,
            "dense impairment: per-channel phase std in rad, or 'uniform' (U(0, 2 pi)); 0 = none",
            check=_check_phase_std,
        ),
        Param(
            "dead_channels",
            (int, list, type(None)),
            None,
            "dead channels (noise only): a count drawn at random or a list of 0-based indices; null = none",
        ),
        Param(
            "position_std",
            float,
            0.0,
            "element position error std in m along the array axis (data from displaced elements); 0 = none",
            check=_check_std("a position standard deviation >= 0 in m"),
        ),
        Param(
            "legacy_noise",
            bool,
            False,
            "true: float64 noise and per-frame steering, bit-identical to frames before the fast path "
            "(about 2x slower); false: complex64 noise drawn in place, steering cached for static targets",
        ),
    )

    # steering cache of _weighted_steering(), reset by start()
    _B: np.ndarray | None
    _B_key: tuple[bytes, bytes] | None
    # scratch buffers of _circular_noise()
    _u: np.ndarray | None = None
    _v: np.ndarray
    _m: np.ndarray

    def validate(self) -> None:
        try:
            self.array = ULA(
                self.n_antennas, carrier_hz=self.carrier_hz, spacing=self.spacing, wavelength_m=self.wavelength_m
            )
            _ = self.array.positions
        except ValueError as exc:
            raise self.param_error("n_antennas", str(exc)) from None
        try:
            check_dense_params(self.n_antennas, self.gain_std_db, self.phase_std, self.dead_channels, self.position_std)
        except ValueError as exc:
            raise self.param_error(str(exc).split(":", 1)[0], str(exc).split(":", 1)[1].strip()) from None
        self._dense_default = dense_is_default(self.gain_std_db, self.phase_std, self.dead_channels, self.position_std)
        k = len(self.targets)
        if self.gains is not None and len(self.gains) != k:
            raise self.param_error("gains", f"expected one gain per target ({k}), got {len(self.gains)}")
        self._theta0 = np.array([t["theta"] for t in self.targets], float)
        self._r0 = np.array([t["range"] for t in self.targets], float)
        self._vel = np.array([t.get("velocity") or [0.0, 0.0] for t in self.targets], float)
        if self.frames > 0 and np.any(self._vel != 0.0):
            # Linear motion: x(t) is linear, so x > 0 at both ends means x > 0 throughout.
            t_last = (self.frames - 1) * self.snapshots / self.sample_rate_hz
            theta, r = target_positions(self._theta0, self._r0, self._vel, t_last)
            x = r * np.cos(theta)
            for i in np.flatnonzero(~(x > 0)).tolist():
                raise self.param_error(
                    "targets",
                    f"target {i} moves behind the array plane (x <= 0) before the last frame "
                    f"(t = {t_last:g} s); expected a velocity that keeps it in front",
                )
        z_f, z_r = self.array.fresnel_distance, self.array.rayleigh_distance
        for i, r in enumerate(self._r0):
            if not z_f <= r <= z_r:
                log.warning(
                    "block %r: target %d at %.3g m is outside the radiating near field "
                    "[Z_Fres, Z_Rayl] = [%.3g, %.3g] m",
                    self.name,
                    i,
                    r,
                    z_f,
                    z_r,
                )

    # -- worker side -----------------------------------------------------------
    def start(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._c, self._mask = draw_impairments(self.n_antennas, self.p_fault, self._rng)
        if self.gains is None:
            self._beta = np.exp(2j * np.pi * self._rng.random(len(self.targets)))
        else:
            self._beta = np.array(
                [complex(g[0], g[1]) if isinstance(g, (list, tuple)) else complex(g) for g in self.gains]
            )
        self._faulty = [int(i) for i in np.flatnonzero(self._mask)]
        self._fault_phase = [float(np.angle(self._c[i]) % (2 * np.pi)) for i in self._faulty]
        self._array_meta = self.array.describe()
        self._true_array = self.array
        self._extra_truth = {}
        if not self._dense_default:
            # dense impairments are drawn after the paper's draws: the default stream is unchanged
            dense = draw_dense_impairments(
                self.n_antennas, self._rng, self.gain_std_db, self.phase_std, self.dead_channels, self.position_std
            )
            self._c = self._c * dense.gain
            if dense.offsets is not None:
                self._true_array = self.array.with_offsets(dense.offsets)
            self._extra_truth = {
                "hi": complex_to_json(self._c),
                "dead": [int(i) for i in np.flatnonzero(dense.dead)],
                "position_offsets": None if dense.offsets is None else [float(x) for x in dense.offsets],
            }
        self._static = not np.any(self._vel != 0.0)
        self._B = None  # cached diag(c) A diag(beta) (N, K) complex64 for the last positions
        self._B_key = None

    def _weighted_steering(self, theta, r) -> np.ndarray:
        """diag(c) A(theta, r) diag(beta), (N, K) complex64; recomputed only when the targets moved."""
        key = (theta.tobytes(), r.tobytes())
        if self._B is None or (not self._static and key != self._B_key):
            A = steering(self._true_array, theta, r)
            B = self._c[:, None] * A * self._beta[None, :]
            self._B, self._B_key = B.astype(np.complex64), key
            self._gram = B.conj().T @ B  # B^H B (K, K), complex128, for the signal power
        return self._B

    def _circular_noise(self, n: int, t: int, sigma2: float) -> np.ndarray:
        """(n, t) complex64 CN(0, sigma2) samples in polar form (module doc): modulus
        ``sqrt(-sigma2 ln(1 - u))`` from float64 uniforms (u < 1: no log of 0), phase ``2 pi v`` from
        float32 uniforms; cos and sin written straight into the output's real and imaginary parts."""
        if self._u is None or self._u.shape != (n, t):
            self._u = np.empty((n, t))  # scratch buffers, reused frame to frame (never leave the block)
            self._v = np.empty((n, t), np.float32)
            self._m = np.empty((n, t), np.float32)
        u, v, m = self._u, self._v, self._m
        self._rng.random(out=u)
        np.log1p(np.negative(u, out=u), out=u)  # ln(1 - u) <= 0
        np.multiply(u, -sigma2, out=u)
        np.sqrt(u, out=m, casting="same_kind")
        self._rng.random(out=v, dtype=np.float32)
        v *= np.float32(2.0 * np.pi)
        y = np.empty((n, t), np.complex64)
        np.cos(v, out=y.real)
        np.sin(v, out=y.imag)
        y.real *= m
        y.imag *= m
        return y

    def _fast_snapshots(self, theta, r, pilots, pilots64):
        """Y = B S + noise in complex64: noise drawn as float32 straight into the output buffer."""
        B = self._weighted_steering(theta, r)
        n, t = self.n_antennas, self.snapshots
        # mean_t ||B s_t||^2 = sum_kl (B^H B)_kl (S S^H)_lk / T: the SNR definition without forming |B S|^2
        power = float(np.sum(self._gram * (pilots @ pilots.conj().T).T).real) / (n * t)
        sigma2 = power / 10.0 ** (self.snr_db / 10.0)
        y = self._circular_noise(n, t, sigma2)
        if getattr(self, "_mu", None) is None or self._mu.shape != (n, t):
            self._mu = np.empty((n, t), np.complex64)  # reused: the signal never leaves this block
        np.matmul(B, pilots64, out=self._mu)
        y += self._mu
        return y, sigma2

    def make_frame(self, seq: int) -> Frame:
        """Frame ``seq`` (draws the next pilots and noise from the run's Generator)."""
        t0 = seq * self.snapshots / self.sample_rate_hz
        theta, r = target_positions(self._theta0, self._r0, self._vel, t0)
        bad = np.flatnonzero(~(np.abs(theta) < np.pi / 2) | ~(r > 0))
        if bad.size:
            raise ValueError(
                f"block {self.name!r}: target {int(bad[0])} left the field of view (behind the array) at t = {t0:g} s"
            )
        k = len(theta)
        pilots = make_pilots(k, self.snapshots, self._rng)
        pilots64 = pilots.astype(np.complex64)
        if self.legacy_noise:
            mu = noiseless_signal(self._true_array, theta, r, self._beta, pilots, self._c)
            sigma2 = noise_variance(mu, self.snr_db)
            y = (mu + complex_noise(mu.shape, sigma2, self._rng)).astype(np.complex64)
        else:
            y, sigma2 = self._fast_snapshots(theta, r, pilots, pilots64)
        arrays = {"snapshots": y}
        if self.pilots:
            arrays["pilots"] = pilots64
        order = np.argsort(theta, kind="stable")
        truth = {
            "targets": [{"theta": float(theta[i]), "range": float(r[i])} for i in order],
            "faulty": list(self._faulty),
            "fault_phase": list(self._fault_phase),
            "noise_var": float(sigma2),
        }
        truth.update(self._extra_truth)
        meta = {"array": dict(self._array_meta), "truth": truth, "sample_rate_hz": float(self.sample_rate_hz)}
        return Frame(seq=seq, t0=float(t0), arrays=arrays, meta=meta)

    def generate(self) -> Iterator[Frame]:
        if not hasattr(self, "_rng"):
            self.start()
        period = 1.0 / self.rate_hz if self.rate_hz else 0.0
        t_next = time.monotonic()
        seq = 0
        while self.frames == 0 or seq < self.frames:
            frame = self.make_frame(seq)
            if period:
                yield from idle_until(t_next)
                t_next = max(t_next + period, time.monotonic())  # no catch-up bursts after a stall
            yield frame
            seq += 1
