"""Placement (issue 11): several blocks in one worker; validation errors; same records as without."""

import json
import textwrap

import pytest

from nearfield.runtime import run_flowgraph
from nearfield.runtime.flowgraph import FlowgraphError, parse_flowgraph
from nearfield.runtime.placement import apply_placement

GRAPH = """
name: placed
blocks:
  source:    {{type: synthetic, n_antennas: 64, frames: 6, seed: 3, snr_db: 25,
               targets: [{{theta: 0.3, range: 3.0}}, {{theta: -0.2, range: 5.0}}]}}
  detect:    {{type: fault_detector}}
  calibrate: {{type: calibrator}}
  locate:    {{type: music_localizer}}
  out:       {{type: jsonl, path: {out}}}
connections:
  - [source, detect]
  - [detect, calibrate]
  - [calibrate, locate]
  - [locate, out]
"""


def _records(path):
    with open(path) as fh:
        rows = [json.loads(line) for line in fh]
    for r in rows:  # wall-clock fields differ between runs
        for k in [k for k in r if "latency" in k or k.startswith("t_")]:
            del r[k]
    return rows


@pytest.mark.parametrize("inproc", [True, False])
def test_a_placed_chain_gives_the_same_records_as_one_worker_per_block(tmp_path, inproc):
    plain = parse_flowgraph(GRAPH.format(out=tmp_path / "a.jsonl"), path="plain.yaml")
    placed = parse_flowgraph(
        GRAPH.format(out=tmp_path / "b.jsonl") + "placement:\n  estimate: [detect, calibrate, locate]\n",
        path="placed.yaml",
    )
    assert placed.placement == {"estimate": ["detect", "calibrate", "locate"]}
    fused = apply_placement(placed)
    assert list(fused.blocks) == ["source", "estimate", "out"]
    assert [(e.src, e.dst) for e in fused.edges] == [("source", "estimate"), ("estimate", "out")]
    assert run_flowgraph(plain, inproc=inproc, quiet=True).ok
    res = run_flowgraph(placed, inproc=inproc, quiet=True)
    assert res.ok
    a, b = _records(tmp_path / "a.jsonl"), _records(tmp_path / "b.jsonl")
    assert len(a) == 6 and a == b


@pytest.mark.parametrize("inproc", [True, False])
def test_a_source_heading_a_placed_chain_gives_the_same_records(tmp_path, inproc):
    """``front: [source, detect]``: the source's frames go through detect in the source's worker."""
    plain = parse_flowgraph(GRAPH.format(out=tmp_path / "a.jsonl"), path="plain.yaml")
    placed = parse_flowgraph(
        GRAPH.format(out=tmp_path / "b.jsonl")
        + "placement:\n  front: [source, detect]\n  estimate: [calibrate, locate]\n",
        path="placed.yaml",
    )
    fused = apply_placement(placed)
    assert list(fused.blocks) == ["front", "estimate", "out"]
    assert fused.blocks["front"].kind == "source"
    assert [(e.src, e.dst) for e in fused.edges] == [("front", "estimate"), ("estimate", "out")]
    assert run_flowgraph(plain, inproc=inproc, quiet=True).ok
    res = run_flowgraph(placed, inproc=inproc, quiet=True)
    assert res.ok
    row = {r["block"]: r for r in res.summary}["front"]
    assert row["frames_out"] == 6 and row["dropped"] == 0
    a, b = _records(tmp_path / "a.jsonl"), _records(tmp_path / "b.jsonl")
    assert len(a) == 6 and a == b


@pytest.mark.parametrize("inproc", [True, False])
def test_a_sink_ending_a_placed_chain_gives_the_same_records(tmp_path, inproc):
    """``estimate: [calibrate, locate, out]``: the sink is called in the worker; the run counts it as delivering."""
    plain = parse_flowgraph(GRAPH.format(out=tmp_path / "a.jsonl"), path="plain.yaml")
    placed = parse_flowgraph(
        GRAPH.format(out=tmp_path / "b.jsonl") + "placement:\n  front: [source, detect]\n"
        "  estimate: [calibrate, locate, out]\n",
        path="placed.yaml",
    )
    fused = apply_placement(placed)
    assert list(fused.blocks) == ["front", "estimate"] and fused.blocks["estimate"].kind == "sink"
    assert [(e.src, e.dst) for e in fused.edges] == [("front", "estimate")]
    assert run_flowgraph(plain, inproc=inproc, quiet=True).ok
    res = run_flowgraph(placed, inproc=inproc, quiet=True)
    assert res.ok and res.delivered() == 6 and res.degraded() is None
    a, b = _records(tmp_path / "a.jsonl"), _records(tmp_path / "b.jsonl")
    assert len(a) == 6 and a == b


@pytest.mark.parametrize(
    "placement, message",
    [
        ("placement: [detect]", "'placement': expected a mapping"),
        ("placement:\n  w: [detect, nope]", "worker 'w': unknown block 'nope'"),
        ("placement:\n  w: [detect, calibrate]\n  v: [calibrate, locate]", "block 'calibrate' is placed in both"),
        ("placement:\n  w: [detect, locate]", "blocks 'detect' -> 'locate' are not a chain"),
        ("placement:\n  w: [detect, source]", "block 'source' (type synthetic) is a source"),
        ("placement:\n  w: [out]", "block 'out' (type jsonl) is a sink"),
        ("placement:\n  w: [detect, out]", "blocks 'detect' -> 'out' are not a chain"),
        ("placement:\n  w: []", "expected a non-empty list of block names"),
        ("placement:\n  detect: [calibrate, locate]", "worker name 'detect' is also a block name"),
    ],
)
def test_bad_placement_is_a_load_error_naming_the_file_and_block(tmp_path, placement, message):
    text = GRAPH.format(out=tmp_path / "x.jsonl") + textwrap.dedent(placement) + "\n"
    with pytest.raises(FlowgraphError) as err:
        parse_flowgraph(text, path="bad.yaml")
    assert "bad.yaml:" in str(err.value) and message in str(err.value)


def test_default_flowgraphs_fit_two_cores():
    from pathlib import Path

    from nearfield.runtime.flowgraph import load_flowgraph

    root = Path(__file__).resolve().parents[1] / "flowgraphs"
    g = apply_placement(load_flowgraph(root / "synthetic.yaml"))
    assert list(g.blocks) == ["front", "estimate"]  # 2 processes: source + detect; calibrate, locate and the sink
    assert g.blocks["front"].kind == "source" and g.blocks["estimate"].kind == "sink"


def _names_sink():
    from nearfield.block import Param, Sink
    from nearfield.contract import SNAPSHOTS
    from nearfield.runtime import registry

    class NamesSink(Sink):
        """Test sink declaring it reads the snapshots; writes the array names it receives."""

        params = (Param("path", str, doc="output file"),)
        reads = (SNAPSHOTS,)

        def start(self):
            self.fh = open(self.path, "w")

        def process(self, frame):
            self.fh.write(",".join(sorted(frame.arrays)) + "\n")

        def close(self):
            self.fh.close()

    registry.register("t_names", NamesSink, replace=True)


@pytest.mark.parametrize("inproc", [True, False])
def test_arrays_nothing_downstream_reads_are_not_sent(tmp_path, inproc):
    _names_sink()
    text = f"""
blocks:
  source:     {{type: synthetic, n_antennas: 16, frames: 3, seed: 1,
               targets: [{{theta: 0.3, range: 3.0}}]}}
  covariance: {{type: covariance}}
  out:        {{type: t_names, path: {tmp_path / "names.txt"}}}
connections:
  - [source, covariance]
  - [covariance, out]
"""
    g = parse_flowgraph(text, path="names.yaml")
    assert g.downstream_arrays("covariance") == frozenset({"snapshots"})
    assert run_flowgraph(g, inproc=inproc, quiet=True).ok
    # the covariance (and the pilots) never travel to a sink that declares it reads only the snapshots
    assert (tmp_path / "names.txt").read_text().split() == ["snapshots"] * 3


def test_default_flowgraph_sends_no_arrays_to_the_jsonl_sink():
    from pathlib import Path

    from nearfield.runtime.flowgraph import load_flowgraph

    root = Path(__file__).resolve().parents[1] / "flowgraphs"
    plain = load_flowgraph(root / "synthetic.yaml")
    assert plain.downstream_arrays("locate") == frozenset()  # the sink reads meta only
    g = apply_placement(plain)
    assert "snapshots" in g.downstream_arrays("front")
    plot = apply_placement(load_flowgraph(root / "plot.yaml"))
    assert {"angle_spectrum", "range_spectrum"} <= plot.downstream_arrays("estimate")


def test_a_stage_dropping_frames_in_a_source_worker_counts_them(tmp_path):
    """A BadFrame raised by a stage placed with the source is a counted drop, not a worker failure."""
    text = f"""
blocks:
  source:  {{type: synthetic, n_antennas: 32, snapshots: 2, frames: 4, seed: 1,
            targets: [{{theta: 0.3, range: 3.0}}]}}
  detect:  {{type: fault_detector}}
  out:     {{type: jsonl, path: {tmp_path / "x.jsonl"}}}
connections:
  - [source, detect]
  - [detect, out]
placement:
  front: [source, detect]
"""
    res = run_flowgraph(parse_flowgraph(text, path="drops.yaml"), quiet=True)
    row = {r["block"]: r for r in res.summary}["front"]
    assert res.ok and row["dropped"] == 4 and row["frames_out"] == 0
    assert "snapshots" in " ".join(row["drop_reasons"])
