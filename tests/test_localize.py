"""The library entry point end to end, against the CRB with perfect HI knowledge."""

import numpy as np

import nearfield as nf
from nearfield.bounds import crb


def _crb_std(sc):
    C = crb(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.sigma2, sc.c)
    K = sc.theta.size
    d = np.sqrt(np.diag(C))
    return d[2 * K : 3 * K], d[3 * K :]


def test_one_trial_at_20db_every_target_within_a_few_crb_and_every_fault_found():
    rng = np.random.default_rng(2024)
    sc = nf.paper_scenario(rng, snr_db=20, p_fault=0.02)
    est = nf.localize(sc.sample(rng), sc.array, sc.pilots)
    s_th, s_r = _crb_std(sc)
    assert np.all(np.abs(est.theta - sc.theta) < 4 * s_th)
    assert np.all(np.abs(est.r - sc.r) < 4 * s_r)
    matters = set(np.flatnonzero(np.abs(sc.c - 1) > 0.3))
    assert matters <= set(est.faulty) <= set(sc.faulty)
    assert nf.hi_nmse(est.c_hat, sc.c) < 1e-4
    # the paper's un-refined estimate is kept, and is worse in angle (Fresnel bias)
    assert np.max(np.abs(est.music_theta - sc.theta) / s_th) > np.max(np.abs(est.theta - sc.theta) / s_th)
    assert [p["theta"] for p in est.positions()] == sorted(est.theta)


def test_without_pilots_and_unknown_number_of_targets():
    rng = np.random.default_rng(77)
    sc = nf.paper_scenario(rng, snr_db=20, p_fault=0.02)
    est = nf.localize(sc.sample(rng), sc.array, None, "auto")
    s_th, s_r = _crb_std(sc)
    order = np.argsort(est.theta)
    truth = np.argsort(sc.theta)
    assert est.theta.size == 3
    assert np.all(np.abs(est.theta[order] - sc.theta[truth]) < 6 * s_th[truth])
    assert np.all(np.abs(est.r[order] - sc.r[truth]) < 6 * s_r[truth])
    assert set(np.flatnonzero(np.abs(sc.c - 1) > 0.3)) <= set(est.faulty)


def test_paper_mode_without_refinement_returns_music_estimate():
    rng = np.random.default_rng(5)
    sc = nf.paper_scenario(rng, snr_db=30, p_fault=0.0)
    est = nf.localize(sc.sample(rng), sc.array, sc.pilots, refine=False)
    assert est.gains is None and np.array_equal(est.theta, est.music_theta)
    assert np.allclose(est.theta, sc.theta, atol=2e-3) and np.allclose(est.r, sc.r, rtol=0.05)
