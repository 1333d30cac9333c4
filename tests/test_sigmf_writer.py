"""QA of the SigMF writer: file contents, checksum, validator, crash safety, bad frames."""

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sigmf.sigmffile import fromfile
from sigmf_helpers import record

from nearfield.array import ULA
from nearfield.block import BadFrame, ParamError
from nearfield.frame import Frame
from nearfield.sinks.sigmf_writer import SigMFWriter
from nearfield.sources.sigmf_source import SigMFSource
from nearfield.sources.synthetic import SyntheticSource

logging.getLogger("nearfield.sources.synthetic").setLevel(logging.ERROR)


def validate_with_library(meta_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undeclared namespaces would warn
        sf = fromfile(str(meta_path))  # recomputes and checks core:sha512 when present
        sf.validate()
    return sf


def run_validator_cli(*paths):
    exe = shutil.which("sigmf_validate")
    cmd = [exe] if exe else [sys.executable, "-m", "sigmf.validate"]
    return subprocess.run(cmd + [str(p) for p in paths], capture_output=True, text=True, timeout=60)


def test_recording_contents_checksum_and_validator(tmp_path):
    frames = record(tmp_path / "rec", frames=4)
    meta = json.loads((tmp_path / "rec.sigmf-meta").read_text())
    g = meta["global"]
    raw = (tmp_path / "rec.sigmf-data").read_bytes()
    assert g["core:sha512"] == hashlib.sha512(raw).hexdigest()
    assert g["core:num_channels"] == 16 and g["spatial:num_elements"] == 16 and g["core:datatype"] == "cf32_le"
    assert g["nearfield:complete"] is True and g["nearfield:valid_samples"] == 40 and g["nearfield:frames"] == 4
    assert g["core:sample_rate"] == 1000.0
    assert {e["name"] for e in g["core:extensions"]} == {"spatial", "nearfield"}
    # sample-major interleaving: sample t holds the 16 antennas
    data = np.frombuffer(raw, "<c8").reshape(40, 16)
    assert np.array_equal(data, np.concatenate([f.arrays["snapshots"].T for f in frames]))
    pil = np.fromfile(tmp_path / "rec-pilots.sigmf-data", "<c8").reshape(40, 3)
    assert np.array_equal(pil, np.concatenate([f.arrays["pilots"].T for f in frames]))
    cap = meta["captures"][0]
    ula = ULA.from_meta(frames[0].meta["array"])
    assert cap["core:frequency"] == 30e9
    assert np.allclose(
        [p["point"] for p in cap["spatial:element_geometry"]],
        np.c_[np.zeros(16), ula.positions, np.zeros(16)],
        rtol=0,
        atol=1e-15,
    )
    anns = meta["annotations"]
    assert [(a["core:sample_start"], a["core:sample_count"], a["nearfield:seq"]) for a in anns] == [
        (10 * i, 10, i) for i in range(4)
    ]
    assert anns[2]["nearfield:truth"] == frames[2].meta["truth"]
    assert "spatial:emitter_bearing" not in cap  # three targets: truth lives in nearfield:truth
    sf = validate_with_library(tmp_path / "rec.sigmf-meta")
    assert np.array_equal(sf.read_samples(0, 40), data)  # the library reads what we wrote
    validate_with_library(tmp_path / "rec-pilots.sigmf-meta")
    res = run_validator_cli(tmp_path / "rec.sigmf-meta", tmp_path / "rec-pilots.sigmf-meta")
    assert res.returncode == 0, res.stderr


def test_validator_cli_catches_a_corrupted_recording(tmp_path):
    record(tmp_path / "rec", frames=2)
    raw = bytearray((tmp_path / "rec.sigmf-data").read_bytes())
    raw[5] ^= 0xFF
    (tmp_path / "rec.sigmf-data").write_bytes(bytes(raw))
    assert run_validator_cli(tmp_path / "rec.sigmf-meta").returncode != 0


def test_static_single_target_gets_spatial_emitter_bearing(tmp_path):
    record(tmp_path / "one", frames=3, targets=[{"theta": 0.4, "range": 9.0}])
    cap = json.loads((tmp_path / "one.sigmf-meta").read_text())["captures"][0]
    b = cap["spatial:emitter_bearing"]
    assert b["azimuth"] == pytest.approx(-np.degrees(0.4)) and b["range"] == 9.0
    record(tmp_path / "mov", frames=3, targets=[{"theta": 0.4, "range": 9.0, "velocity": [1.0, 0.0]}])
    cap = json.loads((tmp_path / "mov.sigmf-meta").read_text())["captures"][0]
    assert "spatial:emitter_bearing" not in cap


def test_provisional_metadata_survives_a_crash(tmp_path, caplog):
    frames = list(SyntheticSource(n_antennas=8, snapshots=6, frames=3, seed=2).generate())
    w = SigMFWriter(path=str(tmp_path / "crash"), checkpoint_s=1000.0)
    w.start()
    for f in frames:
        w.process(f)
    w._data.fh.flush()  # the OS has all three frames, the last checkpoint saw only the first
    w._pilots.fh.flush()
    # -- "crash" here: no finish(), no close() --
    meta = json.loads((tmp_path / "crash.sigmf-meta").read_text())
    g = meta["global"]
    assert g["nearfield:complete"] is False and g["nearfield:valid_samples"] == 6
    assert "core:sha512" not in g and len(meta["annotations"]) == 1
    validate_with_library(tmp_path / "crash.sigmf-meta")
    assert run_validator_cli(tmp_path / "crash.sigmf-meta").returncode == 0
    with caplog.at_level(logging.WARNING):
        src = SigMFSource(path=str(tmp_path / "crash"))
        got = list(src.generate())
        src.close()
    assert "incomplete" in caplog.text
    assert len(got) == 1 and np.array_equal(got[0].arrays["snapshots"], frames[0].arrays["snapshots"])
    w.close()  # close after an interruption: final metadata, complete = False, checksum of all data
    g = json.loads((tmp_path / "crash.sigmf-meta").read_text())["global"]
    assert g["nearfield:complete"] is False and g["nearfield:valid_samples"] == 18 and "core:sha512" in g
    validate_with_library(tmp_path / "crash.sigmf-meta")


def test_checkpoint_every_frame(tmp_path):
    frames = list(SyntheticSource(n_antennas=8, snapshots=6, frames=3, seed=2, pilots=False).generate())
    w = SigMFWriter(path=str(tmp_path / "cp"), checkpoint_s=0.0)
    w.start()
    for i, f in enumerate(frames):
        w.process(f)
        g = json.loads((tmp_path / "cp.sigmf-meta").read_text())["global"]
        assert g["nearfield:valid_samples"] == 6 * (i + 1)
    w.finish()
    w.close()
    assert not (tmp_path / "cp-pilots.sigmf-meta").exists()
    g = json.loads((tmp_path / "cp.sigmf-meta").read_text())["global"]
    assert "nearfield:pilots_dataset" not in g


def test_bad_frames_are_refused_without_writing(tmp_path):
    src = list(SyntheticSource(n_antennas=8, snapshots=6, frames=2, seed=2).generate())
    w = SigMFWriter(name="rec", path=str(tmp_path / "bad"))
    w.start()
    with pytest.raises(BadFrame, match="meta\\['array'\\]"):
        w.process(Frame(0, 0.0, {"snapshots": src[0].arrays["snapshots"]}, {}))
    w.process(src[0])
    size = (tmp_path / "bad.sigmf-data").stat().st_size
    cases = [
        Frame(1, 0.0, {"snapshots": np.zeros((4, 6), np.complex64), "pilots": src[1].arrays["pilots"]}, src[1].meta),
        Frame(
            1,
            0.0,
            {"snapshots": src[1].arrays["snapshots"].astype(np.complex128), "pilots": src[1].arrays["pilots"]},
            src[1].meta,
        ),
        Frame(1, 0.0, {"snapshots": src[1].arrays["snapshots"]}, src[1].meta),  # pilots missing
        Frame(1, 0.0, {"snapshots": src[1].arrays["snapshots"], "pilots": np.zeros((3, 5), np.complex64)}, src[1].meta),
    ]
    for f in cases:
        with pytest.raises(BadFrame, match="'rec'"):
            w.process(f)
    assert (tmp_path / "bad.sigmf-data").stat().st_size == size  # nothing appended
    w.finish()
    w.close()
    assert json.loads((tmp_path / "bad.sigmf-meta").read_text())["global"]["nearfield:frames"] == 1


def test_existing_recording_is_not_overwritten_by_default(tmp_path):
    record(tmp_path / "rec", frames=1)
    with pytest.raises(ParamError, match="overwrite"):
        SigMFWriter(path=str(tmp_path / "rec.sigmf-meta")).start()
    w = SigMFWriter(path=str(tmp_path / "rec"), overwrite=True)
    w.start()
    w.close()
