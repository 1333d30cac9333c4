"""The frame contract: Block.read validation at the block boundary and check_graph on whole graphs."""
import numpy as np
import pytest

from nearfield.array import ULA
from nearfield.block import BadFrame, Block
from nearfield.blocks.calibrator import Calibrator
from nearfield.blocks.covariance import Covariance
from nearfield.blocks.fault_detector import FaultDetector
from nearfield.blocks.music_localizer import MusicLocalizer
from nearfield.contract import ARRAY, FAULTY, PILOTS, SNAPSHOTS, Field, check_graph, meta_field
from nearfield.frame import Frame
from nearfield.sinks.jsonl import JsonlSink
from nearfield.sources.synthetic import SyntheticSource


class _Reader(Block):
    reads = (ARRAY, SNAPSHOTS, PILOTS, FAULTY, meta_field("n_targets", "int", optional=True))


def _frame(n=8, t=5, k=2, rng=None):
    rng = rng or np.random.default_rng(0)
    y = (rng.standard_normal((n, t)) + 1j * rng.standard_normal((n, t))).astype(np.complex64)
    s = np.exp(2j * np.pi * rng.random((k, t))).astype(np.complex64)
    return Frame(0, 0.0, {"snapshots": y, "pilots": s}, {"array": ULA(n).describe(), "faulty": [1, 3]})


def test_read_returns_parsed_values_and_derives_requires():
    x = _Reader(name="r").read(_frame())
    assert isinstance(x["array"], ULA) and x["array"].n_antennas == 8
    assert x["snapshots"].shape == (8, 5) and x["pilots"].shape == (2, 5)
    assert np.array_equal(x["faulty"], [1, 3]) and x["n_targets"] is None
    assert _Reader.requires == ("snapshots",)  # pilots are optional, meta is not an array


@pytest.mark.parametrize("edit, field", [
    (lambda f: f.meta.pop("faulty"), "meta.faulty: missing"),
    (lambda f: f.meta.update(faulty=[1, 8]), "meta.faulty: indices outside 0..7"),
    (lambda f: f.meta.update(faulty="1,3"), "meta.faulty: expected a list"),
    (lambda f: f.meta.update(n_targets=2.5), "meta.n_targets: expected int"),
    (lambda f: f.arrays.update(pilots=f.arrays["pilots"][:, :4]), "arrays.pilots: shape .* T=4, but arrays.snapshots"),
    (lambda f: f.arrays.update(snapshots=np.zeros((7, 5), np.complex64)), "arrays.snapshots: .* N=7, but meta.array"),
    (lambda f: f.arrays.update(snapshots=np.zeros((8, 5))), "arrays.snapshots: expected a complex array"),
    (lambda f: f.arrays["pilots"].__setitem__((0, 0), np.nan), "arrays.pilots: NaN or Inf"),
    (lambda f: f.meta.pop("array"), "meta.array: missing"),
])
def test_read_names_the_block_and_the_field(edit, field):
    f = _frame()
    edit(f)
    with pytest.raises(BadFrame, match=f"block 'r': {field}"):
        _Reader(name="r").read(f)


def test_field_declaration_is_checked():
    with pytest.raises(ValueError, match="kind"):
        Field("x", "wire")
    with pytest.raises(ValueError, match="dtype"):
        Field("x", "meta", "complex")


def _pipeline():
    return {"source": SyntheticSource(name="source", frames=1), "detect": FaultDetector(name="detect"),
            "calibrate": Calibrator(name="calibrate"), "covariance": Covariance(name="covariance"),
            "locate": MusicLocalizer(name="locate"), "out": JsonlSink(name="out", path="x.jsonl")}


def test_check_graph_accepts_the_main_pipeline():
    edges = [("source", "detect"), ("detect", "calibrate"), ("calibrate", "covariance"), ("covariance", "locate"),
             ("locate", "out")]
    assert check_graph(_pipeline(), edges) == []


def test_check_graph_names_both_blocks_and_the_field():
    # the localizer right after the covariance: no fault detector upstream adds meta.coarse
    blocks = _pipeline()
    del blocks["detect"], blocks["calibrate"]
    errors = check_graph(blocks, [("source", "covariance"), ("covariance", "locate"), ("locate", "out")])
    assert errors == ["block 'locate' reads meta.coarse, which no block upstream of it adds "
                      "(upstream: covariance, source)"]
    # the calibrator before the detector: it needs faulty, model_targets and gains
    blocks = _pipeline()
    errors = check_graph(blocks, [("source", "calibrate"), ("calibrate", "detect"), ("detect", "covariance"),
                                  ("covariance", "locate")])
    assert any("'calibrate' reads meta.faulty" in e and "upstream: source" in e for e in errors)
    assert all("'locate'" not in e for e in errors)  # the detector is upstream of locate, transitively


def test_check_graph_reports_unknown_blocks():
    assert check_graph({"a": Covariance(name="a")}, [("a", "b")]) == [
        "connection 'a' -> 'b' names an unknown block 'b'",
        "block 'a' reads arrays.snapshots, which no block upstream of it adds (upstream: none)"]


def test_music_localizer_reads_depend_on_the_centre_parameter():
    blocks = {"source": SyntheticSource(name="source", frames=1), "detect": FaultDetector(name="detect"),
              "locate": MusicLocalizer(name="locate", centre="model")}
    err = check_graph(blocks, [("source", "locate")])
    assert any("meta.model_targets" in e for e in err) and not any("meta.coarse" in e for e in err)
    # the covariance is optional: without it the localizer works from the snapshots (issue 11)
    assert check_graph(blocks, [("source", "detect"), ("detect", "locate")]) == []


@pytest.mark.parametrize("name", ["synthetic", "baselines", "plot", "record_sigmf", "gnuradio_zmq"])
def test_the_shipped_flowgraphs_keep_the_contract(name):
    from pathlib import Path

    from nearfield.runtime.flowgraph import load_flowgraph

    fg = load_flowgraph(Path(__file__).resolve().parents[1] / "flowgraphs" / f"{name}.yaml")
    blocks = {n: spec.instantiate() for n, spec in fg.blocks.items()}
    assert check_graph(blocks, [(e.src, e.dst) for e in fg.edges]) == []
