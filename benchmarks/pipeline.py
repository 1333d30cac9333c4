"""Per-block and whole-pipeline speed of the full chain (issue 3 benchmark).

For N in {256, 512, 1024}, T = 100, K = 3 (targets of Sec. VI-A, p_fault = 2 %, 20 dB):

* each block's first-frame time (numba compilation and cold caches included) and its
  steady-state per-frame time, calling the blocks' methods directly in one process;
* the whole pipeline (synthetic -> fault_detector -> calibrator -> covariance ->
  music_localizer -> jsonl) through the runtime, one process per block, in frames/s
  (steady state: frames after the first 10, from the jsonl sink's arrival times) and
  dropped frames;
* in the same run, the cost of one covariance ``Y @ Y^H`` and one subset ``eigh`` of the
  N x N covariance (K leading eigenpairs), and the ratio of the steady-state per-frame
  cost to their sum.

BLAS runs single-threaded, as in the pipeline's workers.

Usage: ``python benchmarks/pipeline.py [--sizes 256 512 1024] [--frames 200]``
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

from nearfield.blocks.calibrator import Calibrator  # noqa: E402
from nearfield.blocks.covariance import Covariance  # noqa: E402
from nearfield.blocks.fault_detector import FaultDetector  # noqa: E402
from nearfield.blocks.music_localizer import MusicLocalizer  # noqa: E402
from nearfield.runtime.flowgraph import parse_flowgraph  # noqa: E402
from nearfield.runtime import run_flowgraph  # noqa: E402
from nearfield.sources.synthetic import SyntheticSource  # noqa: E402

CHAIN = ("detect", "calibrate", "covariance", "locate")


def _kernels(n, reps=20):
    rng = np.random.default_rng(0)
    Y = (rng.standard_normal((n, 100)) + 1j * rng.standard_normal((n, 100))).astype(np.complex64)
    t = time.perf_counter()
    for _ in range(reps):
        R = Y @ Y.conj().T / 100
    t_cov = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    for _ in range(max(3, reps // 4)):
        scipy.linalg.eigh(R, subset_by_index=[n - 3, n - 1])
    t_eig = (time.perf_counter() - t) / max(3, reps // 4)
    return t_cov, t_eig


def _blocks(n, frames):
    src = SyntheticSource(name="source", n_antennas=n, frames=frames, seed=1, snr_db=20.0)
    blocks = {"detect": FaultDetector(name="detect"), "calibrate": Calibrator(name="calibrate"),
              "covariance": Covariance(name="covariance"), "locate": MusicLocalizer(name="locate")}
    src.start()
    for b in blocks.values():
        b.start()
    times = {k: [] for k in ("source",) + CHAIN}
    it = iter(src.generate())
    while True:
        t = time.perf_counter()
        try:
            f = next(it)
        except StopIteration:
            break
        times["source"].append(time.perf_counter() - t)
        for name in CHAIN:
            t = time.perf_counter()
            f = blocks[name].process(f)
            times[name].append(time.perf_counter() - t)
    return times


def _pipeline(n, frames):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "est.jsonl")
        graph = {
            "name": f"bench-{n}",
            "blocks": {"source": {"type": "synthetic", "n_antennas": n, "frames": frames, "seed": 1, "snr_db": 20.0},
                       "detect": {"type": "fault_detector"}, "calibrate": {"type": "calibrator"},
                       "covariance": {"type": "covariance"}, "locate": {"type": "music_localizer"},
                       "out": {"type": "jsonl", "path": out}},
            "connections": [["source", "detect"], ["detect", "calibrate"], ["calibrate", "covariance"],
                            ["covariance", "locate"], ["locate", "out"]],
        }
        import yaml

        g = parse_flowgraph(yaml.safe_dump(graph), path=f"<bench N={n}>")
        t0 = time.perf_counter()
        res = run_flowgraph(g, quiet=True)
        wall = time.perf_counter() - t0
        with open(out) as fh:
            got = sum(1 for _ in fh)
        dropped = sum(row.get("dropped", 0) + row.get("lost", 0) for row in res.summary) if res.summary else 0
    return res.ok, got, wall, dropped


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--frames", type=int, default=200)
    args = ap.parse_args(argv)
    print("| N | block | first frame ms | steady ms/frame |")
    print("|---|---|---|---|")
    rows = []
    for n in args.sizes:
        frames = args.frames if n <= 256 else max(30, args.frames // (n // 256) ** 2)
        t_cov, t_eig = _kernels(n)
        times = _blocks(n, min(frames, 60))
        steady_total = 0.0
        for name in ("source",) + CHAIN:
            first, steady = times[name][0], float(np.mean(times[name][10:]))
            steady_total += steady
            print(f"| {n} | {name} | {first * 1e3:.1f} | {steady * 1e3:.2f} |")
        # steady state: the difference of two runs cancels start-up, compilation and drain
        ok1, got1, wall1, drop1 = _pipeline(n, 20)
        ok2, got2, wall2, drop2 = _pipeline(n, 20 + frames)
        fps = (got2 - got1) / max(wall2 - wall1, 1e-9)
        rows.append((n, t_cov, t_eig, steady_total, ok1 and ok2, got1 + got2, 40 + frames, fps, drop1 + drop2))
    print()
    print("| N | covariance ms | subset eigh ms | sum of blocks ms/frame | ratio to (cov + eigh) "
          "| pipeline steady frames/s (process mode) | frames out/in | dropped | ok |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, t_cov, t_eig, tot, ok, got, frames, fps, dropped in rows:
        print(f"| {n} | {t_cov * 1e3:.2f} | {t_eig * 1e3:.2f} | {tot * 1e3:.2f} | {tot / (t_cov + t_eig):.2f} "
              f"| {fps:.1f} | {got}/{frames} | {dropped} | {ok} |")


if __name__ == "__main__":
    main()
