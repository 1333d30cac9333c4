"""The core's one interface: every scheme is a localizer returning an Estimate; the core never imports the shell."""
import subprocess
import sys

import numpy as np
import pytest

from nearfield.estimators import LOCALIZERS, Estimate, Localization
from nearfield.estimators.coarse import coarse
from nearfield.scenario import paper_scenario


@pytest.fixture(scope="module")
def scenario():
    rng = np.random.default_rng(21)
    sc = paper_scenario(rng, n_antennas=128, snr_db=20, p_fault=0.03)
    return sc, sc.sample(rng)


@pytest.mark.parametrize("name", sorted(LOCALIZERS))
def test_every_scheme_returns_an_estimate_in_one_calling_convention(scenario, name):
    sc, Y = scenario
    est = LOCALIZERS[name](Y, sc.array, sc.pilots, sc.theta.size)
    assert isinstance(est, Estimate)
    K = sc.theta.size
    assert est.theta.shape == est.r.shape == (K,) and est.n_targets == K
    assert len(est.status) == K
    assert set(est.status) <= {"ok", "fallback", "model_mismatch", "range_at_bound", "unresolved"}
    assert [p["theta"] for p in est.positions()] == sorted(est.theta)
    if est.faulty is not None:
        assert est.faulty.dtype.kind == "i" and np.all(np.diff(est.faulty) > 0)
    if est.c_hat is not None:
        assert est.c_hat.shape == (sc.array.n_antennas,)


def test_the_proposed_and_coarse_schemes_are_near_the_truth(scenario):
    sc, Y = scenario
    est = LOCALIZERS["proposed"](Y, sc.array, sc.pilots)
    assert isinstance(est, Localization)
    assert np.allclose(est.theta, sc.theta, atol=1e-3) and np.allclose(est.r, sc.r, rtol=0.02)
    assert set(np.flatnonzero(np.abs(sc.c - 1) > 0.3)) <= set(est.faulty)
    c = coarse(Y, sc.array, sc.pilots)  # Phase 1 runs: its coarse positions, rows following the pilots
    assert np.allclose(c.theta, sc.theta, atol=0.02) and c.faulty is not None
    given = coarse(Y, sc.array, None, 3, faulty=est.faulty)  # a known faulty set: ascending theta, no detection
    assert given.faulty is None and np.all(np.diff(given.theta) > 0)
    assert np.allclose(given.theta, np.sort(sc.theta), atol=0.02)


def test_schemes_that_need_pilots_or_k_say_so(scenario):
    sc, Y = scenario
    with pytest.raises(ValueError, match="pilots"):
        LOCALIZERS["bcd"](Y, sc.array, None, 3)
    with pytest.raises(ValueError, match="n_targets"):
        LOCALIZERS["music2d"](Y, sc.array, None, None)
    with pytest.raises(ValueError, match="theta .* and r"):
        Estimate(np.zeros(2), np.zeros(3))


def test_the_core_imports_no_block_source_or_sink():
    code = ("import sys, nearfield, nearfield.estimators, nearfield.montecarlo, nearfield.experiments, "
            "nearfield.contract\n"
            "bad = [m for m in sys.modules if m.split('.')[:2] in (['nearfield', 'blocks'], ['nearfield', 'sources'],"
            " ['nearfield', 'sinks'])]\n"
            "assert not bad, bad\nassert 'numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
