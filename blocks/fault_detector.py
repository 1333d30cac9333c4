"""Phase 1: faulty-antenna detection and coarse localization (paper Sec. IV-A).

Pure functions (the truth; the library API and the experiments call them):

* :func:`partition_subarrays` -- criteria 1 and 2 of Sec. IV-A2;
* :func:`subarray_angles` -- far-field MUSIC per subarray, eqs. (14)-(16);
* :func:`triangulate` -- Lemma 1, eq. (18), made robust to outlying lines;
* :func:`match_to_pilots` -- pairs unlabelled positions with pilot rows (PAPER-NOTES 8);
* :func:`detect_faults` -- the alternation: coarse position -> gains (20) -> ISTA (P3)
  -> faulty set (12), until the faulty set stops changing.

And the streaming block :class:`FaultDetector`, which accumulates the per-antenna ISTA
statistics across frames (the impairments are static), so the faulty set improves with
every frame and survives restarts through ``state_path``.

Choices the paper leaves open (PAPER-NOTES 7, 13, 14), all parameters:

* Subarrays: every run of intact antennas is cut into ``ceil(len / N_sub)`` near-equal
  pieces; pieces shorter than ``min_subarray`` (default 10; capped at N_sub for small
  arrays; at least K + 2) are dropped, since MUSIC on a handful of antennas gives wild
  angles.
* Triangulation: the LS point of Lemma 1, then lines farther than ``3 x`` the median
  line distance (and more than 1 mm) are dropped and the point recomputed (3 rounds).
* Angles of the K targets are associated across subarrays by sorting (the paper's
  ascending order).
* "Polish": before ISTA, the coarse positions are refined by the exact-model ML fit
  (:func:`nearfield.ml.refine_ml`) on the antennas not flagged so far. Without it the
  model x_t inherits the triangulation error, whose phase error grows towards the array
  ends and reads as faults; with it, detection is limited by noise only.
  ``polish=False`` gives the paper's Phase 1 as written.
* Noise level: ``sigma^2 = median_n mean_t |y_{n,t} - x_{n,t}|^2`` (robust to the few
  faulty antennas); rho = kappa sigma sqrt(mean_n sum_t |x_n|^2) (:func:`nearfield.ista.noise_rho`),
  so an intact antenna survives the shrinkage with probability ~exp(-kappa^2); then
  D = {n : |z_n| > tau}.
* Without pilots, the waveforms are estimated by LS from the current model
  (:func:`nearfield.ml.ls_waveforms`); with unknown K, ``n_targets="auto"`` takes the
  median MDL order over the subarray covariances.
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from nearfield.array import ULA
from nearfield.block import (BadFrame, Block, Param, frame_array, n_targets_check, non_negative, optional_finite,
                             positive, unit_interval)
from nearfield.ista import ista_iterate, ista_stats, noise_rho
from nearfield.ml import ls_gains, ls_waveforms, refine_ml
from nearfield.music import mdl_order, music_denominator, refine_peaks, signal_subspace, top_peaks
from nearfield.frame import positions_meta
from nearfield.state import complex_from_json, complex_to_json, load_json, save_json_atomic
from nearfield.steering import far_field_steering, steering

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- partition
def partition_subarrays(n_antennas: int, faulty, n_sub: int, min_size: int) -> list[np.ndarray]:
    """Fault-free contiguous subarrays (criteria 1 and 2 of Sec. IV-A2).

    Parameters
    ----------
    n_antennas : int
    faulty : iterable of int
        0-based indices of (detected) faulty antennas.
    n_sub : int
        Largest subarray size N_sub (all targets in each subarray's far field).
    min_size : int
        Smallest subarray kept.

    Returns
    -------
    list of ndarray
        Antenna indices of each subarray, in array order.
    """
    bad = np.zeros(n_antennas, bool)
    bad[np.asarray(list(faulty), dtype=int)] = True
    good = np.flatnonzero(~bad)
    if good.size == 0:
        return []
    runs = np.split(good, np.flatnonzero(np.diff(good) > 1) + 1)
    out = []
    for run in runs:
        pieces = int(np.ceil(run.size / n_sub))
        for piece in np.array_split(run, pieces):
            if piece.size >= min_size:
                out.append(piece)
    return out


# ----------------------------------------------------------------------------- angles
def _scan_grid(grid_size: int) -> np.ndarray:
    """Uniform sin(theta) grid on the open interval (-1, 1)."""
    return np.linspace(-1.0, 1.0, grid_size + 2)[1:-1]


@lru_cache(maxsize=64)
def _scan_matrix(size: int, d: float, lam: float, grid_size: int) -> np.ndarray:
    """Far-field steering of a centred ``size``-antenna subarray on the scan grid (cached across frames)."""
    rel = (np.arange(size) - (size - 1) / 2.0) * d
    B = far_field_steering(rel, lam, np.arcsin(_scan_grid(grid_size)))
    B.setflags(write=False)
    return B


def subarray_angles(Y: np.ndarray, array: ULA, subarrays, n_targets: int, grid_size: int = 256):
    """Far-field MUSIC angles of every subarray (eqs. (14)-(16)).

    The angle of each subarray is measured from its centre; the far-field steering
    vector uses the sign of eq. (2) (PAPER-NOTES 2).  The scan is uniform in sin(theta)
    over (-1, 1), each peak refined below the grid step.

    Returns
    -------
    angles : ndarray, shape (Q, K)
        Ascending angles per subarray (rad); NaN where fewer than K peaks were found.
    centres : ndarray, shape (Q,)
        y-coordinate of each subarray centre (m).
    """
    T = Y.shape[1]
    u = _scan_grid(grid_size)
    angles = np.full((len(subarrays), n_targets), np.nan)
    centres = np.empty(len(subarrays))
    lam = array.wavelength
    for q, idx in enumerate(subarrays):
        pos = array.positions[idx]
        centres[q] = pos.mean()
        rel = pos - centres[q]
        Yq = Y[idx]
        Rq = (Yq @ Yq.conj().T) / T
        if idx.size <= n_targets:
            continue
        U_s, _ = signal_subspace(Rq, n_targets)
        spec = 1.0 / music_denominator(U_s, _scan_matrix(idx.size, array.d, lam, grid_size))
        peaks = top_peaks(spec, n_targets)
        if peaks.size < n_targets:
            continue

        def cost(x, U_s=U_s, rel=rel):
            return music_denominator(U_s, far_field_steering(rel, lam, np.arcsin(np.clip(x, -1, 1))))

        us = refine_peaks(cost, u, peaks)
        angles[q] = np.sort(np.arcsin(np.clip(us, -1.0, 1.0)))
    return angles, centres


# ----------------------------------------------------------------------------- triangulation
def triangulate(angles: np.ndarray, centres: np.ndarray, rounds: int = 3, factor: float = 3.0,
                floor: float = 1e-3):
    """Intersection of the subarray bearing lines, Lemma 1 (eq. 18), robust to outliers.

    Line q passes through p_q = (0, centres[q]) with direction e_q = (cos, sin)(angles[q]).
    The LS point is ``(sum_q P_q)^-1 sum_q P_q p_q`` with ``P_q = I - e_q e_q^T``; lines
    farther than ``max(factor * median distance, floor)`` from it are dropped and the point
    recomputed, ``rounds`` times.

    Returns
    -------
    theta, r : float
        Polar position (eq. 19): r = |xi|, theta = arcsin(xi_y / r). NaN if fewer than two
        usable lines.
    n_used : int
    """
    ok = np.isfinite(angles)
    a, c = angles[ok], centres[ok]
    keep = np.ones(a.size, bool)
    xi = None
    for _ in range(rounds + 1):
        if keep.sum() < 2:
            break
        e = np.stack([np.cos(a[keep]), np.sin(a[keep])], axis=1)
        p = np.stack([np.zeros(keep.sum()), c[keep]], axis=1)
        P = np.eye(2)[None] - e[:, :, None] * e[:, None, :]
        M = P.sum(axis=0)
        if np.linalg.cond(M) > 1e12:
            break
        xi = np.linalg.solve(M, np.einsum("qij,qj->i", P, p))
        e_all = np.stack([np.cos(a), np.sin(a)], axis=1)
        d_all = xi[None, :] - np.stack([np.zeros(a.size), c], axis=1)
        dist = np.abs(d_all[:, 0] * e_all[:, 1] - d_all[:, 1] * e_all[:, 0])
        new_keep = dist <= max(factor * np.median(dist[keep]), floor)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    if xi is None:
        return np.nan, np.nan, 0
    r = float(np.hypot(*xi))
    return float(np.arcsin(np.clip(xi[1] / r, -1, 1))), r, int(keep.sum())


def match_to_pilots(Y: np.ndarray, array: ULA, theta, r, pilots: np.ndarray, w=None) -> np.ndarray:
    """Permutation pairing positions with pilot rows (PAPER-NOTES 8).

    Maximises sum_k |a(theta_j, r_j)^H W Y s_k^*|^2 over assignments
    (``scipy.optimize.linear_sum_assignment``). Returns ``perm`` such that position
    ``perm[k]`` belongs to pilot row k.
    """
    A = steering(array, theta, r)
    AW = A.conj().T if w is None else A.conj().T * w[None, :]
    score = np.abs((AW @ Y) @ pilots.conj().T) ** 2  # (J positions, K pilots)
    rows, cols = linear_sum_assignment(-score)
    perm = np.empty(pilots.shape[0], dtype=int)
    perm[cols] = rows
    return perm


# ----------------------------------------------------------------------------- phase 1
@dataclass
class Phase1Result:
    """Output of :func:`detect_faults` (entries k follow the pilot rows when pilots are given).

    faulty : (D,) int, sorted. z : (N,) complex fault mask. coarse_theta, coarse_r : (K,)
    triangulated positions (the paper's coarse estimate). theta, r : (K,) positions of the
    HI model (polished when ``polish``). gains : (K,). waveforms : (K, T) pilots or their LS
    estimate. sigma2 : noise variance estimate. stats : (e, b) per-antenna ISTA statistics
    of this frame. iterations : alternation rounds. n_subarrays : Q of the last round.
    """

    faulty: np.ndarray
    z: np.ndarray
    coarse_theta: np.ndarray
    coarse_r: np.ndarray
    theta: np.ndarray
    r: np.ndarray
    gains: np.ndarray
    waveforms: np.ndarray
    sigma2: float
    stats: tuple = field(repr=False, default=())
    iterations: int = 0
    n_subarrays: int = 0

    @property
    def n_targets(self) -> int:
        return int(self.theta.size)


def model_signal(array: ULA, theta, r, gains, waveforms) -> np.ndarray:
    """Fault-free model x_t = A(theta, r) diag(beta) s_t, shape (N, T) (eq. (11))."""
    return steering(array, theta, r) @ (np.asarray(gains)[:, None] * waveforms)


def _min_size(array: ULA, min_subarray: int, n_targets: int) -> int:
    """Smallest subarray kept: ``min_subarray``, capped at N_sub for small arrays, and > K + 1."""
    return max(min(min_subarray, array.n_sub), n_targets + 2)


def estimate_order(Y: np.ndarray, array: ULA, faulty=(), min_subarray: int = 10, k_max: int = 8) -> int:
    """K by MDL: the median of the MDL orders of the fault-free subarray covariances."""
    subs = partition_subarrays(array.n_antennas, faulty, array.n_sub, _min_size(array, min_subarray, 1))
    if not subs:
        raise ValueError("n_targets=auto: no fault-free subarray to estimate the order from")
    T = Y.shape[1]
    orders = []
    for idx in subs:
        Yq = Y[idx]
        lam = np.linalg.eigvalsh(Yq @ Yq.conj().T / T)
        orders.append(mdl_order(lam, T, min(k_max, idx.size - 2)))
    return int(np.median(orders))


def _robust_polish(Y, array, theta, r, pilots, w, rounds: int = 3, factor: float = 4.0, max_share: float = 0.4):
    """Exact-model ML fit of the positions, excluding outlying antennas (undetected faults).

    Returns theta, r and the antenna weights used (0 on excluded antennas).

    After each fit, antennas whose residual power exceeds ``factor`` x the median are
    given zero weight and the fit is repeated (at most ``rounds`` times, and only while the
    outliers are fewer than ``max_share`` of the array: otherwise the model, not the
    antennas, is off).  With many faults (p_fault of several per cent) an unweighted first
    fit is biased enough that ISTA would flag most of the array.
    """
    w = w.copy()
    best = (theta, r)
    for _ in range(rounds):
        fit = refine_ml(Y, array, best[0], best[1], pilots, w=w)
        if not (np.all(np.isfinite(fit.theta)) and np.all(fit.r > 0)):
            break
        best = (fit.theta, fit.r)
        S = fit.pilots if pilots is None else pilots
        X = steering(array, fit.theta, fit.r) @ ((fit.gains[:, None] if pilots is not None else 1.0) * S)
        res = np.mean(np.abs(Y - X) ** 2, axis=1)
        out = (res > factor * np.median(res[w > 0])) & (w > 0)
        if not out.any() or out.sum() + np.sum(w == 0) > max_share * w.size:
            break
        w[out] = 0.0
    return best[0], best[1], w


def coarse_localize(Y: np.ndarray, array: ULA, n_targets: int, faulty=(), min_subarray: int = 10,
                    grid_size: int = 256):
    """Coarse positions by subarray MUSIC + robust triangulation (Sec. IV-A2).

    Returns theta (K,), r (K,) (ascending theta; NaN where triangulation failed) and Q.
    """
    subs = partition_subarrays(array.n_antennas, faulty, array.n_sub, _min_size(array, min_subarray, n_targets))
    if len(subs) < 2:
        raise ValueError(f"coarse localization: {len(subs)} usable fault-free subarray(s), need >= 2")
    angles, centres = subarray_angles(Y, array, subs, n_targets, grid_size)
    th, rr = np.empty(n_targets), np.empty(n_targets)
    for k in range(n_targets):
        th[k], rr[k], _ = triangulate(angles[:, k], centres)
    return th, rr, len(subs)


def detect_faults(Y: np.ndarray, array: ULA, pilots: np.ndarray | None = None, n_targets=None, *,
                  prior_faulty=(), kappa: float = 3.0, tau: float = 0.05, max_iter: int = 5,
                  min_subarray: int = 10, grid_size: int = 256, polish: bool = True,
                  start=None) -> Phase1Result:
    """Phase 1 of the paper: alternate coarse localization and ISTA fault detection.

    Parameters
    ----------
    Y : ndarray, shape (N, T), complex
        Snapshots of eq. (5).
    array : ULA
    pilots : ndarray, shape (K, T), optional
        Known probing signals; without them the waveforms are estimated.
    n_targets : int or "auto", optional
        K; taken from ``pilots`` when given; "auto" (or None without pilots) uses MDL.
    prior_faulty : iterable of int
        Faulty set to start from (streaming state).
    kappa, tau : float
        Shrinkage in noise standard deviations, and detection threshold on |z| (eq. 12).
    max_iter : int
        Alternation rounds at most (stops when the faulty set repeats).
    min_subarray, grid_size : int
        Smallest subarray kept; points of the sin(theta) MUSIC scan.
    polish : bool
        Refine the coarse positions by the exact-model ML fit before ISTA (see module doc).
    start : (theta, r), optional
        Tracking: skip the subarray search and start the ML fit from these positions (rows
        following the pilots), e.g. the previous frame's; ``coarse_theta``/``coarse_r`` of
        the result are then these positions.

    Returns
    -------
    Phase1Result

    Raises
    ------
    ValueError
        When fewer than two subarrays or no usable position can be formed.
    """
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != array.n_antennas:
        raise ValueError(f"snapshots: expected shape ({array.n_antennas}, T), got {Y.shape}")
    Yd = Y.astype(np.complex128)
    N = array.n_antennas
    if pilots is not None:
        pilots = np.asarray(pilots, dtype=np.complex128)
        if pilots.ndim != 2 or pilots.shape[1] != Y.shape[1]:
            raise ValueError(f"pilots: expected shape (K, {Y.shape[1]}), got {pilots.shape}")
        K = pilots.shape[0]
    elif n_targets in (None, "auto"):
        K = estimate_order(Yd, array, prior_faulty, min_subarray)
        if K < 1:
            raise ValueError("n_targets=auto: no target found (MDL order 0)")
    else:
        K = int(n_targets)
    faulty = np.unique(np.asarray(list(prior_faulty), dtype=int))
    seen = []
    res = None
    if start is not None:
        start = (np.asarray(start[0], float), np.asarray(start[1], float))
        if start[0].size != K:
            raise ValueError(f"start: expected {K} positions, got {start[0].size}")
    for it in range(1, max_iter + 1):
        w = np.ones(N)
        w[faulty] = 0.0
        if start is not None:
            (c_th, c_r), Q = start, 0
        else:
            c_th, c_r, Q = coarse_localize(Yd, array, K, faulty, min_subarray, grid_size)
            if not np.all(np.isfinite(c_th)):
                raise ValueError("coarse localization: a target's bearing lines do not intersect")
            if pilots is not None:
                perm = match_to_pilots(Yd, array, c_th, c_r, pilots, w)
                c_th, c_r = c_th[perm], c_r[perm]
        th, rr = c_th, c_r
        if polish:
            th, rr, w = _robust_polish(Yd, array, c_th, c_r, pilots, w)  # gains below skip the outliers too
        A = steering(array, th, rr)
        if pilots is not None:
            S = pilots
            gains = ls_gains(A, S, Yd, w=w)
        else:
            S = ls_waveforms(A, Yd, w=w)
            gains = np.ones(K, complex)
        X = A @ (gains[:, None] * S)
        sigma2 = float(np.median(np.mean(np.abs(Yd - X) ** 2, axis=1)))
        e, b = ista_stats(Yd, X)
        rho = noise_rho(X, sigma2, kappa)
        z, _ = ista_iterate(e, b, rho)
        new = np.flatnonzero(np.abs(z) > tau)
        res = Phase1Result(new, z, c_th, c_r, th, rr, gains, S, sigma2, (e, b), it, Q)
        if np.array_equal(new, faulty) or any(np.array_equal(new, s) for s in seen):
            break
        seen.append(faulty)
        faulty = new
    return res


# ----------------------------------------------------------------------------- block
class FaultDetector(Block):
    """Phase 1: detect faulty antennas (ISTA) and localize coarsely (subarray MUSIC + triangulation).

    Accumulates the per-antenna ISTA statistics across frames, so the faulty set improves
    with every frame. Once it has not changed for ``settle_frames`` frames, each frame runs a
    single round and, with ``track``, skips the subarray search: the ML fit starts from the
    previous frame's positions (meta ``coarse_method`` says "track" instead of
    "triangulation"). The full alternation runs again every ``recheck_every`` frames, when
    the set changes, or when a tracked fit is poor (noise estimate above twice the running
    one: a target jumped or appeared). Adds meta ``faulty``, ``coarse``,
    ``model_targets``, ``gains``, ``n_targets``, ``noise_var`` (entries follow pilot rows),
    and arrays ``waveforms`` when the frame carries no pilots.
    """

    params = (
        Param("n_targets", (int, str, type(None)), None,
              "K; null = rows of the pilots, or 'auto' (MDL) when the frame has none",
              check=n_targets_check),
        Param("kappa", float, 3.0, "ISTA shrinkage rho in noise standard deviations", check=positive),
        Param("tau", float, 0.05, "detection threshold on |z_n| after shrinkage (eq. 12)", check=non_negative),
        Param("max_iter", int, 5, "alternation rounds per frame at most", check=positive),
        Param("min_subarray", int, 10, "smallest fault-free subarray used (antennas)", check=positive),
        Param("grid_size", int, 256, "points of the subarray MUSIC scan in sin(theta)", check=positive),
        Param("polish", bool, True, "refine coarse positions by the exact-model ML fit before ISTA"),
        Param("forget", float, 1.0, "weight kept by past evidence per frame (1 = keep all)", check=unit_interval),
        Param("settle_frames", int, 3, "frames without change before the set counts as settled", check=positive),
        Param("recheck_every", int, 10, "full alternation every this many frames once settled", check=positive),
        Param("track", bool, True,
              "once settled, start from the previous frame's positions instead of the subarray search"),
        Param("max_fault_fraction", float, 0.25,
              "a frame flagging more than this share of antennas is not accumulated (bad fit)",
              check=lambda v: None if 0.0 < v <= 1.0 else "a value in (0, 1]"),
        Param("state_path", (str, type(None)), None, "JSON file to load the state from and save it to"),
    )
    requires = ("snapshots",)

    def start(self):
        self.e_acc = None
        self.b_acc = None
        self.faulty = np.zeros(0, dtype=int)
        self.unchanged = 0
        self.frames_seen = 0
        self.sigma2 = None
        self.last_model = None
        if self.state_path and os.path.exists(self.state_path):
            self.load_state(self.state_path)

    # -- state -----------------------------------------------------------------
    def state(self) -> dict:
        return {
            "version": 1,
            "n_antennas": None if self.e_acc is None else int(self.e_acc.size),
            "faulty": [int(i) for i in self.faulty],
            "e": None if self.e_acc is None else self.e_acc.tolist(),
            "b": None if self.b_acc is None else complex_to_json(self.b_acc),
            "frames": self.frames_seen,
            "noise_var": self.sigma2,
        }

    def load_state(self, path: str) -> None:
        st = load_json(path, f"block {self.name!r}")
        try:
            faulty = np.asarray(st["faulty"], dtype=int).reshape(-1)
            e = b = None
            if st.get("e") is not None:
                e = np.asarray(st["e"], dtype=float).reshape(-1)
                b = complex_from_json(st["b"])
                if e.size != b.size or not (np.all(np.isfinite(e)) and np.all(np.isfinite(b))):
                    raise ValueError("'e' and 'b' must be finite vectors of one length")
                if faulty.size and (faulty.min() < 0 or faulty.max() >= e.size):
                    raise ValueError(f"'faulty' indices outside 0..{e.size - 1}")
            frames = int(st.get("frames", 0))
            sigma2 = st.get("noise_var")
            sigma2 = None if sigma2 is None else float(sigma2)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"block {self.name!r}, state_path {path!r}: bad state field ({exc})") from None
        self.faulty, self.e_acc, self.b_acc, self.frames_seen, self.sigma2 = faulty, e, b, frames, sigma2
        self.unchanged = self.settle_frames  # a saved set counts as settled
        log.info("%s: resumed %d faulty antennas from %s", self.name, self.faulty.size, path)

    # -- processing ----------------------------------------------------------------
    def _phase1(self, Y, array, pilots):
        """One frame of Phase 1: tracked when settled, else the search; (result, tracked)."""
        settled = self.unchanged >= self.settle_frames and self.frames_seen % self.recheck_every != 0
        kw = dict(prior_faulty=self.faulty, kappa=self.kappa, tau=self.tau, min_subarray=self.min_subarray,
                  grid_size=self.grid_size, polish=self.polish)
        k_now = pilots.shape[0] if pilots is not None else None
        if (settled and self.track and self.last_model is not None and self.sigma2
                and (k_now is None or k_now == self.last_model[0].size)):
            try:
                res = detect_faults(Y, array, pilots, self.last_model[0].size, max_iter=1,
                                    start=self.last_model, **kw)
                if res.sigma2 <= 2.0 * self.sigma2:
                    return res, True
            except ValueError:
                pass  # poor or failed fit: search again
        try:
            return detect_faults(Y, array, pilots, self.n_targets, max_iter=1 if settled else self.max_iter,
                                 **kw), False
        except ValueError as exc:
            raise BadFrame(str(exc)) from None

    def process(self, frame):
        Y = frame.arrays["snapshots"]
        array = frame_array(frame)
        N = array.n_antennas
        if Y.ndim != 2 or Y.shape[0] != N:
            raise BadFrame(f"snapshots: expected ({N}, T), got {Y.shape}")
        if self.e_acc is not None and self.e_acc.size != N:
            if self.state_path:  # a state file for another array: a configuration error, say so and stop
                raise ValueError(f"block {self.name!r}, state_path {self.state_path!r}: the state holds "
                                 f"{self.e_acc.size} antennas, the frames {N}")
            raise BadFrame(f"snapshots: N={N} differs from the accumulated state's {self.e_acc.size}")
        (pilots,) = optional_finite(frame, "pilots")
        if pilots is not None and (pilots.ndim != 2 or pilots.shape[1] != Y.shape[1]):
            raise BadFrame(f"pilots: expected (K, {Y.shape[1]}), got {pilots.shape}")
        k_min = (pilots.shape[0] if pilots is not None else 1) + 2
        if Y.shape[1] < k_min:
            raise BadFrame(f"snapshots: T={Y.shape[1]} snapshots, need at least {k_min}")
        if not np.any(Y):
            raise BadFrame("snapshots: all zero")
        res, tracked = self._phase1(Y, array, pilots)
        e, b = res.stats
        if not (np.all(np.isfinite(e)) and np.all(np.isfinite(b)) and np.isfinite(res.sigma2)
                and res.sigma2 > 0):
            raise BadFrame("fault detection gave degenerate statistics; frame not accumulated")
        # Commit only a healthy frame: one whose own faulty set, and the set it would leave
        # in the accumulated evidence, are both plausible (a bad fit reads as many faults).
        limit = self.max_fault_fraction * N
        committed = False
        if res.faulty.size <= limit:
            e_acc = e.copy() if self.e_acc is None else self.forget * self.e_acc + e
            b_acc = b.copy() if self.b_acc is None else self.forget * self.b_acc + b
            # one outlying frame moves the running noise level by a factor 2 at most
            s2 = res.sigma2 if self.sigma2 is None else \
                0.9 * self.sigma2 + 0.1 * float(np.clip(res.sigma2, self.sigma2 / 2, self.sigma2 * 2))
            z, _ = ista_iterate(e_acc, b_acc, self.kappa * np.sqrt(s2 * np.mean(e_acc)))
            cand = np.flatnonzero(np.abs(z) > self.tau)
            if cand.size <= limit:
                self.unchanged = self.unchanged + 1 if np.array_equal(cand, self.faulty) else 0
                self.e_acc, self.b_acc, self.sigma2, self.faulty = e_acc, b_acc, s2, cand
                self.frames_seen += 1
                self.last_model = (res.theta, res.r)
                committed = True
        if not committed:
            log.warning("%s: frame seq=%s is a poor fit (%d antennas flagged); not accumulated",
                        self.name, frame.seq, res.faulty.size)
        frame.meta.update(
            faulty=[int(i) for i in self.faulty],
            coarse=positions_meta(res.coarse_theta, res.coarse_r, sort=False),
            model_targets=positions_meta(res.theta, res.r, sort=False),
            gains=[[float(g.real), float(g.imag)] for g in res.gains],
            n_targets=res.n_targets,
            coarse_method="track" if tracked else "triangulation",
            noise_var=float(res.sigma2),
        )
        if pilots is None:
            frame.arrays["waveforms"] = res.waveforms.astype(np.complex64)
        return frame

    def close(self):
        # close() runs also after Ctrl-C or another block's failure: the state is never lost
        if self.state_path and getattr(self, "e_acc", None) is not None:
            save_json_atomic(self.state_path, self.state())
