"""The fault_detector block: streaming evidence, state file, tracking, bad frames."""

import json

import numpy as np
import pytest

from nearfield.block import BadFrame
from nearfield.blocks.fault_detector import FaultDetector
from nearfield.frame import Frame
from nearfield.scenario import paper_scenario


def _frames(sc, rng, n, pilots=True):
    for seq in range(n):
        arrays = {"snapshots": sc.sample(rng)}
        if pilots:
            arrays["pilots"] = sc.pilots.astype(np.complex64)
        yield Frame(seq, 0.0, arrays, {"array": sc.array.describe()})


def test_block_accumulates_evidence_and_saves_state(tmp_path):
    rng = np.random.default_rng(5)
    sc = paper_scenario(rng, snr_db=0, p_fault=0.04)
    state = tmp_path / "det.json"
    blk = FaultDetector(name="detect", state_path=str(state))
    blk.start()
    for f in _frames(sc, rng, 6):
        out = blk.process(f)
    assert set(out.meta["faulty"]) <= set(sc.faulty)
    missed = set(np.flatnonzero(np.abs(sc.c - 1) > 0.3)) - set(out.meta["faulty"])
    assert not missed
    assert {"coarse", "model_targets", "gains", "n_targets", "noise_var"} <= set(out.meta)
    blk.close()  # runs at end of stream, and also after Ctrl-C or a failure elsewhere
    saved = json.loads(state.read_text())
    assert saved["faulty"] == out.meta["faulty"] and saved["frames"] == 6
    again = FaultDetector(name="detect", state_path=str(state))
    again.start()  # resumes calibrated
    assert list(again.faulty) == out.meta["faulty"] and np.allclose(again.e_acc, blk.e_acc)


def test_block_drops_bad_frame_without_touching_state():
    rng = np.random.default_rng(6)
    sc = paper_scenario(rng, n_antennas=256, snr_db=10)
    blk = FaultDetector(name="detect")
    blk.start()
    blk.process(next(_frames(sc, rng, 1)))
    before = (blk.e_acc.copy(), blk.faulty.copy(), blk.frames_seen)
    with pytest.raises(BadFrame, match="snapshots"):
        blk.process(Frame(1, 0.0, {"snapshots": np.zeros((100, 100), np.complex64)}, {"array": sc.array.describe()}))
    with pytest.raises(BadFrame, match="array"):
        blk.process(Frame(2, 0.0, {"snapshots": sc.sample(rng)}, {}))
    assert np.array_equal(before[0], blk.e_acc) and np.array_equal(before[1], blk.faulty)
    assert before[2] == blk.frames_seen


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    p = tmp_path / "s.json"
    p.write_text("{not json")
    blk = FaultDetector(name="detect", state_path=str(p))
    with pytest.raises(ValueError, match="detect.*state_path"):
        blk.start()


def test_settled_detector_tracks_and_searches_again_when_a_target_jumps():
    rng = np.random.default_rng(12)
    sc = paper_scenario(rng, snr_db=10, p_fault=0.02)
    blk = FaultDetector(name="detect", settle_frames=2, recheck_every=100)
    blk.start()
    methods = [blk.process(f).meta["coarse_method"] for f in _frames(sc, rng, 6)]
    assert methods[:3] == ["triangulation"] * 3 and methods[-1] == "track"
    sc.theta = sc.theta + np.array([0.1, 0.0, 0.0])  # target 0 jumps by 0.1 rad
    out = blk.process(next(_frames(sc, rng, 1)))
    assert out.meta["coarse_method"] == "triangulation"
    got = np.array([t["theta"] for t in out.meta["model_targets"]])
    assert np.allclose(got, sc.theta, atol=1e-3)


def test_nan_pilots_are_a_bad_frame_and_state_is_untouched():
    rng = np.random.default_rng(13)
    sc = paper_scenario(rng, snr_db=10)
    blk = FaultDetector(name="detect")
    blk.start()
    blk.process(next(_frames(sc, rng, 1)))
    e0 = blk.e_acc.copy()
    bad = next(_frames(sc, rng, 1))
    bad.arrays["pilots"] = bad.arrays["pilots"].copy()
    bad.arrays["pilots"][0, 3] = np.nan
    with pytest.raises(BadFrame, match="pilots"):
        blk.process(bad)
    assert np.array_equal(e0, blk.e_acc) and blk.frames_seen == 1


def test_degenerate_frames_are_dropped_and_leave_the_state_alone():
    rng = np.random.default_rng(14)
    sc = paper_scenario(rng, snr_db=10)
    blk = FaultDetector(name="detect")
    blk.start()
    blk.process(next(_frames(sc, rng, 1)))
    before = (blk.e_acc.copy(), blk.faulty.copy(), blk.frames_seen, blk.sigma2, blk.unchanged)
    zero = Frame(
        1,
        0.0,
        {"snapshots": np.zeros((256, 100), np.complex64), "pilots": sc.pilots.astype(np.complex64)},
        {"array": sc.array.describe()},
    )
    with pytest.raises(BadFrame, match="all zero"):
        blk.process(zero)
    short = Frame(
        2,
        0.0,
        {"snapshots": sc.sample(rng)[:, :1], "pilots": sc.pilots[:, :1].astype(np.complex64)},
        {"array": sc.array.describe()},
    )
    with pytest.raises(BadFrame, match="T=1"):
        blk.process(short)
    # a frame where half the array is scrambled flags far too many antennas: passed on, not accumulated
    bad = next(_frames(sc, rng, 1))
    scramble = np.ones(256, complex)
    scramble[::2] = np.exp(2j * np.pi * rng.random(128))
    bad.arrays["snapshots"] = (scramble[:, None] * bad.arrays["snapshots"]).astype(np.complex64)
    try:
        blk.process(bad)
    except BadFrame:
        pass
    after = (blk.e_acc, blk.faulty, blk.frames_seen, blk.sigma2, blk.unchanged)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]
    good = blk.process(next(_frames(sc, rng, 1)))  # and it goes on
    assert set(np.flatnonzero(np.abs(sc.c - 1) > 0.3)) <= set(good.meta["faulty"])


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda st: st.update(noise_var=-1.0), "noise_var"),
        (lambda st: st.update(noise_var=float("nan")), "noise_var"),
        (lambda st: st["e"].__setitem__(0, -2.0), "'e'"),
        (lambda st: st.update(frames=-3), "frames"),
        (lambda st: st.update(faulty=[0, 99999]), "faulty"),
        (lambda st: st.update(faulty=[-1]), "faulty"),
    ],
)
def test_bad_state_fields_are_refused_naming_file_and_field(tmp_path, edit, field):
    rng = np.random.default_rng(8)
    sc = paper_scenario(rng, n_antennas=64, snr_db=20)
    p = tmp_path / "det.json"
    blk = FaultDetector(name="detect", state_path=str(p))
    blk.start()
    blk.process(next(_frames(sc, rng, 1)))
    blk.checkpoint()
    st = json.loads(p.read_text())
    edit(st)
    p.write_text(json.dumps(st))
    with pytest.raises(ValueError, match=f"detect.*{p.name}.*{field}"):
        FaultDetector(name="detect", state_path=str(p)).start()


def test_checkpoint_saves_atomically_and_is_a_no_op_before_any_frame(tmp_path):
    rng = np.random.default_rng(9)
    sc = paper_scenario(rng, n_antennas=64, snr_db=20)
    p = tmp_path / "det.json"
    blk = FaultDetector(name="detect", state_path=str(p))
    blk.start()
    blk.checkpoint()
    assert not p.exists()
    blk.process(next(_frames(sc, rng, 1)))
    blk.checkpoint()
    st = json.loads(p.read_text())
    assert st["frames"] == 1 and st["faulty"] == [int(i) for i in blk.faulty]
    assert [f.name for f in tmp_path.iterdir()] == ["det.json"]  # no temporary file left behind
    FaultDetector(name="nostate").checkpoint()  # without state_path: nothing happens
