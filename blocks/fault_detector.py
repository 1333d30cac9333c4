"""Phase 1 as a streaming block: faulty-antenna detection and coarse localization.

The math is :func:`nearfield.estimators.phase1.detect_faults`; this block accumulates the
per-antenna ISTA statistics across frames (the impairments are static), so the faulty set
improves with every frame, tracks settled targets, and keeps its state in ``state_path``.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from nearfield.block import BadFrame, Block, Param, n_targets_check, non_negative, positive, unit_interval
from nearfield.contract import (ARRAY, COARSE, COARSE_METHOD, FALLBACK_REASON, FAULTY, GAINS, MODEL_TARGETS,
                                N_TARGETS, NOISE_VAR, PILOTS, SNAPSHOTS, WAVEFORMS)
from nearfield.estimators.phase1 import detect_faults
from nearfield.frame import positions_meta
from nearfield.ista import ista_solve
from nearfield.state import complex_from_json, complex_to_json, load_json, save_json_atomic

log = logging.getLogger(__name__)


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
        Param("fallback", str, "auto",
              "auto: a frame the subarray stage cannot handle (Phase 1 fails, more than max_fault_fraction "
              "flagged, N < small_array) is localized by the full-array search instead of dropped; never: dropped",
              choices=("auto", "never")),
        Param("small_array", int, 20, "arrays with fewer antennas always take the full-array path", check=positive),
    )
    reads = (ARRAY, SNAPSHOTS, PILOTS)
    adds = (FAULTY, COARSE, MODEL_TARGETS, GAINS, N_TARGETS, COARSE_METHOD, NOISE_VAR, WAVEFORMS, FALLBACK_REASON)

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
        """Resume from a state file; ``ValueError`` naming the block, the file and the field when it is bad."""
        st = load_json(path, f"block {self.name!r}")
        field = "faulty"
        try:
            faulty = np.asarray(st["faulty"], dtype=int).reshape(-1)
            if faulty.size and faulty.min() < 0:
                raise ValueError("negative antenna indices")
            e = b = None
            if st.get("e") is not None:
                field = "e"
                e = np.asarray(st["e"], dtype=float).reshape(-1)
                field = "b"
                b = complex_from_json(st["b"])
                field = "e"
                if e.size != b.size or not (np.all(np.isfinite(e)) and np.all(np.isfinite(b))):
                    raise ValueError("'e' and 'b' must be finite vectors of one length")
                if np.any(e < 0):
                    raise ValueError("negative signal energies")
                field = "faulty"
                if faulty.size and faulty.max() >= e.size:
                    raise ValueError(f"indices outside 0..{e.size - 1}")
            field = "frames"
            frames = st.get("frames", 0)
            if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
                raise ValueError(f"expected an integer >= 0, got {frames!r}")
            field = "noise_var"
            sigma2 = st.get("noise_var")
            sigma2 = None if sigma2 is None else float(sigma2)
            if sigma2 is not None and not (np.isfinite(sigma2) and sigma2 >= 0):
                raise ValueError(f"expected a finite value >= 0, got {sigma2!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"block {self.name!r}, state_path {path!r}: bad state field {field!r} ({exc})") from None
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
        x = self.read(frame)
        array, Y, pilots = x["array"], x["snapshots"], x["pilots"]
        N = array.n_antennas
        if self.e_acc is not None and self.e_acc.size != N:
            raise self.state_size_error(self.e_acc.size, N)
        k_min = (pilots.shape[0] if pilots is not None else 1) + 2
        if Y.shape[1] < k_min:
            raise BadFrame(f"snapshots: T={Y.shape[1]} snapshots, need at least {k_min}")
        if not np.any(Y):
            raise BadFrame("snapshots: all zero")
        if self.fallback == "auto" and N < self.small_array:
            return self._fallback_frame(frame, Y, array, pilots, "small_array")
        try:
            res, tracked = self._phase1(Y, array, pilots)
        except BadFrame as exc:
            if self.fallback != "auto":
                raise
            return self._fallback_frame(frame, Y, array, pilots, "phase1_failed", str(exc))
        if self.fallback == "auto" and res.faulty.size > self.max_fault_fraction * N:
            return self._fallback_frame(frame, Y, array, pilots, "dense_faults")
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
            z = ista_solve(e_acc, b_acc, self.kappa * np.sqrt(s2 * np.mean(e_acc)))
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

    # -- full-array fallback (no fault-free subarray needed) -------------------------------
    def _fallback_frame(self, frame, Y, array, pilots, reason: str, detail: str = ""):
        """Localize the frame with :func:`~nearfield.estimators.fullarray.full_array_localize` instead of
        dropping it: meta ``coarse_method`` "fallback", ``fallback_reason``, ``faulty`` the dead channels,
        ``coarse``/``model_targets`` the full-array fit; nothing is accumulated into the fault evidence."""
        from nearfield.estimators.fullarray import full_array_localize  # numba kernel: compiled on first use

        k = None if pilots is not None or self.n_targets in (None, "auto") else int(self.n_targets)
        try:
            fa = full_array_localize(Y, array, k, pilots)
        except ValueError as exc:  # LinAlgError included: unusable data
            raise BadFrame(f"full-array fallback ({reason}) failed: {exc}") from None
        log.debug("%s: frame seq=%s localized by the full-array fallback (%s) %s", self.name, frame.seq, reason,
                  detail)
        dead = np.flatnonzero(np.asarray(fa.diagnostics["weights"]) == 0)
        excluded = set(int(i) for i in fa.diagnostics.get("excluded", []))
        frame.meta.update(
            faulty=[int(i) for i in dead if int(i) not in excluded],
            coarse=positions_meta(fa.diagnostics["init_theta"], fa.diagnostics["init_r"], sort=False),
            model_targets=positions_meta(fa.theta, fa.r, sort=False),
            gains=[[float(g.real), float(g.imag)] for g in fa.gains],
            n_targets=int(fa.theta.size),
            coarse_method="fallback",
            fallback_reason=reason,
            noise_var=float(fa.sigma2),
        )
        if pilots is None:
            frame.arrays["waveforms"] = fa.waveforms.astype(np.complex64)
        return frame

    def checkpoint(self) -> None:
        """Save the accumulated state to ``state_path`` atomically (nothing to save before a frame)."""
        if self.state_path and getattr(self, "e_acc", None) is not None:
            save_json_atomic(self.state_path, self.state())

    def close(self):
        self.checkpoint()  # close() runs also after Ctrl-C or another block's failure: the state is never lost
