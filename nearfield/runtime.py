"""The flowgraph runner (DESIGN.md, "Runtime").

How a run works
---------------
* **One worker per block.**  Process mode (default): one ``multiprocessing`` process per
  block, started with the ``fork`` method (block classes registered at run time -- e.g. in
  tests -- are available in the children; nothing is pickled).  ZeroMQ contexts are created
  only after forking (each child makes its own).  In-process mode (``inproc=True``): one
  thread per block, one shared context and ``inproc://`` sockets; the worker code is the
  same.
* **Links.**  An input port binds one ``PULL`` socket (fan-in: several upstream ``PUSH``
  sockets connect to it).  Every *edge* has its own ``PUSH`` socket, so an output that feeds
  several inputs sends every frame to each of them (fan-out duplicates, it never
  round-robins).  Endpoints are ``ipc://`` paths in a private temporary directory
  (``transport="tcp"``: ``tcp://127.0.0.1``).  High-water marks are small (``hwm`` frames,
  default 4) on both ends, so a slow block blocks its upstream (backpressure) and nothing is
  dropped.  A *lossy* edge (``{from: a, to: b, lossy: true}``) is ``XPUB``/``SUB``: the
  sender waits for the subscription before its first frame (no slow-joiner loss), then sends
  without blocking (``XPUB_NODROP`` + ``NOBLOCK``): a frame that does not fit is dropped and
  counted exactly at the sender (column ``lost``).  End of stream is always delivered.
* **Frames** travel as the zero-copy multipart messages of :mod:`nearfield.wire`: no
  pickling, no copy of array data in our code, no per-frame socket creation.
* **Worker loop.**  ``start()``; a source iterates ``generate()`` (stamping
  ``meta["t_emit"] = time.time()`` if absent) after every block has reported ready; a
  stage/sink receives, decodes (a :class:`~nearfield.wire.WireError` -> drop, count, log),
  checks its ``requires`` arrays are present and finite (else drop, count, log), calls
  ``process(frame)`` (a Frame, ``None`` or ``{port: Frame}``); :class:`~nearfield.block.BadFrame`
  -> drop, count, log, go on.  End of stream is counted per incoming edge; when every edge
  has delivered it: ``finish()`` (its frames are emitted), EOS on every outgoing edge,
  ``close()``, report the counters; the sockets stay open until the runner releases every
  worker (all done, or stop), because libzmq can lose data still queued for a receiver
  whose sender hangs up while the receiver's high-water mark throttles it.
* **Errors.**  Any other exception is reported to the runner over a control socket (block,
  frame ``seq``, error, traceback); the runner prints
  ``block 'X' failed on frame seq=N: <Error>: <msg>``, stops every worker and the run
  fails.  Ctrl-C (SIGINT) stops cleanly: children ignore SIGINT, the runner sets the stop
  flag, which every worker checks while waiting on a socket (at most ~50 ms apart), then
  joins them; stragglers are terminated, then killed.  Children also die with the parent
  (``PR_SET_PDEATHSIG``).  No process outlives a run.
* **Summary.**  Each worker reports its counters at the end; the runner prints a table to
  stderr and returns it in :class:`RunResult`.
"""
from __future__ import annotations

import ctypes
import itertools
import logging
import multiprocessing
import os
import shutil
import signal
import socket as _socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np
import zmq
from threadpoolctl import threadpool_limits

from .block import BadFrame
from .flowgraph import Flowgraph
from .frame import Frame
from .wire import DEFAULT_LIMITS, EOS, WireError, decode, encode, encode_eos

__all__ = ["RunResult", "run_flowgraph", "format_summary"]

log = logging.getLogger("nearfield.runtime")

_POLL_MS = 50            # how often a waiting worker checks the stop flag
_LOG_DROPS = 10          # drops logged per block before going quiet (all are counted)
_RESERVOIR = 50_000      # latency samples kept per block for the 95th percentile
_run_ids = itertools.count()


@dataclass
class RunResult:
    """Outcome of :func:`run_flowgraph`.

    Attributes
    ----------
    ok : bool
        True when every block finished normally.
    summary : list of dict
        One dict per block (see :func:`format_summary` for the fields).
    error : str or None
        ``"block 'X' failed on frame seq=N: <Error>: <msg>"``, ``"interrupted"``, ...
    traceback : str or None
        Traceback of the failing block, when there is one.
    wall_s : float
        Wall time of the run, seconds.
    interrupted : bool
        True if stopped by Ctrl-C / SIGTERM.
    """

    ok: bool
    summary: list
    error: str | None = None
    traceback: str | None = None
    wall_s: float = 0.0
    interrupted: bool = False

    def block(self, name: str) -> dict:
        """The summary row of block ``name``."""
        for row in self.summary:
            if row["block"] == name:
                return row
        raise KeyError(name)


class _Stopped(Exception):
    """The stop flag was raised while a worker waited."""


class _Interrupted(BaseException):
    """SIGTERM received by the runner."""


# ---------------------------------------------------------------------------------------
# Plan: endpoints of every socket
# ---------------------------------------------------------------------------------------

@dataclass
class _In:
    endpoint: str
    port: str
    lossy: bool


@dataclass
class _Out:
    endpoint: str
    port: str
    lossy: bool
    edge: str


@dataclass
class _Plan:
    name: str
    spec: object
    inputs: list
    outputs: list
    n_in_edges: int
    control: str
    hwm: int


def _free_tcp_port() -> int:
    with _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_plans(graph: Flowgraph, transport: str, tmpdir: str | None, runid: str, hwm: int):
    def endpoint(tag: str) -> str:
        if transport == "ipc":
            return f"ipc://{tmpdir}/{tag}"
        if transport == "tcp":
            return f"tcp://127.0.0.1:{_free_tcp_port()}"
        return f"inproc://nf-{runid}/{tag}"

    control = endpoint("ctl")
    in_ep = {}          # (block, port) -> endpoint of its PULL
    lossy_ep = {}       # edge -> endpoint of its SUB
    plans = {}
    for i, (name, spec) in enumerate(graph.blocks.items()):
        ins = []
        for j, port in enumerate(spec.cls.inputs):
            edges = [e for e in graph.in_edges(name) if e.dst_port == port]
            if any(not e.lossy for e in edges):
                ep = endpoint(f"{i}.{j}")
                in_ep[(name, port)] = ep
                ins.append(_In(ep, port, False))
            for k, e in enumerate(x for x in edges if x.lossy):
                ep = endpoint(f"{i}.{j}.L{k}")
                lossy_ep[e] = ep
                ins.append(_In(ep, port, True))
        plans[name] = _Plan(name, spec, ins, [], len(graph.in_edges(name)), control, hwm)
    for e in graph.edges:
        ep = lossy_ep[e] if e.lossy else in_ep[(e.dst, e.dst_port)]
        plans[e.src].outputs.append(_Out(ep, e.src_port, e.lossy, str(e)))
    return control, plans


# ---------------------------------------------------------------------------------------
# Worker
# ---------------------------------------------------------------------------------------

class _Samples:
    """Count and mean (exact) and a uniform reservoir for percentiles."""

    def __init__(self):
        self.n = 0
        self.total = 0.0
        self.res: list[float] = []
        self._rng = np.random.default_rng(0)

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        if len(self.res) < _RESERVOIR:
            self.res.append(x)
        else:
            j = int(self._rng.integers(0, self.n))
            if j < _RESERVOIR:
                self.res[j] = x

    def mean(self):
        return self.total / self.n if self.n else None

    def p95(self):
        return float(np.percentile(self.res, 95)) if self.res else None


def _set_pdeathsig() -> None:
    """Ask Linux to SIGKILL this child when the parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - non-Linux
        pass


def _check_requires(frame: Frame, requires) -> str | None:
    for name in requires:
        a = frame.arrays.get(name)
        if a is None:
            return f"missing required array {name!r} (has: {', '.join(frame.arrays) or 'none'})"
        if a.dtype.kind in "fc" and a.size:
            # fast path: the sum is finite when every element is (an overflowing sum is re-checked)
            if not np.isfinite(a.sum()) and not np.isfinite(a).all():
                return f"array {name!r} holds NaN or Inf"
    return None


class _Worker:
    def __init__(self, plan: _Plan, stop, go, ctx, child_process: bool):
        self.plan = plan
        self.name = plan.name
        self.stop = stop
        self.go = go
        self.ctx = ctx
        self.child_process = child_process
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = {"wire": 0, "invalid": 0, "bad": 0}
        self.proc = _Samples()
        self.e2e = _Samples()
        self.blocked = 0.0
        self.t_run = None
        self.t_end = None
        self.seq = None          # seq of the frame being handled (for error reports)
        self.last_seq = None
        self.stage = "setup"

    # -- waiting, with the stop flag checked ------------------------------------------
    def _check_stop(self):
        if self.stop.is_set():
            raise _Stopped()

    def _send(self, out: _Out, parts) -> None:
        sock = out.sock
        if out.lossy:
            try:
                sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                out.lost += 1
            return
        try:
            sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            return
        except zmq.Again:
            pass
        t = time.perf_counter()
        try:
            while True:
                self._check_stop()
                if sock.poll(_POLL_MS, zmq.POLLOUT):
                    try:
                        sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                        return
                    except zmq.Again:
                        continue
        finally:
            self.blocked += time.perf_counter() - t

    def _send_eos(self, out: _Out) -> None:
        parts = encode_eos()
        while True:
            try:
                out.sock.send_multipart(parts, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                self._check_stop()
                if out.lossy:
                    time.sleep(0.002)
                else:
                    out.sock.poll(_POLL_MS, zmq.POLLOUT)

    def _emit(self, result) -> None:
        if result is None:
            return
        if isinstance(result, Frame):
            outs = self.spec.cls.outputs
            if not outs:
                return  # a sink returning its frame: nothing to send
            items = [(outs[0], result)]
        elif isinstance(result, dict):
            items = list(result.items())
            for port, fr in items:
                if port not in self.spec.cls.outputs:
                    raise TypeError(f"returned a frame for unknown output port {port!r} "
                                    f"(outputs: {', '.join(self.spec.cls.outputs) or 'none'})")
                if not isinstance(fr, Frame):
                    raise TypeError(f"returned {type(fr).__name__} for port {port!r}; expected a Frame")
        else:
            raise TypeError(f"returned {type(result).__name__}; expected a Frame, None or {{port: Frame}}")
        for port, fr in items:
            self.frames_out += 1
            targets = self.outs_by_port.get(port)
            if not targets:
                continue
            parts = encode(fr)
            for out in targets:
                self._send(out, parts)

    def _drop(self, kind: str, seq, reason) -> None:
        self.dropped[kind] += 1
        n = sum(self.dropped.values())
        what = f"frame seq={seq}" if seq is not None else "a message"
        if n <= _LOG_DROPS:
            log.warning("block %r dropped %s: %s", self.name, what, reason)
        if n == _LOG_DROPS:
            log.warning("block %r: further dropped frames are counted, not logged", self.name)

    # -- main ----------------------------------------------------------------------
    def run(self) -> None:
        plan = self.plan
        self.spec = plan.spec
        own_ctx = self.child_process
        if own_ctx:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _set_pdeathsig()
            # One BLAS thread per block: the blocks already run in parallel, and on a few
            # cores a multi-threaded BLAS in every process oversubscribes them (5x slower).
            threadpool_limits(limits=1)
            self.ctx = zmq.Context()
        ctx = self.ctx
        ctl = ctx.socket(zmq.PUSH)
        ctl.setsockopt(zmq.LINGER, 5000)
        ctl.setsockopt(zmq.RECONNECT_IVL, 10)
        ctl.connect(plan.control)
        status = "ok"
        block = None
        socks = []
        self.outs_by_port = {}
        try:
            block = self.spec.instantiate()
            self.block = block
            for i in plan.inputs:
                s = ctx.socket(zmq.SUB if i.lossy else zmq.PULL)
                s.setsockopt(zmq.RCVHWM, plan.hwm)
                if i.lossy:
                    s.setsockopt(zmq.SUBSCRIBE, b"")
                s.bind(i.endpoint)
                i.sock = s
                socks.append(s)
            for o in plan.outputs:
                s = ctx.socket(zmq.XPUB if o.lossy else zmq.PUSH)
                s.setsockopt(zmq.SNDHWM, plan.hwm)
                s.setsockopt(zmq.RECONNECT_IVL, 10)
                if o.lossy:
                    s.setsockopt(zmq.XPUB_NODROP, 1)
                s.connect(o.endpoint)
                o.sock = s
                o.lost = 0
                socks.append(s)
                self.outs_by_port.setdefault(o.port, []).append(o)
            self.stage = "start"
            block.start()
            ctl.send_json({"type": "ready", "block": self.name})
            self.stage = "setup"
            for o in plan.outputs:      # lossy links: wait for the subscription (no slow joiner)
                if o.lossy:
                    while not (o.sock.poll(_POLL_MS, zmq.POLLIN) and o.sock.recv()[:1] == b"\x01"):
                        self._check_stop()
            if not plan.spec.cls.inputs:
                while not self.go.wait(_POLL_MS / 1000):
                    self._check_stop()
            self.t_run = time.perf_counter()
            if plan.spec.cls.inputs:
                self._run_stage(block)
            else:
                self._run_source(block)
            self.seq = None
            self.stage = "finish"
            flushed = block.finish()
            if flushed is not None:
                if isinstance(flushed, (Frame, dict)):
                    flushed = [flushed]
                for item in flushed:
                    self._emit(item)
            self.t_end = time.perf_counter()
            self.stage = "eos"
            for o in plan.outputs:
                self._send_eos(o)
        except _Stopped:
            status = "stopped"
        except BaseException as exc:
            status = "failed"
            self._report(ctl, exc)
        finally:
            if self.t_end is None:
                self.t_end = time.perf_counter()
            if block is not None:
                try:
                    self.stage = "close"
                    block.close()
                except BaseException as exc:
                    if status == "ok":
                        status = "failed"
                        self.seq = None
                        self._report(ctl, exc)
            try:
                ctl.send_json({"type": "done", "block": self.name, "status": status,
                               "stats": self._stats(status)})
                # Keep every socket open until the runner releases all workers (it does so
                # once every block is done, or on stop): closing a sender while its receiver
                # still has unread data queued can lose that data (libzmq drops it when the
                # peer hangs up while the receiver's HWM throttles input).
                while not self.stop.wait(_POLL_MS / 1000):
                    pass
            finally:
                for s in socks:
                    s.close(linger=0)
                ctl.close()
                if own_ctx:
                    ctx.term()

    def _report(self, ctl, exc) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        ctl.send_json({"type": "error", "block": self.name, "seq": self.seq, "stage": self.stage,
                       "last_seq": self.last_seq, "error": type(exc).__name__, "message": str(exc),
                       "traceback": tb})

    def _run_source(self, block) -> None:
        self.stage = "generate"
        gen = iter(block.generate())
        while True:
            self._check_stop()
            t = time.perf_counter()
            try:
                item = next(gen)
            except StopIteration:
                break
            if item is None:  # an idle source (no data yet) lets the stop flag be checked
                continue
            self.proc.add(time.perf_counter() - t)
            now = time.time()
            for fr in (item.values() if isinstance(item, dict) else (item,)):
                if isinstance(fr, Frame):
                    fr.meta.setdefault("t_emit", now)
                    self.seq = fr.seq
            self.stage = "emit"
            self._emit(item)
            self.last_seq, self.seq = self.seq, None
            self.stage = "generate"

    def _run_stage(self, block) -> None:
        plan = self.plan
        poller = zmq.Poller()
        port_of = {}
        for i in plan.inputs:
            poller.register(i.sock, zmq.POLLIN)
            port_of[i.sock] = i.port
        multi = len(plan.spec.cls.inputs) > 1
        requires = plan.spec.cls.requires
        eos_left = plan.n_in_edges
        while eos_left > 0:
            self._check_stop()
            events = poller.poll(_POLL_MS)
            for sock, _ in events:
                parts = sock.recv_multipart(copy=False)
                try:
                    frame = decode(parts, DEFAULT_LIMITS)
                except WireError as exc:
                    self._drop("wire", None, f"invalid message: {exc}")
                    continue
                if frame is EOS:
                    eos_left -= 1
                    continue
                self.frames_in += 1
                self.seq = frame.seq
                reason = _check_requires(frame, requires)
                if reason:
                    self._drop("invalid", frame.seq, reason)
                    continue
                self.stage = "process"
                t = time.perf_counter()
                try:
                    out = block.process(frame, port_of[sock]) if multi else block.process(frame)
                except BadFrame as exc:
                    self.proc.add(time.perf_counter() - t)
                    self._drop("bad", frame.seq, f"BadFrame: {exc}")
                    continue
                self.proc.add(time.perf_counter() - t)
                t_emit = frame.meta.get("t_emit")
                if isinstance(t_emit, (int, float)) and not isinstance(t_emit, bool):
                    self.e2e.add(time.time() - t_emit)
                self.stage = "emit"
                self._emit(out)
                self.last_seq, self.seq = frame.seq, None

    def _stats(self, status: str) -> dict:
        wall = (self.t_end - self.t_run) if self.t_run is not None else 0.0

        def ms(x):
            return None if x is None else x * 1e3

        return {
            "block": self.name, "type": self.spec.type, "kind": self.spec.kind, "status": status,
            "frames_in": self.frames_in, "frames_out": self.frames_out,
            "dropped": sum(self.dropped.values()), "dropped_detail": dict(self.dropped),
            "lost": sum(getattr(o, "lost", 0) for o in self.plan.outputs),
            "proc_mean_ms": ms(self.proc.mean()), "proc_p95_ms": ms(self.proc.p95()),
            "latency_mean_ms": ms(self.e2e.mean()), "latency_p95_ms": ms(self.e2e.p95()),
            "busy": (self.proc.total / wall) if wall > 0 else None,
            "blocked": (self.blocked / wall) if wall > 0 else None,
            "wall_s": wall,
        }


def _worker_entry(plan, stop, go, ctx, child_process):
    _Worker(plan, stop, go, ctx, child_process).run()


# ---------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------

def _format_error(msg: dict) -> str:
    name = msg["block"]
    err = f"{msg['error']}: {msg['message']}" if msg.get("message") else msg["error"]
    if msg.get("seq") is not None:
        return f"block {name!r} failed on frame seq={msg['seq']}: {err}"
    stage = msg.get("stage") or "setup"
    after = f" (after frame seq={msg['last_seq']})" if msg.get("last_seq") is not None else ""
    where = {"generate": "in generate()", "start": "in start()", "finish": "in finish()",
             "close": "in close()", "setup": "during set-up", "eos": "sending end of stream",
             "process": "in process()", "emit": "sending a frame"}.get(stage, f"in {stage}")
    return f"block {name!r} failed {where}{after}: {err}"


def _fmt(x, spec="{:.2f}"):
    return "-" if x is None else spec.format(x)


def format_summary(summary: list, wall_s: float | None = None) -> str:
    """The per-block summary table as text.

    Columns: frames in/out; ``drop`` = frames dropped for bad data (invalid message,
    missing/non-finite required array, BadFrame); ``lost`` = frames dropped on lossy
    outgoing links; processing time per frame (mean, 95th percentile, ms); latency since
    the source emitted the frame (mean, p95, ms); ``busy`` = processing time / run time;
    ``blocked`` = time waiting for a slow downstream / run time.
    """
    head = ["block", "type", "in", "out", "drop", "lost", "proc ms", "p95 ms",
            "lat ms", "lat p95", "busy", "blocked", "status"]
    rows = []
    for r in summary:
        rows.append([r["block"], r["type"], str(r["frames_in"]), str(r["frames_out"]),
                     str(r["dropped"]), str(r["lost"]), _fmt(r["proc_mean_ms"]),
                     _fmt(r["proc_p95_ms"]), _fmt(r["latency_mean_ms"]), _fmt(r["latency_p95_ms"]),
                     _fmt(None if r["busy"] is None else 100 * r["busy"], "{:.0f}%"),
                     _fmt(None if r["blocked"] is None else 100 * r["blocked"], "{:.0f}%"),
                     r["status"]])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
    if wall_s is not None:
        lines.append(f"wall time {wall_s:.3f} s")
    return "\n".join(lines)


def _empty_row(name, spec, status):
    return {"block": name, "type": spec.type, "kind": spec.kind, "status": status,
            "frames_in": 0, "frames_out": 0, "dropped": 0,
            "dropped_detail": {"wire": 0, "invalid": 0, "bad": 0}, "lost": 0,
            "proc_mean_ms": None, "proc_p95_ms": None, "latency_mean_ms": None,
            "latency_p95_ms": None, "busy": None, "blocked": None, "wall_s": 0.0}


def run_flowgraph(graph: Flowgraph, inproc: bool = False, transport: str | None = None, *,
                  hwm: int = 4, quiet: bool = False, grace_s: float = 5.0,
                  stream=None) -> RunResult:
    """Run a validated flowgraph to completion.

    Parameters
    ----------
    graph : Flowgraph
        From :func:`nearfield.flowgraph.load_flowgraph` / ``parse_flowgraph``.
    inproc : bool
        Run every block in a thread of this process (``inproc://`` sockets) instead of
        one process per block.
    transport : {"ipc", "tcp", "inproc"}, optional
        Socket transport; default ``"ipc"`` for processes, ``"inproc"`` for threads.
        ``"inproc"`` requires ``inproc=True``.
    hwm : int
        Send and receive high-water mark of every link, frames (> 0).
    quiet : bool
        Do not print the summary table (errors are always printed).
    grace_s : float
        After a failure or Ctrl-C, how long workers get to stop before being terminated.
    stream : file, optional
        Where the summary and errors go (default ``sys.stderr``).

    Returns
    -------
    RunResult
        ``ok`` is False when a block failed, a worker died or the run was interrupted.
    """
    stream = sys.stderr if stream is None else stream
    if transport is None:
        transport = "inproc" if inproc else "ipc"
    if transport not in ("ipc", "tcp", "inproc"):
        raise ValueError(f"transport: expected 'ipc', 'tcp' or 'inproc', got {transport!r}")
    if transport == "inproc" and not inproc:
        raise ValueError("transport 'inproc' needs inproc=True (threads share one ZeroMQ context)")
    if not (isinstance(hwm, int) and hwm > 0):
        raise ValueError(f"hwm: expected a positive integer, got {hwm!r}")

    runid = f"{os.getpid()}-{next(_run_ids)}"
    tmpdir = None
    if transport == "ipc":
        tmpdir = tempfile.mkdtemp(prefix="nf-")
        if len(tmpdir) > 80 and os.path.isdir("/tmp"):  # ipc paths are limited to ~107 bytes
            os.rmdir(tmpdir)
            tmpdir = tempfile.mkdtemp(prefix="nf-", dir="/tmp")
    control, plans = _make_plans(graph, transport, tmpdir, runid, hwm)
    names = list(plans)
    t_start = time.perf_counter()
    workers = {}
    ctx = None
    ctl = None
    error = None
    tb = None
    interrupted = False
    done: dict[str, dict] = {}
    ready: set[str] = set()
    died_at: dict[str, float] = {}
    t_stop = None
    stop = None

    old_term = None
    if threading.current_thread() is threading.main_thread():
        def _on_term(signum, frame):
            raise _Interrupted()
        old_term = signal.signal(signal.SIGTERM, _on_term)

    blas = threadpool_limits(limits=1) if inproc else None  # see _Worker.run; restored below
    try:
        if inproc:
            stop, go = threading.Event(), threading.Event()
            ctx = zmq.Context()
            ctl = ctx.socket(zmq.PULL)
            ctl.bind(control)
            for name in names:
                th = threading.Thread(target=_worker_entry, name=f"nf:{name}", daemon=True,
                                      args=(plans[name], stop, go, ctx, False))
                workers[name] = th
                th.start()
        else:
            mp = multiprocessing.get_context("fork")
            stop, go = mp.Event(), mp.Event()
            for name in names:
                p = mp.Process(target=_worker_entry, name=f"nf:{name}",
                               args=(plans[name], stop, go, None, True))
                workers[name] = p
                p.start()
            ctx = zmq.Context()  # only after every fork
            ctl = ctx.socket(zmq.PULL)
            ctl.bind(control)

        def handle(msg):
            nonlocal error, tb, t_stop
            kind = msg.get("type")
            if kind == "ready":
                ready.add(msg["block"])
                if len(ready) == len(names):
                    go.set()
            elif kind == "error":
                if error is None:
                    error = _format_error(msg)
                    tb = msg.get("traceback")
                    print(error, file=stream)
                    if tb:
                        print("".join("    " + ln for ln in tb.splitlines(True)), file=stream, end="")
                if not stop.is_set():
                    stop.set()
                    t_stop = time.perf_counter()
            elif kind == "done":
                done[msg["block"]] = msg["stats"]
                if len(done) == len(names):
                    stop.set()   # release: every block is done, workers may close their sockets

        while True:
            try:
                if ctl.poll(_POLL_MS):
                    while True:
                        try:
                            handle(ctl.recv_json(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                now = time.perf_counter()
                alive = [n for n in names if workers[n].is_alive()]
                for n in names:
                    if n not in alive and n not in done:
                        died_at.setdefault(n, now)
                        if now - died_at[n] > 1.0 and error is None:
                            code = getattr(workers[n], "exitcode", None)
                            how = (f"killed by signal {-code}" if code is not None and code < 0
                                   else f"exit code {code}")
                            error = f"block {n!r} died unexpectedly ({how})"
                            print(error, file=stream)
                            stop.set()
                            t_stop = now
                if not alive:
                    if all(n in done or now - died_at.get(n, now) > 1.0 for n in names):
                        break
                    continue
                if t_stop is not None and now - t_stop > grace_s:
                    break
            except (KeyboardInterrupt, _Interrupted):
                if interrupted:       # second Ctrl-C: stop waiting
                    break
                interrupted = True
                if error is None:
                    error = "interrupted"
                    print("interrupted: stopping the flowgraph", file=stream)
                stop.set()
                t_stop = time.perf_counter()
    finally:
        if blas is not None:
            blas.restore_original_limits()
        # no worker outlives the run
        if stop is not None:
            stop.set()       # also when leaving early (e.g. Ctrl-C while starting the workers)
        deadline = time.perf_counter() + (0.5 if (t_stop is not None) else grace_s)
        for name, w in workers.items():
            w.join(max(0.0, deadline - time.perf_counter()))
        stuck = []
        for name, w in workers.items():
            if w.is_alive():
                if isinstance(w, threading.Thread):
                    if stop is not None:
                        stop.set()
                    w.join(2.0)
                    if w.is_alive():
                        stuck.append(name)
                else:
                    w.terminate()
                    w.join(2.0)
                    if w.is_alive():
                        w.kill()
                        w.join(2.0)
        if ctl is not None:
            try:  # last reports
                while ctl.poll(0):
                    m = ctl.recv_json(zmq.NOBLOCK)
                    if m.get("type") == "done":
                        done[m["block"]] = m["stats"]
            except zmq.ZMQError:
                pass
            ctl.close(linger=0)
        if ctx is not None and not stuck:
            ctx.term()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)

    wall = time.perf_counter() - t_start
    summary = [done.get(n) or _empty_row(n, graph.blocks[n], "killed") for n in names]
    if stuck and error is None:
        error = f"thread(s) of block(s) {', '.join(map(repr, stuck))} did not stop"
    ok = error is None and all(r["status"] == "ok" for r in summary)
    if not ok and error is None:
        bad = [r["block"] for r in summary if r["status"] != "ok"]
        error = f"block(s) {', '.join(map(repr, bad))} did not finish"
    if not quiet:
        print(format_summary(summary, wall), file=stream)
    return RunResult(ok=ok, summary=summary, error=error, traceback=tb, wall_s=wall,
                     interrupted=interrupted)
