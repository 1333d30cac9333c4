"""Issue 12, one test (or more) per defect: hostile input never kills a graph, nothing is lost,
nothing is silent.  Test blocks come from conftest.py (and two small ones here)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from conftest import read_collect

from nearfield.block import Block, Param, Sink
from nearfield.cli import main
from nearfield.runtime import exit_code, registry, run_flowgraph
from nearfield.runtime.endpoints import InEndpoint
from nearfield.runtime.flowgraph import FlowgraphError, load_flowgraph, parse_flowgraph
from nearfield.runtime.plan import Curve, InSpec, clean_stale_ipc_dirs
from nearfield.sources.zmq_source import ZMQSource, parse_tag_header
from nearfield.state import clean_stale_temp_files, load_json, save_json_atomic

ROOT = Path(__file__).resolve().parents[1]


class CheckpointSink(Sink):
    """Test sink: counts frames; checkpoint() appends the count so far to a file."""

    params = (Param("path", str, doc="checkpoint log"), Param("delay", float, 0.0, "s per frame"))

    def start(self):
        self.n = 0

    def process(self, frame):
        time.sleep(self.delay)
        self.n += 1

    def checkpoint(self):
        with open(self.path, "a") as fh:
            fh.write(f"{self.n}\n")


class StartFails(Block):
    """Test stage whose start() raises: a device that cannot be opened."""

    def start(self):
        raise OSError("cannot open /dev/nothing")

    def process(self, frame):
        return frame


registry.register("t_ckpt", CheckpointSink, replace=True)
registry.register("t_startfails", StartFails, replace=True)


def _graph(text, **fmt):
    return parse_flowgraph(textwrap.dedent(text).format(**fmt), path="test.yaml")


# -- 1. one gr-zeromq message with a tuple key holding a vector ------------------------------
def pmt_sym(s: str) -> bytes:
    return b"\x02" + struct.pack(">H", len(s)) + s.encode()


TUPLE_KEY_DICT = (
    b"\x09\x07"  # dict, first (key . value) pair
    + b"\x0c\x00\x00\x00\x02"
    + pmt_sym("k")  # key: a tuple ("k", [7, 7])
    + b"\x08\x00\x00\x00\x02\x03\x00\x00\x00\x07\x03\x00\x00\x00\x07"
    + b"\x04"
    + struct.pack(">d", 0.5)  # value 0.5
    + b"\x06"
)  # end of the dict


def tag_message(items: np.ndarray, offset: int, tags) -> bytes:
    """gr-zeromq pass_tags payload; tags = [(offset, key_pmt, value_pmt)]."""
    head = struct.pack("<HBQQ", 0x5FF0, 1, offset, len(tags))
    for toff, k, v in tags:
        head += struct.pack("<Q", toff) + k + v + b"\x06"
    return head + np.ascontiguousarray(items, dtype="<c8").tobytes()


def test_tuple_key_holding_a_vector_is_decoded_not_fatal():
    items = np.ones((2, 2), np.complex64)
    off, tags, _ = parse_tag_header(tag_message(items, 0, [(0, pmt_sym("meta"), TUPLE_KEY_DICT)]))
    assert tags[0].value == {("k", "[7, 7]"): 0.5}


# -- 2. far-future tags: bounded backlog; the acceptance scenario, scaled down ----------------
def test_hostile_tags_then_ordinary_messages_all_ordinary_frames_delivered(tmp_path):
    """Tuple-key tag, 20 messages of 2000 far-future tags, then 10 ordinary messages
    (benchmarks/hostile_zmq.py runs the full 200-message version and reports the peak RSS)."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    n, t = 4, 10
    src = ZMQSource(
        address=f"tcp://127.0.0.1:{port}",
        n_antennas=n,
        snapshots=t,
        pass_tags=True,
        timeout_s=1.0,
        max_pending_tags=500,
    )
    src.start()
    rng = np.random.default_rng(0)
    items = lambda: (rng.standard_normal((t, n)) + 0j).astype(np.complex64)  # noqa: E731
    msgs = [tag_message(items(), 0, [(0, pmt_sym("meta"), TUPLE_KEY_DICT)])]
    far = [(10**15 + i, pmt_sym("far"), b"\x04" + struct.pack(">d", i)) for i in range(2000)]
    msgs += [tag_message(items(), t * (1 + k), far) for k in range(20)]
    ordinary = [items() for _ in range(10)]
    msgs += [tag_message(x, t * (21 + k), []) for k, x in enumerate(ordinary)]
    for m in msgs:
        push.send(m)
    try:
        frames = list(src.generate())
    finally:
        src.close()
        ctx.destroy(linger=0)
    assert [f.seq for f in frames] == list(range(31))
    for f, x in zip(frames[21:], ordinary):
        np.testing.assert_array_equal(f.arrays["snapshots"], x.T)
    assert src.counters["bad_messages"] == 0
    assert src.counters["dropped_tags"] == 20 * 2000  # every far-future tag, none kept
    assert frames[0].meta["tags"][0]["value"] == {"('k', '[7, 7]')": 0.5}


def test_tag_backlog_is_capped_by_max_pending_tags():
    src = ZMQSource(
        address="tcp://127.0.0.1:1", n_antennas=2, snapshots=10, max_pending_tags=50, max_tag_lead_frames=10**9
    )
    from nearfield.sources.zmq_source import GrTag

    pending = src._keep_tags([], [GrTag(10**6 + i, "k", i, None) for i in range(80)], 0)
    assert len(pending) == 50 and src.counters["dropped_tags"] == 30


# -- 3. spoofed end of stream and junk on the links and the control socket --------------------
def test_spoofed_eos_and_junk_neither_end_nor_hang_the_stream(tmp_path, monkeypatch):
    """tcp without CURVE, so that a local 'attacker' can connect: forged end-of-stream messages
    (no token, a wrong token) and junk reach the sink's input and the control socket; the run
    still delivers every frame and ends normally."""
    import nearfield.runtime.runner as runner

    plans_seen = {}
    real = runner.make_plans

    def spy(*a, **kw):
        out = real(*a, **kw)
        plans_seen["ctl"], plans_seen["plans"] = out[0], out[3]
        return out

    monkeypatch.setattr(runner, "make_plans", spy)
    out = tmp_path / "o"
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 30, sleep: 0.02}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, out]]
        """,
        out=out,
    )
    ctx = zmq.Context()

    def attack():
        while "plans" not in plans_seen:
            time.sleep(0.01)
        time.sleep(0.2)
        ep = plans_seen["plans"]["out"].inputs[0].endpoint
        s = ctx.socket(zmq.PUSH)
        s.connect(ep)
        c = ctx.socket(zmq.PUSH)
        c.connect(plans_seen["ctl"])
        for parts in (
            [b'{"v": 1, "eos": true}'],
            [b'{"v": 1, "eos": true, "token": "00ff"}'],
            [b"\xff" * 100],
            [b"[" * 5000],
        ):
            s.send_multipart(parts)
        for junk in (b"junk", b'{"type": "done", "block": "out", "stats": {}}', b"[" * 5000):
            c.send(junk)
        time.sleep(0.3)
        s.close(0)
        c.close(0)

    th = threading.Thread(target=attack)
    th.start()
    res = run_flowgraph(g, inproc=True, transport="tcp", curve=False, stream=io.StringIO())
    th.join()
    ctx.destroy(linger=0)
    assert res.ok, res.error
    rows, eos = read_collect(out)
    assert [r[0] for r in rows] == list(range(30)) and eos
    assert res.block("out")["dropped_detail"]["wire"] == 4
    assert res.stats["control_junk"] == 3


# -- 4. flowgraph loading: alias bomb, size, depth --------------------------------------------
def test_yaml_alias_bomb_is_refused_before_expansion():
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        p, q = chr(96 + i), chr(97 + i)
        lines.append(f"{q}: &{q} [" + ",".join([f"*{p}"] * 9) + "]")
    text = "\n".join(lines)
    assert len(text) < 420
    with pytest.raises(FlowgraphError, match="expands to more than 200000 nodes") as err:
        parse_flowgraph(text)
    assert len(str(err.value)) < 300


def test_recursive_alias_and_deep_nesting_are_refused():
    with pytest.raises(FlowgraphError, match="expands|nested"):
        parse_flowgraph("a: &a [*a]\n")
    with pytest.raises(FlowgraphError, match="nested too deeply|expands"):
        parse_flowgraph("blocks: " + "[" * 20000 + "]" * 20000)


def test_big_file_refused_before_reading(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text("# " + "x" * 2000 + "\nblocks: {}\n")
    with pytest.raises(FlowgraphError, match="exceeds the limit of 1000 bytes"):
        load_flowgraph(p, max_bytes=1000)


def test_error_messages_about_huge_values_stay_small():
    with pytest.raises(FlowgraphError) as err:
        parse_flowgraph({"blocks": list(range(100_000)), "connections": []})
    assert len(str(err.value)) < 400


# -- 5. poisoned state ---------------------------------------------------------------------
def _state(n=16):
    rng = np.random.default_rng(1)
    return {
        "version": 1,
        "n_antennas": n,
        "faulty": [3, 9],
        "e": rng.random(n).tolist(),
        "b": [[float(x), 0.5] for x in rng.random(n)],
        "frames": 12,
        "noise_var": 0.02,
    }


def _negate_positive(obj):
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, (int, float)):
        return -obj if obj > 0 else obj
    if isinstance(obj, list):
        return [_negate_positive(x) for x in obj]
    if isinstance(obj, dict):
        return {k: (v if k == "version" else _negate_positive(v)) for k, v in obj.items()}
    return obj


def test_poisoned_state_is_refused_naming_the_file_and_field(tmp_path):
    p = tmp_path / "fd.json"
    save_json_atomic(str(p), _state())
    assert load_json(str(p), "block 'fd'")["frames"] == 12
    save_json_atomic(str(p), _negate_positive(_state()))
    with pytest.raises(ValueError, match=r"block 'fd', state_path '.*fd.json': refused: field "):
        load_json(str(p), "block 'fd'")
    for field, bad, what in [
        ("noise_var", -0.02, "noise_var"),
        ("faulty", [3, 16], "faulty"),
        ("faulty", [3, 3], "repeated"),
        ("b", [[0.0, 1.0]] * 3, "disagree"),
        ("e", [float("nan")] * 16, "NaN"),
        ("version", 7, "version"),
        ("frames", 1.5, "frames"),
    ]:
        save_json_atomic(str(p), {**_state(), field: bad})
        with pytest.raises(ValueError, match=what):
            load_json(str(p), "block 'fd'")
    save_json_atomic(str(p), _state(16))
    with pytest.raises(ValueError, match="disagree"):
        load_json(str(p), "block 'fd'", n_antennas=32)  # a state of another array


def test_poisoned_state_stops_the_run_at_start_with_exit_code_2(tmp_path, capsys):
    state = tmp_path / "fd.json"
    save_json_atomic(str(state), _negate_positive(_state(32)))
    out = tmp_path / "est.jsonl"
    rc = main(
        [
            "run",
            str(ROOT / "flowgraphs" / "synthetic.yaml"),
            "--quiet",
            "--inproc",
            "--set",
            "source.n_antennas=32",
            "--set",
            "source.frames=2",
            "--set",
            f"detect.state_path={state}",
            "--set",
            f"out.path={out}",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "state_path" in err and "fd.json" in err and "refused" in err and "Traceback" not in err
    assert not out.exists() and not Path(str(out) + ".partial").exists()


def test_stale_temp_files_and_ipc_dirs_are_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "s.json"
    stale = tmp_path / f".s.json.{dead.pid}.tmp"
    live = tmp_path / f".s.json.{os.getpid()}.tmp"
    stale.write_text("{")
    live.write_text("{")
    assert clean_stale_temp_files(str(target)) == 1
    assert not stale.exists() and live.exists()
    (tmp_path / f"nf-{dead.pid}-abc").mkdir()
    (tmp_path / f"nf-{os.getpid()}-abc").mkdir()
    assert clean_stale_ipc_dirs(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.glob("nf-*")) == [f"nf-{os.getpid()}-abc"]


# -- 6. output never destroyed; periodic checkpoints ---------------------------------------
@pytest.mark.parametrize("how", ["seed", "start"])
def test_a_run_that_fails_at_start_leaves_earlier_output_intact(tmp_path, capsys, how):
    out = tmp_path / "est.jsonl"
    out.write_text('{"seq": 0, "earlier": true}\n')
    if how == "seed":  # the case: passes validation, fails in the source's start()
        argv = [
            "run",
            str(ROOT / "flowgraphs" / "synthetic.yaml"),
            "--set",
            "source.seed=-1",
            "--set",
            "source.n_antennas=32",
            "--set",
            f"out.path={out}",
            "--quiet",
        ]
    else:
        g = tmp_path / "g.yaml"
        g.write_text(
            f"blocks:\n  src: {{type: t_count, frames: 3}}\n  mid: {{type: t_startfails}}\n"
            f"  out: {{type: jsonl, path: '{out}'}}\nconnections: [[src, mid], [mid, out]]\n"
        )
        argv = ["run", str(g), "--quiet"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert "failed in start()" in err and "Traceback" not in err
    assert out.read_text() == '{"seq": 0, "earlier": true}\n'
    assert not Path(str(out) + ".partial").exists()


def test_checkpoint_is_called_periodically_while_running(tmp_path):
    log = tmp_path / "ckpt"
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 40}}
          out: {{type: t_ckpt, path: "{log}", delay: 0.02}}
        connections: [[src, out]]
        """,
        log=log,
    )
    res = run_flowgraph(g, inproc=True, checkpoint_s=0.1, stream=io.StringIO())
    assert res.ok, res.error
    counts = [int(x) for x in log.read_text().split()]
    assert len(counts) >= 2 and counts == sorted(counts) and 0 < counts[0] < 40


@pytest.mark.parametrize("inproc", [True, False])
def test_checkpoint_reaches_a_block_placed_with_the_source(tmp_path, inproc):
    log = tmp_path / "ckpt"
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 40}}
          out: {{type: t_ckpt, path: "{log}", delay: 0.02}}
        connections: [[src, out]]
        placement:
          all: [src, out]
        """,
        log=log,
    )
    res = run_flowgraph(g, inproc=inproc, checkpoint_s=0.1, stream=io.StringIO())
    assert res.ok, res.error
    counts = [int(x) for x in log.read_text().split()]
    assert len(counts) >= 2 and counts == sorted(counts) and 0 < counts[0] < 40


# -- 7. nothing silent: all dropped -> exit 3 naming the drops; stall watchdog ----------------
def test_a_run_whose_every_frame_is_dropped_exits_3_and_names_the_drops(tmp_path, capsys):
    g = tmp_path / "g.yaml"
    g.write_text(
        f"blocks:\n  src: {{type: t_count, frames: 5, nan_at: [0, 1, 2, 3, 4]}}\n"
        f"  mid: {{type: t_pass}}\n"
        f"  out: {{type: t_collect, path: '{tmp_path / 'o'}'}}\n"
        f"connections: [[src, mid], [mid, out]]\n"
    )
    assert main(["run", str(g), "--inproc"]) == 3
    err = capsys.readouterr().err
    assert "produced nothing" in err
    assert "5 x block 'mid' invalid: array 'snapshots' holds NaN or Inf" in err


def test_drop_share_threshold(tmp_path):
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 10}}
          mid: {{type: t_pass, bad_at: [0, 1, 2, 3]}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, mid], [mid, out]]
        """,
        out=tmp_path / "o",
    )
    res = run_flowgraph(g, inproc=True, quiet=True)
    assert res.ok and res.drop_share() == pytest.approx(4 / 16)  # 4 of (10 + 6) frames received
    assert exit_code(res, 0.5) == 0 and exit_code(res, 0.2) == 3
    assert res.drop_reasons() == [("mid", "bad: BadFrame: refusing seq #", 4)]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux")
def test_watchdog_stops_a_graph_whose_block_was_sigstopped(tmp_path):
    out = tmp_path / "o"
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 0, sleep: 0.01}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, out]]
        """,
        out=out,
    )

    def stop_the_sink():
        while not (out.exists() and out.read_text().count("\n") >= 3):
            time.sleep(0.05)
        pid = int(out.read_text().splitlines()[0].split()[3])
        os.kill(pid, signal.SIGSTOP)

    th = threading.Thread(target=stop_the_sink, daemon=True)
    th.start()
    err = io.StringIO()
    res = run_flowgraph(g, stall_timeout_s=1.5, grace_s=1.0, stream=err)
    th.join(5)
    assert not res.ok and res.failed_stage == "stall" and exit_code(res) == 1
    assert "block 'out' made no progress" in res.error and "no progress" in err.getvalue()


# -- 8. CURVE on tcp links and on the PUB sink; loopback by default -------------------------
def test_curve_tcp_link_refuses_a_client_without_the_key():
    ctx = zmq.Context()
    server = Curve.server_pair()
    port = _free_port()
    ep = InEndpoint(ctx, InSpec(f"tcp://127.0.0.1:{port}", "in", False, [], server), hwm=4, max_msg_bytes=1 << 20)
    try:
        plain = ctx.socket(zmq.PUSH)
        plain.connect(f"tcp://127.0.0.1:{port}")
        plain.send(b"from a stranger", zmq.NOBLOCK) if plain.poll(100, zmq.POLLOUT) else None
        assert not ep.sock.poll(500), "a client without the server key got a message through"
        keyed = ctx.socket(zmq.PUSH)
        server.client_of().apply(keyed)
        keyed.connect(f"tcp://127.0.0.1:{port}")
        keyed.send(b"from the runtime")
        assert ep.sock.poll(3000) and ep.sock.recv() == b"from the runtime"
        wrong = ctx.socket(zmq.PUSH)
        Curve.server_pair().client_of().apply(wrong)  # knows *a* key, not this one
        wrong.connect(f"tcp://127.0.0.1:{port}")
        if wrong.poll(100, zmq.POLLOUT):
            wrong.send(b"guessing", zmq.NOBLOCK)
        assert not ep.sock.poll(500)
    finally:
        ctx.destroy(linger=0)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_curve_tcp_run_delivers_everything(tmp_path):
    out = tmp_path / "o"
    g = _graph(
        """
        blocks:
          src: {{type: t_count, frames: 12}}
          mid: {{type: t_pass}}
          out: {{type: t_collect, path: "{out}"}}
        connections: [[src, mid], [mid, out]]
        """,
        out=out,
    )
    res = run_flowgraph(g, transport="tcp", quiet=True)  # CURVE on by default for tcp
    assert res.ok, res.error
    assert [r[0] for r in read_collect(out)[0]] == list(range(12))


def test_zmq_pub_with_curve_key_file(tmp_path):
    from nearfield.block import ParamError
    from nearfield.frame import Frame
    from nearfield.sinks.zmq_pub import ZMQPubSink

    public, secret = zmq.curve_keypair()
    (tmp_path / "k").write_bytes(secret)
    sink = ZMQPubSink(address="tcp://127.0.0.1:*", curve_secret_key_file=str(tmp_path / "k"))
    sink.start()
    ctx = zmq.Context()
    try:
        good, bad = ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
        good.curve_serverkey = public
        good.curve_publickey, good.curve_secretkey = zmq.curve_keypair()
        for s in (good, bad):
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(sink.endpoint)
        time.sleep(0.5)
        for i in range(5):
            sink.process(Frame(i, 0.0, {}, {}))
        assert good.poll(3000) and json.loads(good.recv())["seq"] == 0
        assert not bad.poll(300)
    finally:
        sink.close()
        ctx.destroy(linger=0)
    with pytest.raises(ParamError, match="'address'.*other machines"):
        ZMQPubSink(address="tcp://*:5556")
    with pytest.raises(ParamError, match="curve_secret_key_file.*40-character"):
        (tmp_path / "short").write_text("abc")
        ZMQPubSink(address="tcp://*:5556", curve_secret_key_file=str(tmp_path / "short"))
    assert ZMQPubSink().address == "tcp://127.0.0.1:5556"


# -- also: warnings once; the suite does not write ./estimates.jsonl ------------------------
def test_a_validate_warning_is_printed_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="nearfield.sources.synthetic")  # other modules quiet it
    g = parse_flowgraph(
        {
            "blocks": {
                "src": {
                    "type": "synthetic",
                    "n_antennas": 32,
                    "snapshots": 20,
                    "frames": 1,
                    "seed": 3,
                    "targets": [{"theta": 0.1, "range": 1000.0}],
                },
                "out": {"type": "t_collect", "path": str(tmp_path / "o")},
            },
            "connections": [["src", "out"]],
        }
    )
    assert sum("outside the radiating near field" in r.getMessage() for r in caplog.records) == 1
    res = run_flowgraph(g, inproc=True, quiet=True)
    assert res.ok, res.error
    assert sum("outside the radiating near field" in r.getMessage() for r in caplog.records) == 1
