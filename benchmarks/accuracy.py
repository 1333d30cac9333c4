"""Accuracy of the three-phase method on the default scenario (issue 3 acceptance tables).

Prints Markdown tables:

1. RMSE per target vs sqrt(mean_k CRB_kk) at 0/10/20/30 dB (pilot-aided, p_fault = 2 %),
   gross failures, missed faults that matter and false alarms per trial, HI NMSE;
2. the same without pilots at 20 dB, with the ratio to the pilot-aided RMSE;
3. n_targets = auto: share of trials with the right K at 0/10/20/30 dB (no pilots);
4. across frames (streaming blocks): HI NMSE and missed faults after 1, 5 and 20 frames
   at 0 and 10 dB.

Usage: ``python benchmarks/accuracy.py [--trials 100] [--workers 2] [--out docs/accuracy.md]``
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from nearfield.block import BadFrame  # noqa: E402
from nearfield.blocks.calibrator import Calibrator  # noqa: E402
from nearfield.blocks.fault_detector import FaultDetector  # noqa: E402
from nearfield.estimators.subarrays import estimate_order  # noqa: E402
from nearfield.frame import Frame  # noqa: E402
from nearfield.impairments import hi_nmse  # noqa: E402
from nearfield.montecarlo import run_trial, summarize  # noqa: E402
from nearfield.scenario import paper_scenario  # noqa: E402

SNRS = (0.0, 10.0, 20.0, 30.0)


def _auto_k(seed, snr_db):
    rng = np.random.default_rng(seed)
    sc = paper_scenario(rng, snr_db=snr_db)
    return estimate_order(sc.sample(rng).astype(complex), sc.array) == sc.theta.size


def _frames_trial(seed, snr_db, checkpoints=(1, 5, 20)):
    rng = np.random.default_rng(seed)
    sc = paper_scenario(rng, snr_db=snr_db)
    det, cal = FaultDetector(name="detect"), Calibrator(name="calibrate")
    det.start()
    cal.start()
    matters = set(np.flatnonzero(np.abs(sc.c - 1) > 0.3).tolist())
    out = {}
    for n in range(1, max(checkpoints) + 1):
        pilots = np.exp(2j * np.pi * rng.random(sc.pilots.shape))  # fresh pilots and noise each frame
        sc.pilots = pilots
        f = Frame(n, 0.0, {"snapshots": sc.sample(rng), "pilots": pilots.astype(np.complex64)},
                  {"array": sc.array.describe()})
        try:
            f = cal.process(det.process(f))
        except BadFrame:
            continue
        if n in checkpoints:
            out[n] = (hi_nmse(f.arrays["c_hat"], sc.c), len(matters - set(f.meta["faulty"])))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    args = ap.parse_args(argv)
    lines = [f"Trials per point: {args.trials}; seeds 0..{args.trials - 1}; default scenario of Sec. VI-A "
             "(N = 256, T = 100, K = 3, p_fault = 2 %).", ""]
    t_start = time.time()
    with ProcessPoolExecutor(args.workers) as pool:
        lines += ["### Pilot-aided, per-target RMSE against sqrt(mean_k CRB_kk) (perfect HI knowledge)", "",
                  "| SNR dB | RMSE θ (rad) | R-CRB θ | ratio | RMSE r (m) | R-CRB r | ratio | paper θ ratio | paper r ratio "
                  "| coarse θ ratio | coarse r ratio | gross | missed | false alarms | median NMSE | s/trial |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        pilot_rmse = {}
        for snr in SNRS:
            trials = list(pool.map(partial(run_trial, snr_db=snr, schemes=("proposed", "paper", "coarse")),
                                   range(args.trials)))
            s, p, c = (summarize(trials, k) for k in ("proposed", "paper", "coarse"))
            pilot_rmse[snr] = s
            lines.append(f"| {snr:g} | {s['rmse_theta']:.2e} | {s['rcrb_theta']:.2e} | {s['ratio_theta']:.2f} | "
                         f"{s['rmse_range']:.2e} | {s['rcrb_range']:.2e} | {s['ratio_range']:.2f} | "
                         f"{p['ratio_theta']:.1f} | {p['ratio_range']:.1f} | {c['ratio_theta']:.1f} | "
                         f"{c['ratio_range']:.1f} | {s['gross']:.2f} | {s['missed']:.2f} | {s['false_alarms']:.2f} | "
                         f"{s['nmse_median']:.1e} | {s['time_s']:.2f} |")
            print(lines[-1], file=sys.stderr)
        lines += ["", "### Without pilots (waveforms estimated), 20 dB", "",
                  "| RMSE θ | ratio to CRB | ratio to pilot-aided | RMSE r | ratio to CRB | ratio to pilot-aided "
                  "| missed | false alarms | gross |", "|---|---|---|---|---|---|---|---|---|"]
        trials = list(pool.map(partial(run_trial, snr_db=20.0, schemes=("proposed",), pilots=False),
                               range(args.trials)))
        s, ref = summarize(trials, "proposed"), pilot_rmse[20.0]
        lines.append(f"| {s['rmse_theta']:.2e} | {s['ratio_theta']:.2f} | {s['rmse_theta'] / ref['rmse_theta']:.2f} | "
                     f"{s['rmse_range']:.2e} | {s['ratio_range']:.2f} | {s['rmse_range'] / ref['rmse_range']:.2f} | "
                     f"{s['missed']:.2f} | {s['false_alarms']:.2f} | {s['gross']:.2f} |")
        lines += ["", "### n_targets = auto (MDL over fault-free subarrays, no pilots): share of trials with K right",
                  "", "| SNR dB | right |", "|---|---|"]
        for snr in SNRS:
            ok = list(pool.map(partial(_auto_k, snr_db=snr), range(args.trials)))
            lines.append(f"| {snr:g} | {np.mean(ok):.2f} |")
        n_fr = max(10, args.trials // 5)
        lines += ["", f"### Across frames (fault_detector + calibrator blocks, {n_fr} runs per SNR)", "",
                  "| SNR dB | frames | median HI NMSE | missed faults per run |", "|---|---|---|---|"]
        for snr in (0.0, 10.0):
            runs = list(pool.map(partial(_frames_trial, snr_db=snr), range(n_fr)))
            for n in (1, 5, 20):
                vals = [r[n] for r in runs if n in r]
                lines.append(f"| {snr:g} | {n} | {np.median([v[0] for v in vals]):.2e} | "
                             f"{np.mean([v[1] for v in vals]):.2f} |")
    lines += ["", f"Wall time: {time.time() - t_start:.0f} s with {args.workers} workers.",
              f"Command: `python benchmarks/accuracy.py --trials {args.trials}`"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("# Accuracy of the three-phase method\n\n" + text + "\n")


if __name__ == "__main__":
    main()
