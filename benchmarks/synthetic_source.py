"""Steady-state cost of the synthetic source per frame (issue: the source must not matter).

Prints ms/frame of ``SyntheticSource.make_frame`` for the fast path (default: complex64
noise drawn in place, cached steering) and the legacy path (``legacy_noise=True``: float64
noise, steering and |signal|^2 per frame, the code before the change), at N = 256, T = 100,
K = 3 unless told otherwise.  The best of ``--repeat`` runs of ``--frames`` frames each,
after ``--warmup`` frames, with one BLAS thread (as the runtime's workers run).

    python benchmarks/synthetic_source.py [--n 256] [--t 100] [--frames 400] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

from threadpoolctl import threadpool_limits

from nearfield.sources.synthetic import SyntheticSource


def ms_per_frame(legacy: bool, n: int, t: int, frames: int, repeat: int, warmup: int = 20, **kw) -> float:
    src = SyntheticSource(n_antennas=n, snapshots=t, frames=0, legacy_noise=legacy, **kw)
    src.start()
    for i in range(warmup):
        src.make_frame(i)
    best = float("inf")
    seq = warmup
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(frames):
            src.make_frame(seq)
            seq += 1
        best = min(best, (time.perf_counter() - t0) / frames * 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--t", type=int, default=100)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    threadpool_limits(limits=1)
    print(f"synthetic source, N={a.n}, T={a.t}, K=3 (paper targets), best of {a.repeat} x {a.frames} frames")
    print(f"{'path':<34}{'ms/frame':>10}")
    for label, legacy, kw in [
        ("legacy (float64 noise, per frame)", True, {}),
        ("fast (complex64, cached steering)", False, {}),
        ("fast + dense impairments", False, {"gain_std_db": 1.5, "phase_std": "uniform"}),
    ]:
        print(f"{label:<34}{ms_per_frame(legacy, a.n, a.t, a.frames, a.repeat, **kw):>10.3f}")


if __name__ == "__main__":
    main()
