"""Property and fuzz tests (hypothesis): every decoder turns any input into a result or its
own documented error, never another exception; the wire format round-trips exactly."""

from __future__ import annotations

import json
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.extra import numpy as hnp

from nearfield.frame import Frame
from nearfield.runtime.wire import DTYPES, EndOfStream, Limits, WireError, decode, encode, encode_eos
from nearfield.sources.zmq_source import (
    GR_HEADER_MAGIC,
    GrMessageError,
    StreamFramer,
    deserialize_pmt,
    parse_tag_header,
)
from nearfield.state import validate_state

set_hypothesis_home_dir(tempfile.mkdtemp(prefix="nf-hypothesis-"))  # not ./.hypothesis in the cwd
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@FUZZ
@given(
    dtype=st.sampled_from(sorted(DTYPES)),
    shape=shapes,
    data=st.data(),
    seq=st.integers(0, 2**62),
    big_endian=st.booleans(),
    transpose=st.booleans(),
)
def test_wire_round_trip_any_shape_and_dtype(dtype, shape, data, seq, big_endian, transpose):
    dt = np.dtype(dtype)
    if big_endian and dt.itemsize > 1 and dt.kind != "b":
        dt = dt.newbyteorder(">")
    a = data.draw(hnp.arrays(dt, shape))
    if transpose and a.ndim >= 2:
        a = a.T  # not C-contiguous: encode copies once
    meta = data.draw(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3))
    f = decode(encode(Frame(seq=seq, t0=1.5, arrays={"x": a}, meta=meta)))
    assert f.seq == seq and f.meta == meta
    assert f.arrays["x"].dtype.name == dtype and f.arrays["x"].shape == a.shape
    np.testing.assert_array_equal(f.arrays["x"], a)  # NaN == NaN here


def _parts(header: dict, *bufs) -> list:
    return [json.dumps(header).encode(), *bufs]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(parts=st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_wire_decode_random_bytes_raises_only_wire_error(parts):
    try:
        decode(parts)
    except WireError:
        pass


@FUZZ
@given(
    header=st.dictionaries(
        st.sampled_from(["v", "seq", "t0", "meta", "arrays", "eos", "token", "x"]), json_values, max_size=6
    ),
    nparts=st.integers(0, 3),
    part_len=st.integers(0, 40),
)
def test_wire_decode_random_headers_raises_only_wire_error(header, nparts, part_len):
    try:
        decode(_parts(header, *[b"\0" * part_len] * nparts))
    except WireError:
        pass


@FUZZ
@given(
    shape=st.lists(st.integers(-3, 2**70) | st.floats(allow_nan=True) | st.text(max_size=2), max_size=9),
    dtype=st.sampled_from([*sorted(DTYPES), "object", "<U3", 5]),
    part=st.binary(max_size=32),
)
def test_wire_decode_random_descriptors_raises_only_wire_error(shape, dtype, part):
    h = {"v": 1, "seq": 0, "t0": 0.0, "meta": {}, "arrays": {"a": {"dtype": dtype, "shape": shape}}}
    try:
        decode(_parts(h, part))
    except WireError:
        pass


@pytest.mark.parametrize("depth", [33, 5000, 100_000])
def test_wire_deep_json_is_a_wire_error(depth):
    meta = "[" * depth + "]" * depth
    text = '{"v": 1, "seq": 0, "t0": 0, "meta": {"x": ' + meta + '}, "arrays": {}}'
    with pytest.raises(WireError, match="nested deeper|not valid JSON|exceeds"):
        decode([text.encode()], Limits(max_header_bytes=1 << 22))


@pytest.mark.parametrize("shape", [[0, 10**30], [0, 1e30], [2**40, 0, 2**40], [-1, 4]])
def test_wire_absurd_shapes_are_wire_errors(shape):
    h = {"v": 1, "seq": 0, "t0": 0.0, "meta": {}, "arrays": {"a": {"dtype": "float32", "shape": shape}}}
    with pytest.raises(WireError, match="shape"):
        decode(_parts(h, b""))


@FUZZ
@given(token=st.text(min_size=1, max_size=128))
def test_eos_token_round_trip(token):
    e = decode(encode_eos(token))
    assert isinstance(e, EndOfStream) and e.token == token


# -- gr-zeromq tag headers and PMTs --------------------------------------------------------
@FUZZ
@given(body=st.binary(max_size=200), ntags=st.integers(0, 20), offset=st.integers(0, 2**64 - 1))
def test_tag_header_random_bytes_raise_only_gr_message_error(body, ntags, offset):
    buf = struct.pack("<HBQQ", GR_HEADER_MAGIC, 1, offset, ntags) + body
    try:
        parse_tag_header(buf)
    except GrMessageError:
        pass


pmt_bytes = st.lists(
    st.sampled_from(
        [
            b"\x00",
            b"\x01",
            b"\x06",
            b"\x02\x00\x01k",
            b"\x03\x00\x00\x00\x07",
            b"\x04" + bytes(8),
            b"\x07",
            b"\x08\x00\x00\x00\x02",
            b"\x09",
            b"\x0c\x00\x00\x00\x02",
            b"\x0a\x08\x00\x00\x00\x01\x00" + bytes(4),
            b"\x0b" + bytes(8),
            b"\x0d" + bytes(8),
            b"\x05" + bytes(16),
        ]
    ),
    max_size=30,
).map(b"".join)


@FUZZ
@given(buf=pmt_bytes | st.binary(max_size=100))
def test_pmt_decoder_structured_garbage_raises_only_gr_message_error(buf):
    """Sequences of valid PMT tokens in any order (dicts keyed by tuples of vectors, pairs of
    vectors, truncated containers...) and plain random bytes."""
    try:
        deserialize_pmt(buf)
    except GrMessageError:
        pass
    head = struct.pack("<HBQQ", GR_HEADER_MAGIC, 1, 0, 1) + struct.pack("<Q", 0)
    try:
        parse_tag_header(head + buf + buf + buf)
    except GrMessageError:
        pass


@FUZZ
@given(n=st.integers(1, 4), t=st.integers(1, 6), m=st.integers(0, 40), cuts=st.lists(st.integers(0, 40), max_size=8))
def test_framer_gives_the_same_frames_under_any_chunking(n, t, m, cuts):
    items = (np.arange(m * n, dtype=np.float32).reshape(m, n) * (1 + 1j)).astype(np.complex64)
    whole = StreamFramer(n, t).push(items, 0)
    framer = StreamFramer(n, t)
    got = []
    edges = sorted({0, m, *[c for c in cuts if c <= m]})
    for a, b in zip(edges[:-1], edges[1:]):
        got += framer.push(items[a:b], a)
    assert [g[0] for g in got] == [w[0] for w in whole] == list(range(m // t))
    for g, w in zip(got, whole):
        np.testing.assert_array_equal(g[3], w[3])


# -- state files ---------------------------------------------------------------------------
@FUZZ
@given(
    st_obj=json_values
    | st.dictionaries(
        st.sampled_from(["version", "n_antennas", "frames", "noise_var", "faulty", "e", "b", "evidence"]),
        json_values,
        max_size=8,
    ),
    n=st.none() | st.integers(-2, 40),
)
def test_state_validation_raises_only_value_error(st_obj, n):
    if isinstance(st_obj, dict):
        st_obj = {"version": 1, **st_obj} if "version" not in st_obj else st_obj
    try:
        validate_state(st_obj, n_antennas=n)
    except ValueError:
        pass
