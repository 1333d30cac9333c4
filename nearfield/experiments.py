"""The experiment runner: the numerical results of Sec. VI (Figs. 6-10), resumable and parallel.

::

    nearfield experiment NAME [--trials N] [--seed S] [--workers W] [--out DIR]
                              [--scheduler ADDRESS] [--resume] [--bound-realisations B]
                              [--antennas N] [--points X ...] [--cap X=N ...] [--no-plot] [--markdown]

``NAME`` is one of :data:`EXPERIMENTS`:

========================  ==================================================================
``snr``                   Fig. 6: angle and range RMSE vs SNR (default scenario, N = 256,
                          p_fault = 2 %), all five schemes, R-CRB / R-LB / R-MCRB / R-bias.
``antennas``              Fig. 7: angle and range RMSE vs N, p_fault 1 % and 2 %, SNR 20 dB.
``range``                 Fig. 8: Cartesian localization RMSE of one target at pi/12 vs its
                          range, SNR 20 dB, N = 256, p_fault = 2 %.
``fault-probability``     Fig. 9: Cartesian localization RMSE vs p_fault, SNR 15 and 30 dB.
``hi-nmse``               Fig. 10: HI-vector NMSE vs SNR, p_fault 1 / 2 / 4 %, proposed and BCD.
``resolution``            (ours) two targets at 10 m and 12 m around pi/12, 0.25-3 deg apart,
                          pilot-aided and blind, SNR 20 dB: RMSE and resolution probability
                          of proposed, paper and 2-D MUSIC, with the trials' CRB.
``coherence``             (ours) two targets of the default scene, blind, SNR 20 dB, waveform
                          correlation rho = 0, 0.5, 0.9, 0.99, 1 (``s2 = rho s1 +
                          sqrt(1 - rho^2) s_ind``, :func:`nearfield.montecarlo.correlate_waveforms`).
========================  ==================================================================

A target pair is *resolved* in a trial when each estimate (paired with the truths by sorted
angle) lies within half the angular separation of its own target; the ``resolved`` column
of every experiment is that share (with the smallest separation of the scene).  Every row
counts its failed trials: ``failed`` (exceptions) and ``n_gross`` / ``gross`` (exception or
error above 10 x the trial's CRB std), with ``rmse_*_ok`` / ``ratio_*_ok`` over the rest.
The two experiments of ours run no misspecified-bounds units; their bound is the CRB of
each trial (perfect HI knowledge, known waveforms -- also for the blind rows).

Points: ``snr`` -10..30 dB step 5; ``antennas`` N = 128, 256, 512, 1024; ``range`` 8, 12,
20, 30, 45 m; ``fault-probability`` 0..14 % step 2; ``hi-nmse`` -10, 0, 10, 20, 30 dB;
``resolution`` 0.25, 0.5, 0.75, 1, 1.5, 2, 3 deg; ``coherence`` rho 0, 0.5, 0.9, 0.99, 1.
Default ``--trials`` (a few minutes each on 2 cores): 20 (snr, range, hi-nmse, resolution,
coherence), 10 (antennas, fault-probability); docs/results.md used 200 for the paper's five
(``--cap 1024=50`` for ``antennas``) and says what it used for ours.  ``--markdown`` prints
the rows as the Markdown table of docs/results.md.

How it works
------------
Every experiment is a list of *points* (keyword arguments of
:func:`nearfield.montecarlo.run_trial`: ``snr_db``, ``n_antennas``, ``p_fault``,
``targets``) and a tuple of schemes.  Trial ``i`` of every point uses the integer seed
``S * 1_000_000 + i`` (``S`` = ``--seed``), so all points share their random draws of HI
vector, gains and pilots (common random numbers: ``paper_scenario`` draws them before the
noise and independently of the SNR) and a rerun reproduces every number.

The unit of work is one trial (all schemes on one realisation, via ``run_trial``, which
calls the same functions as the streaming blocks) or one *bounds realisation*: the
pseudo-true fit (eq. 40) of realisation ``i`` followed by the misspecified bounds (eqs. 41-45)
for every SNR of the points sharing that realisation.  The pseudo-true point does not depend
on the noise power, so one fit (~0.7 s at N = 256, measured) serves all SNRs; it is still
slower than a trial of the proposed scheme, so the bounds of each point are the average over
the first ``--bound-realisations`` (default 10) realisations rather than every trial --
the bounds are realisation-averaged MSEs (square root of the mean diagonal), like the RMSEs.

Each finished unit is appended (one JSON line, flushed) to ``OUT/cache-NAME.jsonl`` keyed by
(experiment, point, seed).  With ``--resume`` the runner reads that file first and skips
every unit already in it, so an interrupted sweep resumes where it stopped; without
``--resume`` the cache is started afresh.  The summaries are computed from the cache, with
:func:`nearfield.montecarlo.summarize` (angle and range RMSE, ratios to the per-trial R-CRB,
gross-error share, detection counts, NMSE, time), plus the Cartesian localization RMSE of
Sec. VI-A and the mean HI NMSE.

Parallelism: a ``concurrent.futures.ProcessPoolExecutor`` with every core by default
(``--workers``), started with the *spawn* method and ``OPENBLAS_NUM_THREADS`` /
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``NUMBA_NUM_THREADS`` = 1 in the children's
environment, so that W workers use W cores and BLAS does not oversubscribe (the variables
must be set before numpy is imported, which is why the workers are spawned, not forked;
``threadpoolctl`` is used in addition when installed).  ``--scheduler ADDRESS`` sends the
same units to a Dask cluster (``pip install nearfield[dask]``; ``dask.distributed`` is
imported only then).

Outputs in ``OUT`` (default ``results``): ``NAME.csv`` (one row per point and scheme: point
parameters, scheme, trials, seed, RMSEs, ratios, bounds, counts, time), ``NAME.png`` (the
figure, matplotlib Agg) and the cache.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .frame import jsonable
from .montecarlo import PAPER_TARGETS, run_trial, summarize

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "main",
    "run_experiment",
    "trial_unit",
    "bounds_unit",
    "markdown_table",
    "load_cache",
    "summarize_experiment",
]

SEED_STRIDE = 1_000_000
_BOUND_KEYS = ("crb", "lb", "mcrb", "bias")
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# --------------------------------------------------------------------------- experiments
@dataclass
class Experiment:
    """One figure of Sec. VI: its points, schemes and plot."""

    name: str
    figure: str
    description: str
    schemes: tuple
    points: list  # of dicts: run_trial keyword arguments (snr_db, n_antennas, p_fault, targets)
    x: str  # the swept point key shown on the x axis
    series: str | None = None  # a second key that splits the curves (p_fault, snr_db)
    default_trials: int = 20
    metrics: tuple = ("theta", "range")  # panels: "theta", "range", "cart", "nmse", "resolved"
    notes: list = field(default_factory=list)
    bounds: bool = True  # misspecified bounds units (LB/MCRB/bias); False: the trials' CRB only


def _pt(snr_db=20.0, n_antennas=256, p_fault=0.02, targets=PAPER_TARGETS, pilots=True, rho=None):
    pt = {
        "snr_db": float(snr_db),
        "n_antennas": int(n_antennas),
        "p_fault": float(p_fault),
        "targets": [[float(a), float(b)] for a, b in targets],
    }
    if not pilots:
        pt["pilots"] = False
    if rho is not None:
        pt["rho"] = float(rho)
    return pt


#: Centre angle and ranges of the two targets of ``resolution`` (the 10 m / 12 m pair of the hard scenes).
RESOLUTION_CENTRE = np.pi / 12
RESOLUTION_RANGES = (10.0, 12.0)
RESOLUTION_SEPARATIONS_DEG = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
#: The two targets of ``coherence``: the first two of the default scene.
COHERENCE_TARGETS = PAPER_TARGETS[:2]
COHERENCE_RHOS = (0.0, 0.5, 0.9, 0.99, 1.0)


def _pair(sep_deg: float) -> tuple:
    """Two targets ``sep_deg`` apart around :data:`RESOLUTION_CENTRE` at 10 m and 12 m."""
    h = np.deg2rad(sep_deg) / 2
    return ((RESOLUTION_CENTRE - h, RESOLUTION_RANGES[0]), (RESOLUTION_CENTRE + h, RESOLUTION_RANGES[1]))


def separation_deg(targets) -> float:
    """Smallest angular separation between the targets, degrees (NaN for one target)."""
    th = np.sort(np.asarray(targets, float)[:, 0])
    return round(float(np.rad2deg(np.min(np.diff(th)))), 9) if th.size > 1 else float("nan")


def point_fields(pt: dict) -> dict:
    """The x-axis values a point may be swept by: its keys plus range_m, separation_deg, rho, pilots."""
    return {
        **pt,
        "range_m": pt["targets"][0][1] if len(pt["targets"]) == 1 else float("nan"),
        "separation_deg": separation_deg(pt["targets"]),
        "rho": pt.get("rho", float("nan")),
        "pilots": pt.get("pilots", True),
    }


def _make_experiments(n_override: int | None = None) -> dict:
    """The five experiments; ``n_override`` replaces N everywhere except in ``antennas`` (tests)."""
    n = n_override or 256
    ns = (n_override // 2, n_override) if n_override else (128, 256, 512, 1024)
    one = (np.pi / 12,)
    exps = [
        Experiment(
            "snr",
            "Fig. 6",
            f"angle and range RMSE vs SNR (N={n}, p_fault=2 %)",
            ("proposed", "paper", "coarse", "bcd", "music2d"),
            [_pt(s, n) for s in range(-10, 31, 5)],
            "snr_db",
            None,
            20,
        ),
        Experiment(
            "antennas",
            "Fig. 7",
            "angle and range RMSE vs N (SNR 20 dB, p_fault 1 and 2 %)",
            ("proposed", "paper", "coarse", "bcd"),
            [_pt(20, m, p) for p in (0.01, 0.02) for m in ns],
            "n_antennas",
            "p_fault",
            10,
        ),
        Experiment(
            "range",
            "Fig. 8",
            f"Cartesian RMSE of one target at pi/12 vs range (N={n}, SNR 20 dB, p_fault 2 %)",
            ("proposed", "paper", "coarse", "bcd", "music2d"),
            [_pt(20, n, 0.02, ((one[0], r),)) for r in (8.0, 12.0, 20.0, 30.0, 45.0)],
            "range_m",
            None,
            20,
            ("cart",),
        ),
        Experiment(
            "fault-probability",
            "Fig. 9",
            f"Cartesian RMSE vs p_fault (N={n}, SNR 15 and 30 dB)",
            ("proposed", "paper", "coarse", "bcd"),
            [_pt(s, n, p / 100) for s in (15, 30) for p in range(0, 15, 2)],
            "p_fault",
            "snr_db",
            10,
            ("cart",),
        ),
        Experiment(
            "hi-nmse",
            "Fig. 10",
            f"HI-vector NMSE vs SNR (N={n}, p_fault 1, 2, 4 %)",
            ("proposed", "bcd"),
            [_pt(s, n, p) for p in (0.01, 0.02, 0.04) for s in (-10, 0, 10, 20, 30)],
            "snr_db",
            "p_fault",
            20,
            ("nmse",),
        ),
        Experiment(
            "resolution",
            "Resolution",
            f"RMSE and resolution probability vs separation of two targets (N={n}, 20 dB, p_fault 2 %)",
            ("proposed", "paper", "music2d"),
            [_pt(20, n, 0.02, _pair(s), pilots=pl) for pl in (True, False) for s in RESOLUTION_SEPARATIONS_DEG],
            "separation_deg",
            "pilots",
            20,
            ("theta", "range", "resolved"),
            bounds=False,
        ),
        Experiment(
            "coherence",
            "Coherence",
            f"RMSE vs waveform correlation of two targets, blind (N={n}, 20 dB, p_fault 2 %)",
            ("proposed", "paper", "music2d"),
            [_pt(20, n, 0.02, COHERENCE_TARGETS, pilots=False, rho=r) for r in COHERENCE_RHOS],
            "rho",
            None,
            20,
            ("theta", "range"),
            bounds=False,
        ),
    ]
    return {e.name: e for e in exps}


EXPERIMENTS = _make_experiments()


def point_key(pt: dict) -> str:
    """Stable text key of a point (all of its parameters), used in the cache."""
    tg = ";".join(f"{a:.6f},{b:.4f}" for a, b in pt["targets"])
    key = f"snr={pt['snr_db']:g}|N={pt['n_antennas']}|p={pt['p_fault']:g}|targets={tg}"
    if not pt.get("pilots", True):
        key += "|blind"
    if pt.get("rho") is not None:
        key += f"|rho={pt['rho']:g}"
    return key


def _group_key(pt: dict) -> str:
    """Key of the realisation a point shares with others: all parameters but the SNR."""
    return point_key({**pt, "snr_db": 0.0}).split("|", 1)[1]


def trial_seed(seed: int, i: int) -> int:
    return int(seed) * SEED_STRIDE + int(i)


# --------------------------------------------------------------------------- work units
def trial_unit(pt: dict, seed: int, schemes) -> dict:
    """One Monte Carlo trial at point ``pt`` (JSON-ready dict of :func:`run_trial`)."""
    res = run_trial(
        seed,
        pt["snr_db"],
        n_antennas=pt["n_antennas"],
        p_fault=pt["p_fault"],
        targets=tuple(map(tuple, pt["targets"])),
        schemes=tuple(schemes),
        pilots=pt.get("pilots", True),
        rho=pt.get("rho"),
    )
    return jsonable(res, finite=False)


def _cart_bound(M: np.ndarray, theta, r) -> float:
    """sqrt(mean_k tr(J_k M_k J_k^T)): a (theta, r) covariance mapped to xi = (r sin, r cos)."""
    K = len(theta)
    acc = 0.0
    for k in range(K):
        idx = [2 * K + k, 3 * K + k]
        Mk = M[np.ix_(idx, idx)]
        J = np.array([[r[k] * np.cos(theta[k]), np.sin(theta[k])], [-r[k] * np.sin(theta[k]), np.cos(theta[k])]])
        acc += float(np.trace(J @ Mk @ J.T))
    return math.sqrt(max(acc / K, 0.0))


def bounds_unit(pt: dict, seed: int, snrs) -> dict:
    """Root bounds of realisation ``seed`` at every SNR in ``snrs`` (one pseudo-true fit).

    Returns ``{"%g" % snr: {crb_angle, crb_range, crb_cart, lb_..., mcrb_..., bias_...}}``
    (rad, m, m): the square roots of the target-averaged diagonals (errata 11) of the
    CRB (eq. 47), LB (eq. 42), MCRB (eq. 41) and squared bias (eq. 43), and the Cartesian
    versions through the Jacobian of xi = (r sin theta, r cos theta).
    """
    from .bounds import misspecified_bounds, pseudo_true
    from .scenario import noise_variance, paper_scenario

    rng = np.random.default_rng(seed)
    sc = paper_scenario(
        rng,
        n_antennas=pt["n_antennas"],
        snr_db=pt["snr_db"],
        p_fault=pt["p_fault"],
        targets=tuple(map(tuple, pt["targets"])),
    )
    pseudo = pseudo_true(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.c)
    mu = sc.mean()
    K = sc.theta.size
    out: dict[str, dict[str, float] | float] = {}
    for snr in snrs:
        b = misspecified_bounds(
            sc.array, sc.theta, sc.r, sc.gains, sc.pilots, noise_variance(mu, snr), sc.c, pseudo=pseudo
        )
        row = {}
        for name in _BOUND_KEYS:
            M = getattr(b, name)
            d = np.diag(M)
            row[f"{name}_angle"] = float(np.sqrt(np.mean(d[2 * K : 3 * K])))
            row[f"{name}_range"] = float(np.sqrt(np.mean(d[3 * K :])))
            row[f"{name}_cart"] = _cart_bound(M, sc.theta, sc.r)
        out[f"{snr:g}"] = row
    out["pseudo_cost_ratio"] = float(pseudo.cost / max(pseudo.cost_truth, 1e-300))
    return out


def _run_unit(unit: dict) -> dict:
    """Execute a unit description (picklable; runs in a worker)."""
    t0 = time.perf_counter()
    if unit["kind"] == "trial":
        result = trial_unit(unit["point"], unit["seed"], unit["schemes"])
    else:
        result = bounds_unit(unit["point"], unit["seed"], unit["snrs"])
    return {
        "experiment": unit["experiment"],
        "kind": unit["kind"],
        "point": unit["key"],
        "seed": unit["seed"],
        "elapsed_s": time.perf_counter() - t0,
        "result": result,
    }


def _init_worker() -> None:
    """Pool initializer: one BLAS thread per worker (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the spawn environment already carries *_NUM_THREADS=1
        return
    threadpool_limits(1)


# --------------------------------------------------------------------------- cache
def cache_path(out: Path, name: str) -> Path:
    return Path(out) / f"cache-{name}.jsonl"


def load_cache(path: Path) -> dict:
    """Read a JSON-lines cache; returns {(kind, point, seed): record}. A torn last line is ignored."""
    done: dict[tuple, dict] = {}
    p = Path(path)
    if not p.exists():
        return done
    with p.open() as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # an interrupted write
            done[(rec["kind"], rec["point"], rec["seed"])] = rec
    return done


def _n_trials(exp: Experiment, pt: dict, trials: int, caps: dict | None) -> int:
    """Trials at point ``pt``: ``trials``, or less where ``caps`` {x value: max trials} says so."""
    if not caps:
        return trials
    x = float(_xval(point_fields(pt), exp.x))
    return min(trials, int(caps.get(x, trials)))


def _units(exp: Experiment, trials: int, seed: int, bound_realisations: int, caps=None) -> list:
    units = []
    for pt in exp.points:
        key = point_key(pt)
        for i in range(_n_trials(exp, pt, trials, caps)):
            units.append(
                {
                    "experiment": exp.name,
                    "kind": "trial",
                    "point": pt,
                    "key": key,
                    "seed": trial_seed(seed, i),
                    "schemes": list(exp.schemes),
                }
            )
    groups: dict = {}
    for pt in exp.points if exp.bounds else ():
        groups.setdefault(_group_key(pt), []).append(pt)
    for gkey, pts in groups.items():
        snrs = sorted({p["snr_db"] for p in pts})
        for i in range(min(bound_realisations, trials)):
            units.append(
                {
                    "experiment": exp.name,
                    "kind": "bounds",
                    "point": pts[0],
                    "key": gkey + "|snrs=" + ",".join(f"{x:g}" for x in snrs),
                    "seed": trial_seed(seed, i),
                    "snrs": snrs,
                }
            )
    return units


# --------------------------------------------------------------------------- execution
class _Progress:
    """A plain stderr counter (tqdm is not required)."""

    def __init__(self, name: str, total: int, skipped: int, stream=sys.stderr):
        self.name, self.total, self.done, self.stream = name, total, skipped, stream
        self.t0 = time.time()
        self.new = 0
        self._last = 0.0
        self.show(force=True)

    def step(self):
        self.done += 1
        self.new += 1
        self.show()

    def show(self, force=False):
        now = time.time()
        if not force and now - self._last < 0.5 and self.done < self.total:
            return
        self._last = now
        el = now - self.t0
        rate = self.new / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_s = "?" if not math.isfinite(eta) else f"{eta / 60:.1f} min"
        self.stream.write(f"\r[{self.name}] {self.done}/{self.total} units  {rate:.2f}/s  ETA {eta_s}   ")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _spawn_pool(workers: int):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    saved = {v: os.environ.get(v) for v in _THREAD_VARS}
    for v in _THREAD_VARS:
        os.environ[v] = "1"
    try:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
        # children are spawned lazily; start them now while the environment is set
        list(pool.map(int, range(workers)))
    finally:
        for v, val in saved.items():
            if val is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = val
    return pool


def _execute(units: list, workers: int, scheduler: str | None, sink, progress) -> None:
    """Run units, calling ``sink(record)`` for each as it finishes (in the parent)."""
    if not units:
        return
    if scheduler:
        try:
            from dask.distributed import Client, as_completed
        except ImportError as exc:
            raise RuntimeError(
                f"--scheduler needs dask.distributed: pip install 'nearfield[dask]' (import failed: {exc})"
            ) from exc
        client = Client(scheduler)
        try:
            futs = client.map(_run_unit, units, pure=False)
            for fut in as_completed(futs):
                sink(fut.result())
                progress.step()
        finally:
            client.close()
        return
    if workers <= 1:
        for u in units:
            sink(_run_unit(u))
            progress.step()
        return
    from concurrent.futures import FIRST_COMPLETED, wait

    pool = _spawn_pool(workers)
    try:
        it = iter(units)
        pending = set()
        for u in it:  # keep a bounded queue so an interrupt loses little
            pending.add(pool.submit(_run_unit, u))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                sink(f.result())
                progress.step()
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(_run_unit, nxt))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


# --------------------------------------------------------------------------- summaries
def _trial_from_json(rec: dict, schemes) -> dict:
    t: dict[str, Any] = {
        "crb_theta": np.asarray(rec["crb_theta"], float),
        "crb_range": np.asarray(rec["crb_range"], float),
    }
    for s in schemes:
        r = dict(rec[s])
        r["d_theta"] = np.asarray(r["d_theta"], float)
        r["d_range"] = np.asarray(r["d_range"], float)
        t[s] = r
    return t


def cartesian_rmse(trials: list, scheme: str, pt: dict) -> float:
    """xi_RMSE of Sec. VI-A: sqrt(mean over trials and targets of ||xi_hat - xi||^2), metres."""
    tg = np.asarray(pt["targets"], float)
    th, r = tg[:, 0], tg[:, 1]
    dth = np.array([t[scheme]["d_theta"] for t in trials])
    dr = np.array([t[scheme]["d_range"] for t in trials])
    th_h, r_h = th + dth, r + dr
    err2 = (r_h * np.sin(th_h) - r * np.sin(th)) ** 2 + (r_h * np.cos(th_h) - r * np.cos(th)) ** 2
    return float(np.sqrt(np.mean(err2)))


def _bounds_index(cache: dict) -> dict:
    """{(group key, seed): {"%g" % snr: root bounds}} merged over the cached bounds units.

    A bounds unit's key is the group key (all point parameters but the SNR) followed by
    ``|snrs=`` and the SNRs it covers, so adding SNR points later runs only what is missing.
    """
    idx: dict = {}
    for (kind, key, sd), rec in cache.items():
        if kind == "bounds":
            idx.setdefault((key.split("|snrs=")[0], sd), {}).update(rec["result"])
    return idx


def summarize_experiment(exp: Experiment, cache: dict, trials: int, seed: int, caps=None) -> list:
    """One row per (point, scheme) from the cached units (the CSV rows)."""
    rows = []
    bidx = _bounds_index(cache)
    for pt in exp.points:
        key = point_key(pt)
        cached = [cache.get(("trial", key, trial_seed(seed, i))) for i in range(_n_trials(exp, pt, trials, caps))]
        recs = [r["result"] for r in cached if r is not None]
        if not recs:
            continue
        tr = [_trial_from_json(r, exp.schemes) for r in recs]
        gkey = _group_key(pt)
        bl = []
        for i in range(trials):
            b = bidx.get((gkey, trial_seed(seed, i)), {})
            if "{:g}".format(pt["snr_db"]) in b:
                bl.append(b["{:g}".format(pt["snr_db"])])
        bounds = {}
        for k in _BOUND_KEYS:
            for c in ("angle", "range", "cart"):
                v = [b[f"{k}_{c}"] ** 2 for b in bl]
                bounds[f"r_{k}_{c}"] = float(np.sqrt(np.mean(v))) if v else float("nan")
        pf = point_fields(pt)
        sep = np.deg2rad(pf["separation_deg"]) if np.isfinite(pf["separation_deg"]) else None
        for s in exp.schemes:
            sm = summarize(tr, s, sep)
            nm = [t[s]["nmse"] for t in tr if t[s]["nmse"] is not None]
            row = {
                "experiment": exp.name,
                "snr_db": pt["snr_db"],
                "n_antennas": pt["n_antennas"],
                "p_fault": pt["p_fault"],
                "n_targets": len(pt["targets"]),
                "range_m": pf["range_m"],
                "separation_deg": pf["separation_deg"],
                "pilots": int(pf["pilots"]),
                "rho": pf["rho"],
                "scheme": s,
                "trials": sm["trials"],
                "seed": seed,
                "rmse_theta": sm["rmse_theta"],
                "rmse_range": sm["rmse_range"],
                "rmse_cart": cartesian_rmse(tr, s, pt),
                "rcrb_theta_trials": sm["rcrb_theta"],
                "rcrb_range_trials": sm["rcrb_range"],
                "ratio_theta": sm["ratio_theta"],
                "ratio_range": sm["ratio_range"],
                "gross": sm["gross"],
                "n_gross": sm["n_gross"],
                "failed": sm["n_errors"],
                "rmse_theta_ok": sm["rmse_theta_ok"],
                "rmse_range_ok": sm["rmse_range_ok"],
                "ratio_theta_ok": sm["ratio_theta_ok"],
                "ratio_range_ok": sm["ratio_range_ok"],
                "resolved": sm["resolved"],
                "flagged": sm["flagged"],
                "missed": sm["missed"],
                "false_alarms": sm["false_alarms"],
                "nmse_median": sm["nmse_median"],
                "nmse_mean": float(np.mean(nm)) if nm else float("nan"),
                "time_s": sm["time_s"],
                "bound_realisations": len(bl),
            }
            row.update(bounds)
            rows.append(row)
    return rows


def write_csv(rows: list, path: Path) -> None:
    if not rows:
        return
    with Path(path).open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def markdown_table(exp: Experiment, rows: list) -> str:
    """The CSV rows as a Markdown table (one line per point and scheme), as pasted in docs/results.md.

    Columns: the swept value (and the series), scheme, trials, RMSE and RMSE / R-CRB in angle
    (rad) and range (m) over all trials, the same ratios over the trials that are not gross,
    the resolution probability, and the failed trials: exceptions / gross (exception or error
    above 10 R-CRB).
    """
    head = (
        [exp.x]
        + ([exp.series] if exp.series else [])
        + [
            "scheme",
            "trials",
            "R-CRB θ",
            "R-CRB r",
            "RMSE θ",
            "RMSE r",
            "ratio θ / r",
            "ratio θ / r (not gross)",
            "resolved",
            "exc. / gross",
        ]
    )
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = (
        {v: i for i, v in enumerate(dict.fromkeys(point_fields(p)[exp.series] for p in exp.points))}
        if exp.series
        else {}
    )
    key = (lambda r: (order.get(r[exp.series], 0), r[exp.x])) if exp.series else (lambda r: r[exp.x])
    for r in sorted(rows, key=key):
        lead = [f"{_xval(r, exp.x):g}"]
        if exp.series:
            lead.append(_series_tag(exp.series, r[exp.series]).lstrip(", "))
        ok = "—" if r["n_gross"] == r["trials"] else f"{r['ratio_theta_ok']:.3g} / {r['ratio_range_ok']:.3g}"
        res = "—" if not np.isfinite(r["resolved"]) else f"{r['resolved']:.2f}"
        out.append(
            "| "
            + " | ".join(
                lead
                + [
                    r["scheme"],
                    str(r["trials"]),
                    f"{r['rcrb_theta_trials']:.2e}",
                    f"{r['rcrb_range_trials']:.2e}",
                    f"{r['rmse_theta']:.2e}",
                    f"{r['rmse_range']:.2e}",
                    f"{r['ratio_theta']:.3g} / {r['ratio_range']:.3g}",
                    ok,
                    res,
                    f"{r['failed']} / {r['n_gross']}",
                ]
            )
            + " |"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- figures
_STYLE = {
    "proposed": ("C3", "o", "-", "Proposed"),
    "paper": ("C1", "s", "-", "Proposed, no ML refinement"),
    "coarse": ("C2", "^", "-", "Coarse localization"),
    "bcd": ("C0", "v", "-", "BCD-based"),
    "music2d": ("C4", "D", "-", "2-D MUSIC (uncalibrated)"),
}
_BSTYLE = {
    "crb": ("k", "-", "R-CRB"),
    "lb": ("k", "--", "R-LB"),
    "mcrb": ("0.5", ":", "R-MCRB"),
    "bias": ("0.5", "-.", "R-bias"),
}
_XLABEL = {
    "snr_db": "SNR (dB)",
    "n_antennas": "number of antennas N",
    "range_m": "target range r (m)",
    "p_fault": "fault probability p_fault (%)",
    "separation_deg": "angular separation (deg)",
    "rho": "waveform correlation coefficient rho",
}
_PANEL = {
    "theta": ("rmse_theta", "angle", "angle RMSE (rad)"),
    "range": ("rmse_range", "range", "range RMSE (m)"),
    "cart": ("rmse_cart", "cart", "localization RMSE (m)"),
    "nmse": ("nmse_mean", None, "HI-vector NMSE"),
    "resolved": ("resolved", None, "resolution probability"),
}
_TRIAL_CRB = {"angle": "rcrb_theta_trials", "range": "rcrb_range_trials"}  # experiments without bounds units


def _series_tag(series: str | None, v) -> str:
    if v is None:
        return ""
    if series == "p_fault":
        return f", p={100 * v:g} %"
    if series == "pilots":
        return ", pilots" if v else ", blind"
    return f", {v:g} dB"


def _xval(row, x):
    v = row[x]
    return 100 * v if x == "p_fault" else v


def plot_experiment(exp: Experiment, rows: list, path: Path, trials: int, caps: dict | None = None) -> None:
    """The figure in the paper's style: log y, schemes as markers+lines, bounds as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = exp.metrics
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    series_vals = sorted({r[exp.series] for r in rows}) if exp.series else [None]
    dashes = ["-", "--", ":"]
    for ax, metric in zip(axes[0], panels):
        col, bname, ylabel = _PANEL[metric]
        for si, sv in enumerate(series_vals):
            sub = [r for r in rows if exp.series is None or r[exp.series] == sv]
            tag = _series_tag(exp.series, sv)
            for s in exp.schemes:
                rs = sorted((r for r in sub if r["scheme"] == s), key=lambda r: r[exp.x])
                if not rs:
                    continue
                c, m, _, lab = _STYLE[s]
                ax.plot(
                    [_xval(r, exp.x) for r in rs],
                    [r[col] for r in rs],
                    color=c,
                    marker=m,
                    ls=dashes[si % 3],
                    label=lab + tag,
                    mfc="none" if si else c,
                    ms=5,
                )
            if bname and not exp.bounds:
                rs = sorted((r for r in sub if r["scheme"] == exp.schemes[0]), key=lambda r: r[exp.x])
                if bname in _TRIAL_CRB:
                    ax.plot(
                        [_xval(r, exp.x) for r in rs],
                        [r[_TRIAL_CRB[bname]] for r in rs],
                        color=("k", "0.45", "0.7")[si % 3],
                        ls="-",
                        lw=1.2,
                        label="R-CRB" + tag,
                    )
            elif bname:
                rs = sorted((r for r in sub if r["scheme"] == exp.schemes[0]), key=lambda r: r[exp.x])
                keys = _BOUND_KEYS if exp.series is None else ("crb", "lb")
                for k in keys:
                    y = [r[f"r_{k}_{bname}"] for r in rs]
                    if not np.all(np.isfinite(y)):
                        continue
                    c, ls, lab = _BSTYLE[k]
                    if exp.series is not None:  # one grey level per series, line style per bound
                        c = ("k", "0.45", "0.7")[si % 3]
                    ax.plot([_xval(r, exp.x) for r in rs], y, color=c, ls=ls, lw=1.2, label=lab + tag)
        if metric == "resolved":
            ax.set_ylim(-0.03, 1.03)
        else:
            ax.set_yscale("log")
        if exp.x == "n_antennas":
            ax.set_xscale("log", base=2)
        ax.set_xlabel(_XLABEL[exp.x])
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=6.5, loc="best", ncol=1 if len(exp.schemes) < 4 else 2)
    capped = "".join(f", {n} at {x:g}" for x, n in sorted((caps or {}).items()) if n < trials)
    title = f"{exp.figure}: {exp.description}, {trials} trials/point{capped}"
    fig.suptitle("\n".join(textwrap.wrap(title, 60 * len(panels))), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- driver
def run_experiment(
    name: str,
    trials: int | None = None,
    seed: int = 1,
    workers: int | None = None,
    out="results",
    scheduler: str | None = None,
    resume: bool = False,
    bound_realisations: int = 10,
    n_antennas: int | None = None,
    points=None,
    progress_stream=None,
    plot: bool = True,
    caps: dict | None = None,
) -> list:
    """Run (or resume) experiment ``name``; writes the cache, ``NAME.csv`` and ``NAME.png``.

    ``n_antennas`` replaces N in every point (``antennas`` sweeps N/2 and N instead), for quick
    runs and tests; ``points`` keeps only the points whose x value is in that list; ``caps``
    ({x value: n}) runs at most n trials at the points with that x value (slow points).
    ``progress_stream`` (default ``sys.stderr``) receives the progress line.  Returns the CSV rows.
    """
    progress_stream = sys.stderr if progress_stream is None else progress_stream
    exps = _make_experiments(n_antennas) if n_antennas else EXPERIMENTS
    if name not in exps:
        raise KeyError(name)
    exp = exps[name]
    if points is not None:
        want = {float(p) for p in points}
        keep = [p for p in exp.points if float(_xval(point_fields(p), exp.x)) in want]
        if not keep:
            raise ValueError(f"--points {list(points)}: none of them is an x value of {name!r}")
        exp = Experiment(**{**exp.__dict__, "points": keep})
    trials = exp.default_trials if trials is None else int(trials)
    if trials < 1:
        raise ValueError(f"--trials: expected a positive integer, got {trials}")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cpath = cache_path(out, exp.name)
    if not resume and cpath.exists():
        cpath.unlink()
    cache = load_cache(cpath)
    units = _units(exp, trials, seed, bound_realisations, caps)
    have = _bounds_index(cache)

    def finished(u):
        if u["kind"] == "bounds":  # any cached units of this realisation covering every SNR
            got = have.get((u["key"].split("|snrs=")[0], u["seed"]), {})
            return all(f"{x:g}" in got for x in u["snrs"])
        return (u["kind"], u["key"], u["seed"]) in cache

    todo = [u for u in units if not finished(u)]
    progress = _Progress(exp.name, len(units), len(units) - len(todo), progress_stream)
    with cpath.open("a") as fh:

        def sink(rec):
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            cache[(rec["kind"], rec["point"], rec["seed"])] = rec

        _execute(todo, workers, scheduler, sink, progress)
    rows = summarize_experiment(exp, cache, trials, seed, caps)
    write_csv(rows, out / f"{exp.name}.csv")
    if plot:
        plot_experiment(exp, rows, out / f"{exp.name}.png", trials, caps)
    return rows


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(EXPERIMENTS)
    ap = argparse.ArgumentParser(
        prog="nearfield experiment",
        description="Reproduce a numerical result of Sec. VI. Experiments: "
        + "; ".join(f"{e.name} ({e.figure}: {e.description})" for e in EXPERIMENTS.values()),
    )
    ap.add_argument("name", metavar="NAME", help=f"one of: {names}")
    ap.add_argument(
        "--trials",
        type=int,
        default=None,
        help="Monte Carlo trials per point (default: per experiment, minutes here; the paper used 500)",
    )
    ap.add_argument("--seed", type=int, default=1, help="base seed; trial i uses SEED*1000000+i (default 1)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: every core)")
    ap.add_argument("--out", default="results", help="output directory (default ./results)")
    ap.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="run on a Dask cluster at ADDRESS (needs nearfield[dask])"
    )
    ap.add_argument("--resume", action="store_true", help="reuse OUT/cache-NAME.jsonl and run only the missing trials")
    ap.add_argument(
        "--bound-realisations",
        type=int,
        default=10,
        help="realisations averaged for the bounds of each point (default 10)",
    )
    ap.add_argument(
        "--antennas",
        type=int,
        default=None,
        dest="n_antennas",
        help="override N in every point (antennas: sweep N/2 and N) for quick runs",
    )
    ap.add_argument(
        "--points",
        type=float,
        nargs="+",
        default=None,
        help="only these x values (SNR dB, N, range m, or p_fault in %%)",
    )
    ap.add_argument(
        "--cap",
        nargs="+",
        default=None,
        metavar="X=N",
        help="at most N trials at the points with x value X (e.g. 1024=50 for slow points)",
    )
    ap.add_argument("--no-plot", action="store_true", help="write the CSV only")
    ap.add_argument("--markdown", action="store_true", help="also print the results as a Markdown table")
    return ap


def main(argv=None) -> int:
    """``nearfield experiment ...``; returns the exit code (0 ok, 2 usage error, 1 failure)."""
    ap = _parser()
    try:
        args = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.name not in EXPERIMENTS:
        print(
            f"nearfield experiment: unknown experiment {args.name!r}; expected one of: " + ", ".join(EXPERIMENTS),
            file=sys.stderr,
        )
        return 2
    if args.workers is not None and args.workers < 1:
        print(f"nearfield experiment: --workers: expected a positive integer, got {args.workers}", file=sys.stderr)
        return 2
    if args.n_antennas is not None and args.n_antennas < 16:
        print(f"nearfield experiment: --antennas: expected at least 16, got {args.n_antennas}", file=sys.stderr)
        return 2
    caps = {}
    for item in args.cap or []:
        try:
            x, n = item.split("=")
            caps[float(x)] = int(n)
        except ValueError:
            print(f"nearfield experiment: --cap: expected X=N (e.g. 1024=50), got {item!r}", file=sys.stderr)
            return 2
    t0 = time.time()
    try:
        rows = run_experiment(
            args.name,
            args.trials,
            args.seed,
            args.workers,
            args.out,
            args.scheduler,
            args.resume,
            args.bound_realisations,
            args.n_antennas,
            args.points,
            plot=not args.no_plot,
            caps=caps or None,
        )
    except ValueError as exc:
        print(f"nearfield experiment: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"nearfield experiment: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nnearfield experiment: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    out = Path(args.out)
    if args.markdown:
        exp = (_make_experiments(args.n_antennas) if args.n_antennas else EXPERIMENTS)[args.name]
        print(markdown_table(exp, rows))
    print(
        f"{args.name}: {len(rows)} rows -> {out / (args.name + '.csv')}, {out / (args.name + '.png')} "
        f"({time.time() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
