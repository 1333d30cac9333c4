"""The block registry: entry points loaded lazily, clear errors, register() for tests/plugins."""

import importlib.metadata as md
import sys

import pytest

from nearfield.block import Block, Sink
from nearfield.runtime import registry


class _Dummy(Sink):
    """A dummy sink."""

    def process(self, frame):
        return None


@pytest.fixture
def fake_entry_points(monkeypatch, tmp_path):
    """Replace the discovered entry points by a controlled set (a good, a broken, a missing one)."""
    mod = tmp_path / "nf_fake_plugin.py"
    mod.write_text(
        "from nearfield.block import Sink\n"
        "class Good(Sink):\n    '''A plugin sink.'''\n    def process(self, f):\n        return None\n"
        "NOT_A_BLOCK = 42\n"
    )
    broken = tmp_path / "nf_broken_plugin.py"
    broken.write_text("import numpy\nraise RuntimeError('plugin import exploded')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = {
        "good": [md.EntryPoint("good", "nf_fake_plugin:Good", registry.GROUP)],
        "broken": [md.EntryPoint("broken", "nf_broken_plugin:Thing", registry.GROUP)],
        "missing": [md.EntryPoint("missing", "nf_no_such_module_xyz:Thing", registry.GROUP)],
        "notblock": [md.EntryPoint("notblock", "nf_fake_plugin:NOT_A_BLOCK", registry.GROUP)],
        "twice": [md.EntryPoint("twice", "a:B", registry.GROUP), md.EntryPoint("twice", "c:D", registry.GROUP)],
    }
    monkeypatch.setattr(registry, "_entry_points", eps)
    monkeypatch.setattr(registry, "_cache", {})
    yield eps
    sys.modules.pop("nf_fake_plugin", None)
    sys.modules.pop("nf_broken_plugin", None)


def test_installed_entry_points_are_discovered():
    registry.reset()
    names = registry.available()
    for n in ("synthetic", "covariance", "jsonl"):  # declared in pyproject.toml
        assert n in names
    assert registry.origin("covariance") == "nearfield.blocks.covariance:Covariance"


def test_loading_is_lazy_and_errors_name_type_and_module(fake_entry_points):
    assert "nf_fake_plugin" not in sys.modules
    assert set(registry.available()) >= {"good", "broken", "missing", "notblock"}
    assert "nf_fake_plugin" not in sys.modules  # listing imports nothing
    with pytest.raises(
        registry.BlockLoadError,
        match=r"block type 'broken': cannot load 'nf_broken_plugin:Thing' \(module "
        r"'nf_broken_plugin'\): RuntimeError: plugin import exploded",
    ):
        registry.get("broken")
    with pytest.raises(registry.BlockLoadError, match=r"'missing'.*module 'nf_no_such_module_xyz'.*ModuleNotFound"):
        registry.get("missing")
    with pytest.raises(registry.BlockLoadError, match="'notblock'.*is not a nearfield.block.Block subclass"):
        registry.get("notblock")
    with pytest.raises(registry.BlockLoadError, match="'twice' is ambiguous"):
        registry.get("twice")
    # the broken ones do not break the good one
    cls = registry.get("good")
    assert issubclass(cls, Block) and cls.summary() == "A plugin sink."
    assert registry.get("good") is cls


def test_unknown_type_lists_the_known_ones(fake_entry_points):
    with pytest.raises(registry.UnknownBlockType, match=r"unknown block type 'nope' \(known types: .*good"):
        registry.get("nope")


def test_register_shadows_and_validates():
    try:
        registry.register("t_dummy_reg", _Dummy)
        assert registry.get("t_dummy_reg") is _Dummy
        assert "t_dummy_reg" in registry.available()
        assert registry.origin("t_dummy_reg").endswith(":_Dummy")
        registry.register("t_dummy_reg", _Dummy)  # same class again: fine
        with pytest.raises(ValueError, match="already registered"):
            registry.register("t_dummy_reg", type("Other", (Sink,), {}))
        with pytest.raises(TypeError, match="expected a subclass of nearfield.block.Block"):
            registry.register("t_bad", dict)
    finally:
        registry.unregister("t_dummy_reg")
    assert "t_dummy_reg" not in registry.available()
