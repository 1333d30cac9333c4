"""The ZeroMQ frame encoding: round trips, zero copy, and every kind of bad message refused."""

import json

import numpy as np
import pytest
import zmq

from nearfield.frame import Frame
from nearfield.runtime.wire import (
    DTYPES,
    EOS,
    Limits,
    WireError,
    decode,
    encode,
    encode_eos,
    recv_frame,
    send_eos,
    send_frame,
)

ALL_DTYPES = sorted(DTYPES)


def _array(dtype, shape, rng):
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith("complex"):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@pytest.fixture
def pair():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    b.bind("inproc://wire-test")
    a.connect("inproc://wire-test")
    yield a, b
    a.close(0)
    b.close(0)
    ctx.term()


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape", [(3, 5), (0,), (4, 0, 2), (), (7,)])
def test_round_trip_every_dtype_and_shape(dtype, shape):
    rng = np.random.default_rng(1)
    x = _array(dtype, shape, rng)
    f = Frame(seq=7, t0=0.25, arrays={"x": x}, meta={"k": [1, "a"]})
    g = decode([bytes(p) for p in encode(f)])
    y = g.arrays["x"]
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    assert np.array_equal(y, x)
    assert not y.flags.writeable
    assert (g.seq, g.t0, g.meta) == (7, 0.25, {"k": [1, "a"]})


def test_non_contiguous_and_big_endian_input_are_sent_correctly():
    rng = np.random.default_rng(2)
    base = _array("complex64", (6, 8), rng)
    views = {"t": base.T, "s": base[::2, 1::3], "be": base.astype(">c8"), "f": np.asfortranarray(base)}
    g = decode([bytes(p) for p in encode(Frame(0, 0.0, views, {}))])
    for k, v in views.items():
        assert g.arrays[k].shape == v.shape
        assert np.array_equal(g.arrays[k], v), k


def test_encode_is_zero_copy_for_contiguous_arrays():
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    parts = encode(Frame(0, 0.0, {"x": x}, {}))
    assert np.shares_memory(np.asarray(parts[1]), x)


def test_socket_round_trip_is_zero_copy_and_several_arrays_keep_their_order(pair):
    a, b = pair
    rng = np.random.default_rng(3)
    y = _array("complex64", (256, 100), rng)  # 200 kB: above pyzmq's copy threshold
    p = _array("complex64", (3, 100), rng)
    meta = {"array": {"n": 256}, "truth": {"faulty": [1, 2]}, "np": np.float32(1.5)}
    send_frame(a, Frame(5, 1.5, {"snapshots": y, "pilots": p}, meta))
    g = recv_frame(b)
    assert list(g.arrays) == ["snapshots", "pilots"]
    assert np.array_equal(g.arrays["snapshots"], y) and np.array_equal(g.arrays["pilots"], p)
    assert g.meta["np"] == 1.5
    # inproc + copy=False on both ends: the received view is the sender's memory
    assert np.shares_memory(g.arrays["snapshots"], y)
    send_eos(a)
    assert recv_frame(b) is EOS


def _good_parts():
    x = np.zeros((2, 3), np.float32)
    return [bytes(p) for p in encode(Frame(1, 0.0, {"x": x}, {}))]


def _with_header(header, *data):
    return [json.dumps(header).encode(), *data]


GOOD = {"v": 1, "seq": 1, "t0": 0.0, "meta": {}, "arrays": {"x": {"dtype": "float32", "shape": [2, 3]}}}
DATA = bytes(24)


def _h(**changes):
    h = json.loads(json.dumps(GOOD))
    for k, v in changes.items():
        if v is _DEL:
            del h[k]
        else:
            h[k] = v
    return h


_DEL = object()


@pytest.mark.parametrize(
    "parts, match",
    [
        ([], "at least one part"),
        ([b"\xff\xfe"], "not valid UTF-8"),
        ([b"{not json"], "not valid JSON"),
        ([b"[1, 2]"], "expected a JSON object"),
        (_with_header(_h(v=_DEL), DATA), "'v': missing"),
        (_with_header(_h(v=2), DATA), "unsupported wire version 2"),
        (_with_header(_h(v="1"), DATA), "unsupported wire version"),
        (_with_header(_h(seq=_DEL), DATA), r"missing field\(s\) \['seq'\]"),
        (_with_header(_h(extra=1), DATA), r"unexpected field\(s\) \['extra'\]"),
        (_with_header(_h(seq=-1), DATA), "'seq': expected a non-negative integer"),
        (_with_header(_h(seq=1.5), DATA), "'seq': expected a non-negative integer"),
        (_with_header(_h(seq=True), DATA), "'seq': expected a non-negative integer"),
        (_with_header(_h(t0="now"), DATA), "'t0': expected a finite number"),
        (_with_header(_h(meta=[1]), DATA), "'meta': expected a JSON object"),
        (_with_header(_h(arrays=[]), DATA), "'arrays': expected a JSON object"),
        (
            _with_header(_h(arrays={"x": {"dtype": "object", "shape": [2, 3]}}), DATA),
            r"'arrays.x'.dtype: 'object' is not allowed",
        ),
        (_with_header(_h(arrays={"x": {"dtype": "float16", "shape": [2, 3]}}), DATA), "float16' is not allowed"),
        (_with_header(_h(arrays={"x": {"dtype": "float32"}}), DATA), r"'arrays.x': expected an object"),
        (
            _with_header(_h(arrays={"x": {"dtype": "float32", "shape": [2, -3]}}), DATA),
            "shape: expected a list of non-negative integers",
        ),
        (
            _with_header(_h(arrays={"x": {"dtype": "float32", "shape": "2x3"}}), DATA),
            "shape: expected a list of non-negative integers",
        ),
        (
            _with_header(_h(arrays={"x": {"dtype": "float32", "shape": [2, 3.0]}}), DATA),
            "shape: expected a list of non-negative integers",
        ),
        (
            _with_header(_h(arrays={"x": {"dtype": "float32", "shape": [2, 4]}}), DATA),
            r"needs 32 bytes, but part 1 holds 24",
        ),
        (_with_header(GOOD), r"expected 2 parts, got 1"),
        (_with_header(GOOD, DATA, DATA), r"expected 2 parts, got 3"),
        (_with_header({"v": 1, "eos": False}), "'eos': expected true"),
        (_with_header({"v": 1, "eos": True}, DATA), "end-of-stream message: expected 1 part"),
        (_with_header({"v": 1, "eos": True, "seq": 3}), "end-of-stream header: unexpected field"),
    ],
)
def test_bad_messages_are_refused_naming_the_field(parts, match):
    with pytest.raises(WireError, match=match):
        decode(parts)


def test_limits_are_checked_before_the_data():
    parts = _good_parts()
    with pytest.raises(WireError, match="header: .* exceeds the limit of 10 bytes"):
        decode(parts, Limits(max_header_bytes=10))
    with pytest.raises(WireError, match="exceeding the limit of 16 bytes"):
        decode(parts, Limits(max_total_bytes=16))
    with pytest.raises(WireError, match="3 dimensions exceeds the limit of 2"):
        decode(_with_header(_h(arrays={"x": {"dtype": "float32", "shape": [1, 2, 3]}}), DATA), Limits(max_ndim=2))
    with pytest.raises(WireError, match="2 arrays exceeds the limit of 1"):
        decode(
            _with_header(
                _h(arrays={"x": {"dtype": "uint8", "shape": [1]}, "y": {"dtype": "uint8", "shape": [1]}}), b"a", b"b"
            ),
            Limits(max_arrays=1),
        )
    # an absurd declared size is refused from the header alone (no huge allocation)
    huge = _with_header(_h(arrays={"x": {"dtype": "complex128", "shape": [10**9, 10**9]}}), DATA)
    with pytest.raises(WireError, match="exceeding the limit"):
        decode(huge)


def test_eos_round_trip_and_unsendable_input():
    assert decode(encode_eos()) is EOS
    with pytest.raises(WireError, match="dtype object is not sendable"):
        encode(Frame(0, 0.0, {"x": np.array([object()])}, {}))
    with pytest.raises(WireError, match="meta is not JSON-serialisable"):
        encode(Frame(0, 0.0, {}, {"f": object()}))


def test_nan_in_meta_is_sent_as_null_and_nan_t0_refused():
    import json as _json

    from nearfield.frame import Frame as _Frame
    from nearfield.runtime.wire import WireError as _WireError
    from nearfield.runtime.wire import decode as _decode
    from nearfield.runtime.wire import encode as _encode

    parts = _encode(_Frame(3, 0.5, {}, {"noise_var": float("nan"), "x": [1.0, float("inf")]}))
    head = bytes(parts[0])
    assert b"NaN" not in head and b"Infinity" not in head
    assert _json.loads(head)["meta"] == {"noise_var": None, "x": [1.0, None]}
    assert _decode(parts).meta["noise_var"] is None
    with pytest.raises(_WireError, match="t0"):
        _encode(_Frame(4, float("nan"), {}, {}))
