"""Phase 2: phase calibration against the true HI vector, deep fades, streaming evidence."""

import numpy as np
import pytest

from nearfield.block import BadFrame
from nearfield.blocks.calibrator import Calibrator
from nearfield.estimators.phase2 import calibrate, ideal_signal, unwrap_phase
from nearfield.frame import Frame
from nearfield.scenario import paper_scenario


def test_noise_free_calibration_is_exact():
    rng = np.random.default_rng(1)
    sc = paper_scenario(rng, snr_db=20, p_fault=0.05)
    Y = sc.mean()
    c_hat, Yc = calibrate(Y, sc.array, sc.faulty, sc.theta, sc.r, sc.gains, sc.pilots)
    assert np.allclose(c_hat, sc.c, atol=1e-10)
    assert np.allclose(Yc, Y / sc.c[:, None], atol=1e-9)  # eq. (27): conj(c) * y with |c| = 1


def test_circular_estimate_survives_deep_fades_where_unwrap_slips():
    # one antenna, two targets whose signals cancel every ~200 snapshots (|x| dips to 0.03)
    t = np.arange(200)
    x = np.exp(1j * 0.3 * t) + 0.97 * np.exp(1j * 0.33 * t)
    zeta = 2.0
    circ_err, unw_err = [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        y = np.exp(1j * zeta) * x + 0.1 * (rng.standard_normal(200) + 1j * rng.standard_normal(200)) / np.sqrt(2)
        circ_err.append(abs(np.angle(np.exp(1j * (np.angle(np.sum(y * x.conj())) - zeta)))))
        unw_err.append(abs(np.angle(np.exp(1j * (unwrap_phase(y[None], x[None])[0] - zeta)))))
    assert max(circ_err) < 0.01  # ML: sigma / sqrt(sum |x|^2) ~ 0.004
    assert sum(e > 1.0 for e in unw_err) >= 1  # the paper's eqs. (24)-(25) slip by 2 pi somewhere


def test_ideal_signal_is_the_sum_over_targets():
    rng = np.random.default_rng(2)
    sc = paper_scenario(rng, n_antennas=32, n_snapshots=8)
    X = ideal_signal(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, rows=[0, 5])
    assert np.allclose(X, (sc.mean() / sc.c[:, None])[[0, 5]])


def _frame(sc, rng, seq, faulty):
    return Frame(
        seq,
        0.0,
        {"snapshots": sc.sample(rng), "pilots": sc.pilots.astype(np.complex64)},
        {
            "array": sc.array.describe(),
            "faulty": [int(i) for i in faulty],
            "model_targets": [{"theta": float(a), "range": float(b)} for a, b in zip(sc.theta, sc.r)],
            "gains": [[g.real, g.imag] for g in sc.gains],
        },
    )


def test_block_improves_with_frames_and_persists(tmp_path):
    rng = np.random.default_rng(4)
    sc = paper_scenario(rng, snr_db=0, p_fault=0.04, n_snapshots=20)
    blk = Calibrator(name="cal", state_path=str(tmp_path / "cal.json"))
    blk.start()
    errs = []
    for seq in range(20):
        out = blk.process(_frame(sc, rng, seq, sc.faulty))
        errs.append(np.sum(np.abs(out.arrays["c_hat"] - sc.c) ** 2))
    assert np.mean(errs[-5:]) < np.mean(errs[:2]) / 4  # evidence accumulates (~1/frames)
    assert out.arrays["snapshots"].dtype == np.complex64 and out.arrays["c_hat"].shape == (256,)
    blk.close()
    again = Calibrator(name="cal", state_path=str(tmp_path / "cal.json"))
    again.start()
    assert np.allclose(again.evidence, blk.evidence)


def test_block_needs_detector_meta():
    rng = np.random.default_rng(5)
    sc = paper_scenario(rng, n_antennas=32, n_snapshots=8)
    blk = Calibrator(name="cal")
    blk.start()
    with pytest.raises(BadFrame, match="fault_detector"):
        blk.process(Frame(0, 0.0, {"snapshots": sc.sample(rng)}, {"array": sc.array.describe()}))


def test_checkpoint_saves_the_evidence_and_bad_evidence_is_refused(tmp_path):
    import json

    rng = np.random.default_rng(11)
    sc = paper_scenario(rng, n_antennas=64, snr_db=20, p_fault=0.1)
    p = tmp_path / "cal.json"
    blk = Calibrator(name="cal", state_path=str(p))
    blk.start()
    blk.checkpoint()
    assert not p.exists()
    meta = {
        "array": sc.array.describe(),
        "faulty": [int(i) for i in sc.faulty],
        "model_targets": [{"theta": float(t), "range": float(r)} for t, r in zip(sc.theta, sc.r)],
        "gains": [[float(g.real), float(g.imag)] for g in sc.gains],
    }
    blk.process(Frame(0, 0.0, {"snapshots": sc.sample(rng), "pilots": sc.pilots}, meta))
    blk.checkpoint()
    st = json.loads(p.read_text())
    assert len(st["evidence"]) == 64
    st["evidence"][0] = [float("inf"), 0.0]
    p.write_text(json.dumps(st))
    with pytest.raises(ValueError, match="cal.*cal.json.*evidence"):
        Calibrator(name="cal", state_path=str(p)).start()


def test_block_output_is_eq_27_on_every_row():
    """The block multiplies only the faulty rows; the result equals conj(c_hat) * Y on all rows, bit for bit."""
    rng = np.random.default_rng(9)
    sc = paper_scenario(rng, n_antennas=64, p_fault=0.1)
    blk = Calibrator(name="cal")
    blk.start()
    f = _frame(sc, rng, 0, sc.faulty)
    Y = f.arrays["snapshots"].copy()
    out = blk.process(f)
    c_hat = out.arrays["c_hat"].astype(np.complex128)
    assert sc.faulty.size > 0 and np.all(c_hat[np.setdiff1d(np.arange(64), sc.faulty)] == 1)
    ref = np.ones(64, complex)  # eq. (26) rebuilt from the evidence the block kept
    ref[sc.faulty] = np.exp(1j * np.angle(blk.evidence[sc.faulty]))
    expect = (ref.conj()[:, None] * Y).astype(np.complex64)
    assert out.arrays["snapshots"].dtype == np.complex64 and np.array_equal(out.arrays["snapshots"], expect)
