"""The runner: ordering under backpressure, fan-out/fan-in, drops, failures, Ctrl-C, no leftover process.

Every test runs in process mode (one forked process per block, ipc://) and, where it makes
sense, in in-process mode (threads, inproc://).  Test blocks live in conftest.py.
"""

import io
import json
import multiprocessing
import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import read_collect

from nearfield.runtime import format_summary, run_flowgraph
from nearfield.runtime.flowgraph import parse_flowgraph

MODES = [pytest.param(False, id="process"), pytest.param(True, id="inproc")]


def _graph(text, **fmt):
    return parse_flowgraph(textwrap.dedent(text).format(**fmt), path="test.yaml")


def _pid_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _run(graph, inproc, **kw):
    err = io.StringIO()
    res = run_flowgraph(graph, inproc=inproc, stream=err, **kw)
    assert multiprocessing.active_children() == []
    if not inproc:
        assert not [t for t in threading.enumerate() if t.name.startswith("nf:")]
    return res, err.getvalue()


@pytest.mark.parametrize("inproc", MODES)
def test_every_seq_arrives_once_in_order_through_a_slow_block(tmp_path, inproc):
    out = tmp_path / "out.txt"
    # 64 x 400 complex64 = 200 kB per frame: the ipc kernel buffers hold only a few
    g = _graph(
        """
        blocks:
          src:  {{type: t_count, frames: 40, rows: 64, cols: 400}}
          slow: {{type: t_pass, delay: 0.01}}
          out:  {{type: t_collect, path: "{out}"}}
        connections:
          - [src, slow]
          - [slow, out]
        """,
        out=out,
    )
    res, err = _run(g, inproc, hwm=2)
    assert res.ok, res.error
    rows, eos = read_collect(out)
    assert [r[0] for r in rows] == list(range(40))
    assert all(r[1] == r[0] and r[4] for r in rows)  # data intact (every element == seq)
    assert eos  # finish() ran after end of stream
    src, slow, sink = (res.block(n) for n in ("src", "slow", "out"))
    assert src["frames_out"] == 40 and slow["frames_in"] == slow["frames_out"] == 40
    assert sink["frames_in"] == 40 and sink["dropped"] == 0
    # backpressure: the source spent most of its time waiting for the slow block
    assert src["blocked"] > 0.5
    assert slow["busy"] > 0.5
    assert slow["proc_mean_ms"] >= 10.0 and slow["proc_p95_ms"] >= 10.0
    # bounded queues: no frame waited for much more than (in flight) x (10 ms per frame)
    assert sink["latency_p95_ms"] < 400
    assert "slow" in err and "wall time" in err  # the summary table went to the stream
    if not inproc:
        pids = {r[3] for r in rows}
        assert len(pids) == 1 and pids != {os.getpid()}  # the sink ran in its own process
        assert _pid_gone(pids.pop())


@pytest.mark.parametrize("inproc", MODES)
def test_fan_out_duplicates_and_fan_in_merges(tmp_path, inproc):
    g = _graph(
        """
        blocks:
          a:  {{type: t_count, frames: 15}}
          b:  {{type: t_count, frames: 10, offset: 100}}
          p:  {{type: t_pass}}
          o1: {{type: t_collect, path: "{o1}"}}
          o2: {{type: t_collect, path: "{o2}", delay: 0.002}}
        connections:
          - [a, p]
          - [b, p]
          - [p, o1]
          - [p, o2]
        """,
        o1=tmp_path / "o1",
        o2=tmp_path / "o2",
    )
    res, _ = _run(g, inproc)
    assert res.ok, res.error
    want = list(range(15)) + list(range(100, 110))
    for o in ("o1", "o2"):
        rows, eos = read_collect(tmp_path / o)
        seqs = [r[0] for r in rows]
        assert sorted(seqs) == want and eos  # every frame of both sources, once
        assert [s for s in seqs if s < 100] == list(range(15))  # each source's order kept
        assert [s for s in seqs if s >= 100] == list(range(100, 110))
    assert res.block("p")["frames_in"] == 25 and res.block("p")["frames_out"] == 25


@pytest.mark.parametrize("inproc", MODES)
def test_named_ports(tmp_path, inproc):
    g = _graph(
        """
        blocks:
          a:  {{type: t_count, frames: 10}}
          s:  {{type: t_split}}
          j:  {{type: t_join}}
          ev: {{type: t_collect, path: "{ev}"}}
          al: {{type: t_collect, path: "{al}"}}
        connections:
          - [a, s]
          - [s.even, ev]
          - [s.even, j.a]
          - [s.odd, j.b]
          - [j, al]
        """,
        ev=tmp_path / "ev",
        al=tmp_path / "al",
    )
    res, _ = _run(g, inproc)
    assert res.ok, res.error
    assert [r[0] for r in read_collect(tmp_path / "ev")[0]] == [0, 2, 4, 6, 8]
    rows = read_collect(tmp_path / "al")[0]
    assert sorted(r[0] for r in rows) == list(range(10))
    assert all(r[2] == ("a" if r[0] % 2 == 0 else "b") for r in rows)


@pytest.mark.parametrize("inproc", MODES)
def test_bad_frames_and_nan_frames_are_dropped_counted_and_the_rest_arrives(tmp_path, inproc, caplog):
    out = tmp_path / "out"
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 12, nan_at: [5, 9]}}
          mid: {{type: t_pass, bad_at: [3]}}
          out: {{type: t_collect, path: "{out}"}}
        connections:
          - [src, mid]
          - [mid, out]
        """,
        out=out,
    )
    res, _ = _run(g, inproc)
    assert res.ok, res.error
    assert [r[0] for r in read_collect(out)[0]] == [0, 1, 2, 4, 6, 7, 8, 10, 11]
    mid = res.block("mid")
    assert mid["frames_in"] == 12 and mid["frames_out"] == 9
    assert mid["dropped"] == 3 and mid["dropped_detail"] == {"wire": 0, "invalid": 2, "bad": 1}
    assert res.block("out")["dropped"] == 0
    if inproc:  # process-mode children log to their own stderr
        text = caplog.text
        assert "block 'mid' dropped frame seq=3: BadFrame: refusing seq 3" in text
        assert "block 'mid' dropped frame seq=5: array 'snapshots' holds NaN or Inf" in text


@pytest.mark.parametrize("inproc", MODES)
def test_finish_frames_are_emitted(tmp_path, inproc):
    out = tmp_path / "out"
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 6}}
          mid: {{type: t_pass, hold: true}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, mid], [mid, out]]
        """,
        out=out,
    )
    res, _ = _run(g, inproc)
    assert res.ok, res.error
    assert [r[0] for r in read_collect(out)[0]] == list(range(6))


@pytest.mark.parametrize("inproc", MODES)
def test_a_raising_block_stops_the_graph_and_is_named_with_the_seq(tmp_path, inproc):
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 0}}
          mid: {{type: t_pass, fail_at: 7}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, mid], [mid, out]]
        """,
        out=tmp_path / "out",
    )
    t = time.perf_counter()
    res, err = _run(g, inproc)  # the source is endless: only the stop ends it
    assert time.perf_counter() - t < 10
    assert not res.ok
    assert res.error == "block 'mid' failed on frame seq=7: RuntimeError: boom"
    assert res.error in err
    assert 'raise RuntimeError("boom")' in res.traceback
    assert res.block("mid")["status"] == "failed"
    assert res.block("src")["status"] == "stopped"
    # the stop is immediate: frames still in flight may not arrive, but nothing from seq 7 on
    seqs = [r[0] for r in read_collect(tmp_path / "out")[0]]
    assert seqs == list(range(len(seqs))) and len(seqs) <= 7


@pytest.mark.parametrize(
    "stage, expected",
    [
        ("start", "block 'mid' failed in start(): OSError: cannot open the device"),
        ("finish", "block 'mid' failed in finish() (after frame seq=2): ValueError: flush failed"),
        ("close", "block 'mid' failed in close() (after frame seq=2): RuntimeError: close failed"),
    ],
)
def test_failures_outside_process_are_named(tmp_path, stage, expected):
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 3}}
          mid: {{type: t_pass, fail_in: {stage}}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, mid], [mid, out]]
        """,
        out=tmp_path / "out",
        stage=stage,
    )
    res, _ = _run(g, False)
    assert not res.ok and res.error == expected


def test_a_worker_that_dies_is_reported(tmp_path):
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 0}}
          mid: {{type: t_pass, exit_at: 2}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, mid], [mid, out]]
        """,
        out=tmp_path / "out",
    )
    res, _ = _run(g, False)
    assert not res.ok
    assert res.error == "block 'mid' died unexpectedly (exit code 3)"
    assert res.block("mid")["status"] == "killed"


@pytest.mark.parametrize("inproc", MODES)
def test_ctrl_c_stops_cleanly(tmp_path, inproc):
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 0, sleep: 0.001}}
          mid: {{type: t_pass, delay: 0.002}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, mid], [mid, out]]
        """,
        out=tmp_path / "out",
    )
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t = time.perf_counter()
    try:
        res, err = _run(g, inproc)
    finally:
        timer.cancel()
    assert time.perf_counter() - t < 8
    assert not res.ok and res.interrupted and res.error == "interrupted"
    assert "interrupted" in err
    assert all(r["status"] == "stopped" for r in res.summary), res.summary
    rows = read_collect(tmp_path / "out")[0]
    assert len(rows) > 10 and [r[0] for r in rows] == list(range(len(rows)))


@pytest.mark.parametrize("inproc", MODES)
def test_lossy_link_drops_are_counted_and_reliable_links_lose_nothing(tmp_path, inproc):
    g = _graph(
        """
        blocks:
          src:  {{type: t_count, frames: 300, rows: 64, cols: 100}}
          fast: {{type: t_collect, path: "{fast}"}}
          view: {{type: t_collect, path: "{view}", delay: 0.005}}
        connections:
          - [src, fast]
          - {{from: src, to: view, lossy: true}}
        """,
        fast=tmp_path / "fast",
        view=tmp_path / "view",
    )
    res, _ = _run(g, inproc, hwm=2)
    assert res.ok, res.error
    assert [r[0] for r in read_collect(tmp_path / "fast")[0]] == list(range(300))
    view, eos = read_collect(tmp_path / "view")
    seqs = [r[0] for r in view]
    assert eos and seqs == sorted(set(seqs))  # in order, no duplicates, EOS got through
    lost = res.block("src")["lost"]
    assert lost > 0 and len(seqs) + lost == 300  # every frame either arrived or was counted


def test_tcp_transport(tmp_path):
    out = tmp_path / "out"
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 20}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, out]]
        """,
        out=out,
    )
    res, _ = _run(g, False, transport="tcp")
    assert res.ok, res.error
    assert [r[0] for r in read_collect(out)[0]] == list(range(20))


def test_argument_checks_and_summary_format():
    g = _graph("""
        blocks:
          src: {{type: t_count, frames: 1}}
          out: {{type: t_collect, path: x}}
        connections: [[src, out]]
        """)
    with pytest.raises(ValueError, match="transport"):
        run_flowgraph(g, transport="udp")
    with pytest.raises(ValueError, match="needs inproc=True"):
        run_flowgraph(g, transport="inproc")
    with pytest.raises(ValueError, match="hwm"):
        run_flowgraph(g, hwm=0)
    row = {
        "block": "b",
        "type": "t",
        "frames_in": 3,
        "frames_out": 2,
        "dropped": 1,
        "lost": 0,
        "proc_mean_ms": 1.5,
        "proc_p95_ms": 2.0,
        "latency_mean_ms": None,
        "latency_p95_ms": None,
        "busy": 0.25,
        "blocked": 0.0,
        "status": "ok",
    }
    text = format_summary([row], 1.0)
    assert "25%" in text and "1.50" in text and "wall time 1.000 s" in text


def _real_blocks_available():
    from nearfield.runtime import registry

    try:
        for t in ("synthetic", "covariance", "jsonl"):
            registry.get(t)
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _real_blocks_available(), reason="synthetic/covariance/jsonl blocks not importable")
@pytest.mark.parametrize("inproc", MODES)
def test_end_to_end_synthetic_covariance_jsonl(tmp_path, inproc):
    out = tmp_path / "est.jsonl"
    g = parse_flowgraph(
        {
            "blocks": {
                "source": {"type": "synthetic", "n_antennas": 32, "snapshots": 20, "frames": 6, "seed": 3},
                "cov": {"type": "covariance"},
                "out": {"type": "jsonl", "path": str(out)},
            },
            "connections": [["source", "cov"], ["cov", "out"]],
        },
        path="e2e",
    )
    res, _ = _run(g, inproc)
    assert res.ok, res.error
    recs = [json.loads(line) for line in Path(out).read_text().splitlines()]
    assert [r["seq"] for r in recs] == list(range(6))
    assert all("truth" in r and r["latency_s"] >= 0 for r in recs)
    assert res.block("cov")["frames_in"] == 6 and res.block("out")["frames_in"] == 6


def test_a_message_that_fails_validation_is_dropped_and_counted(tmp_path, monkeypatch, caplog):
    """In-process mode shares the module, so a corrupt message can be injected at decode."""
    import nearfield.runtime.worker as rt
    from nearfield.runtime.wire import WireError, decode

    def corrupt_seq_4(parts, limits):
        f = decode(parts, limits)
        if getattr(f, "seq", None) == 4 and "path" in f.meta:  # only on the mid -> out link
            raise WireError(
                "header field 'arrays.snapshots': shape [4, 4] of complex64 needs 128 bytes, but part 1 holds 100"
            )
        return f

    monkeypatch.setattr(rt, "decode", corrupt_seq_4)
    out = tmp_path / "out"
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 8}}
          mid: {{type: t_pass}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, mid], [mid, out]]
        """,
        out=out,
    )
    res, _ = _run(g, True)
    assert res.ok, res.error
    assert [r[0] for r in read_collect(out)[0]] == [0, 1, 2, 3, 5, 6, 7]
    assert res.block("out")["dropped_detail"] == {"wire": 1, "invalid": 0, "bad": 0}
    assert res.block("out")["frames_in"] == 7
    assert "block 'out' dropped a message: invalid message: header field 'arrays.snapshots'" in caplog.text


def _children_of(pid):
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(d.name))
    return kids


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_block_processes_die_with_a_killed_runner(tmp_path):
    """Even a SIGKILLed runner leaves no block process behind (PR_SET_PDEATHSIG)."""
    import subprocess
    import sys

    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import conftest
        from nearfield.runtime.flowgraph import parse_flowgraph
        from nearfield.runtime import run_flowgraph
        g = parse_flowgraph({{"blocks": {{"src": {{"type": "t_count", "frames": 0, "sleep": 0.01}},
                                         "out": {{"type": "t_collect", "path": {str(tmp_path / "o")!r}}}}},
                             "connections": [["src", "out"]]}})
        run_flowgraph(g, quiet=True)
        """)
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the killed runner cannot remove its ipc dir
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 20
        kids = []
        while time.time() < deadline and len(kids) < 2:
            time.sleep(0.2)
            kids = _children_of(proc.pid)
        assert len(kids) == 2, "block processes did not start"
        while time.time() < deadline and not (tmp_path / "o").exists():
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert not any(_alive(k) for k in kids)
