"""The runner: start one worker per block, supervise them, stop them, collect the summary.

Supervision loop (every ``POLL_MS``): read the workers' reports from the control socket
(junk is ignored); the first ``error`` report stops the graph; a worker process that died
without reporting stops it ("died unexpectedly"); the **watchdog** stops it when a block
has not stamped its progress clock for ``stall_timeout_s`` seconds (a block stopped with
SIGSTOP, or stuck in one call) and names the block.  Ctrl-C / SIGTERM stop it cleanly.
After a stop the workers get ``grace_s`` seconds; then stragglers are terminated, woken
(SIGCONT) and killed.  No process outlives a run, and the ipc socket directory is removed
(directories left by a runner killed with SIGKILL are removed by the next run).
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time

import zmq
from threadpoolctl import threadpool_limits

from .endpoints import POLL_MS, ControlServer
from .flowgraph import Flowgraph
from .placement import apply_placement
from .plan import make_ipc_dir, make_plans
from .summary import RunResult, empty_row, format_error, format_summary
from .wire import DEFAULT_LIMITS
from .worker import worker_entry

__all__ = ["run_flowgraph"]

_run_ids = itertools.count()


class _Interrupted(BaseException):
    """SIGTERM received by the runner."""


def _check_args(inproc, transport, hwm, curve, stall_timeout_s, checkpoint_s):
    if transport is None:
        transport = "inproc" if inproc else "ipc"
    if transport not in ("ipc", "tcp", "inproc"):
        raise ValueError(f"transport: expected 'ipc', 'tcp' or 'inproc', got {transport!r}")
    if transport == "inproc" and not inproc:
        raise ValueError("transport 'inproc' needs inproc=True (threads share one ZeroMQ context)")
    if not (isinstance(hwm, int) and hwm > 0):
        raise ValueError(f"hwm: expected a positive integer, got {hwm!r}")
    if curve is None:
        curve = transport == "tcp" and bool(zmq.has("curve"))
    if curve and transport != "tcp":
        raise ValueError(f"curve: CURVE applies to tcp links only (transport is {transport!r})")
    if curve and not zmq.has("curve"):
        raise ValueError("curve: this libzmq was built without CURVE support")
    for name, v in (("stall_timeout_s", stall_timeout_s), ("checkpoint_s", checkpoint_s)):
        if v is not None and not (isinstance(v, (int, float)) and v > 0):
            raise ValueError(f"{name}: expected a positive number of seconds or None, got {v!r}")
    return transport, curve


def run_flowgraph(graph: Flowgraph, inproc: bool = False, transport: str | None = None, *,
                  hwm: int = 4, quiet: bool = False, grace_s: float = 5.0, stream=None,
                  curve: bool | None = None, stall_timeout_s: float | None = 60.0,
                  checkpoint_s: float | None = 30.0,
                  max_msg_bytes: int | None = None) -> RunResult:
    """Run a validated flowgraph to completion.

    Parameters
    ----------
    graph : Flowgraph
        From :func:`nearfield.runtime.flowgraph.load_flowgraph` / ``parse_flowgraph``.
    inproc : bool
        Run every block in a thread of this process (``inproc://`` sockets) instead of
        one process per block.
    transport : {"ipc", "tcp", "inproc"}, optional
        Socket transport; default ``"ipc"`` for processes, ``"inproc"`` for threads.
        ``"inproc"`` requires ``inproc=True``.  tcp binds 127.0.0.1 only.
    hwm : int
        Send and receive high-water mark of every link, frames (> 0).
    quiet : bool
        Do not print the summary table (errors are always printed).
    grace_s : float
        After a failure or Ctrl-C, how long workers get to stop before being terminated, s.
    stream : file, optional
        Where the summary and errors go (default ``sys.stderr``).
    curve : bool, optional
        Encrypt and authenticate tcp links (and the control socket) with CURVE, with keys
        drawn per run; default: on for tcp when libzmq supports it.
    stall_timeout_s : float or None
        Watchdog: stop the graph when a block makes no progress for this long, s
        (None = off).  A block's ``start()`` and each single call to ``process()`` must
        finish within it.
    checkpoint_s : float or None
        Call each stage's/sink's ``checkpoint()`` (when it has one) every this many
        seconds, between frames (None = never; ``close()`` still saves).
    max_msg_bytes : int, optional
        ``MAXMSGSIZE`` of every link's receiving socket, bytes (default: the wire limits'
        largest part, 2 GiB).

    Returns
    -------
    RunResult
        ``ok`` is False when a block failed, stalled, a worker died or the run was
        interrupted; :func:`nearfield.runtime.exit_code` maps it to the CLI's exit code.
    """
    stream = sys.stderr if stream is None else stream
    transport, curve = _check_args(inproc, transport, hwm, curve, stall_timeout_s, checkpoint_s)
    if max_msg_bytes is None:
        max_msg_bytes = DEFAULT_LIMITS.max_message_bytes()
    graph = apply_placement(graph)  # placed chains become one stage per worker
    runid = f"{os.getpid()}-{next(_run_ids)}"
    tmpdir = make_ipc_dir() if transport == "ipc" else None
    control, control_curve, token, plans = make_plans(
        graph, transport, tmpdir, runid, hwm, curve=curve, max_msg_bytes=max_msg_bytes,
        checkpoint_s=checkpoint_s)
    sup = _Supervisor(graph, plans, stream, grace_s, stall_timeout_s)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def _on_term(signum, frame):
            raise _Interrupted()
        old_term = signal.signal(signal.SIGTERM, _on_term)
    blas = threadpool_limits(limits=1) if inproc else None  # see Worker.run; restored below
    try:
        sup.start(inproc, control, control_curve, token)
        sup.loop()
    finally:
        if blas is not None:
            blas.restore_original_limits()
        sup.shutdown()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return sup.result(quiet)


class _Supervisor:
    """State of one run in the runner process (see the module docstring)."""

    def __init__(self, graph, plans, stream, grace_s, stall_timeout_s):
        self.graph = graph
        self.plans = plans
        self.names = list(plans)
        self.stream = stream
        self.grace_s = grace_s
        self.stall_timeout_s = stall_timeout_s
        self.t_start = time.perf_counter()
        self.workers: dict = {}
        self.ctx = None
        self.ctl: ControlServer | None = None
        self.error = None
        self.tb = None
        self.failed_stage = None
        self.interrupted = False
        self.done: dict[str, dict] = {}
        self.ready: set[str] = set()
        self.died_at: dict[str, float] = {}
        self.t_stop = None
        self.stop = None
        self.go = None
        self.progress = None
        self.stuck: list[str] = []

    # -- start ----------------------------------------------------------------------------
    def start(self, inproc, control, control_curve, token) -> None:
        n = len(self.names)
        if inproc:
            self.stop, self.go = threading.Event(), threading.Event()
            self.progress = [time.monotonic()] * n
            self.ctx = zmq.Context()
            self.ctl = ControlServer(self.ctx, control, token, control_curve)
            for name in self.names:
                th = threading.Thread(target=worker_entry, name=f"nf:{name}", daemon=True,
                                      args=(self.plans[name], self.stop, self.go, self.ctx, False,
                                            self.progress))
                self.workers[name] = th
                th.start()
        else:
            mp = multiprocessing.get_context("fork")
            self.stop, self.go = mp.Event(), mp.Event()
            self.progress = mp.Array("d", [time.monotonic()] * n, lock=False)
            for name in self.names:
                p = mp.Process(target=worker_entry, name=f"nf:{name}",
                               args=(self.plans[name], self.stop, self.go, None, True, self.progress))
                self.workers[name] = p
                p.start()
            self.ctx = zmq.Context()  # only after every fork
            self.ctl = ControlServer(self.ctx, control, token, control_curve)

    # -- supervise ------------------------------------------------------------------------
    def _fail(self, message: str, stage: str, tb: str | None = None) -> None:
        if self.error is None:
            self.error, self.tb, self.failed_stage = message, tb, stage
            print(message, file=self.stream)
            if tb and stage != "start":
                print("".join("    " + ln for ln in tb.splitlines(True)), file=self.stream, end="")
        if not self.stop.is_set():
            self.stop.set()
            self.t_stop = time.perf_counter()

    def _handle(self, msg: dict) -> None:
        kind, block = msg["type"], msg["block"]
        if block not in self.plans:
            return
        if kind == "ready":
            self.ready.add(block)
            if len(self.ready) == len(self.names):
                self.go.set()
        elif kind == "error":
            self._fail(format_error(msg), msg.get("stage") or "setup", msg.get("traceback"))
        elif kind == "done" and isinstance(msg.get("stats"), dict):
            self.done[block] = msg["stats"]
            if len(self.done) == len(self.names):
                self.stop.set()   # release: every block is done, workers may close their sockets

    def _watch(self, now: float) -> None:
        alive = {n for n in self.names if self.workers[n].is_alive()}
        for n in self.names:
            if n not in alive and n not in self.done:
                self.died_at.setdefault(n, now)
                if now - self.died_at[n] > 1.0 and self.error is None:
                    code = getattr(self.workers[n], "exitcode", None)
                    how = (f"killed by signal {-code}" if code is not None and code < 0
                           else f"exit code {code}")
                    self._fail(f"block {n!r} died unexpectedly ({how})", "died")
        if self.stall_timeout_s and self.error is None:
            mono = time.monotonic()
            for i, n in enumerate(self.names):
                idle = mono - self.progress[i]
                if n in alive and n not in self.done and idle > self.stall_timeout_s:
                    self._fail(f"block {n!r} made no progress for {idle:.1f} s (stall timeout "
                               f"{self.stall_timeout_s:g} s; stopped with SIGSTOP, or stuck in a "
                               f"call?): stopping the flowgraph", "stall")
                    break
        self.alive = alive

    def loop(self) -> None:
        while True:
            try:
                for msg in self.ctl.poll(POLL_MS):
                    self._handle(msg)
                now = time.perf_counter()
                self._watch(now)
                if not self.alive:
                    if all(n in self.done or now - self.died_at.get(n, now) > 1.0 for n in self.names):
                        return
                    continue
                if self.t_stop is not None and now - self.t_stop > self.grace_s:
                    return
            except (KeyboardInterrupt, _Interrupted):
                if self.interrupted:       # second Ctrl-C: stop waiting
                    return
                self.interrupted = True
                if self.error is None:
                    self.error = "interrupted"
                    print("interrupted: stopping the flowgraph", file=self.stream)
                self.stop.set()
                self.t_stop = time.perf_counter()

    # -- stop -----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop and reap every worker; close the control socket and the context."""
        if self.stop is not None:
            self.stop.set()       # also when leaving early (e.g. Ctrl-C while starting the workers)
        deadline = time.perf_counter() + (0.5 if (self.t_stop is not None) else self.grace_s)
        for w in self.workers.values():
            w.join(max(0.0, deadline - time.perf_counter()))
        for name, w in self.workers.items():
            if not w.is_alive():
                continue
            if isinstance(w, threading.Thread):
                w.join(2.0)
                if w.is_alive():
                    self.stuck.append(name)
                continue
            w.terminate()
            try:
                os.kill(w.pid, signal.SIGCONT)   # a SIGSTOPped process only acts on SIGTERM when woken
            except (ProcessLookupError, TypeError):
                pass
            w.join(2.0)
            if w.is_alive():
                w.kill()
                w.join(2.0)
        if self.ctl is not None:
            try:  # last reports
                for msg in self.ctl.poll(0):
                    if msg["type"] == "done" and isinstance(msg.get("stats"), dict):
                        self.done[msg["block"]] = msg["stats"]
            except zmq.ZMQError:
                pass
            self.ctl.close()
        if self.ctx is not None and not self.stuck:
            self.ctx.term()

    def result(self, quiet: bool) -> RunResult:
        wall = time.perf_counter() - self.t_start
        summary = [self.done.get(n) or empty_row(n, self.graph.blocks[n], "killed") for n in self.names]
        error = self.error
        if self.stuck and error is None:
            error = f"thread(s) of block(s) {', '.join(map(repr, self.stuck))} did not stop"
        ok = error is None and all(r["status"] == "ok" for r in summary)
        if not ok and error is None:
            bad = [r["block"] for r in summary if r["status"] != "ok"]
            error = f"block(s) {', '.join(map(repr, bad))} did not finish"
        if not quiet:
            print(format_summary(summary, wall), file=self.stream)
        return RunResult(ok=ok, summary=summary, error=error, traceback=self.tb, wall_s=wall,
                         interrupted=self.interrupted, failed_stage=self.failed_stage,
                         stats={"control_junk": self.ctl.junk if self.ctl else 0})
