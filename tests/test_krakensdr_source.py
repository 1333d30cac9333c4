"""KrakenSDR source against an emulated Heimdall DAQ IQ server (tests/emulators.py).

The emulator is written from the firmware's public sources and packs its header the way
``iq_header.py`` does (native ``struct``), independently of the source's explicit layout.
All sockets are on 127.0.0.1; every run is bounded by the source's timeout.
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
from nearfield.cli import main as cli_main
from nearfield.runtime import registry, run_flowgraph
from nearfield.runtime.flowgraph import parse_flowgraph
from nearfield.sources.krakensdr import (
    HEADER_SIZE,
    SYNC_WORD,
    HeaderError,
    KrakenSDRSource,
    frame_problem,
    parse_header,
)
from nearfield.sources.sdr_common import U32, IndexTracker, SeqMapper

sys.path.insert(0, str(Path(__file__).parent))
from emulators import KRAKEN_FAULTS, KrakenEmulator, Scene, kraken_header  # noqa: E402

FG = Path(__file__).resolve().parents[1] / "flowgraphs" / "krakensdr.yaml"
FC = 433.92e6
ARRAY = ULA(5, FC)  # lambda/2 spacing: near field 0.98 m .. 5.5 m
THETA, RANGE = [-0.45, 0.35], [2.0, 3.5]


class ProbeKraken(KrakenSDRSource):
    """The source, keeping its instances so a test can read the counters after a run."""

    instances: list = []

    def start(self):
        type(self).instances.append(self)
        super().start()


registry.register("t_krakensdr_probe", ProbeKraken, replace=True)


def _fields(**kw):
    f = dict(
        active_ant_chs=5,
        rf_center_freq=int(FC),
        adc_sampling_freq=2_048_000,
        sampling_freq=1_024_000,
        cpi_length=4096,
        time_stamp=1_700_000_000_123,
        cpi_index=42,
        daq_block_index=84,
    )
    f.update(kw)
    return f


def test_header_layout_matches_heimdall_python_packing():
    gains = [10 * c + 1 for c in range(32)]
    raw = kraken_header(
        **_fields(
            if_gains=gains,
            adc_overdrive_flags=0b10010,
            sync_state=5,
            noise_source_state=1,
            hardware_id="KRAKEN",
            header_version=7,
        )
    )
    assert len(raw) == HEADER_SIZE
    h = parse_header(raw, 1 << 30)
    assert (h.sync_word, h.frame_type, h.hardware_id, h.unit_id) == (SYNC_WORD, 0, "KRAKEN", 7)
    assert (h.active_ant_chs, h.rf_center_freq, h.adc_sampling_freq, h.sampling_freq) == (
        5,
        int(FC),
        2_048_000,
        1_024_000,
    )
    assert (h.cpi_length, h.time_stamp, h.daq_block_index, h.cpi_index) == (4096, 1_700_000_000_123, 84, 42)
    assert (h.data_type, h.sample_bit_depth, h.adc_overdrive_flags) == (3, 32, 0b10010)
    assert h.if_gains == tuple(gains)
    assert (h.delay_sync_flag, h.iq_sync_flag, h.sync_state, h.noise_source_state, h.header_version) == (1, 1, 5, 1, 7)
    assert h.payload_bytes == 4096 * 5 * 8
    # offsets stated in the module docstring (natural alignment pads after ioo_type and cpi_length)
    assert struct.unpack_from("<Q", raw, 40)[0] == int(FC) and struct.unpack_from("<Q", raw, 72)[0] == 1_700_000_000_123
    assert struct.unpack_from("<I", raw, 84)[0] == 42 and struct.unpack_from("<I", raw, 1020)[0] == 7


@pytest.mark.parametrize(
    "kw, kind, match",
    [
        (dict(sync_word=0xDEADBEEF), "bad_sync", "sync word 0xdeadbeef"),
        (dict(sync_word=0x5AB9F72B), "bad_sync", "byte-swapped"),
        (dict(active_ant_chs=0), "bad_size", "active_ant_chs = 0"),
        (dict(active_ant_chs=33), "bad_size", "active_ant_chs = 33"),
        (dict(cpi_length=1 << 30), "bad_size", "exceeds max_frame_mb"),
        (dict(cpi_length=0), "bad_size", "DATA frame with cpi_length = 0"),
        (dict(sample_bit_depth=12), "bad_size", "sample_bit_depth = 12"),
        (dict(sample_bit_depth=8, data_type=2), "bad_format", "expected 3 and 32"),
        (dict(frame_type=9), "bad_format", "unknown frame_type 9"),
    ],
)
def test_bad_headers_are_classified(kw, kind, match):
    with pytest.raises(HeaderError, match=match) as err:
        parse_header(kraken_header(**_fields(**kw)), 64 << 20)
    assert err.value.kind == kind
    assert (err.value.header is not None) == (kind == "bad_format")  # only then can the payload be skipped


def test_validity_rules():
    ok = parse_header(kraken_header(**_fields()), 1 << 30)
    assert frame_problem(ok, range(5)) is None
    for ftype, name in [(1, "dummy"), (2, "ramp"), (3, "cal"), (4, "trigw")]:
        h = parse_header(kraken_header(**_fields(frame_type=ftype, cpi_length=0 if ftype == 1 else 64)), 1 << 30)
        assert frame_problem(h, range(5)) == name
    for flags in [dict(delay_sync_flag=0), dict(iq_sync_flag=0)]:
        h = parse_header(kraken_header(**_fields(**flags)), 1 << 30)
        assert frame_problem(h, range(5)) == "unlocked"
        assert frame_problem(h, range(5), require_sync=False) is None
    h = parse_header(kraken_header(**_fields(adc_overdrive_flags=1 << 3)), 1 << 30)
    assert frame_problem(h, [0, 1, 2], drop_overdrive=True) is None  # channel 3 not selected
    assert frame_problem(h, [0, 3], drop_overdrive=True) == "overdrive"
    assert frame_problem(h, [0, 3]) is None


def _graph(tmp_path, port, cal_sink=False, **source):
    g = yaml.safe_load(FG.read_text())
    g["blocks"]["source"].update(type="t_krakensdr_probe", port=port, timeout_s=1.5, stall_s=1.0, **source)
    g["blocks"]["out"]["path"] = str(tmp_path / "est.jsonl")
    if cal_sink:  # the calibration port wired to a sink of its own
        g["blocks"]["calout"] = {"type": "jsonl", "path": str(tmp_path / "cal.jsonl")}
        g["connections"].append(["source.cal", "calout"])
    return parse_flowgraph(g, path=str(FG))


def _run(tmp_path, emu, cal_sink=False, **source):
    ProbeKraken.instances.clear()
    emu.start()
    try:
        res = run_flowgraph(_graph(tmp_path, emu.port, cal_sink, **source), inproc=True, quiet=True)
    finally:
        emu.stop_flag.set()
        emu.join(10)
    assert emu.error is None, emu.error
    (src,) = ProbeKraken.instances
    path = tmp_path / "est.jsonl"
    if not path.exists():  # a failed run leaves its records in <path>.partial (the jsonl sink never clobbers)
        path = tmp_path / "est.jsonl.partial"
    lines = path.read_text().splitlines() if path.exists() else []
    return res, src.all_counters(), [json.loads(x) for x in lines]


SCHEDULE = KRAKEN_FAULTS  # the fault schedule of the worked example (docs/hardware.md)


def test_flowgraph_localizes_every_valid_frame_and_counts_every_fault(tmp_path):
    scene = Scene(ARRAY, THETA, RANGE, snr_db=25)
    emu = KrakenEmulator(scene, SCHEDULE, cpi_length=2048, seed=3)
    res, c, recs = _run(tmp_path, emu, cal_sink=True, on_timeout="end", truth=scene.truth())
    assert res.ok, res.error
    cal = [json.loads(x) for x in (tmp_path / "cal.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in cal] == [0]  # the one CAL frame went out on port 'cal'
    assert {r["block"]: r["frames_out"] for r in res.summary}["source"] == len(recs) + 1
    n_data = SCHEDULE.count("data")
    # every DATA frame gives cpi_length // T = 2 frames, and only those
    assert c["data_frames"] == n_data and c["frames"] == 2 * n_data == len(recs)
    # the injected faults, each counted exactly once under its own name
    assert (c["dropped_dummy"], c["dropped_unlocked"], c["dropped_cal"]) == (2, 1, 1)
    assert (c["bad_sync"], c["bad_size"], c["bad_format"]) == (1, 1, 0)
    assert c["truncated"] == 1 and c["lost"] == 2 and c["restarts"] == 0 and c["dropped_duplicate"] == 0
    # the run summary carries the same counts (the runtime reads all_counters() at the end)
    from nearfield.runtime.summary import format_summary

    row = res.block("source")["counters"]
    assert (row["dropped_dummy"], row["dropped_cal"], row["bad_sync"], row["lost"]) == (2, 1, 1, 2)
    text = format_summary(res.summary)
    assert "counters of block 'source':" in text and "dropped_dummy 2" in text and "lost 2" in text
    assert c["reconnects"] >= 3 and c["cal_frames"] == 1
    # seq follows cpi_index: 2 frames per CPI, gaps where a CPI was not valid data
    seqs = [r["seq"] for r in recs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[:4] == [4, 5, 6, 7]  # CPIs 0 (dummy) and 1 (unlocked) dropped
    t0 = [r["t0"] for r in recs]
    assert np.allclose(np.diff(t0)[:3], 1024 / 1.024e6, rtol=0, atol=1e-6)  # t0 ~ 1.7e9 s: float64 steps ~ 2e-7
    # blind 2-D MUSIC with K = 2 finds both targets in every valid frame
    for r in recs:
        est = r["targets"]
        assert len(est) == 2 and r["truth"]["targets"] == scene.truth()
        for e, t in zip(est, scene.truth(), strict=True):
            assert abs(e["theta"] - t["theta"]) < 0.01, r
            assert abs(e["range"] - t["range"]) < 0.05 * t["range"], r


def test_stopped_device_ends_the_run_with_a_clear_error(tmp_path):
    scene = Scene(ARRAY, THETA, RANGE, snr_db=25)
    emu = KrakenEmulator(scene, ["data", "data"], cpi_length=2048, seed=4)
    res, _, recs = _run(tmp_path, emu)
    assert not res.ok and len(recs) == 4
    assert "DeviceStopped" in res.error and "nothing received for 1.5 s" in res.error
    assert "'source'" in res.error and str(emu.port) in res.error


def test_no_device_at_all_fails_within_the_timeout():
    src = KrakenSDRSource("k", port=1, timeout_s=0.3)  # nothing listens on port 1
    with pytest.raises(
        RuntimeError,
        match=r"nothing received for 0.3 s \(0 connection\(s\) made, "
        r"\d+ failed attempt\(s\) \(last: .*refused",
    ):
        for _ in src.generate():
            pass
    assert src.counters["connect_failures"] >= 1


def test_cal_frames_feed_the_cal_port_with_the_noise_source(tmp_path):
    g_true = np.array([1.0, 0.9 * np.exp(0.4j), 1.1 * np.exp(-1.2j), np.exp(2.0j), 0.8 * np.exp(0.1j)])
    emu = KrakenEmulator(
        Scene(ARRAY, THETA, RANGE, 25), ["cal", "data", "cal"], cpi_length=2048, seed=5, cal_gains=g_true
    )
    emu.start()
    src = KrakenSDRSource(
        "k", port=emu.port, snapshots=512, cal_snapshots=2048, timeout_s=1.0, on_timeout="end", channels=[4, 3, 2, 1, 0]
    )
    try:
        out = [f for f in src.generate() if f is not None]
    finally:
        src.close()
        emu.stop_flag.set()
        emu.join(10)
    cal = [f["cal"] for f in out if isinstance(f, dict)]
    data = [f for f in out if not isinstance(f, dict)]
    assert [f.seq for f in cal] == [0, 1] and len(data) == 4
    for f in cal:
        Y = f.arrays["snapshots"]
        assert Y.shape == (5, 2048) and Y.dtype == np.complex64
        assert f.meta["calibration"]["kind"] == "noise_source"
        _, V = np.linalg.eigh(Y @ Y.conj().T)
        v = V[:, -1] / V[0, -1] * abs(V[0, -1])
        g = g_true[::-1]  # channels given in reverse order
        g = g / g[0] * abs(g[0])
        assert np.allclose(v / np.linalg.norm(v), g / np.linalg.norm(g), atol=0.02)
    d = data[0].meta["device"]
    assert d["channels"] == [4, 3, 2, 1, 0] and d["if_gains_db"] == [28.4, 28.3, 28.2, 28.1, 28.0]
    assert data[0].meta["array"]["n_antennas"] == 5 and data[0].meta["array"]["carrier_hz"] == pytest.approx(FC, abs=1)


def test_channel_that_the_device_does_not_send_is_a_clear_error(tmp_path):
    emu = KrakenEmulator(Scene(ARRAY, THETA, RANGE, 25), ["data"], cpi_length=2048)
    emu.start()
    src = KrakenSDRSource("k", port=emu.port, channels=[0, 7], timeout_s=1.0)
    try:
        with pytest.raises(ValueError, match=r"'channels': \[0, 7\] names a channel the device does not send"):
            for _ in src.generate():
                pass
    finally:
        src.close()
        emu.stop_flag.set()
        emu.join(10)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(channels=[1, 1]), "'channels'"),
        (dict(channels=[3]), "'channels'"),
        (dict(port=70000), "'port'"),
        (dict(on_timeout="hang"), "'on_timeout'"),
        (dict(truth=[{"theta": 0.1}]), "'truth'"),
    ],
)
def test_parameter_errors_name_the_parameter(params, match):
    with pytest.raises(ParamError, match=match):
        KrakenSDRSource("k", **params)


def test_index_tracker_counts_gaps_wraps_duplicates_and_restarts():
    tr = IndexTracker()
    assert tr.update(U32 - 2) == ("first", 0)
    assert tr.update(U32 - 1) == ("next", 0)
    assert tr.update(2) == ("next", 2)  # wrapped past 2**32: 0 and 1 lost
    assert tr.unwrapped == U32 + 2
    assert tr.update(2) == ("duplicate", 0)
    assert tr.update(6, skipped=1) == ("next", 2)  # 3, 4, 5 missing, one was a malformed header
    assert tr.update(1) == ("restart", 0)  # went back: a new stream, nothing lost
    sm = SeqMapper()
    sm.anchor(10)
    assert [sm.seq(10, 2, k) for k in (0, 1)] == [0, 1]
    assert sm.seq(13, 2, 1) == 7  # two device frames skipped: seq 4..5 missing
    sm.anchor(0)  # restart: seq goes on increasing
    assert sm.seq(0, 2, 0) == 8
    assert sm.seq(1, 4, 0) == 9  # frames per device frame changed: re-based


def test_silent_connection_is_reopened_then_the_run_ends():
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    src = KrakenSDRSource("k", port=srv.getsockname()[1], stall_s=0.2, timeout_s=0.7, on_timeout="end")
    try:
        out = [f for f in src.generate() if f is not None]  # accepted by the backlog, never answered
    finally:
        src.close()
        srv.close()
    c = src.all_counters()
    assert out == [] and c["stalls"] >= 2 and c["reconnects"] >= 1 and c["disconnects"] == c["stalls"]


def test_a_device_that_comes_up_late_and_answers_slowly_is_not_taken_for_a_stall():
    import socket
    import threading

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens for the first 0.6 s
    emus = []

    def late_start():
        emus.append(
            KrakenEmulator(Scene(ARRAY, THETA, RANGE, 25), ["data", "data"], cpi_length=2048, port=port, delay_s=0.15)
        )
        emus[0].start()

    timer = threading.Timer(0.6, late_start)
    timer.start()
    src = KrakenSDRSource("k", port=port, stall_s=0.4, timeout_s=1.5, on_timeout="end")
    try:
        out = [f for f in src.generate() if f is not None]
    finally:
        src.close()
        timer.join()
        for e in emus:
            e.stop_flag.set()
            e.join(10)
    assert len(out) == 4 and src.counters["stalls"] == 0 and src.counters["connect_failures"] >= 1


@pytest.mark.parametrize("on_timeout, status", [("fail", 1), ("end", 0)])
def test_cli_exit_status_when_the_device_stops(tmp_path, capsys, on_timeout, status):
    emu = KrakenEmulator(Scene(ARRAY, THETA, RANGE, 25), ["data"], cpi_length=2048, seed=6)
    emu.start()
    try:
        rc = cli_main(
            [
                "run",
                str(FG),
                "--inproc",
                "--quiet",
                "--set",
                f"source.port={emu.port}",
                "--set",
                "source.timeout_s=0.8",
                "--set",
                f"source.on_timeout={on_timeout}",
                "--set",
                f"out.path={tmp_path / 'e.jsonl'}",
            ]
        )
    finally:
        emu.stop_flag.set()
        emu.join(10)
    assert rc == status
    out = tmp_path / ("e.jsonl.partial" if status else "e.jsonl")  # a failed run keeps its records in .partial
    assert len(out.read_text().splitlines()) == 2
    if status:
        assert "DeviceStopped" in capsys.readouterr().err
