"""The web sink: its HTTP server and event stream (plain HTTP clients), bad ports and
addresses, and one end-to-end run rendered in headless Chromium (skipped without it)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nearfield.array import ULA
from nearfield.block import BadFrame, ParamError
from nearfield.cli import main as cli_main
from nearfield.frame import Frame
from nearfield.sinks.web import WebSink

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
N = 16


def make_frame(seq: int, std: bool = False, n: int = N) -> Frame:
    """A small frame carrying everything the view shows; the targets move with seq."""
    arr = ULA(n, carrier_hz=30e9)
    est = [{"theta": 0.30, "range": 5.0 + 0.01 * seq}, {"theta": -0.20, "range": 3.0}]
    if std:
        for t in est:
            t.update(theta_std=1e-4, range_std=2e-3, status="ok")
    truth = {
        "targets": [{"theta": -0.2001, "range": 2.999}, {"theta": 0.2999, "range": 5.002 + 0.01 * seq}],
        "faulty": [2, 7],
        "fault_phase": [1.0, 2.0],
        "noise_var": 0.1,
    }
    c_hat = np.ones(n, np.complex64)
    c_hat[2], c_hat[5] = np.exp(0.9j), np.exp(0.3j)
    g = np.linspace(-0.5, 0.5, 101)
    rg = np.tile(np.linspace(2.0, 8.0, 41), (2, 1))
    arrays = {
        "snapshots": np.zeros((n, 4), np.complex64),
        "c_hat": c_hat,
        "angle_grid": g,
        "angle_spectrum": 1.0 / (1e-3 + (g - 0.3) ** 2),
        "range_grid": rg,
        "range_spectrum": 1.0 / (1e-2 + (rg - [[5.0], [3.0]]) ** 2),
    }
    meta = {
        "array": arr.describe(),
        "targets": est,
        "faulty": [2, 5],
        "truth": truth,
        "t_emit": time.time(),
        "noise_var": 0.1,
    }
    return Frame(seq=seq, t0=0.1 * seq, arrays=arrays, meta=meta)


@pytest.fixture
def sink():
    s = WebSink("view", port=0, max_rate_hz=1000.0)
    s.start()
    yield s
    s.close()


def addr(s):
    return s._server.server_address[:2]


def get(s, path):
    conn = http.client.HTTPConnection(*addr(s), timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), body


def open_stream(s):
    conn = http.client.HTTPConnection(*addr(s), timeout=10)
    conn.request("GET", "/events")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    assert resp.readline() == b"retry: 1000\n" and resp.readline() == b"\n"
    return conn, resp


def read_event(resp):
    """(event name, parsed data) of the next event; comment lines are skipped."""
    name, data = "message", None
    while True:
        line = resp.readline()
        if not line:
            raise EOFError("stream closed")
        line = line.decode().rstrip("\n")
        if line == "" and data is not None:
            return name, json.loads(data)
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


# -- pages and assets ------------------------------------------------------------------------


def test_page_and_assets_are_served_offline(sink):
    status, ctype, html = get(sink, "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'src="app.js"' in html and b'href="style.css"' in html and b"<canvas" in html
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css"), ("/index.html", "text/html")):
        status, ctype, body = get(sink, path)
        assert status == 200 and ctype.startswith(kind) and len(body) > 500
        assert b"http://" not in body and b"https://" not in body and b"//cdn" not in body  # no outside asset
    assert get(sink, "/nope")[0] == 404
    assert get(sink, "/state.json")[2] == b"null"  # before the first frame


# -- the event stream ------------------------------------------------------------------------


def test_stream_delivers_the_frame_state(sink):
    conn, resp = open_stream(sink)
    frame = make_frame(3)
    sink.process(frame)
    name, st = read_event(resp)
    conn.close()
    assert name == "frame" and st["seq"] == 3 and st["t0"] == pytest.approx(0.3)
    # estimates sorted by theta, each minus its true target (matched in the plane)
    assert [t["theta"] for t in st["targets"]] == [-0.20, 0.30]
    assert st["targets"][0]["err_range"] == pytest.approx(3.0 - 2.999)
    assert st["targets"][1]["err_theta"] == pytest.approx(0.30 - 0.2999)
    assert st["targets"][1]["err_range"] == pytest.approx(5.03 - 5.032)
    # fault map |c_hat - 1| and the HI NMSE against c rebuilt from the truth (eq. 4)
    c_hat = frame.arrays["c_hat"]
    np.testing.assert_allclose(st["hi_dev"], np.abs(c_hat - 1), atol=1e-4)
    c = np.ones(N, complex)
    c[[2, 7]] = np.exp([1.0j, 2.0j])
    nmse = np.sum(np.abs(c_hat - c) ** 2) / N
    assert st["history"]["hi_nmse_db"][-1] == pytest.approx(10 * np.log10(nmse), abs=0.005)  # sent to 0.01 dB
    assert st["faulty"] == [2, 5] and st["true_faulty"] == [2, 7]
    # spectra in dB, peak at 0 dB where the spectrum peaks
    i = int(np.argmax(st["angle"]["db"]))
    assert st["angle"]["db"][i] == pytest.approx(0.0) and st["angle"]["theta"][i] == pytest.approx(0.3)
    assert len(st["range"]) == 2 and max(st["range"][1]["db"]) == pytest.approx(0.0)
    assert st["counters"]["frames"] == 1 and st["counters"]["missing"] == 0
    assert json.loads(get(sink, "/state.json")[2])["seq"] == 3


def test_uncertainty_and_status_pass_through_when_present(sink):
    sink.process(make_frame(0))
    st = json.loads(get(sink, "/state.json")[2])
    assert all("theta_std" not in t and "status" not in t for t in st["targets"])
    sink.process(make_frame(1, std=True))
    st = json.loads(get(sink, "/state.json")[2])
    assert all(t["theta_std"] == 1e-4 and t["range_std"] == 2e-3 and t["status"] == "ok" for t in st["targets"])


def test_two_clients_get_the_same_frames(sink):
    (c1, r1), (c2, r2) = open_stream(sink), open_stream(sink)
    assert wait_for(lambda: len(sink._hub.clients) == 2)
    sink.process(make_frame(10))
    assert read_event(r1)[1]["seq"] == 10 and read_event(r2)[1]["seq"] == 10
    sink.process(make_frame(12))  # seq 11 never arrived: one frame missing
    s1, s2 = read_event(r1)[1], read_event(r2)[1]
    assert s1["seq"] == s2["seq"] == 12 and s1["counters"]["missing"] == 1
    c1.close()
    c2.close()


def test_a_slow_browser_skips_updates_and_holds_back_nothing(sink):
    # One browser never reads: once its socket buffers are full (about 60 kB per update
    # with 8192 antennas of random |c_hat - 1|) its thread blocks on a write.
    slow = socket.create_connection(addr(sink))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(b"GET /events HTTP/1.0\r\n\r\n")
    assert wait_for(lambda: len(sink._hub.clients) == 1)
    slow_rec = next(iter(sink._hub.clients.values()))
    conn, fast = open_stream(sink)
    assert wait_for(lambda: len(sink._hub.clients) == 2)
    seen = []

    def read_until_last():
        while not seen or seen[-1] != -1:
            seen.append(read_event(fast)[1]["seq"])

    reader = threading.Thread(target=read_until_last, daemon=True)
    reader.start()
    frame = make_frame(0, n=8192)
    frame.arrays["c_hat"] = np.exp(1j * np.random.default_rng(5).uniform(0, 6, 8192)).astype(np.complex64)
    seq, last_sent, since = 0, -1, time.monotonic()
    while time.monotonic() - since < 0.5 and seq < 20000:  # until the slow browser is stuck
        frame.seq = seq
        assert sink.process(frame) is None
        seq += 1
        if slow_rec["sent"] != last_sent:
            last_sent, since = slow_rec["sent"], time.monotonic()
    frame.seq = -1  # the last state; the reader stops at it
    sink.process(frame)
    reader.join(timeout=30)
    assert not reader.is_alive() and seen[-1] == -1
    assert seen[:-1] == sorted(seen[:-1])  # in order, older states replaced, not queued
    assert slow_rec["sent"] == last_sent and slow_rec["sent"] < seq  # the slow one went no further
    assert sink.frames == seq + 1  # ... and every frame was processed
    fast_rec = next(c for c in sink._hub.clients.values() if c is not slow_rec)
    assert fast_rec["sent"] == len(seen) and fast_rec["sent"] + fast_rec["skipped"] == seq + 1
    slow.close()
    conn.close()


def test_a_browser_that_disconnects_costs_nothing(sink):
    gone = socket.create_connection(addr(sink))
    gone.sendall(b"GET /events HTTP/1.0\r\n\r\n")
    assert wait_for(lambda: len(sink._hub.clients) == 1)
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    gone.close()  # reset mid-stream
    seq = 0

    def more():
        nonlocal seq
        seq += 1
        sink.process(make_frame(seq))
        return not sink._hub.clients

    assert wait_for(more)  # its thread noticed at a write and left
    conn, resp = open_stream(sink)
    assert read_event(resp)[1]["seq"] == seq  # a new browser gets the latest state at once
    sink.process(make_frame(seq + 1))
    assert read_event(resp)[1]["seq"] == seq + 1
    conn.close()


def test_end_of_stream_event(sink):
    conn, resp = open_stream(sink)
    sink.process(make_frame(0))
    assert read_event(resp)[0] == "frame"
    sink.finish()
    assert read_event(resp)[0] == "end"
    conn.close()


def test_bad_frames_are_refused_naming_the_field(sink):
    fr = make_frame(0)
    del fr.meta["array"]
    with pytest.raises(BadFrame, match="meta.array"):
        sink.process(fr)
    fr = make_frame(1)
    fr.meta["targets"] = [{"theta": "left"}]
    with pytest.raises(BadFrame, match=r"meta.targets\[0\]"):
        sink.process(fr)
    fr = make_frame(2)
    fr.arrays["c_hat"] = np.ones(N + 1, np.complex64)
    with pytest.raises(BadFrame, match="c_hat"):
        sink.process(fr)
    fr = make_frame(3)
    del fr.arrays["range_spectrum"]
    with pytest.raises(BadFrame, match="range_spectrum"):
        sink.process(fr)
    sink.process(make_frame(4))
    assert sink.bad == 4 and sink.frames == 1


# -- bad ports and addresses -----------------------------------------------------------------


@pytest.fixture
def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


@pytest.mark.parametrize("port", [-1, 65536])
def test_port_out_of_range(port):
    with pytest.raises(ParamError, match=r"block 'view', parameter 'port'.*0\.\.65535"):
        WebSink("view", port=port)


def test_port_in_use_is_an_error_at_load(busy_port):
    with pytest.raises(ParamError, match=rf"block 'view', parameter 'port'.*{busy_port}.*already in use"):
        WebSink("view", port=busy_port)


def test_port_taken_after_load_is_an_error_at_start():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    view = WebSink("view", port=port)  # free at load
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", port))
        taker.listen(1)
        with pytest.raises(ParamError, match=r"parameter 'port'.*already in use"):
            view.start()


@pytest.mark.parametrize("host", ["203.0.113.7", "  "])
def test_bad_bind_address(host):
    with pytest.raises(ParamError, match=r"block 'view', parameter 'host'"):
        WebSink("view", host=host)


def test_cli_port_in_use_exits_2_naming_block_and_port(busy_port, tmp_path, capsys):
    rc = cli_main(["run", str(ROOT / "flowgraphs" / "live.yaml"), "--set", f"view.port={busy_port}"])
    err = capsys.readouterr().err
    assert rc == 2 and "'view'" in err and "'port'" in err and "already in use" in err


# -- end to end: nearfield run + headless Chromium ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium(url: str, out: Path, profile: Path, dump: bool = False) -> str:
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,800",
        "--virtual-time-budget=4000",
    ]
    args += ["--dump-dom"] if dump else [f"--screenshot={out}"]
    res = subprocess.run(args + [url], capture_output=True, text=True, timeout=90, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _count_colour(img: np.ndarray, hex_colour: str, tol: float = 0.06) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return int(np.sum(np.all(np.abs(img[..., :3] - rgb) < tol, axis=-1)))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium")
def test_live_flowgraph_renders_in_headless_chromium(tmp_path):
    mpimg = pytest.importorskip("matplotlib.image")
    port = _free_port()
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nearfield.cli",
            "run",
            str(ROOT / "flowgraphs" / "live.yaml"),
            "--set",
            f"view.port={port}",
            "--set",
            "source.frames=0",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:

        def first_frame():
            try:
                return json.loads(urlopen_text(f"http://127.0.0.1:{port}/state.json")) is not None
            except OSError:
                return False

        assert wait_for(first_frame, timeout=120), "no frame reached the view"
        url = f"http://127.0.0.1:{port}/?frames=3"  # the page stops listening after 3 updates
        with tempfile.TemporaryDirectory(dir=tmp_path) as prof:
            dom = _chromium(url, tmp_path / "dom", Path(prof), dump=True)
        assert 'data-frames="3"' in dom and 'data-drawn="3"' in dom
        shots = []
        for i in range(2):
            with tempfile.TemporaryDirectory(dir=tmp_path) as prof:
                _chromium(url, tmp_path / f"shot{i}.png", Path(prof))
            shots.append(mpimg.imread(tmp_path / f"shot{i}.png"))
            time.sleep(3.0)
        a, b = shots
        assert a.shape[:2] == (800, 1200)
        for img in shots:  # drawn: the target colours of the top view and spectra
            assert _count_colour(img, "#1f77b4") > 100 and _count_colour(img, "#d62728") > 100
            assert _count_colour(img, "#1f9d55") > 20  # the "live"/fault-map green
        changed = np.any(np.abs(a[..., :3] - b[..., :3]) > 0.1, axis=-1)
        assert changed.sum() > 500  # the targets moved, the counters went on
    finally:
        run.send_signal(signal.SIGINT)
        try:
            _, err = run.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            _, err = run.communicate()
            pytest.fail("Ctrl-C did not end the run")
    assert run.returncode == 130, err[-2000:]
    assert "live view on http://127.0.0.1" in err


def urlopen_text(url: str) -> str:
    from urllib.request import urlopen

    with urlopen(url, timeout=5) as r:
        return r.read().decode()
