"""Real-time speed of the default flowgraph (issue 11 benchmark).

For each N (default 256, 1024, 2048; T = 100, K = 3, p_fault = 2 %, 20 dB; the paper's
three targets with their ranges scaled by (N / 256)^1.5, the growth of the Fresnel distance
0.62 sqrt(D^3 / lambda), so they stay in the radiating near field of every aperture):

* **pipeline**: ``flowgraphs/synthetic.yaml`` (workers ``front`` = source + detect and
  ``estimate`` = calibrate + locate, then the jsonl sink; process mode) run twice, with F1 and
  F2 frames; the steady-state rate is (F2 - F1) / (wall2 - wall1), so start-up, compilation and
  drain cancel.  Dropped frames, each worker's busy share and steady CPU ms per frame (its
  process's CPU time, difference of the two runs / (F2 - F1)), the whole CPU per frame (user +
  system time of all worker processes, likewise) and the peak RSS of the largest worker.  The
  load average is printed before and after: the machine may be shared.
* **blocks** (same run, one process, direct calls): each block's first-frame and steady
  ms/frame (frames after the 10th) and its busy share at the pipeline's rate
  (ms x frames/s / 1000, the share of one core it needs).
* **floor** (same run): one covariance ``Y Y^H`` (complex64) + one subset ``eigh`` (K leading
  pairs) of the N x N covariance; ratios of the estimator chain (detect + calibrate + locate,
  in-process) and of the whole pipeline CPU per frame to it.
* **2-D grid MUSIC** (``nearfield.estimators.music2d``, default grids) per call on the same
  frames, N <= 1024 (above, one call takes tens of seconds), with the RMSE of both against
  the truth.

BLAS runs single-threaded, as in the pipeline's workers.

Usage: ``python benchmarks/pipeline.py [--sizes 256 1024 2048] [--frames 300]``
(``--sizes 4096`` adds the large array; ``--frames`` is F2 - F1 at N = 256, times 256 / N above).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

from nearfield.blocks.calibrator import Calibrator  # noqa: E402
from nearfield.blocks.fault_detector import FaultDetector  # noqa: E402
from nearfield.blocks.music_localizer import MusicLocalizer  # noqa: E402
from nearfield.estimators.music2d import music2d  # noqa: E402
from nearfield.frame import meta_positions  # noqa: E402
from nearfield.runtime import run_flowgraph  # noqa: E402
from nearfield.runtime.flowgraph import load_flowgraph  # noqa: E402
from nearfield.sources.synthetic import SyntheticSource  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHAIN = ("detect", "calibrate", "locate")
PAPER = ((0.2618, 10.0), (-0.2618, 18.0), (-0.5236, 8.0))


def targets(n: int) -> list[dict]:
    """The paper's targets, ranges scaled by (N / 256)^1.5 (the Fresnel distance's growth)."""
    s = (n / 256) ** 1.5
    return [{"theta": th, "range": r * s} for th, r in PAPER]


def floor_ms(n: int, reps: int) -> tuple[float, float]:
    """One complex64 covariance and one subset eigh (3 leading pairs), ms each."""
    rng = np.random.default_rng(0)
    Y = (rng.standard_normal((n, 100)) + 1j * rng.standard_normal((n, 100))).astype(np.complex64)
    t = time.perf_counter()
    for _ in range(reps):
        R = Y @ Y.conj().T
    t_cov = (time.perf_counter() - t) / reps
    reps_e = max(2, reps // 4)
    t = time.perf_counter()
    for _ in range(reps_e):
        scipy.linalg.eigh(R, subset_by_index=[n - 3, n - 1])
    return t_cov * 1e3, (time.perf_counter() - t) / reps_e * 1e3


def blocks_inprocess(n: int, frames: int, music2d_frames: int):
    """Per-block ms per frame by direct calls; the estimates and truths for the accuracy check."""
    src = SyntheticSource(name="source", n_antennas=n, frames=frames, seed=1, snr_db=20.0, targets=targets(n))
    blocks = {
        "detect": FaultDetector(name="detect"),
        "calibrate": Calibrator(name="calibrate"),
        "locate": MusicLocalizer(name="locate"),
    }
    src.start()
    for b in blocks.values():
        b.start()
    times = {k: [] for k in ("source",) + CHAIN}
    est, truth, m2d, m2d_ms = [], [], [], []
    it = iter(src.generate())
    while True:
        t = time.perf_counter()
        try:
            f = next(it)
        except StopIteration:
            break
        times["source"].append(time.perf_counter() - t)
        raw = f.arrays["snapshots"]
        for name in CHAIN:
            t = time.perf_counter()
            f = blocks[name].process(f)
            times[name].append(time.perf_counter() - t)
        tt = [(d["theta"], d["range"]) for d in f.meta["truth"]["targets"]]
        truth.append(np.array(tt))
        est.append(np.column_stack(meta_positions(f.meta, "targets")))
        if len(truth) > 10 and len(m2d) < music2d_frames:  # steady frames, as the chain's RMSE
            t = time.perf_counter()
            m = music2d(raw, _array_of(f), f.arrays.get("pilots"))
            m2d_ms.append((time.perf_counter() - t) * 1e3)
            o = np.argsort(m.theta)
            m2d.append(np.column_stack([m.theta[o], m.r[o]]))
    return times, est, truth, m2d, m2d_ms


def _array_of(frame):
    from nearfield.array import ULA

    return ULA.from_meta(frame.meta["array"])


def rmse(est, truth):
    """RMSE over frames and targets of theta (rad) and r (m); estimates and truth sorted by theta."""
    e = np.array(est) - np.array(truth)
    return float(np.sqrt(np.mean(e[..., 0] ** 2))), float(np.sqrt(np.mean(e[..., 1] ** 2)))


GRAPH = ROOT / "flowgraphs" / "synthetic.yaml"


def pipeline_run(n: int, frames: int, tmp: str):
    out = os.path.join(tmp, f"est-{n}-{frames}.jsonl")
    g = load_flowgraph(
        GRAPH,
        overrides={"source.n_antennas": n, "source.frames": frames, "source.targets": targets(n), "out.path": out},
    )
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = run_flowgraph(g, quiet=True)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    with open(out) as fh:
        recs = [json.loads(line) for line in fh]
    dropped = sum(r.get("dropped", 0) + r.get("lost", 0) for r in res.summary)
    first_latency = recs[0].get("latency_s") if recs else None
    return dict(
        ok=res.ok, got=len(recs), wall=wall, cpu=cpu, dropped=dropped, rows=res.summary, first_latency=first_latency
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048])
    ap.add_argument("--frames", type=int, default=300, help="F2 - F1 at N = 256 (scaled down for larger N)")
    ap.add_argument("--music2d-frames", type=int, default=3, help="2-D MUSIC calls per N (N <= 1024)")
    ap.add_argument("--graph", default=None, help="flowgraph to time (default: flowgraphs/synthetic.yaml)")
    args = ap.parse_args(argv)
    if args.graph:
        global GRAPH
        GRAPH = Path(args.graph)
    summary, block_rows = [], []
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            extra = max(20, int(args.frames * min(1.0, 256 / n)))
            f1 = max(10, extra // 3)
            c_ms, e_ms = floor_ms(n, 20 if n <= 1024 else 4)
            m2d_n = args.music2d_frames if n <= 1024 else 0
            times, est, truth, m2d, m2d_ms = blocks_inprocess(n, min(60, 20 + extra), m2d_n)
            r1 = pipeline_run(n, f1, tmp)
            r2 = pipeline_run(n, f1 + extra, tmp)
            fps = (r2["got"] - r1["got"]) / max(r2["wall"] - r1["wall"], 1e-9)
            cpu_frame = (r2["cpu"] - r1["cpu"]) / max(r2["got"] - r1["got"], 1) * 1e3
            maxrss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            steady = {k: float(np.mean(v[10:])) * 1e3 for k, v in times.items()}
            for k, v in times.items():
                block_rows.append((n, k, v[0] * 1e3, steady[k], steady[k] * fps / 1e3))
            chain = sum(steady[k] for k in CHAIN)
            floor = c_ms + e_ms
            th_rmse, r_rmse = rmse(est[10:], truth[10:])
            m2 = (np.mean(m2d_ms), *rmse(m2d, truth[11 : 11 + len(m2d)])) if m2d else None
            workers = {row["block"]: row for row in r2["rows"]}
            first_rows = {row["block"]: row for row in r1["rows"]}
            n_extra = max(r2["got"] - r1["got"], 1)
            worker_cpu = {  # steady CPU ms per frame of each worker process (difference of the two runs)
                k: ((v.get("cpu_s") or 0.0) - (first_rows.get(k, {}).get("cpu_s") or 0.0)) / n_extra * 1e3
                for k, v in workers.items()
            }
            summary.append(
                dict(
                    n=n,
                    fps=fps,
                    dropped=r1["dropped"] + r2["dropped"],
                    frames=f"{r1['got'] + r2['got']}/{2 * f1 + extra}",
                    ok=r1["ok"] and r2["ok"],
                    cov=c_ms,
                    eig=e_ms,
                    chain=chain,
                    cpu=cpu_frame,
                    ratio_chain=chain / floor,
                    ratio_cpu=cpu_frame / floor,
                    rss=maxrss_mb,
                    th=th_rmse,
                    r=r_rmse,
                    m2=m2,
                    busy={k: (v.get("busy") or 0.0) for k, v in workers.items()},
                    worker_cpu=worker_cpu,
                    first=r1["first_latency"],
                )
            )
            print(f"# N = {n} done: {fps:.1f} frames/s", flush=True)

    load1 = os.getloadavg()
    print(
        f"\nload average (1, 5, 15 min) before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
        f"after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} ({os.cpu_count()} CPUs)"
    )
    print("\n### Blocks (one process, direct calls)\n")
    print("| N | block | first frame ms | steady ms/frame | busy share at the pipeline rate |")
    print("|---|---|---|---|---|")
    for n, k, first, st, busy in block_rows:
        print(f"| {n} | {k} | {first:.1f} | {st:.2f} | {100 * busy:.0f} % |")
    print("\n### Workers (process mode): steady CPU ms per frame of each process (transport included)\n")
    print("| N | CPU ms/frame per worker | sum |")
    print("|---|---|---|")
    for s in summary:
        cpu = " / ".join(f"{w} {ms:.2f}" for w, ms in s["worker_cpu"].items())
        print(f"| {s['n']} | {cpu} | {sum(s['worker_cpu'].values()):.2f} |")
    print("\n### Pipeline (default flowgraph, process mode) and the floor\n")
    print(
        "| N | frames/s (steady) | frames out/in | dropped | ok | busy per worker "
        "| covariance ms | subset eigh ms | estimator chain ms/frame | chain / floor "
        "| whole CPU ms/frame | CPU / floor | peak RSS largest worker MB | first-frame latency s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        busy = " / ".join(f"{w} {100 * b:.0f} %" for w, b in s["busy"].items())
        first = "-" if s["first"] is None else f"{s['first']:.2f}"
        print(
            f"| {s['n']} | {s['fps']:.1f} | {s['frames']} | {s['dropped']} | {s['ok']} | {busy} "
            f"| {s['cov']:.2f} | {s['eig']:.2f} | {s['chain']:.2f} | {s['ratio_chain']:.2f} "
            f"| {s['cpu']:.2f} | {s['ratio_cpu']:.2f} | {s['rss']:.0f} | {first} |"
        )
    print("\n### Against 2-D grid MUSIC (per call, same frames)\n")
    print(
        "| N | chain ms/frame | 2-D MUSIC ms/call | speed-up | RMSE θ chain (rad) | RMSE θ 2-D MUSIC "
        "| RMSE r chain (m) | RMSE r 2-D MUSIC |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for s in summary:
        if s["m2"] is None:
            continue
        ms, th2, r2 = s["m2"]
        print(
            f"| {s['n']} | {s['chain']:.2f} | {ms:.0f} | {ms / s['chain']:.0f}x | {s['th']:.2e} | {th2:.2e} "
            f"| {s['r']:.2e} | {r2:.2e} |"
        )


if __name__ == "__main__":
    main()
