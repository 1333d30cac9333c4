"""Replay throughput: frames/s of the SigMF source against the synthetic source, same run.

    python benchmarks/replay_throughput.py [--frames 300] [--antennas 256] [--snapshots 100]

1. records ``--frames`` synthetic frames (N x T complex64 + pilots) with the SigMF writer
   into a temporary directory (the recording rate is reported too);
2. direct loops over ``generate()`` (no runtime): synthetic source, SigMF source (with and
   without pilots); the recording is freshly written, so it is in the page cache;
3. when ``nearfield.runtime.run_flowgraph`` exists: ``source -> jsonl`` graphs through the
   runtime, one process per block (ipc://) and ``--inproc`` (threads), for both sources.
   frames/s = frames / wall time of the run (start-up included).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time


def _loop(src, frames: int) -> float:
    src.start()
    t = time.perf_counter()
    n = 0
    for _ in src.generate():
        n += 1
    dt = time.perf_counter() - t
    src.close()
    assert n == frames, (n, frames)
    return n / dt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--antennas", type=int, default=256)
    ap.add_argument("--snapshots", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs for each figure")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    from nearfield.sinks.sigmf_writer import SigMFWriter
    from nearfield.sources.sigmf_source import SigMFSource
    from nearfield.sources.synthetic import SyntheticSource

    syn = dict(n_antennas=args.antennas, snapshots=args.snapshots, frames=args.frames, seed=1)
    tmp = tempfile.mkdtemp(prefix="nf-replay-bench-")
    try:
        base = os.path.join(tmp, "rec")
        frames = list(SyntheticSource(**syn).generate())
        w = SigMFWriter(path=base)
        w.start()
        t = time.perf_counter()
        for f in frames:
            w.process(f)
        w.finish()
        w.close()
        rec_fps = len(frames) / (time.perf_counter() - t)
        del frames
        mb = os.path.getsize(base + ".sigmf-data") / 1e6
        print(
            f"N = {args.antennas}, T = {args.snapshots}, {args.frames} frames "
            f"({mb:.1f} MB of cf32 snapshots + pilots sidecar)"
        )
        print(f"{'what':<44} {'frames/s':>10}")
        print(f"{'sigmf_writer.process (record, incl. SHA-512)':<44} {rec_fps:>10.0f}")

        rows = [
            ("synthetic.generate()", lambda: _loop(SyntheticSource(**syn), args.frames)),
            ("sigmf.generate() (snapshots + pilots)", lambda: _loop(SigMFSource(path=base), args.frames)),
            ("sigmf.generate() (snapshots only)", lambda: _loop(SigMFSource(path=base, pilots=False), args.frames)),
        ]
        results = {}
        for name, fn in rows:
            results[name] = max(fn() for _ in range(args.repeat))
            print(f"{name:<44} {results[name]:>10.0f}")
        ratio = results["sigmf.generate() (snapshots + pilots)"] / results["synthetic.generate()"]
        print(f"{'  replay / synthetic (direct)':<44} {ratio:>10.1f}x")

        try:
            from nearfield.runtime import run_flowgraph
            from nearfield.runtime.flowgraph import parse_flowgraph
        except ImportError:
            print("(nearfield.runtime.run_flowgraph not available: runtime figures skipped)")
            return
        sources = {"synthetic": {"type": "synthetic", **syn}, "sigmf": {"type": "sigmf", "path": base}}
        for inproc in (False, True):
            mode = "inproc threads" if inproc else "processes ipc"
            fps = {}
            for sname, spec in sources.items():
                graph = {
                    "name": f"bench-{sname}",
                    "blocks": {"source": spec, "out": {"type": "jsonl", "path": os.path.join(tmp, f"{sname}.jsonl")}},
                    "connections": [["source", "out"]],
                }
                best = 0.0
                for _ in range(args.repeat):
                    res = run_flowgraph(parse_flowgraph(graph, path=f"bench-{sname}"), inproc=inproc, quiet=True)
                    if not res.ok:
                        raise SystemExit(f"run failed: {res.error}")
                    best = max(best, args.frames / res.wall_s)
                fps[sname] = best
                print(f"{f'{sname} -> jsonl ({mode})':<44} {best:>10.0f}")
            print(f"{'  replay / synthetic (' + mode + ')':<44} {fps['sigmf'] / fps['synthetic']:>10.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
