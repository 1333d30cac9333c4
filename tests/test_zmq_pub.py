"""The `zmq_pub` sink: estimates records as JSON on a PUB socket, read by a pyzmq SUB."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zmq

from nearfield.block import ParamError
from nearfield.frame import Frame
from nearfield.sinks.jsonl import estimates_record
from nearfield.sinks.zmq_pub import ZMQPubSink, encode_record


def frame(seq, t_emit=None, theta_nan=False):
    meta = {
        "targets": [{"theta": 0.3, "range": 10.5}, {"theta": -0.2, "range": 18.0}],
        "faulty": [np.int64(12), 77],
        "truth": {
            "targets": [{"theta": -0.2618, "range": 18.0}, {"theta": 0.2618, "range": 10.0}],
            "faulty": [12, 77, 140],
            "fault_phase": [1.0, 2.0, 3.0],
            "noise_var": 0.1,
        },
        "array": {"n_antennas": 256},
    }
    if theta_nan:
        meta["targets"][0]["theta"] = float("nan")
    if t_emit is not None:
        meta["t_emit"] = t_emit
    return Frame(seq=seq, t0=0.1 * seq, arrays={"snapshots": np.zeros((4, 2), np.complex64)}, meta=meta)


@pytest.fixture
def sub_and_sink():
    ctx = zmq.Context()
    sink = ZMQPubSink(name="pub", address="tcp://127.0.0.1:*", topic="nf ")
    sink.start()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"nf ")
    sub.connect(sink.endpoint)
    time.sleep(0.3)  # the subscription must reach the PUB first
    yield sub, sink
    sink.close()
    sub.close()
    ctx.term()


def recv(sub, timeout_ms=2000):
    assert sub.poll(timeout_ms), "no message from the zmq_pub sink"
    return sub.recv()


def test_records_arrive_as_single_part_json_with_topic(sub_and_sink):
    sub, sink = sub_and_sink
    t_emit = time.time()
    for seq in range(3):
        sink.process(frame(seq, t_emit=t_emit))
    for seq in range(3):
        msg = recv(sub)
        assert not sub.getsockopt(zmq.RCVMORE)  # single part
        assert msg.startswith(b"nf {")
        rec = json.loads(msg[3:].decode("utf-8"))
        assert rec["seq"] == seq and rec["t0"] == pytest.approx(0.1 * seq)
        # targets sorted by theta; truth keeps targets and faulty only
        assert rec["targets"] == [{"theta": -0.2, "range": 18.0}, {"theta": 0.3, "range": 10.5}]
        assert rec["faulty"] == [12, 77]
        assert rec["truth"] == {
            "targets": [{"theta": -0.2618, "range": 18.0}, {"theta": 0.2618, "range": 10.0}],
            "faulty": [12, 77, 140],
        }
        assert 0.0 <= rec["latency_s"] < 5.0
        assert set(rec) == {"seq", "t0", "targets", "faulty", "truth", "latency_s"}
    assert sink.published == 3


def test_same_record_as_the_jsonl_sink():
    fr = frame(4, t_emit=100.0)
    msg = encode_record(fr, topic="", now=100.25)
    assert json.loads(msg) == estimates_record(fr, now=100.25)
    assert json.loads(msg)["latency_s"] == pytest.approx(0.25)


def test_nan_becomes_null_and_json_stays_strict(sub_and_sink):
    sub, sink = sub_and_sink
    sink.process(frame(0, theta_nan=True))
    text = recv(sub)[3:].decode()
    assert "NaN" not in text
    rec = json.loads(text)
    assert rec["latency_s"] is None  # never stamped by a runtime
    assert {"theta": None, "range": 10.5} in rec["targets"]


def test_other_topics_are_filtered_by_the_subscriber():
    ctx = zmq.Context()
    a = ZMQPubSink(address="tcp://127.0.0.1:*", topic="a")
    a.start()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"b")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(a.endpoint)
    time.sleep(0.2)
    a.process(frame(0))
    assert not sub.poll(300)
    a.close()
    sub.close()
    ctx.term()


def test_bind_errors_name_the_address():
    first = ZMQPubSink(address="tcp://127.0.0.1:*")
    first.start()
    try:
        with pytest.raises(ParamError, match=r"'address'.*cannot bind"):
            ZMQPubSink(name="pub2", address=first.endpoint).start()
    finally:
        first.close()
    with pytest.raises(ParamError, match=r"'address'.*ZeroMQ endpoint"):
        ZMQPubSink(address="localhost:5556")
