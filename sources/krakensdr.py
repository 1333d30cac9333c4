"""Live source: KrakenSDR / KerberosSDR through the Heimdall DAQ firmware's IQ server (TCP).

Where each rule comes from (public sources, read in the ``krakenrf`` repositories)
---------------------------------------------------------------------------------
* Header layout, sync word and frame types: ``heimdall_daq_fw/Firmware/_daq_core/iq_header.h``
  (``struct iq_header_struct``, ``SYNC_WORD 0x2bf7b95a``, ``IQ_HEADER_LENGTH 1024``,
  ``FRAME_TYPE_DATA 0 / DUMMY 1 / RAMP 2 / CAL 3 / TRIGW 4``) and ``iq_header.py`` (the same
  fields unpacked with ``struct`` in native order and alignment, ``"II16sIIIQQQIQIIQIII" +
  32 "I" + "IIII" + 192 "I" + "I"``, 1024 bytes).
* Handshake: ``eth_server.h`` (``iq_stream_con``: after ``accept`` the server waits for the
  ASCII command ``streaming``) and ``iq_server.c`` (it then sends one frame -- the 1024-byte
  header, then ``cpi_length * active_ant_chs`` complex float32 samples -- and waits for
  ``IQDownload`` before each next frame; any other command, or a closed socket, ends the
  connection and the server accepts the next client).  The client side is
  ``krakensdr_doa/_sdr/_receiver/kraken_sdr_receiver.py`` (port 5000, ``streaming``, then
  ``IQDownload`` per frame, ``q`` before closing; payload size ``cpi_length * active_ant_chs
  * 2 * sample_bit_depth / 8``, reshaped ``(active_ant_chs, cpi_length)``: channel-major).
* What the fields mean: ``rtl_daq.c`` (``time_stamp`` = Unix time in **milliseconds**; DUMMY
  frames carry ``cpi_length = 0``), ``fir_decimate.c`` (``cpi_index`` counts every frame the
  decimator passes on, from 0; ``data_type = 3`` and ``sample_bit_depth = 32`` = complex
  float32; DATA frames have ``sampling_freq = adc_sampling_freq / decimation`` and the
  decimated ``cpi_length``, CAL frames keep the ADC rate and length), ``delay_sync.py``
  (``delay_sync_flag`` = sample delays aligned, ``iq_sync_flag`` = amplitude/phase aligned,
  ``sync_state`` 1 init .. 5 track-lock .. 6 track; the DAQ drops frames towards the IQ server
  when the client is not asking fast enough), ``dump_iq_header`` (``if_gains`` in 0.1 dB) and
  ``kraken_sdr_signal_processor.py`` (only DATA frames are processed; "DAQ ok" = sync word,
  ``delay_sync_flag`` and ``iq_sync_flag``).

Byte layout of the header (little-endian, natural C alignment: 1024 bytes)
-------------------------------------------------------------------------
======  =========  ======================  =============================================
offset  type       field                   becomes
======  =========  ======================  =============================================
0       uint32     sync_word 0x2bf7b95a    frame dropped (``bad_sync``) if different
4       uint32     frame_type              only DATA passes; others counted by type
8       char[16]   hardware_id             ``meta.device.hardware_id``
24      uint32     unit_id                 ``meta.device.unit_id``
28      uint32     active_ant_chs          channels in the payload (1..32)
32      uint32     ioo_type                (unused)
36      (4 pad)
40      uint64     rf_center_freq, Hz      carrier of ``meta.array`` (unless ``carrier_hz``)
48      uint64     adc_sampling_freq, Hz   ``meta.device.adc_sampling_freq_hz``
56      uint64     sampling_freq, Hz       ``meta.sample_rate_hz``; t0 steps of a frame
64      uint32     cpi_length              samples per channel L (cut into L // T frames)
68      (4 pad)
72      uint64     time_stamp, ms          t0 = time_stamp / 1000 + k T / sampling_freq
80      uint32     daq_block_index         ``meta.device.daq_block_index``
84      uint32     cpi_index               gaps = lost frames; frame seq = cpi_index * (L//T) + k
88      uint64     ext_integration_cntr    (unused)
96      uint32     data_type               must be 3 (decimated complex float)
100     uint32     sample_bit_depth        must be 32
104     uint32     adc_overdrive_flags     bit m = channel m overdriven -> ``adc_overdrive``
108     uint32[32] if_gains, 0.1 dB        ``meta.device.if_gains_db`` (selected channels)
236     uint32     delay_sync_flag         DATA needs 1 (``require_sync``)
240     uint32     iq_sync_flag            DATA needs 1 (``require_sync``)
244     uint32     sync_state              ``meta.device.sync_state``
248     uint32     noise_source_state      ``meta.device.noise_source``
252     uint32[192] reserved
1020    uint32     header_version          ``meta.device.header_version``
======  =========  ======================  =============================================

The payload follows: ``active_ant_chs x cpi_length`` complex64 (little-endian float32 pairs),
channel 0's samples first.  Assumption: the sender is little-endian (x86-64, ARM Linux), as
every platform the firmware runs on; a byte-swapped sync word is reported as such.

Validity, counting and recovery
-------------------------------
* A header whose sync word is wrong, or whose sizes are impossible (``active_ant_chs`` not
  in 1..32, payload larger than ``max_frame_mb``, DATA/CAL without samples) leaves the byte
  stream without a trustworthy frame boundary: it is counted (``bad_sync`` / ``bad_size``)
  and the connection is closed and reopened (the server then starts a fresh frame).  A sane
  header with an unsupported sample format (``data_type`` != 3 or ``sample_bit_depth`` != 32,
  or an unknown frame type) is counted ``bad_format``; its payload is read and discarded.
* DATA frames pass when ``delay_sync_flag`` and ``iq_sync_flag`` are both 1 (calibration
  locked; ``require_sync``) and, with ``drop_overdrive``, no selected channel is overdriven.
  Everything else is counted and dropped by reason: ``dropped_dummy``, ``dropped_cal``,
  ``dropped_ramp``, ``dropped_trigw``, ``dropped_unlocked``, ``dropped_overdrive``,
  ``dropped_duplicate`` (the same ``cpi_index`` twice).
* ``lost`` counts the ``cpi_index`` values never received (the DAQ dropped them, e.g. while
  this client was slow or disconnected); a header dropped as malformed counts as one frame,
  not as lost.  An index that goes back is a restart of the DAQ (``restarts``); ``seq`` keeps
  increasing.
* A connection that closes, resets or stays silent for ``stall_s`` is reopened with
  back-off (``disconnects``, ``reconnects``; a frame cut short counts as ``truncated``).
  When nothing at all arrives for ``timeout_s`` (no device, device stopped), the source
  ends the run: ``on_timeout: fail`` (default) raises :class:`DeviceStopped` (the runner
  names the block and exits with status 1), ``on_timeout: end`` ends the stream cleanly
  (status 0); either way the message names the device and what was tried.

Calibration hook (output port ``cal``)
--------------------------------------
Every CAL frame (the KrakenSDR's internal noise source switched onto all inputs) is emitted on
port ``cal`` when ``emit_cal`` is true: ``arrays.snapshots`` (N, Tc) complex64 of the selected
channels in array order (Tc = ``cal_snapshots``, default ``snapshots``, at most the CPI), its own
``seq`` (CAL frames received), ``t0``, ``meta.array``, ``meta.sample_rate_hz``, ``meta.device``
and ``meta.calibration = {"kind": "noise_source", "device": "krakensdr"}``: a common noise
signal in every channel, so the channels' relative complex gains are the principal
eigenvector of ``Y Y^H / Tc``.  Leave the port unconnected to ignore them.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from nearfield.contract import ARRAY, SAMPLE_RATE, SNAPSHOTS, TRUTH

from ..block import Param, Source, idle_until, positive
from ..frame import Frame
from .sdr_common import (
    Backoff,
    DeviceStopped,
    IndexTracker,
    SeqMapper,
    check_channels,
    check_truth,
    cut_frames,
    make_array,
    truth_meta,
)

__all__ = [
    "FRAME_TYPES",
    "HEADER_SIZE",
    "SYNC_WORD",
    "DeviceStopped",
    "HeaderError",
    "IQHeader",
    "KrakenSDRSource",
    "frame_problem",
    "parse_header",
]

log = logging.getLogger(__name__)

#: ``SYNC_WORD`` of iq_header.h.
SYNC_WORD = 0x2BF7B95A
#: ``IQ_HEADER_LENGTH`` of iq_header.h, bytes.
HEADER_SIZE = 1024
#: Frame type codes of iq_header.h.
FRAME_TYPES = {0: "data", 1: "dummy", 2: "ramp", 3: "cal", 4: "trigw"}
FRAME_DATA, FRAME_CAL = 0, 3
#: Most channels a header can describe (``if_gains[32]``).
MAX_CHANNELS = 32
# iq_header_struct with explicit padding: 4 bytes after ioo_type and after cpi_length
# (uint64 alignment), reserved[192] skipped.
_HEADER = struct.Struct("<II16sIII4xQQQI4xQIIQIII32IIIII768xI")
assert _HEADER.size == HEADER_SIZE
_SWAPPED_SYNC = int.from_bytes(SYNC_WORD.to_bytes(4, "little"), "big")
_LOG_FIRST = 10


class IQHeader(NamedTuple):
    """The decoded 1024-byte Heimdall IQ frame header (field names as in iq_header.h)."""

    sync_word: int
    frame_type: int
    hardware_id: str
    unit_id: int
    active_ant_chs: int
    ioo_type: int
    rf_center_freq: int
    adc_sampling_freq: int
    sampling_freq: int
    cpi_length: int
    time_stamp: int
    daq_block_index: int
    cpi_index: int
    ext_integration_cntr: int
    data_type: int
    sample_bit_depth: int
    adc_overdrive_flags: int
    if_gains: tuple
    delay_sync_flag: int
    iq_sync_flag: int
    sync_state: int
    noise_source_state: int
    header_version: int

    @property
    def payload_bytes(self) -> int:
        """Payload size as the Kraken client computes it, bytes."""
        return self.cpi_length * self.active_ant_chs * 2 * (self.sample_bit_depth // 8)


class HeaderError(ValueError):
    """A header that cannot be used.  ``kind``: bad_sync / bad_size (stream must be resynchronised
    by reconnecting) or bad_format (payload size known: skip it)."""

    def __init__(self, kind: str, message: str, header: IQHeader | None = None):
        super().__init__(message)
        self.kind = kind
        self.header = header


def parse_header(buf, max_payload_bytes: int) -> IQHeader:
    """Decode and check one 1024-byte header.

    Raises
    ------
    HeaderError
        ``bad_sync`` (wrong sync word), ``bad_size`` (channel count or payload size impossible,
        or over ``max_payload_bytes``) or ``bad_format`` (sizes sane, sample format or frame
        type not supported; ``header`` is set so the payload can be skipped).
    """
    if len(buf) != HEADER_SIZE:
        raise HeaderError("bad_size", f"header of {len(buf)} bytes, expected {HEADER_SIZE}")
    v = _HEADER.unpack(buf)
    hardware_id = v[2].split(b"\0", 1)[0].decode("ascii", "replace")  # NUL-padded char[16]
    hdr = IQHeader._make((*v[:2], hardware_id, *v[3:17], tuple(v[17:49]), *v[49:54]))
    if hdr.sync_word != SYNC_WORD:
        hint = " (byte-swapped: a big-endian sender?)" if hdr.sync_word == _SWAPPED_SYNC else ""
        raise HeaderError("bad_sync", f"sync word 0x{hdr.sync_word:08x}, expected 0x{SYNC_WORD:08x}{hint}")
    if not 1 <= hdr.active_ant_chs <= MAX_CHANNELS:
        raise HeaderError("bad_size", f"active_ant_chs = {hdr.active_ant_chs}, expected 1..{MAX_CHANNELS}")
    if hdr.sample_bit_depth not in (8, 16, 32, 64) and hdr.cpi_length:
        raise HeaderError("bad_size", f"sample_bit_depth = {hdr.sample_bit_depth}: payload size unknown")
    if hdr.payload_bytes > max_payload_bytes:
        raise HeaderError(
            "bad_size",
            f"payload of {hdr.payload_bytes} bytes ({hdr.active_ant_chs} channels x "
            f"cpi_length {hdr.cpi_length}) exceeds max_frame_mb",
        )
    if hdr.frame_type in (FRAME_DATA, FRAME_CAL) and hdr.cpi_length == 0:
        raise HeaderError("bad_size", f"{FRAME_TYPES[hdr.frame_type].upper()} frame with cpi_length = 0")
    if hdr.frame_type not in FRAME_TYPES:
        raise HeaderError("bad_format", f"unknown frame_type {hdr.frame_type}", hdr)
    if hdr.cpi_length and (hdr.data_type != 3 or hdr.sample_bit_depth != 32):
        raise HeaderError(
            "bad_format",
            f"data_type {hdr.data_type}, sample_bit_depth {hdr.sample_bit_depth}: "
            f"expected 3 and 32 (complex float32 from the IQ server)",
            hdr,
        )
    return hdr


def frame_problem(hdr: IQHeader, channels, require_sync: bool = True, drop_overdrive: bool = False) -> str | None:
    """Why a well-formed frame is not valid data (a ``dropped_*`` reason), or None if it is.

    Valid = a DATA frame, calibration locked (``delay_sync_flag`` and ``iq_sync_flag`` set,
    when ``require_sync``) and, when ``drop_overdrive``, no ADC overdrive on the ``channels``.
    """
    if hdr.frame_type != FRAME_DATA:
        return FRAME_TYPES[hdr.frame_type]
    if require_sync and not (hdr.delay_sync_flag and hdr.iq_sync_flag):
        return "unlocked"
    if drop_overdrive and any((hdr.adc_overdrive_flags >> c) & 1 for c in channels):
        return "overdrive"
    return None


class _Lost(Exception):
    """The connection ended or stalled."""


class _Stopped(Exception):
    """stop() was called."""


def _check_port(v) -> str | None:
    return None if 1 <= v <= 65535 else "a TCP port 1..65535"


class KrakenSDRSource(Source):
    """Live KrakenSDR / KerberosSDR frames from the Heimdall DAQ IQ server (TCP, port 5000)."""

    outputs = ("out", "cal")
    adds = (ARRAY, SNAPSHOTS, TRUTH, SAMPLE_RATE)  # frame contract (nearfield.contract)
    params = (
        Param("host", str, "127.0.0.1", "host running the Heimdall DAQ firmware"),
        Param("port", int, 5000, "its IQ server port", check=_check_port),
        Param(
            "snapshots",
            int,
            1024,
            "T: snapshots per frame (each CPI gives cpi_length // T frames)",
            check=lambda v: None if 1 <= v <= (1 << 24) else "an integer in 1..2**24",
        ),
        Param(
            "frames",
            int,
            0,
            "data frames to emit (0 = until the device stops)",
            check=lambda v: None if v >= 0 else "an integer >= 0",
        ),
        Param(
            "channels",
            (list, type(None)),
            None,
            "device channels in array order, element 0 first (null = all active channels 0..M-1)",
            check=check_channels,
        ),
        Param(
            "spacing_m",
            (float, type(None)),
            None,
            "element spacing d, m (null = half a wavelength at the carrier)",
            check=positive,
        ),
        Param(
            "carrier_hz", (float, type(None)), None, "carrier, Hz (null = the header's rf_center_freq)", check=positive
        ),
        Param("require_sync", bool, True, "DATA frames must have delay_sync_flag and iq_sync_flag set"),
        Param("drop_overdrive", bool, False, "drop DATA frames with ADC overdrive on a selected channel"),
        Param("emit_cal", bool, True, "emit CAL (noise source) frames on the 'cal' port"),
        Param(
            "cal_snapshots",
            (int, type(None)),
            None,
            "snapshots per CAL frame on 'cal' (null = snapshots)",
            check=positive,
        ),
        Param(
            "timeout_s", float, 30.0, "end the run after this long without a byte from the device, s", check=positive
        ),
        Param("stall_s", float, 10.0, "reopen a connection silent this long, s (> one CPI period)", check=positive),
        Param(
            "on_timeout",
            str,
            "fail",
            "when the device stops: fail (exit status 1) or end (status 0)",
            choices=("fail", "end"),
        ),
        Param("max_frame_mb", float, 256.0, "largest accepted payload, MiB", check=positive),
        Param(
            "truth",
            (list, type(None)),
            None,
            "known targets [{theta: rad, range: m}] to attach as meta truth (emulated or surveyed scenes)",
            check=check_truth,
        ),
    )

    #: socket poll period, s: the longest generate() goes without yielding
    poll_s = 0.05
    idle_none = True

    _sock: socket.socket | None  # the open connection; None between connections
    _last_rx: float  # monotonic time of the last byte received, s
    _connected_at: float  # monotonic time of the last connect, s

    def _conn(self) -> socket.socket:
        """The open connection (generate() connects before any I/O on it)."""
        if self._sock is None:
            raise _Lost("not connected")
        return self._sock

    def validate(self) -> None:
        self._stop = threading.Event()
        self._sock = None
        self.counters = dict.fromkeys(
            (
                "connects",
                "reconnects",
                "connect_failures",
                "disconnects",
                "stalls",
                "truncated",
                "headers",
                "bad_sync",
                "bad_size",
                "bad_format",
                "data_frames",
                "frames",
                "cal_frames",
                "lost",
                "restarts",
                "skipped_samples",
            ),
            0,
        )
        self.dropped = dict.fromkeys(("dummy", "cal", "ramp", "trigw", "unlocked", "overdrive", "duplicate"), 0)
        self._tracker = IndexTracker()
        self._seq = SeqMapper()
        self._malformed_since_good = 0
        self._last_error = ""
        self._arrays: dict = {}
        self._truth = truth_meta(self.truth)

    # -- life cycle ---------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`generate` to return (thread-safe; takes effect within ``poll_s``)."""
        self._stop.set()

    def close(self) -> None:
        self._close_socket(polite=True)
        c = self.all_counters()
        bad = c["lost"] + c["bad_sync"] + c["bad_size"] + c["bad_format"] + c["disconnects"] + c["invalid"]
        if c["headers"] or bad:
            log.log(
                logging.WARNING if bad else logging.INFO,
                "krakensdr %r (%s:%d): %d frames from %d valid CPIs; dropped %s; lost %d; bad headers: "
                "sync %d, size %d, format %d; disconnects %d, reconnects %d",
                self.name,
                self.host,
                self.port,
                c["frames"],
                c["data_frames"],
                {k: v for k, v in self.dropped.items() if v} or "none",
                c["lost"],
                c["bad_sync"],
                c["bad_size"],
                c["bad_format"],
                c["disconnects"],
                c["reconnects"],
            )

    def all_counters(self) -> dict:
        """Every counter in one flat dict (dropped reasons as ``dropped_<reason>``)."""
        out = dict(self.counters)
        out.update({f"dropped_{k}": v for k, v in self.dropped.items()})
        out["invalid"] = sum(self.dropped.values())
        return out

    # -- socket -------------------------------------------------------------------
    def _where(self) -> str:
        return f"krakensdr {self.name!r} ({self.host}:{self.port})"

    def _close_socket(self, polite: bool = False) -> None:
        if self._sock is None:
            return
        if polite:
            try:
                self._sock.sendall(b"q")  # the Kraken client's exit message
            except OSError:
                pass
        try:
            self._sock.close()
        except OSError:
            pass
        self._sock = None

    def _device_stopped(self) -> bool:
        c = self.counters
        detail = (
            f"{c['connects']} connection(s) made, {c['connect_failures']} failed attempt(s)"
            + (f" (last: {self._last_error})" if self._last_error else "")
            + f", {c['stalls']} stall(s)"
        )
        msg = (
            f"{self._where()}: nothing received for {self.timeout_s:g} s ({detail}); the device "
            f"stopped or is unreachable -- ending the run"
        )
        if self.on_timeout == "fail":
            raise DeviceStopped(msg)
        log.warning(msg)
        return False

    def _connect(self):
        """Open the connection and send ``streaming``; False (or DeviceStopped) after timeout_s."""
        backoff = Backoff(0.05, 2.0)
        while True:
            if self._stop.is_set():
                raise _Stopped
            if time.monotonic() - self._last_rx > self.timeout_s:
                return self._device_stopped()
            try:
                sock = socket.create_connection((self.host, self.port), timeout=min(1.0, self.timeout_s))
                sock.settimeout(self.poll_s)
                sock.sendall(b"streaming")
            except OSError as exc:
                self.counters["connect_failures"] += 1
                self._last_error = str(exc)
                yield from idle_until(time.monotonic() + backoff.next())
                continue
            self._sock = sock
            self._connected_at = time.monotonic()
            self.counters["connects"] += 1
            if self.counters["connects"] > 1:
                self.counters["reconnects"] += 1
                log.info("%s: reconnected", self._where())
            return True

    def _recv_exact(self, n: int):
        """Receive exactly n bytes (yielding None while waiting); raises _Lost / _Stopped."""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            if self._stop.is_set():
                raise _Stopped
            try:
                k = self._conn().recv_into(view[got:], min(n - got, 1 << 22))
            except TimeoutError:
                if time.monotonic() - max(self._last_rx, self._connected_at) > self.stall_s:
                    self.counters["stalls"] += 1
                    raise _Lost(f"no data for {self.stall_s:g} s") from None
                yield None
                continue
            except OSError as exc:
                raise _Lost(str(exc)) from None
            if k == 0:
                raise _Lost("connection closed by the device")
            got += k
            self._last_rx = time.monotonic()
        return buf

    # -- streaming ----------------------------------------------------------------
    def _bad_header(self, exc: HeaderError) -> None:
        self.counters[exc.kind] += 1
        n = self.counters["bad_sync"] + self.counters["bad_size"] + self.counters["bad_format"]
        if n <= _LOG_FIRST:
            log.warning("%s: dropped a frame with a bad header (%s): %s", self._where(), exc.kind, exc)

    def generate(self) -> Iterator:
        self._last_rx = self._connected_at = time.monotonic()
        max_payload = int(self.max_frame_mb * (1 << 20))
        try:
            while True:
                if self._sock is None:
                    if not (yield from self._connect()):
                        return
                hdr = None
                try:
                    raw = yield from self._recv_exact(HEADER_SIZE)
                    try:
                        hdr = parse_header(raw, max_payload)
                    except HeaderError as exc:
                        self._bad_header(exc)
                        if exc.header is None:  # no trustworthy frame boundary: resync
                            self._malformed_since_good += 1
                            self._close_socket()
                            continue
                        hdr = exc.header
                        self._track(hdr)
                        yield from self._recv_exact(hdr.payload_bytes)  # skip the payload
                        self._conn().sendall(b"IQDownload")
                        continue
                    status = self._track(hdr)
                    payload = (yield from self._recv_exact(hdr.payload_bytes)) if hdr.payload_bytes else b""
                except _Lost as exc:
                    self.counters["disconnects"] += 1
                    if hdr is not None:
                        self.counters["truncated"] += 1
                    log.warning("%s: connection lost (%s); reconnecting", self._where(), exc)
                    self._close_socket()
                    continue
                done = False
                for item in self._frames(hdr, payload, status):
                    yield item
                    if self.frames and self.counters["frames"] >= self.frames:
                        done = True
                        break
                if done:
                    return
                try:
                    self._conn().sendall(b"IQDownload")
                except OSError as exc:
                    self.counters["disconnects"] += 1
                    log.warning("%s: connection lost (%s); reconnecting", self._where(), exc)
                    self._close_socket()
        except _Stopped:
            return

    def _track(self, hdr: IQHeader) -> str:
        self.counters["headers"] += 1
        status, lost = self._tracker.update(hdr.cpi_index, self._malformed_since_good)
        self._malformed_since_good = 0
        if lost:
            self.counters["lost"] += lost
            log.info("%s: %d frame(s) lost before cpi_index %d", self._where(), lost, hdr.cpi_index)
        if status in ("first", "restart"):
            self._seq.anchor(self._tracker.unwrapped)
        if status == "restart":
            self.counters["restarts"] += 1
            log.warning(
                "%s: cpi_index went back (or jumped far ahead) to %d: the DAQ restarted", self._where(), hdr.cpi_index
            )
        return status

    def _selected(self, hdr: IQHeader) -> list:
        if self.channels is None:
            return list(range(hdr.active_ant_chs))
        if max(self.channels) >= hdr.active_ant_chs:
            raise ValueError(
                f"block {self.name!r}, parameter 'channels': {self.channels} names a channel "
                f"the device does not send (it sends {hdr.active_ant_chs}: 0..{hdr.active_ant_chs - 1})"
            )
        return list(self.channels)

    def _describe(self, n: int, hdr: IQHeader) -> dict:
        carrier = self.carrier_hz or float(hdr.rf_center_freq)
        key = (n, carrier)
        if key not in self._arrays:
            if not carrier > 0:
                raise ValueError(f"block {self.name!r}: the header's rf_center_freq is 0; set parameter 'carrier_hz'")
            self._arrays[key] = make_array(n, carrier, self.spacing_m).describe()
        return dict(self._arrays[key])

    def _device_meta(self, hdr: IQHeader, chans: list) -> dict:
        return {
            "type": "krakensdr",
            "address": f"{self.host}:{self.port}",
            "channels": chans,
            "frame_type": FRAME_TYPES[hdr.frame_type],
            "cpi_index": hdr.cpi_index,
            "daq_block_index": hdr.daq_block_index,
            "time_stamp_ms": hdr.time_stamp,
            "rf_center_freq_hz": hdr.rf_center_freq,
            "adc_sampling_freq_hz": hdr.adc_sampling_freq,
            "cpi_length": hdr.cpi_length,
            "if_gains_db": [hdr.if_gains[c] / 10.0 for c in chans],
            "adc_overdrive": [bool((hdr.adc_overdrive_flags >> c) & 1) for c in chans],
            "delay_sync": bool(hdr.delay_sync_flag),
            "iq_sync": bool(hdr.iq_sync_flag),
            "sync_state": hdr.sync_state,
            "noise_source": bool(hdr.noise_source_state),
            "hardware_id": hdr.hardware_id,
            "unit_id": hdr.unit_id,
            "header_version": hdr.header_version,
        }

    def _frames(self, hdr: IQHeader, payload, status: str):
        if status == "duplicate":
            self.dropped["duplicate"] += 1
            return
        chans = self._selected(hdr)
        reason = frame_problem(hdr, chans, self.require_sync, self.drop_overdrive)
        fs = float(hdr.sampling_freq) or None
        t_first = hdr.time_stamp / 1000.0
        L = hdr.cpi_length
        if hdr.frame_type == FRAME_CAL and self.emit_cal:
            tc = min(L, self.cal_snapshots or self.snapshots)
            Y = np.frombuffer(payload, dtype="<c8").reshape(hdr.active_ant_chs, L)
            meta = {
                "array": self._describe(len(chans), hdr),
                "sample_rate_hz": fs,
                "device": self._device_meta(hdr, chans),
                "calibration": {"kind": "noise_source", "device": "krakensdr"},
            }
            frame = Frame(
                seq=self.counters["cal_frames"],
                t0=t_first,
                arrays={"snapshots": np.ascontiguousarray(Y[chans, :tc])},
                meta=meta,
            )
            self.counters["cal_frames"] += 1
            yield {"cal": frame}
        if reason is not None:
            self.dropped[reason] += 1
            if self.dropped[reason] == 1:
                log.info("%s: dropping %s frames (first at cpi_index %d)", self._where(), reason, hdr.cpi_index)
            return
        T = self.snapshots
        if L < T:
            raise ValueError(
                f"block {self.name!r}, parameter 'snapshots': {T} exceeds the device's CPI "
                f"length {L}; set snapshots <= {L}"
            )
        self.counters["data_frames"] += 1
        self.counters["skipped_samples"] += L % T
        Y = np.frombuffer(payload, dtype="<c8").reshape(hdr.active_ant_chs, L)[chans]
        describe = self._describe(len(chans), hdr)
        dev = self._device_meta(hdr, chans)
        dev["counters"] = self.all_counters()
        for k, snap in cut_frames(Y, T):
            meta = {"array": dict(describe), "sample_rate_hz": fs, "device": dict(dev, sample_offset=k * T)}
            if self._truth is not None:
                meta["truth"] = {"targets": [dict(t) for t in self._truth["targets"]]}
            seq = self._seq.seq(self._tracker.unwrapped, L // T, k)
            t0 = t_first + (k * T / fs if fs else 0.0)
            self.counters["frames"] += 1
            yield Frame(seq=int(seq), t0=float(t0), arrays={"snapshots": snap}, meta=meta)
            if self.frames and self.counters["frames"] >= self.frames:
                return
