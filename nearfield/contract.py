"""The frame contract: what each block reads from a frame and adds to it, declared once.

A block class lists :class:`Field` declarations in ``reads`` and ``adds``.  Two things use
them:

* :func:`read_fields` (``Block.read(frame)``) validates an incoming frame at the block
  boundary -- presence, dtype, shape consistency across fields (shape *symbols* such as
  ``("N", "T")`` must bind to one size per frame), finiteness of arrays, the type of meta
  fields -- and returns the parsed values, raising :class:`~nearfield.block.BadFrame`
  naming the field;
* :func:`check_graph` checks a whole graph before it runs: a block that reads a
  non-optional field that no block upstream of it adds is an error naming both.

Meta field types (``Field.dtype`` for ``kind="meta"``) and what ``read`` returns:

* ``"geometry"`` -- the array description; a :class:`nearfield.array.ULA` (binds ``N``);
* ``"positions"`` -- a list of ``{"theta": rad, "range": m}``; ``(theta, r)`` two (K,) arrays;
* ``"gains"`` -- a list of ``[re, im]``; a (K,) complex array;
* ``"indices"`` -- a list of antenna indices; a (D,) int array, each in 0..N-1;
* ``"int"``, ``"float"``, ``"str"``, ``"dict"``, ``"any"`` -- the value itself, type-checked.

Array dtypes: ``"complex"``, ``"float"``, ``"int"``, ``"any"``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .array import ULA
from .frame import meta_gains, meta_positions

KINDS = ("array", "meta")
ARRAY_DTYPES = ("complex", "float", "int", "any")
META_DTYPES = ("geometry", "positions", "gains", "indices", "int", "float", "str", "dict", "any")


@dataclass(frozen=True)
class Field:
    """One declared field of a frame.

    Parameters
    ----------
    name : str
        Key in ``frame.arrays`` (kind "array") or ``frame.meta`` (kind "meta").
    kind : {"array", "meta"}
    dtype : str
        See the module docstring.
    shape : tuple of str or int
        Shape symbols, e.g. ``("N", "T")``; one size per symbol per frame.  For meta
        positions/gains/indices the length, e.g. ``("K",)``.  Empty = not checked.
    unit : str
        Physical unit ("rad", "m", "" when none).
    doc : str
        One line: what the field holds.
    optional : bool
        A block that reads it copes without it (and ``check_graph`` does not require it).
    """

    name: str
    kind: str
    dtype: str = "any"
    shape: tuple = ()
    unit: str = ""
    doc: str = ""
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Field {self.name!r}: kind expected one of {KINDS}, got {self.kind!r}")
        allowed = ARRAY_DTYPES if self.kind == "array" else META_DTYPES
        if self.dtype not in allowed:
            raise ValueError(f"Field {self.name!r}: dtype expected one of {allowed}, got {self.dtype!r}")

    @property
    def label(self) -> str:
        """``arrays.NAME`` or ``meta.NAME``, as error messages name a field."""
        return f"{'arrays' if self.kind == 'array' else 'meta'}.{self.name}"


def array_field(name: str, dtype: str = "any", shape: tuple = (), unit: str = "", doc: str = "",
                optional: bool = False) -> Field:
    """A :class:`Field` of kind "array"."""
    return Field(name, "array", dtype, tuple(shape), unit, doc, optional)


def meta_field(name: str, dtype: str = "any", shape: tuple = (), unit: str = "", doc: str = "",
               optional: bool = False) -> Field:
    """A :class:`Field` of kind "meta"."""
    return Field(name, "meta", dtype, tuple(shape), unit, doc, optional)


class ContractError(ValueError):
    """A frame breaks a block's declared reads (the block turns it into BadFrame)."""


def _bind(dims: dict, f: Field, shape: tuple) -> None:
    """Bind ``f.shape`` symbols to ``shape``; ContractError naming the field on a mismatch."""
    if not f.shape:
        return
    if len(shape) != len(f.shape):
        raise ContractError(f"{f.label}: expected {len(f.shape)} dimension(s) {f.shape}, got shape {shape}")
    for sym, size in zip(f.shape, shape):
        if isinstance(sym, int):
            if size != sym:
                raise ContractError(f"{f.label}: expected size {sym}, got shape {shape}")
        elif sym in dims and dims[sym][0] != size:
            raise ContractError(f"{f.label}: shape {shape} gives {sym}={size}, but {dims[sym][1]} gives "
                                f"{sym}={dims[sym][0]}")
        else:
            dims.setdefault(sym, (size, f.label))


def _check_array(f: Field, arr: Any) -> np.ndarray:
    a = np.asarray(arr)
    ok = {"complex": np.iscomplexobj(a), "float": a.dtype.kind == "f",
          "int": a.dtype.kind in "iu", "any": True}[f.dtype]
    if not ok:
        raise ContractError(f"{f.label}: expected a {f.dtype} array, got dtype {a.dtype}")
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        raise ContractError(f"{f.label}: NaN or Inf values")
    return a


_PY_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "dict": (dict,)}


def _check_meta(f: Field, meta: dict, dims: dict) -> Any:
    value = meta[f.name]
    try:
        if f.dtype == "geometry":
            arr = ULA.from_meta(value)
            dims["N"] = (arr.n_antennas, f.label)  # read first: every other field's N must agree
            return arr
        if f.dtype == "positions":
            theta, r = meta_positions(meta, f.name)
            _bind(dims, f, theta.shape)
            return theta, r
        if f.dtype == "gains":
            g = meta_gains(meta, f.name)
            _bind(dims, f, g.shape)
            return g
        if f.dtype == "indices":
            if not isinstance(value, (list, tuple)) or not all(isinstance(i, (int, np.integer))
                                                              and not isinstance(i, bool) for i in value):
                raise ContractError(f"{f.label}: expected a list of antenna indices, got {value!r:.80}")
            idx = np.asarray(value, dtype=int).reshape(-1)
            if "N" in dims and idx.size and (idx.min() < 0 or idx.max() >= dims["N"][0]):
                raise ContractError(f"{f.label}: indices outside 0..{dims['N'][0] - 1}")
            return idx
    except (ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, ContractError):
            raise
        msg = str(exc)
        raise ContractError(msg if msg.startswith(f.label) else f"{f.label}: {msg}") from None
    types = _PY_TYPES.get(f.dtype)
    if types is not None and (isinstance(value, bool) or not isinstance(value, types)):
        raise ContractError(f"{f.label}: expected {f.dtype}, got {type(value).__name__} {value!r:.80}")
    return value


def read_fields(fields: Iterable[Field], frame) -> dict:
    """Validate ``frame`` against ``fields`` and return ``{name: parsed value or None}``.

    Meta fields are checked first (the geometry binds ``N``), then arrays in declaration
    order.  Absent optional fields read as None.  Raises :class:`ContractError` naming the
    field.  When an array and a meta field share a name, the array wins the key and the
    meta value is under ``"meta." + name``.
    """
    fields = list(fields)
    dims: dict = {}
    out: dict = {}
    for f in sorted(fields, key=lambda f: (f.kind != "meta", f.dtype != "geometry")):
        store = frame.meta if f.kind == "meta" else frame.arrays
        key = f.name if f.kind == "array" or not any(g.kind == "array" and g.name == f.name for g in fields) \
            else "meta." + f.name
        if f.name not in store or store[f.name] is None:
            if not f.optional:
                raise ContractError(f"{f.label}: missing" + (f" ({f.doc})" if f.doc else ""))
            out[key] = None
            continue
        if f.kind == "meta":
            out[key] = _check_meta(f, frame.meta, dims)
        else:
            a = _check_array(f, store[f.name])
            _bind(dims, f, a.shape)
            out[key] = a
    return out


def _upstream(name: str, preds: Mapping[str, set]) -> list[str]:
    """Blocks upstream of ``name`` (transitively), nearest first."""
    seen: list[str] = []
    todo = sorted(preds.get(name, ()))
    while todo:
        b = todo.pop(0)
        if b in seen or b == name:
            continue
        seen.append(b)
        todo.extend(sorted(preds.get(b, ())))
    return seen


def check_graph(blocks: Mapping[str, Any], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Frame-contract errors of a graph: reads no upstream block adds.

    Parameters
    ----------
    blocks : mapping of block name -> block instance (or class) with ``reads``/``adds``
    edges : iterable of (upstream name, downstream name)

    Returns
    -------
    list of str
        One message per block and missing non-optional field, e.g. ``"block 'locate' reads
        meta.faulty, which no block upstream of it adds (upstream: source, covariance)"``;
        empty when the graph is consistent.  Edges naming unknown blocks are reported too.
    """
    preds: dict[str, set] = {name: set() for name in blocks}
    errors = []
    for a, b in edges:
        for n in (a, b):
            if n not in blocks:
                errors.append(f"connection {a!r} -> {b!r} names an unknown block {n!r}")
        if a in blocks and b in blocks:
            preds[b].add(a)
    # What reaches each block, propagated in topological order: O((V + E) F) for F declared
    # fields, so a graph of many blocks checks in linear time (a cycle leaves blocks unvisited;
    # the flowgraph loader reports cycles itself).
    succ: dict[str, list] = {name: [] for name in blocks}
    indeg = {name: len(p) for name, p in preds.items()}
    for b, ps in preds.items():
        for a in ps:
            succ[a].append(b)
    have: dict[str, set] = {name: set() for name in blocks}
    todo = [n for n, d in indeg.items() if d == 0]
    while todo:
        a = todo.pop()
        out = have[a] | {(f.kind, f.name) for f in getattr(blocks[a], "adds", ())}
        for b in succ[a]:
            have[b] |= out
            indeg[b] -= 1
            if indeg[b] == 0:
                todo.append(b)
    for name, blk in blocks.items():
        for f in getattr(blk, "reads", ()):
            if not f.optional and (f.kind, f.name) not in have[name]:
                up = _upstream(name, preds)
                errors.append(f"block {name!r} reads {f.label}, which no block upstream of it adds "
                              f"(upstream: {', '.join(up) or 'none'})")
    return errors


# -- the fields of the frame contract shared by the blocks (one declaration each) -------------
ARRAY = meta_field("array", "geometry", doc="array geometry (nearfield.array.ULA.describe)")
TRUTH = meta_field("truth", "dict", doc="ground truth when the source knows it", optional=True)
SAMPLE_RATE = meta_field("sample_rate_hz", "float", unit="Hz", doc="snapshot rate", optional=True)
SNAPSHOTS = array_field("snapshots", "complex", ("N", "T"), doc="snapshots y_t of eq. (5), antenna-major")
PILOTS = array_field("pilots", "complex", ("K", "T"), doc="known probing signals s_t", optional=True)
WAVEFORMS = array_field("waveforms", "complex", ("K", "T"), doc="waveforms estimated by a fault_detector",
                        optional=True)
COVARIANCE = array_field("covariance", "complex", ("N", "N"), doc="sample covariance (from a covariance block)")
C_HAT = array_field("c_hat", "complex", ("N",), doc="estimated HI vector, eq. (26)")
FAULTY = meta_field("faulty", "indices", doc="detected faulty antennas (from a fault_detector upstream)")
COARSE = meta_field("coarse", "positions", ("K",), "rad, m", "coarse positions (from a fault_detector upstream)")
MODEL_TARGETS = meta_field("model_targets", "positions", ("K",), "rad, m",
                           "Phase-1 model positions (from a fault_detector upstream)")
GAINS = meta_field("gains", "gains", ("K",), doc="complex gains [re, im] (from a fault_detector upstream)")
N_TARGETS = meta_field("n_targets", "int", doc="number of targets K")
NOISE_VAR = meta_field("noise_var", "float", unit="power", doc="noise variance estimate")
COARSE_METHOD = meta_field("coarse_method", "str", doc="'triangulation', 'track' or 'fallback' (full-array path)")
FALLBACK_REASON = meta_field("fallback_reason", "str", optional=True,
                             doc="why a frame took the full-array path: small_array, phase1_failed, dense_faults")
TARGETS = meta_field("targets", "positions", unit="rad, m",
                     doc="final positions, sorted by theta; entries may carry theta_std (rad), range_std (m), status")
RESIDUAL = meta_field("residual", "float", unit="power", optional=True,
                      doc="final fit residual, mean squared per antenna and snapshot")
MODEL_CHECK = meta_field("model_check", "float", optional=True,
                         doc="model-check ratio sigma2_fit / sigma2_floor (~1 when the point-target model holds)")
MUSIC_TARGETS = meta_field("music_targets", "positions", unit="rad, m", doc="un-refined Phase-3 positions")
SPECTRA = (
    array_field("angle_grid", "float", unit="rad", doc="angle grid of the spectrum", optional=True),
    array_field("angle_spectrum", "float", doc="angle spectrum, max 1", optional=True),
    array_field("range_grid", "float", unit="m", doc="range grids per target", optional=True),
    array_field("range_spectrum", "float", doc="range spectra per target, max 1", optional=True),
)


def optional(f: Field) -> Field:
    """``f`` as an optional field."""
    return Field(f.name, f.kind, f.dtype, f.shape, f.unit, f.doc, True)


def required(f: Field) -> Field:
    """``f`` as a required field."""
    return Field(f.name, f.kind, f.dtype, f.shape, f.unit, f.doc, False)
