"""The proposed chain as one call, with a full-array fallback: no single point of failure.

``localize(Y, array, pilots)`` runs the same core functions the streaming blocks run, with
no sockets::

    >>> import numpy as np, nearfield as nf
    >>> rng = np.random.default_rng(1)
    >>> sc = nf.paper_scenario(rng, snr_db=20)
    >>> est = nf.localize(sc.sample(rng), sc.array, sc.pilots)
    >>> est.theta, est.r, est.faulty, est.status, est.theta_std    # doctest: +SKIP

Paths
-----
1. A known HI vector ``hi`` (N,) (e.g. from :func:`nearfield.calibrate` on a reference
   transmitter) is applied first (:func:`~nearfield.estimators.reference.apply_hi`: the
   data are divided by it; dead channels are zeroed and weighted 0).
2. **Chain** (the paper's three phases + the exact-model refinement):
   Phase 1 (:func:`~.phase1.detect_faults`) -> Phase 2 (:func:`~.phase2.calibrate_phases`)
   -> Phase 3 (:func:`~.phase3.fine_positions`).
3. **Fallback** (:func:`~.fullarray.full_array_localize`, the full-array search + ML, no
   fault-free subarray needed) when ``fallback="auto"`` and one of the *triggers* holds:

   * ``small_array`` -- N < ``small_array`` (20 by default: fewer than two subarrays of the
     paper's minimum 10 antennas; N = 4..16 arrays have subarrays of 2-4 antennas);
   * ``phase1_failed`` -- Phase 1 raises (fewer than two usable fault-free subarrays, bearing
     lines that do not intersect, MDL order 0, ...);
   * ``dense_faults`` -- Phase 1 flags more than ``fault_share`` of the antennas (25 %): the
     sparse-fault hypothesis does not hold (dense per-channel gain/phase errors, an
     uncalibrated receiver), so the subarray estimates and Phase 2 are not trustworthy;
   * ``chain_mismatch`` -- the chain's final fit fails the model check
     (:func:`~.uncertainty.model_check`) and the full-array fit has a clearly lower residual
     ratio (sigma2_fit / sigma2_floor lower by more than 3 / sqrt(N_eff T), three standard
     deviations of the ratio under the model) and either passes the check, has a worst
     per-target test statistic below the chain's, or has a ratio below 0.8 x the chain's:
     e.g. targets closer than a subarray
     beamwidth, which the subarrays merge (only with ``refine``: the model check tests an
     ML fit, which the paper's un-refined MUSIC estimate is not).

   ``fallback="never"`` runs the chain only (errors propagate: the paper as written);
   ``"always"`` the full-array path only.

Every result carries, per target, a ``status`` (``"ok"`` from the chain; ``"fallback"`` when
the full-array path produced a target it judged sound; otherwise the full-array words
``"model_mismatch"``, ``"range_at_bound"``, ``"unresolved"``), 1-sigma error bars
``theta_std`` / ``r_std`` (rad, m; the CRB at the estimate with the estimated gains or
waveforms and noise level, :func:`~.uncertainty.estimate_uncertainty`), the ``residual``
(mean squared fit residual per antenna and snapshot) and, in ``diagnostics``, the path
(``"chain"`` or ``"fallback"``), the trigger (``fallback_reason``) and the model check
(``model_check`` dict; its ``ratio`` ~ 1 when the model holds).  Ranges always lie in the
range window ``r_bounds`` (default :meth:`nearfield.array.ULA.range_window`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..array import ULA
from ..ml import refine_ml
from ..steering import steering
from .interface import Estimate
from .model_error import model_error_bars
from .phase1 import detect_faults
from .phase2 import calibrate_phases
from .phase3 import fine_positions
from .reference import apply_hi, dead_channels
from .uncertainty import assess_estimate

#: Fallback triggers, as reported in ``diagnostics["fallback_reason"]``.
FALLBACK_REASONS = ("requested", "small_array", "phase1_failed", "dense_faults", "chain_mismatch")


@dataclass
class Localization(Estimate):
    """Result of :func:`localize`: an :class:`~nearfield.estimators.interface.Estimate` plus the
    intermediate estimates; per-target arrays follow the pilot rows when pilots are given.

    Attributes (besides Estimate's)
    -------------------------------
    coarse_theta, coarse_r : (K,) Phase-1 triangulation (the paper's coarse estimate); on the
        fallback path the full-array grid detection.
    music_theta, music_r : (K,) Phase-3 decoupled MUSIC (the paper's final estimate); None on
        the fallback path.
    diagnostics : path, fallback_reason, model_check, noise_var, r_bounds, phase1_iterations,
        n_subarrays, z (N,), spectra (chain), full_array (fallback diagnostics).
    """

    coarse_theta: np.ndarray | None = None
    coarse_r: np.ndarray | None = None
    music_theta: np.ndarray | None = None
    music_r: np.ndarray | None = None

    @property
    def path(self) -> str:
        """``"chain"`` or ``"fallback"``."""
        return str(self.diagnostics.get("path", "chain"))


def _check_inputs(Y, array, hi, fallback, r_bounds):
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != array.n_antennas:
        raise ValueError(f"Y: expected ({array.n_antennas}, T) snapshots, got shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y: contains NaN or Inf")
    if fallback not in ("auto", "never", "always"):
        raise ValueError(f"fallback: expected 'auto', 'never' or 'always', got {fallback!r}")
    lo, hi_r = array.range_window() if r_bounds is None else (float(r_bounds[0]), float(r_bounds[1]))
    if not (0 < lo < hi_r and np.isfinite(hi_r)):
        raise ValueError(f"r_bounds: expected 0 < r_min < r_max < inf (metres), got {r_bounds!r}")
    Y = Y.astype(np.complex128)
    Y_raw = Y
    w = np.ones(array.n_antennas)
    dead = np.zeros(0, int)
    if hi is not None:
        hv = np.asarray(hi, complex).reshape(-1)
        if hv.shape != (array.n_antennas,) or not np.all(np.isfinite(hv)):
            raise ValueError(f"hi: expected a finite ({array.n_antennas},) complex HI vector, got shape {hv.shape}")
        dead = dead_channels(hv)
        live = np.ones(hv.size, bool)
        live[dead] = False
        # after the division antenna n's noise is scaled by 1/|hi_n|: weight |hi_n|^2 (ML), 0 when dead
        w = np.where(live, np.abs(hv) ** 2, 0.0)
        w = w / np.mean(w[live])
        Y = apply_hi(Y, hv)
    return Y_raw, Y, (lo, hi_r), w, dead


def _fallback_result(Y, array, pilots, n_targets, hi, r_bounds, reason, full_kw, chain=None) -> Localization:
    """The full-array path's result as a Localization (status "fallback" for sound targets)."""
    from .fullarray import full_array_localize  # imported on use: it compiles a numba kernel

    k = None if n_targets in (None, "auto") or pilots is not None else int(n_targets)
    res = full_array_localize(Y, array, k, pilots, hi=hi, r_bounds=r_bounds, **(full_kw or {}))
    return _from_full(res, array, hi, reason, chain)


def _from_full(res, array, hi, reason, chain=None) -> Localization:
    status = ["fallback" if s == "ok" else s for s in res.status]
    dead = np.zeros(0, int) if hi is None else dead_channels(np.asarray(hi))
    mc = res.diagnostics["model_check"]
    diag = {
        "path": "fallback",
        "fallback_reason": reason,
        "model_check": mc,
        "noise_var": float(res.sigma2),
        "r_bounds": res.diagnostics["r_bounds"],
        "full_array": res.diagnostics,
        "waveforms": res.waveforms,
    }
    if chain is not None:
        diag["chain"] = chain
    c_hat = None if hi is None else np.asarray(hi, complex)
    return Localization(
        res.theta,
        res.r,
        res.gains,
        dead,
        c_hat,
        status,
        res.theta_std,
        res.r_std,
        float(res.residual),
        diag,
        coarse_theta=res.diagnostics["init_theta"],
        coarse_r=res.diagnostics["init_r"],
    )


def localize(
    Y: np.ndarray,
    array: ULA,
    pilots: np.ndarray | None = None,
    n_targets=None,
    *,
    hi: np.ndarray | None = None,
    fallback: str = "auto",
    r_bounds=None,
    refine: bool = True,
    calibration: str = "circular",
    detector: dict | None = None,
    music: dict | None = None,
    full: dict | None = None,
    fault_share: float = 0.25,
    small_array: int = 20,
    mismatch_alpha: float = 0.01,
) -> Localization:
    """Localize the targets in one block of snapshots: the chain, or the full-array fallback (module doc).

    Parameters
    ----------
    Y : ndarray, shape (N, T), complex
        Snapshots of eq. (5).
    array : ULA
    pilots : ndarray, shape (K, T), optional
        Known probing signals; estimated from the data when None.
    n_targets : int or "auto", optional
        K; from ``pilots`` when given, MDL when "auto"/None without pilots.
    hi : ndarray, shape (N,), complex, optional
        Known HI vector (:func:`nearfield.calibrate`), applied before anything else.
    fallback : {"auto", "never", "always"}
        When to use the full-array path (module doc: triggers).
    r_bounds : (float, float), optional
        Range window in metres; :meth:`ULA.range_window` by default.  Every range lies in it.
    refine : bool
        Exact-model ML refinement after the MUSIC stage (False: the paper as written).
    calibration : {"circular", "unwrap"}
        Phase-2 estimator.
    detector, music, full : dict, optional
        Extra keyword arguments of :func:`~.phase1.detect_faults`, :func:`~.phase3.decoupled_music`
        and :func:`~.fullarray.full_array_localize`.
    fault_share : float
        ``dense_faults`` trigger: Phase 1 flagging more than this share of the antennas.
    small_array : int
        ``small_array`` trigger: arrays with fewer antennas go to the full-array path.
    mismatch_alpha : float
        False-alarm rate of the model check (the ``model_mismatch`` status and the
        ``chain_mismatch`` trigger).

    Returns
    -------
    Localization
        ``status`` (K,), ``theta_std``/``r_std`` (K,) rad/m, ``residual``; ``diagnostics``
        ``path``, ``fallback_reason`` (None on the chain path), ``model_check``, ``noise_var``.

    Raises
    ------
    ValueError
        Bad input; with ``fallback="never"`` also every chain failure.
    """
    Y_raw, Y, (lo, hi_r), w, dead = _check_inputs(Y, array, hi, fallback, r_bounds)

    def full_path(reason, chain=None):  # the full-array path applies hi itself (and its weights)
        return _fallback_result(Y_raw, array, pilots, n_targets, hi, (lo, hi_r), reason, full, chain)

    if fallback == "always":
        return full_path("requested")
    if fallback == "auto" and array.n_antennas < small_array:
        return full_path("small_array")
    try:
        p1 = detect_faults(Y, array, pilots, n_targets, **(detector or {}))
    except ValueError as exc:
        if fallback == "never":
            raise
        out = full_path("phase1_failed")
        out.diagnostics["phase1_error"] = str(exc)
        return out
    n_flag = np.setdiff1d(p1.faulty, dead).size
    if fallback == "auto" and n_flag > fault_share * (array.n_antennas - dead.size):
        out = full_path("dense_faults")
        out.diagnostics["phase1_faulty"] = p1.faulty
        return out
    c_ph, Yc = calibrate_phases(Y, array, p1.faulty, p1.theta, p1.r, p1.gains, p1.waveforms, calibration)
    R = (Yc @ Yc.conj().T) / Y.shape[1]
    est = fine_positions(
        R, Yc, array, p1.coarse_theta, p1.coarse_r, pilots, refine=refine, fallback=(p1.theta, p1.r), **(music or {})
    )
    S = None if pilots is None else np.asarray(pilots, np.complex128)
    fin = finish_estimate(
        Yc, array, est.theta, est.r, est.gains, S, w, (lo, hi_r), refine=refine, mismatch_alpha=mismatch_alpha
    )
    th, rr, gains, mc = fin["theta"], fin["r"], fin["gains"], fin["model_check"]
    c_hat = c_ph if hi is None else np.asarray(hi, complex) * c_ph
    diag = {
        "path": "chain",
        "fallback_reason": None,
        "model_check": mc,
        "noise_var": p1.sigma2,
        "r_bounds": (lo, hi_r),
        "phase1_iterations": p1.iterations,
        "n_subarrays": p1.n_subarrays,
        "z": p1.z,
        "spectra": est.spectra,
        "waveforms": p1.waveforms,
    }
    if fallback == "auto" and refine and np.any(mc["mismatch"]):  # (un-refined MUSIC is not an ML fit)
        alt = full_path("chain_mismatch", chain={"theta": th, "r": rr, "model_check": mc})
        amc = alt.diagnostics["model_check"]
        # "clearly lower": beyond 3 standard deviations of the ratio under the model, ~1/sqrt(N_eff T)
        # (a chain fit that only just fails -- e.g. Phase-2 phase noise on a few antennas -- stays)
        margin = 3.0 / np.sqrt(max(float(np.sum(w > 0)) * Y.shape[1], 1.0))
        # and the full-array fit must also be better judged target by target: it passes the
        # check, its worst target's test statistic is below the chain's worst, or its ratio is
        # much lower (a target flagged just past the 1 % threshold must not keep a wrong chain fit)
        better = (
            not np.any(amc["mismatch"])
            or float(np.max(amc["F"])) < float(np.max(mc["F"]))
            or amc["ratio"] < 0.8 * mc["ratio"]
        )
        if amc["ratio"] < mc["ratio"] - margin and better:
            return alt
        diag["fallback_rejected"] = {"theta": alt.theta, "r": alt.r, "model_check": amc}
    th_std, r_std, status = fin["theta_std"], fin["r_std"], fin["status"]
    diag["crb"] = fin["crb"]
    faulty = np.union1d(p1.faulty, dead).astype(int)
    return Localization(
        th,
        rr,
        gains,
        faulty,
        c_hat,
        status,
        th_std,
        r_std,
        float(mc["residual"]),
        diag,
        coarse_theta=p1.coarse_theta,
        coarse_r=p1.coarse_r,
        music_theta=est.music_theta,
        music_r=est.music_r,
    )


def target_status(
    array: ULA, theta, r, mismatch, r_bounds, w=None, base: str = "ok", check_mismatch: bool = True
) -> list[str]:
    """Status word per target: ``unresolved`` (steering correlation with another target > 0.9),
    ``range_at_bound`` (range at an edge of ``r_bounds``), ``model_mismatch`` (the model check
    flags it, when ``check_mismatch``), else ``base`` ("ok", or "fallback" on the full-array path)."""
    theta, r = np.atleast_1d(theta), np.atleast_1d(r)
    lo, hi_r = r_bounds
    w = np.ones(array.n_antennas) if w is None else np.asarray(w, float)
    A = steering(array, theta, r)
    G = np.abs(A.conj().T @ (w[:, None] * A)) / max(float(np.sum(w)), 1e-300)
    np.fill_diagonal(G, 0.0)
    out = []
    for k in range(theta.size):
        if G[k].size and G[k].max() > 0.9:
            out.append("unresolved")
        elif r[k] <= lo * (1 + 1e-6) or r[k] >= hi_r * (1 - 1e-6):
            out.append("range_at_bound")
        elif check_mismatch and mismatch[k]:
            out.append("model_mismatch")
        else:
            out.append(base)
    return out


def finish_estimate(
    Y: np.ndarray,
    array: ULA,
    theta,
    r,
    gains,
    pilots: np.ndarray | None,
    w,
    r_bounds,
    *,
    refine: bool = True,
    mismatch_alpha: float = 0.01,
    base: str = "ok",
    stats=None,
) -> dict:
    """Bound the ranges, run the model check, the error bars and the status words of a final estimate.

    Parameters
    ----------
    Y : (N, T) calibrated snapshots the estimate was fitted to.  theta, r : (K,) rad, m.
    gains : (K,) complex or None.  pilots : (K, T) or None (blind: LS waveforms).
    w : (N,) antenna weights (0 = excluded).  r_bounds : (r_min, r_max) metres.
    refine : the estimate is an ML fit (the model check then sets ``model_mismatch``).
    base : status of a sound target ("ok" or "fallback").
    stats : (Y S^H, ||y_n||^2) of these Y and pilots when the caller's fit formed them (``MLFit.stats``).

    Returns
    -------
    dict
        ``theta``, ``r`` (inside ``r_bounds``: an estimate outside is refitted by
        :func:`nearfield.ml.refine_ml` with the window), ``gains``, ``status`` (K,),
        ``theta_std``, ``r_std`` (K,) rad/m (the CRB at the estimate; with a model mismatch a static model
        error counted T-fold, :func:`~.model_error.model_error_bars`), ``model_check`` (dict), ``residual``, ``crb``.
    """
    lo, hi_r = r_bounds
    th, rr = np.atleast_1d(np.asarray(theta, float)), np.atleast_1d(np.asarray(r, float))
    w = np.ones(array.n_antennas) if w is None else np.asarray(w, float)
    if np.any(rr < lo) or np.any(rr > hi_r) or not np.all(np.isfinite(rr)):
        # the chain's refinement has no range window: refit inside it (never 1e14 m)
        fit = refine_ml(
            Y, array, th, np.clip(np.nan_to_num(rr, nan=hi_r, posinf=hi_r), lo, hi_r), pilots, w=w, r_min=lo, r_max=hi_r
        )
        th, rr, gains = fit.theta, fit.r, (fit.gains if pilots is not None else None)
    # model check + error bars of this frame's data in one pass (no cache across frames)
    g = gains if pilots is not None else None
    mc, th_std, r_std, ud = assess_estimate(Y, array, th, rr, pilots, g, w, mismatch_alpha, stats=stats)
    status = target_status(array, th, rr, mc["mismatch"], (lo, hi_r), w, base, check_mismatch=refine)
    if refine:  # a static model error does not average over the snapshots (with pilots: the check's own test)
        F = mc["F"] if pilots is not None and mc["per_target"] else None
        if F is None or np.any(mc["mismatch"]):
            th_std, r_std, _ = model_error_bars(
                Y, array, th, rr, gains, pilots, w, mc, th_std, r_std, mismatch_alpha, per_target_F=F
            )
    return {
        "theta": th,
        "r": rr,
        "gains": gains,
        "status": status,
        "theta_std": th_std,
        "r_std": r_std,
        "model_check": mc,
        "residual": float(mc["residual"]),
        "crb": ud["crb"],
    }


def paper(Y: np.ndarray, array: ULA, pilots: np.ndarray | None = None, n_targets=None, **options) -> Localization:
    """The three phases as the paper writes them (:func:`localize` with ``refine=False``, no fallback)."""
    options.setdefault("fallback", "never")
    return localize(Y, array, pilots, n_targets, refine=False, **options)
