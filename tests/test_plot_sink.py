"""The `plot` sink: valid PNGs of the expected size, cadence, tolerance and bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the plot sink needs matplotlib (optional dependency)")

from nearfield.array import paper_array  # noqa: E402
from nearfield.block import BadFrame, ParamError  # noqa: E402
from nearfield.frame import Frame  # noqa: E402
from nearfield.sinks import plot as plot_mod  # noqa: E402
from nearfield.sinks.plot import PlotData, PlotSink, _segments  # noqa: E402

TRUTH = [(-np.pi / 6, 8.0), (-np.pi / 12, 18.0), (np.pi / 12, 10.0)]


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def full_frame(seq=0, spectra=True, err=(0.002, 0.05)):
    """A frame as the music_localizer leaves it: estimates near truth and their spectra."""
    array = paper_array(64)
    est = [(th + err[0], r * (1 + err[1] / 10)) for th, r in TRUTH]
    meta = {
        "array": array.describe(),
        "targets": [{"theta": th, "range": r} for th, r in est],
        "coarse": [{"theta": th - 0.01, "range": r * 1.1} for th, r in TRUTH],
        "faulty": [3, 40],
        "truth": {
            "targets": [{"theta": th, "range": r} for th, r in TRUTH],
            "faulty": [3, 17],
            "fault_phase": [1.0, 2.0],
            "noise_var": 0.01,
        },
    }
    arrays = {"snapshots": np.zeros((64, 4), np.complex64)}
    if spectra:
        grids, specs = [], []
        for th, _ in est:  # three separate windows in sin(theta), as the localizer makes
            u = np.linspace(np.sin(th) - 0.05, np.sin(th) + 0.05, 101)
            grids.append(np.arcsin(u))
            specs.append(1.0 / (1.0 + ((u - np.sin(th)) / 2e-3) ** 2))
        arrays["angle_grid"] = np.concatenate(grids).astype(np.float32)
        arrays["angle_spectrum"] = np.concatenate(specs).astype(np.float32)
        rg = np.array([np.geomspace(r / 2, 2 * r, 101) for _, r in est[::-1]])  # rows not by theta
        rs = np.array([1.0 / (1.0 + ((g - r) / 0.2) ** 2) for g, (_, r) in zip(rg, est[::-1])])
        arrays["range_grid"] = rg.astype(np.float32)
        arrays["range_spectrum"] = rs.astype(np.float32)
    return Frame(seq=seq, t0=0.01 * seq, arrays=arrays, meta=meta)


def bare_frame(seq):
    """A frame with geometry only: no spectra, no estimates, no truth."""
    return Frame(
        seq=seq,
        t0=0.0,
        arrays={"snapshots": np.zeros((16, 2), np.complex64)},
        meta={"array": paper_array(16).describe()},
    )


def test_every_frame_gives_png_of_expected_size(tmp_path):
    sink = PlotSink(name="plot", directory=str(tmp_path / "pics"), every=1, dpi=50, figsize=[10, 6])
    sink.start()
    sink.process(full_frame(7))
    sink.process(bare_frame(8))  # no spectra, no targets: tolerated
    sink.finish()
    files = sorted(p.name for p in (tmp_path / "pics").iterdir())
    assert files == ["frame_000007.png", "frame_000008.png"]
    for name in files:
        assert png_size(tmp_path / "pics" / name) == (500, 300)


def test_picture_shows_the_estimates_in_their_colours(tmp_path):
    import matplotlib.image as mpimg
    from matplotlib import cm

    sink = PlotSink(directory=str(tmp_path), every=1, dpi=60)
    sink.start()
    sink.process(full_frame(0))
    sink.process(bare_frame(1))
    img_full = mpimg.imread(sink.written[0])[..., :3]
    img_bare = mpimg.imread(sink.written[1])[..., :3]

    def count(img, rgb):
        return int(np.sum(np.all(np.abs(img - np.asarray(rgb)[:3]) < 0.02, axis=-1)))

    for k in range(3):  # one tab10 colour per estimate, absent when none
        assert count(img_full, cm.tab10(k)) > 30
        assert count(img_bare, cm.tab10(k)) == 0


def test_cadence_every_k_and_only_last(tmp_path):
    sink = PlotSink(directory=str(tmp_path / "k"), every=2, dpi=20)
    sink.start()
    for seq in range(5):
        sink.process(bare_frame(seq))
    sink.finish()
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [
        "frame_000000.png",
        "frame_000002.png",
        "frame_000004.png",
    ]

    last = PlotSink(directory=str(tmp_path / "last"), every=0, dpi=20, prefix="x")
    last.start()
    for seq in range(10, 14):
        last.process(full_frame(seq) if seq % 2 else bare_frame(seq))
    assert list((tmp_path / "last").iterdir()) == []  # nothing before the end
    last.finish()
    assert [p.name for p in (tmp_path / "last").iterdir()] == ["x000013.png"]


def test_range_rows_are_matched_to_estimates_not_to_row_order():
    d = PlotData(full_frame(0))
    G, S = d.range
    peaks = G[np.arange(3), np.argmax(S, axis=1)]
    # rows were stored in reverse theta order; their peaks are the estimates' ranges reversed
    np.testing.assert_allclose(peaks, d.targets[::-1, 1], rtol=0.02)


def test_segments_split_the_window_union():
    g = np.concatenate([np.linspace(0, 1, 11), np.linspace(5, 6, 11), np.linspace(9, 9.5, 6)])
    segs = _segments(g)
    assert [(s.start, s.stop) for s in segs] == [(0, 11), (11, 22), (22, 28)]
    assert len(_segments(np.linspace(-1, 1, 50))) == 1


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda f: f.meta["targets"][1].update(theta=float("nan")), r"meta\['targets'\]\[1\]"),
        (lambda f: f.meta["truth"]["targets"][0].pop("range"), r"meta\['truth'\]\['targets'\]\[0\]"),
        (lambda f: f.meta.update(faulty=[3, 64]), r"meta\['faulty'\].*\[0, 63\]"),
        (lambda f: f.meta.pop("array"), "meta field 'array' is missing"),
        (lambda f: f.arrays.pop("angle_spectrum"), "'angle_grid' is present but 'angle_spectrum'"),
        (lambda f: f.arrays.update(range_spectrum=np.ones((3, 7))), "'range_grid'.*same shape"),
        (lambda f: f.arrays["angle_spectrum"].__setitem__(3, np.inf), "non-finite"),
    ],
)
def test_bad_frames_name_the_field_and_write_nothing(tmp_path, edit, match):
    sink = PlotSink(directory=str(tmp_path), every=1, dpi=20)
    sink.start()
    fr = full_frame(0)
    edit(fr)
    with pytest.raises(BadFrame, match=match):
        sink.process(fr)
    assert list(tmp_path.iterdir()) == []


def test_parameter_and_dependency_errors(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ParamError, match=r"'directory'.*cannot create"):
        PlotSink(name="p", directory=str(blocker / "sub")).start()
    with pytest.raises(ParamError, match=r"'figsize'"):
        PlotSink(directory=str(tmp_path), figsize=[12])
    with pytest.raises(ParamError, match=r"'every'"):
        PlotSink(directory=str(tmp_path), every=-1)
    monkeypatch.setattr(plot_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ParamError, match=r"block 'p'.*needs matplotlib.*nearfield\[plot\]"):
        PlotSink(name="p", directory=str(tmp_path))


def test_plot_flowgraph_runs(tmp_path, tmp_path_factory):
    """flowgraphs/plot.yaml (small overrides), in-process: one PNG every `every` frames."""
    from pathlib import Path

    from nearfield.runtime import run_flowgraph
    from nearfield.runtime.flowgraph import load_flowgraph

    path = Path(__file__).resolve().parents[1] / "flowgraphs" / "plot.yaml"
    graph = load_flowgraph(
        path,
        overrides=[
            "source.n_antennas=32",
            "source.frames=4",
            "source.snapshots=20",
            "plot.every=2",
            "plot.dpi=30",
            f"plot.directory={tmp_path}",
            f"out.path={tmp_path_factory.mktemp('out') / 'estimates.jsonl'}",
        ],
    )  # not ./estimates.jsonl
    res = run_flowgraph(graph, inproc=True, quiet=True)
    assert res.ok, res.error
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["frame_000000.png", "frame_000002.png"]
    assert png_size(tmp_path / files[0]) == (360, 202)  # 12 x 6.75 in at 30 dpi


def test_frames_between_pictures_are_checked_too(tmp_path):
    sink = PlotSink(directory=str(tmp_path), every=5, dpi=20)
    sink.start()
    sink.process(bare_frame(0))  # plotted
    bad = full_frame(1)
    bad.meta["targets"][0]["range"] = -1.0
    with pytest.raises(BadFrame, match=r"meta\['targets'\]\[0\]"):
        sink.process(bad)  # would not be plotted, still refused
    assert len(sink.written) == 1
