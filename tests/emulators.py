"""Test emulators of two coherent SDR arrays, written from the public protocol sources.

* :class:`KrakenEmulator` -- the Heimdall DAQ firmware's IQ server (krakenrf/heimdall_daq_fw:
  ``eth_server.h``, ``iq_server.c``): a TCP server that waits for ``streaming``, sends one
  frame, then one frame per ``IQDownload``; each frame is the 1024-byte header of
  ``iq_header.h`` packed the way ``iq_header.py`` packs it (``struct`` native order and
  alignment -- independent of the source's explicit little-endian layout), followed by
  ``active_ant_chs x cpi_length`` complex64, channel-major.
* :class:`RtlEmulator` -- coherent-rtlsdr's packetizer (mlaaks/coherent-rtlsdr:
  ``cpacketize.h``, ``src/cpacketizer.cc``, ``src/ccoherent.cc``): a ZeroMQ PUB (here XPUB,
  wire-compatible, so it can wait for the subscriber) sending ``[globalseqn, N, L, 0]`` uint32,
  N uint32 read counters, then N blocks of L int8 IQ pairs; channel 0 is the reference noise
  receiver.

Both synthesize a known two-target near-field scene with :mod:`nearfield.scenario` on a ULA
and play a *schedule*: a list of events, one per device frame, that injects the faults the
sources must count.  Everything is bound to 127.0.0.1 and every loop is bounded.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import zmq

from nearfield.array import ULA
from nearfield.scenario import (
    complex_noise,
    make_pilots,
    noise_variance,
    noiseless_signal,
)

KRAKEN_SYNC = 0x2BF7B95A
_FT = {"data": 0, "dummy": 1, "ramp": 2, "cal": 3, "trigw": 4}


def kraken_header(**f) -> bytes:
    """Pack an IQ header as iq_header.py's ``encode_header`` does (native struct, 1024 bytes)."""
    hw = f.get("hardware_id", "K-EMU").encode()
    out = struct.pack("II", f.get("sync_word", KRAKEN_SYNC), f.get("frame_type", 0))
    out += hw + bytearray(16 - len(hw))
    out += struct.pack(
        "IIIQQQIQIIQIII",
        f.get("unit_id", 7),
        f["active_ant_chs"],
        0,
        f["rf_center_freq"],
        f["adc_sampling_freq"],
        f["sampling_freq"],
        f["cpi_length"],
        f["time_stamp"],
        f.get("daq_block_index", 0),
        f["cpi_index"],
        0,
        f.get("data_type", 3),
        f.get("sample_bit_depth", 32),
        f.get("adc_overdrive_flags", 0),
    )
    gains = list(f.get("if_gains", [0] * 32)) + [0] * 32
    out += struct.pack("32I", *gains[:32])
    out += struct.pack(
        "IIII",
        f.get("delay_sync_flag", 1),
        f.get("iq_sync_flag", 1),
        f.get("sync_state", 6),
        f.get("noise_source_state", 0),
    )
    out += bytes(4 * 192) + struct.pack("I", f.get("header_version", 7))
    assert len(out) == 1024, len(out)
    return out


class Scene:
    """A two-target scene on a ULA: ``sample(rng, T)`` gives (N, T) complex128 snapshots."""

    def __init__(self, array: ULA, theta, r, snr_db: float, gains=(1.0, 0.8 * (0.4536 + 0.8912j))):
        self.array = array
        self.theta = np.asarray(theta, float)
        self.r = np.asarray(r, float)
        self.gains = np.asarray(gains)
        self.snr_db = snr_db

    def sample(self, rng: np.random.Generator, T: int) -> np.ndarray:
        S = make_pilots(len(self.theta), T, rng)
        x = noiseless_signal(self.array, self.theta, self.r, self.gains, S)
        return x + complex_noise(x.shape, noise_variance(x, self.snr_db), rng)

    def truth(self) -> list:
        return [{"theta": float(t), "range": float(r)} for t, r in sorted(zip(self.theta, self.r, strict=True))]


class KrakenEmulator(threading.Thread):
    """Heimdall IQ server on 127.0.0.1 playing ``schedule``, then closing (the device stops).

    Events: ``"data"``; ``"cal"`` (noise source: common noise times ``cal_gains``);
    ``"dummy"`` (no payload); ``"unlocked"`` (DATA, sync flags 0, random channel phases);
    ``"bad_sync"`` / ``"bad_size"`` (a corrupt header then a payload; the client must drop
    the connection); ``"drop"`` (header and half the payload, then the connection closes);
    ``("lost", n)`` (the DAQ produces n frames no client receives).  Every event but
    ``lost`` answers one request.  ``served`` logs what was sent.
    """

    def __init__(
        self,
        scene: Scene,
        schedule,
        *,
        cpi_length: int = 2048,
        fs: float = 1.024e6,
        seed: int = 0,
        n_channels: int | None = None,
        cal_gains=None,
        gap_s: float = 0.0,
        port: int = 0,
        delay_s: float = 0.0,
    ):
        super().__init__(daemon=True)
        self.scene = scene
        self.schedule = list(schedule)
        self.L = cpi_length
        self.fs = fs
        self.rng = np.random.default_rng(seed)
        self.m = n_channels or scene.array.n_antennas
        self.cal_gains = np.ones(self.m) if cal_gains is None else np.asarray(cal_gains)
        self.gap_s = gap_s
        self.delay_s = delay_s  # the DAQ's time to produce each frame
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(2)
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self.served: list = []
        self.requests = 0
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    # header fields shared by every frame
    def _fields(self, idx: int, **kw) -> dict:
        f = dict(
            active_ant_chs=self.m,
            rf_center_freq=int(round(self.scene.array.carrier_hz)),
            adc_sampling_freq=int(self.fs),
            sampling_freq=int(self.fs),
            cpi_length=self.L,
            time_stamp=1_700_000_000_000 + idx * round(1000 * self.L / self.fs),
            cpi_index=idx,
            daq_block_index=idx,
            if_gains=[280 + c for c in range(self.m)],
        )
        f.update(kw)
        return f

    def _payload(self, kind: str) -> bytes:
        m, L = self.m, self.L
        if kind == "cal":
            z = (self.rng.standard_normal(L) + 1j * self.rng.standard_normal(L)) / np.sqrt(2)
            Y = self.cal_gains[:, None] * z[None, :] + 0.01 * complex_noise((m, L), 1.0, self.rng)
        else:
            Y = np.zeros((m, L), complex)
            Y[: self.scene.array.n_antennas] = self.scene.sample(self.rng, L)
            if kind == "unlocked":
                Y *= np.exp(2j * np.pi * self.rng.random(m))[:, None]
        return np.ascontiguousarray(Y, dtype="<c8").tobytes()

    def _frame(self, ev: str, idx: int) -> bytes:
        if ev == "dummy":
            return kraken_header(**self._fields(idx, frame_type=1, cpi_length=0, data_type=0))
        if ev == "cal":
            return kraken_header(**self._fields(idx, frame_type=3, noise_source_state=1)) + self._payload("cal")
        if ev == "unlocked":
            hdr = kraken_header(**self._fields(idx, delay_sync_flag=0, iq_sync_flag=0, sync_state=2))
            return hdr + self._payload("unlocked")
        if ev == "bad_sync":
            return kraken_header(**self._fields(idx, sync_word=0xDEADBEEF)) + self._payload("data")
        if ev == "bad_size":
            return kraken_header(**self._fields(idx, active_ant_chs=4000)) + self._payload("data")
        return kraken_header(**self._fields(idx)) + self._payload("data")  # data, drop

    def _recv_cmd(self, conn) -> bytes:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not self.stop_flag.is_set():
            try:
                return conn.recv(1024)
            except TimeoutError:
                continue
            except OSError:  # reset by the client
                return b""
        return b""

    def run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc
        finally:
            self.srv.close()

    def _serve(self) -> None:
        idx, pos = 0, 0
        deadline = time.monotonic() + 60.0
        while pos < len(self.schedule) and not self.stop_flag.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.1)
            with conn:
                if self._recv_cmd(conn) != b"streaming":
                    continue
                first = True
                while pos < len(self.schedule):
                    ev = self.schedule[pos]
                    if isinstance(ev, tuple) and ev[0] == "lost":
                        idx += ev[1]
                        pos += 1
                        continue
                    if not first:
                        cmd = self._recv_cmd(conn)
                        if cmd != b"IQDownload":
                            break  # client gone: accept the next one
                        self.requests += 1
                    first = False
                    data = self._frame(ev, idx)
                    time.sleep(self.delay_s)
                    pos += 1
                    idx += 1
                    self.served.append(ev)
                    if ev == "drop":
                        try:
                            conn.sendall(data[: 1024 + (len(data) - 1024) // 2])
                        except OSError:
                            pass
                        if self.gap_s:
                            time.sleep(self.gap_s)
                        break
                    try:
                        conn.sendall(data)
                    except OSError:
                        break
                    if ev in ("bad_sync", "bad_size"):
                        self._recv_cmd(conn)  # the client hangs up; wait for it
                        break


class RtlEmulator(threading.Thread):
    """coherent-rtlsdr packetizer on 127.0.0.1 playing ``schedule``, then closing.

    Channel 0 is the reference noise receiver; channels 1..N-1 see the scene.  Events:
    ``"data"``; ``"stale"`` (channel ``stale_channel`` carries its previous buffer and read
    counter); ``"short"`` (a packet cut short: its size disagrees with its header);
    ``"bad_n"`` (a header claiming 4000 channels); ``("lost", n)`` (n packets never sent);
    ``("reconnect", n)`` (the PUB socket closes, n packets are produced meanwhile, and it binds
    again on the same port).  ``sent`` logs what was sent.
    """

    def __init__(
        self,
        scene: Scene,
        schedule,
        *,
        samples: int = 2048,
        seed: int = 0,
        stale_channel: int = 3,
        start_seq: int = 1000,
        pace_s: float = 0.002,
        port: int | None = None,
    ):
        super().__init__(daemon=True)
        self.scene = scene
        self.schedule = list(schedule)
        self.L = samples
        self.n = scene.array.n_antennas + 1
        self.rng = np.random.default_rng(seed)
        self.stale_channel = stale_channel
        self.seq = start_seq
        self.readcnt = np.full(self.n, 77, dtype=np.uint32)
        self.pace_s = pace_s
        self.ctx = zmq.Context()
        self.sock = None
        self.port = port
        self._bind()
        self.sent: list = []
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self._prev = None

    def _bind(self) -> None:
        s = self.ctx.socket(zmq.XPUB)
        s.setsockopt(zmq.LINGER, 1000)
        s.setsockopt(zmq.XPUB_NODROP, 1)
        s.setsockopt(zmq.SNDTIMEO, 5000)
        if self.port is None:
            self.port = s.bind_to_random_port("tcp://127.0.0.1")
        else:
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    s.bind(f"tcp://127.0.0.1:{self.port}")
                    break
                except zmq.ZMQError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.sock = s

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _wait_subscriber(self) -> None:
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not self.stop_flag.is_set():
            if self.sock.poll(50, zmq.POLLIN) and self.sock.recv()[:1] == b"\x01":
                return
        raise TimeoutError("no subscriber")

    def _int8(self, Y: np.ndarray) -> np.ndarray:
        q = np.empty(Y.shape + (2,), np.int8)
        q[..., 0] = np.clip(np.round(Y.real), -127, 127)
        q[..., 1] = np.clip(np.round(Y.imag), -127, 127)
        return q

    def _packet(self, ev: str) -> bytes:
        L = self.L
        Y = np.empty((self.n, L), complex)
        Y[0] = 30 * (self.rng.standard_normal(L) + 1j * self.rng.standard_normal(L)) / np.sqrt(2)
        x = self.scene.sample(self.rng, L)
        Y[1:] = x * (30.0 / np.sqrt(np.mean(np.abs(x) ** 2)))
        q = self._int8(Y)
        self.readcnt += 1
        cnt = self.readcnt.copy()
        if ev == "stale" and self._prev is not None:
            c = self.stale_channel
            q[c] = self._prev[0][c]
            cnt[c] = self._prev[1][c]
        self._prev = (q.copy(), cnt.copy())
        n_hdr = 4000 if ev == "bad_n" else self.n
        msg = struct.pack("<4I", self.seq, n_hdr, L, 0) + cnt.astype("<u4").tobytes() + q.tobytes()
        self.seq += 1
        if ev == "short":
            msg = msg[: len(msg) - 100]
        return msg

    def run(self) -> None:
        try:
            self._wait_subscriber()
            for ev in self.schedule:
                if self.stop_flag.is_set():
                    break
                if isinstance(ev, tuple) and ev[0] == "lost":
                    self.seq += ev[1]
                    self.readcnt += ev[1]
                    continue
                if isinstance(ev, tuple) and ev[0] == "reconnect":
                    time.sleep(0.2)  # let the last packets drain
                    self.sock.close(linger=10_000)  # a slow subscriber (cold numba cache, loaded CI) still gets all
                    self.seq += ev[1]
                    self.readcnt += ev[1]
                    time.sleep(0.3)
                    self._bind()
                    self._wait_subscriber()
                    continue
                self.sock.send(self._packet(ev))
                self.sent.append(ev)
                time.sleep(self.pace_s)
            time.sleep(0.2)
        except BaseException as exc:
            self.error = exc
        finally:
            self.sock.close(linger=10_000)  # a slow subscriber (cold numba cache, loaded CI) still gets all
            self.ctx.term()


# ---------------------------------------------------------------------------------------
# Command line: serve an emulated device for a worked example (docs/hardware.md)
# ---------------------------------------------------------------------------------------
KRAKEN_SCENE = dict(n=5, theta=[-0.45, 0.35], r=[2.0, 3.5], snr_db=25.0)
RTL_SCENE = dict(n=8, theta=[-0.3, 0.35], r=[5.0, 9.0], snr_db=20.0)
KRAKEN_FAULTS = [
    "dummy",
    "unlocked",
    "data",
    "data",
    "cal",
    "data",
    "bad_sync",
    "data",
    "drop",
    "data",
    ("lost", 2),
    "data",
    "bad_size",
    "data",
    "dummy",
    "data",
]
RTL_FAULTS = [
    "data",
    "data",
    "stale",
    "data",
    "short",
    "data",
    ("lost", 2),
    "data",
    "bad_n",
    "data",
    ("reconnect", 3),
    "data",
    "stale",
    "data",
]


def main(argv=None) -> int:
    """``python tests/emulators.py kraken|rtlsdr [--port P] [--frames N | --faults]``."""
    import argparse
    import json

    ap = argparse.ArgumentParser(
        description="Serve an emulated KrakenSDR (Heimdall IQ server) or "
        "coherent-rtlsdr on 127.0.0.1 with a known two-target scene."
    )
    ap.add_argument("device", choices=("kraken", "rtlsdr"))
    ap.add_argument("--port", type=int, help="port (default 5000 for kraken, 5555 for rtlsdr)")
    ap.add_argument("--frames", type=int, default=20, help="device frames (CPIs / packets) to send")
    ap.add_argument("--faults", action="store_true", help="send the fault schedule of the tests instead")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    spec = KRAKEN_SCENE if a.device == "kraken" else RTL_SCENE
    scene = Scene(ULA(spec["n"], 433.92e6), spec["theta"], spec["r"], spec["snr_db"])
    if a.device == "kraken":
        schedule = KRAKEN_FAULTS if a.faults else ["data"] * a.frames
        emu = KrakenEmulator(scene, schedule, cpi_length=2048, seed=a.seed, port=a.port or 5000)
        where = f"127.0.0.1:{emu.port}"
    else:
        schedule = RTL_FAULTS if a.faults else ["data"] * a.frames
        emu = RtlEmulator(scene, schedule, samples=2048, seed=a.seed, port=a.port or 5555)
        where = emu.address
    print(f"emulated {a.device} on {where}; truth: {json.dumps(scene.truth())}", flush=True)
    emu.start()
    emu.join(120)
    print(f"sent {len(getattr(emu, 'served', getattr(emu, 'sent', [])))} device frames; error: {emu.error}")
    return 0 if emu.error is None else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
