"""The ``nearfield`` command line, through ``main([...])``."""

import multiprocessing
import sys
import textwrap
import types

import pytest
from conftest import read_collect

from nearfield.cli import main


def _graph_file(tmp_path, **kw):
    out = tmp_path / "out.txt"
    text = textwrap.dedent("""\
        name: cli-test
        blocks:
          src: {{type: t_count, frames: {frames}}}
          mid: {{type: t_pass, fail_at: {fail_at}}}
          out: {{type: t_collect, path: "{out}"}}
        connections:
          - [src, mid]
          - [mid, out]
        """).format(out=out, frames=kw.get("frames", 5), fail_at=kw.get("fail_at", "null"))
    p = tmp_path / "g.yaml"
    p.write_text(text)
    return p, out


@pytest.mark.parametrize("extra", [[], ["--inproc"], ["--transport", "tcp"]])
def test_run_succeeds_and_prints_the_summary(tmp_path, capsys, extra):
    p, out = _graph_file(tmp_path)
    assert main(["run", str(p), "--set", "src.frames=8", *extra]) == 0
    assert [r[0] for r in read_collect(out)[0]] == list(range(8))
    err = capsys.readouterr().err
    assert "proc ms" in err and "mid" in err and "wall time" in err
    assert multiprocessing.active_children() == []


def test_run_quiet(tmp_path, capsys):
    p, _ = _graph_file(tmp_path)
    assert main(["run", str(p), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_run_failing_block_exits_1_and_names_block_and_seq(tmp_path, capsys):
    p, _ = _graph_file(tmp_path, frames=10, fail_at=4)
    assert main(["run", str(p), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "block 'mid' failed on frame seq=4: RuntimeError: boom" in err


def test_invalid_flowgraph_exits_2_with_the_message(tmp_path, capsys):
    p, _ = _graph_file(tmp_path)
    assert main(["run", str(p), "--set", "src.frames=many"]) == 2
    err = capsys.readouterr().err
    assert "--set src.frames=many: block 'src' (type t_count), parameter 'frames': expected int" in err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: flowgraph file not found" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["run"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out


def test_blocks_lists_types_with_kind_doc_and_parameters(capsys):
    assert main(["blocks"]) == 0
    out = capsys.readouterr().out
    assert "t_pass  (block)" in out and "t_count  (source)" in out and "t_collect  (sink)" in out
    assert "Test stage: passes frames on, optionally slowly, failing or refusing some." in out
    assert "    delay: float (default 0.0)  seconds of work per frame" in out
    assert "    path: str (required)  output file" in out
    assert "outputs: even, odd" in out
    assert "synthetic" in out and "covariance" in out  # the installed entry points


def test_blocks_shows_a_type_that_fails_to_import(capsys, monkeypatch):
    import importlib.metadata as md

    from nearfield.runtime import registry

    registry.available()
    eps = dict(registry._entry_points)
    eps["t_broken"] = [md.EntryPoint("t_broken", "nf_no_such_mod_cli:X", registry.GROUP)]
    monkeypatch.setattr(registry, "_entry_points", eps)
    assert main(["blocks", "t_broken", "t_pass"]) == 0
    out = capsys.readouterr().out
    assert "t_broken  [cannot load]" in out and "nf_no_such_mod_cli" in out
    assert "t_pass  (block)" in out
    assert main(["blocks", "t_nothing"]) == 2


def test_experiment_delegates_or_explains(monkeypatch, capsys):
    calls = []
    fake = types.ModuleType("nearfield.experiments")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "nearfield.experiments", fake)
    assert main(["experiment", "rmse-snr", "--trials", "3"]) == 0
    assert calls == [["rmse-snr", "--trials", "3"]]
    monkeypatch.setitem(sys.modules, "nearfield.experiments", None)  # import fails
    assert main(["experiment"]) == 2
    assert "nearfield.experiments" in capsys.readouterr().err
