"""A real GNU Radio flowgraph (flowgraphs/gnuradio/nearfield_tx.py) into the `zmq` source.

GNU Radio runs in its own process, with whichever Python can import it: this interpreter,
or the system's ``/usr/bin/python3`` (Debian's ``gnuradio`` package installs its modules
there, not into a virtualenv/pyenv).  When none can, the GNU Radio tests are skipped with
the reason; the check of the example's signal model runs anyway (numpy only).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from nearfield.array import ULA
from nearfield.scenario import noiseless_signal
from nearfield.sources.zmq_source import ZMQSource

TX = Path(__file__).resolve().parents[1] / "flowgraphs" / "gnuradio" / "nearfield_tx.py"


def _load_tx():
    spec = importlib.util.spec_from_file_location("nearfield_tx", TX)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tx = _load_tx()


@lru_cache(maxsize=1)
def gnuradio_python() -> str | None:
    """A Python interpreter that can import GNU Radio's gr, blocks and zeromq, or None."""
    seen = []
    for cand in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if not cand or cand in seen or not Path(cand).exists():
            continue
        seen.append(cand)
        try:
            ok = (
                subprocess.run(
                    [cand, "-c", "from gnuradio import gr, blocks, zeromq"], capture_output=True, timeout=60
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return cand
    return None


needs_gnuradio = pytest.mark.skipif(
    gnuradio_python() is None,
    reason="GNU Radio is not installed: no Python here can import gnuradio (gr, blocks, "
    "zeromq); install Debian's 'gnuradio' package to run this test",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_tx(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [gnuradio_python(), str(TX), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def receive(src: ZMQSource, proc: subprocess.Popen):
    try:
        frames = [f for f in src.generate() if f is not None]
    finally:
        src.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return frames


N, PERIOD, T = 16, 50, 40


def test_example_signal_is_the_package_model():
    """The example computes eq. (5) on the exact model by itself: compare with nearfield's."""
    items, truth = tx.make_test_signal(N, PERIOD, snr_db=20.0, p_fault=0.2, seed=4)
    array = ULA(N, 30e9, wavelength_m=0.01)
    th = np.array([t[0] for t in tx.PAPER_TARGETS])
    r = np.array([t[1] for t in tx.PAPER_TARGETS])
    ref = noiseless_signal(array, th, r, truth["gains"], truth["pilots"], truth["c"])
    np.testing.assert_allclose(truth["clean"].T, ref, atol=1e-9)
    assert len(truth["faulty"]) > 0 and np.allclose(np.angle(truth["c"][truth["faulty"]]), truth["fault_phase"])
    noise = items - truth["clean"]
    snr = np.mean(np.abs(truth["clean"]) ** 2) / np.mean(np.abs(noise) ** 2)
    assert 10 * np.log10(snr) == pytest.approx(20.0, abs=0.3)  # 800 complex samples


@needs_gnuradio
def test_push_sink_with_tags_into_zmq_source():
    n_frames = 12
    items, _ = tx.make_test_signal(N, PERIOD, seed=2)
    addr = f"tcp://127.0.0.1:{free_port()}"
    src = ZMQSource(
        name="gr",
        address=addr,
        pass_tags=True,
        n_antennas=N,
        snapshots=T,
        frames=n_frames,
        timeout_s=30.0,
        sample_rate_hz=20000.0,
        wavelength_m=0.01,
    )
    src.start()
    proc = run_tx(
        "--address",
        addr,
        "--n-antennas",
        N,
        "--period",
        PERIOD,
        "--seed",
        2,
        "--rate",
        20000,
        "--items",
        n_frames * T + 17,
    )
    frames = receive(src, proc)
    assert proc.returncode == 0, proc.stderr.read()
    stream = np.tile(items, (-(-(n_frames * T) // PERIOD), 1))  # the repeated cycle
    assert [f.seq for f in frames] == list(range(n_frames))
    for f in frames:
        np.testing.assert_array_equal(f.snapshots, stream[f.seq * T : (f.seq + 1) * T].T)  # bit-exact
        assert f.t0 == pytest.approx(f.seq * T / 20000.0)
        cycle_starts = [o for o in range(f.seq * T, (f.seq + 1) * T) if o % PERIOD == 0]
        assert [(t["offset"], t["key"], t["value"]) for t in f.meta.get("tags", [])] == [
            (o, "nearfield_cycle", PERIOD) for o in cycle_starts
        ]
    c = src.all_counters()
    assert c["gaps"] == 0 and c["dropped_items"] == 0 and c["bad_messages"] == 0
    assert c["messages"] >= 1 and c["items"] >= n_frames * T


@needs_gnuradio
def test_pub_sink_frames_sit_at_their_stream_offsets():
    """PUB drops whatever was sent before we subscribed; the tag-header offsets place the rest."""
    items, _ = tx.make_test_signal(N, PERIOD, seed=3)
    addr = f"tcp://127.0.0.1:{free_port()}"
    src = ZMQSource(
        address=addr, socket="sub", key="nf", pass_tags=True, n_antennas=N, snapshots=T, frames=8, timeout_s=30.0
    )
    src.start()
    proc = run_tx(
        "--address",
        addr,
        "--socket",
        "pub",
        "--key",
        "nf",
        "--n-antennas",
        N,
        "--period",
        PERIOD,
        "--seed",
        3,
        "--rate",
        20000,
        "--items",
        40000,
    )
    frames = receive(src, proc)
    assert len(frames) == 8
    base = frames[0].meta["stream"]["offset"]
    for f in frames:
        off = f.meta["stream"]["offset"]
        assert off == base + (f.seq - frames[0].seq) * T
        np.testing.assert_array_equal(f.snapshots, items[(off + np.arange(T)) % PERIOD].T)
    assert src.all_counters()["bad_messages"] == 0


@needs_gnuradio
def test_raw_stream_without_tags():
    items, _ = tx.make_test_signal(N, PERIOD, seed=5)
    addr = f"tcp://127.0.0.1:{free_port()}"
    src = ZMQSource(address=addr, n_antennas=N, snapshots=T, frames=5, timeout_s=30.0)
    src.start()
    t = time.time()
    proc = run_tx(
        "--address",
        addr,
        "--no-pass-tags",
        "--n-antennas",
        N,
        "--period",
        PERIOD,
        "--seed",
        5,
        "--rate",
        0,
        "--items",
        5 * T,
    )
    frames = receive(src, proc)
    stream = np.tile(items, (4, 1))
    assert [f.seq for f in frames] == list(range(5))
    for f in frames:
        np.testing.assert_array_equal(f.snapshots, stream[f.seq * T : (f.seq + 1) * T].T)
        assert t <= f.t0 <= time.time() and "tags" not in f.meta  # t0 = arrival time


@needs_gnuradio
@pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc (GNU Radio Companion compiler) not found")
def test_grc_flowgraph_compiles_and_streams(tmp_path):
    """nearfield_tx.grc -> grcc -> a Python flowgraph whose stream is make_test_signal's."""
    env = {**os.environ, "PYTHONPATH": str(TX.parent)}
    out = subprocess.run(
        ["grcc", "-o", str(tmp_path), str(TX.with_suffix(".grc"))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    script = tmp_path / "nearfield_tx_grc.py"
    assert out.returncode == 0 and script.exists(), out.stdout + out.stderr
    items, _ = tx.make_test_signal(N, 1000, 30e9, tx.PAPER_TARGETS, 20.0, 0.02, 1)
    addr = f"tcp://127.0.0.1:{free_port()}"
    src = ZMQSource(address=addr, pass_tags=True, n_antennas=N, snapshots=T, frames=5, timeout_s=30.0)
    src.start()
    proc = subprocess.Popen(
        [gnuradio_python(), str(script), "--address", addr, "--n-antennas", str(N), "--rate", "20000"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        frames = [f for f in src.generate() if f is not None]
    finally:
        src.close()
        proc.terminate()  # the generated flowgraph runs until stopped
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert [f.seq for f in frames] == list(range(5))
    for f in frames:
        np.testing.assert_array_equal(f.snapshots, items[f.seq * T : (f.seq + 1) * T].T)
    assert frames[0].meta["tags"][0] == {"offset": 0, "key": "nearfield_cycle", "value": 1000}
