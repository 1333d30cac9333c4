"""QA of the jsonl sink: the DESIGN.md estimates record, exactly."""
import json
import time

import numpy as np
import pytest

from nearfield.block import ParamError
from nearfield.frame import Frame
from nearfield.sinks.jsonl import JsonlSink


def frame(seq, **meta):
    return Frame(seq=seq, t0=seq * 0.1, arrays={"snapshots": np.zeros((2, 2), np.complex64)}, meta=meta)


def test_records_have_exact_keys_sorted_targets_and_latency(tmp_path):
    path = tmp_path / "deep" / "dir" / "est.jsonl"
    sink = JsonlSink(path=str(path))
    sink.start()
    t_emit = time.time() - 0.5
    sink.process(frame(7, targets=[{"theta": 0.3, "range": 10.0}, {"theta": -0.2, "range": 18.0, "x": 1}],
                       faulty=[12, 77], t_emit=t_emit, n_targets=2,
                       truth={"targets": [{"theta": 0.2618, "range": 10.0}], "faulty": [12, 78],
                              "fault_phase": [1.0, 2.0], "noise_var": 0.1}))
    # flush_every=1: the line is on disk (in the .partial file) before close
    first = json.loads((tmp_path / "deep" / "dir" / "est.jsonl.partial").read_text().splitlines()[0])
    sink.process(frame(8))
    sink.finish()
    sink.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0] == first
    assert list(first) == ["seq", "t0", "targets", "faulty", "truth", "latency_s"]
    assert first["seq"] == 7 and first["t0"] == pytest.approx(0.7)
    assert first["targets"] == [{"theta": -0.2, "range": 18.0}, {"theta": 0.3, "range": 10.0}]
    assert first["faulty"] == [12, 77]
    assert first["truth"] == {"targets": [{"theta": 0.2618, "range": 10.0}], "faulty": [12, 78]}
    assert 0.5 <= first["latency_s"] < 5.0
    assert lines[1] == {"seq": 8, "t0": pytest.approx(0.8), "targets": [], "faulty": [], "latency_s": None}


def test_non_finite_estimates_become_null(tmp_path):
    path = tmp_path / "e.jsonl"
    sink = JsonlSink(path=str(path))
    sink.start()
    sink.process(frame(0, targets=[{"theta": float("nan"), "range": 3.0}], t_emit=time.time()))
    sink.finish()
    sink.close()
    rec = json.loads(path.read_text())   # strict JSON parser accepts it
    assert rec["targets"][0]["theta"] is None


def test_unwritable_path_gives_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = JsonlSink(name="out", path=str(blocker / "sub" / "e.jsonl"))
    with pytest.raises(ParamError) as err:
        sink.start()
    assert "'out'" in str(err.value) and "'path'" in str(err.value) and "cannot write" in str(err.value)


def test_path_is_required():
    with pytest.raises(ParamError, match="missing required parameter 'path'"):
        JsonlSink()


def test_default_flowgraph_writes_one_line_per_frame(tmp_path):
    from pathlib import Path
    flowgraph = pytest.importorskip("nearfield.runtime.flowgraph")
    runtime = pytest.importorskip("nearfield.runtime")
    fg = Path(__file__).resolve().parent.parent / "flowgraphs" / "synthetic.yaml"
    out = tmp_path / "estimates.jsonl"
    g = flowgraph.load_flowgraph(fg, overrides={"source.n_antennas": 32, "source.frames": 4,
                                                "out.path": str(out)})
    res = runtime.run_flowgraph(g, inproc=True, quiet=True)
    assert res.ok, res.error
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["seq"] for r in recs] == [0, 1, 2, 3]
    assert all(r["latency_s"] is not None and 0 <= r["latency_s"] < 60 for r in recs)
    assert [t["theta"] for t in recs[0]["truth"]["targets"]] == [-0.5236, -0.2618, 0.2618]


@pytest.mark.parametrize("meta", [{"targets": [{"theta": 0.1}]}, {"faulty": ["x"]}, {"truth": [1, 2]}])
def test_malformed_meta_is_a_bad_frame_not_a_crash(tmp_path, meta):
    from nearfield.block import BadFrame
    from nearfield.frame import Frame
    from nearfield.sinks.jsonl import JsonlSink

    sink = JsonlSink(path=str(tmp_path / "e.jsonl"))
    sink.start()
    with pytest.raises(BadFrame, match="malformed meta"):
        sink.process(Frame(0, 0.0, {}, meta))
    sink.process(Frame(1, 0.0, {}, {"targets": [{"theta": 0.2, "range": 3.0}]}))
    sink.finish()
    sink.close()
    assert (tmp_path / "e.jsonl").read_text().count("\n") == 1


def test_new_fields_pass_through_and_old_fields_stay(tmp_path):
    """Error bars, status per target and the record-level residual/model check are added, nothing renamed."""
    path = tmp_path / "e.jsonl"
    sink = JsonlSink(path=str(path))
    sink.start()
    sink.process(frame(3, targets=[{"theta": 0.3, "range": 10.0, "theta_std": 1e-4, "range_std": 0.02,
                                    "status": "ok"},
                                   {"theta": -0.2, "range": 18.0, "theta_std": 2e-4, "range_std": 0.5,
                                    "status": "fallback"}],
                       faulty=[4], residual=0.031, model_check=1.02))
    sink.process(frame(4, targets=[{"theta": 0.1, "range": 5.0}]))  # an older producer: no new fields
    sink.finish()
    sink.close()
    new, old = [json.loads(x) for x in path.read_text().splitlines()]
    assert list(new) == ["seq", "t0", "targets", "faulty", "latency_s", "residual", "model_check"]
    assert new["targets"] == [{"theta": -0.2, "range": 18.0, "theta_std": 2e-4, "range_std": 0.5, "status": "fallback"},
                              {"theta": 0.3, "range": 10.0, "theta_std": 1e-4, "range_std": 0.02, "status": "ok"}]
    assert new["residual"] == 0.031 and new["model_check"] == 1.02 and new["faulty"] == [4]
    assert old == {"seq": 4, "t0": pytest.approx(0.4), "targets": [{"theta": 0.1, "range": 5.0}], "faulty": [],
                   "latency_s": None}
