"""The `zmq` source against byte-exact gr-zeromq messages (pyzmq stands in for GNU Radio).

The hex fixtures below were produced by GNU Radio 3.10.5.1 itself (Debian bookworm):
``pmt.serialize_str`` for the PMTs, and a ``zeromq.push_sink(gr.sizeof_gr_complex, 2,
addr, 100, pass_tags=True)`` fed by a ``blocks.vector_source_c`` with two tags for the
whole message.
"""

from __future__ import annotations

import logging
import struct
import threading
import time

import numpy as np
import pytest
import zmq

from nearfield.block import ParamError
from nearfield.sources.zmq_source import (
    GR_HEADER_SIZE,
    GrMessageError,
    StreamFramer,
    ZMQSource,
    deserialize_pmt,
    parse_tag_header,
)

# -- fixtures made by GNU Radio 3.10.5.1 --------------------------------------------------
GR_MESSAGE_HEX = (  # N=2, items [0, 1-1j], [2-2j, 3-3j], [4-4j, 5-5j]; tags freq@0, rx_time@1
    "f05f010000000000000000020000000000000000000000000000000200046672657104421bf08eb0000000"
    "01010000000000000002000772785f74696d650c000000020b000000000000000c043fd00000000000000200"
    "0373726300000000000000000000803f000080bf00000040000000c000004040000040c000008040000080c0"
    "0000a0400000a0c0"
)
PMT_HEX = {
    "02000772785f74696d65": "rx_time",
    "03fffffffb": -5,
    "0d0000010000000000": 2**40,
    "0b8000000000000005": 2**63 + 5,
    "044004000000000000": 2.5,
    "053ff0000000000000c000000000000000": 1 - 2j,
    "00": True,
    "06": None,
    "0c000000020b000000000000000c043fd0000000000000": (12, 0.25),
    "070300000001070300000002070200017a06": [1, 2, "z"],
    "080000000203000000070300000007": [7, 7],
    "09070200016202000178090702000161030000000106": {"a": 1, "b": "x"},
}


# -- helpers: gr-zeromq messages, packed by hand ------------------------------------------
def pmt_symbol(s: str) -> bytes:
    b = s.encode()
    return b"\x02" + struct.pack(">H", len(b)) + b


def pmt_double(x: float) -> bytes:
    return b"\x04" + struct.pack(">d", x)


PMT_F = b"\x01"


def gr_message(items: np.ndarray, offset: int | None = None, tags=()) -> bytes:
    """Payload as gr-zeromq sends it; a tag header when ``offset`` is given."""
    data = np.ascontiguousarray(items, dtype="<c8").tobytes()
    if offset is None:
        return data
    head = struct.pack("<HBQQ", 0x5FF0, 1, offset, len(tags))
    for toff, key, value in tags:
        head += struct.pack("<Q", toff) + pmt_symbol(key) + pmt_double(value) + PMT_F
    return head + data


def stream(n: int, m: int, seed: int = 0) -> np.ndarray:
    """(m, N) complex64 test items, item-major as on the wire."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, n)) + 1j * rng.standard_normal((m, n))).astype(np.complex64)


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def bound(ctx, kind):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    return s, f"tcp://127.0.0.1:{port}"


def run(src: ZMQSource):
    try:
        return [f for f in src.generate() if f is not None]
    finally:
        src.close()


# -- the header and PMT parsers -----------------------------------------------------------
def test_parses_a_message_made_by_gnuradio():
    buf = bytes.fromhex(GR_MESSAGE_HEX)
    offset, tags, start = parse_tag_header(buf)
    assert offset == 0 and start == len(buf) - 3 * 2 * 8
    assert [(t.offset, t.key, t.value, t.srcid) for t in tags] == [
        (0, "freq", 30e9, False),
        (1, "rx_time", (12, 0.25), "src"),
    ]
    items = np.frombuffer(buf, "<c8", offset=start)
    np.testing.assert_array_equal(items, np.arange(6) * (1 - 1j))


@pytest.mark.parametrize("hexstr", sorted(PMT_HEX))
def test_pmt_values_serialized_by_gnuradio(hexstr):
    buf = bytes.fromhex(hexstr)
    value, end = deserialize_pmt(buf)
    assert end == len(buf)
    assert value == PMT_HEX[hexstr]


@pytest.mark.parametrize(
    "hexstr, expected",
    [
        ("0a080000000301003f80000040000000c0600000", np.array([1.0, 2.0, -3.5], np.float32)),
        ("0a0a0000000201003f8000004000000080000000bf800000", np.array([1 + 2j, -1j], np.complex64)),
        ("0a03000000020100fffe012c", np.array([-2, 300], np.int16)),
    ],
)
def test_pmt_uniform_vectors_serialized_by_gnuradio(hexstr, expected):
    value, end = deserialize_pmt(bytes.fromhex(hexstr))
    assert end == len(bytes.fromhex(hexstr)) and value.dtype == expected.dtype
    np.testing.assert_array_equal(value, expected)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b[:10], "shorter than the 19-byte"),
        (lambda b: b"\x00\x00" + b[2:], "magic 0x0000, expected 0x5ff0"),
        (lambda b: b[:2] + b"\x02" + b[3:], "version 2, expected 1"),
        (lambda b: b[:11] + struct.pack("<Q", 10**9) + b[19:], "tags cannot fit"),
        (lambda b: b[: GR_HEADER_SIZE + 8] + b"\x7f" + b[GR_HEADER_SIZE + 9 :], "unknown type tag 0x7f"),
        (lambda b: b[:50], "tag 1 of 2"),
    ],
)
def test_bad_tag_headers_are_named(mutate, match):
    with pytest.raises(GrMessageError, match=match):
        parse_tag_header(mutate(bytes.fromhex(GR_MESSAGE_HEX)))


def test_deep_pmt_nesting_is_refused():
    buf = b"\x08\x00\x00\x00\x01" * 100 + b"\x06"
    with pytest.raises(GrMessageError, match="deeper"):
        deserialize_pmt(buf)


# -- framing ------------------------------------------------------------------------------
def test_framer_cuts_any_message_sizes_into_exact_frames():
    n, t = 4, 7
    x = stream(n, 10 * t + 3)
    fr = StreamFramer(n, t)
    got = []
    cuts = [0, 1, 3, 20, 21, 22, 50, 73]
    for a, b in zip(cuts[:-1], cuts[1:]):
        got += fr.push(x[a:b], None)
    assert [g[0] for g in got] == list(range(10))
    for seq, start, _, snap in got:
        assert start == seq * t and snap.shape == (n, t) and snap.flags.c_contiguous
        np.testing.assert_array_equal(snap, x[start : start + t].T)
    assert fr.counters["items"] == 73 and fr.counters["gaps"] == 0


def test_framer_gap_drops_partial_frame_and_realigns():
    n, t = 3, 5
    x = stream(n, 40)
    fr = StreamFramer(n, t)
    got = fr.push(x[0:12], 100)  # frames 0, 1; 2 items of frame 2 buffered
    got += fr.push(x[16:40], 116)  # items 12..15 lost: frame 2 is incomplete
    assert fr.counters["gaps"] == 1 and fr.counters["dropped_items"] == 4
    assert fr.counters["partial_frames"] == 1 and fr.counters["skipped_items"] == 4  # 16..19
    assert [g[0] for g in got] == [0, 1, 4, 5, 6, 7]
    for seq, start, _, snap in got:
        assert start == 100 + seq * t
        np.testing.assert_array_equal(snap, x[seq * t : (seq + 1) * t].T)


def test_framer_restart_keeps_seq_increasing():
    fr = StreamFramer(2, 4)
    x = stream(2, 20)
    a = fr.push(x[:10], 50)  # frames 0, 1 (+2 buffered)
    b = fr.push(x[10:18], 0)  # sender restarted at 0
    assert fr.counters["restarts"] == 1 and fr.counters["partial_frames"] == 1
    assert [g[0] for g in a + b] == [0, 1, 2, 3]
    np.testing.assert_array_equal(b[0][3], x[10:14].T)


# -- the source on real sockets -----------------------------------------------------------
def test_push_stream_without_tags(ctx):
    n, t, frames = 8, 16, 5
    x = stream(n, frames * t + 9, seed=3)
    push, addr = bound(ctx, zmq.PUSH)
    src = ZMQSource(
        address=addr, n_antennas=n, snapshots=t, frames=frames, timeout_s=2.0, sample_rate_hz=1000.0, carrier_hz=28e9
    )
    src.start()
    for a, b in [(0, 5), (5, 40), (40, 41), (41, frames * t + 9)]:
        push.send(gr_message(x[a:b]))
    out = run(src)
    assert [f.seq for f in out] == list(range(frames))
    for f in out:
        assert f.snapshots.dtype == np.complex64 and f.snapshots.shape == (n, t)
        np.testing.assert_array_equal(f.snapshots, x[f.seq * t : (f.seq + 1) * t].T)
        assert f.t0 == pytest.approx(f.seq * t / 1000.0)
        assert f.meta["array"]["n_antennas"] == n and f.meta["array"]["carrier_hz"] == 28e9
        assert f.meta["stream"]["gaps"] == 0
    assert src.all_counters()["bad_messages"] == 0


def test_pass_tags_offsets_reveal_dropped_messages(ctx, caplog):
    n, t = 4, 10
    x = stream(n, 100, seed=5)
    push, addr = bound(ctx, zmq.PUSH)
    src = ZMQSource(address=addr, n_antennas=n, snapshots=t, pass_tags=True, timeout_s=0.5, sample_rate_hz=100.0)
    src.start()
    msgs = [(0, 25), (25, 50), (50, 75), (75, 100)]
    for i, (a, b) in enumerate(msgs):
        if i == 1:
            continue  # "dropped" by a PUB sink
        tags = [(1000 + a + 3, "marker", float(a))]
        push.send(gr_message(x[a:b], offset=1000 + a, tags=tags))
    with caplog.at_level(logging.WARNING):
        out = run(src)
    c = src.all_counters()
    assert c["gaps"] == 1 and c["dropped_items"] == 25 and c["bad_messages"] == 0
    # frames 0, 1 complete; 2 (items 20..29) cut by the gap; 3, 4 lost; 5 starts at item 50
    assert [f.seq for f in out] == [0, 1, 5, 6, 7, 8, 9]
    for f in out:
        np.testing.assert_array_equal(f.snapshots, x[f.seq * t : (f.seq + 1) * t].T)
        assert f.t0 == pytest.approx((1000 + f.seq * t) / 100.0)
        assert f.meta["stream"]["offset"] == 1000 + f.seq * t
    assert out[0].meta["tags"] == [{"offset": 1003, "key": "marker", "value": 0.0}]
    assert out[2].meta["tags"] == [{"offset": 1053, "key": "marker", "value": 50.0}]
    assert "tags" not in out[1].meta
    assert any("25 item(s) missing" in r.getMessage() and addr in r.getMessage() for r in caplog.records)


def test_bad_sizes_and_headers_are_dropped_and_counted(ctx, caplog):
    n, t = 4, 5
    x = stream(n, 20, seed=7)
    push, addr = bound(ctx, zmq.PUSH)
    src = ZMQSource(address=addr, n_antennas=n, snapshots=t, pass_tags=True, timeout_s=0.5)
    src.start()
    push.send(gr_message(x[0:10], offset=0))
    push.send(gr_message(x[10:13], offset=10)[:-8])  # not a whole number of items
    push.send(b"\x01\x02" + gr_message(x[10:13], offset=10)[2:])  # bad magic
    push.send(b"")  # empty
    push.send(gr_message(x[10:20], offset=10))
    with caplog.at_level(logging.ERROR):
        out = run(src)
    c = src.all_counters()
    assert c["bad_messages"] == 3 and c["messages"] == 5 and c["gaps"] == 0
    assert [f.seq for f in out] == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.concatenate([f.snapshots for f in out], axis=1), x.T)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 3 and all(addr in m for m in msgs)
    assert "expected a multiple of 32 bytes" in msgs[0] and "n_antennas=4" in msgs[0]
    assert "magic" in msgs[1]


def test_tagged_stream_without_pass_tags_gives_a_hint(ctx, caplog):
    push, addr = bound(ctx, zmq.PUSH)
    src = ZMQSource(address=addr, n_antennas=2, snapshots=3, timeout_s=0.3)
    src.start()
    push.send(bytes.fromhex(GR_MESSAGE_HEX))  # 91-byte header + 48 data bytes: 139 % 16 != 0
    with caplog.at_level(logging.ERROR):
        out = run(src)
    assert out == [] and src.counters["bad_messages"] == 1
    assert "set pass_tags: true" in caplog.records[0].getMessage()


def test_real_gnuradio_bytes_through_the_source(ctx):
    push, addr = bound(ctx, zmq.PUSH)
    src = ZMQSource(address=addr, n_antennas=2, snapshots=3, pass_tags=True, frames=1, timeout_s=2)
    src.start()
    push.send(bytes.fromhex(GR_MESSAGE_HEX))
    (f,) = run(src)
    np.testing.assert_array_equal(f.snapshots, (np.arange(6) * (1 - 1j)).reshape(3, 2).T)
    assert [tag["key"] for tag in f.meta["tags"]] == ["freq", "rx_time"]
    assert f.meta["tags"][1]["value"] == [12, 0.25]


def test_sub_socket_with_key(ctx):
    n, t = 2, 4
    x = stream(n, 8, seed=9)
    pub, addr = bound(ctx, zmq.PUB)
    src = ZMQSource(address=addr, socket="sub", key="ant", n_antennas=n, snapshots=t, frames=2, timeout_s=2.0)
    src.start()
    time.sleep(0.3)  # let the subscription reach the PUB
    pub.send_multipart([b"other", gr_message(x[0:8])])  # another topic: filtered out
    pub.send_multipart([b"ant", gr_message(x[0:8])])
    out = run(src)
    assert [f.seq for f in out] == [0, 1] and src.counters["bad_messages"] == 0
    np.testing.assert_array_equal(out[1].snapshots, x[4:8].T)


def test_timeout_ends_an_empty_stream_quickly():
    src = ZMQSource(address="tcp://127.0.0.1:1", n_antennas=4, timeout_s=0.3)
    src.start()
    t = time.monotonic()
    assert run(src) == []
    assert 0.25 < time.monotonic() - t < 1.5


@pytest.mark.parametrize("inproc", [False, True], ids=["process", "inproc"])
def test_the_runtime_cancels_an_idle_source_that_never_yields(tmp_path, inproc):
    """No sender and no timeout: generate() never yields; SIGTERM still stops the graph at once,
    every worker reporting 'stopped' (the runtime calls stop(), no thread is left stuck)."""
    import io
    import os
    import signal

    from nearfield.runtime import run_flowgraph
    from nearfield.runtime.flowgraph import parse_flowgraph

    g = parse_flowgraph(
        {
            "blocks": {
                "src": {"type": "zmq", "address": "tcp://127.0.0.1:1", "n_antennas": 4},
                "out": {"type": "t_collect", "path": str(tmp_path / "o")},
            },
            "connections": [["src", "out"]],
        }
    )
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        res = run_flowgraph(g, inproc=inproc, stream=io.StringIO(), grace_s=3.0)
    finally:
        timer.cancel()
    assert res.interrupted and not res.ok
    assert [r["status"] for r in res.summary] == ["stopped", "stopped"]
    assert not [t for t in threading.enumerate() if t.name.startswith(("nf:", "nf-gen:"))]


def test_stop_ends_a_stream_that_waits_forever():
    src = ZMQSource(address="tcp://127.0.0.1:1", n_antennas=4)  # timeout_s null
    src.start()
    threading.Timer(0.3, src.stop).start()
    t = time.monotonic()
    assert run(src) == []
    assert time.monotonic() - t < 1.5


@pytest.mark.parametrize(
    "params, match",
    [
        ({"address": "127.0.0.1:5555"}, "'address'.*ZeroMQ endpoint"),
        ({"socket": "req"}, "'socket'.*one of"),
        ({"key": "x"}, "'key'.*socket: sub"),
        ({"n_antennas": 1}, "'n_antennas'"),
        ({"snapshots": 0}, "'snapshots'"),
        ({"timeout_s": -1.0}, "'timeout_s'"),
    ],
)
def test_parameter_errors_name_the_parameter(params, match):
    base = {"address": "tcp://127.0.0.1:5555", "n_antennas": 4}
    with pytest.raises(ParamError, match=match):
        ZMQSource(name="src", **{**base, **params})


def test_gnuradio_zmq_flowgraph_end_to_end(ctx, tmp_path):
    """flowgraphs/gnuradio_zmq.yaml, in-process, fed by pyzmq as GNU Radio's PUSH sink."""
    import json
    from pathlib import Path

    from nearfield.array import ULA
    from nearfield.runtime import run_flowgraph
    from nearfield.runtime.flowgraph import load_flowgraph
    from nearfield.scenario import Scenario, make_pilots

    # a near-field scene as GNU Radio would stream it: 2 targets, no pilots on the wire
    n, t, frames = 64, 20, 4
    rng = np.random.default_rng(11)
    sc = Scenario(
        ULA(n, 30e9, wavelength_m=0.01),
        [0.3, -0.2],
        [2.0, 3.0],
        np.ones(2, complex),
        make_pilots(2, frames * t, rng),
        np.ones(n, complex),
        20.0,
    )
    x = np.ascontiguousarray(sc.sample(rng).T)  # (items, N), item-major as on the wire
    push, addr = bound(ctx, zmq.PUSH)
    path = Path(__file__).resolve().parents[1] / "flowgraphs" / "gnuradio_zmq.yaml"
    out = tmp_path / "est.jsonl"
    graph = load_flowgraph(
        path,
        overrides=[
            f"source.address={addr}",
            f"source.n_antennas={n}",
            f"source.snapshots={t}",
            "source.timeout_s=1.0",
            f"out.path={out}",
            "publish.address=tcp://127.0.0.1:*",
        ],
    )
    sender = threading.Timer(
        0.2, lambda: [push.send(gr_message(x[a : a + 15], offset=a)) for a in range(0, frames * t, 15)]
    )
    sender.start()
    res = run_flowgraph(graph, inproc=True, quiet=True)
    sender.join()
    assert res.ok, res.error
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in recs] == list(range(frames))
    assert [r["t0"] for r in recs] == pytest.approx([k * t / 10000.0 for k in range(frames)])
    assert res.block("source")["frames_out"] == frames
    assert res.block("publish")["frames_in"] == frames
    # the full chain localized both targets without pilots (K by MDL)
    est = np.array([[p["theta"], p["range"]] for p in recs[-1]["targets"]])
    assert est.shape == (2, 2)
    assert np.allclose(est[:, 0], [-0.2, 0.3], atol=1e-3) and np.allclose(est[:, 1], [3.0, 2.0], rtol=0.02)
