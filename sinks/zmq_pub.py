"""Publish each frame's estimates record as JSON on a ZeroMQ PUB socket.

For dashboards and other programs that want the estimates live.  Every frame becomes one
single-part message: the optional ``topic`` (UTF-8 bytes, as given) immediately followed by
the estimates record (the jsonl sink's line) as UTF-8 JSON -- exactly the object the ``jsonl`` sink
writes on one line (built by the same function, :func:`nearfield.sinks.jsonl.estimates_record`;
NaN/Inf become ``null``)::

    <topic>{"seq": 7, "t0": 0.7, "targets": [{"theta": 0.2619, "range": 10.02, "theta_std": 3.4e-06,
                                              "range_std": 0.0021, "status": "ok"}],
            "faulty": [12, 77], "truth": {...}, "latency_s": 0.011, "residual": 0.0299, "model_check": 1.003}

(``theta_std``, ``range_std``, ``status``, ``residual`` and ``model_check`` only when the
localizer produced them; see :mod:`nearfield.sinks.jsonl`.)

A subscriber ``SUB``-connects to ``address``, subscribes to the topic (or to ``b""``) and
strips ``len(topic)`` bytes.  A PUB socket never blocks the pipeline: a subscriber that is
too slow (more than ``hwm`` messages behind) or not yet connected loses messages -- the
``seq`` numbers show which.  ``address`` may end in ``:*`` (a free port); the bound endpoint
is logged and kept in :attr:`ZMQPubSink.endpoint`.

Security.  The default address binds the loopback interface only.  To publish to other
machines, give the sink a CURVE key (``curve_secret_key_file``): the messages are then
encrypted, and a subscriber must know the sink's public key to connect at all.  Make the
key pair once with pyzmq::

    import zmq
    public, secret = zmq.curve_keypair()                  # Z85 text, 40 characters each
    open("pub.key_secret", "wb").write(secret)            # keep private: chmod 600
    open("pub.key", "wb").write(public)                   # hand to the subscribers

(a certificate file of ``zmq.auth.create_certificates`` is accepted too).  A subscriber
sets ``sock.curve_serverkey = public`` and its own ``sock.curve_publickey,
sock.curve_secretkey = zmq.curve_keypair()`` before connecting.  Binding a non-loopback
tcp address without a key is refused unless ``allow_plaintext: true``.  The socket
receives only subscriptions, so its ``MAXMSGSIZE`` is small (``max_subscription_bytes``).
"""
from __future__ import annotations

import json
import logging
import os
import re

import zmq
from zmq.utils import z85

from nearfield.block import Param, ParamError, Sink, positive
from nearfield.frame import Frame, finite_or_none

from .jsonl import estimates_record

__all__ = ["ZMQPubSink", "encode_record", "read_curve_key", "is_loopback"]

log = logging.getLogger(__name__)


def encode_record(frame: Frame, topic: str = "", now: float | None = None) -> bytes:
    """The message published for ``frame``: ``topic`` bytes + the record's UTF-8 JSON."""
    rec = finite_or_none(estimates_record(frame, now))
    body = json.dumps(rec, allow_nan=False, separators=(", ", ": "))
    return topic.encode("utf-8") + body.encode("utf-8")


def _check_address(value) -> str | None:
    if "://" not in value:
        return "a ZeroMQ endpoint to bind, such as 'tcp://127.0.0.1:5556'"
    return None


def is_loopback(address: str) -> bool:
    """True for ipc/inproc endpoints and tcp endpoints bound to a loopback interface."""
    scheme, _, rest = address.partition("://")
    if scheme != "tcp":
        return scheme in ("ipc", "inproc")
    host = rest.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def read_curve_key(path: str, which: str = "secret") -> bytes:
    """A Z85 CURVE key (40 bytes) from a file: the bare key, or a ``zmq.auth`` certificate.

    Raises ``ValueError`` naming the file when it cannot be read or holds no valid key.
    """
    try:
        with open(path, "rb") as fh:
            text = fh.read(1 << 16)
    except OSError as exc:
        raise ValueError(f"cannot read CURVE key file {path!r}: {exc.strerror or exc}") from None
    m = re.search(rb'%s-key\s*=\s*"([^"]{40})"' % which.encode(), text)
    key = m.group(1) if m else text.strip()
    try:
        if len(key) != 40:
            raise ValueError
        z85.decode(key)
    except Exception:
        raise ValueError(f"CURVE key file {path!r}: expected a 40-character Z85 {which} key "
                         f"(from zmq.curve_keypair()) or a zmq.auth certificate") from None
    return key


class ZMQPubSink(Sink):
    """Publish each estimates record as one JSON message on a ZeroMQ PUB socket."""

    reads = ()  # frame contract: any frame (nearfield.contract)
    params = (
        Param("address", str, "tcp://127.0.0.1:5556", "endpoint to bind (loopback by default; "
              "':*' = any free port)", check=_check_address),
        Param("topic", str, "", "prefix of every message, for SUB filtering (empty = none)"),
        Param("hwm", int, 1000, "send high-water mark per subscriber, messages", check=positive),
        Param("curve_secret_key_file", (str, type(None)), None,
              "file holding the sink's CURVE secret key (Z85, from zmq.curve_keypair()): encrypt "
              "and let only subscribers that know the public key connect (null = plaintext)"),
        Param("allow_plaintext", bool, False,
              "allow binding a non-loopback tcp address without a CURVE key"),
        Param("max_subscription_bytes", int, 4096,
              "largest message accepted from a subscriber (ZeroMQ MAXMSGSIZE), bytes", check=positive),
    )

    def validate(self) -> None:
        self._ctx = None
        self._sock = None
        self.endpoint = None
        self.published = 0
        self._secret = None
        if self.curve_secret_key_file is not None:
            if not zmq.has("curve"):
                raise self.param_error("curve_secret_key_file", "this libzmq has no CURVE support")
            try:
                self._secret = read_curve_key(os.path.expanduser(self.curve_secret_key_file))
            except ValueError as exc:
                raise self.param_error("curve_secret_key_file", str(exc)) from None
        elif not is_loopback(self.address) and not self.allow_plaintext:
            raise self.param_error(
                "address", f"{self.address!r} is reachable from other machines: set "
                "curve_secret_key_file (see the zmq_pub docs), bind 127.0.0.1, or set "
                "allow_plaintext: true")

    def start(self) -> None:
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 500)   # give queued records half a second at close
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_subscription_bytes)
        if self._secret is not None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._secret)
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
