"""Typed socket ends: each owns its ZeroMQ socket and its counters.

* :class:`InEndpoint` -- a bound receiving socket (``PULL``, or ``SUB`` for a lossy edge)
  with ``MAXMSGSIZE`` set, so an oversized message from outside is refused by libzmq before
  it is buffered;
* :class:`OutEndpoint` -- a connecting sending socket of one edge (``PUSH``, or ``XPUB``
  for a lossy edge); it counts the frames it drops (``lost``, lossy edges only) and sends
  end of stream with the edge's token;
* :class:`ControlClient` / :class:`ControlServer` -- the worker -> runner report channel;
  every report carries the run token, and the server ignores (and counts) anything that is
  not a JSON object with that token, so junk sent to it cannot crash or steer the runner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import zmq

from .plan import Curve, InSpec, OutSpec
from .wire import encode_eos

__all__ = ["Stopped", "InEndpoint", "OutEndpoint", "ControlClient", "ControlServer", "POLL_MS"]

#: How often a waiting worker checks the stop flag, ms.
POLL_MS = 50
_CONTROL_MAX_BYTES = 16 << 20


class Stopped(Exception):
    """The stop flag was raised while a worker waited."""


class InEndpoint:
    """A bound receiving socket of input ``port``; ``tokens`` = EOS tokens it expects."""

    def __init__(self, ctx, spec: InSpec, hwm: int, max_msg_bytes: int):
        self.port = spec.port
        self.lossy = spec.lossy
        self.tokens = list(spec.tokens)
        s = ctx.socket(zmq.SUB if spec.lossy else zmq.PULL)
        s.setsockopt(zmq.RCVHWM, hwm)
        s.setsockopt(zmq.MAXMSGSIZE, int(max_msg_bytes))
        if spec.curve is not None:
            spec.curve.apply(s)
        if spec.lossy:
            s.setsockopt(zmq.SUBSCRIBE, b"")
        s.bind(spec.endpoint)
        self.sock = s

    def recv(self):
        return self.sock.recv_multipart(copy=False)

    def close(self) -> None:
        self.sock.close(linger=0)


class OutEndpoint:
    """The sending socket of one edge; ``lost`` counts frames a lossy edge dropped."""

    def __init__(self, ctx, spec: OutSpec, hwm: int):
        self.port = spec.port
        self.lossy = spec.lossy
        self.edge = spec.edge
        self.token = spec.token
        self.lost = 0
        self.blocked_s = 0.0
        s = ctx.socket(zmq.XPUB if spec.lossy else zmq.PUSH)
        s.setsockopt(zmq.SNDHWM, hwm)
        s.setsockopt(zmq.RECONNECT_IVL, 10)
        if spec.lossy:
            s.setsockopt(zmq.XPUB_NODROP, 1)
            s.setsockopt(zmq.MAXMSGSIZE, 1024)  # it only receives subscriptions
        if spec.curve is not None:
            spec.curve.apply(s)
        s.connect(spec.endpoint)
        self.sock = s

    def wait_subscribed(self, check: Callable[[], None]) -> None:
        """Lossy edge: wait for the receiver's subscription (no slow-joiner loss)."""
        while not (self.sock.poll(POLL_MS, zmq.POLLIN) and self.sock.recv()[:1] == b"\x01"):
            check()

    def send(self, parts, check: Callable[[], None]) -> None:
        """Send one frame: a lossy edge drops (and counts) what does not fit; a plain edge
        waits (backpressure), calling ``check()`` every poll period."""
        sock = self.sock
        try:
            sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            return
        except zmq.Again:
            if self.lossy:
                self.lost += 1
                return
        t = time.perf_counter()
        try:
            while True:
                check()
                if sock.poll(POLL_MS, zmq.POLLOUT):
                    try:
                        sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                        return
                    except zmq.Again:
                        continue
        finally:
            self.blocked_s += time.perf_counter() - t

    def send_eos(self, check: Callable[[], None]) -> None:
        """End of stream, with this edge's token; always delivered (waits, also when lossy)."""
        parts = encode_eos(self.token)
        while True:
            try:
                self.sock.send_multipart(parts, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                check()
                if self.lossy:
                    time.sleep(0.002)
                else:
                    self.sock.poll(POLL_MS, zmq.POLLOUT)

    def close(self) -> None:
        self.sock.close(linger=0)


class ControlClient:
    """A worker's report channel to the runner (``PUSH``)."""

    def __init__(self, ctx, endpoint: str, token: str, curve: Curve | None):
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 5000)
        s.setsockopt(zmq.RECONNECT_IVL, 10)
        if curve is not None:
            curve.client_of().apply(s)
        s.connect(endpoint)
        self.sock = s
        self.token = token

    def send(self, msg: dict) -> None:
        self.sock.send(json.dumps({**msg, "token": self.token}, default=str).encode())

    def close(self) -> None:
        self.sock.close()


class ControlServer:
    """The runner's end of the report channel (``PULL``); :meth:`poll` returns valid reports."""

    def __init__(self, ctx, endpoint: str, token: str, curve: Curve | None):
        s = ctx.socket(zmq.PULL)
        s.setsockopt(zmq.MAXMSGSIZE, _CONTROL_MAX_BYTES)
        if curve is not None:
            curve.apply(s)
        s.bind(endpoint)
        self.sock = s
        self.token = token
        self.junk = 0

    def _parse(self, raw: bytes):
        try:
            msg = json.loads(raw)
        except (ValueError, RecursionError):
            msg = None
        if (
            not isinstance(msg, dict)
            or msg.get("token") != self.token
            or not isinstance(msg.get("type"), str)
            or not isinstance(msg.get("block"), str)
        ):
            self.junk += 1
            return None
        return msg

    def poll(self, timeout_ms: int) -> list[dict]:
        """Every valid report waiting now (after waiting up to ``timeout_ms`` for the first)."""
        out: list[dict] = []
        if not self.sock.poll(timeout_ms):
            return out
        while True:
            try:
                raw = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            msg = self._parse(raw)
            if msg is not None:
                out.append(msg)

    def close(self) -> None:
        self.sock.close(linger=0)
