"""Flowgraph files: each kind of error is reported before anything starts, naming file, block, parameter/port."""

import textwrap

import pytest

from nearfield.runtime.flowgraph import FlowgraphError, load_flowgraph, parse_flowgraph, parse_override

GOOD = """\
name: test-graph
blocks:
  src:  {type: t_count, frames: 5}
  mid:  {type: t_pass, delay: 0.0}
  out:  {type: t_collect, path: out.txt}
connections:
  - [src, mid]
  - [mid, out]
"""


def _write(tmp_path, text, name="g.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _err(tmp_path, text, overrides=()):
    p = _write(tmp_path, text)
    with pytest.raises(FlowgraphError) as ei:
        load_flowgraph(p, overrides)
    return str(ei.value), str(p)


def test_good_graph_and_its_structure(tmp_path):
    g = load_flowgraph(_write(tmp_path, GOOD))
    assert g.name == "test-graph"
    assert list(g.blocks) == ["src", "mid", "out"]
    assert g.blocks["src"].kind == "source" and g.blocks["out"].kind == "sink"
    assert [str(e) for e in g.edges] == ["src.out -> mid.in", "mid.out -> out.in"]
    assert g.topological_order() == ["src", "mid", "out"]
    assert g.blocks["mid"].instantiate().delay == 0.0


def test_overrides_are_yaml_parsed_and_applied(tmp_path):
    g = load_flowgraph(_write(tmp_path, GOOD), ["src.frames=12", "mid.bad_at=[1, 2]", "mid.delay=1e-3"])
    assert g.blocks["src"].params["frames"] == 12
    assert g.blocks["mid"].params["bad_at"] == [1, 2]
    assert g.blocks["mid"].instantiate().delay == 0.001
    g = load_flowgraph(_write(tmp_path, GOOD), {"src.frames": 3})
    assert g.blocks["src"].params["frames"] == 3


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    msg, path = _err(tmp_path, "blocks:\n  src: {type: t_count\n  out: [\n")
    assert msg.startswith(f"{path}:") and "YAML syntax error" in msg
    line = int(msg.split(":")[1])
    assert 2 <= line <= 4


def test_missing_file(tmp_path):
    with pytest.raises(FlowgraphError, match="nope.yaml: flowgraph file not found"):
        load_flowgraph(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- a\n- b\n", "expected a mapping with keys 'blocks' and 'connections'"),
        ("blocks: {}\n", "'blocks': expected a non-empty mapping"),
        ("blocks: {a: {type: t_count}}\nconnection: []\n", "unknown top-level key 'connection' (expected: name"),
        ("blocks: {a: {type: t_count}}\nconnections: {a: b}\n", "'connections': expected a list of [from, to] pairs"),
        ("blocks: {a: 3}\n", "block 'a': expected a mapping {type: <block type>"),
        ("blocks: {a: {frames: 3}}\n", "block 'a': missing 'type' (known types:"),
        ("blocks: {a.b: {type: t_count}}\n", "block name 'a.b': expected letters"),
    ],
)
def test_top_level_shape_errors(tmp_path, text, expected):
    msg, path = _err(tmp_path, text)
    assert msg.startswith(path)
    assert expected in msg


def test_unknown_block_type_lists_known_types_and_line(tmp_path):
    msg, path = _err(tmp_path, GOOD.replace("type: t_pass", "type: t_pas"))
    assert msg.startswith(f"{path}:4:")
    assert "block 'mid': unknown block type 't_pas'" in msg and "known types:" in msg and "t_pass" in msg


def test_block_type_that_fails_to_import(tmp_path, monkeypatch):
    import importlib.metadata as md

    from nearfield.runtime import registry

    registry.available()
    eps = dict(registry._entry_points)
    eps["t_broken"] = [md.EntryPoint("t_broken", "nf_no_such_mod_abc:X", registry.GROUP)]
    monkeypatch.setattr(registry, "_entry_points", eps)
    msg, _ = _err(tmp_path, GOOD.replace("type: t_pass", "type: t_broken"))
    assert "block 'mid': block type 't_broken': cannot load" in msg and "'nf_no_such_mod_abc'" in msg


def test_unknown_parameter(tmp_path):
    msg, path = _err(tmp_path, GOOD.replace("delay: 0.0", "dealy: 0.0"))
    assert msg.startswith(f"{path}:4:")
    assert "block 'mid': unknown parameter 'dealy'" in msg and "delay" in msg


def test_ill_typed_parameter_names_block_parameter_and_expectation(tmp_path):
    msg, path = _err(tmp_path, GOOD.replace("frames: 5", "frames: five"))
    assert msg.startswith(f"{path}:3:")
    assert "block 'src', parameter 'frames': expected int, got str 'five'" in msg


def test_missing_required_parameter(tmp_path):
    msg, _ = _err(tmp_path, GOOD.replace("{type: t_collect, path: out.txt}", "{type: t_collect}"))
    assert "block 'out': missing required parameter 'path'" in msg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("src.frames=lots", "--set src.frames=lots: block 'src' (type t_count), parameter 'frames': expected int"),
        ("src.frmes=3", "--set src.frmes=3: block 'src' (type t_count) has no parameter 'frmes' (parameters: frames"),
        ("nosuch.frames=3", "--set nosuch.frames=3: unknown block 'nosuch'"),
        ("src.frames", "expected block.param=value"),
        ("srcframes=3", "expected block.param=value"),
        ("src.frames=[1,", "is not valid YAML"),
        ("src.frames=", "missing value"),
    ],
)
def test_override_errors(tmp_path, override, expected):
    msg, _ = _err(tmp_path, GOOD, [override])
    assert expected in msg


def test_parse_override():
    assert parse_override("a.b=1.5") == ("a", "b", 1.5)
    assert parse_override("a.b=[1, 2]") == ("a", "b", [1, 2])
    assert parse_override("a.b=text") == ("a", "b", "text")
    assert parse_override("a.b=1e-3") == ("a", "b", 0.001)  # YAML 1.2 float
    assert parse_override("a.b=3") == ("a", "b", 3)
    assert parse_override("a.b=1_000") == ("a", "b", 1000)


@pytest.mark.parametrize(
    "conn, expected",
    [
        ("[src]", "connection #1 [src]: expected [from, to] with 2 elements"),
        ("[src, mid, out]", "expected [from, to] with 2 elements"),
        ("3", "connection #1: expected [from, to]"),
        ("[src, nosuch]", "connection #1 [src, nosuch]: unknown block 'nosuch' (blocks: src, mid, out)"),
        ("[src.data, mid]", "block 'src' (type t_count) has no output port 'data' (output ports: out)"),
        ("[src, mid.input]", "block 'mid' (type t_pass) has no input port 'input' (input ports: in)"),
        ("[mid, src]", "block 'src' (type t_count) is a source and takes no input"),
        ("[out, mid]", "block 'out' (type t_collect) is a sink and has no output port"),
        ("[mid, mid]", "block 'mid' is connected to itself"),
        ("{from: src, too: mid}", "expected a mapping {from: block[.port], to: block[.port], lossy: bool}"),
        ("{from: src, to: mid, lossy: maybe}", "'lossy' expected true or false, got 'maybe'"),
    ],
)
def test_connection_errors_name_the_connection_block_and_port(tmp_path, conn, expected):
    text = GOOD.replace("  - [src, mid]\n", f"  - {conn}\n")
    msg, path = _err(tmp_path, text)
    assert msg.startswith(f"{path}:7:"), msg
    assert expected in msg


def test_duplicate_connection(tmp_path):
    msg, _ = _err(tmp_path, GOOD + "  - [mid, out]\n")
    assert "connection #3 [mid, out]: duplicate connection mid.out -> out.in" in msg


def test_duplicate_block_name(tmp_path):
    msg, path = _err(tmp_path, GOOD.replace("  out:", "  mid:  {type: t_pass}\n  out:"))
    assert f"{path}:5: block 'mid' is defined twice" in msg


def test_unconnected_input(tmp_path):
    msg, path = _err(tmp_path, GOOD.replace("  - [mid, out]\n", ""))
    assert msg.startswith(f"{path}:5:")
    assert (
        "block 'out' (type t_collect): input port 'in' is not connected (expected a connection "
        "[<upstream block>, out])" in msg
    )


def test_unconnected_named_input(tmp_path):
    text = """\
    blocks:
      src: {type: t_count}
      j:   {type: t_join}
      out: {type: t_collect, path: x}
    connections:
      - [src, j.a]
      - [j, out]
    """
    msg, _ = _err(tmp_path, text)
    assert (
        "block 'j' (type t_join): input port 'b' is not connected (expected a connection "
        "[<upstream block>, j.b])" in msg
    )


def test_cycle_is_reported_with_its_path(tmp_path):
    text = """\
    blocks:
      src: {type: t_count}
      j:   {type: t_join}
      p:   {type: t_pass}
      q:   {type: t_pass}
      out: {type: t_collect, path: x}
    connections:
      - [src, j.a]
      - [q, j.b]
      - [j, p]
      - [p, q]
      - [p, out]
    """
    msg, path = _err(tmp_path, text)
    assert msg.startswith(f"{path}:8:")  # the connections list
    assert "the connections form a cycle: " in msg
    cyc = msg.split("cycle: ")[1].split(" (")[0].split(" -> ")
    assert cyc[0] == cyc[-1] and set(cyc) == {"j", "p", "q"}


def test_fan_out_fan_in_ports_and_lossy_links_are_accepted():
    text = """\
    blocks:
      a: {type: t_count}
      b: {type: t_count, offset: 100}
      s: {type: t_split}
      j: {type: t_join}
      o1: {type: t_collect, path: x}
      o2: {type: t_collect, path: y}
    connections:
      - [a, s]
      - [b, s]
      - [s.even, j.a]
      - [s.odd, j.b]
      - [j, o1]
      - {from: j.out, to: o2, lossy: true}
    """
    g = parse_flowgraph(textwrap.dedent(text), path="mem.yaml")
    assert [e.lossy for e in g.edges] == [False] * 5 + [True]
    assert len(g.in_edges("s")) == 2 and len(g.out_edges("j")) == 2
    order = g.topological_order()
    assert order.index("s") < order.index("j") < order.index("o2")


def test_parse_from_dict():
    g = parse_flowgraph(
        {"blocks": {"a": {"type": "t_count"}, "o": {"type": "t_collect", "path": "p"}}, "connections": [["a", "o"]]},
        path="d",
    )
    assert g.name == "d" and len(g.edges) == 1
    with pytest.raises(FlowgraphError, match="^d: block 'o'"):
        parse_flowgraph({"blocks": {"a": {"type": "t_count"}, "o": {"type": "t_collect", "path": "p"}}}, path="d")


def test_a_graph_breaking_the_frame_contract_is_refused_at_load_naming_both_blocks_and_the_field(tmp_path):
    # the calibrator reads meta.faulty, which only a fault_detector adds; here nothing upstream does
    text = textwrap.dedent("""\
        blocks:
          source: {type: synthetic, n_antennas: 32, frames: 1}
          calibrate: {type: calibrator}
          out: {type: jsonl, path: x.jsonl}
        connections:
          - [source, calibrate]
          - [calibrate, out]
        """)
    with pytest.raises(FlowgraphError) as err:
        parse_flowgraph(text, str(tmp_path / "g.yaml"))
    msg = str(err.value)
    assert "frame contract" in msg and "block 'calibrate' reads meta.faulty" in msg and "upstream: source" in msg
    # the same blocks in the right order load
    good = text.replace(
        "calibrate: {type: calibrator}", "detect: {type: fault_detector}\n  calibrate: {type: calibrator}"
    )
    good = good.replace("- [source, calibrate]", "- [source, detect]\n  - [detect, calibrate]")
    assert list(parse_flowgraph(good, str(tmp_path / "g.yaml")).blocks) == ["source", "detect", "calibrate", "out"]
