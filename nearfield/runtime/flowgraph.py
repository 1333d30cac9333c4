"""Flowgraph files: load, override, validate.

A flowgraph is a YAML file loaded with a ``yaml.SafeLoader`` (plain data only; floats such as
``1e-3`` are read as floats, as in YAML 1.2)::

    name: synthetic-default            # optional
    description: ...                   # optional
    blocks:                            # block name -> {type: <registered type>, <param>: <value>, ...}
      source:     {type: synthetic, n_antennas: 256, frames: 50, seed: 1}
      covariance: {type: covariance}
      out:        {type: jsonl, path: estimates.jsonl}
    connections:                       # [from, to]; "block" = its default port, "block.port" names one
      - [source, covariance]
      - [covariance, out]
      - {from: covariance.out, to: view, lossy: true}   # mapping form; lossy = PUB/SUB link

Loading is bounded: a file larger than ``max_bytes`` (default 1 MiB) is refused before it
is read, and a document whose node count *after alias expansion* exceeds ``max_nodes``
(default 200 000) -- a "billion laughs" alias bomb -- or that nests deeper than the YAML
parser can follow is refused before it is constructed; error messages quote at most a few
hundred characters of any value.  Validation takes time linear in the number of blocks
and connections.

Everything is validated before anything starts -- YAML syntax, the top-level shape, block
names and types, every parameter (by constructing the block: ``Block.__init__`` checks the
declared :class:`~nearfield.block.Param` s), connections (syntax, blocks, ports, duplicates),
cycles, unconnected inputs, sources with an input -- and every error is a
:class:`FlowgraphError` whose message names the file (and line), the block and the
parameter or port, and what was expected.  One output may feed several inputs (fan-out:
each downstream block receives every frame); several outputs may feed one input (fan-in).
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import registry
from ..block import Block, ParamError
from ..contract import check_graph

__all__ = ["FlowgraphError", "BlockSpec", "Edge", "Flowgraph", "load_flowgraph", "parse_flowgraph",
           "parse_override"]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_TOP_KEYS = ("name", "description", "blocks", "connections", "placement")
_EDGE_KEYS = ("from", "to", "lossy")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 floats such as ``1e-3`` (YAML 1.1 makes
    them strings).  Same safety: only plain data types are constructed."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


#: Largest flowgraph file accepted, bytes.
MAX_BYTES = 1 << 20
#: Largest number of YAML nodes after alias expansion.
MAX_NODES = 200_000
_MAX_MESSAGE = 2000      # characters of an error message


class FlowgraphError(ValueError):
    """A flowgraph file (or dict) that cannot run; the message says where and what was expected."""


def _short(value, n: int = 200) -> str:
    """``repr(value)`` cut to about ``n`` characters (error messages stay small)."""
    r = repr(value) if not isinstance(value, (dict, list, tuple)) or len(value) < 50 else None
    if r is None:
        r = f"<{type(value).__name__} of {len(value)} items>"
    return r if len(r) <= n else r[:n] + "..."


def expanded_size(node, limit: int) -> int:
    """Number of nodes of a composed YAML document once every alias is expanded, counted
    without expanding (each node once, memoised), or ``limit + 1`` as soon as it exceeds
    ``limit``.  A recursive alias counts as exceeding.  Linear in the composed document."""
    size: dict[int, int] = {}
    stack = [(node, False)]
    on_stack: set[int] = set()
    while stack:  # iterative post-order walk: a deep document must not overflow the C stack
        n, done = stack.pop()
        key = id(n)
        if done:
            on_stack.discard(key)
            kids = _children(n)
            size[key] = min(limit + 1, 1 + sum(size[id(k)] for k in kids))
            continue
        if key in size:
            continue
        if key in on_stack:
            return limit + 1     # recursive alias: infinite expansion
        on_stack.add(key)
        stack.append((n, True))
        stack.extend((k, False) for k in _children(n) if id(k) not in size)
    return size[id(node)]


def _children(n) -> list:
    if isinstance(n, yaml.MappingNode):
        return [x for kv in n.value for x in kv]
    if isinstance(n, yaml.SequenceNode):
        return list(n.value)
    return []


def _yaml_compose_load(text: str, path: str, max_nodes: int = MAX_NODES):
    """(data, root node) of a YAML text, refusing alias bombs and runaway nesting first."""
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            _fail(f"{path}: YAML nested too deeply to read")
        if root is None:
            return None, None
        if expanded_size(root, max_nodes) > max_nodes:
            _fail(f"{path}: YAML document expands to more than {max_nodes} nodes (aliases that "
                  f"multiply, or a recursive alias); expected a plain flowgraph")
        try:
            return loader.construct_document(root), root
        except RecursionError:
            _fail(f"{path}: YAML nested too deeply to read")
    finally:
        loader.dispose()


def _yaml_load(text: str):
    return _yaml_compose_load(text, "<--set value>")[0]


@dataclass
class BlockSpec:
    """One validated block of a flowgraph.

    Attributes
    ----------
    name : str
        Block name (the key under ``blocks:``).
    type : str
        Registered block type.
    cls : type
        The Block subclass.
    params : dict
        Parameters as given (after overrides), passed to ``cls(name=name, **params)``.
    """

    name: str
    type: str
    cls: type
    params: dict

    @property
    def kind(self) -> str:
        return self.cls.kind

    def instantiate(self) -> Block:
        """A fresh, validated instance (runs ``__init__``; no ``start``)."""
        return self.cls(name=self.name, **self.params)


@dataclass(frozen=True)
class Edge:
    """A link from output port ``src.src_port`` to input port ``dst.dst_port``."""

    src: str
    src_port: str
    dst: str
    dst_port: str
    lossy: bool = False

    def __str__(self) -> str:
        s = f"{self.src}.{self.src_port} -> {self.dst}.{self.dst_port}"
        return s + " (lossy)" if self.lossy else s


@dataclass
class Flowgraph:
    """A validated graph: blocks (in file order) and edges.

    Use :func:`load_flowgraph` or :func:`parse_flowgraph` to build one.
    """

    name: str
    path: str
    blocks: dict[str, BlockSpec]
    edges: list[Edge]
    description: str = ""
    overrides: dict = field(default_factory=dict)
    placement: dict = field(default_factory=dict)  # worker name -> chain of block names (runtime.placement)
    #: block name -> names of the arrays it declares it reads, or None (declares nothing: may read any)
    array_reads: dict = field(default_factory=dict)

    def downstream_arrays(self, block: str):
        """Arrays some block downstream of ``block`` (transitively) declares it reads; None = keep all.

        A frame leaving ``block`` needs no other array: the worker strips the rest before
        sending (e.g. a covariance nothing downstream reads never reaches the sink).
        """
        keep: set = set()
        seen, todo = set(), [e.dst for e in self.out_edges(block)]
        while todo:
            b = todo.pop()
            if b in seen:
                continue
            seen.add(b)
            reads = self.array_reads.get(b)
            if reads is None:
                return None
            keep |= reads
            todo.extend(e.dst for e in self.out_edges(b))
        return frozenset(keep)

    def in_edges(self, block: str) -> list[Edge]:
        return [e for e in self.edges if e.dst == block]

    def out_edges(self, block: str) -> list[Edge]:
        return [e for e in self.edges if e.src == block]

    def topological_order(self) -> list[str]:
        """Block names, every block after all its upstream blocks (the graph is acyclic)."""
        order, cycle = _toposort(self.blocks, self.edges)
        assert cycle is None
        return order


# -- helpers ---------------------------------------------------------------------------

class _Where:
    """Line lookup in the composed YAML node tree, for error messages."""

    def __init__(self, path: str, root):
        self.path = path
        self.root = root
        self._index: dict[int, dict] = {}

    def _lookup(self, node, key):
        idx = self._index.get(id(node))
        if idx is None:  # built once per mapping: each lookup is O(1), validation stays linear
            idx = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
            self._index[id(node)] = idx
        return idx.get(str(key))

    def node(self, *keys):
        node = self.root
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                nxt = self._lookup(node, key)
                if nxt is None:
                    return node
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
            else:
                return node
        return node

    def __call__(self, *keys) -> str:
        node = self.node(*keys) if self.root is not None else None
        if node is None:
            return f"{self.path}"
        return f"{self.path}:{node.start_mark.line + 1}"


def _fail(msg: str):
    if len(msg) > _MAX_MESSAGE:
        msg = msg[:_MAX_MESSAGE] + " ... (message cut)"
    raise FlowgraphError(msg)


def parse_override(text: str) -> tuple[str, str, object]:
    """Parse ``block.param=value`` (value parsed with ``yaml.safe_load``) into (block, param, value)."""
    if not isinstance(text, str) or "=" not in text:
        _fail(f"--set {text!r}: expected block.param=value")
    key, _, raw = text.partition("=")
    block, dot, param = key.strip().partition(".")
    if not dot or not block or not param or "." in param:
        _fail(f"--set {text!r}: expected block.param=value (e.g. source.snr_db=10)")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        _fail(f"--set {text!r}: value {raw!r} is not valid YAML ({str(exc).splitlines()[0]})")
    if raw.strip() == "":
        _fail(f"--set {text!r}: missing value after '='")
    return block, param, value


def _toposort(blocks, edges):
    """(order, None) for an acyclic graph, else (None, cycle as a list of names)."""
    succ = {b: [] for b in blocks}
    indeg = {b: 0 for b in blocks}
    for e in edges:
        succ[e.src].append(e.dst)
        indeg[e.dst] += 1
    ready = deque(b for b in blocks if indeg[b] == 0)
    order = []
    while ready:
        b = ready.popleft()
        order.append(b)
        for d in succ[b]:
            indeg[d] -= 1
            if indeg[d] == 0:
                ready.append(d)
    if len(order) == len(blocks):
        return order, None
    # find one cycle among the remaining nodes (DFS)
    placed = set(order)
    remaining = {b for b in blocks if b not in placed}
    color = {}
    stack = []

    def dfs(u):
        color[u] = 1
        stack.append(u)
        for v in succ[u]:
            if v not in remaining:
                continue
            if color.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in color:
                c = dfs(v)
                if c:
                    return c
        stack.pop()
        color[u] = 2
        return None

    for b in blocks:
        if b in remaining and b not in color:
            c = dfs(b)
            if c:
                return None, c
    return None, sorted(remaining)  # pragma: no cover


def _endpoint(text, which, spec_of, where, idx, shown):
    """Resolve 'block' or 'block.port' of a connection; which = 'from' | 'to'."""
    if not isinstance(text, str) or not text:
        _fail(f"{where}: connection #{idx + 1} {shown}: expected a block name or 'block.port' "
              f"string for {which!r}, got {text!r}")
    bname, dot, port = text.partition(".")
    if bname not in spec_of:
        _fail(f"{where}: connection #{idx + 1} {shown}: unknown block {bname!r} "
              f"(blocks: {', '.join(spec_of)})")
    spec = spec_of[bname]
    ports = spec.cls.outputs if which == "from" else spec.cls.inputs
    pname = "output" if which == "from" else "input"
    if not ports:
        if which == "from":
            _fail(f"{where}: connection #{idx + 1} {shown}: block {bname!r} (type {spec.type}) is a "
                  f"{spec.kind} and has no output port (expected it only as the second element)")
        _fail(f"{where}: connection #{idx + 1} {shown}: block {bname!r} (type {spec.type}) is a "
              f"source and takes no input (expected it only as the first element)")
    if not dot:
        return bname, ports[0]
    if port not in ports:
        _fail(f"{where}: connection #{idx + 1} {shown}: block {bname!r} (type {spec.type}) has no "
              f"{pname} port {port!r} ({pname} ports: {', '.join(ports)})")
    return bname, port


# -- public API ------------------------------------------------------------------------

def load_flowgraph(path, overrides=(), *, max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES) -> Flowgraph:
    """Load, override and validate a flowgraph file.

    Parameters
    ----------
    path : str or Path
        YAML file.
    overrides : iterable of str or dict
        ``"block.param=value"`` strings (``--set``; value parsed as YAML), or a dict
        ``{"block.param": value}``.
    max_bytes : int
        Largest file accepted, bytes (checked before reading).
    max_nodes : int
        Largest YAML node count after alias expansion (checked before constructing).

    Raises
    ------
    FlowgraphError
        With a message naming the file (and line), block, parameter or port.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            _fail(f"{path}: flowgraph file of {size} bytes exceeds the limit of {max_bytes} bytes")
        with open(p, "rb") as fh:
            text = fh.read(max_bytes + 1).decode("utf-8")
        if len(text) > max_bytes:
            _fail(f"{path}: flowgraph file exceeds the limit of {max_bytes} bytes")
    except FileNotFoundError:
        _fail(f"{path}: flowgraph file not found")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{path}: cannot read flowgraph file: {exc}")
    return parse_flowgraph(text, path=str(path), overrides=overrides, max_nodes=max_nodes)


def parse_flowgraph(source, path: str = "<flowgraph>", overrides=(), *, max_nodes: int = MAX_NODES) -> Flowgraph:
    """Validate a flowgraph given as YAML text or as an already-parsed dict.

    See :func:`load_flowgraph`.
    """
    root = None
    if isinstance(source, str):
        try:
            data, root = _yaml_compose_load(source, path, max_nodes)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            loc = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
            problem = getattr(exc, "problem", None) or str(exc)
            ctx = getattr(exc, "context", None)
            _fail(f"{loc}: YAML syntax error: {problem}" + (f" ({ctx})" if ctx else ""))
    else:
        data = source
    where = _Where(path, root)

    if not isinstance(data, dict):
        _fail(f"{where()}: expected a mapping with keys 'blocks' and 'connections' at the top "
              f"level, got {type(data).__name__}")
    extra = [k for k in data if k not in _TOP_KEYS]
    if extra:
        _fail(f"{where(extra[0])}: unknown top-level key {extra[0]!r} (expected: {', '.join(_TOP_KEYS)})")
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str):
        _fail(f"{where('name')}: 'name': expected a string, got {_short(name)}")
    description = data.get("description", "") or ""
    if not isinstance(description, str):
        _fail(f"{where('description')}: 'description': expected a string, got {_short(description)}")
    blocks = data.get("blocks")
    if not isinstance(blocks, dict) or not blocks:
        _fail(f"{where('blocks')}: 'blocks': expected a non-empty mapping of block name -> "
              f"{{type: ..., <param>: ...}}, got {_short(blocks)}")
    conns = data.get("connections", [])
    if conns is None:
        conns = []
    if not isinstance(conns, list):
        _fail(f"{where('connections')}: 'connections': expected a list of [from, to] pairs, got "
              f"{type(conns).__name__}")

    # duplicate block names (safe_load silently keeps the last one)
    if root is not None:
        bnode = where.node("blocks")
        if isinstance(bnode, yaml.MappingNode):
            seen = set()
            for k, _ in bnode.value:
                if k.value in seen:
                    _fail(f"{path}:{k.start_mark.line + 1}: block {k.value!r} is defined twice "
                          f"(expected unique block names)")
                seen.add(k.value)

    # overrides
    ov: dict[str, dict] = {}
    items = overrides.items() if isinstance(overrides, dict) else overrides
    for item in items:
        if isinstance(item, str):
            b, prm, val = parse_override(item)
            shown = item
        else:
            key, val = item
            b, _, prm = str(key).partition(".")
            shown = f"{key}={val!r}"
        if b not in blocks:
            _fail(f"--set {shown}: unknown block {b!r} in {path} (blocks: {', '.join(map(str, blocks))})")
        ov.setdefault(b, {})[prm] = (val, shown)

    # blocks
    specs: dict[str, BlockSpec] = {}
    instances: dict[str, Block] = {}  # built once here, to check parameters and the frame contract
    for bname, body in blocks.items():
        loc = where("blocks", bname)
        if not isinstance(bname, str) or not _NAME_RE.match(bname):
            _fail(f"{loc}: block name {bname!r}: expected letters, digits, '_' or '-' starting with a "
                  f"letter or '_' (no dots: 'block.port' names a port)")
        if not isinstance(body, dict):
            _fail(f"{loc}: block {bname!r}: expected a mapping {{type: <block type>, <param>: <value>}}, "
                  f"got {_short(body)}")
        if "type" not in body:
            _fail(f"{loc}: block {bname!r}: missing 'type' (known types: {', '.join(registry.available())})")
        btype = body["type"]
        tloc = where("blocks", bname, "type")
        if not isinstance(btype, str):
            _fail(f"{tloc}: block {bname!r}: 'type' expected a string, got {_short(btype)}")
        try:
            cls = registry.get(btype)
        except registry.UnknownBlockType:
            _fail(f"{tloc}: block {bname!r}: unknown block type {btype!r} "
                  f"(known types: {', '.join(registry.available())})")
        except registry.BlockLoadError as exc:
            _fail(f"{tloc}: block {bname!r}: {exc}")
        params = {k: v for k, v in body.items() if k != "type"}
        declared = {p.name: p for p in cls.params}
        for prm, (val, shown) in ov.get(bname, {}).items():
            if prm not in declared:
                _fail(f"--set {shown}: block {bname!r} (type {btype}) has no parameter {prm!r} "
                      f"(parameters: {', '.join(declared) or 'none'})")
            try:
                declared[prm].convert(val)
            except ValueError as exc:
                _fail(f"--set {shown}: block {bname!r} (type {btype}), parameter {prm!r}: {exc}")
            params[prm] = val
        spec = BlockSpec(name=bname, type=btype, cls=cls, params=params)
        try:
            instances[bname] = spec.instantiate()
        except ParamError as exc:
            bad = next((k for k in params if f"{k!r}" in str(exc)), None)
            ploc = where("blocks", bname, bad) if bad else loc
            _fail(f"{ploc}: {exc} [type {btype}]")
        except Exception as exc:
            _fail(f"{loc}: block {bname!r} (type {btype}): invalid parameters: "
                  f"{type(exc).__name__}: {exc}")
        specs[bname] = spec

    # connections
    edges: list[Edge] = []
    seen_edges: set = set()
    for i, c in enumerate(conns):
        cloc = where("connections", i)
        lossy = False
        if isinstance(c, (list, tuple)):
            shown = "[" + ", ".join(map(str, c)) + "]"
            if len(c) != 2:
                _fail(f"{cloc}: connection #{i + 1} {shown}: expected [from, to] with 2 elements "
                      f"('block' or 'block.port'), got {len(c)}")
            a, b = c
        elif isinstance(c, dict):
            shown = "{" + ", ".join(f"{k}: {v}" for k, v in c.items()) + "}"
            extra = [k for k in c if k not in _EDGE_KEYS]
            if extra or "from" not in c or "to" not in c:
                _fail(f"{cloc}: connection #{i + 1} {shown}: expected a mapping "
                      f"{{from: block[.port], to: block[.port], lossy: bool}}")
            a, b = c["from"], c["to"]
            lossy = c.get("lossy", False)
            if not isinstance(lossy, bool):
                _fail(f"{cloc}: connection #{i + 1} {shown}: 'lossy' expected true or false, got {_short(lossy)}")
        else:
            _fail(f"{cloc}: connection #{i + 1}: expected [from, to] (e.g. [source, covariance] or "
                  f"[a.out, b.in]) or {{from: ..., to: ..., lossy: true}}, got {_short(c)}")
        sb, sp = _endpoint(a, "from", specs, cloc, i, shown)
        db, dp = _endpoint(b, "to", specs, cloc, i, shown)
        if sb == db:
            _fail(f"{cloc}: connection #{i + 1} {shown}: block {sb!r} is connected to itself "
                  f"(expected an acyclic graph)")
        e = Edge(sb, sp, db, dp, lossy)
        if (sb, sp, db, dp) in seen_edges:
            _fail(f"{cloc}: connection #{i + 1} {shown}: duplicate connection {sb}.{sp} -> {db}.{dp}")
        seen_edges.add((sb, sp, db, dp))
        edges.append(e)

    # every input connected
    fed = {(e.dst, e.dst_port) for e in edges}
    for bname, spec in specs.items():
        for port in spec.cls.inputs:
            if (bname, port) not in fed:
                target = bname if port == spec.cls.inputs[0] else f"{bname}.{port}"
                _fail(f"{where('blocks', bname)}: block {bname!r} (type {spec.type}): input port "
                      f"{port!r} is not connected (expected a connection [<upstream block>, {target}])")

    _, cycle = _toposort(specs, edges)
    if cycle is not None:
        _fail(f"{where('connections')}: the connections form a cycle: {' -> '.join(cycle)} "
              f"(expected an acyclic graph: frames flow from sources to sinks)")

    # the frame contract: every field a block reads must be added upstream of it
    broken = check_graph(instances, [(e.src, e.dst) for e in edges])
    if broken:
        _fail(f"{where('connections')}: the connections break the frame contract: " + "; ".join(broken[:5])
              + (f" (and {len(broken) - 5} more)" if len(broken) > 5 else ""))

    from .placement import validate_placement  # late: placement builds on this module's classes

    placement = validate_placement(data.get("placement"), specs, edges,
                                   where("placement") if "placement" in data else path)
    return Flowgraph(name=name, path=path, blocks=specs, edges=edges, description=description,
                     overrides={f"{b}.{p}": v for b, d in ov.items() for p, (v, _) in d.items()},
                     placement=placement, array_reads={n: declared_array_reads(b) for n, b in instances.items()})


def declared_array_reads(block) -> frozenset | None:
    """Names of the arrays ``block`` declares in its frame contract ``reads``; None when it declares
    no field at all (a block without a contract, or one that takes any frame such as ``zmq_pub``)."""
    reads = tuple(getattr(block, "reads", ()) or ())
    if not reads:
        return None
    return frozenset(f.name for f in reads if f.kind == "array")
