"""Speed-up of each compiled (numba) kernel and the first frame with a warm cache (issue 11).

Kernels:

* ``nearfield.lm_kernel.lm_exact`` -- the Levenberg-Marquardt fit of ``nearfield.ml.refine_ml``
  on the exact model (Phase 1's polish, Phase 3's refinement): ``ml.USE_NUMBA`` False (the
  NumPy loop on sufficient statistics) vs True, on the same data and start, with the
  largest difference of the results.  (The other compiled kernel, the grid scan of
  ``nearfield.estimators.fullarray``, runs only in the full-array fallback, not per frame.)

First frame: a fresh interpreter (numba's cache already filled, e.g. by
``python -m nearfield.warmup``) builds source -> fault_detector -> calibrator ->
music_localizer and times the first frame through them (imports excluded, printed apart).

Usage: ``python benchmarks/numba_kernels.py [--sizes 256 1024] [--reps 30]``
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import nearfield.ml as ml  # noqa: E402
from nearfield.scenario import paper_scenario  # noqa: E402

FIRST_FRAME = r"""
import os, time
t0 = time.perf_counter()
from nearfield.blocks.calibrator import Calibrator
from nearfield.blocks.fault_detector import FaultDetector
from nearfield.blocks.music_localizer import MusicLocalizer
from nearfield.sources.synthetic import SyntheticSource
t1 = time.perf_counter()
src = SyntheticSource(name="source", n_antennas={n}, frames=1, seed=1)
blocks = [FaultDetector(name="detect"), Calibrator(name="calibrate"), MusicLocalizer(name="locate")]
for b in [src] + blocks:
    b.start()
f = next(iter(src.generate()))
for b in blocks:
    f = b.process(f)
t2 = time.perf_counter()
print(f"{{t1 - t0:.3f}} {{t2 - t1:.3f}}")
"""


def time_lm(n: int, reps: int, pilots: bool):
    rng = np.random.default_rng(0)
    sc = paper_scenario(rng, n_antennas=n)
    Y = sc.sample(rng) / sc.c[:, None]
    S = sc.pilots if pilots else None
    out = {}
    for use in (False, True):
        ml.USE_NUMBA = use
        fit = ml.refine_ml(Y, sc.array, sc.theta + 2e-4, sc.r * 1.01, S)  # compile / warm
        t = time.perf_counter()
        for _ in range(reps):
            fit = ml.refine_ml(Y, sc.array, sc.theta + 2e-4, sc.r * 1.01, S)
        out[use] = ((time.perf_counter() - t) / reps * 1e3, fit)
    ml.USE_NUMBA = True
    diff = max(np.max(np.abs(out[True][1].theta - out[False][1].theta)),
               np.max(np.abs(out[True][1].r - out[False][1].r) / out[False][1].r))
    return out[False][0], out[True][0], out[True][1].iterations, diff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args(argv)
    print("| kernel | N | waveforms | NumPy ms | numba ms | speed-up | LM iterations | max difference |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for pilots in (True, False):
            t_np, t_nb, it, diff = time_lm(n, args.reps, pilots)
            print(f"| lm_exact (refine_ml) | {n} | {'pilots' if pilots else 'estimated'} | {t_np:.2f} | {t_nb:.2f} "
                  f"| {t_np / t_nb:.1f}x | {it} | {diff:.1e} |")
    print()
    print("| N | imports s | first frame s (warm cache, fresh interpreter) |")
    print("|---|---|---|")
    for n in args.sizes:
        res = subprocess.run([sys.executable, "-c", FIRST_FRAME.format(n=n)], capture_output=True, text=True,
                             check=True)
        imp, first = res.stdout.split()
        print(f"| {n} | {imp} | {first} |")


if __name__ == "__main__":
    main()
