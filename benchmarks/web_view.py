"""Does the live view slow the pipeline?  Frame rate with the web sink open vs a jsonl sink.

Runs ``flowgraphs/live.yaml`` unpaced (``source.rate_hz = null``), ``--frames`` frames,
one process per block, in pairs alternating the last block:

* ``jsonl``   -- the chain into a jsonl sink (no view);
* ``web``     -- the chain into the web sink with one browser-like client reading the
  Server-Sent Events stream (a Python thread of this process);
* ``chromium`` (``--chromium``) -- the same with a real headless Chromium showing the page
  (it draws every update on this machine's cores, which the pipeline shares).

The rate of a run is the steady rate at the sink over the second half of the frames (the
sink records each frame's arrival time): by then the client is connected and a browser has
started, so its start-up is not counted.  Wall-clock rates on a shared machine vary from
run to run; the CPU time does not, so each run also reports CPU milliseconds per frame: of
the whole pipeline (every block process, from ``RUSAGE_CHILDREN``, start-up included), of the
sink's process alone after its first frame (receiving, ``process()`` and, for the web sink, the
server threads) and of Chromium.  Prints
each run and the median per variant.

Usage: ``python benchmarks/web_view.py [--frames 600] [--pairs 5] [--chromium]``
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# BLAS thread counts must be in the environment before numpy loads, hence E402 below.
import numpy as np  # noqa: E402

from nearfield import registry  # noqa: E402
from nearfield.block import Param  # noqa: E402
from nearfield.flowgraph import load_flowgraph  # noqa: E402
from nearfield.runtime import run_flowgraph  # noqa: E402
from nearfield.sinks.jsonl import JsonlSink  # noqa: E402
from nearfield.sinks.web import WebSink  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)  # this block's process, all its threads
    return ru.ru_utime + ru.ru_stime


def _timed(base):
    """``base`` sink that also writes each frame's arrival time (perf_counter, s) to ``times``."""

    class Timed(base):
        params = (*base.params, Param("times", str, doc="file for the arrival times"))

        def process(self, frame):
            out = super().process(frame)
            self._t = getattr(self, "_t", [])
            self._t.append(time.perf_counter())
            if len(self._t) == 1:  # start-up and first frame excluded
                self._cpu0 = _cpu_self()
            return out

        def finish(self):
            t = getattr(self, "_t", [])
            per_frame = (_cpu_self() - self._cpu0) / (len(t) - 1) if len(t) > 1 else 0.0
            np.save(self.times, np.array([per_frame, *t]))
            return super().finish()

    Timed.__name__ = f"Timed{base.__name__}"
    return Timed


registry.register("bench_jsonl", _timed(JsonlSink))
registry.register("bench_web", _timed(WebSink))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def _sse_reader(port: int, stop: threading.Event, counts: list) -> None:
    """A browser stand-in: reads the event stream until the run ends."""
    if not _wait_port(port, stop):
        return
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"GET /events HTTP/1.0\r\n\r\n")
            while not stop.is_set():
                try:
                    data = s.recv(1 << 16)
                except TimeoutError:
                    continue
                if not data:
                    break
                counts[0] += data.count(b"event: frame")
    except OSError:
        pass


def _chromium(port: int, stop: threading.Event, procs: list) -> None:
    if not _wait_port(port, stop):
        return
    prof = tempfile.mkdtemp(prefix="nf-chromium-")
    procs.append(
        subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={prof}",
                "--window-size=1200,800",
                "--remote-debugging-port=0",
                f"http://127.0.0.1:{port}/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_once(variant: str, frames: int, tmp: Path, max_rate: float = 10.0) -> dict:
    sets = ["source.rate_hz=null", f"source.frames={frames}"]
    port = _free_port()
    times = tmp / f"times_{variant}.npy"
    sink = (
        f"{{type: bench_jsonl, path: {tmp / 'est.jsonl'}, times: {times}}}"
        if variant == "jsonl"
        else f"{{type: bench_web, port: {port}, times: {times}, max_rate_hz: {max_rate}}}"
    )
    text = (ROOT / "flowgraphs" / "live.yaml").read_text()
    assert "view:       {type: web, port: 8050}" in text
    path = tmp / "bench.yaml"
    path.write_text(text.replace("view:       {type: web, port: 8050}", f"view:       {sink}"))
    stop, counts, procs = threading.Event(), [0], []
    helper = None
    if variant == "web":
        helper = threading.Thread(target=_sse_reader, args=(port, stop, counts), daemon=True)
    elif variant == "chromium":
        helper = threading.Thread(target=_chromium, args=(port, stop, procs), daemon=True)
    if helper:
        helper.start()
    cpu0 = _cpu_children()
    browser_cpu = 0.0
    try:
        result = run_flowgraph(load_flowgraph(path, sets), quiet=True)
        pipeline_cpu = _cpu_children() - cpu0  # the block processes (Chromium not reaped yet)
    finally:
        stop.set()
        if helper:
            helper.join(timeout=5)
        for p in procs:
            p.terminate()
            _, _, ru = os.wait4(p.pid, 0)  # Chromium and its reaped helpers
            p.returncode = 0
            browser_cpu += ru.ru_utime + ru.ru_stime
    assert result.ok, "run failed"
    t = np.load(times)
    sink_cpu, t = t[0], t[1:]
    half = t[len(t) // 2 :]
    return {
        "rate": (len(half) - 1) / (half[-1] - half[0]),
        "events": counts[0],
        "cpu_ms": 1e3 * pipeline_cpu / frames,
        "sink_cpu_ms": 1e3 * sink_cpu,
        "browser_cpu_ms": 1e3 * browser_cpu / frames,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--chromium", action="store_true", help="also with a real headless Chromium on the page")
    ap.add_argument("--max-rate", type=float, default=10.0, help="the web sink's max_rate_hz (page updates/s)")
    args = ap.parse_args(argv)
    variants = ["jsonl", "web"] + (["chromium"] if args.chromium and os.path.exists(CHROMIUM) else [])
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.pairs):
            for v in variants if i % 2 == 0 else variants[::-1]:
                r = run_once(v, args.frames, Path(d), args.max_rate)
                runs[v].append(r)
                extra = f"  ({r['events']} page updates read)" if v == "web" else ""
                print(
                    f"run {i + 1}  {v:9s} {r['rate']:6.1f} frames/s  CPU/frame: pipeline {r['cpu_ms']:5.2f} ms, "
                    f"sink {r['sink_cpu_ms']:5.2f} ms, browser {r['browser_cpu_ms']:5.2f} ms{extra}",
                    flush=True,
                )

    def med(v, key):
        return statistics.median(r[key] for r in runs[v])

    base, base_cpu = med("jsonl", "rate"), med("jsonl", "cpu_ms")
    print(
        f"\nmedian over {args.pairs} runs of {args.frames} frames (N = 256, T = 100, K = 3, unpaced, "
        f"max_rate_hz {args.max_rate:g}):"
    )
    for v in variants:
        print(
            f"  {v:9s} {med(v, 'rate'):6.1f} frames/s ({100 * (med(v, 'rate') / base - 1):+5.1f} %)   "
            f"CPU/frame: pipeline {med(v, 'cpu_ms'):5.2f} ms ({100 * (med(v, 'cpu_ms') / base_cpu - 1):+5.1f} %), "
            f"sink {med(v, 'sink_cpu_ms'):5.2f} ms, browser {med(v, 'browser_cpu_ms'):5.2f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
