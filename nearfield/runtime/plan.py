"""The plan of a run: every socket's endpoint, its end-of-stream token and its CURVE keys.

Made once in the runner, before any worker starts, and handed to the workers (inherited by
fork, or shared by threads).  An input port binds one ``PULL`` socket that every plain edge
into it connects to (fan-in), and one ``SUB`` socket per lossy edge; every edge has its own
sending socket (fan-out duplicates).  Each edge gets a random end-of-stream token (see
:mod:`nearfield.runtime.wire`).  With CURVE (tcp), every bound socket is a CURVE server with
its own key pair, and the connecting sides know only its public key.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket as _socket
import tempfile
from dataclasses import dataclass, field

import zmq

from .flowgraph import Flowgraph

__all__ = ["Curve", "InSpec", "OutSpec", "Plan", "make_plans", "make_ipc_dir", "clean_stale_ipc_dirs"]

_IPC_PREFIX = "nf-"


@dataclass(frozen=True)
class Curve:
    """CURVE keys of one link end (Z85 bytes): a server has ``secret`` (and ``public``);
    a client has ``server`` (the server's public key) and its own ephemeral pair."""

    public: bytes
    secret: bytes
    server: bytes | None = None

    @staticmethod
    def server_pair() -> "Curve":
        pub, sec = zmq.curve_keypair()
        return Curve(pub, sec)

    def client_of(self) -> "Curve":
        pub, sec = zmq.curve_keypair()
        return Curve(pub, sec, server=self.public)

    def apply(self, sock) -> None:
        """Set the CURVE options on ``sock`` (before bind/connect)."""
        if self.server is None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        else:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


@dataclass
class InSpec:
    """A bound receiving socket of a block: input ``port``; the EOS tokens it expects."""

    endpoint: str
    port: str
    lossy: bool
    tokens: list = field(default_factory=list)
    curve: Curve | None = None


@dataclass
class OutSpec:
    """A connecting sending socket: one edge from output ``port``."""

    endpoint: str
    port: str
    lossy: bool
    edge: str
    token: str
    curve: Curve | None = None


@dataclass
class Plan:
    """Everything one worker needs to know about its sockets."""

    name: str
    index: int
    spec: object
    inputs: list
    outputs: list
    control: str
    control_curve: Curve | None
    run_token: str
    hwm: int
    max_msg_bytes: int
    checkpoint_s: float | None
    keep_arrays: frozenset | None = None  # arrays sent downstream (None = all); see Flowgraph.downstream_arrays


def _free_tcp_port() -> int:
    with _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_ipc_dirs(base: str) -> int:
    """Remove ``nf-<pid>-*`` socket directories in ``base``, owned by this user, whose runner
    process is gone (a runner killed with SIGKILL cannot remove its own); returns how many."""
    n = 0
    try:
        names = os.listdir(base)
    except OSError:
        return 0
    for name in names:
        parts = name.split("-")
        if len(parts) >= 3 and parts[0] + "-" == _IPC_PREFIX and parts[1].isdigit():
            path = os.path.join(base, name)
            try:
                mine = os.stat(path).st_uid == os.getuid()
            except OSError:
                continue
            if mine and not _pid_alive(int(parts[1])):
                shutil.rmtree(path, ignore_errors=True)
                n += 1
    return n


def make_ipc_dir() -> str:
    """A private (0700) directory for the ipc sockets of one run, named after this process."""
    prefix = f"{_IPC_PREFIX}{os.getpid()}-"
    base = tempfile.gettempdir()
    if len(base) > 60 and os.path.isdir("/tmp"):   # ipc paths are limited to ~107 bytes
        base = "/tmp"
    clean_stale_ipc_dirs(base)
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def make_plans(graph: Flowgraph, transport: str, tmpdir: str | None, runid: str, hwm: int, *,
               curve: bool = False, max_msg_bytes: int = 1 << 31,
               checkpoint_s: float | None = None) -> tuple[str, Curve | None, str, dict]:
    """(control endpoint, its CURVE server keys, run token, {block: Plan}).

    Linear in the number of blocks and edges.
    """
    def endpoint(tag: str) -> str:
        if transport == "ipc":
            return f"ipc://{tmpdir}/{tag}"
        if transport == "tcp":
            return f"tcp://127.0.0.1:{_free_tcp_port()}"
        return f"inproc://nf-{runid}/{tag}"

    def server():
        return Curve.server_pair() if curve else None

    run_token = secrets.token_hex(16)
    control, control_curve = endpoint("ctl"), server()
    in_edges: dict = {}
    for e in graph.edges:
        in_edges.setdefault(e.dst, []).append(e)
    in_of = {}          # (block, port) -> InSpec of its PULL
    lossy_in = {}       # edge -> InSpec of its SUB
    token_of = {e: secrets.token_hex(16) for e in graph.edges}
    plans = {}
    for i, (name, spec) in enumerate(graph.blocks.items()):
        ins = []
        edges = in_edges.get(name, [])
        for j, port in enumerate(spec.cls.inputs):
            mine = [e for e in edges if e.dst_port == port]
            plain = [e for e in mine if not e.lossy]
            if plain:
                s = InSpec(endpoint(f"{i}.{j}"), port, False, [token_of[e] for e in plain], server())
                in_of[(name, port)] = s
                ins.append(s)
            for k, e in enumerate(x for x in mine if x.lossy):
                s = InSpec(endpoint(f"{i}.{j}.L{k}"), port, True, [token_of[e]], server())
                lossy_in[e] = s
                ins.append(s)
        plans[name] = Plan(name, i, spec, ins, [], control, control_curve, run_token, hwm,
                           max_msg_bytes, checkpoint_s, graph.downstream_arrays(name))
    for e in graph.edges:
        s = lossy_in[e] if e.lossy else in_of[(e.dst, e.dst_port)]
        plans[e.src].outputs.append(OutSpec(s.endpoint, e.src_port, e.lossy, str(e), token_of[e],
                                            s.curve.client_of() if s.curve else None))
    return control, control_curve, run_token, plans
