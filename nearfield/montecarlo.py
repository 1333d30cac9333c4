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


def run_trial(seed: int, snr_db: float, *, n_antennas: int = 256, p_fault: float = 0.02,
              targets=PAPER_TARGETS, n_snapshots: int = 100, schemes=("proposed",), pilots: bool = True) -> dict:
    """One trial: draw a scenario with ``numpy.random.default_rng(seed)`` and run ``schemes``.

    Returns
    -------
    dict
        ``crb_theta``/``crb_range``: (K,) CRB diagonal (perfect HI knowledge), and per scheme
        ``{name: {"d_theta", "d_range" (K,), "missed", "false_alarms", "nmse", "time_s"}}``
        (``missed`` counts faults with |c - 1| > 0.3 not detected; None where the scheme
        does not detect faults).
    """
    rng = np.random.default_rng(seed)
    sc = paper_scenario(rng, n_antennas=n_antennas, snr_db=snr_db, p_fault=p_fault, n_snapshots=n_snapshots,
                        targets=targets)
    Y = sc.sample(rng)
    K = sc.theta.size
    C = crb(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.sigma2, sc.c)
    d = np.diag(C)
    out = {"seed": seed, "snr_db": snr_db, "crb_theta": d[2 * K:3 * K], "crb_range": d[3 * K:],
           "n_faulty": int(sc.faulty.size)}
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
            "d_theta": d_th, "d_range": d_r, "time_s": dt, "error": failed,
            "missed": None if det is None else len(matters - det),
            "false_alarms": None if det is None else len(det - truth_faulty),
            "nmse": None if res.c_hat is None else hi_nmse(res.c_hat, sc.c),
        }
    return out


def summarize(trials: list[dict], scheme: str) -> dict:
    """RMSE per target-averaged (mean over targets of the squared errors) against sqrt(mean_k CRB_kk), and friends.

    Returns rmse_theta, rmse_range, rcrb_theta, rcrb_range, their ratios, gross (share
    of trials with a position error above 10 x the CRB std in angle or range), missed and
    false alarms per trial, median NMSE, mean time.
    """
    dth = np.array([t[scheme]["d_theta"] for t in trials])
    dr = np.array([t[scheme]["d_range"] for t in trials])
    cth = np.array([t["crb_theta"] for t in trials])
    cr = np.array([t["crb_range"] for t in trials])
    rmse_t, rmse_r = float(np.sqrt(np.mean(dth**2))), float(np.sqrt(np.mean(dr**2)))
    rcrb_t, rcrb_r = float(np.sqrt(np.mean(cth))), float(np.sqrt(np.mean(cr)))
    gross = np.any((np.abs(dth) > 10 * np.sqrt(cth)) | (np.abs(dr) > 10 * np.sqrt(cr)), axis=1)
    missed = [t[scheme]["missed"] for t in trials if t[scheme]["missed"] is not None]
    fa = [t[scheme]["false_alarms"] for t in trials if t[scheme]["false_alarms"] is not None]
    nmse = [t[scheme]["nmse"] for t in trials if t[scheme]["nmse"] is not None]
    return {
        "trials": len(trials),
        "rmse_theta": rmse_t, "rmse_range": rmse_r, "rcrb_theta": rcrb_t, "rcrb_range": rcrb_r,
        "ratio_theta": rmse_t / rcrb_t, "ratio_range": rmse_r / rcrb_r,
        "gross": float(np.mean(gross)),
        "missed": float(np.mean(missed)) if missed else float("nan"),
        "false_alarms": float(np.mean(fa)) if fa else float("nan"),
        "nmse_median": float(np.median(nmse)) if nmse else float("nan"),
        "time_s": float(np.mean([t[scheme]["time_s"] for t in trials])),
    }
