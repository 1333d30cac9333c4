"""Phase 1 in the core: partition, triangulation, pilot matching, ISTA detection (no frames)."""

import numpy as np
import pytest

from nearfield.estimators.phase1 import detect_faults
from nearfield.estimators.subarrays import (
    coarse_localize,
    estimate_order,
    match_to_pilots,
    partition_subarrays,
    triangulate,
)
from nearfield.scenario import paper_scenario


def test_partition_respects_both_criteria():
    subs = partition_subarrays(100, [10, 11, 50], n_sub=20, min_size=5)
    flat = np.concatenate(subs)
    assert not set(flat) & {10, 11, 50}  # criterion 1
    assert all(s.size <= 20 for s in subs)  # criterion 2
    assert all(np.all(np.diff(s) == 1) for s in subs)  # contiguous
    assert set(flat) == set(range(100)) - {10, 11, 50}  # nothing wasted (all runs >= 5)
    assert [s.size for s in partition_subarrays(30, [3], 40, 5)] == [26]  # the 3-antenna run is dropped


def test_triangulation_is_exact_for_exact_bearings_and_robust_to_an_outlier():
    x, y = 9.0, -3.0
    centres = np.linspace(-0.6, 0.6, 7)
    angles = np.arctan2(y - centres, x)
    th, r, n = triangulate(angles, centres)
    assert r == pytest.approx(np.hypot(x, y), abs=1e-9)
    assert th == pytest.approx(np.arcsin(y / np.hypot(x, y)), abs=1e-12)
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
