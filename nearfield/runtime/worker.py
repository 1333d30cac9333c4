"""One worker per block: open the sockets, ``start()`` once, move frames, report.

The worker owns start-up and cancellation:

* ``start()`` runs exactly once, here (in the block's process or thread), after the sockets
  are open; an exception there is reported with stage ``"start"`` (exit code 2).
* A source's ``generate()`` runs in a helper thread that hands items over a one-slot queue;
  the worker thread waits on that queue and checks the stop flag every ``POLL_MS``, so a
  source never has to yield to be stoppable.  On stop, the worker calls the block's
  ``stop()`` when it has one (a source blocked on a socket or a device returns from it),
  waits a little for the helper thread, then calls ``close()``.  ``None`` items (idle
  sources, :func:`nearfield.block.idle_until`) are still accepted and ignored.
* A stage/sink polls its input sockets; a message that fails to decode, an end of stream
  with an unknown or repeated token, a frame missing a required array and a
  :class:`~nearfield.block.BadFrame` are dropped and counted with their reason.  The stream
  ends when every incoming edge has sent its own end-of-stream token.
* Every poll period the worker stamps its progress clock (the runner's watchdog reads it)
  and, every ``checkpoint_s`` seconds, calls the block's ``checkpoint()`` when it has one.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import signal
import threading
import time
import traceback

import numpy as np
import zmq
from threadpoolctl import threadpool_limits

from ..block import BadFrame, Block
from ..frame import Frame
from . import wire
from .endpoints import POLL_MS, ControlClient, InEndpoint, OutEndpoint, Stopped
from .flowgraph import BlockSpec
from .plan import Plan
from .summary import DROP_KINDS, add_reason
from .wire import DEFAULT_LIMITS, EndOfStream, WireError, encode

__all__ = ["Worker", "worker_entry"]

log = logging.getLogger("nearfield.runtime")

_LOG_DROPS = 10  # drops logged per block before going quiet (all are counted)
_RESERVOIR = 50_000  # latency samples kept per block for the 95th percentile
_JOIN_SOURCE_S = 1.0  # how long a stopped source's generate() thread gets to return

# the decoder the stage loop uses (a module attribute, so a test can wrap it)
decode = wire.decode


class Samples:
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


def check_requires(frame: Frame, requires) -> str | None:
    """Why a frame lacks a required array or holds NaN/Inf in one, or None."""
    for name in requires:
        a = frame.arrays.get(name)
        if a is None:
            return f"missing required array {name!r} (has: {', '.join(frame.arrays) or 'none'})"
        if a.dtype.kind in "fc" and a.size:
            # fast path: the sum is finite when every element is (an overflowing sum is re-checked)
            if not np.isfinite(a.sum()) and not np.isfinite(a).all():
                return f"array {name!r} holds NaN or Inf"
    return None


class _NotThisThread(logging.Filter):
    """Drops the log records of one thread (see :func:`_instantiate_quietly`)."""

    def __init__(self):
        super().__init__()
        self.ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.ident


def _instantiate_quietly(spec: BlockSpec) -> Block:
    """A fresh block instance; its ``validate()`` warnings were already printed when the
    flowgraph was loaded (same parameters), so this thread's log records are held back."""
    flt = _NotThisThread()
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(flt)
    try:
        return spec.instantiate()
    finally:
        for h in handlers:
            h.removeFilter(flt)


def _produce(gen, q: queue.Queue, halt: threading.Event) -> None:
    """Helper thread of a source: run ``generate()``, hand each item over ``q``."""

    def put(item) -> bool:
        while not halt.is_set():
            try:
                q.put(item, timeout=POLL_MS / 1000)
                return True
            except queue.Full:
                continue
        return False

    try:
        while not halt.is_set():
            t = time.perf_counter()
            try:
                item = next(gen)
            except StopIteration:
                put(("end", None, 0.0))
                return
            if item is None:
                continue
            if not put(("item", item, time.perf_counter() - t)):
                return
    except BaseException as exc:  # reported by the worker thread
        put(("error", exc, 0.0))


class Worker:
    """Runs one block; see the module docstring."""

    def __init__(self, plan: Plan, stop, go, ctx, child_process: bool, progress=None):
        self.plan = plan
        self.name = plan.name
        self.spec = plan.spec
        self.stop = stop
        self.go = go
        self.ctx = ctx
        self.child_process = child_process
        self.progress = progress
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = dict.fromkeys(DROP_KINDS, 0)
        self.reasons: dict[str, int] = {}
        self.proc = Samples()
        self.e2e = Samples()
        self.t_run: float | None = None
        self.t_end: float | None = None
        self.seq: int | None = None  # seq of the frame being handled (for error reports)
        self.last_seq: int | None = None
        self.stage = "setup"
        self.ins: list[InEndpoint] = []
        self.outs: list[OutEndpoint] = []
        self.outs_by_port: dict[str, list[OutEndpoint]] = {}
        self.block: Block | None = None
        self._next_ckpt: float | None = None
        self._cpu0: float | None = None

    # -- waiting ------------------------------------------------------------------------
    def check(self) -> None:
        """Stamp the progress clock; raise :class:`Stopped` when the stop flag is up."""
        if self.progress is not None:
            self.progress[self.plan.index] = time.monotonic()
        if self.stop.is_set():
            raise Stopped()

    def _maybe_checkpoint(self) -> None:
        period = self.plan.checkpoint_s  # set whenever _next_ckpt is
        if self._next_ckpt is None or period is None or time.monotonic() < self._next_ckpt:
            return
        self._next_ckpt = time.monotonic() + period
        fn = getattr(self.block, "checkpoint", None)
        if callable(fn):
            stage, self.stage = self.stage, "checkpoint"
            fn()
            self.stage = stage

    def _emit(self, result) -> None:
        if result is None:
            return
        outs = self.spec.cls.outputs
        if isinstance(result, Frame):
            if not outs:
                return  # a sink returning its frame: nothing to send
            items = [(outs[0], result)]
        elif isinstance(result, dict):
            items = list(result.items())
            for port, fr in items:
                if port not in outs:
                    raise TypeError(
                        f"returned a frame for unknown output port {port!r} (outputs: {', '.join(outs) or 'none'})"
                    )
                if not isinstance(fr, Frame):
                    raise TypeError(f"returned {type(fr).__name__} for port {port!r}; expected a Frame")
        else:
            raise TypeError(f"returned {type(result).__name__}; expected a Frame, None or {{port: Frame}}")
        for port, fr in items:
            self.frames_out += 1
            targets = self.outs_by_port.get(port)
            if not targets:
                continue
            keep = self.plan.keep_arrays
            if keep is not None and not keep.issuperset(fr.arrays):  # no dead weight on the wire
                fr = Frame(fr.seq, fr.t0, {k: v for k, v in fr.arrays.items() if k in keep}, fr.meta)
            parts = encode(fr)
            for out in targets:
                out.send(parts, self.check)

    def _drop(self, kind: str, seq, reason) -> None:
        self.dropped[kind] += 1
        add_reason(self.reasons, kind, reason)
        n = sum(self.dropped.values())
        what = f"frame seq={seq}" if seq is not None else "a message"
        if n <= _LOG_DROPS:
            log.warning("block %r dropped %s: %s", self.name, what, reason)
        if n == _LOG_DROPS:
            log.warning("block %r: further dropped frames are counted, not logged", self.name)

    # -- main ---------------------------------------------------------------------------
    def run(self) -> None:
        plan = self.plan
        if self.child_process:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _set_pdeathsig()
            # One BLAS thread per block: the blocks already run in parallel, and on a few
            # cores a multi-threaded BLAS in every process oversubscribes them (5x slower).
            threadpool_limits(limits=1)
            self.ctx = zmq.Context()
        ctx = self.ctx
        ctl = ControlClient(ctx, plan.control, plan.run_token, plan.control_curve)
        status = "ok"
        try:
            self.check()
            self.block = block = _instantiate_quietly(self.spec)
            for i in plan.inputs:
                self.ins.append(InEndpoint(ctx, i, plan.hwm, plan.max_msg_bytes))
            for o in plan.outputs:
                ep = OutEndpoint(ctx, o, plan.hwm)
                self.outs.append(ep)
                self.outs_by_port.setdefault(o.port, []).append(ep)
            self.stage = "start"
            self._cpu0 = self._cpu_now()
            block.start()
            ctl.send({"type": "ready", "block": self.name})
            self.stage = "setup"
            for o in self.outs:
                if o.lossy:
                    o.wait_subscribed(self.check)
            if not self.spec.cls.inputs:
                while not self.go.wait(POLL_MS / 1000):
                    self.check()
            self.t_run = time.perf_counter()
            if plan.checkpoint_s:
                self._next_ckpt = time.monotonic() + plan.checkpoint_s
            if self.spec.cls.inputs:
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
            for o in self.outs:
                o.send_eos(self.check)
        except Stopped:
            status = "stopped"
        except BaseException as exc:
            status = "failed"
            self._report(ctl, exc)
        finally:
            self._finally(ctl, status)

    def _finally(self, ctl: ControlClient, status: str) -> None:
        if self.t_end is None:
            self.t_end = time.perf_counter()
        if self.block is not None:
            try:
                self.stage = "close"
                self.block.close()
            except BaseException as exc:
                if status == "ok":
                    status = "failed"
                    self.seq = None
                    self._report(ctl, exc)
        try:
            ctl.send({"type": "done", "block": self.name, "status": status, "stats": self.stats(status)})
            # Keep every socket open until the runner releases all workers (it does so once
            # every block is done, or on stop): closing a sender while its receiver still has
            # unread data queued can lose that data (libzmq drops it when the peer hangs up
            # while the receiver's HWM throttles input).
            while not self.stop.wait(POLL_MS / 1000):
                if self.progress is not None:
                    self.progress[self.plan.index] = time.monotonic()
        finally:
            eps: list[InEndpoint | OutEndpoint] = [*self.ins, *self.outs]
            for ep in eps:
                ep.close()
            ctl.close()
            if self.child_process:
                self.ctx.term()

    def _report(self, ctl: ControlClient, exc: BaseException) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        ctl.send(
            {
                "type": "error",
                "block": self.name,
                "seq": self.seq,
                "stage": self.stage,
                "last_seq": self.last_seq,
                "error": type(exc).__name__,
                "message": str(exc),
                "traceback": tb,
            }
        )

    def _run_source(self, block) -> None:
        self.stage = "generate"
        after = getattr(block, "after_source", None)
        q: queue.Queue = queue.Queue(maxsize=1)
        halt = threading.Event()
        th = threading.Thread(
            target=_produce, args=(iter(block.generate()), q, halt), name=f"nf-gen:{self.name}", daemon=True
        )
        th.start()
        try:
            while True:
                self.check()
                if after is not None:  # placed stages get their periodic checkpoints, as in their own worker
                    self._maybe_checkpoint()
                try:
                    kind, item, dt = q.get(timeout=POLL_MS / 1000)
                except queue.Empty:
                    continue
                if kind == "end":
                    break
                if kind == "error":
                    raise item
                now = time.time()
                for fr in item.values() if isinstance(item, dict) else (item,):
                    if isinstance(fr, Frame):
                        fr.meta.setdefault("t_emit", now)
                        self.seq = fr.seq
                if after is not None:  # a source placed with stages (placement): they run here
                    self.frames_in += 1
                    self.stage = "process"
                    t = time.perf_counter()
                    try:
                        item = after(item)
                    except BadFrame as exc:
                        self.proc.add(dt + time.perf_counter() - t)
                        self._drop("bad", self.seq, f"BadFrame: {exc}")
                        self.last_seq, self.seq = self.seq, None
                        self.stage = "generate"
                        continue
                    dt += time.perf_counter() - t
                self.proc.add(dt)
                self.stage = "emit"
                self._emit(item)
                self.last_seq, self.seq = self.seq, None
                self.stage = "generate"
        finally:
            halt.set()
            if th.is_alive():
                stop = getattr(block, "stop", None)
                if callable(stop):
                    stop()
                th.join(_JOIN_SOURCE_S)

    def _run_stage(self, block) -> None:
        poller = zmq.Poller()
        ep_of = {}
        for ep in self.ins:
            poller.register(ep.sock, zmq.POLLIN)
            ep_of[ep.sock] = ep
        multi = len(self.spec.cls.inputs) > 1
        requires = self.spec.cls.requires
        expected = {t: ep for ep in self.ins for t in ep.tokens}
        limits = DEFAULT_LIMITS
        while expected:
            self.check()
            self._maybe_checkpoint()
            for sock, _ in poller.poll(POLL_MS):
                ep = ep_of[sock]
                parts = ep.recv()
                try:
                    frame = decode(parts, limits)
                except WireError as exc:
                    self._drop("wire", None, f"invalid message: {exc}")
                    continue
                if isinstance(frame, EndOfStream):
                    if expected.get(frame.token) is ep:
                        del expected[frame.token]
                    else:
                        self._drop("wire", None, "end of stream with an unknown or repeated token")
                    continue
                self.frames_in += 1
                self.seq = frame.seq
                reason = check_requires(frame, requires)
                if reason:
                    self._drop("invalid", frame.seq, reason)
                    continue
                self.stage = "process"
                t = time.perf_counter()
                try:
                    out = block.process(frame, ep.port) if multi else block.process(frame)
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

    def _cpu_now(self) -> float:
        """CPU seconds of this worker: its process in process mode, its thread in in-process mode."""
        return time.process_time() if self.child_process else time.thread_time()

    def stats(self, status: str) -> dict:
        """The summary row of this block."""
        wall = (self.t_end - self.t_run) if self.t_run is not None and self.t_end is not None else 0.0
        blocked = sum(o.blocked_s for o in self.outs)

        def ms(x):
            return None if x is None else x * 1e3

        return {
            "block": self.name,
            "type": self.spec.type,
            "kind": self.spec.kind,
            "status": status,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": sum(self.dropped.values()),
            "dropped_detail": dict(self.dropped),
            "drop_reasons": dict(self.reasons),
            "lost": sum(o.lost for o in self.outs),
            "proc_mean_ms": ms(self.proc.mean()),
            "proc_p95_ms": ms(self.proc.p95()),
            "latency_mean_ms": ms(self.e2e.mean()),
            "latency_p95_ms": ms(self.e2e.p95()),
            "busy": (self.proc.total / wall) if wall > 0 else None,
            "blocked": (blocked / wall) if wall > 0 else None,
            "wall_s": wall,
            # CPU seconds from start() to the end (process mode: the whole worker process, transport,
            # helper threads and runtime included; in-process mode: the worker thread only)
            "cpu_s": None if self._cpu0 is None else self._cpu_now() - self._cpu0,
            "counters": self.device_counters(),
        }

    def device_counters(self) -> dict[str, int | float]:
        """A source's own counters (``all_counters()``: frames the device sent that were invalid,
        incoherent or lost before they became frames), numbers only; {} for other blocks."""
        get = getattr(self.block, "all_counters", None)
        if not callable(get):
            return {}
        counters = get()
        if not isinstance(counters, dict):
            return {}
        return {str(k): v for k, v in counters.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def worker_entry(plan: Plan, stop, go, ctx, child_process: bool, progress=None) -> None:
    """Target of a block's process or thread."""
    Worker(plan, stop, go, ctx, child_process, progress).run()
