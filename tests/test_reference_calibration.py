"""Reference calibration (nearfield.estimators.reference) against truth, independent fits and a variance formula."""

import numpy as np
import pytest
from scipy.optimize import least_squares

from nearfield.array import ULA
from nearfield.estimators.reference import (
    CalibrationStats,
    apply_hi,
    calibrate,
    calibrate_stats,
    dead_channels,
    hi_error,
    normalize_hi,
)
from nearfield.scenario import paper_scenario
from nearfield.steering import steering

REFS = [(0.3, 2.0), (-0.4, 3.0)]


def scene(rng, k, snr_db=300.0, t=200, n=16, **kw):
    kw = {"gain_std_db": 1.5, "phase_std": "uniform", **kw}
    return paper_scenario(
        rng,
        n_antennas=n,
        snr_db=snr_db,
        p_fault=0.0,
        n_snapshots=t,
        targets=REFS[:k],
        wavelength_m=None,
        carrier_hz=5.8e9,
        **kw,
    )


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("blind", [False, True])
def test_noiseless_gives_exact_hi_vector(k, blind):
    rng = np.random.default_rng(10 + k + 2 * blind)
    sc = scene(rng, k)
    Y = sc.mean()
    c_hat = calibrate(Y, sc.array, sc.theta, sc.r, None if blind else sc.pilots)
    # the common factor is fixed by the documented normalisation: compare with the truth so normalised
    assert np.allclose(c_hat, normalize_hi(sc.c), atol=1e-9)
    assert np.mean(np.abs(c_hat)) == pytest.approx(1.0)
    assert np.angle(np.sum(c_hat)) == pytest.approx(0.0, abs=1e-12)
    assert np.std(np.abs(sc.c)) > 0.05  # the test really has gain errors, not only phases


def test_pilot_k1_error_matches_the_ls_variance_and_shrinks_with_t():
    """Per-antenna LS: var(c_n) = sigma^2 / T (|a_n s_t| = 1); removing the common factor takes 1 of N dof."""
    n, trials = 16, 12
    nmse = {}
    for t in (100, 1600):
        rng = np.random.default_rng(t)
        errs, pred = [], []
        for _ in range(trials):
            sc = scene(rng, 1, snr_db=10.0, t=t, n=n)
            c_hat = calibrate(sc.sample(rng, np.complex128), sc.array, sc.theta, sc.r, sc.pilots)
            errs.append(hi_error(c_hat, sc.c))
            pred.append((n - 1) / n * sc.sigma2 / t / np.mean(np.abs(sc.c * sc.gains[0]) ** 2))
        nmse[t] = np.mean(errs)
        assert nmse[t] == pytest.approx(np.mean(pred), rel=0.25)
    assert 10.0 < nmse[100] / nmse[1600] < 25.0  # 1/T: factor 16


@pytest.mark.parametrize("blind", [False, True])
def test_noisy_k2_error_shrinks_like_one_over_t(blind):
    nmse = {}
    for t in (100, 1600):
        rng = np.random.default_rng(7 * t + blind)
        e = []
        for _ in range(8):
            sc = scene(rng, 2, snr_db=10.0, t=t)
            e.append(
                hi_error(
                    calibrate(sc.sample(rng, np.complex128), sc.array, sc.theta, sc.r, None if blind else sc.pilots),
                    sc.c,
                )
            )
        nmse[t] = np.mean(e)
    assert nmse[1600] < 3e-3
    assert 8.0 < nmse[100] / nmse[1600] < 32.0


def test_k2_pilots_is_the_least_squares_optimum():
    """Independent: scipy least_squares over (c, beta) with beta_0 = 1 fixing the common factor."""
    rng = np.random.default_rng(3)
    sc = scene(rng, 2, snr_db=5.0, t=60, n=8)
    Y = sc.sample(rng, np.complex128)
    A = steering(sc.array, sc.theta, sc.r)
    n = 8

    def resid(p):
        c = p[:n] + 1j * p[n : 2 * n]
        beta = np.array([1.0, p[2 * n] + 1j * p[2 * n + 1]])
        e = Y - c[:, None] * (A @ (beta[:, None] * sc.pilots))
        return np.concatenate([e.real.ravel(), e.imag.ravel()])

    c0 = sc.c * sc.gains[0]
    b1 = sc.gains[1] / sc.gains[0]
    fit = least_squares(resid, np.concatenate([c0.real, c0.imag, [b1.real, b1.imag]]), xtol=1e-14, ftol=1e-14)
    c_ls = fit.x[:n] + 1j * fit.x[n : 2 * n]
    c_hat = calibrate(Y, sc.array, sc.theta, sc.r, sc.pilots, n_iter=500, tol=1e-14)
    assert hi_error(c_hat, c_ls) < 1e-10


def test_blind_k1_is_the_rank_one_fit_of_the_snapshots():
    """Independent: the ML fit with an unknown waveform is the leading left singular vector of Y, over a."""
    rng = np.random.default_rng(4)
    sc = scene(rng, 1, snr_db=5.0, t=50)
    Y = sc.sample(rng, np.complex128)
    u = np.linalg.svd(Y)[0][:, 0]
    a = steering(sc.array, sc.theta, sc.r)[:, 0]
    assert hi_error(calibrate(Y, sc.array, sc.theta, sc.r), u / a) < 1e-20


@pytest.mark.parametrize("k, blind", [(1, False), (1, True), (2, False), (2, True)])
def test_dead_channel_comes_out_near_zero(k, blind):
    rng = np.random.default_rng(20 + k)
    sc = scene(rng, k, snr_db=20.0, t=400, dead_channels=[5])
    assert sc.c[5] == 0
    Y = sc.sample(rng, np.complex128)
    c_hat = calibrate(Y, sc.array, sc.theta, sc.r, None if blind else sc.pilots)
    assert np.all(np.isfinite(c_hat))
    assert list(dead_channels(c_hat)) == [5]
    assert abs(c_hat[5]) < 0.05
    assert hi_error(c_hat, sc.c) < 1e-3
    Z = apply_hi(Y.astype(np.complex64), c_hat)
    assert Z.dtype == np.complex64 and not np.any(Z[5])
    live = np.arange(16) != 5
    assert np.allclose(Z[live], Y[live] / c_hat[live, None], rtol=1e-5)


def test_noiseless_dead_channel_gives_no_nan():
    rng = np.random.default_rng(6)
    for blind in (False, True):
        sc = scene(rng, 2, dead_channels=2)
        c_hat = calibrate(sc.mean(), sc.array, sc.theta, sc.r, None if blind else sc.pilots)
        assert np.all(np.isfinite(c_hat))
        dead = np.flatnonzero(sc.c == 0)
        assert list(dead_channels(c_hat)) == list(dead)
        assert hi_error(c_hat, sc.c) < 1e-12


def test_apply_hi_is_eq27_for_unit_modulus():
    rng = np.random.default_rng(8)
    c = np.exp(2j * np.pi * rng.random(12))
    Y = rng.standard_normal((12, 5)) + 1j * rng.standard_normal((12, 5))
    assert np.allclose(apply_hi(Y, c), c.conj()[:, None] * Y)
    assert np.allclose(apply_hi(Y[:, 0], c), c.conj() * Y[:, 0])


def test_dead_channels_threshold():
    c = np.array([1.0, 0.9, 0.05, 1.2, 0.0, 0.3])
    assert list(dead_channels(c)) == [2, 4]
    assert list(dead_channels(c, threshold=0.6)) == [2, 4, 5]  # median 0.6: below 0.36
    with pytest.raises(ValueError, match="threshold"):
        dead_channels(c, threshold=2.0)


def test_statistics_accumulate_across_frames():
    rng = np.random.default_rng(9)
    sc = scene(rng, 2, snr_db=10.0, t=300)
    Y = sc.sample(rng, np.complex128)
    for blind in (False, True):
        st = CalibrationStats(16, 2, blind)
        for sl in (slice(0, 100), slice(100, 250), slice(250, 300)):
            st.update(Y[:, sl], None if blind else sc.pilots[:, sl])
        assert st.n_snapshots == 300
        whole = calibrate(Y, sc.array, sc.theta, sc.r, None if blind else sc.pilots)
        assert np.allclose(calibrate_stats(st, sc.array, sc.theta, sc.r), whole, atol=1e-10)


@pytest.mark.parametrize(
    "args, word",
    [
        (dict(Y=np.zeros((15, 10), complex)), "Y"),
        (dict(Y=np.full((16, 10), np.nan, complex)), "Y"),
        (dict(theta=[0.1, 0.2], r=[2.0]), "r"),
        (dict(theta=[2.0], r=[2.0]), "theta"),
        (dict(r=[-1.0]), "r"),
        (dict(pilots=np.ones((2, 10), complex)), "pilots"),
        (dict(pilots=np.ones((1, 9), complex)), "pilots"),
        (dict(n_iter=-1), "n_iter"),
        (dict(array="ula"), "array"),
    ],
)
def test_bad_arguments_are_named(args, word):
    kw = dict(Y=np.ones((16, 10), complex), array=ULA(16, 5.8e9), theta=[0.1], r=[2.0], pilots=None)
    kw.update(args)
    with pytest.raises(ValueError, match=rf"^{word}\b"):
        calibrate(**kw)


# -- the blocks and the shipped flowgraph ------------------------------------------------------------------------


def _truth_hi(frame):
    return np.array([complex(*v) for v in frame.meta["truth"]["hi"]])


def test_shipped_calibration_flowgraph_writes_the_hi_state(tmp_path):
    from pathlib import Path

    from nearfield import runtime
    from nearfield.estimators.reference import load_hi
    from nearfield.runtime import flowgraph
    from nearfield.sources.synthetic import SyntheticSource

    fg = Path(__file__).resolve().parent.parent / "flowgraphs" / "calibrate_reference.yaml"
    state = tmp_path / "hi.json"
    g = flowgraph.load_flowgraph(fg, overrides=[f"refcal.state_path={state}", "source.frames=4", "refcal.frames=4"])
    res = runtime.run_flowgraph(g, inproc=True, quiet=True)
    assert res.ok, res.error
    c_hat = load_hi(str(state), 16)
    p = {k: v for k, v in g.blocks["source"].params.items() if k != "type"}
    p["frames"] = 1
    truth = _truth_hi(next(SyntheticSource(**p).generate()))
    # 400 snapshots at 25 dB, blind K = 1: the LS variance is sigma^2 / (T |c|^2) per channel, ~1e-5 here
    assert hi_error(c_hat, truth) < 1e-3


def test_reference_calibrator_block_pilots_blind_and_apply(tmp_path):
    from nearfield.blocks.reference_calibrator import HIApply, ReferenceCalibrator
    from nearfield.sources.synthetic import SyntheticSource

    src = SyntheticSource(
        n_antennas=9,
        carrier_hz=1.24e9,
        targets=[{"theta": -0.3, "range": 1.5}, {"theta": 0.4, "range": 3.0}],
        snapshots=200,
        snr_db=20.0,
        p_fault=0.0,
        gain_std_db=1.5,
        phase_std="uniform",
        dead_channels=[7],
        frames=3,
        seed=2,
    )
    frames = list(src.generate())
    for use_pilots in (True, False):
        path = tmp_path / f"hi-{use_pilots}.json"
        blk = ReferenceCalibrator(
            targets=[{"theta": -0.3, "range": 1.5}, {"theta": 0.4, "range": 3.0}],
            state_path=str(path),
            frames=2,
            use_pilots=use_pilots,
        )
        blk.start()
        errs = []
        for f in frames:
            g = f.copy() if hasattr(f, "copy") else f
            out = blk.process(type(f)(seq=g.seq, t0=g.t0, arrays=dict(g.arrays), meta=dict(g.meta)))
            errs.append(out.meta["hi_nmse"])
        assert path.exists() and blk.stats.n_snapshots == 400  # frames: 2, the third only calibrated
        assert errs[1] < errs[0] and errs[1] < 5e-3
        assert not np.any(out.arrays["snapshots"][7])  # dead channel zeroed
        blk.close()
        app = HIApply(state_path=str(path))
        app.start()
        f = frames[2]
        y = app.process(type(f)(seq=f.seq, t0=f.t0, arrays=dict(f.arrays), meta=dict(f.meta))).arrays["snapshots"]
        assert np.allclose(y, out.arrays["snapshots"], atol=1e-6)


def test_reference_calibrator_params_and_bad_frames(tmp_path):
    from nearfield.block import BadFrame, ParamError
    from nearfield.blocks.reference_calibrator import HIApply, ReferenceCalibrator
    from nearfield.frame import Frame

    with pytest.raises(ParamError, match="targets"):
        ReferenceCalibrator(state_path="x.json")
    with pytest.raises(ParamError, match="theta"):
        ReferenceCalibrator(theta=2.0, range=1.0, state_path="x.json")
    with pytest.raises(ParamError, match="targets"):
        ReferenceCalibrator(targets=[{"theta": 0.1}], state_path="x.json")
    blk = ReferenceCalibrator(theta=0.1, range=2.0, state_path=str(tmp_path / "s.json"))
    blk.start()
    arr = {"n_antennas": 8, "carrier_hz": 5.8e9, "spacing": 0.025, "wavelength_m": 0.0517}
    with pytest.raises(BadFrame, match="snapshots"):
        blk.process(Frame(seq=0, t0=0.0, arrays={"snapshots": np.ones((7, 10), np.complex64)}, meta={"array": arr}))
    with pytest.raises(BadFrame, match="pilots"):
        blk.process(
            Frame(
                seq=0,
                t0=0.0,
                arrays={"snapshots": np.ones((8, 10), np.complex64), "pilots": np.ones((2, 10), np.complex64)},
                meta={"array": arr},
            )
        )
    assert blk.stats is None and blk.c is None  # a bad frame leaves the state as it was
    blk.close()
    assert not (tmp_path / "s.json").exists()  # nothing estimated, nothing written
    (tmp_path / "other.json").write_text('{"version": 1, "evidence": [[1.0, 0.0], [0.5, 0.5]]}')  # a calibrator's state
    with pytest.raises(ValueError, match="hi_vector"):
        HIApply(state_path=str(tmp_path / "other.json")).start()
