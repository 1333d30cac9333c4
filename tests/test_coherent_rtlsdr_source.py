"""coherent-rtlsdr source against an emulated packetizer (tests/emulators.py).

The emulator writes packets from coherent-rtlsdr's public sources (``cpacketize.h``,
``cpacketizer.cc``, ``ccoherent.cc``): header, per-channel read counters, int8 IQ, channel 0
the reference noise receiver.  All sockets are on 127.0.0.1; every run is bounded.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nearfield.array import ULA
from nearfield.block import ParamError
from nearfield.runtime import registry, run_flowgraph
from nearfield.runtime.flowgraph import parse_flowgraph
from nearfield.sources.coherent_rtlsdr import CoherentRtlSdrSource, PacketError, incoherent_channels, parse_packet

sys.path.insert(0, str(Path(__file__).parent))
from emulators import RTL_FAULTS, RtlEmulator, Scene  # noqa: E402

FG = Path(__file__).resolve().parents[1] / "flowgraphs" / "coherent_rtlsdr.yaml"
FC = 433.92e6
ARRAY = ULA(8, FC)  # lambda/2 spacing: near field 2.3 m .. 17 m
THETA, RANGE = [-0.3, 0.35], [5.0, 9.0]


class ProbeRtl(CoherentRtlSdrSource):
    """The source, keeping its instances so a test can read the counters after a run."""

    instances: list = []

    def start(self):
        type(self).instances.append(self)
        super().start()


registry.register("t_coherent_rtlsdr_probe", ProbeRtl, replace=True)


def _packet(seq, readcnt, iq, n=None, L=None):
    iq = np.asarray(iq, np.int8)
    n = iq.shape[0] if n is None else n
    L = iq.shape[1] if L is None else L
    return struct.pack("<4I", seq, n, L, 0) + np.asarray(readcnt, "<u4").tobytes() + iq.tobytes()


def test_packet_layout_and_scaling():
    rng = np.random.default_rng(0)
    iq = rng.integers(-128, 128, size=(3, 5, 2), dtype=np.int8)
    seqn, cnt, got = parse_packet(_packet(12, [7, 7, 7], iq))
    assert seqn == 12 and cnt.tolist() == [7, 7, 7] and np.array_equal(got, iq)
    # byte offsets of cpacketizer.cc: readcnt of channel n at uint32 index 4 + n, samples at 16 + 4N + 2Ln
    raw = _packet(12, [7, 8, 9], iq)
    assert struct.unpack_from("<I", raw, 4 * (4 + 2))[0] == 9
    assert raw[16 + 12 + 2 * 5 * 2] == iq[2, 0, 0].view(np.uint8)
    from nearfield.sources.coherent_rtlsdr import _to_complex

    z = _to_complex(iq)
    assert z.dtype == np.complex64 and np.allclose(z, (iq[..., 0] + 1j * iq[..., 1]) / 128)


@pytest.mark.parametrize(
    "msg, match",
    [
        (b"\x00" * 10, "shorter than the 16-byte header"),
        (struct.pack("<4I", 1, 0, 4, 0), "N = 0 channels"),
        (struct.pack("<4I", 1, 4000, 4, 0) + bytes(100), "N = 4000 channels"),
        (struct.pack("<4I", 1, 2, 0, 0) + bytes(8), "L = 0"),
        (_packet(1, [1, 1], np.zeros((2, 4, 2)))[:-1], "39 bytes, but N = 2 and L = 4 make 40"),
        (_packet(1, [1, 1], np.zeros((2, 4, 2))) + b"x", "41 bytes"),
    ],
)
def test_malformed_packets_are_named(msg, match):
    with pytest.raises(PacketError, match=match):
        parse_packet(msg, max_channels=64)


def test_coherence_by_read_counters():
    assert incoherent_channels(np.array([5, 5, 5, 5])) == []
    assert incoherent_channels(np.array([5, 5, 4, 5])) == [2]  # a stale buffer on channel 2
    assert incoherent_channels(np.array([6, 5, 5, 5])) == [1, 2, 3]  # reference ahead of everyone
    assert incoherent_channels(np.array([6, 5, 5, 5]), reference=None) == [0]


def _graph(tmp_path, address, **source):
    g = yaml.safe_load(FG.read_text())
    g["blocks"]["source"].update({"type": "t_coherent_rtlsdr_probe", "address": address, "timeout_s": 1.5, **source})
    g["blocks"]["out"]["path"] = str(tmp_path / "est.jsonl")
    return parse_flowgraph(g, path=str(FG))


def _run(tmp_path, emu, **source):
    ProbeRtl.instances.clear()
    emu.start()
    try:
        res = run_flowgraph(_graph(tmp_path, emu.address, **source), inproc=True, quiet=True)
    finally:
        emu.stop_flag.set()
        emu.join(20)
    assert emu.error is None, emu.error
    (src,) = ProbeRtl.instances
    path = tmp_path / "est.jsonl"
    if not path.exists():  # a failed run leaves its records in <path>.partial (the jsonl sink never clobbers)
        path = tmp_path / "est.jsonl.partial"
    recs = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return res, src, recs


SCHEDULE = RTL_FAULTS  # the fault schedule of the worked example (docs/hardware.md)


def test_flowgraph_localizes_every_coherent_packet_and_counts_every_fault(tmp_path):
    scene = Scene(ARRAY, THETA, RANGE, snr_db=20)
    emu = RtlEmulator(scene, SCHEDULE, samples=2048, seed=1, stale_channel=3)
    # timeout_s: a reconnect under load (or a cold numba cache downstream) can take seconds
    res, src, recs = _run(tmp_path, emu, on_timeout="end", truth=scene.truth(), snapshots=1024, timeout_s=6.0)
    assert res.ok, res.error
    c = src.all_counters()
    n_data = SCHEDULE.count("data")
    assert c["packets_valid"] == n_data and c["frames"] == 2 * n_data == len(recs)
    assert c["incoherent"] == 2 and src.stale_channels == {3: 2}
    assert c["bad_size"] == 2 and c["lost"] == 2 + 3 and c["duplicates"] == 0 and c["restarts"] == 0
    assert c["disconnects"] >= 1 and c["reconnects"] >= 1
    assert c["packets"] == len(emu.sent)
    seqs = [r["seq"] for r in recs]
    assert seqs[:4] == [0, 1, 2, 3] and seqs[4:6] == [6, 7]  # packet 2 (stale) missing from seq
    assert seqs == sorted(seqs)
    t0 = np.array([r["t0"] for r in recs])
    assert np.allclose(t0[:2], [1000 * 2048 / 2.048e6, (1000 * 2048 + 1024) / 2.048e6])
    for r in recs:
        assert len(r["targets"]) == 2
        for e, t in zip(r["targets"], scene.truth(), strict=True):
            assert abs(e["theta"] - t["theta"]) < 0.01, r
            assert abs(e["range"] - t["range"]) < 0.05 * t["range"], r


def test_stopped_sender_ends_the_run_with_a_clear_error(tmp_path):
    emu = RtlEmulator(Scene(ARRAY, THETA, RANGE, 20), ["data"], samples=2048, seed=2)
    res, _, recs = _run(tmp_path, emu)
    assert not res.ok and len(recs) == 2
    assert "DeviceStopped" in res.error and "no packet for 1.5 s" in res.error and emu.address in res.error


def test_reference_channel_goes_to_the_cal_port():
    emu = RtlEmulator(Scene(ARRAY, THETA, RANGE, 20), ["data", "data", "data", "data"], samples=2048, seed=3)
    emu.start()
    src = CoherentRtlSdrSource(
        "r",
        address=emu.address,
        carrier_hz=FC,
        snapshots=512,
        cal_every=2,
        cal_snapshots=2048,
        timeout_s=1.0,
        on_timeout="end",
    )
    try:
        out = [f for f in src.generate() if f is not None]
    finally:
        src.close()
        emu.stop_flag.set()
        emu.join(20)
    cal = [f["cal"] for f in out if isinstance(f, dict)]
    data = [f for f in out if not isinstance(f, dict)]
    assert len(data) == 16 and [f.seq for f in cal] == [0, 1]
    for f in cal:
        assert f.arrays["snapshots"].shape == (8, 2048) and f.arrays["reference"].shape == (1, 2048)
        assert f.meta["calibration"] == {
            "kind": "reference_channel",
            "device": "coherent_rtlsdr",
            "reference_channel": 0,
        }
    # the cal frame holds the same samples as the data frames of its packet (packet 2 = frames 4..7)
    assert np.array_equal(cal[0].arrays["snapshots"][:, :512], data[4].snapshots)
    d = data[0].meta["device"]
    assert d["channels"] == list(range(1, 9)) and d["reference_channel"] == 0 and d["samples_per_channel"] == 2048
    assert len(d["readcnt"]) == 8 and d["readcnt"] == [d["reference_readcnt"]] * 8


def test_no_sender_fails_within_the_timeout():
    src = CoherentRtlSdrSource("r", address="tcp://127.0.0.1:1", carrier_hz=FC, timeout_s=0.3)
    try:
        with pytest.raises(RuntimeError, match=r"no packet for 0.3 s \(0 received, 0 connection"):
            for _ in src.generate():
                pass
    finally:
        src.close()


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(channels=[0, 1, 2]), "includes the reference channel 0"),
        (dict(channels=[2, 2]), "'channels'"),
        (dict(address="localhost:5555"), "'address'"),
        (dict(carrier_hz=-1.0), "'carrier_hz'"),
        (dict(max_channels=1), "'max_channels'"),
    ],
)
def test_parameter_errors_name_the_parameter(params, match):
    kw = dict(carrier_hz=FC)
    kw.update(params)
    with pytest.raises(ParamError, match=match):
        CoherentRtlSdrSource("r", **kw)


def test_missing_carrier_is_an_error():
    with pytest.raises(ParamError, match="missing required parameter 'carrier_hz'"):
        CoherentRtlSdrSource("r")
