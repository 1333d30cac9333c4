"""Live source: snapshots streamed by GNU Radio over ZeroMQ (gr-zeromq).

GNU Radio's ``zeromq.push_sink`` / ``zeromq.pub_sink`` (gr-zeromq, GNU Radio 3.8-3.10)
*bind* a PUSH or PUB socket and send the items of their input stream; this source
*connects* a PULL or SUB socket to that address.  The stream must carry items of N
complex64 values (``itemsize = gr.sizeof_gr_complex``, ``vlen = N``): one item is one
snapshot of all N antennas, antenna 0 first.  The source cuts the item stream into frames
of T snapshots and emits them antenna-major, ``snapshots`` of shape (N, T), complex64.

Message format (gr-zeromq ``base_sink_impl::send_message`` and ``tag_headers.cc``)
-------------------------------------------------------------------------------------
One ZeroMQ message per ``work()`` call of the sink, holding a whole number of items.  A PUB
sink created with a non-empty ``key`` first sends the key as its own part (``SNDMORE``),
so the message is ``[key, payload]``; otherwise it is ``[payload]``.

* ``pass_tags = False``: ``payload`` is just ``M * N * 8`` bytes of interleaved float32
  (re, im), item-major.
* ``pass_tags = True``: ``payload`` starts with a header in the *sender's* byte order
  (little-endian on every platform GNU Radio ships on; this reader assumes it):

  ======  =======  =====================================================
  bytes   type     field
  ======  =======  =====================================================
  0-1     uint16   magic ``0x5FF0``
  2       uint8    version ``0x01``
  3-10    uint64   offset: absolute index of the message's first item
  11-18   uint64   number of tags
  ...     per tag  uint64 absolute item offset, then the key, value and
                   srcid, each a PMT in ``pmt::serialize`` form
  ======  =======  =====================================================

  followed by the ``M * N * 8`` data bytes.  The offsets reveal lost messages: a PUB sink
  drops messages for a slow subscriber, and the next header's offset then jumps.

Framing and drops
-----------------
Frames sit on a fixed grid of the item stream: frame ``seq`` holds items
``[base + seq*T, base + (seq+1)*T)``, where ``base`` is the offset of the first item
received.  A gap in the offsets (``pass_tags`` only) is counted and logged; the partial
frame it interrupts is discarded and the items up to the next grid boundary are skipped,
so every frame holds T *contiguous* snapshots and the missing ``seq`` numbers say which
frames were lost.  An offset that goes *backwards* means the sender restarted: the grid
restarts there and ``seq`` goes on increasing.  Without ``pass_tags`` the stream has no
offsets and no drop can be seen (PUSH/PULL never drops; PUB/SUB may).

A message whose payload is not a whole number of items (``N * 8`` bytes), or whose tag
header is malformed in any way, is logged with the endpoint and what was expected, counted
(``counters["bad_messages"]``) and dropped; the stream goes on.  The tag decoder turns
*every* malformed input into :class:`GrMessageError` (a hypothesis fuzz test checks it).
Every receive is a poll with a short timeout, so :meth:`ZMQSource.stop` (which the runtime
calls to cancel the source) and ``timeout_s`` always end the stream.

Limits (parameters): ``max_message_bytes`` is the socket's ``MAXMSGSIZE`` (libzmq drops a
larger message before buffering it); a message may carry at most ``max_tags`` tags; tags
wait for their frame in a backlog of at most ``max_pending_tags`` tags, and a tag dated
more than ``max_tag_lead_frames`` frames after the stream position is discarded at once.
Discarded tags are counted (``counters["dropped_tags"]``) and logged (the first few).
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import zmq

from nearfield.array import ULA
from nearfield.block import Param, ParamError, Source, positive
from nearfield.contract import ARRAY, SNAPSHOTS
from nearfield.frame import Frame

__all__ = [
    "GR_HEADER_MAGIC",
    "GR_HEADER_VERSION",
    "GR_HEADER_SIZE",
    "GrTag",
    "GrMessageError",
    "parse_tag_header",
    "deserialize_pmt",
    "split_message",
    "StreamFramer",
    "ZMQSource",
]

log = logging.getLogger(__name__)

#: gr-zeromq tag header magic (``GR_HEADER_MAGIC`` in tag_headers.cc).
GR_HEADER_MAGIC = 0x5FF0
#: gr-zeromq tag header version.
GR_HEADER_VERSION = 0x01
_HEADER = struct.Struct("<HBQQ")
#: Size of the fixed part of the tag header, bytes (magic, version, offset, tag count).
GR_HEADER_SIZE = _HEADER.size  # 19

# PMT serial tags (gnuradio-runtime pmt_serial_tags.h)
_PST_TRUE, _PST_FALSE, _PST_SYMBOL, _PST_INT32, _PST_DOUBLE = 0x00, 0x01, 0x02, 0x03, 0x04
_PST_COMPLEX, _PST_NULL, _PST_PAIR, _PST_VECTOR, _PST_DICT = 0x05, 0x06, 0x07, 0x08, 0x09
_PST_UNIFORM_VECTOR, _PST_UINT64, _PST_TUPLE, _PST_INT64 = 0x0A, 0x0B, 0x0C, 0x0D
# uniform-vector element types; pmt::serialize writes multi-byte elements big-endian
_UVI_DTYPES: dict[int, np.dtype[Any]] = {
    0x00: np.dtype("u1"),
    0x01: np.dtype("i1"),
    0x02: np.dtype(">u2"),
    0x03: np.dtype(">i2"),
    0x04: np.dtype(">u4"),
    0x05: np.dtype(">i4"),
    0x06: np.dtype(">u8"),
    0x07: np.dtype(">i8"),
    0x08: np.dtype(">f4"),
    0x09: np.dtype(">f8"),
    0x0A: np.dtype(">c8"),
    0x0B: np.dtype(">c16"),
}
_PMT_MAX_DEPTH = 32
_PMT_MAX_SYMBOL = 1024  # pmt::deserialize refuses longer symbols too
_MAX_TAGS = 100_000
_LOG_FIRST = 10  # bad messages logged one by one, then every _LOG_EVERY-th


class GrMessageError(ValueError):
    """A gr-zeromq message that cannot be used (bad size, bad tag header, bad parts)."""


class GrTag(NamedTuple):
    """One GNU Radio stream tag from a ``pass_tags`` header.

    ``offset`` is the absolute item index; ``key``/``value``/``srcid`` are the
    deserialised PMTs (see :func:`deserialize_pmt` for the Python types).
    """

    offset: int
    key: Any
    value: Any
    srcid: Any


class _PmtPair(tuple):
    """An improper PMT pair ``(car . cdr)``, e.g. a PDU (metadata dict . data vector)."""

    __slots__ = ()


def _need(buf, pos: int, n: int, what: str) -> None:
    if pos + n > len(buf):
        raise GrMessageError(f"PMT {what}: needs {n} byte(s) at byte {pos}, but the header ends at byte {len(buf)}")


def deserialize_pmt(buf, pos: int = 0, _depth: int = 0):
    """Decode one PMT in ``pmt::serialize`` form starting at byte ``pos``.

    Parameters
    ----------
    buf : bytes or memoryview
    pos : int
        Byte index of the PMT's type tag.

    Returns
    -------
    value, int
        The value and the byte index just after it.  Types: ``True``/``False``; ``None``
        (PMT_NIL); ``str`` (symbol); ``int``; ``float``; ``complex``; ``list`` (PMT
        vector or proper list); ``tuple`` (PMT tuple); ``dict`` (PMT dict); a 2-tuple
        subclass for an improper pair; ``numpy.ndarray`` (uniform vector, native order).

    Raises
    ------
    GrMessageError
        Malformed or truncated input, an unknown type tag, or nesting deeper than 32.
    """
    if _depth > _PMT_MAX_DEPTH:
        raise GrMessageError(f"PMT nested deeper than {_PMT_MAX_DEPTH} levels")
    _need(buf, pos, 1, "type tag")
    tag = buf[pos]
    pos += 1
    if tag == _PST_TRUE:
        return True, pos
    if tag == _PST_FALSE:
        return False, pos
    if tag == _PST_NULL:
        return None, pos
    if tag == _PST_SYMBOL:
        _need(buf, pos, 2, "symbol length")
        (n,) = struct.unpack_from(">H", buf, pos)
        pos += 2
        if n > _PMT_MAX_SYMBOL:
            raise GrMessageError(f"PMT symbol of {n} bytes (longer than {_PMT_MAX_SYMBOL})")
        _need(buf, pos, n, "symbol")
        return bytes(buf[pos : pos + n]).decode("utf-8", errors="replace"), pos + n
    if tag == _PST_INT32:
        _need(buf, pos, 4, "int32")
        return struct.unpack_from(">i", buf, pos)[0], pos + 4
    if tag == _PST_UINT64:
        _need(buf, pos, 8, "uint64")
        return struct.unpack_from(">Q", buf, pos)[0], pos + 8
    if tag == _PST_INT64:
        _need(buf, pos, 8, "int64")
        return struct.unpack_from(">q", buf, pos)[0], pos + 8
    if tag == _PST_DOUBLE:
        _need(buf, pos, 8, "double")
        return struct.unpack_from(">d", buf, pos)[0], pos + 8
    if tag == _PST_COMPLEX:
        _need(buf, pos, 16, "complex")
        re, im = struct.unpack_from(">dd", buf, pos)
        return complex(re, im), pos + 16
    if tag in (_PST_VECTOR, _PST_TUPLE):
        _need(buf, pos, 4, "vector length")
        (n,) = struct.unpack_from(">I", buf, pos)
        pos += 4
        if n > len(buf) - pos:  # every element takes at least one byte
            raise GrMessageError(f"PMT vector of {n} items cannot fit in the header")
        items = []
        for _ in range(n):
            item, pos = deserialize_pmt(buf, pos, _depth + 1)
            items.append(item)
        return (items if tag == _PST_VECTOR else tuple(items)), pos
    if tag == _PST_UNIFORM_VECTOR:
        _need(buf, pos, 6, "uniform vector header")
        utag = buf[pos]
        (n,) = struct.unpack_from(">I", buf, pos + 1)
        npad = buf[pos + 5]
        pos += 6 + npad
        dt = _UVI_DTYPES.get(utag & 0x7F)
        if dt is None:
            raise GrMessageError(f"PMT uniform vector: unknown element type 0x{utag:02x}")
        _need(buf, pos, n * dt.itemsize, "uniform vector data")
        arr = np.frombuffer(buf, dtype=dt, count=n, offset=pos).astype(dt.newbyteorder("="))
        return arr, pos + n * dt.itemsize
    if tag in (_PST_PAIR, _PST_DICT):
        return _deserialize_pair(buf, pos, tag, _depth)
    raise GrMessageError(f"PMT: unknown type tag 0x{tag:02x} at byte {pos - 1}")


def _deserialize_pair(buf, pos: int, kind: int, depth: int):
    """A pair chain (after its tag byte), as pmt's ``parse_pair`` reads it."""
    cars = []
    while True:
        car, pos = deserialize_pmt(buf, pos, depth + 1)
        cars.append(car)
        _need(buf, pos, 1, "pair tail tag")
        nxt = buf[pos]
        if nxt == kind == _PST_PAIR:
            pos += 1
            continue
        if nxt == _PST_NULL:
            tail, pos = None, pos + 1
        else:
            tail, pos = deserialize_pmt(buf, pos, depth + 1)
        break
    if kind == _PST_DICT:
        out = {}
        for entry in cars:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise GrMessageError("PMT dict: an entry is not a (key . value) pair")
            out[_hashable(entry[0])] = entry[1]
        if isinstance(tail, dict):
            out.update(tail)
        elif tail is not None:
            raise GrMessageError("PMT dict: its tail is not a dict")
        return out, pos
    if tail is None:
        return cars, pos
    if len(cars) == 1:
        return _PmtPair((cars[0], tail)), pos
    return cars + [tail], pos  # improper list: keep every element


def _hashable(key):
    """A dict key usable in Python: PMT tuples made of hashable items stay tuples, anything
    else (vectors, dicts, a tuple holding a vector) becomes its ``repr``."""
    if isinstance(key, (str, int, float, bool, complex, type(None))):
        return key
    if isinstance(key, tuple):
        items = tuple(_hashable(k) for k in key)
        try:
            hash(items)
        except TypeError:  # pragma: no cover - every item is hashable by now
            return repr(key)
        return items
    return repr(key)


def parse_tag_header(buf, max_tags: int = _MAX_TAGS) -> tuple[int, list[GrTag], int]:
    """Parse the gr-zeromq ``pass_tags`` header at the start of a payload.

    Parameters
    ----------
    buf : bytes or memoryview
        The whole payload (header then data).

    Returns
    -------
    offset : int
        Absolute index of the payload's first item in the sender's stream.
    tags : list of GrTag
    header_len : int
        Bytes taken by the header; the item data starts there.

    Raises
    ------
    GrMessageError
        Too short, wrong magic or version, more than ``max_tags`` tags, or a malformed tag;
        no other exception escapes, whatever the bytes.
    """
    try:
        return _parse_tag_header(buf, max_tags)
    except GrMessageError:
        raise
    except (
        ValueError,
        TypeError,
        OverflowError,
        IndexError,
        KeyError,
        RecursionError,
        MemoryError,
        struct.error,
    ) as exc:
        raise GrMessageError(f"tag header: cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})") from None


def _parse_tag_header(buf, max_tags: int):
    if len(buf) < GR_HEADER_SIZE:
        raise GrMessageError(
            f"tag header: message of {len(buf)} bytes is shorter than the {GR_HEADER_SIZE}-byte gr-zeromq tag header"
        )
    magic, version, offset, ntags = _HEADER.unpack_from(buf, 0)
    if magic != GR_HEADER_MAGIC:
        raise GrMessageError(
            f"tag header: magic 0x{magic:04x}, expected 0x{GR_HEADER_MAGIC:04x} "
            "(is pass_tags enabled on the GNU Radio sink?)"
        )
    if version != GR_HEADER_VERSION:
        raise GrMessageError(f"tag header: version {version}, expected {GR_HEADER_VERSION}")
    if ntags * 11 > len(buf) - GR_HEADER_SIZE:  # >= 8 + 3 bytes per tag
        raise GrMessageError(f"tag header: {ntags} tags cannot fit in a {len(buf)}-byte message")
    if ntags > max_tags:
        raise GrMessageError(f"tag header: {ntags} tags, more than the limit max_tags={max_tags}")
    pos = GR_HEADER_SIZE
    tags = []
    for i in range(ntags):
        if pos + 8 > len(buf):
            raise GrMessageError(f"tag header: tag {i} of {ntags} is truncated")
        (toff,) = struct.unpack_from("<Q", buf, pos)
        pos += 8
        try:
            key, pos = deserialize_pmt(buf, pos)
            value, pos = deserialize_pmt(buf, pos)
            srcid, pos = deserialize_pmt(buf, pos)
        except GrMessageError as exc:
            raise GrMessageError(f"tag header: tag {i} of {ntags}: {exc}") from None
        tags.append(GrTag(toff, key, value, srcid))
    return offset, tags, pos


def split_message(parts, key: bytes = b"") -> memoryview:
    """The payload of a gr-zeromq message: ``[payload]`` or ``[key, payload]``.

    Raises :class:`GrMessageError` for more than two parts or a key other than ``key``
    (when ``key`` is given).
    """
    bufs = [p.buffer if hasattr(p, "buffer") else memoryview(p) for p in parts]
    if len(bufs) == 1:
        if key:
            raise GrMessageError(f"expected a two-part message [key {key!r}, payload], got one part")
        return bufs[0]
    if len(bufs) == 2:
        got = bytes(bufs[0])
        if key and got != key:
            raise GrMessageError(f"message key {got!r}, expected {key!r}")
        return bufs[1]
    raise GrMessageError(f"expected a message of 1 part (payload) or 2 parts (key, payload), got {len(bufs)} parts")


def _jsonable(value, _limit: int = 256):
    """A tag value as JSON-serialisable data (complex -> [re, im], long vectors cut)."""
    if isinstance(value, np.ndarray):
        value = value[:_limit].tolist()
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v, _limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, _limit) for v in value[:_limit]]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


class StreamFramer:
    """Cut a stream of N-vector items into frames of T snapshots on a fixed grid.

    No sockets: :class:`ZMQSource` feeds it one message's items at a time.

    Parameters
    ----------
    n_antennas : int
        N, items are (N,) complex64.
    snapshots : int
        T, snapshots per frame.

    Attributes
    ----------
    counters : dict
        ``items`` received, ``gaps`` (offset jumps), ``dropped_items`` (items the
        offsets say never arrived), ``skipped_items`` (received but discarded to
        realign after a gap), ``partial_frames`` (frames cut short by a gap or restart),
        ``restarts`` (offset went backwards).
    """

    def __init__(self, n_antennas: int, snapshots: int):
        self.n = int(n_antennas)
        self.t = int(snapshots)
        self._buf = np.empty((self.t, self.n), dtype=np.complex64)
        self._fill = 0
        self._start = 0  # absolute offset of the buffered partial frame
        self._start_time = 0.0  # arrival time of its first item
        self._expected = None  # absolute offset of the next item
        self._base = 0  # grid origin
        self._seq_base = 0
        self._next_seq = 0  # smallest seq not yet emitted or passed
        self.last_gap = 0  # items missing before the last pushed message
        self.counters = {
            "items": 0,
            "gaps": 0,
            "dropped_items": 0,
            "skipped_items": 0,
            "partial_frames": 0,
            "restarts": 0,
        }

    def _discard_partial(self) -> None:
        if self._fill:
            self.counters["partial_frames"] += 1
            self._fill = 0

    def push(self, items: np.ndarray, offset: int | None = None, arrival: float = 0.0):
        """Add one message's items; return the completed frames.

        Parameters
        ----------
        items : ndarray, shape (M, N), complex64
            Item-major, as on the wire (may be a read-only view of the message).
        offset : int, optional
            Absolute offset of ``items[0]`` (from the tag header); ``None`` = contiguous
            with the previous message.
        arrival : float
            Wall-clock arrival time of the message, s.

        Returns
        -------
        list of (seq, start_offset, arrival_time, snapshots)
            ``snapshots`` (N, T) complex64, C-contiguous, a fresh array.
        """
        m = items.shape[0]
        self.last_gap = 0
        if offset is None:
            offset = self._expected if self._expected is not None else 0
        if self._expected is None:
            self._base = offset
        elif offset > self._expected:
            gap = offset - self._expected
            self.last_gap = gap
            self.counters["gaps"] += 1
            self.counters["dropped_items"] += gap
            self._discard_partial()
        elif offset < self._expected:
            self.counters["restarts"] += 1
            self._discard_partial()
            self._base = offset
            self._seq_base = self._next_seq
        self._expected = offset + m
        self.counters["items"] += m

        out = []
        pos = 0
        while pos < m:
            absolute = offset + pos
            rel = absolute - self._base
            k, phase = divmod(rel, self.t)
            if self._fill == 0:
                if phase:
                    skip = min(self.t - phase, m - pos)
                    self.counters["skipped_items"] += skip
                    pos += skip
                    continue
                self._start, self._start_time = absolute, arrival
            take = min(self.t - self._fill, m - pos)
            seq = self._seq_base + k
            if self._fill == 0 and take == self.t:  # a whole frame inside the message
                snap = items[pos : pos + take].T.copy()  # fresh, C-order (a view when N == 1)
                out.append((seq, absolute, arrival, snap))
                self._next_seq = seq + 1
            else:
                self._buf[self._fill : self._fill + take] = items[pos : pos + take]
                self._fill += take
                if self._fill == self.t:
                    out.append((seq, self._start, self._start_time, self._buf.T.copy()))
                    self._next_seq = seq + 1
                    self._fill = 0
            pos += take
        return out


def check_zmq_endpoint(value) -> str | None:
    """``Param.check`` for a ZeroMQ endpoint to connect to (the zmq and coherent_rtlsdr sources)."""
    if not isinstance(value, str) or "://" not in value:
        return "a ZeroMQ endpoint such as 'tcp://127.0.0.1:5555'"
    return None


class ZMQSource(Source):
    """Live snapshots from GNU Radio's gr-zeromq PUSH/PUB sink (items of N complex64)."""

    adds = (ARRAY, SNAPSHOTS)  # frame contract (nearfield.contract)
    params = (
        Param(
            "address",
            str,
            doc="endpoint the GNU Radio sink binds, e.g. tcp://127.0.0.1:5555 (this source connects)",
            check=check_zmq_endpoint,
        ),
        Param("socket", str, "pull", "pull for a gr-zeromq PUSH sink, sub for a PUB sink", choices=("pull", "sub")),
        Param(
            "pass_tags",
            bool,
            False,
            "the sink's pass_tags: each message starts with a tag header whose offsets reveal drops",
        ),
        Param("key", str, "", "key (topic) of a PUB sink; empty = none"),
        Param(
            "n_antennas",
            int,
            doc="N: the stream's vlen, complex64 values per item",
            check=lambda v: None if v >= 2 else "an integer >= 2",
        ),
        Param("carrier_hz", float, 30.0e9, "carrier frequency, Hz", check=positive),
        Param("spacing", (float, type(None)), None, "antenna spacing d, m (null = lambda/2)", check=positive),
        Param(
            "wavelength_m", (float, type(None)), None, "wavelength override, m (null = c0 / carrier_hz)", check=positive
        ),
        Param("snapshots", int, 100, "T: snapshots per frame", check=positive),
        Param(
            "frames",
            int,
            0,
            "frames to emit (0 = until stopped or timed out)",
            check=lambda v: None if v >= 0 else "an integer >= 0",
        ),
        Param(
            "timeout_s",
            (float, type(None)),
            None,
            "end the stream after this long without a message, s (null = wait forever)",
            check=positive,
        ),
        Param(
            "sample_rate_hz",
            (float, type(None)),
            None,
            "item rate of the stream, Hz: t0 = item offset / rate (null: t0 = arrival time)",
            check=positive,
        ),
        Param("hwm", int, 1000, "receive high-water mark, messages", check=positive),
        Param(
            "max_message_bytes", int, 256 << 20, "largest message accepted (ZeroMQ MAXMSGSIZE), bytes", check=positive
        ),
        Param("max_tags", int, 10_000, "most tags one message may carry (more: message dropped)", check=positive),
        Param(
            "max_pending_tags",
            int,
            10_000,
            "most tags waiting for their frame; further tags are discarded and counted",
            check=positive,
        ),
        Param(
            "max_tag_lead_frames",
            int,
            1000,
            "tags dated more than this many frames ahead of the stream are discarded",
            check=positive,
        ),
    )

    #: poll period, s: the longest the source takes to notice stop() or the timeout
    poll_s = 0.05

    # set by validate() (None) and start(); generate() runs only after start()
    _ctx: zmq.Context | None
    _sock: zmq.Socket | None
    _framer: StreamFramer | None

    def validate(self) -> None:
        try:
            self.array = ULA(self.n_antennas, self.carrier_hz, self.spacing, self.wavelength_m)
        except ValueError as exc:
            raise self.param_error(str(exc).split(":")[0], str(exc)) from None
        if self.key and self.socket != "sub":
            raise self.param_error("key", "a key (topic) needs socket: sub (a PUB sink)")
        self._stop = threading.Event()
        self._ctx = None
        self._sock = None
        self.counters = {"messages": 0, "bad_messages": 0, "frames": 0, "dropped_tags": 0}
        self._framer = None

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        self._ctx = zmq.Context()
        kind = zmq.PULL if self.socket == "pull" else zmq.SUB
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, self.key.encode())
        try:
            sock.connect(self.address)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise ParamError(
                f"block {self.name!r}, parameter 'address': cannot connect to {self.address!r}: {exc}"
            ) from None
        self._sock = sock
        self._framer = StreamFramer(self.n_antennas, self.snapshots)

    def stop(self) -> None:
        """Ask :meth:`generate` to return (thread-safe; takes effect within ``poll_s``)."""
        self._stop.set()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self.counters["messages"] or self.counters["bad_messages"]:
            c = self.all_counters()
            log.info(
                "zmq source %r (%s): %d messages, %d bad, %d frames, %d gaps, %d items lost",
                self.name,
                self.address,
                c["messages"],
                c["bad_messages"],
                c["frames"],
                c["gaps"],
                c["dropped_items"],
            )

    def all_counters(self) -> dict:
        """Message counters and the framer's item counters in one dict."""
        out = dict(self.counters)
        if self._framer is not None:
            out.update(self._framer.counters)
        return out

    # -- streaming ----------------------------------------------------------------
    def _bad(self, exc: Exception) -> None:
        self.counters["bad_messages"] += 1
        n = self.counters["bad_messages"]
        if n <= _LOG_FIRST or n % 1000 == 0:
            log.error(
                "zmq source %r: dropped message from %s: %s (bad messages so far: %d)", self.name, self.address, exc, n
            )

    def _unpack(self, parts):
        """(items (M, N) view, offset or None, tags) of one message, or GrMessageError."""
        payload = split_message(parts, self.key.encode())
        offset, tags, start = None, [], 0
        if self.pass_tags:
            offset, tags, start = parse_tag_header(payload, self.max_tags)
        nbytes = len(payload) - start
        item_bytes = 8 * self.n_antennas
        if nbytes % item_bytes:
            hint = ""
            if not self.pass_tags and len(payload) >= 2 and struct.unpack_from("<H", payload)[0] == GR_HEADER_MAGIC:
                hint = " (the message starts with a gr-zeromq tag header: set pass_tags: true)"
            raise GrMessageError(
                f"{nbytes} data bytes is not a whole number of items: expected a multiple of "
                f"{item_bytes} bytes (vlen n_antennas={self.n_antennas} complex64 values of 8 "
                f"bytes per item){hint}"
            )
        items = np.frombuffer(payload, dtype="<c8", offset=start).reshape(-1, self.n_antennas)
        return items, offset, tags

    def _keep_tags(self, pending: list, tags: list, position: int) -> list:
        """Add ``tags`` to the backlog within the limits; count (and log) the rest."""
        horizon = position + self.max_tag_lead_frames * self.snapshots
        room = self.max_pending_tags - len(pending)
        keep = [t for t in tags if t.offset < horizon][: max(0, room)]
        lost = len(tags) - len(keep)
        if lost:
            before = self.counters["dropped_tags"]
            self.counters["dropped_tags"] += lost
            if before < _LOG_FIRST:
                log.warning(
                    "zmq source %r: discarded %d tag(s) from %s: dated more than %d frames "
                    "ahead (max_tag_lead_frames) or backlog full (max_pending_tags=%d)",
                    self.name,
                    lost,
                    self.address,
                    self.max_tag_lead_frames,
                    self.max_pending_tags,
                )
        pending.extend(keep)
        return pending

    def generate(self) -> Iterator[Frame]:
        sock, framer = self._sock, self._framer
        if sock is None or framer is None:
            raise RuntimeError(f"zmq source {self.name!r}: generate() called before start()")
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        describe = self.array.describe()
        pending_tags: list[GrTag] = []
        last = time.monotonic()
        while not self._stop.is_set():
            if self.timeout_s is not None:
                left = self.timeout_s - (time.monotonic() - last)
                if left <= 0:
                    log.info(
                        "zmq source %r: no message from %s for %.3g s: end of stream",
                        self.name,
                        self.address,
                        self.timeout_s,
                    )
                    return
                wait = min(self.poll_s, left)
            else:
                wait = self.poll_s
            if not poller.poll(max(1, int(wait * 1000))):
                continue
            parts = sock.recv_multipart(copy=False)
            last = time.monotonic()
            arrival = time.time()
            self.counters["messages"] += 1
            try:
                items, offset, tags = self._unpack(parts)
            except GrMessageError as exc:
                self._bad(exc)
                continue
            done = framer.push(items, offset, arrival)
            if framer.last_gap:
                gap = framer.last_gap
                log.warning(
                    "zmq source %r: %d item(s) missing from %s before offset %d (about %d message(s) dropped)",
                    self.name,
                    gap,
                    self.address,
                    offset,
                    max(1, math.ceil(gap / max(1, items.shape[0]))),
                )
            if tags:
                pending_tags = self._keep_tags(pending_tags, tags, framer._expected or 0)
            for seq, start, t_arr, snap in done:
                t0 = start / self.sample_rate_hz if self.sample_rate_hz else t_arr
                c = framer.counters
                meta: dict[str, Any] = {
                    "array": dict(describe),
                    "stream": {
                        "address": self.address,
                        "offset": int(start),
                        "gaps": c["gaps"],
                        "dropped_items": c["dropped_items"],
                        "bad_messages": self.counters["bad_messages"],
                        "dropped_tags": self.counters["dropped_tags"],
                    },
                }
                if pending_tags:
                    end = start + self.snapshots
                    mine = [t for t in pending_tags if start <= t.offset < end]
                    pending_tags = [t for t in pending_tags if t.offset >= end]
                    if mine:
                        meta["tags"] = [
                            {"offset": int(t.offset), "key": _jsonable(t.key), "value": _jsonable(t.value)}
                            for t in mine
                        ]
                self.counters["frames"] += 1
                yield Frame(seq=int(seq), t0=float(t0), arrays={"snapshots": snap}, meta=meta)
                if self.frames and self.counters["frames"] >= self.frames:
                    return
