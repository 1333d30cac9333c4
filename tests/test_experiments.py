"""Experiment runner: CSV/PNG outputs, resume, errors, and summaries equal summarize() on the cache."""

import csv
import json

import numpy as np
import pytest

from nearfield import experiments as ex
from nearfield.montecarlo import summarize

SMALL = ["--antennas", "64", "--trials", "2", "--workers", "1", "--bound-realisations", "1"]


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _count_trials(monkeypatch):
    calls = []
    real = ex.trial_unit

    def counting(pt, seed, schemes):
        calls.append((ex.point_key(pt), seed))
        return real(pt, seed, schemes)

    monkeypatch.setattr(ex, "trial_unit", counting)
    return calls


@pytest.fixture(scope="module")
def snr_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("snr")
    rc = ex.main(["snr", *SMALL, "--points", "10", "30", "--out", str(out)])
    assert rc == 0
    return out


def test_csv_columns_and_png(snr_run):
    rows = _rows(snr_run / "snr.csv")
    want = {
        "experiment",
        "snr_db",
        "n_antennas",
        "p_fault",
        "scheme",
        "trials",
        "seed",
        "rmse_theta",
        "rmse_range",
        "rmse_cart",
        "ratio_theta",
        "ratio_range",
        "nmse_mean",
        "time_s",
        "bound_realisations",
    } | {f"r_{b}_{c}" for b in ("crb", "lb", "mcrb", "bias") for c in ("angle", "range", "cart")}
    assert want <= set(rows[0])
    assert len(rows) == 2 * 5  # two SNR points x five schemes
    assert {r["scheme"] for r in rows} == {"proposed", "paper", "coarse", "bcd", "music2d"}
    assert {float(r["snr_db"]) for r in rows} == {10.0, 30.0}
    assert all(r["trials"] == "2" and r["seed"] == "1" and r["n_antennas"] == "64" for r in rows)
    for r in rows:
        for k in want - {"experiment", "scheme", "nmse_mean"}:
            assert np.isfinite(float(r[k])), (r["scheme"], k)
        # LB = MCRB + bias^2 (eq. 42), per realisation and so for the averages of squares
        assert float(r["r_lb_angle"]) ** 2 == pytest.approx(
            float(r["r_mcrb_angle"]) ** 2 + float(r["r_bias_angle"]) ** 2, rel=1e-4
        )
    png = (snr_run / "snr.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000


def test_bounds_unit_crb_matches_the_trials_crb(snr_run):
    """The bounds path (bounds.misspecified_bounds) and the trial path (bounds.crb in run_trial)
    give the same R-CRB for the same realisation (trial 0 is the single bound realisation)."""
    cache = ex.load_cache(ex.cache_path(snr_run, "snr"))
    for snr in (10.0, 30.0):
        pt = ex._pt(snr, 64)
        t0 = cache[("trial", ex.point_key(pt), ex.trial_seed(1, 0))]["result"]
        b = ex._bounds_index(cache)[(ex._group_key(pt), ex.trial_seed(1, 0))][f"{snr:g}"]
        assert b["crb_angle"] == pytest.approx(np.sqrt(np.mean(t0["crb_theta"])), rel=1e-6)
        assert b["crb_range"] == pytest.approx(np.sqrt(np.mean(t0["crb_range"])), rel=1e-6)
    # the CRB falls 10 dB per decade of SNR: 20 dB -> a factor 10 in the root bound
    rows = {(float(r["snr_db"]), r["scheme"]): r for r in _rows(snr_run / "snr.csv")}
    ratio = float(rows[(10.0, "proposed")]["r_crb_angle"]) / float(rows[(30.0, "proposed")]["r_crb_angle"])
    assert ratio == pytest.approx(10.0, rel=1e-3)


def test_summary_equals_summarize_on_cached_trials(snr_run):
    cache = ex.load_cache(ex.cache_path(snr_run, "snr"))
    rows = _rows(snr_run / "snr.csv")
    for r in rows:
        pt = ex._pt(float(r["snr_db"]), 64)
        trials = []
        for i in range(2):
            rec = cache[("trial", ex.point_key(pt), ex.trial_seed(1, i))]["result"]
            t = {"crb_theta": np.array(rec["crb_theta"]), "crb_range": np.array(rec["crb_range"])}
            s = dict(rec[r["scheme"]])
            s["d_theta"], s["d_range"] = np.array(s["d_theta"]), np.array(s["d_range"])
            t[r["scheme"]] = s
            trials.append(t)
        sm = summarize(trials, r["scheme"])
        for k in ("rmse_theta", "rmse_range", "ratio_theta", "ratio_range", "gross", "time_s"):
            assert float(r[k]) == pytest.approx(sm[k], rel=1e-5), (r["scheme"], k)


def test_cartesian_rmse_by_hand():
    pt = ex._pt(20, 64, 0.02, ((0.3, 10.0), (-0.2, 20.0)))
    trials = [
        {"s": {"d_theta": np.array([0.0, 0.0]), "d_range": np.array([0.5, -1.0])}},
        {"s": {"d_theta": np.array([0.01, 0.0]), "d_range": np.array([0.0, 0.0])}},
    ]
    # errors: 0.5, 1.0 (radial), 2*10*sin(0.005) (chord), 0
    chord = 2 * 10.0 * np.sin(0.005)
    want = np.sqrt((0.25 + 1.0 + chord**2) / 4)
    assert ex.cartesian_rmse(trials, "s", pt) == pytest.approx(want, rel=1e-12)


def test_resume_skips_finished_trials(tmp_path, monkeypatch, capsys):
    args = [
        "range",
        "--antennas",
        "64",
        "--workers",
        "1",
        "--bound-realisations",
        "1",
        "--points",
        "12",
        "--out",
        str(tmp_path),
        "--no-plot",
    ]
    calls = _count_trials(monkeypatch)
    assert ex.main([*args, "--trials", "2"]) == 0
    assert len(calls) == 2
    first = _rows(tmp_path / "range.csv")
    calls.clear()
    assert ex.main([*args, "--trials", "2", "--resume"]) == 0
    assert calls == []  # nothing new to run
    assert _rows(tmp_path / "range.csv") == first
    # more trials: only the missing one runs
    assert ex.main([*args, "--trials", "3", "--resume"]) == 0
    assert [s for _, s in calls] == [ex.trial_seed(1, 2)]
    # an interrupted sweep: drop the last record and tear the line before it
    path = ex.cache_path(tmp_path, "range")
    lines = path.read_text().splitlines()
    trial_lines = [i for i, line in enumerate(lines) if json.loads(line)["kind"] == "trial"]
    lost = json.loads(lines[trial_lines[-1]])["seed"]
    lines[trial_lines[-1]] = lines[trial_lines[-1]][:40]
    path.write_text("\n".join(lines) + "\n")
    calls.clear()
    assert ex.main([*args, "--trials", "3", "--resume"]) == 0
    assert [s for _, s in calls] == [lost]
    # without --resume the cache starts afresh
    calls.clear()
    assert ex.main([*args, "--trials", "2"]) == 0
    assert len(calls) == 2


def test_process_pool_gives_the_same_numbers(tmp_path):
    common = ["range", "--antennas", "64", "--trials", "2", "--bound-realisations", "1", "--points", "20", "--no-plot"]
    assert ex.main([*common, "--workers", "1", "--out", str(tmp_path / "a")]) == 0
    assert ex.main([*common, "--workers", "2", "--out", str(tmp_path / "b")]) == 0
    a, b = _rows(tmp_path / "a" / "range.csv"), _rows(tmp_path / "b" / "range.csv")
    for ra, rb in zip(a, b, strict=True):
        for k in ("rmse_theta", "rmse_range", "rmse_cart", "r_crb_cart", "r_lb_cart"):
            assert ra[k] == rb[k]


def test_bad_name_lists_experiments(capsys):
    assert ex.main(["fig11"]) == 2
    err = capsys.readouterr().err
    assert "fig11" in err
    for name in ("snr", "antennas", "range", "fault-probability", "hi-nmse"):
        assert name in err


def test_bad_options(tmp_path, capsys):
    assert ex.main(["snr", "--trials", "0", "--out", str(tmp_path)]) == 2
    assert "--trials" in capsys.readouterr().err
    assert ex.main(["snr", "--points", "7", "--out", str(tmp_path)]) == 2
    assert "--points" in capsys.readouterr().err
    assert ex.main(["snr", "--cap", "oops", "--out", str(tmp_path)]) == 2
    assert "--cap" in capsys.readouterr().err


def test_scheduler_without_dask_is_a_clear_error(tmp_path, capsys):
    try:
        import dask.distributed  # noqa: F401

        pytest.skip("dask.distributed is installed")
    except ImportError:
        pass
    rc = ex.main(["range", *SMALL, "--points", "8", "--out", str(tmp_path), "--scheduler", "tcp://127.0.0.1:1"])
    assert rc == 1
    assert "dask" in capsys.readouterr().err


def test_cli_delegates(tmp_path, capsys):
    from nearfield.cli import main as cli_main

    assert cli_main(["experiment", "nope"]) == 2
    assert "hi-nmse" in capsys.readouterr().err


def test_added_points_reuse_the_cache(tmp_path, monkeypatch):
    """Adding an SNR point later runs only its trials; the bounds of the shared realisation
    are refit once for the new SNR list and the old point keeps its numbers."""
    calls = _count_trials(monkeypatch)
    bcalls = []
    real_b = ex.bounds_unit

    def counting_b(pt, seed, snrs):
        bcalls.append(tuple(snrs))
        return real_b(pt, seed, snrs)

    monkeypatch.setattr(ex, "bounds_unit", counting_b)
    args = ["snr", *SMALL, "--out", str(tmp_path), "--no-plot"]
    assert ex.main([*args, "--points", "10"]) == 0
    first = {r["scheme"]: r for r in _rows(tmp_path / "snr.csv")}
    calls.clear()
    bcalls.clear()
    assert ex.main([*args, "--points", "10", "30", "--resume"]) == 0
    assert {k.split("|")[0] for k, _ in calls} == {"snr=30"} and len(calls) == 2
    assert bcalls == [(10.0, 30.0)]
    again = {r["scheme"]: r for r in _rows(tmp_path / "snr.csv") if r["snr_db"] == "10"}
    for s, r in first.items():
        assert again[s]["rmse_theta"] == r["rmse_theta"] and again[s]["r_lb_angle"] == r["r_lb_angle"]


# --------------------------------------------------------------------------- resolution and coherence
NEW = ["--antennas", "64", "--trials", "2", "--workers", "1"]


def test_resolution_experiment_structure_and_physics(tmp_path):
    assert ex.main(["resolution", *NEW, "--points", "0.5", "3", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "resolution.csv")
    assert len(rows) == 2 * 2 * 3  # two separations x (pilots, blind) x three schemes
    assert {r["scheme"] for r in rows} == {"proposed", "paper", "music2d"}
    assert {float(r["separation_deg"]) for r in rows} == {0.5, 3.0}
    assert {r["pilots"] for r in rows} == {"0", "1"}
    for r in rows:
        assert r["trials"] == "2" and r["bound_realisations"] == "0"
        assert 0.0 <= float(r["resolved"]) <= 1.0
        assert int(r["failed"]) <= int(r["n_gross"]) <= 2  # an exception is a gross error
        assert float(r["gross"]) == pytest.approx(int(r["n_gross"]) / 2)
        assert np.isfinite(float(r["rcrb_theta_trials"]))
    by = {(float(r["separation_deg"]), r["pilots"], r["scheme"]): r for r in rows}
    # 3 deg at N = 64 is ~1.7 full-array beamwidths (2/N rad): the proposed chain resolves both
    # targets in every trial and sits near the CRB; 0.5 deg (~0.3 beamwidth) is beyond what the
    # covariance-based schemes resolve (paper: no usable subarray; 2-D MUSIC: one merged peak)
    for pil in ("0", "1"):
        assert float(by[(3.0, pil, "proposed")]["resolved"]) == 1.0
        assert float(by[(3.0, pil, "proposed")]["ratio_theta"]) < 3.0
        assert all(float(by[(0.5, pil, s)]["resolved"]) == 0.0 for s in ("paper", "music2d"))
        assert by[(0.5, pil, "paper")]["failed"] == "2"
    png = (tmp_path / "resolution.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # no bounds units: the cache holds trials only, keyed apart for pilots and blind
    cache = ex.load_cache(ex.cache_path(tmp_path, "resolution"))
    assert {k[0] for k in cache} == {"trial"} and len(cache) == 2 * 2 * 2
    assert sum(k[1].endswith("|blind") for k in cache) == 4


def test_coherence_experiment_structure_and_physics(tmp_path):
    assert ex.main(["coherence", *NEW, "--points", "0", "1", "--out", str(tmp_path), "--no-plot"]) == 0
    rows = _rows(tmp_path / "coherence.csv")
    assert len(rows) == 2 * 3
    assert {float(r["rho"]) for r in rows} == {0.0, 1.0}
    assert all(r["pilots"] == "0" and float(r["separation_deg"]) == pytest.approx(30.0) for r in rows)
    by = {(float(r["rho"]), r["scheme"]): r for r in rows}
    # independent waveforms, 20 dB: the blind chain is near the (known-waveform) CRB
    assert float(by[(0.0, "proposed")]["ratio_theta"]) < 3.0
    assert by[(0.0, "proposed")]["n_gross"] == "0"
    # the realisation is shared across rho (common random numbers): same CRB order of magnitude
    c0, c1 = float(by[(0.0, "proposed")]["rcrb_theta_trials"]), float(by[(1.0, "proposed")]["rcrb_theta_trials"])
    assert 0.5 < c1 / c0 < 2.0


def test_correlate_waveforms_statistics():
    from nearfield.montecarlo import correlate_waveforms

    rng = np.random.default_rng(7)
    S = np.exp(2j * np.pi * rng.random((3, 20000)))
    for rho in (0.0, 0.5, 0.9, 1.0):
        C = correlate_waveforms(S, rho, np.random.default_rng(8))
        assert np.array_equal(C[[0, 2]], S[[0, 2]])
        assert np.mean(np.abs(C[1]) ** 2) == pytest.approx(1.0, abs=0.03)
        corr = np.vdot(C[0], C[1]) / np.sqrt(np.vdot(C[0], C[0]).real * np.vdot(C[1], C[1]).real)
        assert abs(corr - rho) < 0.03
    assert np.allclose(correlate_waveforms(S, 1.0, rng)[1], S[0])
    with pytest.raises(ValueError, match="rho"):
        correlate_waveforms(S, 1.5, rng)
    with pytest.raises(ValueError, match="two targets"):
        correlate_waveforms(S[:1], 0.5, rng)


def test_resolved_and_failed_counts_by_hand():
    sep = np.deg2rad(1.0)
    crb = {"crb_theta": np.full(2, 1e-10), "crb_range": np.full(2, 1e-6)}

    def tr(dth, err=None):
        return {
            **crb,
            "s": {
                "d_theta": np.array(dth),
                "d_range": np.zeros(2),
                "missed": None,
                "false_alarms": None,
                "nmse": None,
                "time_s": 0.0,
                "error": err,
                "flagged": 0,
            },
        }

    trials = [tr([0.0, 0.0]), tr([0.4 * sep, 0.0]), tr([0.0, -0.6 * sep]), tr([np.pi / 2, np.pi / 2], "boom")]
    sm = summarize(trials, "s", sep)
    assert sm["resolved"] == pytest.approx(2 / 4)
    assert sm["n_errors"] == 1 and sm["n_gross"] == 3  # 0.4 sep and 0.6 sep are >> 10 CRB std too
    assert sm["rmse_theta_ok"] == 0.0
    assert np.isnan(summarize(trials, "s")["resolved"])


def test_ablation_stages_follow_the_chain():
    """benchmarks/accuracy.py --ablation: the stage "refined" (rebuilt from the core functions) is what
    nearfield.localize returns, the Phase-1 polish is near the CRB and the triangulation is not."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "accuracy_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"
    )
    acc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(acc)
    trials = [acc._ablation_trial(seed, 20.0) for seed in range(2)]
    for t in trials:
        assert all(t[k] is not None for k, _ in acc.STAGES)
        for part in (0, 1):
            assert np.allclose(t["refined"][part], t["localize"][part], rtol=0, atol=1e-9)
    rows, (from_polish, n) = acc._ablation_rows(trials)
    assert n == 2 and 0 <= from_polish <= 2
    assert rows["polish"]["ratio_theta"] < 2.0 and rows["refined"]["ratio_theta"] < 2.0
    assert rows["triangulation"]["ratio_theta"] > 3.0  # the subarrays' triangulation is ~10x the CRB
    assert all(r["exc"] == 0 for r in rows.values())
