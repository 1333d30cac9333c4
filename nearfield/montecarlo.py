"""One Monte Carlo trial of the localization schemes, the unit of every experiment.

A trial draws a scenario (HI vector, gains, pilots, noise) from a seeded Generator,
runs each requested scheme on the same snapshots, and returns plain numbers: per-target
squared errors in angle and range, the fault-detection counts, the HI-vector NMSE, the
time spent, and the CRB diagonal of that realisation.  Every scheme is a localizer of
:data:`nearfield.estimators.LOCALIZERS` (the functions the streaming blocks call), run as
``localizer(Y, array, pilots, K)``:

* ``proposed`` -- the three phases with the exact-model refinement (:func:`nearfield.localize`);
* ``paper`` -- the three phases as the paper writes them (no refinement);
* ``coarse`` -- Phase 1's triangulation alone;
* ``bcd`` -- the BCD baseline of Sec. III-B (:mod:`nearfield.estimators.bcd`);
* ``music2d`` -- 2-D near-field MUSIC on the uncalibrated covariance (:mod:`nearfield.estimators.music2d`).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .bounds import crb
from .estimators import LOCALIZERS, Estimate
from .impairments import hi_nmse
from .scenario import PAPER_TARGETS, paper_scenario

SCHEMES = LOCALIZERS  # the schemes by name: the core's table of localizers


def match_errors(theta, r, true_theta, true_r):
    """Per-target errors after pairing estimates with truths by sorted angle.

    Returns d_theta (K,), d_r (K,) in the truth's order; NaN-filled estimates (a scheme
    that found fewer targets) count as errors of pi/2 rad and of the true range.
    """
    K = len(true_theta)
    th = np.full(K, np.nan)
    rr = np.full(K, np.nan)
    o = np.argsort(theta)[:K]
    t_order = np.argsort(true_theta)
    th[t_order[: o.size]] = np.asarray(theta)[o]
    rr[t_order[: o.size]] = np.asarray(r)[o]
    d_th = np.where(np.isfinite(th), th - true_theta, np.pi / 2)
    d_r = np.where(np.isfinite(rr), rr - true_r, true_r)
    return d_th, d_r


def correlate_waveforms(pilots: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Waveforms whose second row has correlation coefficient ``rho`` with the first.

    ``s_2 = rho s_1 + sqrt(1 - rho^2) s_ind`` with ``s_ind`` a fresh unit-modulus sequence
    (uniform phases, drawn from ``rng`` whatever ``rho`` is, so every ``rho`` sees the same
    draws); ``E|s_2|^2 = 1`` like the other rows and ``E[s_1^* s_2] = rho``.  ``rho = 1``
    gives identical (coherent) waveforms, e.g. two echoes of one transmitter.

    Parameters
    ----------
    pilots : ndarray, shape (K, T), complex, K >= 2
    rho : float in [0, 1]

    Returns
    -------
    ndarray, shape (K, T), complex128 (a copy; rows other than 1 unchanged)
    """
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho: expected a correlation coefficient in [0, 1], got {rho!r}")
    S = np.array(pilots, dtype=np.complex128)
    if S.ndim != 2 or S.shape[0] < 2:
        raise ValueError(f"rho: needs at least two targets, got pilots of shape {S.shape}")
    s_ind = np.exp(2j * np.pi * rng.random(S.shape[1]))
    S[1] = rho * S[0] + np.sqrt(1.0 - rho**2) * s_ind
    return S


def run_trial(
    seed: int,
    snr_db: float,
    *,
    n_antennas: int = 256,
    p_fault: float = 0.02,
    targets=PAPER_TARGETS,
    n_snapshots: int = 100,
    schemes=("proposed",),
    pilots: bool = True,
    rho: float | None = None,
) -> dict:
    """One trial: draw a scenario with ``numpy.random.default_rng(seed)`` and run ``schemes``.

    Parameters
    ----------
    seed : int
    snr_db : float
        SNR of the signal part only, ``E_t||diag(c) A diag(beta) s_t||^2 / (N sigma^2)``
        (:mod:`nearfield.scenario`; errata 1).
    n_antennas, p_fault, targets, n_snapshots
        N, fault probability, ((theta rad, r m), ...), T.
    schemes : tuple of str
        Names in :data:`nearfield.estimators.LOCALIZERS`.
    pilots : bool
        Give the schemes the pilots (False: blind, K given).
    rho : float, optional
        Correlation coefficient of the waveforms of targets 1 and 2
        (:func:`correlate_waveforms`); None keeps independent pilots.

    Returns
    -------
    dict
        ``crb_theta``/``crb_range``: (K,) CRB diagonal (perfect HI knowledge, known waveforms),
        and per scheme ``{name: {"d_theta", "d_range" (K,), "missed", "false_alarms", "nmse",
        "time_s", "error", "flagged"}}`` (``missed`` counts the faults with |c - 1| > 0.3 that
        were not detected -- smaller phase errors barely matter and are not counted; None
        where the scheme does not detect faults; ``error`` the exception text of a scheme
        that raised, else None; ``flagged`` the number of targets whose status is not "ok").
    """
    rng = np.random.default_rng(seed)
    sc = paper_scenario(
        rng, n_antennas=n_antennas, snr_db=snr_db, p_fault=p_fault, n_snapshots=n_snapshots, targets=targets
    )
    if rho is not None:  # rebuilt so that sigma^2 follows the new signal power
        sc = dataclasses.replace(sc, pilots=correlate_waveforms(sc.pilots, rho, rng))
    Y = sc.sample(rng)
    K = sc.theta.size
    C = crb(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.sigma2, sc.c)
    d = np.diag(C)
    out = {
        "seed": seed,
        "snr_db": snr_db,
        "crb_theta": d[2 * K : 3 * K],
        "crb_range": d[3 * K :],
        "n_faulty": int(sc.faulty.size),
    }
    matters = set(np.flatnonzero(np.abs(sc.c - 1) > 0.3).tolist())
    truth_faulty = set(sc.faulty.tolist())
    for name in schemes:
        t0 = time.perf_counter()
        try:
            res = LOCALIZERS[name](Y, sc.array, sc.pilots if pilots else None, K)
            failed = None
        except (ValueError, np.linalg.LinAlgError) as exc:  # a scheme that cannot answer is a gross error
            res = Estimate(np.full(K, np.nan), np.full(K, np.nan))
            failed = str(exc)
        dt = time.perf_counter() - t0
        d_th, d_r = match_errors(res.theta, res.r, sc.theta, sc.r)
        det = None if res.faulty is None else set(np.asarray(res.faulty, dtype=int).tolist())
        out[name] = {
            "d_theta": d_th,
            "d_range": d_r,
            "time_s": dt,
            "error": failed,
            "missed": None if det is None else len(matters - det),
            "false_alarms": None if det is None else len(det - truth_faulty),
            "nmse": None if res.c_hat is None else hi_nmse(res.c_hat, sc.c),
            "flagged": sum(1 for st in res.status if st != "ok") if failed is None else K,
        }
    return out


def summarize(trials: list[dict], scheme: str, separation: float | None = None) -> dict:
    """RMSE per target-averaged (mean over targets of the squared errors) against sqrt(mean_k CRB_kk), and friends.

    Parameters
    ----------
    trials : list of dict
        :func:`run_trial` results.
    scheme : str
    separation : float, optional
        Smallest angular separation of the true targets (rad), for ``resolved``; None:
        ``resolved`` is NaN.

    Returns
    -------
    dict
        rmse_theta, rmse_range (over every trial, failures included), rcrb_theta, rcrb_range,
        their ratios; ``gross`` (share of trials with a position error above 10 x the CRB std
        in angle or range, or an exception), ``n_gross`` (their count), ``n_errors`` (trials in
        which the scheme raised: counted as gross, errors of pi/2 and the true range);
        ``rmse_theta_ok``/``rmse_range_ok`` and their ratios over the other trials;
        ``resolved`` (share of trials in which every estimate lies within half the
        separation of its own target in angle); missed and false alarms per trial, median
        NMSE, ``flagged`` (targets with a status other than "ok", per trial), mean time.
    """
    dth = np.array([t[scheme]["d_theta"] for t in trials])
    dr = np.array([t[scheme]["d_range"] for t in trials])
    cth = np.array([t["crb_theta"] for t in trials])
    cr = np.array([t["crb_range"] for t in trials])
    rmse_t, rmse_r = float(np.sqrt(np.mean(dth**2))), float(np.sqrt(np.mean(dr**2)))
    rcrb_t, rcrb_r = float(np.sqrt(np.mean(cth))), float(np.sqrt(np.mean(cr)))
    err = np.array([bool(t[scheme].get("error")) for t in trials])
    gross = np.any((np.abs(dth) > 10 * np.sqrt(cth)) | (np.abs(dr) > 10 * np.sqrt(cr)), axis=1) | err
    ok = ~gross
    rmse_t_ok = float(np.sqrt(np.mean(dth[ok] ** 2))) if ok.any() else float("nan")
    rmse_r_ok = float(np.sqrt(np.mean(dr[ok] ** 2))) if ok.any() else float("nan")
    rcrb_t_ok = float(np.sqrt(np.mean(cth[ok]))) if ok.any() else float("nan")
    rcrb_r_ok = float(np.sqrt(np.mean(cr[ok]))) if ok.any() else float("nan")
    resolved = float(np.mean(np.all(np.abs(dth) < separation / 2, axis=1))) if separation else float("nan")
    missed = [t[scheme]["missed"] for t in trials if t[scheme]["missed"] is not None]
    fa = [t[scheme]["false_alarms"] for t in trials if t[scheme]["false_alarms"] is not None]
    nmse = [t[scheme]["nmse"] for t in trials if t[scheme]["nmse"] is not None]
    flagged = [t[scheme]["flagged"] for t in trials if t[scheme].get("flagged") is not None]
    return {
        "trials": len(trials),
        "rmse_theta": rmse_t,
        "rmse_range": rmse_r,
        "rcrb_theta": rcrb_t,
        "rcrb_range": rcrb_r,
        "ratio_theta": rmse_t / rcrb_t,
        "ratio_range": rmse_r / rcrb_r,
        "gross": float(np.mean(gross)),
        "n_gross": int(np.sum(gross)),
        "n_errors": int(np.sum(err)),
        "rmse_theta_ok": rmse_t_ok,
        "rmse_range_ok": rmse_r_ok,
        "ratio_theta_ok": rmse_t_ok / rcrb_t_ok,
        "ratio_range_ok": rmse_r_ok / rcrb_r_ok,
        "resolved": resolved,
        "missed": float(np.mean(missed)) if missed else float("nan"),
        "false_alarms": float(np.mean(fa)) if fa else float("nan"),
        "nmse_median": float(np.median(nmse)) if nmse else float("nan"),
        "flagged": float(np.mean(flagged)) if flagged else float("nan"),
        "time_s": float(np.mean([t[scheme]["time_s"] for t in trials])),
    }
