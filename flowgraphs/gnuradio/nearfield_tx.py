#!/usr/bin/env python3
"""GNU Radio flowgraph: stream an N-channel near-field test signal to the nearfield pipeline.

    vector_source_c (vlen=N, repeat) -> throttle -> [head] -> zeromq.push_sink / pub_sink

Each item is one snapshot of all N antennas (N complex64, ``vlen = N``).  The signal is the
paper's model, eq. (5), on the exact spherical wavefront, eq. (1):

    y_t = diag(c) A(theta, r) diag(beta) s_t + n_t,
    [a(theta, r)]_n = exp(-j k (r_n - r)),  r_n = sqrt(r^2 + l_n^2 - 2 r l_n sin(theta)),
    l_n = (2n - N - 1) d / 2 (n = 1..N, centred, d = lambda/2),

with unit-modulus random gains beta and probing signals s_t, a static hardware-impairment
vector c (each antenna faulty with probability ``--p-fault``, then a uniform phase bias), and
complex white noise at ``--snr-db`` (signal power / noise power per antenna).  One cycle of
``--period`` snapshots is computed with numpy (seeded, so it is reproducible) and repeated
by the vector source; a stream tag ``nearfield_cycle`` (value: cycle length) marks the start
of every cycle, and ``pass_tags`` sends it to the pipeline in gr-zeromq's tag header.

Run it with GNU Radio's Python (Debian: ``apt-get install gnuradio``; then ``/usr/bin/python3``):

    /usr/bin/python3 flowgraphs/gnuradio/nearfield_tx.py --address tcp://127.0.0.1:5555

and the pipeline with ``nearfield run flowgraphs/gnuradio_zmq.yaml`` (see docs/live.md).
Only numpy is needed to compute the signal: ``make_test_signal`` is importable without
GNU Radio (the integration test does so to know what to expect).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

SPEED_OF_LIGHT = 299_792_458.0
#: Targets of the paper's Sec. VI-A: (theta rad, range m).
PAPER_TARGETS = ((math.pi / 12, 10.0), (-math.pi / 12, 18.0), (-math.pi / 6, 8.0))


def make_test_signal(n_antennas: int = 256, n_items: int = 1000, carrier_hz: float = 30e9,
                     targets=PAPER_TARGETS, snr_db: float | None = 20.0, p_fault: float = 0.02,
                     seed: int = 1, wavelength_m: float | None = 0.01, spacing: float | None = None):
    """One cycle of the test signal, item-major as GNU Radio streams it.

    Parameters
    ----------
    n_antennas : int
        N, the vector length of the stream.
    n_items : int
        T, snapshots in the cycle.
    carrier_hz : float
        Carrier, Hz (used when ``wavelength_m`` is None).
    targets : sequence of (theta rad, range m)
    snr_db : float or None
        Per-antenna SNR of the signal part, dB; None = no noise.
    p_fault : float
        Probability that an antenna carries a phase bias.
    seed : int
        Seeds the one ``numpy.random.Generator`` used: c, then beta, then s_t, then noise.
    wavelength_m : float or None
        Wavelength override (the paper rounds 30 GHz to 0.01 m).
    spacing : float or None
        Antenna spacing d, m (lambda/2 when None).

    Returns
    -------
    items : ndarray, shape (n_items, N), complex64
        ``items[t] = y_t``.
    truth : dict
        ``targets`` [{theta, range}], ``faulty`` (0-based), ``fault_phase`` (rad),
        ``gains`` beta (K,) complex, ``pilots`` S (K, T) complex, ``noise_var`` sigma^2,
        ``c`` (N,) complex, ``clean`` (T, N) complex128 noiseless signal.
    """
    rng = np.random.default_rng(seed)
    lam = wavelength_m if wavelength_m else SPEED_OF_LIGHT / carrier_hz
    d = spacing if spacing else lam / 2.0
    k_wave = 2.0 * np.pi / lam
    n = np.arange(1, n_antennas + 1)
    pos = (2 * n - n_antennas - 1) * d / 2.0                      # l_n, metres
    theta = np.array([t[0] for t in targets], float)
    r = np.array([t[1] for t in targets], float)
    rn = np.sqrt(r[None, :] ** 2 + pos[:, None] ** 2 - 2.0 * pos[:, None] * r[None, :] * np.sin(theta)[None, :])
    A = np.exp(-1j * k_wave * (rn - r[None, :]))                  # (N, K), eq. (1)
    faulty_mask = rng.random(n_antennas) < p_fault
    zeta = rng.uniform(-np.pi, np.pi, n_antennas) * faulty_mask
    c = np.exp(1j * zeta)
    gains = np.exp(2j * np.pi * rng.random(len(targets)))
    pilots = np.exp(2j * np.pi * rng.random((len(targets), n_items)))
    clean = (c[:, None] * (A @ (gains[:, None] * pilots))).T        # (T, N)
    if snr_db is None:
        sigma2 = 0.0
        y = clean
    else:
        sigma2 = float(np.mean(np.abs(clean) ** 2) / 10.0 ** (snr_db / 10.0))
        noise = np.sqrt(sigma2 / 2.0) * (rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape))
        y = clean + noise
    faulty = np.flatnonzero(faulty_mask)
    order = np.argsort(theta)
    truth = {
        "targets": [{"theta": float(theta[i]), "range": float(r[i])} for i in order],
        "faulty": faulty.tolist(), "fault_phase": zeta[faulty].tolist(), "noise_var": sigma2,
        "gains": gains, "pilots": pilots, "c": c, "clean": clean,
    }
    return y.astype(np.complex64), truth


def build_flowgraph(items: np.ndarray, address: str, socket: str = "push", rate: float = 1e4,
                    n_items: int = 0, pass_tags: bool = True, key: str = "", hwm: int = -1):
    """The GNU Radio top block: vector source (repeating ``items``) -> throttle -> [head] -> ZMQ.

    ``rate`` in items (snapshots) per second, 0 = unthrottled; ``n_items`` > 0 stops the
    flowgraph after that many items.
    """
    import pmt
    from gnuradio import blocks, gr, zeromq

    period, n_ant = items.shape
    tb = gr.top_block("nearfield test signal")
    tag = gr.tag_utils.python_to_tag((0, pmt.intern("nearfield_cycle"), pmt.from_long(period),
                                      pmt.intern("nearfield_tx")))
    src = blocks.vector_source_c(items.reshape(-1).tolist(), True, n_ant, [tag])
    chain = [src]
    if rate > 0:
        chain.append(blocks.throttle(gr.sizeof_gr_complex * n_ant, rate, True))
    if n_items > 0:
        chain.append(blocks.head(gr.sizeof_gr_complex * n_ant, n_items))
    if socket == "push":
        sink = zeromq.push_sink(gr.sizeof_gr_complex, n_ant, address, 100, pass_tags, hwm)
    else:
        sink = zeromq.pub_sink(gr.sizeof_gr_complex, n_ant, address, 100, pass_tags, hwm, key)
    chain.append(sink)
    tb.connect(*chain)
    return tb


def _targets(text: str):
    try:
        out = []
        for part in text.split(","):
            th, r = part.split(":")
            out.append((float(th), float(r)))
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'theta_rad:range_m,...', got {text!r}") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--address", default="tcp://127.0.0.1:5555", help="endpoint the ZMQ sink binds")
    p.add_argument("--socket", choices=("push", "pub"), default="push",
                   help="gr-zeromq sink: push (lossless, back-pressure) or pub (drops for slow readers)")
    p.add_argument("--key", default="", help="PUB key (topic), pub only")
    p.add_argument("--no-pass-tags", dest="pass_tags", action="store_false",
                   help="send raw items without the gr-zeromq tag header")
    p.add_argument("--n-antennas", type=int, default=256, help="N = vlen")
    p.add_argument("--carrier-hz", type=float, default=30e9)
    p.add_argument("--wavelength-m", type=float, default=0.01,
                   help="wavelength override (0 = c0 / carrier)")
    p.add_argument("--targets", type=_targets, default=list(PAPER_TARGETS),
                   help="theta_rad:range_m,... (default: the paper's three targets)")
    p.add_argument("--snr-db", type=float, default=20.0, help="per-antenna SNR; nan = no noise")
    p.add_argument("--p-fault", type=float, default=0.02, help="probability of a faulty antenna")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--period", type=int, default=1000, help="snapshots in the repeated cycle")
    p.add_argument("--rate", type=float, default=10000.0, help="snapshots per second (0 = unthrottled)")
    p.add_argument("--items", type=int, default=0, help="stop after this many snapshots (0 = run until Ctrl-C)")
    p.add_argument("--hwm", type=int, default=-1, help="ZMQ send high-water mark (-1 = ZMQ default)")
    a = p.parse_args(argv)

    items, truth = make_test_signal(a.n_antennas, a.period, a.carrier_hz, a.targets,
                                    None if math.isnan(a.snr_db) else a.snr_db, a.p_fault, a.seed,
                                    a.wavelength_m or None)
    summary = {k: truth[k] for k in ("targets", "faulty", "fault_phase", "noise_var")}
    print("nearfield_tx truth: " + json.dumps(summary), file=sys.stderr, flush=True)
    tb = build_flowgraph(items, a.address, a.socket, a.rate, a.items, a.pass_tags, a.key, a.hwm)
    print(f"nearfield_tx: streaming N={a.n_antennas} complex64 per item on {a.address} "
          f"({a.socket}, pass_tags={a.pass_tags}, {a.rate:g} items/s)", file=sys.stderr, flush=True)
    if a.items > 0:
        tb.run()
        return 0
    tb.start()
    try:
        tb.wait()
    except KeyboardInterrupt:
        pass
    finally:
        tb.stop()
        tb.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
