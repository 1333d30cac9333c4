"""Baseline block: coarse localization alone."""

import numpy as np
import pytest

from nearfield.block import BadFrame
from nearfield.blocks.coarse import CoarseLocalizer
from nearfield.frame import Frame
from nearfield.scenario import paper_scenario


def test_coarse_block_reports_triangulated_targets_sorted():
    rng = np.random.default_rng(31)
    sc = paper_scenario(rng, snr_db=20)
    blk = CoarseLocalizer(name="coarse")
    blk.start()
    out = blk.process(
        Frame(
            0,
            0.0,
            {"snapshots": sc.sample(rng), "pilots": sc.pilots.astype(np.complex64)},
            {"array": sc.array.describe(), "faulty": [int(i) for i in sc.faulty]},
        )
    )
    th = np.array([t["theta"] for t in out.meta["targets"]])
    r = np.array([t["range"] for t in out.meta["targets"]])
    order = np.argsort(sc.theta)
    assert np.all(np.diff(th) > 0)
    assert np.allclose(th, sc.theta[order], atol=2e-3) and np.allclose(r, sc.r[order], rtol=0.05)


def test_coarse_block_auto_order_without_pilots_and_bad_frame():
    rng = np.random.default_rng(32)
    sc = paper_scenario(rng, snr_db=20, p_fault=0.0)
    blk = CoarseLocalizer(name="coarse")
    out = blk.process(Frame(0, 0.0, {"snapshots": sc.sample(rng)}, {"array": sc.array.describe()}))
    assert len(out.meta["targets"]) == 3
    with pytest.raises(BadFrame, match="array"):
        blk.process(Frame(1, 0.0, {"snapshots": sc.sample(rng)}, {}))
