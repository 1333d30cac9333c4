"""Phase 1: partition, triangulation, pilot matching, ISTA detection, streaming state."""
import json

import numpy as np
import pytest

from nearfield.block import BadFrame
from nearfield.blocks.fault_detector import FaultDetector
from nearfield.estimators.phase1 import detect_faults
from nearfield.estimators.subarrays import (coarse_localize, estimate_order, match_to_pilots, partition_subarrays,
                                            triangulate)
from nearfield.frame import Frame
from nearfield.scenario import paper_scenario


def test_partition_respects_both_criteria():
    subs = partition_subarrays(100, [10, 11, 50], n_sub=20, min_size=5)
    flat = np.concatenate(subs)
    assert not set(flat) & {10, 11, 50}                          # criterion 1
    assert all(s.size <= 20 for s in subs)                       # criterion 2
    assert all(np.all(np.diff(s) == 1) for s in subs)            # contiguous
    assert set(flat) == set(range(100)) - {10, 11, 50}           # nothing wasted (all runs >= 5)
    assert [s.size for s in partition_subarrays(30, [3], 40, 5)] == [26]  # the 3-antenna run is dropped


def test_triangulation_is_exact_for_exact_bearings_and_robust_to_an_outlier():
    x, y = 9.0, -3.0
    centres = np.linspace(-0.6, 0.6, 7)
    angles = np.arctan2(y - centres, x)
    th, r, n = triangulate(angles, centres)
    assert r == pytest.approx(np.hypot(x, y), abs=1e-9) and th == pytest.approx(np.arcsin(y / np.hypot(x, y)), abs=1e-12)
    bad = angles.copy()
    bad[2] += 0.05  # one wild subarray
    th2, r2, n2 = triangulate(bad, centres)
    assert n2 == 6 and r2 == pytest.approx(r, abs=1e-6)
    assert np.isnan(triangulate(np.array([0.1, np.nan]), np.array([0.0, 0.1]))[0])


def test_match_to_pilots_undoes_a_permutation():
    rng = np.random.default_rng(4)
    sc = paper_scenario(rng, snr_db=10)
    Y = sc.sample(rng)
    perm = np.array([2, 0, 1])
    found = match_to_pilots(Y, sc.array, sc.theta[perm], sc.r[perm], sc.pilots)
    assert np.array_equal(perm[found], np.arange(3))


def test_coarse_localization_near_truth():
    rng = np.random.default_rng(11)
    sc = paper_scenario(rng, snr_db=20, p_fault=0.0)
    th, r, q = coarse_localize(sc.sample(rng), sc.array, 3)
    order = np.argsort(sc.theta)
    assert q >= 6
    assert np.allclose(th, sc.theta[order], atol=2e-3) and np.allclose(r, sc.r[order], rtol=0.05)


def test_detect_faults_finds_every_fault_at_20db():
    rng = np.random.default_rng(21)
    sc = paper_scenario(rng, snr_db=20, p_fault=0.03)
    res = detect_faults(sc.sample(rng), sc.array, sc.pilots)
    assert len(sc.faulty) >= 3
    matters = set(np.flatnonzero(np.abs(sc.c - 1) > 0.3))
    assert matters <= set(res.faulty) <= set(sc.faulty)
    # the HI model positions follow the pilot rows
    assert np.allclose(res.theta, sc.theta, atol=1e-4) and np.allclose(res.r, sc.r, rtol=0.01)
    # the noise estimate is the true one within its sampling spread
    assert res.sigma2 == pytest.approx(sc.sigma2, rel=0.1)
    # the fault mask estimates z = c - 1 on detected antennas
    assert np.allclose(res.z[res.faulty], (sc.c - 1)[res.faulty], atol=0.05)


def test_detect_faults_without_pilots_and_auto_order():
    rng = np.random.default_rng(22)
    sc = paper_scenario(rng, snr_db=20, p_fault=0.03)
    Y = sc.sample(rng)
    assert estimate_order(Y, sc.array) == 3
    res = detect_faults(Y, sc.array, None, "auto")
    matters = set(np.flatnonzero(np.abs(sc.c - 1) > 0.3))
    assert res.n_targets == 3 and matters <= set(res.faulty) <= set(sc.faulty)


def test_bad_shapes_are_reported():
    rng = np.random.default_rng(0)
    sc = paper_scenario(rng, n_antennas=64, n_snapshots=20)
    with pytest.raises(ValueError, match="snapshots"):
        detect_faults(np.zeros((63, 20)), sc.array, sc.pilots)
    with pytest.raises(ValueError, match="pilots"):
        detect_faults(sc.sample(rng), sc.array, sc.pilots[:, :5])


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
    assert np.array_equal(before[0], blk.e_acc) and np.array_equal(before[1], blk.faulty) and before[2] == blk.frames_seen


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
    zero = Frame(1, 0.0, {"snapshots": np.zeros((256, 100), np.complex64), "pilots": sc.pilots.astype(np.complex64)},
                 {"array": sc.array.describe()})
    with pytest.raises(BadFrame, match="all zero"):
        blk.process(zero)
    short = Frame(2, 0.0, {"snapshots": sc.sample(rng)[:, :1], "pilots": sc.pilots[:, :1].astype(np.complex64)},
                  {"array": sc.array.describe()})
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
