"""Hard scenes for the full-array localizer (closely spaced, coherent, low SNR, small arrays).

Runs :func:`nearfield.estimators.fullarray.full_array_localize` alone (coarse grid +
sequential ML/RELAX + exact-model ML refinement) on seeded Monte Carlo trials and prints
one table row per scene:

    trials | fail = gross + exceptions | RMSE/CRB angle and range (worst target, gross
    trials left out) | 2-sigma coverage of the reported angle / range error bars | mean reported
    angle sigma / CRB |
    model_mismatch flags | seconds per trial

A (trial, target) is a *gross error* when its angle or range error exceeds 10 x the CRB
(the true-parameter CRB: with pilots the known-pilot CRB, blind the deterministic CRB with
unknown waveforms), or when the call raised.  The rows of the paper's default scenario
(N = 256, 30 GHz, 2 % faulty antennas whose phases the localizer does not know, three
targets; with pilots, or ``_blind``) also run plain 2-D MUSIC (``music2d_localize``) on the
same data; their CRB is the one with the HI known.

Usage::

    python benchmarks/hard_scenes.py --trials 20            # all rows
    python benchmarks/hard_scenes.py --trials 10 --rows pair05_pilots small9_k1_10
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

from nearfield.array import ULA, paper_array
from nearfield.bounds import crb_positions, crb_unknown_waveforms
from nearfield.estimators.fullarray import full_array_localize
from nearfield.scenario import (
    complex_noise,
    make_pilots,
    noise_variance,
    noiseless_signal,
    paper_scenario,
)

D2R = np.pi / 180


def _match(th_est, r_est, th, r, crb_t, crb_r):
    """Permutation of the estimates that best matches the truth (normalised by the CRB)."""
    cost = ((th_est[None, :] - th[:, None]) / crb_t[:, None]) ** 2 + (
        (r_est[None, :] - r[:, None]) / crb_r[:, None]
    ) ** 2
    _, cols = linear_sum_assignment(np.log1p(cost))
    return cols


def scene(name, rng):
    """(array, theta, r, gains, S, c, snr_db, pilots_known, k_given)."""
    T = 100
    if name.startswith("paper"):
        snr = {"paper_m10": -10.0, "paper_m15": -15.0, "paper_20": 20.0}[name.removesuffix("_blind")]
        sc = paper_scenario(rng, snr_db=snr)
        return sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.c, snr, not name.endswith("_blind"), 3
    arr = paper_array(256)
    g2 = np.exp(2j * np.pi * rng.random(2))
    if name == "pair05_pilots":
        return (
            arr,
            np.array([15.0, 15.5]) * D2R,
            np.array([10.0, 12.0]),
            g2,
            make_pilots(2, T, rng),
            None,
            20.0,
            True,
            2,
        )
    if name == "pair1_blind":
        return (
            arr,
            np.array([15.0, 16.0]) * D2R,
            np.array([10.0, 12.0]),
            g2,
            make_pilots(2, T, rng),
            None,
            20.0,
            False,
            2,
        )
    if name in ("coherent_blind", "coherent_pilots"):
        s = make_pilots(1, T, rng)
        return (
            arr,
            np.array([15.0, -10.0]) * D2R,
            np.array([10.0, 14.0]),
            g2,
            np.repeat(s, 2, axis=0),
            None,
            20.0,
            name.endswith("pilots"),
            2,
        )
    if name.startswith("n1024"):  # paper targets (inside the Fresnel distance of this aperture), 0 dB
        sc = paper_scenario(rng, n_antennas=1024, snr_db=0.0, p_fault=0.0)
        return sc.array, sc.theta, sc.r, sc.gains, sc.pilots, None, 0.0, name.endswith("pilots"), 3
    if name.startswith("small"):  # small9_k1_10 etc.: N, K, SNR
        n, k, snr = name.split("_")
        n, k, snr = int(n[5:]), int(k[1:]), float(snr)
        arr = ULA(n, carrier_hz=2.4e9)
        D = arr.aperture
        if k == 1:
            th, r = np.array([20.0]) * D2R, np.array([2.5 * D])
        else:
            th, r = np.array([-20.0, 25.0]) * D2R, np.array([2.0 * D, 3.5 * D])
        return arr, th, r, np.exp(2j * np.pi * rng.random(k)), make_pilots(k, T, rng), None, snr, False, k
    raise ValueError(f"unknown row {name!r}")


ROWS = [
    "pair05_pilots",
    "pair1_blind",
    "coherent_blind",
    "coherent_pilots",
    "paper_20",
    "paper_m10",
    "paper_m10_blind",
    "paper_m15",
    "paper_m15_blind",
    "small9_k1_10",
    "small9_k1_20",
    "small9_k2_10",
    "small9_k2_20",
    "small16_k1_10",
    "small16_k1_20",
    "small16_k2_10",
    "small16_k2_20",
]


#: slow rows (N = 1024: ~20 s per scan), run only when named with --rows
EXTRA_ROWS = ["n1024_pilots", "n1024_blind"]


def run_row(name, trials, seed):
    rng = np.random.default_rng([seed, (ROWS + EXTRA_ROWS).index(name)])
    err_t, err_r, cover, sig_ratio, gross, exc, flags, secs = [], [], [], [], 0, 0, 0, []
    mus_gross, n_cases, cover_r = 0, 0, []
    for _ in range(trials):
        arr, th, r, g, S, c, snr, known, K = scene(name, rng)
        mu = noiseless_signal(arr, th, r, g, S, c)
        s2 = noise_variance(mu, snr)
        Y = mu + complex_noise(mu.shape, s2, rng)
        if known:
            C = crb_positions(arr, th, r, g, S, s2)
        else:
            C = crb_unknown_waveforms(arr, th, r, g[:, None] * S, s2)
        ct, cr = np.sqrt(np.diag(C)[:K]), np.sqrt(np.diag(C)[K:])
        n_cases += K
        t0 = time.perf_counter()
        try:
            res = full_array_localize(Y, arr, K, S if known else None)
        except Exception as exc_:  # noqa: BLE001 - any failure is counted and reported
            exc += K
            print(f"  {name}: exception {type(exc_).__name__}: {exc_}")
            continue
        secs.append(time.perf_counter() - t0)
        if res.theta.size != K:
            exc += K
            continue
        perm = np.arange(K) if (known and name != "coherent_pilots") else _match(res.theta, res.r, th, r, ct, cr)
        et, er = res.theta[perm] - th, res.r[perm] - r
        bad = (np.abs(et) > 10 * ct) | (np.abs(er) > 10 * cr)
        gross += int(bad.sum())
        flags += sum(s != "ok" for s in res.status)
        err_t.append(np.where(bad, np.nan, et) / ct)
        err_r.append(np.where(bad, np.nan, er) / cr)
        ok = ~bad
        cover.append(np.where(ok, np.abs(et) <= 2 * res.theta_std[perm], np.nan))
        cover_r.append(np.where(ok, np.abs(er) <= 2 * res.r_std[perm], np.nan))
        sig_ratio.append(np.where(ok, res.theta_std[perm] / ct, np.nan))
        if name.startswith("paper"):
            try:  # baseline, benchmark only (moved to nearfield.estimators by the architecture work)
                from nearfield.estimators.music2d import music2d_localize
            except ImportError:
                from nearfield.blocks.music2d import music2d_localize
            m = music2d_localize(Y, arr, K)
            pm = _match(m.theta, m.r, th, r, ct, cr)
            mus_gross += int(((np.abs(m.theta[pm] - th) > 10 * ct) | (np.abs(m.r[pm] - r) > 10 * cr)).sum())
    et, er = np.array(err_t), np.array(err_r)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns when every trial was gross
        rt = np.sqrt(np.nanmean(et**2, axis=0)) if et.size else np.array([np.nan])
        rr = np.sqrt(np.nanmean(er**2, axis=0)) if er.size else np.array([np.nan])
        cov = np.nanmean(np.array(cover)) if cover else np.nan
        cov_r = np.nanmean(np.array(cover_r)) if cover_r else np.nan
        sr = np.nanmean(np.array(sig_ratio)) if sig_ratio else np.nan
    extra = f" | 2-D MUSIC gross {mus_gross}/{n_cases}" if name.startswith("paper") else ""
    print(
        f"{name:16s} | {trials:3d} | {gross + exc:3d}/{n_cases:<3d} ({100 * (gross + exc) / n_cases:5.1f} %) | "
        f"{np.nanmax(rt):6.2f} | {np.nanmax(rr):6.2f} | {100 * cov:5.1f} / {100 * cov_r:5.1f} % | {sr:5.2f} | "
        f"{flags:3d} | "
        f"{np.mean(secs) if secs else np.nan:5.2f}{extra}",
        flush=True,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="Monte Carlo trials per row")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument(
        "--rows",
        nargs="+",
        default=ROWS,
        choices=ROWS + EXTRA_ROWS,
        help="rows to run (default: all but the slow N = 1024 rows)",
    )
    args = ap.parse_args(argv)
    print(
        "row              | trials | fail = gross + exc (share) | RMSE/CRB theta | RMSE/CRB r | "
        "2-sigma cover theta / r | sigma/CRB | flagged | s/trial"
    )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # the machine is shared: one BLAS thread (small matrices anyway)
        for name in args.rows:
            run_row(name, args.trials, args.seed)


if __name__ == "__main__":
    main()
