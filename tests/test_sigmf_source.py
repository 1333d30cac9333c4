"""QA of the SigMF source: exact replay, foreign recordings, collections, and bad input."""

import itertools
import json
import logging
import time

import numpy as np
import pytest
from sigmf_helpers import foreign_recording, record, split_into_collection

from nearfield.array import SPEED_OF_LIGHT
from nearfield.block import ParamError
from nearfield.sources.sigmf_source import SigMFFormatError, SigMFSource, target_from_bearing

logging.getLogger("nearfield.sources.synthetic").setLevel(logging.ERROR)


def replay(path, **params):
    src = SigMFSource(path=str(path), **params)
    try:
        return list(src.generate())
    finally:
        src.close()


def assert_same_frames(written, read):
    assert len(written) == len(read)
    for a, b in zip(written, read):
        assert (a.seq, a.t0) == (b.seq, b.t0)
        assert a.arrays["snapshots"].tobytes() == b.arrays["snapshots"].tobytes()  # bitwise
        assert b.arrays["snapshots"].flags.c_contiguous and b.arrays["snapshots"].dtype == np.complex64
        assert a.arrays["pilots"].tobytes() == b.arrays["pilots"].tobytes()
        assert a.meta["truth"] == b.meta["truth"]
        assert a.meta["array"] == b.meta["array"]


def test_record_replay_is_exact(tmp_path):
    written = record(
        tmp_path / "rec",
        frames=5,
        targets=[{"theta": 0.3, "range": 6.0, "velocity": [3.0, -40.0]}, {"theta": -0.5, "range": 4.0}],
        wavelength_m=0.01,
    )
    assert_same_frames(written, replay(tmp_path / "rec.sigmf-meta"))
    assert_same_frames(written, replay(tmp_path / "rec.sigmf-data", verify=True))
    assert all("pilots" not in f.arrays for f in replay(tmp_path / "rec", pilots=False))


def test_source_memory_maps_the_dataset(tmp_path):
    record(tmp_path / "rec", frames=2)
    src = SigMFSource(path=str(tmp_path / "rec"))
    src.start()
    assert isinstance(src._datasets[0].mm, np.memmap) and isinstance(src._pilot_ds.mm, np.memmap)
    src.close()


def test_recut_start_stop_and_loop(tmp_path):
    written = record(tmp_path / "rec", frames=5)
    flat = np.concatenate([f.arrays["snapshots"] for f in written], axis=1)  # (16, 50)
    got = replay(tmp_path / "rec", snapshots=4)
    assert len(got) == 12  # 48 of 50 samples, the partial frame dropped
    for i, f in enumerate(got):
        assert f.seq == i and f.t0 == pytest.approx(4 * i / 1000.0)
        assert np.array_equal(f.arrays["snapshots"], flat[:, 4 * i : 4 * i + 4])
        assert f.meta["truth"] == written[(4 * i) // 10].meta["truth"]
    got = replay(tmp_path / "rec", start_sample=10, stop_sample=35)
    assert [f.seq for f in got] == [1, 2]
    src = SigMFSource(path=str(tmp_path / "rec"), loop=True)
    looped = list(itertools.islice(src.generate(), 12))
    src.close()
    assert [f.seq for f in looped] == list(range(12))
    assert np.array_equal(looped[5].arrays["snapshots"], written[0].arrays["snapshots"])
    assert looped[5].t0 == pytest.approx(written[0].t0 + 0.05)


def test_rate_hz_paces_replay(tmp_path):
    record(tmp_path / "rec", frames=5)
    t = time.monotonic()
    assert len(replay(tmp_path / "rec", rate_hz=40.0)) == 5
    assert time.monotonic() - t >= 4 / 40.0 * 0.95


def test_foreign_ci16_recording_with_emitter_bearing(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(-32768, 32767, size=(30, 4, 2), dtype=np.int16)  # (samples, channels, re/im)
    base = foreign_recording(
        tmp_path / "ci16",
        raw,
        "ci16_le",
        n=4,
        carrier=3e9,
        d=0.05,
        capture_extra={"spatial:emitter_bearing": {"azimuth": 350.0, "range": 12.5}},
    )
    got = replay(base, snapshots=10)
    assert len(got) == 3
    expected = (raw[10:20, :, 0] + 1j * raw[10:20, :, 1]).T / 32768.0
    assert np.array_equal(got[1].arrays["snapshots"], expected.astype(np.complex64))
    assert "pilots" not in got[1].arrays
    assert got[1].meta["array"] == {
        "n_antennas": 4,
        "carrier_hz": 3e9,
        "spacing": pytest.approx(0.05),
        "wavelength_m": SPEED_OF_LIGHT / 3e9,
    }
    (tgt,) = got[0].meta["truth"]["targets"]
    assert tgt["theta"] == pytest.approx(np.radians(10.0)) and tgt["range"] == 12.5  # azimuth -10 deg
    assert got[2].t0 == pytest.approx(20 / 1e6)


def test_bearing_convention():
    assert target_from_bearing({"azimuth": 30.0, "range": 5.0})["theta"] == pytest.approx(-np.pi / 6)
    assert target_from_bearing({"azimuth": 330.0, "range": 5.0})["theta"] == pytest.approx(np.pi / 6)
    assert target_from_bearing({"azimuth": 30.0}) is None


def test_foreign_cf64_recording_and_calibration(tmp_path):
    rng = np.random.default_rng(1)
    raw = (rng.standard_normal((20, 4)) + 1j * rng.standard_normal((20, 4))).astype("<c16")
    cal = [[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, -1.0]]
    base = foreign_recording(
        tmp_path / "c64",
        raw,
        "cf64_le",
        n=4,
        extra_global={
            "core:extensions": [
                {"name": "spatial", "version": "1.1.0", "optional": True},
                {"name": "nearfield", "version": "1.0.0", "optional": True},
            ],
            "nearfield:calibration": cal,
        },
    )
    got = replay(base, snapshots=20)
    w = np.array([complex(*c) for c in cal], np.complex64)[:, None]
    assert np.array_equal(got[0].arrays["snapshots"], raw.T.astype(np.complex64) * w)
    raw_only = replay(base, snapshots=20, apply_calibration=False)
    assert np.array_equal(raw_only[0].arrays["snapshots"], raw.T.astype(np.complex64))


def test_collection_of_single_channel_recordings(tmp_path):
    written = record(tmp_path / "rec", frames=3)
    coll = split_into_collection(tmp_path, tmp_path / "rec", order=[3, 1, 0, 2] + list(range(4, 16)))
    got = replay(coll, verify=True)
    assert_same_frames(written, got)


# -- bad input: each names the file and the field ------------------------------------
def expect_error(path, *words, **params):
    with pytest.raises(ParamError) as err:
        SigMFSource(name="src", path=str(path), **params)
    msg = str(err.value)
    assert "'src'" in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_truncated_data_file(tmp_path):
    raw = np.zeros((10, 4), "<c8")
    base = foreign_recording(tmp_path / "t", raw)
    with open(base + ".sigmf-data", "r+b") as fh:
        fh.truncate(10 * 4 * 8 - 3)
    expect_error(base, "t.sigmf-data", "core:num_channels", "not a multiple")


def test_data_shorter_than_metadata_says(tmp_path):
    record(tmp_path / "rec", frames=3)
    with open(tmp_path / "rec.sigmf-data", "r+b") as fh:
        fh.truncate(16 * 8 * 25)  # 25 whole samples of 30
    expect_error(tmp_path / "rec", "rec.sigmf-data", "nearfield:valid_samples", "truncated")
    base = foreign_recording(tmp_path / "f", np.zeros((10, 4), "<c8"), annotations=[(5, 10, {})])
    expect_error(base, "f.sigmf-data", "annotations", "truncated")


def test_num_channels_not_matching_geometry(tmp_path):
    base = foreign_recording(tmp_path / "n", np.zeros((10, 4), "<c8"))
    meta = json.load(open(base + ".sigmf-meta"))
    meta["captures"][0]["spatial:element_geometry"] = meta["captures"][0]["spatial:element_geometry"][:3]
    json.dump(meta, open(base + ".sigmf-meta", "w"))
    expect_error(base, "n.sigmf-meta", "spatial:element_geometry", "4 channels")
    base = foreign_recording(tmp_path / "m", np.zeros((10, 4), "<c8"), extra_global={"spatial:num_elements": 5})
    expect_error(base, "m.sigmf-meta", "spatial:num_elements")


def test_unsupported_datatype(tmp_path):
    base = foreign_recording(tmp_path / "u", np.zeros((10, 4), "<i2"), datatype="ri16_le")
    expect_error(base, "u.sigmf-meta", "core:datatype", "ri16_le", "cf32_le")


def test_missing_geometry_or_carrier(tmp_path):
    base = foreign_recording(tmp_path / "g", np.zeros((10, 4), "<c8"), geometry=False)
    expect_error(base, "g.sigmf-meta", "spatial:element_geometry", "missing")
    base = foreign_recording(tmp_path / "c", np.zeros((10, 4), "<c8"), carrier=None)
    expect_error(base, "c.sigmf-meta", "core:frequency", "missing carrier")


def test_geometry_that_is_not_our_ula(tmp_path):
    base = foreign_recording(tmp_path / "x", np.zeros((10, 4), "<c8"))
    meta = json.load(open(base + ".sigmf-meta"))
    meta["captures"][0]["spatial:element_geometry"][1]["point"][1] += 0.01
    json.dump(meta, open(base + ".sigmf-meta", "w"))
    expect_error(base, "spatial:element_geometry", "uniform linear array")


def test_missing_files_and_checksum_mismatch(tmp_path):
    expect_error(tmp_path / "nothing", "nothing.sigmf-meta", "no such file")
    record(tmp_path / "rec", frames=2)
    raw = bytearray((tmp_path / "rec.sigmf-data").read_bytes())
    raw[100] ^= 1
    (tmp_path / "rec.sigmf-data").write_bytes(bytes(raw))
    replay(tmp_path / "rec")  # verify off by default: no full read
    src = SigMFSource(name="src", path=str(tmp_path / "rec"), verify=True)
    with pytest.raises(SigMFFormatError, match="core:sha512.*checksum mismatch"):
        src.start()
    (tmp_path / "rec-pilots.sigmf-data").unlink()
    expect_error(tmp_path / "rec", "rec-pilots.sigmf-data", "dataset file missing")


def test_bad_sample_window(tmp_path):
    record(tmp_path / "rec", frames=2)
    expect_error(tmp_path / "rec", "no complete frame", start_sample=15)
    with pytest.raises(ParamError, match="stop_sample"):
        SigMFSource(path=str(tmp_path / "rec"), start_sample=10, stop_sample=5)


def test_replayed_frames_give_the_same_covariance_as_live(tmp_path):
    from nearfield.blocks.covariance import Covariance

    written = record(tmp_path / "rec", frames=3)
    live, rep = Covariance(forget=0.3), Covariance(forget=0.3)
    live.start()
    rep.start()
    for a, b in zip(written, replay(tmp_path / "rec")):
        assert live.process(a).arrays["covariance"].tobytes() == rep.process(b).arrays["covariance"].tobytes()


def test_record_then_replay_through_the_runtime(tmp_path):
    """synthetic -> sigmf_writer, then sigmf -> jsonl: the same records as synthetic -> jsonl."""
    flowgraph = pytest.importorskip("nearfield.runtime.flowgraph")
    runtime = pytest.importorskip("nearfield.runtime")
    src = {"type": "synthetic", "n_antennas": 16, "snapshots": 10, "frames": 4, "seed": 9}
    graphs = {
        "record": {
            "blocks": {"source": src, "rec": {"type": "sigmf_writer", "path": str(tmp_path / "r")}},
            "connections": [["source", "rec"]],
        },
        "live": {
            "blocks": {"source": src, "out": {"type": "jsonl", "path": str(tmp_path / "live.jsonl")}},
            "connections": [["source", "out"]],
        },
    }
    for name, g in graphs.items():
        res = runtime.run_flowgraph(flowgraph.parse_flowgraph(g, path=name), inproc=True, quiet=True)
        assert res.ok, res.error
    g = {
        "blocks": {
            "source": {"type": "sigmf", "path": str(tmp_path / "r")},
            "out": {"type": "jsonl", "path": str(tmp_path / "replay.jsonl")},
        },
        "connections": [["source", "out"]],
    }
    res = runtime.run_flowgraph(flowgraph.parse_flowgraph(g, path="replay"), inproc=True, quiet=True)
    assert res.ok, res.error

    def records(p):
        out = [json.loads(x) for x in p.read_text().splitlines()]
        for r in out:
            r.pop("latency_s")
        return out

    live = records(tmp_path / "live.jsonl")
    assert len(live) == 4 and live == records(tmp_path / "replay.jsonl")


def test_shipped_record_and_replay_flowgraphs(tmp_path):
    """flowgraphs/record_sigmf.yaml then replay_sigmf.yaml (small overrides) run and agree."""
    from pathlib import Path

    flowgraph = pytest.importorskip("nearfield.runtime.flowgraph")
    runtime = pytest.importorskip("nearfield.runtime")
    fg = Path(__file__).resolve().parent.parent / "flowgraphs"
    rec = tmp_path / "rec"
    g = flowgraph.load_flowgraph(
        fg / "record_sigmf.yaml",
        overrides={"source.n_antennas": 64, "source.frames": 3, "source.snapshots": 20, "record.path": str(rec)},
    )
    res = runtime.run_flowgraph(g, inproc=True, quiet=True)
    assert res.ok, res.error
    g = flowgraph.load_flowgraph(
        fg / "replay_sigmf.yaml",
        overrides={"source.path": str(rec) + ".sigmf-meta", "out.path": str(tmp_path / "e.jsonl")},
    )
    res = runtime.run_flowgraph(g, inproc=True, quiet=True)
    assert res.ok, res.error
    lines = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in lines] == [0, 1, 2]
    assert [t["range"] for t in lines[0]["truth"]["targets"]] == [8.0, 18.0, 10.0]


# -- others' recordings: carrier, spacing, channel order and axis given or overridden -------------------------


def _raw(n=4, t=20, seed=5):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((t, n)) + 1j * rng.standard_normal((t, n))).astype("<c8")


def test_carrier_given_when_missing_and_overriding_with_a_warning(tmp_path, caplog):
    raw = _raw()
    base = foreign_recording(tmp_path / "nc", raw, carrier=None)
    got = replay(base, snapshots=10, carrier_hz=1.24e9)
    assert got[0].meta["array"]["carrier_hz"] == 1.24e9
    assert got[0].meta["array"]["wavelength_m"] == pytest.approx(SPEED_OF_LIGHT / 1.24e9)
    assert np.array_equal(got[0].arrays["snapshots"], raw[:10].T)
    base = foreign_recording(tmp_path / "wc", raw, carrier=3e9)
    with caplog.at_level(logging.WARNING, logger="nearfield.sources.sigmf_source"):
        got = replay(base, snapshots=10, carrier_hz=5.8e9)
    assert got[0].meta["array"]["carrier_hz"] == 5.8e9
    assert "overrides core:frequency" in caplog.text


def test_spacing_given_without_geometry_or_overriding_it(tmp_path):
    raw = _raw(n=9)
    base = foreign_recording(tmp_path / "ng", raw, n=9, geometry=False, carrier=1.24e9)
    got = replay(base, snapshots=10, spacing=0.12)
    assert got[0].meta["array"]["spacing"] == 0.12 and got[0].meta["array"]["n_antennas"] == 9
    assert np.array_equal(got[1].arrays["snapshots"], raw[10:20].T)
    base = foreign_recording(tmp_path / "g", raw, n=9, d=0.05)
    assert replay(base, snapshots=10, spacing=0.06)[0].meta["array"]["spacing"] == 0.06
    assert replay(base, snapshots=10)[0].meta["array"]["spacing"] == pytest.approx(0.05)  # unchanged default


def test_reversed_geometry_is_mapped_back_to_the_recorded_frames(tmp_path):
    """Independent: a synthetic recording re-written with its channels reversed replays as the original."""
    written = record(tmp_path / "rec", frames=3, n_antennas=8)
    n = 8
    data = np.fromfile(str(tmp_path / "rec.sigmf-data"), np.complex64).reshape(-1, n)
    meta = json.load(open(str(tmp_path / "rec.sigmf-meta")))
    pts = [p["point"] for p in meta["captures"][0]["spatial:element_geometry"]]
    base = foreign_recording(
        tmp_path / "rev",
        np.ascontiguousarray(data[:, ::-1]),
        n=n,
        carrier=meta["captures"][0]["core:frequency"],
        geometry=pts[::-1],
    )
    got = replay(base, snapshots=10)
    for a, b in zip(written, got):
        assert np.array_equal(a.arrays["snapshots"], b.arrays["snapshots"])
    # the same data with the geometry in today's layout, mapped by the channel_order parameter instead
    base2 = foreign_recording(
        tmp_path / "rev2",
        np.ascontiguousarray(data[:, ::-1]),
        n=n,
        carrier=meta["captures"][0]["core:frequency"],
        d=written[0].meta["array"]["spacing"],
    )
    for order in ("reversed", list(range(n))[::-1]):
        got = replay(base2, snapshots=10, channel_order=order)
        assert np.array_equal(written[2].arrays["snapshots"], got[2].arrays["snapshots"])


def test_permuted_channels_follow_the_geometry(tmp_path):
    raw = _raw(n=4)
    d = 0.05
    y = [(2 * i - 3) * d / 2 for i in range(4)]
    perm = [2, 0, 3, 1]  # channel c sits at antenna perm[c]
    base = foreign_recording(tmp_path / "p", raw, geometry=[[0.0, y[perm[c]], 0.0] for c in range(4)])
    got = replay(base, snapshots=20)[0].arrays["snapshots"]
    for c in range(4):
        assert np.array_equal(got[perm[c]], raw[:, c])


def test_bad_channel_order_is_named(tmp_path):
    base = foreign_recording(tmp_path / "b", _raw())
    for bad in ([0, 1, 2], [0, 1, 1, 2], "backwards"):
        with pytest.raises(ParamError, match="channel_order"):
            SigMFSource(name="src", path=str(base), channel_order=bad)


def test_array_along_x_with_bearing_and_offset_is_mapped(tmp_path, caplog):
    raw = _raw(n=4)
    d = 0.05
    # elements along x, starting at the origin (not centred), listed in increasing x
    pts = [[i * d, 0.0, 0.0] for i in range(4)]
    base = foreign_recording(
        tmp_path / "x", raw, geometry=pts, capture_extra={"spatial:emitter_bearing": {"azimuth": 60.0, "range": 3.0}}
    )
    with caplog.at_level(logging.WARNING, logger="nearfield.sources.sigmf_source"):
        got = replay(base, snapshots=20)
    assert "along x" in caplog.text and "not centred" in caplog.text
    assert got[0].meta["array"]["spacing"] == pytest.approx(d)
    assert np.array_equal(got[0].arrays["snapshots"], raw.T)
    # direction (cos 60, -sin 60): its component along the array (x) is cos 60 = sin(theta)
    (tgt,) = got[0].meta["truth"]["targets"]
    assert tgt["theta"] == pytest.approx(np.arcsin(0.5)) and tgt["range"] == 3.0
    assert target_from_bearing({"azimuth": 90.0, "range": 1.0}, "x")["theta"] == pytest.approx(0.0)
    assert target_from_bearing({"azimuth": 0.0, "range": 1.0}, "x")["theta"] == pytest.approx(np.pi / 2)
    # forcing the other axis on this geometry is refused with the mapping hint
    with pytest.raises(SigMFFormatError, match="array_axis"):
        SigMFSource(path=str(base), array_axis="y")


def test_collection_with_reversed_channel_order_parameter(tmp_path):
    written = record(tmp_path / "rec", frames=2, n_antennas=6)
    coll = split_into_collection(tmp_path, tmp_path / "rec")
    got = replay(coll, channel_order="reversed")
    assert np.array_equal(got[1].arrays["snapshots"], written[1].arrays["snapshots"][::-1])
