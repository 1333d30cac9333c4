"""Throughput of the bare runtime (issue 2): synthetic -> covariance -> jsonl at N=256, T=100.

Prints, all measured in the same run:

1. frames per second through ``synthetic -> covariance -> jsonl`` in process mode (one
   forked process per block, ipc://) and in in-process mode (threads, inproc://).  Two
   figures per mode: *steady* = frames / the sink's active time (from the moment it is
   ready until end of stream), *overall* = frames / whole run including start-up (forks,
   block ``start()``, teardown);
2. the per-frame transport cost -- ``encode`` + ``send`` + ``recv`` + ``decode`` of one
   such frame (snapshots (256, 100) complex64 + pilots + the synthetic source's meta) over
   an ipc:// PUSH/PULL pair, sequentially in one thread (so it includes the kernel copy and
   the wake-up; an upper bound on the per-link cost in a pipelined run) -- and, for
   comparison, over inproc:// (zero copy end to end);
3. the cost of one covariance ``Y @ Y.conj().T`` on the same Y, and the ratio
   transport / covariance.

Usage::

    python benchmarks/runtime_throughput.py [--frames 300] [--n 256] [--t 100] [--blas-threads 1]

BLAS threads are set before numpy is imported (default 1, as in a block worker sharing the
machine with the other blocks).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def _args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300, help="frames per pipeline run")
    ap.add_argument("--n", type=int, default=256, help="antennas N")
    ap.add_argument("--t", type=int, default=100, help="snapshots per frame T")
    ap.add_argument("--reps", type=int, default=500, help="repetitions of the micro-benchmarks")
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS threads (set before numpy loads)")
    return ap.parse_args()


ARGS = _args()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.blas_threads)

# BLAS thread counts must be in the environment before numpy loads, hence E402 below.
import numpy as np  # noqa: E402
import zmq  # noqa: E402

from nearfield.runtime import registry, run_flowgraph  # noqa: E402
from nearfield.runtime.flowgraph import parse_flowgraph  # noqa: E402
from nearfield.runtime.wire import decode, encode  # noqa: E402


def pipeline(n, t, frames, inproc, tmp):
    out = os.path.join(tmp, f"bench-{'inproc' if inproc else 'proc'}.jsonl")
    g = parse_flowgraph(
        {
            "name": "runtime-throughput",
            "blocks": {
                "source": {"type": "synthetic", "n_antennas": n, "snapshots": t, "frames": frames, "seed": 1},
                "covariance": {"type": "covariance"},
                "out": {"type": "jsonl", "path": out},
            },
            "connections": [["source", "covariance"], ["covariance", "out"]],
        },
        path="<benchmark>",
    )
    res = run_flowgraph(g, inproc=inproc, quiet=True)
    if not res.ok:
        raise SystemExit(f"pipeline failed: {res.error}")
    with open(out) as fh:
        lines = sum(1 for _ in fh)
    sink = res.block("out")
    return {
        "frames": lines,
        "steady_fps": lines / sink["wall_s"],
        "overall_fps": lines / res.wall_s,
        "summary": res.summary,
    }


def one_frame(n, t):
    src = registry.get("synthetic")(name="source", n_antennas=n, snapshots=t, frames=1, seed=1)
    src.start()
    frame = next(iter(src.generate()))
    src.close()
    frame.meta["t_emit"] = time.time()
    return frame


def transport_cost(frame, endpoint, reps):
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    for s in (push, pull):
        s.setsockopt(zmq.SNDHWM, 4)
        s.setsockopt(zmq.RCVHWM, 4)
    pull.bind(endpoint)
    push.connect(endpoint)
    keep = []
    for i in range(reps + 20):
        if i == 20:
            t0 = time.perf_counter()
        push.send_multipart(encode(frame), copy=False)
        got = decode(pull.recv_multipart(copy=False))
        keep.append(got.arrays["snapshots"][0, 0])  # touch the data
    dt = (time.perf_counter() - t0) / reps
    assert np.array_equal(got.arrays["snapshots"], frame.arrays["snapshots"])
    push.close(0)
    pull.close(0)
    ctx.term()
    return dt


def covariance_cost(Y, reps):
    for _ in range(5):
        Y @ Y.conj().T
    t0 = time.perf_counter()
    for _ in range(reps):
        R = Y @ Y.conj().T
    dt = (time.perf_counter() - t0) / reps
    assert R.shape == (Y.shape[0], Y.shape[0])
    return dt


def main():
    n, t = ARGS.n, ARGS.t
    for typ in ("synthetic", "covariance", "jsonl"):
        registry.get(typ)  # fail early and clearly if a block type is missing
    print(
        f"runtime throughput: synthetic -> covariance -> jsonl, N={n}, T={t}, "
        f"{ARGS.frames} frames, BLAS threads={ARGS.blas_threads}, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="nf-bench-") as tmp:
        runs = {}
        for inproc in (False, True):
            runs[inproc] = pipeline(n, t, ARGS.frames, inproc, tmp)
        frame = one_frame(n, t)
        ipc = transport_cost(frame, f"ipc://{tmp}/bench-link", ARGS.reps)
        inp = transport_cost(frame, "inproc://bench-link", ARGS.reps)
    cov = covariance_cost(np.ascontiguousarray(frame.arrays["snapshots"]), ARGS.reps)
    nbytes = sum(a.nbytes for a in frame.arrays.values())
    for inproc, label in ((False, "process mode (ipc://) "), (True, "inproc mode (threads)  ")):
        r = runs[inproc]
        print(
            f"  {label}: {r['steady_fps']:8.1f} frames/s steady, {r['overall_fps']:8.1f} frames/s "
            f"overall ({r['frames']} frames)"
        )
        for row in r["summary"]:
            print(
                f"      {row['block']:<11} proc {row['proc_mean_ms'] or 0:7.3f} ms/frame  "
                f"busy {100 * (row['busy'] or 0):5.1f}%  blocked {100 * (row['blocked'] or 0):5.1f}%"
            )
    print(
        f"  transport, one frame ({nbytes / 1e3:.0f} kB: encode+send+recv+decode): "
        f"ipc {ipc * 1e6:8.1f} us, inproc {inp * 1e6:8.1f} us"
    )
    print(f"  covariance Y @ Y.conj().T ({n}x{t} complex64): {cov * 1e6:8.1f} us")
    print(f"  ratio transport/covariance: ipc {ipc / cov:.3f}, inproc {inp / cov:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
