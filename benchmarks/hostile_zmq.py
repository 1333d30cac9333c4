"""Issue 12 acceptance: a live graph survives a hostile gr-zeromq stream, with bounded memory.

The live graph of ``flowgraphs/gnuradio_zmq.yaml`` (zmq source -> fault_detector ->
calibrator -> covariance -> music_localizer -> jsonl + zmq_pub, one process per block) is fed,
over a PUSH socket as GNU Radio's ``zeromq.push_sink(pass_tags=True)`` would send them:

1. one message whose tag value is a PMT dict keyed by a tuple holding a vector (the message
   that used to kill the graph with ``TypeError: unhashable type: 'list'``);
2. ``--hostile`` messages (default 200) of 2000 tags each, all dated far in the future
   (these used to pile up in the source's backlog: RSS 235 -> 644 MB, 280 ms a frame);
3. ``--ordinary`` messages (default 10) of plain data.

Every message carries one frame of a synthetic near-field scene.  Prints whether the graph
ended normally, the frames delivered to the jsonl file (and whether the ordinary ones are
all there), and the **peak memory of the whole graph** (runner + every block process, sampled
every 20 ms from /proc): the sum of PSS -- each shared page (the runner's memory that the
forked block processes share) counted once -- and, for comparison, the plain sum of RSS,
which counts those shared pages once per process.  Run with ``--hostile 0 --ordinary 211``
for the baseline of the same graph without the hostile messages.

Usage::

    python benchmarks/hostile_zmq.py [--hostile 200] [--ordinary 10] [--n 64] [--t 50]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]


def _mem_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process, kB.  PSS shares each page among the processes mapping it, so
    the sum over the graph counts the pages forked children share with the runner once."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _tree(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(d.name))
    return [pid, *kids]


def _sym(s: str) -> bytes:
    return b"\x02" + struct.pack(">H", len(s)) + s.encode()


TUPLE_KEY_DICT = (
    b"\x09\x07"
    + b"\x0c\x00\x00\x00\x02"
    + _sym("k")
    + b"\x08\x00\x00\x00\x02\x03\x00\x00\x00\x07\x03\x00\x00\x00\x07"
    + b"\x04"
    + struct.pack(">d", 0.5)
    + b"\x06"
)


def _message(items: np.ndarray, offset: int, tags) -> bytes:
    head = struct.pack("<HBQQ", 0x5FF0, 1, offset, len(tags))
    head += b"".join(struct.pack("<Q", o) + k + v + b"\x06" for o, k, v in tags)
    return head + np.ascontiguousarray(items, dtype="<c8").tobytes()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hostile", type=int, default=200, help="messages of far-future tags")
    ap.add_argument("--tags", type=int, default=2000, help="tags per hostile message")
    ap.add_argument("--ordinary", type=int, default=10, help="ordinary messages at the end")
    ap.add_argument("--n", type=int, default=64, help="antennas N")
    ap.add_argument("--t", type=int, default=50, help="snapshots per frame (= items per message)")
    args = ap.parse_args(argv)

    from nearfield.array import ULA
    from nearfield.runtime import exit_code, run_flowgraph
    from nearfield.runtime.flowgraph import load_flowgraph
    from nearfield.scenario import Scenario, make_pilots

    n, t = args.n, args.t
    total = 1 + args.hostile + args.ordinary
    rng = np.random.default_rng(11)
    sc = Scenario(
        ULA(n, 30e9, wavelength_m=0.01),
        [0.3, -0.2],
        [2.0, 3.0],
        np.ones(2, complex),
        make_pilots(2, total * t, rng),
        np.ones(n, complex),
        20.0,
    )
    x = np.ascontiguousarray(sc.sample(rng).T)  # (items, N), item-major as on the wire
    far = [(10**15 + i, _sym("far"), b"\x04" + struct.pack(">d", i)) for i in range(args.tags)]
    msgs = [_message(x[0:t], 0, [(0, _sym("meta"), TUPLE_KEY_DICT)])]
    msgs += [_message(x[t * k : t * (k + 1)], t * k, far) for k in range(1, 1 + args.hostile)]
    msgs += [_message(x[t * k : t * (k + 1)], t * k, []) for k in range(1 + args.hostile, total)]

    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    out = Path(tempfile.mkdtemp(prefix="nf-hostile-")) / "est.jsonl"
    graph = load_flowgraph(
        ROOT / "flowgraphs" / "gnuradio_zmq.yaml",
        overrides=[
            f"source.address=tcp://127.0.0.1:{port}",
            f"source.n_antennas={n}",
            f"source.snapshots={t}",
            "source.timeout_s=3.0",
            f"out.path={out}",
            "publish.address=tcp://127.0.0.1:*",
        ],
    )

    peak = [0, 0, 0]
    done = threading.Event()

    def sample():
        me = os.getpid()
        while not done.is_set():
            mem = [_mem_kb(p) for p in _tree(me)]
            peak[0] = max(peak[0], sum(m[0] for m in mem))
            peak[1] = max(peak[1], sum(m[1] for m in mem))
            peak[2] = max(peak[2], max((m[0] for m in mem[1:]), default=0))
            time.sleep(0.02)

    def send():
        time.sleep(1.0)
        for m in msgs:
            push.send(m)

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=send, daemon=True)]
    for th in threads:
        th.start()
    t0 = time.perf_counter()
    err = io.StringIO()
    res = run_flowgraph(graph, stream=err)
    wall = time.perf_counter() - t0
    done.set()
    for th in threads:
        th.join(5)
    ctx.destroy(linger=0)

    recs = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    seqs = {r["seq"] for r in recs}
    ordinary = set(range(1 + args.hostile, total))
    print(err.getvalue(), end="")
    print(
        f"messages sent: 1 tuple-key tag, {args.hostile} x {args.tags} far-future tags, {args.ordinary} ordinary "
        f"(N={n}, T={t})"
    )
    print(f"run ok: {res.ok}   exit code: {exit_code(res)}   error: {res.error}   wall {wall:.1f} s")
    print(f"frames in the jsonl file: {len(recs)} of {total}; every ordinary frame delivered: {ordinary <= seqs}")
    print(
        f"peak memory of the whole graph (runner + {len(graph.blocks)} block processes): "
        f"PSS {peak[1] / 1024:.0f} MB (shared pages counted once), RSS summed {peak[0] / 1024:.0f} MB "
        f"(shared pages counted in every process); largest block process RSS {peak[2] / 1024:.0f} MB"
    )
    return 0 if res.ok and ordinary <= seqs and peak[1] < 600 * 1024 else 1


if __name__ == "__main__":
    sys.exit(main())
