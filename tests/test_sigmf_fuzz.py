"""Fuzz the SigMF metadata decoder: any malformed .sigmf-meta is refused with SigMFFormatError
(a ParamError naming the block, the file and the field), never another exception."""

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nearfield.block import ParamError
from nearfield.sources.sigmf_source import SigMFFormatError, SigMFSource
from tests.sigmf_helpers import foreign_recording

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


def _base(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    base = foreign_recording(d / "rec", np.zeros((64, 4), np.complex64))
    return base, json.load(open(base + ".sigmf-meta"))


def _paths(doc):
    """Every (container, key) pair in the metadata document, to replace one value."""
    out = []

    def walk(node):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append((node, k))
            walk(v)

    walk(doc)
    return out


def _refused_cleanly(base):
    try:
        SigMFSource(path=base + ".sigmf-meta")
    except SigMFFormatError:
        return
    except ParamError as exc:  # parameter errors of the source are fine too (they name the block)
        assert "block" in str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_replaced_metadata_value_never_escapes_as_another_error(tmp_path_factory, data):
    base, doc = _base(tmp_path_factory)
    where = _paths(doc)
    node, key = where[data.draw(st.integers(0, len(where) - 1))]
    node[key] = data.draw(JSON)
    with open(base + ".sigmf-meta", "w") as fh:
        json.dump(doc, fh)
    _refused_cleanly(base)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_as_metadata_are_refused(tmp_path_factory, blob):
    base, _ = _base(tmp_path_factory)
    with open(base + ".sigmf-meta", "wb") as fh:
        fh.write(blob)
    _refused_cleanly(base)


def test_deeply_nested_and_huge_metadata_are_refused_naming_the_file(tmp_path_factory):
    base, _ = _base(tmp_path_factory)
    with open(base + ".sigmf-meta", "w") as fh:
        fh.write("[" * 100_000 + "]" * 100_000)
    try:
        SigMFSource(path=base + ".sigmf-meta")
        raise AssertionError("accepted")
    except SigMFFormatError as exc:
        assert "rec.sigmf-meta" in str(exc)
