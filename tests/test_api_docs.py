"""docs/api.md is generated from the docstrings by tools/gen_api.py: it must cover every public name and be current."""

import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "tools" / "gen_api.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def page(gen):
    return gen.generate()


def test_every_public_name_is_on_the_page(gen, page):
    names = gen.module_names()
    assert {
        "nearfield",
        "nearfield.estimators",
        "nearfield.estimators.fullarray",
        "nearfield.estimators.phase3",
        "nearfield.bounds",
        "nearfield.runtime",
    } <= set(names)
    for m in names:
        mod = importlib.import_module(m)
        assert f"## {m}\n" in page, m
        section = page.split(f"## {m}\n", 1)[1].split("\n## ", 1)[0]
        for n in gen.public_names(mod):
            assert f"`{n}`" in section, f"{m}.{n} missing from docs/api.md"
            obj = getattr(mod, n)
            if (
                inspect.isfunction(obj) and obj.__module__ == m and obj.__name__ == n
            ):  # described here, with its signature
                assert f"{n}{gen.signature(obj)}" in section, f"{m}.{n}: signature"


def test_numpy_sections_become_lists(gen):
    def f(x: int, y=2):
        """Add.

        Parameters
        ----------
        x : int
            First, in metres.
        y : int, optional
            Second.

        Returns
        -------
        int
        """

    out = "\n".join(gen.describe(f, "f"))
    assert "f(x: int, y=2)" in out and "Add." in out
    assert "- `x` (int) — First, in metres." in out and "- `y` (int, optional) — Second." in out
    assert "*Returns*" in out and "- `int`" in out


def test_page_is_current(gen, page):
    assert (ROOT / "docs" / "api.md").read_text() == page, "docs/api.md is stale: run `python tools/gen_api.py`"
    assert "0x" not in page  # no memory addresses: the page is reproducible
