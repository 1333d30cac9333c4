"""Placement: several blocks of a flowgraph in one worker (process or thread).

A flowgraph may carry a top-level ``placement`` mapping of worker name -> list of block
names, e.g.::

    placement:
      estimate: [detect, calibrate, locate]

The blocks of one worker must form a chain in the order listed: every block but the last
has exactly one outgoing connection (plain, not lossy, default ports) and it goes to the next
block, and every block but the first has exactly one incoming connection, from the previous
one.  Stages share a worker; a source with one output may head a chain (``work: [source,
detect]``): its frames then go through the stages before they leave the worker; and a sink
with one input may end one (``estimate: [calibrate, locate, out]``): the frames reach it by
function call, and the worker counts as a sink in the run's summary.  Blocks not listed run
one per worker as before.

At run time the chain becomes one block named after the worker (:func:`apply_placement`):
a frame goes through the members by plain function calls -- no serialization, no socket --
so a 2-core machine runs 2-3 busy processes instead of one per block.  A member that drops
a frame (``BadFrame`` or ``None``) drops it for the chain, exactly as it would in its own
worker.  A chain headed by a source is a source worker: ``generate()`` runs in the worker's
helper thread as for any source, and the stages run on the worker thread, so the next frame
is drawn while the stages work on the current one.  The summary shows one row per worker,
its type ``placement[a+b+c]``.
"""

from __future__ import annotations

import time

from ..block import Block
from .flowgraph import BlockSpec, Edge, Flowgraph, FlowgraphError

__all__ = ["validate_placement", "apply_placement", "FusedStage"]


def validate_placement(placement, specs: dict, edges: list[Edge], where: str) -> dict[str, list[str]]:
    """Check a ``placement`` mapping against the blocks and connections; return it normalised.

    Parameters
    ----------
    placement : object from the YAML (expected ``{worker: [block, ...]}``) or None.
    specs : block name -> BlockSpec.  edges : the connections.  where : "file:line" for errors.

    Raises
    ------
    FlowgraphError naming the file, the worker and the block.
    """
    if placement is None:
        return {}
    if not isinstance(placement, dict):
        raise FlowgraphError(
            f"{where}: 'placement': expected a mapping of worker name -> list of block names, "
            f"got {type(placement).__name__}"
        )
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for worker, members in placement.items():
        if not isinstance(worker, str) or not worker:
            raise FlowgraphError(f"{where}: 'placement': worker name {worker!r}: expected a non-empty string")
        if worker in specs and list(members or []) != [worker]:
            raise FlowgraphError(
                f"{where}: 'placement': worker name {worker!r} is also a block name (expected a distinct name)"
            )
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise FlowgraphError(
                f"{where}: 'placement': worker {worker!r}: expected a non-empty list of block names, got {members!r}"
            )
        for m in members:
            if m not in specs:
                raise FlowgraphError(
                    f"{where}: 'placement': worker {worker!r}: unknown block {m!r} (blocks: {', '.join(specs)})"
                )
            if m in seen:
                raise FlowgraphError(
                    f"{where}: 'placement': block {m!r} is placed in both worker {seen[m]!r} and {worker!r}"
                )
            seen[m] = worker
            spec = specs[m]
            head_source = m == members[0] and spec.kind == "source" and len(spec.cls.outputs) == 1
            tail_sink = m == members[-1] and len(members) > 1 and spec.kind == "sink" and len(spec.cls.inputs) == 1
            stage = spec.kind == "block" and len(spec.cls.inputs) == 1 and len(spec.cls.outputs) == 1
            if not (stage or head_source or tail_sink):
                raise FlowgraphError(
                    f"{where}: 'placement': worker {worker!r}: block {m!r} (type {spec.type}) is "
                    f"a {spec.kind} with {len(spec.cls.inputs)} input(s) and "
                    f"{len(spec.cls.outputs)} output(s); only single-port stages share a worker "
                    "(and a single-output source first in the list, a single-input sink last)"
                )
        for a, b in zip(members, members[1:]):
            outs = [e for e in edges if e.src == a]
            ins = [e for e in edges if e.dst == b]
            if len(outs) != 1 or outs[0].dst != b or len(ins) != 1 or outs[0].lossy:
                raise FlowgraphError(
                    f"{where}: 'placement': worker {worker!r}: blocks {a!r} -> {b!r} are not a "
                    f"chain (expected {a!r}'s only output to be a plain connection to {b!r}, "
                    f"and {b!r}'s only input to come from {a!r})"
                )
        out[worker] = list(members)
    return out


class FusedStage(Block):
    """Several stages run one after another in one worker (see the module docstring)."""

    params = ()

    def __init__(self, name: str | None = None, members=()):  # noqa: D107 (the members are built specs)
        self.name = name or type(self).__name__  # as Block.__init__ (placement always passes the worker name)
        self.members = [spec.instantiate() for spec in members]
        self.proc_s = {b.name: 0.0 for b in self.members}

    def start(self) -> None:
        for b in self.members:
            b.start()

    def process(self, frame):
        return self._through(self.members, frame)

    def _through(self, members, frame):
        for b in members:
            t = time.perf_counter()
            frame = b.process(frame)
            self.proc_s[b.name] += time.perf_counter() - t
            if isinstance(frame, dict):
                frame = frame.get(b.outputs[0])
            if frame is None:
                return None
        return frame

    def checkpoint(self) -> None:
        for b in self.members:
            b.checkpoint()

    def finish(self):
        """Flush member by member: what a member emits at the end goes through the rest."""
        out = []
        for b in self.members:
            flushed = list(out)
            out = []
            for f in flushed:
                f = b.process(f)
                if isinstance(f, dict):
                    f = f.get(b.outputs[0])
                if f is not None:
                    out.append(f)
            extra = b.finish()
            if extra:
                out.extend(extra)
        return out or None

    def close(self) -> None:
        first = None
        for b in self.members:
            try:
                b.close()
            except Exception as exc:  # noqa: BLE001 - close every member, then report the first failure
                first = first or exc
        if first is not None:
            raise first


class FusedSource(FusedStage):
    """A source followed by stages in one worker: ``generate()`` is the source's, and the worker
    passes each generated frame through :meth:`after_source` (the stages) before sending it."""

    kind = "source"
    inputs = ()

    def generate(self):
        return self.members[0].generate()

    def after_source(self, frame):
        """The stages on one generated frame: the frame to send, or None (a member dropped it);
        a member's ``BadFrame`` propagates (the worker counts the drop)."""
        return self._through(self.members[1:], frame)

    def checkpoint(self) -> None:
        """The stages' checkpoints (on the worker thread, between frames); the source's own is not
        called periodically, as in a worker of its own (its ``generate()`` runs in another thread)."""
        for b in self.members[1:]:
            b.checkpoint()

    def stop(self) -> None:
        stop = getattr(self.members[0], "stop", None)
        if callable(stop):
            stop()

    def all_counters(self) -> dict:
        get = getattr(self.members[0], "all_counters", None)
        return get() if callable(get) else {}


def _fused_class(members: list[BlockSpec]) -> type:
    first, last = members[0].cls, members[-1].cls
    base: type[FusedStage]
    if first.kind == "source":
        name, base, kind = "FusedSource", FusedSource, "source"
    else:  # a chain that ends in a sink is a sink worker (the summary counts what reaches it as delivered)
        name, base, kind = "FusedStage", FusedStage, ("sink" if last.kind == "sink" else "block")
    return type(
        name,
        (base,),
        {
            "kind": kind,
            "requires": first.requires,
            "reads": getattr(first, "reads", ()),
            "inputs": first.inputs,
            "outputs": members[-1].cls.outputs,
            "adds": tuple(f for s in members for f in getattr(s.cls, "adds", ())),
        },
    )


def apply_placement(graph: Flowgraph) -> Flowgraph:
    """The graph with every placed chain replaced by one stage named after its worker.

    Edges into the chain's first block and out of its last are re-attached to the worker.
    A graph without ``placement`` is returned unchanged.
    """
    placement = getattr(graph, "placement", None) or {}
    if not placement:
        return graph
    rename: dict[str, str] = {}
    blocks: dict[str, BlockSpec] = {}
    fused: dict[str, BlockSpec] = {}
    for worker, names in placement.items():
        members = [graph.blocks[n] for n in names]
        fused[worker] = BlockSpec(
            name=worker,
            type="placement[" + "+".join(names) + "]",
            cls=_fused_class(members),
            params={"members": members},
        )
        for n in names:
            rename[n] = worker
    for name, spec in graph.blocks.items():
        w = rename.get(name)
        if w is None:
            blocks[name] = spec
        elif w not in blocks:
            blocks[w] = fused[w]
    edges = []
    for e in graph.edges:
        if e.src in rename and rename.get(e.dst) == rename[e.src]:
            continue  # inside a worker: a function call
        edges.append(Edge(rename.get(e.src, e.src), e.src_port, rename.get(e.dst, e.dst), e.dst_port, e.lossy))
    reads = {n: r for n, r in graph.array_reads.items() if n not in rename}
    for worker, names in placement.items():
        member = [graph.array_reads.get(n) for n in names]
        known = [r for r in member if r is not None]
        reads[worker] = None if len(known) < len(member) else frozenset().union(*known)
    return Flowgraph(
        name=graph.name,
        path=graph.path,
        blocks=blocks,
        edges=edges,
        description=graph.description,
        overrides=graph.overrides,
        array_reads=reads,
    )
