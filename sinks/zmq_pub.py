"""Publish each frame's estimates record as JSON on a ZeroMQ PUB socket.

For dashboards and other programs that want the estimates live.  Every frame becomes one
single-part message: the optional ``topic`` (UTF-8 bytes, as given) immediately followed by
the estimates record of DESIGN.md as UTF-8 JSON -- exactly the object the ``jsonl`` sink
writes on one line (built by the same function, :func:`nearfield.sinks.jsonl.estimates_record`;
NaN/Inf become ``null``)::

    <topic>{"seq": 7, "t0": 0.7, "targets": [{"theta": 0.2619, "range": 10.02}],
            "faulty": [12, 77], "truth": {...}, "latency_s": 0.011}

A subscriber ``SUB``-connects to ``address``, subscribes to the topic (or to ``b""``) and
strips ``len(topic)`` bytes.  A PUB socket never blocks the pipeline: a subscriber that is
too slow (more than ``hwm`` messages behind) or not yet connected loses messages -- the
``seq`` numbers show which.  ``address`` may end in ``:*`` (a free port); the bound endpoint
is logged and kept in :attr:`ZMQPubSink.endpoint`.
"""
from __future__ import annotations

import json
import logging

import zmq

from nearfield.block import Param, ParamError, Sink, positive
from nearfield.frame import Frame, finite_or_none

from .jsonl import estimates_record

__all__ = ["ZMQPubSink", "encode_record"]

log = logging.getLogger(__name__)


def encode_record(frame: Frame, topic: str = "", now: float | None = None) -> bytes:
    """The message published for ``frame``: ``topic`` bytes + the record's UTF-8 JSON."""
    rec = finite_or_none(estimates_record(frame, now))
    body = json.dumps(rec, allow_nan=False, separators=(", ", ": "))
    return topic.encode("utf-8") + body.encode("utf-8")


def _check_address(value) -> str | None:
    if "://" not in value:
        return "a ZeroMQ endpoint to bind, such as 'tcp://127.0.0.1:5556' or 'tcp://*:5556'"
    return None


class ZMQPubSink(Sink):
    """Publish each estimates record (DESIGN.md) as one JSON message on a ZeroMQ PUB socket."""

    reads = ()  # frame contract: any frame (nearfield.contract)
    params = (
        Param("address", str, doc="endpoint to bind, e.g. tcp://*:5556 (':*' = any free port)",
              check=_check_address),
        Param("topic", str, "", "prefix of every message, for SUB filtering (empty = none)"),
        Param("hwm", int, 1000, "send high-water mark per subscriber, messages", check=positive),
    )

    def validate(self) -> None:
        self._ctx = None
        self._sock = None
        self.endpoint = None
        self.published = 0

    def start(self) -> None:
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 500)   # give queued records half a second at close
        try:
            sock.bind(self.address)
        except zmq.ZMQError as exc:
            sock.close(0)
            self._ctx.term()
            self._ctx = None
            raise ParamError(f"block {self.name!r}, parameter 'address': cannot bind "
                             f"{self.address!r}: {exc}") from None
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("zmq_pub %r: publishing estimates on %s", self.name, self.endpoint)

    def process(self, frame: Frame) -> None:
        if self._sock is None:
            self.start()
        self._sock.send(encode_record(frame, self.topic))   # PUB: never blocks
        self.published += 1
        return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
