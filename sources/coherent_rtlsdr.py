"""Live source: coherent-rtlsdr (up to 21 phase-locked RTL-SDRs + a reference noise receiver), ZeroMQ.

Where each rule comes from (public sources, repository ``mlaaks/coherent-rtlsdr``)
-------------------------------------------------------------------------------
* Packet layout: ``include/cpacketize.h`` / ``include/cpacketizer.h`` (``struct hdr0 {uint32
  globalseqn, N, L, unused}``; packet length ``(16 + 4 N) + 2 N L`` bytes) and
  ``src/cpacketizer.cc`` (``send()`` fills ``globalseqn++``, ``N`` = receivers, ``L =
  blocksize >> 1`` = complex samples per channel, ``unused = 0``; ``write()`` puts channel
  n's read counter at uint32 index ``4 + n`` and its ``blocksize`` bytes of int8 I/Q pairs at
  byte ``16 + 4 N + n * blocksize``); one ZeroMQ PUB message per packet, no topic.
* Channel 0 is the reference noise receiver: ``src/ccoherent.cc`` writes the reference device
  as channel 0 and the signal receivers as 1..N-1 (phase-corrected against the reference when
  the noise source is on); ``matlabclient/seqnum_and_correlation.m`` calls channel 0 "the
  reference noise ch".
* Scaling and order: ``matlabclient/zmqsdr.cc`` reads globalseqn, N, L, the N counters, then
  int8 (I, Q) pairs scaled by 1/128 into an L x N matrix (channel-major); default ports
  5555 (data) and 5556 (control), ``matlabclient/CZMQSDR.m``.
* Coherence: ``README.md`` -- "may return a receive matrix where data on some channels are
  from a previous sample buffer ... noticed by observing discontinuous channel sequence
  number (readcnt)"; each receiver's ``readcnt`` counts the buffers it has read
  (``src/crtlsdr.cc``, ``swapbuffer``), all receivers starting together.
  **Assumption** (the repository states no rule): a packet is coherent when every channel's
  read counter equals the reference channel's; otherwise it is dropped as ``incoherent``
  (the channels that disagree are logged).

Byte layout (little-endian: the sender writes native uint32 on x86-64 / ARM Linux)
---------------------------------------------------------------------------------
======================  ==========  ======================================================
bytes                   type        field -> what it becomes
======================  ==========  ======================================================
0-3                     uint32      globalseqn -> gaps counted ``lost``; frame ``seq`` =
                                    globalseqn * (L // T) + k; going back = ``restarts``
4-7                     uint32      N, channels incl. the reference (1..``max_channels``)
8-11                    uint32      L, complex samples per channel (>= 1)
12-15                   uint32      unused (0)
16 .. 16+4N             uint32[N]   readcnt per channel -> coherence test; ``meta.device.readcnt``
16+4N ..                int8[N,L,2] I, Q per sample, channel-major -> (x / 128) complex64
======================  ==========  ======================================================

A message whose length is not ``16 + 4 N + 2 N L`` for its own N and L, or shorter than 16
bytes, or with N outside 1..``max_channels`` is counted ``bad_size`` and dropped (the stream
has one packet per message, so the next one is unaffected); it stands for one packet, so it is
not counted again as ``lost`` when the next good packet's globalseqn jumps over it.  ZeroMQ's ``MAXMSGSIZE`` bounds
memory: a larger message makes libzmq drop the connection, which then reconnects by itself
(counted by the socket monitor as ``disconnects``/``reconnects``).  The carrier, sample rate
and geometry are not in the packet: ``carrier_hz`` is required, ``sample_rate_hz`` and
``spacing_m`` are parameters.

Calibration hook (output port ``cal``)
--------------------------------------
Every ``cal_every``-th coherent packet also goes out on port ``cal`` (0 = never): arrays
``snapshots`` (N, Tc), the array channels, and ``reference`` (1, Tc), the reference noise
receiver's samples over the same interval (Tc = ``cal_snapshots`` or ``snapshots``), with
``meta.calibration = {"kind": "reference_channel", "device": "coherent_rtlsdr",
"reference_channel": c}``.  When the noise source is switched on, each channel's complex gain
relative to the reference is ``<y_n, r> / <r, r>``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from nearfield.contract import ARRAY, SAMPLE_RATE, SNAPSHOTS, TRUTH

from ..block import Param, ParamError, Source, positive
from ..frame import Frame
from .sdr_common import (
    DeviceStopped,
    IndexTracker,
    SeqMapper,
    check_channels,
    check_truth,
    cut_frames,
    make_array,
    truth_meta,
)
from .zmq_source import check_zmq_endpoint

__all__ = [
    "HEADER_BYTES",
    "CoherentRtlSdrSource",
    "DeviceStopped",
    "PacketError",
    "incoherent_channels",
    "parse_packet",
]

log = logging.getLogger(__name__)

#: ``sizeof(hdr0)``.
HEADER_BYTES = 16
_SCALE = np.float32(1.0 / 128.0)
_LOG_FIRST = 10


class PacketError(ValueError):
    """A message that is not a coherent-rtlsdr packet (counted ``bad_size``)."""


def parse_packet(buf, max_channels: int = 64):
    """Split one packet into ``(globalseqn, readcnt (N,) uint32, iq (N, L, 2) int8 view)``.

    Raises :class:`PacketError` naming what is wrong (too short, N out of range, length that
    disagrees with N and L).
    """
    n_bytes = len(buf)
    if n_bytes < HEADER_BYTES:
        raise PacketError(f"{n_bytes} bytes: shorter than the {HEADER_BYTES}-byte header")
    head = np.frombuffer(buf, dtype="<u4", count=4)
    seqn, n, L = int(head[0]), int(head[1]), int(head[2])
    if not 1 <= n <= max_channels:
        raise PacketError(f"N = {n} channels, expected 1..{max_channels} (max_channels)")
    if L < 1:
        raise PacketError("L = 0 samples per channel")
    want = HEADER_BYTES + 4 * n + 2 * n * L
    if n_bytes != want:
        raise PacketError(f"{n_bytes} bytes, but N = {n} and L = {L} make {want} (16 + 4 N + 2 N L)")
    readcnt = np.frombuffer(buf, dtype="<u4", count=n, offset=HEADER_BYTES)
    iq = np.frombuffer(buf, dtype=np.int8, offset=HEADER_BYTES + 4 * n).reshape(n, L, 2)
    return seqn, readcnt, iq


def incoherent_channels(readcnt: np.ndarray, reference: int | None = 0) -> list:
    """Channels whose read counter differs from the reference channel's (or from the most
    common value when there is no reference channel); empty = coherent."""
    readcnt = np.asarray(readcnt)
    if reference is None:
        vals, counts = np.unique(readcnt, return_counts=True)
        ref = vals[np.argmax(counts)]
    else:
        ref = readcnt[reference]
    return [int(c) for c in np.flatnonzero(readcnt != ref)]


def _to_complex(iq: np.ndarray) -> np.ndarray:
    """(C, L, 2) int8 -> (C, L) complex64, scaled by 1/128 as the reference client does."""
    out = np.empty(iq.shape[:2], np.complex64)
    out.real = iq[..., 0]
    out.imag = iq[..., 1]
    out *= _SCALE
    return out


class CoherentRtlSdrSource(Source):
    """Live coherent-rtlsdr packets (ZeroMQ PUB, int8 IQ, channel 0 = reference noise receiver)."""

    outputs = ("out", "cal")
    adds = (ARRAY, SNAPSHOTS, TRUTH, SAMPLE_RATE)  # frame contract (nearfield.contract)
    params = (
        Param(
            "address",
            str,
            "tcp://127.0.0.1:5555",
            "endpoint coherent-rtlsdr's PUB socket binds (this source connects)",
            check=check_zmq_endpoint,
        ),
        Param("carrier_hz", float, doc="tuned centre frequency, Hz (not in the packet)", check=positive),
        Param(
            "sample_rate_hz",
            (float, type(None)),
            None,
            "sample rate, Hz: t0 = sample index / rate (null: t0 = arrival time)",
            check=positive,
        ),
        Param(
            "snapshots",
            int,
            1024,
            "T: snapshots per frame (each packet gives L // T frames)",
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
            "packet channels in array order, element 0 first (null = every channel but the reference)",
            check=check_channels,
        ),
        Param(
            "reference_channel",
            (int, type(None)),
            0,
            "the reference noise receiver's channel (null = none: coherence by the majority read counter)",
            check=lambda v: None if v is None or v >= 0 else "null or an integer >= 0",
        ),
        Param(
            "spacing_m", (float, type(None)), None, "element spacing d, m (null = half a wavelength)", check=positive
        ),
        Param(
            "cal_every",
            int,
            0,
            "every k-th coherent packet also goes to port 'cal' with the reference channel (0 = never)",
            check=lambda v: None if v >= 0 else "an integer >= 0",
        ),
        Param(
            "cal_snapshots", (int, type(None)), None, "snapshots per frame on 'cal' (null = snapshots)", check=positive
        ),
        Param("timeout_s", float, 30.0, "end the run after this long without a packet, s", check=positive),
        Param(
            "on_timeout",
            str,
            "fail",
            "when the device stops: fail (exit status 1) or end (status 0)",
            choices=("fail", "end"),
        ),
        Param("max_channels", int, 64, "largest N accepted", check=lambda v: None if 2 <= v <= 4096 else "2..4096"),
        Param("max_packet_mb", float, 64.0, "largest message accepted (ZeroMQ MAXMSGSIZE), MiB", check=positive),
        Param("hwm", int, 100, "receive high-water mark, packets", check=positive),
        Param(
            "truth",
            (list, type(None)),
            None,
            "known targets [{theta: rad, range: m}] to attach as meta truth (emulated or surveyed scenes)",
            check=check_truth,
        ),
    )

    poll_s = 0.05
    idle_none = True

    # None from validate() until start()
    _ctx: zmq.Context | None
    _sock: zmq.Socket | None
    _mon: zmq.Socket | None  # the SUB socket's connect/disconnect monitor

    def validate(self) -> None:
        if self.channels is not None and self.reference_channel in self.channels:
            raise self.param_error(
                "channels", f"{self.channels} includes the reference channel {self.reference_channel}"
            )
        self._stop = threading.Event()
        self._ctx = self._sock = self._mon = None
        self.counters = dict.fromkeys(
            (
                "packets",
                "bad_size",
                "incoherent",
                "duplicates",
                "lost",
                "restarts",
                "packets_valid",
                "frames",
                "cal_frames",
                "skipped_samples",
                "connects",
                "disconnects",
                "reconnects",
            ),
            0,
        )
        self.stale_channels: dict[int, int] = {}
        self._tracker = IndexTracker()
        self._seq = SeqMapper()
        self._malformed_since_good = 0
        self._arrays: dict = {}
        self._truth = truth_meta(self.truth)

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, int(self.max_packet_mb * (1 << 20)))
        sock.setsockopt(zmq.RECONNECT_IVL, 100)  # reconnect back-off: 0.1 s doubling to 2 s
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._mon = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        try:
            sock.connect(self.address)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise ParamError(
                f"block {self.name!r}, parameter 'address': cannot connect to {self.address!r}: {exc}"
            ) from None
        self._sock = sock

    def stop(self) -> None:
        """Ask :meth:`generate` to return (thread-safe; takes effect within ``poll_s``)."""
        self._stop.set()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._sock.close(0)
            self._sock = None
        if self._mon is not None:
            self._mon.close(0)
            self._mon = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        c = self.all_counters()
        bad = c["lost"] + c["bad_size"] + c["incoherent"] + c["duplicates"] + c["disconnects"]
        if c["packets"] or bad:
            log.log(
                logging.WARNING if bad else logging.INFO,
                "coherent_rtlsdr %r (%s): %d frames from %d coherent packets of %d; incoherent %d "
                "(stale channels %s), lost %d, bad size %d, duplicates %d, restarts %d, disconnects %d",
                self.name,
                self.address,
                c["frames"],
                c["packets_valid"],
                c["packets"],
                c["incoherent"],
                self.stale_channels or "none",
                c["lost"],
                c["bad_size"],
                c["duplicates"],
                c["restarts"],
                c["disconnects"],
            )

    def all_counters(self) -> dict:
        """Every counter in one flat dict (``invalid`` = incoherent + bad_size + duplicates)."""
        out = dict(self.counters)
        out["invalid"] = out["incoherent"] + out["bad_size"] + out["duplicates"]
        return out

    # -- streaming ----------------------------------------------------------------
    def _device_stopped(self) -> None:
        msg = (
            f"coherent_rtlsdr {self.name!r} ({self.address}): no packet for {self.timeout_s:g} s "
            f"({self.counters['packets']} received, {self.counters['connects']} connection(s) made); the "
            f"device stopped or is unreachable -- ending the run"
        )
        if self.on_timeout == "fail":
            raise DeviceStopped(msg)
        log.warning(msg)

    def _monitor(self, mon: zmq.Socket) -> None:
        while mon.poll(0):
            ev = recv_monitor_message(mon)["event"]
            if ev == zmq.EVENT_CONNECTED:
                self.counters["connects"] += 1
                if self.counters["connects"] > 1:
                    self.counters["reconnects"] += 1
                    log.info("coherent_rtlsdr %r: reconnected to %s", self.name, self.address)
            elif ev == zmq.EVENT_DISCONNECTED:
                self.counters["disconnects"] += 1
                log.warning("coherent_rtlsdr %r: disconnected from %s; reconnecting", self.name, self.address)

    def generate(self) -> Iterator:
        if self._sock is None:
            self.start()
        sock, mon = self._sock, self._mon
        if sock is None or mon is None:
            raise RuntimeError(f"coherent_rtlsdr {self.name!r}: no socket after start()")
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(mon, zmq.POLLIN)
        last = time.monotonic()
        while not self._stop.is_set():
            left = self.timeout_s - (time.monotonic() - last)
            if left <= 0:
                self._device_stopped()
                return
            events = dict(poller.poll(max(1, int(min(self.poll_s, left) * 1000))))
            if mon in events:
                self._monitor(mon)
            if sock not in events:
                yield None
                continue
            msg = sock.recv(copy=False)
            last = time.monotonic()
            arrival = time.time()
            self.counters["packets"] += 1
            try:
                seqn, readcnt, iq = parse_packet(msg.buffer, self.max_channels)
            except PacketError as exc:
                self.counters["bad_size"] += 1
                self._malformed_since_good += 1
                if self.counters["bad_size"] <= _LOG_FIRST:
                    log.warning("coherent_rtlsdr %r: dropped a message from %s: %s", self.name, self.address, exc)
                continue
            for item in self._frames(seqn, readcnt, iq, arrival):
                yield item
                if self.frames and self.counters["frames"] >= self.frames:
                    return

    def _frames(self, seqn: int, readcnt: np.ndarray, iq: np.ndarray, arrival: float):
        status, lost = self._tracker.update(seqn, self._malformed_since_good)
        self._malformed_since_good = 0
        if status == "duplicate":
            self.counters["duplicates"] += 1
            return
        if status in ("first", "restart"):
            self._seq.anchor(self._tracker.unwrapped)
        if status == "restart":
            self.counters["restarts"] += 1
            log.warning(
                "coherent_rtlsdr %r: globalseqn went back (or jumped far ahead) to %d: the sender restarted",
                self.name,
                seqn,
            )
        if lost:
            self.counters["lost"] += lost
            log.info("coherent_rtlsdr %r: %d packet(s) lost before globalseqn %d", self.name, lost, seqn)
        n, L = iq.shape[:2]
        ref = self.reference_channel
        if ref is not None and ref >= n:
            raise ValueError(
                f"block {self.name!r}, parameter 'reference_channel': {ref}, but the packets carry "
                f"{n} channels (0..{n - 1})"
            )
        chans = self.channels if self.channels is not None else [c for c in range(n) if c != ref]
        if max(chans) >= n or len(chans) < 2:
            raise ValueError(
                f"block {self.name!r}, parameter 'channels': {chans} does not fit packets of {n} "
                f"channels (0..{n - 1}, reference {ref}); at least 2 array channels are needed"
            )
        stale = incoherent_channels(readcnt, ref)
        if stale:
            self.counters["incoherent"] += 1
            for c in stale:
                self.stale_channels[c] = self.stale_channels.get(c, 0) + 1
            if self.counters["incoherent"] <= _LOG_FIRST:
                log.warning(
                    "coherent_rtlsdr %r: packet %d dropped as incoherent: read counters %s of channel(s) "
                    "%s disagree with %s",
                    self.name,
                    seqn,
                    [int(readcnt[c]) for c in stale],
                    stale,
                    f"the reference channel's {int(readcnt[ref])}" if ref is not None else "the majority",
                )
            return
        T = self.snapshots
        if L < T:
            raise ValueError(
                f"block {self.name!r}, parameter 'snapshots': {T} exceeds the packet length L = {L} "
                f"samples per channel; set snapshots <= {L}"
            )
        self.counters["packets_valid"] += 1
        self.counters["skipped_samples"] += L % T
        key = len(chans)
        if key not in self._arrays:
            self._arrays[key] = make_array(len(chans), self.carrier_hz, self.spacing_m).describe()
        describe = self._arrays[key]
        fs = self.sample_rate_hz
        unwrapped = self._tracker.unwrapped
        dev = {
            "type": "coherent_rtlsdr",
            "address": self.address,
            "channels": list(chans),
            "reference_channel": ref,
            "globalseqn": seqn,
            "samples_per_channel": L,
            "n_channels": n,
            "readcnt": [int(readcnt[c]) for c in chans],
            "reference_readcnt": None if ref is None else int(readcnt[ref]),
            "counters": self.all_counters(),
        }
        Y = _to_complex(iq[chans])
        if self.cal_every and self.counters["packets_valid"] % self.cal_every == 0 and ref is not None:
            tc = min(L, self.cal_snapshots or T)
            meta = {
                "array": dict(describe),
                "sample_rate_hz": fs,
                "device": dict(dev),
                "calibration": {"kind": "reference_channel", "device": "coherent_rtlsdr", "reference_channel": ref},
            }
            cal = Frame(
                seq=self.counters["cal_frames"],
                t0=float(unwrapped * L / fs if fs else arrival),
                arrays={"snapshots": np.ascontiguousarray(Y[:, :tc]), "reference": _to_complex(iq[ref : ref + 1, :tc])},
                meta=meta,
            )
            self.counters["cal_frames"] += 1
            yield {"cal": cal}
        for k, snap in cut_frames(Y, T):
            meta = {"array": dict(describe), "sample_rate_hz": fs, "device": dict(dev, sample_offset=k * T)}
            if self._truth is not None:
                meta["truth"] = {"targets": [dict(t) for t in self._truth["targets"]]}
            t0 = (unwrapped * L + k * T) / fs if fs else arrival
            self.counters["frames"] += 1
            yield Frame(
                seq=int(self._seq.seq(unwrapped, L // T, k)), t0=float(t0), arrays={"snapshots": snap}, meta=meta
            )
            if self.frames and self.counters["frames"] >= self.frames:
                return
