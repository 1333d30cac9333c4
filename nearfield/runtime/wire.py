"""The ZeroMQ encoding of a :class:`~nearfield.frame.Frame`: the frame contract between blocks.

A frame is one multipart message:

* part 0 -- a UTF-8 JSON header
  ``{"v": 1, "seq": int, "t0": float, "meta": {...}, "arrays": {name: {"dtype": str, "shape": [int, ...]}}}``;
* parts 1..n -- one part per array, in the order of ``header["arrays"]``, holding the raw
  C-order, little-endian bytes of the array.

End of stream is a one-part message with the header ``{"v": 1, "eos": true}``, plus, from
the runtime, ``"token": "<hex>"``: a random secret drawn per run and per link, known only
to the two ends of that link.  A receiver counts an end of stream only when its token is
one it expects and has not seen yet, so a forged or replayed end-of-stream message can
neither end a stream early (losing frames) nor be needed to end it (a hang).

Both directions are zero-copy: :func:`encode` hands the arrays' own buffers to pyzmq
(send with ``copy=False``), and :func:`decode` returns read-only ``np.frombuffer`` views on
the received :class:`zmq.Frame` buffers (receive with ``copy=False``).  A copy happens only
when the caller passes an array that is not C-contiguous or not little-endian.

The receiver validates the whole header -- version, JSON object shape, dtype whitelist,
shapes against part lengths, number of parts, size limits, JSON nesting depth -- *before*
it touches any data, and raises :class:`WireError` naming the offending field.  No other
exception escapes :func:`decode`, whatever the bytes (a hypothesis fuzz test checks it).

Contract: an array handed to :func:`encode` / :func:`send_frame` must not be modified
afterwards (the message may still reference its memory after ``send`` returns).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from ..frame import Frame, finite_or_none

__all__ = [
    "WIRE_VERSION",
    "DTYPES",
    "Limits",
    "DEFAULT_LIMITS",
    "WireError",
    "EOS",
    "EndOfStream",
    "encode",
    "encode_eos",
    "decode",
    "send_frame",
    "send_eos",
    "recv_frame",
]

#: Version number carried in every header (``"v"``).
WIRE_VERSION = 1

#: dtype names accepted on the wire (always little-endian).
DTYPES = frozenset(
    {
        "complex64",
        "complex128",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "bool",
    }
)

_WIRE_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in DTYPES}
_FRAME_KEYS = frozenset({"v", "seq", "t0", "meta", "arrays"})
_EOS_KEYS = frozenset({"v", "eos", "token"})
_MAX_TOKEN = 128


class WireError(ValueError):
    """A message that is not a valid frame; the message names the offending field."""


@dataclass(frozen=True)
class Limits:
    """Size limits a receiver enforces before it touches any data.

    Attributes
    ----------
    max_header_bytes : int
        Largest accepted part 0 (the JSON header), bytes.
    max_total_bytes : int
        Largest accepted sum of the array parts, bytes.
    max_ndim : int
        Largest number of dimensions of one array.
    max_arrays : int
        Largest number of arrays in one frame.
    max_depth : int
        Deepest nesting of JSON objects/lists in the header (the meta dict included).
    max_dim : int
        Largest length of one array dimension (a zero-size array may not declare a huge
        dimension either).
    """

    max_header_bytes: int = 1 << 20
    max_total_bytes: int = 1 << 31
    max_ndim: int = 8
    max_arrays: int = 64
    max_depth: int = 32
    max_dim: int = 1 << 31

    def max_message_bytes(self) -> int:
        """The largest single message part a receiver needs (ZeroMQ ``MAXMSGSIZE``), bytes."""
        return max(self.max_header_bytes, self.max_total_bytes)


DEFAULT_LIMITS = Limits()


class EndOfStream:
    """An end-of-stream marker returned by :func:`decode`.

    A message without a token decodes to the singleton :data:`EOS`; one with a token to an
    ``EndOfStream`` whose :attr:`token` is that string.  Test with ``isinstance``.
    """

    __slots__ = ("token",)

    def __init__(self, token: str | None = None):
        self.token = token

    def __eq__(self, other) -> bool:
        return isinstance(other, EndOfStream) and other.token == self.token

    def __hash__(self) -> int:
        return hash(("EOS", self.token))

    def __repr__(self) -> str:
        return "EOS" if self.token is None else f"EOS(token={self.token[:6]}...)"


#: The end-of-stream marker without a token.
EOS = EndOfStream()

_EOS_HEADER = json.dumps({"v": WIRE_VERSION, "eos": True}).encode()


def _json_default(obj):
    """Make numpy scalars/arrays in ``meta`` JSON-serialisable."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"meta value of type {type(obj).__name__} is not JSON-serialisable")


_NAME_OF = {dt: name for name, dt in _WIRE_DTYPES.items()}


def _wire_array(name: str, arr):
    """(array, dtype name): C-contiguous little-endian, whitelisted dtype (no copy if it already is)."""
    a = arr if type(arr) is np.ndarray else np.asarray(arr)
    dname = _NAME_OF.get(a.dtype)
    if dname is None:
        dname = a.dtype.name
        if dname not in DTYPES:
            raise WireError(f"array {name!r}: dtype {a.dtype} is not sendable (expected one of {sorted(DTYPES)})")
        a = a.astype(_WIRE_DTYPES[dname])  # big-endian input: convert once
    if not a.flags.c_contiguous:  # e.g. a transposed or strided view: one unavoidable copy
        a = np.ascontiguousarray(a)
    return a, dname


_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"), allow_nan=False)


def encode(frame: Frame) -> list:
    """Encode a frame as the parts of one multipart message.

    Parameters
    ----------
    frame : Frame
        ``seq`` (int), ``t0`` (s), ``meta`` (JSON-serialisable dict) and named arrays of a
        whitelisted dtype (:data:`DTYPES`).

    Returns
    -------
    list
        ``[header_bytes, buf_1, ..., buf_n]``; each ``buf_i`` is a flat ``uint8`` view of the
        array's own memory (no copy for C-contiguous little-endian input).  Send with
        ``socket.send_multipart(parts, copy=False)``.

    Raises
    ------
    WireError
        For an unsendable dtype or a meta dict that is not JSON-serialisable.
    """
    descr = {}
    bufs = []
    for name, arr in frame.arrays.items():
        if not isinstance(name, str) or not name:
            raise WireError(f"array name {name!r}: expected a non-empty string")
        a, dname = _wire_array(name, arr)
        descr[name] = {"dtype": dname, "shape": list(a.shape)}
        bufs.append(a.reshape(-1).view(np.uint8))
    seq = frame.seq
    if isinstance(seq, np.integer):
        seq = int(seq)
    t0 = frame.t0
    if isinstance(t0, np.generic):
        t0 = t0.item()
    if not (isinstance(t0, (int, float)) and math.isfinite(t0)):
        raise WireError(f"frame seq={frame.seq}: t0 must be a finite number of seconds, got {t0!r}")
    header = {"v": WIRE_VERSION, "seq": seq, "t0": t0, "meta": frame.meta, "arrays": descr}
    try:
        head = _ENCODER.encode(header)
    except ValueError:  # NaN/Inf somewhere in meta: strict JSON has none, send null instead
        header["meta"] = finite_or_none(frame.meta)
        try:
            head = _ENCODER.encode(header)
        except (TypeError, ValueError) as exc:
            raise WireError(f"frame seq={frame.seq}: meta is not JSON-serialisable: {exc}") from None
    except TypeError as exc:
        raise WireError(f"frame seq={frame.seq}: meta is not JSON-serialisable: {exc}") from None
    return [head.encode("utf-8"), *bufs]


def encode_eos(token: str | None = None) -> list:
    """The parts of an end-of-stream message, carrying ``token`` when given."""
    if token is None:
        return [_EOS_HEADER]
    if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN:
        raise WireError(f"end-of-stream token: expected a string of 1 to {_MAX_TOKEN} characters")
    return [json.dumps({"v": WIRE_VERSION, "eos": True, "token": token}).encode()]


def _part_bytes(part):
    """A buffer (memoryview/bytes) of a received part: zmq.Frame, bytes or buffer object."""
    buf = getattr(part, "buffer", None)
    if buf is not None:
        return buf
    return memoryview(part)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _depth_ok(obj, limit: int) -> bool:
    """True when ``obj`` (parsed JSON) nests at most ``limit`` containers deep (iterative)."""
    stack = [(obj, 1)]
    while stack:  # hand-written walk: json has no depth limit and recursion could overflow
        o, d = stack.pop()
        if isinstance(o, dict):
            o = o.values()
        elif not isinstance(o, list):
            continue
        if d > limit:
            return False
        stack.extend((x, d + 1) for x in o if isinstance(x, (dict, list)))
    return True


def decode(parts, limits: Limits = DEFAULT_LIMITS):
    """Decode one multipart message into a :class:`Frame`, or an :class:`EndOfStream`.

    Any malformed input raises :class:`WireError`, never another exception.

    Parameters
    ----------
    parts : sequence of zmq.Frame, bytes or buffer objects
        As returned by ``socket.recv_multipart(copy=False)``.
    limits : Limits
        Size limits checked before any data is touched.

    Returns
    -------
    Frame or EndOfStream
        The frame's arrays are read-only ``np.frombuffer`` views on the parts (no copy).

    Raises
    ------
    WireError
        For any malformed, inconsistent or oversized message; the message names the field.
    """
    try:
        return _decode(parts, limits)
    except WireError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError, AttributeError) as exc:
        # a case the checks below did not foresee: still the documented error, never a crash
        raise WireError(f"message: cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})") from None


def _decode(parts, limits: Limits):
    if not isinstance(parts, (list, tuple)) or len(parts) == 0:
        raise WireError("message: expected at least one part (the JSON header)")
    head = _part_bytes(parts[0])
    if head.nbytes > limits.max_header_bytes:
        raise WireError(f"header: {head.nbytes} bytes exceeds the limit of {limits.max_header_bytes} bytes")
    try:
        text = bytes(head).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"header: not valid UTF-8 ({exc})") from None
    try:
        header = json.loads(text)
    except RecursionError:
        raise WireError(f"header: JSON nested deeper than {limits.max_depth} levels") from None
    except ValueError as exc:
        raise WireError(f"header: not valid JSON ({exc})") from None
    if not _depth_ok(header, limits.max_depth):
        raise WireError(f"header: JSON nested deeper than {limits.max_depth} levels")
    if not isinstance(header, dict):
        raise WireError(f"header: expected a JSON object, got {type(header).__name__}")
    v = header.get("v")
    if "v" not in header:
        raise WireError("header field 'v': missing (expected the wire version 1)")
    if not _is_int(v) or v != WIRE_VERSION:
        raise WireError(f"header field 'v': unsupported wire version {v!r} (expected {WIRE_VERSION})")

    if "eos" in header:
        extra = set(header) - _EOS_KEYS
        if extra:
            raise WireError(f"end-of-stream header: unexpected field(s) {sorted(extra)}")
        if header["eos"] is not True:
            raise WireError(f"header field 'eos': expected true, got {header['eos']!r}")
        if len(parts) != 1:
            raise WireError(f"end-of-stream message: expected 1 part, got {len(parts)}")
        if "token" not in header:
            return EOS
        token = header["token"]
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN:
            raise WireError(f"header field 'token': expected a string of 1 to {_MAX_TOKEN} characters")
        return EndOfStream(token)

    missing = _FRAME_KEYS - set(header)
    if missing:
        raise WireError(f"header: missing field(s) {sorted(missing)} (expected {sorted(_FRAME_KEYS)})")
    extra = set(header) - _FRAME_KEYS
    if extra:
        raise WireError(f"header: unexpected field(s) {sorted(extra)} (expected {sorted(_FRAME_KEYS)})")
    seq = header["seq"]
    if not _is_int(seq) or seq < 0:
        raise WireError(f"header field 'seq': expected a non-negative integer, got {seq!r}")
    t0 = header["t0"]
    if isinstance(t0, bool) or not isinstance(t0, (int, float)) or not math.isfinite(t0):
        raise WireError(f"header field 't0': expected a finite number (seconds), got {t0!r}")
    meta = header["meta"]
    if not isinstance(meta, dict):
        raise WireError(f"header field 'meta': expected a JSON object, got {type(meta).__name__}")
    arrays = header["arrays"]
    if not isinstance(arrays, dict):
        raise WireError(f"header field 'arrays': expected a JSON object, got {type(arrays).__name__}")
    if len(arrays) > limits.max_arrays:
        raise WireError(f"header field 'arrays': {len(arrays)} arrays exceeds the limit of {limits.max_arrays}")
    if len(parts) != len(arrays) + 1:
        raise WireError(
            f"message: header declares {len(arrays)} array(s), so expected {len(arrays) + 1} parts, got {len(parts)}"
        )

    # Pass 1: validate every descriptor and the byte counts, touching no data.
    plan = []
    total = 0
    for i, (name, d) in enumerate(arrays.items()):
        where = f"header field 'arrays.{name}'"
        if not name:
            raise WireError("header field 'arrays': empty array name")
        if not isinstance(d, dict) or set(d) != {"dtype", "shape"}:
            raise WireError(f'{where}: expected an object {{"dtype": ..., "shape": [...]}}, got {d!r}')
        dname = d["dtype"]
        if not isinstance(dname, str) or dname not in DTYPES:
            raise WireError(f"{where}.dtype: {dname!r} is not allowed (expected one of {sorted(DTYPES)})")
        shape = d["shape"]
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise WireError(f"{where}.shape: expected a list of non-negative integers, got {shape!r}")
        if len(shape) > limits.max_ndim:
            raise WireError(f"{where}.shape: {len(shape)} dimensions exceeds the limit of {limits.max_ndim}")
        if any(s > limits.max_dim for s in shape):
            raise WireError(f"{where}.shape: a dimension exceeds the limit of {limits.max_dim}")
        dt = _WIRE_DTYPES[dname]
        nbytes = math.prod(shape) * dt.itemsize  # Python ints: no overflow
        total += nbytes
        if total > limits.max_total_bytes:
            raise WireError(
                f"{where}: arrays total {total} bytes, exceeding the limit of {limits.max_total_bytes} bytes"
            )
        buf = _part_bytes(parts[i + 1])
        if buf.nbytes != nbytes:
            raise WireError(
                f"{where}: shape {shape} of {dname} needs {nbytes} bytes, but part {i + 1} holds {buf.nbytes}"
            )
        plan.append((name, dt, shape, buf))

    # Pass 2: zero-copy views.
    out = {}
    for name, dt, shape, buf in plan:
        if buf.nbytes == 0:
            a = np.empty(shape, dtype=dt)
        else:
            a = np.frombuffer(buf, dtype=dt).reshape(shape)
        a.flags.writeable = False
        out[name] = a
    return Frame(seq=seq, t0=t0, arrays=out, meta=meta)


def send_frame(socket, frame: Frame, flags: int = 0) -> None:
    """Send one frame on a ZeroMQ socket, zero-copy."""
    socket.send_multipart(encode(frame), flags=flags, copy=False)


def send_eos(socket, flags: int = 0, token: str | None = None) -> None:
    """Send the end-of-stream message (with ``token`` when given)."""
    socket.send_multipart(encode_eos(token), flags=flags)


def recv_frame(socket, flags: int = 0, limits: Limits = DEFAULT_LIMITS):
    """Receive and validate one message: a :class:`Frame` (zero-copy views) or :data:`EOS`."""
    return decode(socket.recv_multipart(flags=flags, copy=False), limits)
