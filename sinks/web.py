"""Web sink: a live view of the pipeline in the browser, served by the sink itself.

``start()`` opens a small HTTP server (the standard library's
:class:`http.server.ThreadingHTTPServer`, one thread per connection, in a daemon thread of
the sink's worker) on ``http://{host}:{port}/``.  It serves

* ``/`` (``index.html``), ``/app.js`` and ``/style.css``: the page, all from the package
  folder ``web_static/`` -- no CDN, the page works offline; it draws on ``<canvas>``
  elements in plain JavaScript;
* ``/events``: a Server-Sent Events stream (``text/event-stream``): one ``frame`` event per
  page update, whose ``data`` is the JSON *view state* below, and an ``end`` event at end
  of stream;
* ``/state.json``: the latest view state (``null`` before the first frame).

Why SSE and not WebSocket: the data flows one way (pipeline to browser), SSE is plain
HTTP that the standard library serves, the browser's ``EventSource`` reconnects by itself,
and no extra library is needed on either side.

Keeping up (the sink never slows the pipeline).  ``process(frame)`` only extracts a small
view state from the frame (a few hundred numbers, no snapshots), puts it in a one-slot
mailbox (the newer state replaces the older) with a version number, and wakes the client
threads; it never waits for a browser and never does network I/O.  Each browser has its own
thread that takes the *latest* state when it is ready to send (at most ``max_rate_hz``
updates per second), so a slow or absent browser skips page updates (counted per client as
``skipped``) and the pipeline loses no frame.  The JSON text of a state is built once, by the
first client thread that sends it, not in ``process``.  A browser that disconnects ends its
thread at the next write (or keep-alive comment, every 10 s); nothing else notices.

The view state (JSON; radians, metres inside, like the frames; the page converts to
degrees for display)::

    {"seq": int, "t0": s, "array": {"n_antennas", "spacing", "aperture", "fresnel", "carrier_hz"},
     "targets": [{"theta", "range"[, "theta_std", "range_std"][, "status"]
                  [, "err_theta", "err_range"]}],                   # sorted by theta
     "truth": [{"theta", "range"}] | null, "coarse": [...] | null,
     "faulty": [indices] | null, "true_faulty": [indices] | null,
     "hi_dev": [|c_hat_n - 1|, n = 0..N-1] | null,                  # the fault map
     "angle": {"theta": [rad], "db": [dB]} | null,                   # from angle_grid/_spectrum
     "range": [{"r": [m], "db": [dB]}, ...] | null,                 # from range_grid/_spectrum
     "noise_var": float | null, "blocks": {...} | null,             # meta["blocks"] if present
     "counters": {"frames", "rate_hz", "latency_ms", "latency_p95_ms", "missing", "bad",
                  "clients"},
     "history": {"seq": [...], "pos_err": [m], "hi_nmse_db": [dB], "n_faulty": [...],
                 "latency_ms": [...]}}                              # the last ``history`` frames

``err_theta``/``err_range`` (rad, m) are the estimate minus its matched true target (matched
by position in the plane), present only when the frame carries the truth.  ``hi_nmse_db`` is
``10 log10(||c_hat - c||^2 / N)`` with the true HI vector ``c`` of eq. (4) rebuilt from
``truth.faulty`` and ``truth.fault_phase`` (``c_n = exp(j phi_n)`` on faulty antennas, 1
elsewhere), and ``pos_err`` the largest distance in the plane between an estimate and its
true target.  ``missing`` counts frames absent from the ``seq`` sequence (dropped upstream
or on a lossy link), ``bad`` the frames this sink refused.

Bad input: a port in use, a port outside 0..65535 or a bind address that does not exist on
this machine is a :class:`~nearfield.block.ParamError` naming the block and ``port`` or
``host``, raised when the flowgraph loads (a trial bind, so ``nearfield run`` exits with
code 2 before anything starts) and again by ``start()`` if the port was taken in between.
``port: 0`` binds any free port (printed at start, and in :attr:`WebSink.url`).  A frame
whose shown fields are malformed raises :class:`~nearfield.block.BadFrame` naming the field.
"""

from __future__ import annotations

import errno
import http.server
import importlib.resources
import ipaddress
import json
import logging
import math
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from ..block import BadFrame, Param, Sink, positive
from ..frame import Frame, finite_or_none

__all__ = ["WebSink", "view_state"]

log = logging.getLogger(__name__)

_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_DB_FLOOR = -40.0
_MAX_POINTS = 800  # spectra longer than this are decimated (peak-preserving) for the page
_KEEPALIVE_S = 10.0  # comment line on an idle stream: finds browsers that went away
_SEND_TIMEOUT_S = 10.0  # a write to a browser that stops reading gives up after this


# ---------------------------------------------------------------------------------------
# Frame -> view state
# ---------------------------------------------------------------------------------------


def _positions(items, where: str) -> list[dict] | None:
    if items is None:
        return None
    if not isinstance(items, (list, tuple)):
        raise BadFrame(f"{where}: expected a list of {{theta, range}}, got {type(items).__name__}")
    out = []
    for i, t in enumerate(items):
        try:
            th, r = float(t["theta"]), float(t["range"])
        except (KeyError, TypeError, ValueError):
            raise BadFrame(f"{where}[{i}]: expected {{theta: rad, range: m}}, got {t!r}") from None
        if not (math.isfinite(th) and abs(th) <= math.pi / 2 + 1e-9 and math.isfinite(r) and r > 0):
            raise BadFrame(f"{where}[{i}]: expected |theta| <= pi/2 rad and range > 0 m, got theta={th!r}, range={r!r}")
        item = {"theta": th, "range": r}
        for key in ("theta_std", "range_std"):  # optional 1-sigma uncertainty (rad, m)
            v = t.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
                item[key] = float(v)
        if isinstance(t.get("status"), str):
            item["status"] = t["status"][:40]
        out.append(item)
    out.sort(key=lambda d: d["theta"])
    return out


def _indices(items, n: int, where: str) -> list[int] | None:
    if items is None:
        return None
    if isinstance(items, list) and all(type(i) is int and 0 <= i < n for i in items):
        return sorted(items)  # the usual case, without numpy's per-call overhead
    try:
        idx = np.asarray(items, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise BadFrame(f"{where}: expected a list of antenna indices, got {items!r}") from None
    if idx.size and (not np.all(np.isfinite(idx)) or np.any(idx != np.round(idx)) or idx.min() < 0 or idx.max() >= n):
        raise BadFrame(f"{where}: expected 0-based antenna indices in [0, {n - 1}]")
    return sorted(int(i) for i in idx)


def _db(s: np.ndarray) -> np.ndarray:
    peak = float(s.max()) if s.size and s.max() > 0 else 1.0
    return np.maximum(10.0 * np.log10(np.maximum(s / peak, 1e-30)), _DB_FLOOR)


def _decimate(x: np.ndarray, y: np.ndarray):
    """At most ``_MAX_POINTS`` points, keeping each bucket's peak (so spectrum peaks survive)."""
    if x.size <= _MAX_POINTS:
        return x, y
    step = -(-x.size // _MAX_POINTS)
    pad = (-x.size) % step
    yy = np.concatenate([y, np.full(pad, -np.inf)]).reshape(-1, step)
    pick = np.arange(yy.shape[0]) * step + np.argmax(yy, axis=1)
    return x[pick], y[pick]


def _spectrum(arrays: dict, gname: str, sname: str, ndim: int):
    g, s = arrays.get(gname), arrays.get(sname)
    if g is None and s is None:
        return None
    if g is None or s is None:
        raise BadFrame(f"arrays.{gname if g is None else sname}: missing (the other of the pair is present)")
    g, s = np.asarray(g, dtype=float), np.asarray(s, dtype=float)
    if g.ndim != ndim or g.shape != s.shape or g.size == 0:
        raise BadFrame(
            f"arrays.{gname} {g.shape} and arrays.{sname} {s.shape}: expected the same "
            f"non-empty shape {'(G,)' if ndim == 1 else '(K, G)'}"
        )
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(s))):
        raise BadFrame(f"arrays.{gname}/{sname}: NaN or Inf values")
    rows = []
    for gk, sk in zip(g.reshape(-1, g.shape[-1]), s.reshape(-1, s.shape[-1])):
        o = np.argsort(gk, kind="stable")
        x, y = _decimate(gk[o], _db(sk[o]))
        rows.append((np.round(x, 6), np.round(y, 2)))  # lists only when sent (_Hub.text)
    return rows


def _match(est: list[dict], truth: list[dict]) -> dict[int, int]:
    """Estimate index -> truth index, minimising the total distance in the plane."""
    from scipy.optimize import linear_sum_assignment

    if not est or not truth:
        return {}
    e = np.array([[t["range"] * math.cos(t["theta"]), t["range"] * math.sin(t["theta"])] for t in est])
    g = np.array([[t["range"] * math.cos(t["theta"]), t["range"] * math.sin(t["theta"])] for t in truth])
    rows, cols = linear_sum_assignment(np.linalg.norm(e[:, None, :] - g[None, :, :], axis=2))
    return dict(zip(rows.tolist(), cols.tolist()))


def view_state(frame: Frame) -> tuple[dict, dict]:
    """The view state of one frame (without ``counters``/``history``) and its history scalars.

    Parameters
    ----------
    frame : Frame
        Reads ``meta`` (``array``, ``targets``, ``truth``, ``coarse``, ``faulty``,
        ``noise_var``, ``blocks``) and, when present, ``arrays`` ``c_hat`` (N,) complex,
        ``angle_grid``/``angle_spectrum`` (G,) and ``range_grid``/``range_spectrum`` (K, G).

    Returns
    -------
    state : dict
        The fields of the module docstring, JSON-ready except that ``hi_dev`` and the spectra
        are small numpy arrays (made lists when sent).
    scalars : dict
        ``pos_err`` (m), ``hi_nmse_db`` (dB) and ``n_faulty`` of this frame, each ``None``
        when the frame lacks what it needs.

    Raises
    ------
    BadFrame
        Naming the field that is missing or malformed.
    """
    from ..array import ULA

    meta = frame.meta or {}
    arrays = frame.arrays or {}
    try:
        arr = ULA.from_meta(meta["array"])
        n = arr.n_antennas
        if arr.spacing is None:
            raise TypeError("missing spacing")
        geometry = {
            "n_antennas": n,
            "spacing": float(arr.spacing),
            "aperture": float(arr.aperture),
            "fresnel": float(arr.fresnel_distance),
            "carrier_hz": float(arr.carrier_hz),
        }
    except (KeyError, ValueError, TypeError) as exc:
        raise BadFrame(f"meta.array: {exc}") from None
    truth_meta = meta.get("truth")
    if truth_meta is not None and not isinstance(truth_meta, dict):
        raise BadFrame(f"meta.truth: expected a mapping, got {type(truth_meta).__name__}")
    truth_meta = truth_meta or {}
    targets = _positions(meta.get("targets"), "meta.targets") or []
    truth = _positions(truth_meta.get("targets"), "meta.truth.targets")
    faulty = _indices(meta.get("faulty"), n, "meta.faulty")
    true_faulty = _indices(truth_meta.get("faulty"), n, "meta.truth.faulty")

    pos_err = None
    if truth:
        pairs = _match(targets, truth)
        errs = []
        for j, i in pairs.items():
            t, g = targets[j], truth[i]
            t["err_theta"], t["err_range"] = t["theta"] - g["theta"], t["range"] - g["range"]
            errs.append(
                math.hypot(
                    t["range"] * math.cos(t["theta"]) - g["range"] * math.cos(g["theta"]),
                    t["range"] * math.sin(t["theta"]) - g["range"] * math.sin(g["theta"]),
                )
            )
        pos_err = max(errs) if errs else None

    hi_dev = hi_nmse_db = None
    c_hat = arrays.get("c_hat")
    if c_hat is not None:
        c_hat = np.asarray(c_hat).reshape(-1)
        if c_hat.size != n or not np.all(np.isfinite(c_hat)):
            raise BadFrame(
                f"arrays.c_hat: expected {n} finite values (one per antenna), got shape {np.shape(arrays['c_hat'])}"
            )
        hi_dev = np.round(np.abs(c_hat - 1.0), 4)
        phases = truth_meta.get("fault_phase")
        if true_faulty is not None and isinstance(phases, list) and len(phases) == len(true_faulty):
            c = np.ones(n, complex)
            c[true_faulty] = np.exp(1j * np.asarray(phases, float))
            nmse = float(np.sum(np.abs(c_hat - c) ** 2) / n)
            hi_nmse_db = 10.0 * math.log10(max(nmse, 1e-12))

    angle = _spectrum(arrays, "angle_grid", "angle_spectrum", 1)
    rng = _spectrum(arrays, "range_grid", "range_spectrum", 2)
    blocks = meta.get("blocks")
    state = {
        "seq": int(frame.seq),
        "t0": float(frame.t0),
        "array": geometry,
        "targets": targets,
        "truth": truth,
        "coarse": _positions(meta.get("coarse"), "meta.coarse"),
        "faulty": faulty,
        "true_faulty": true_faulty,
        "hi_dev": hi_dev,
        "angle": {"theta": angle[0][0], "db": angle[0][1]} if angle else None,
        "range": [{"r": x, "db": y} for x, y in rng] if rng else None,
        "noise_var": meta.get("noise_var") if isinstance(meta.get("noise_var"), (int, float)) else None,
        "blocks": blocks if isinstance(blocks, dict) else None,
    }
    return state, {"pos_err": pos_err, "hi_nmse_db": hi_nmse_db, "n_faulty": None if faulty is None else len(faulty)}


# ---------------------------------------------------------------------------------------
# The mailbox shared by process() and the client threads
# ---------------------------------------------------------------------------------------


def _to_list(obj):
    """JSON fallback: the small numpy arrays of a view state become lists when a state is sent."""
    if isinstance(obj, np.ndarray):
        return finite_or_none(obj.tolist())
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class _Hub:
    """One-slot mailbox: ``publish`` replaces the state; clients wait for a newer version."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.version = 0
        self.state: dict | None = None
        self._text: tuple[int, str] | None = None
        self.closed = False
        self.ended = False
        self.clients: dict[int, dict] = {}
        self._next_id = 0

    def publish(self, state: dict) -> None:
        with self.cond:
            self.version += 1
            self.state = state
            self.cond.notify_all()

    def end(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_newer(self, seen: int, timeout: float) -> int:
        """Block (a client thread, never process()) until version > seen, close or timeout."""
        with self.cond:
            self.cond.wait_for(lambda: self.version > seen or self.closed or self.ended, timeout)
            return self.version

    def wait_closed(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.closed, timeout)

    def text(self) -> tuple[int, str]:
        """(version, JSON) of the latest state, serialised once per version."""
        with self.cond:
            version, state, cached = self.version, self.state, self._text
        if cached is not None and cached[0] == version:
            return cached
        try:  # the state holds finite numbers (checked in view_state): no walk needed
            body = json.dumps(state, allow_nan=False, separators=(",", ":"), default=_to_list)
        except ValueError:  # a NaN/Inf slipped in (e.g. meta.blocks): strict JSON has null for it
            body = json.dumps(finite_or_none(state), allow_nan=False, separators=(",", ":"), default=_to_list)
        with self.cond:
            if self._text is None or self._text[0] < version:
                self._text = (version, body)
        return version, body

    def register(self) -> dict:
        with self.cond:
            self._next_id += 1
            # versions before the latest one were published before this browser came
            rec: dict[str, Any] = {
                "id": self._next_id,
                "sent": 0,
                "skipped": 0,
                "since": time.time(),
                "base": max(self.version - 1, 0),
            }
            self.clients[rec["id"]] = rec
            return rec

    def unregister(self, rec: dict) -> None:
        with self.cond:
            self.clients.pop(rec["id"], None)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "nearfield-web"
    protocol_version = "HTTP/1.0"  # one request per connection; the event stream ends with it
    server: _Server  # the handler is only served by _Server (it reads hub, assets, min_interval)

    def log_message(self, fmt, *args):  # no access log on stderr
        log.debug("web %s: " + fmt, self.client_address[0], *args)

    def _headers(self, code: int, ctype: str, length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        srv = self.server
        if path in _ASSETS:
            body = srv.assets[_ASSETS[path][0]]
            self._headers(200, _ASSETS[path][1], len(body))
            self.wfile.write(body)
        elif path == "/state.json":
            body = srv.hub.text()[1].encode()
            self._headers(200, "application/json", len(body))
            self.wfile.write(body)
        elif path == "/events":
            self._events()
        else:
            body = b"not found\n"
            self._headers(404, "text/plain; charset=utf-8", len(body))
            self.wfile.write(body)

    def _events(self) -> None:
        srv = self.server
        hub: _Hub = srv.hub
        self.connection.settimeout(_SEND_TIMEOUT_S)
        self._headers(200, "text/event-stream")
        rec = hub.register()
        seen = 0
        try:
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            while not hub.closed:
                version = hub.wait_newer(seen, _KEEPALIVE_S)
                if hub.closed:
                    break
                if version > seen:
                    version, body = hub.text()
                    self.wfile.write(f"id: {version}\nevent: frame\ndata: {body}\n\n".encode())
                    self.wfile.flush()
                    rec["sent"] += 1
                    rec["skipped"] = version - rec["base"] - rec["sent"]  # replaced before it could go
                    seen = version
                    time.sleep(srv.min_interval)  # at most max_rate_hz updates per second
                elif hub.ended:
                    self.wfile.write(b"event: end\ndata: {}\n\n")
                    self.wfile.flush()
                    while not hub.wait_closed(_KEEPALIVE_S):  # keep the stream open: a closed
                        self.wfile.write(b": keep-alive\n\n")  # one would make the page reconnect
                        self.wfile.flush()
                    break
                else:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
        except OSError:  # the browser went away (reset, broken pipe, timeout)
            pass
        finally:
            hub.unregister(rec)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, family, hub: _Hub, assets: dict, min_interval: float):
        self.address_family = family
        self.hub, self.assets, self.min_interval = hub, assets, min_interval
        super().__init__(addr, _Handler)

    def server_bind(self):
        # HTTPServer.server_bind looks up the FQDN of the host (a DNS query that can hang
        # offline); the TCP bind is all we need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


# ---------------------------------------------------------------------------------------
# The block
# ---------------------------------------------------------------------------------------


def _p95(values) -> float | None:
    """95th percentile (nearest rank) of a short sequence; plain sort, cheaper than numpy's for ~200 values."""
    if not values:
        return None
    v = sorted(values)
    return float(v[min(len(v) - 1, math.ceil(0.95 * len(v)) - 1)])


def _port_check(value) -> str | None:
    return None if 0 <= value <= 65535 else "a TCP port in 0..65535 (0 = any free port)"


def _resolve(host: str, port: int):
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    return family, addr


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class WebSink(Sink):
    """Live view in the browser: top view, spectra, fault map, counters (HTTP + Server-Sent Events)."""

    params = (
        Param("port", int, 8050, "TCP port of the page http://host:port/ (0 = any free port)", check=_port_check),
        Param(
            "host",
            str,
            "127.0.0.1",
            "bind address (loopback by default; another address exposes the "
            "page, without authentication, to that network)",
        ),
        Param("max_rate_hz", float, 10.0, "page updates per second and browser, at most", check=positive),
        Param(
            "history",
            int,
            300,
            "frames of history (errors, HI NMSE, latency) sent to the page",
            check=lambda v: None if 1 <= v <= 10000 else "an integer in 1..10000",
        ),
    )

    def validate(self) -> None:
        if not self.host.strip():
            raise self.param_error("host", "expected a bind address such as 127.0.0.1, got an empty string")
        # A trial bind, so a port in use or a bad address stops the run before it starts.
        sock = self._bind(probe=True)
        sock.close()

    def _bind(self, probe: bool):
        try:
            family, addr = _resolve(self.host, self.port)
        except (socket.gaierror, UnicodeError) as exc:
            raise self.param_error(
                "host", f"cannot resolve bind address {self.host!r} ({getattr(exc, 'strerror', None) or exc})"
            ) from None
        if probe:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            if probe:
                sock.bind(addr)
                return sock
            return _Server(addr, family, self._hub, self._assets, 1.0 / self.max_rate_hz)
        except OSError as exc:
            if probe:
                sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise self.param_error(
                    "port",
                    f"port {self.port} on {self.host} is already in use (choose another port, or 0 for any free port)",
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise self.param_error(
                    "port", f"no permission to bind port {self.port} on {self.host} (ports below 1024 need privileges)"
                ) from None
            raise self.param_error(
                "host",
                f"cannot bind {self.host}:{self.port}: {exc.strerror or exc} (expected an address of this machine)",
            ) from None

    # -- worker side -------------------------------------------------------------------
    def start(self) -> None:
        folder = importlib.resources.files(__package__).joinpath("web_static")
        self._assets = {name: folder.joinpath(name).read_bytes() for name in ("index.html", "app.js", "style.css")}
        self._hub = _Hub()
        self._server = self._bind(probe=False)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host if ':' not in host else '[' + host + ']'}:{port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"web-{self.name}", daemon=True
        )
        self._thread.start()
        self.frames = self.bad = self.missing = 0
        self._last_seq: int | None = None
        self._arrivals: deque = deque(maxlen=50)
        self._latency: deque = deque(maxlen=200)
        self._hist: dict[str, deque] = {
            k: deque(maxlen=self.history) for k in ("seq", "pos_err", "hi_nmse_db", "n_faulty", "latency_ms")
        }
        print(f"{self.name}: live view on {self.url}", file=sys.stderr, flush=True)
        if not _is_loopback(host):
            log.warning(
                "block %r: the live view listens on %s, reachable from other machines, without authentication",
                self.name,
                host,
            )

    def process(self, frame: Frame) -> None:
        if getattr(self, "_server", None) is None:
            self.start()
        now_wall, now = time.time(), time.monotonic()
        try:
            state, scalars = view_state(frame)
        except BadFrame:
            self.bad += 1
            raise
        self.frames += 1
        if self._last_seq is not None and frame.seq > self._last_seq + 1:
            self.missing += frame.seq - self._last_seq - 1
        self._last_seq = frame.seq
        self._arrivals.append(now)
        t_emit = (frame.meta or {}).get("t_emit")
        lat: float | None = None
        if isinstance(t_emit, (int, float)) and not isinstance(t_emit, bool):
            lat = 1e3 * (now_wall - float(t_emit))
            self._latency.append(lat)
        span = self._arrivals[-1] - self._arrivals[0]
        h = self._hist
        # rounded to what the page shows (0.1 um, 0.01 dB, 0.01 ms): a shorter JSON text to build
        for key, value, digits in (
            ("seq", frame.seq, None),
            ("pos_err", scalars["pos_err"], 7),
            ("hi_nmse_db", scalars["hi_nmse_db"], 2),
            ("n_faulty", scalars["n_faulty"], None),
            ("latency_ms", lat, 2),
        ):
            h[key].append(value if value is None or digits is None else round(value, digits))
        state["counters"] = {
            "frames": self.frames,
            "rate_hz": (len(self._arrivals) - 1) / span if span > 0 else None,
            "latency_ms": lat,
            "latency_p95_ms": _p95(self._latency),
            "missing": self.missing,
            "bad": self.bad,
            "clients": self._clients(),
        }
        state["history"] = {k: list(v) for k, v in h.items()}  # copies: the deques go on changing
        self._hub.publish(state)

    def _clients(self) -> list[dict]:
        with self._hub.cond:
            return [{k: c[k] for k in ("id", "sent", "skipped", "since")} for c in self._hub.clients.values()]

    def finish(self):
        if getattr(self, "_hub", None) is not None:
            self._hub.end()

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is None:
            return
        self._hub.close()
        server.shutdown()
        server.server_close()
        self._thread.join(timeout=2.0)
        self._server = None
