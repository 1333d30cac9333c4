"""Plot sink: one PNG per plotted frame -- spectra, estimates, truth and a top view.

Each picture (``figsize`` inches at ``dpi``, so ``figsize * dpi`` pixels) has four panels:

* **Angle MUSIC spectrum** (arrays ``angle_grid`` (G,) rad and ``angle_spectrum`` (G,),
  linear, max 1), drawn in dB against the angle in degrees from broadside; the union of
  search windows is drawn window by window (no line across the gaps).  Each estimate
  (``meta["targets"]``) is a coloured vertical line, each true angle a black triangle.
* **Range MUSIC spectra**, one curve per target (``range_grid`` (K, Gr) m,
  ``range_spectrum`` (K, Gr)), logarithmic range axis, the estimate's range as a coloured
  line and the true range as a triangle.  A row is matched to the estimate nearest its
  peak (the localizer orders rows by its coarse positions, not by theta).
* **Top view** in metres: the array on the y-axis (antenna n at ``y = l_n``), rays every
  30 degrees and range rings, the Fresnel distance, true targets (hollow circles), coarse
  positions (grey diamonds, ``meta["coarse"]``), estimates (coloured crosses, labelled with
  theta in degrees and r in metres) and the error segment from each estimate to its truth.
* **Antennas**: the true faulty antennas (``meta["truth"]["faulty"]``) and the detected ones
  (``meta["faulty"]``) on the antenna index axis, hits, misses and false alarms coloured.

A panel whose data the frame lacks says so, so the picture keeps its layout and size.
Colours follow the estimates sorted by theta, the same in every panel.

``every = k`` plots the 1st, (k+1)-th, (2k+1)-th, ... valid frame received; ``every = 0``
plots only the last frame, at the end of the stream.  Files are
``{directory}/{prefix}{seq:06d}.png``.

matplotlib is an optional dependency (``pip install 'nearfield[plot]'``): it is imported in
the worker by :meth:`PlotSink.start`, with the non-interactive Agg canvas and no pyplot
state.  A frame whose plotted fields are malformed (a target without a finite theta or a
positive range, spectrum arrays of mismatched shapes or non-finite values, no array
geometry) raises :class:`~nearfield.block.BadFrame` naming the field: it is dropped and
counted by the runtime, and no picture is written for it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import numpy as np

from nearfield.array import ULA
from nearfield.block import BadFrame, Param, ParamError, Sink, positive
from nearfield.contract import ARRAY, COARSE, FAULTY, SPECTRA, TARGETS, TRUTH, optional
from nearfield.frame import Frame

__all__ = ["PlotSink", "plot_frame", "PlotData"]

log = logging.getLogger(__name__)

_DB_FLOOR = -40.0
_TRUTH_C = "black"
_FAULT_C = {"hit": "#2ca02c", "miss": "#d62728", "false": "#ff7f0e"}


class PlotData:
    """The validated fields of a frame that a picture needs (small copies, no snapshots).

    Raises :class:`BadFrame` naming the field when one is malformed.
    """

    def __init__(self, frame: Frame):
        meta = frame.meta or {}
        self.seq = int(frame.seq)
        self.t0 = float(frame.t0)
        if "array" not in meta:
            raise BadFrame("meta field 'array' is missing (expected the array geometry, ULA.describe())")
        try:
            self.array = ULA.from_meta(meta["array"])
        except (ValueError, TypeError) as exc:
            raise BadFrame(f"meta field 'array': {exc}") from None
        self.targets = self._targets(meta.get("targets"), "meta['targets']")
        self.coarse = self._targets(meta.get("coarse"), "meta['coarse']")
        truth = meta.get("truth") or {}
        if not isinstance(truth, dict):
            raise BadFrame(f"meta field 'truth': expected a mapping, got {type(truth).__name__}")
        self.truth = self._targets(truth.get("targets"), "meta['truth']['targets']")
        self.faulty = self._indices(meta.get("faulty"), "meta['faulty']")
        self.true_faulty = self._indices(truth.get("faulty"), "meta['truth']['faulty']")
        self.has_truth_faulty = "faulty" in truth
        self.has_faulty = "faulty" in meta
        arrays = frame.arrays or {}
        self.angle = self._pair(arrays, "angle_grid", "angle_spectrum", ndim=1)
        self.range = self._pair(arrays, "range_grid", "range_spectrum", ndim=2)

    @staticmethod
    def _targets(items, where):
        if items is None:
            return np.zeros((0, 2))
        if not isinstance(items, (list, tuple)):
            raise BadFrame(f"{where}: expected a list of {{theta, range}}, got {type(items).__name__}")
        out = []
        for i, t in enumerate(items):
            try:
                th, r = float(t["theta"]), float(t["range"])
            except (KeyError, TypeError, ValueError):
                raise BadFrame(f"{where}[{i}]: expected {{theta: rad, range: m}}, got {t!r}") from None
            if not (math.isfinite(th) and abs(th) <= math.pi / 2 + 1e-9 and math.isfinite(r) and r > 0):
                raise BadFrame(
                    f"{where}[{i}]: expected |theta| <= pi/2 rad and range > 0 m, got theta={th!r}, range={r!r}"
                )
            out.append((th, r))
        return np.array(out, dtype=float).reshape(-1, 2)

    def _indices(self, items, where):
        if items is None:
            return np.zeros(0, dtype=int)
        try:
            idx = np.asarray(items, dtype=float).ravel()
        except (TypeError, ValueError):
            raise BadFrame(f"{where}: expected a list of antenna indices, got {items!r}") from None
        n = self.array.n_antennas
        if idx.size and (
            not np.all(np.isfinite(idx)) or np.any(idx != np.round(idx)) or idx.min() < 0 or idx.max() >= n
        ):
            raise BadFrame(f"{where}: expected 0-based antenna indices in [0, {n - 1}], got {items!r}")
        return idx.astype(int)

    @staticmethod
    def _pair(arrays, gname, sname, ndim):
        g, s = arrays.get(gname), arrays.get(sname)
        if g is None and s is None:
            return None
        if g is None or s is None:
            have, miss = (gname, sname) if s is None else (sname, gname)
            raise BadFrame(f"array {have!r} is present but {miss!r} is missing")
        g, s = np.asarray(g, dtype=float), np.asarray(s, dtype=float)
        if g.ndim != ndim or g.shape != s.shape:
            want = "(G,)" if ndim == 1 else "(K, G)"
            raise BadFrame(f"arrays {gname!r} {g.shape} and {sname!r} {s.shape}: expected the same shape {want}")
        if not (np.all(np.isfinite(g)) and np.all(np.isfinite(s))):
            raise BadFrame(f"arrays {gname!r}/{sname!r}: non-finite values")
        if g.size == 0:
            return None
        return g.copy(), s.copy()


def _match(cost: np.ndarray):
    """Pairs (row, col) minimising the total cost (rectangular allowed)."""
    from scipy.optimize import linear_sum_assignment

    if cost.size == 0:
        return []
    rows, cols = linear_sum_assignment(cost)
    return list(zip(rows.tolist(), cols.tolist()))


def _xy(tr: np.ndarray):
    """(theta, r) rows -> x (broadside), y (along the array), metres."""
    return tr[:, 1] * np.cos(tr[:, 0]), tr[:, 1] * np.sin(tr[:, 0])


def _db(s: np.ndarray) -> np.ndarray:
    peak = s.max() if s.size and s.max() > 0 else 1.0
    return np.maximum(10.0 * np.log10(np.maximum(s / peak, 1e-30)), _DB_FLOOR)


def _segments(grid: np.ndarray):
    """Split a sorted grid into runs without gaps (a gap: a step > 3 x the median step)."""
    if grid.size < 3:
        return [slice(0, grid.size)]
    step = np.diff(grid)
    med = np.median(step[step > 0]) if np.any(step > 0) else 0.0
    cuts = np.flatnonzero(step > 3.0 * med) + 1 if med > 0 else np.zeros(0, int)
    edges = [0, *cuts.tolist(), grid.size]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _note(ax, text):
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_frame(data: PlotData, path, figsize=(12.0, 6.75), dpi: int = 100) -> None:
    """Draw the picture of one frame into a PNG file (see the module docstring)."""
    from matplotlib import cm
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    est, truth = data.targets, data.truth
    colours = [cm.tab10(i % 10) for i in range(len(est))]
    # estimate j <-> truth i by position in the plane
    pairs = []
    if len(est) and len(truth):
        ex, ey = _xy(est)
        tx, ty = _xy(truth)
        pairs = _match(np.hypot(ex[:, None] - tx[None, :], ey[:, None] - ty[None, :]))
    truth_of = dict(pairs)

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    gs = fig.add_gridspec(3, 2, height_ratios=[3.0, 3.0, 1.1], width_ratios=[1.15, 1.0])
    ax_a = fig.add_subplot(gs[0, 0])
    ax_r = fig.add_subplot(gs[1, 0])
    ax_f = fig.add_subplot(gs[2, 0])
    ax_t = fig.add_subplot(gs[:, 1])

    arr = data.array
    title = (
        f"frame {data.seq}   t0 = {data.t0:.3f} s   N = {arr.n_antennas}, "
        f"f = {arr.carrier_hz / 1e9:.3g} GHz, aperture {arr.aperture:.3g} m   "
        f"{len(est)} estimate(s)"
    )
    if pairs:
        dth = max(abs(np.degrees(est[j, 0] - truth[i, 0])) for j, i in pairs)
        dr = max(abs(est[j, 1] - truth[i, 1]) for j, i in pairs)
        title += f"   worst error {dth:.3g}°, {dr:.3g} m"
    fig.suptitle(title, fontsize=11)

    # -- angle spectrum: one zoomed sub-panel per search window --------------------------
    if data.angle is not None:
        g, sp = data.angle
        order = np.argsort(g)
        g, sp = np.degrees(g[order]), _db(sp[order])
        segs = _segments(g)
        if len(segs) > 6:  # too many windows to zoom: one axis
            segs = [slice(0, g.size)]
        ax_a.remove()
        sub = gs[0, 0].subgridspec(1, len(segs), wspace=0.08)
        axes = [fig.add_subplot(sub[0, i]) for i in range(len(segs))]
        for i, (ax, sl) in enumerate(zip(axes, segs)):
            lo, hi = g[sl][0], g[sl][-1]
            if len(segs) > 1:
                ax.plot(g[sl], sp[sl], color="0.2", lw=1.2)
            else:
                for sl2 in _segments(g):
                    ax.plot(g[sl2], sp[sl2], color="0.2", lw=1.2)
            ax.set_xlim(lo, hi)
            ax.set_ylim(_DB_FLOOR - 2, 3)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(3))
            if i:
                ax.tick_params(labelleft=False)
            for j, (th, _) in enumerate(est):
                if lo <= np.degrees(th) <= hi:
                    ax.axvline(np.degrees(th), color=colours[j], lw=1.5, ls="--")
            for th, _ in truth:
                if lo <= np.degrees(th) <= hi:
                    ax.plot(np.degrees(th), 1.5, marker="v", color=_TRUTH_C, ms=7, clip_on=False)
        axes[0].set_ylabel("spectrum (dB)")
        axes[0].set_title(
            "angle MUSIC spectrum" + (" (each search window)" if len(segs) > 1 else ""), fontsize=10, loc="left"
        )
        axes[len(axes) // 2].set_xlabel("θ (degrees from broadside)")
    else:
        ax_a.set_title("angle MUSIC spectrum", fontsize=10, loc="left")
        _note(
            ax_a, "no angle spectrum in this frame\n(arrays angle_grid / angle_spectrum come from the music_localizer)"
        )

    # -- range spectra --------------------------------------------------------------
    ax_r.set_title("range MUSIC spectra (one per target)", fontsize=10, loc="left")
    if data.range is not None:
        G, S = data.range
        rows = []
        for k in range(G.shape[0]):
            o = np.argsort(G[k])
            rows.append((G[k][o], _db(S[k][o])))
        row_est = {}
        if len(est):
            peaks = np.array([rg[np.argmax(rs)] for rg, rs in rows])
            cost = np.abs(np.log(peaks[:, None]) - np.log(est[None, :, 1]))
            row_est = dict(_match(cost))
        for k, (rg, rs) in enumerate(rows):
            je = row_est.get(k)  # the estimate this row belongs to, if any
            c = colours[je] if je is not None else "0.5"
            label = f"θ = {np.degrees(est[je, 0]):.1f}°" if je is not None else f"row {k}"
            ax_r.plot(rg, rs, color=c, lw=1.2, label=label)
            if je is not None:
                ax_r.axvline(est[je, 1], color=c, lw=1.5, ls="--")
                it = truth_of.get(je)
                if it is not None:
                    ax_r.plot(truth[it, 1], 1.5, marker="v", color=c, mec=_TRUTH_C, ms=7, clip_on=False)
        ax_r.set_xscale("log")
        ax_r.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax_r.xaxis.set_minor_locator(LogLocator(subs=[float(m) for m in range(1, 10)]))
        ax_r.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax_r.xaxis.set_minor_formatter(NullFormatter())
        ax_r.set_ylim(_DB_FLOOR - 2, 3)
        ax_r.set_xlabel("range r (m)")
        ax_r.set_ylabel("spectrum (dB)")
        ax_r.grid(alpha=0.3, which="both")
        ax_r.legend(fontsize=8, loc="best")
    else:
        _note(
            ax_r, "no range spectra in this frame\n(arrays range_grid / range_spectrum come from the music_localizer)"
        )

    # -- antennas -------------------------------------------------------------------
    n = arr.n_antennas
    ax_f.set_title("faulty antennas", fontsize=10, loc="left")
    ax_f.set_xlim(-0.5, n - 0.5)
    ax_f.set_ylim(0, 1)
    ax_f.set_yticks([])
    ax_f.set_xlabel("antenna index n (0-based)")
    if data.has_faulty or data.has_truth_faulty:
        det, tru = set(data.faulty.tolist()), set(data.true_faulty.tolist())
        if data.has_truth_faulty and data.has_faulty:
            groups = {"hit": det & tru, "miss": tru - det, "false": det - tru}
            names = {"hit": "detected", "miss": "missed", "false": "false alarm"}
        elif data.has_faulty:
            groups, names = {"hit": det}, {"hit": "detected"}
        else:
            groups, names = {"miss": tru}, {"miss": "true (no detection in frame)"}
        handles = []
        for key, idx in groups.items():
            if idx:
                ax_f.vlines(sorted(idx), 0.1, 0.9, color=_FAULT_C[key], lw=2)
            handles.append(Line2D([], [], color=_FAULT_C[key], lw=2, label=f"{names[key]} ({len(idx)})"))
        ax_f.legend(handles=handles, fontsize=8, loc="upper center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 1.45))
    else:
        ax_f.text(
            0.5,
            0.5,
            "no fault information in this frame",
            transform=ax_f.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            color="0.35",
        )

    # -- top view -------------------------------------------------------------------
    ax_t.set_title("top view", fontsize=10, loc="left")
    pts = [p for p in (est, truth, data.coarse) if len(p)]
    r_max = max([float(np.max(p[:, 1])) for p in pts] + [arr.fresnel_distance, 2.0 * arr.aperture])
    lim = 1.15 * r_max
    for deg in range(-90, 91, 30):
        a = np.radians(deg)
        ax_t.plot([0, lim * np.cos(a)], [0, lim * np.sin(a)], color="0.88", lw=0.8, zorder=0)
        if abs(deg) < 90:
            ax_t.text(
                1.03 * lim * np.cos(a),
                1.03 * lim * np.sin(a),
                f"{deg:+d}°" if deg else "0°",
                fontsize=8,
                color="0.45",
                ha="left" if deg >= -60 else "center",
                va="center",
            )
    phi = np.linspace(-np.pi / 2, np.pi / 2, 181)
    ring_step = _nice_step(r_max)
    for rr in np.arange(ring_step, lim, ring_step):
        ax_t.plot(rr * np.cos(phi), rr * np.sin(phi), color="0.88", lw=0.8, zorder=0)
        ax_t.text(
            rr * np.cos(np.radians(-80)),
            rr * np.sin(np.radians(-80)),
            f"{rr:g} m",
            fontsize=7,
            color="0.5",
            ha="center",
            va="top",
        )
    zf = arr.fresnel_distance
    ax_t.plot(zf * np.cos(phi), zf * np.sin(phi), color="tab:purple", lw=1, ls=":", zorder=1)
    ax_t.text(
        zf * np.cos(np.radians(60)),
        zf * np.sin(np.radians(60)),
        f" Fresnel {zf:.3g} m",
        fontsize=7,
        color="tab:purple",
        ha="left",
        va="bottom",
    )
    # the array (its faulty antennas are in the antenna panel)
    pos = arr.positions
    ax_t.plot(np.zeros_like(pos), pos, color="0.2", lw=3, solid_capstyle="butt", zorder=2)
    legend = [Line2D([], [], color="0.2", lw=3, label=f"array ({arr.aperture:.3g} m)")]
    if len(truth):
        tx, ty = _xy(truth)
        ax_t.plot(tx, ty, "o", mfc="none", mec=_TRUTH_C, ms=11, mew=1.5, zorder=4)
        legend.append(Line2D([], [], marker="o", ls="", mfc="none", mec=_TRUTH_C, ms=9, label="true"))
    if len(data.coarse):
        cx, cy = _xy(data.coarse)
        ax_t.plot(cx, cy, "D", color="0.6", ms=5, zorder=3)
        legend.append(Line2D([], [], marker="D", ls="", color="0.6", ms=5, label="coarse"))
    if len(est):
        ex, ey = _xy(est)
        for j in range(len(est)):
            it = truth_of.get(j)
            if it is not None:
                ax_t.plot([ex[j], tx[it]], [ey[j], ty[it]], color=colours[j], lw=1, zorder=4)
            ax_t.plot(ex[j], ey[j], "x", color=colours[j], ms=10, mew=2.5, zorder=5)
            ax_t.annotate(
                f"θ {np.degrees(est[j, 0]):+.2f}°\nr {est[j, 1]:.2f} m",
                (ex[j], ey[j]),
                xytext=(8, 6),
                textcoords="offset points",
                fontsize=8,
                color=colours[j],
                zorder=6,
            )
        legend.append(Line2D([], [], marker="x", ls="", color="0.2", ms=8, mew=2, label="estimate"))
    elif not len(truth):
        ax_t.text(
            0.5,
            0.5,
            "no targets in this frame",
            transform=ax_t.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            color="0.35",
        )
    ax_t.set_xlim(-0.06 * lim, 1.12 * lim)
    ax_t.set_ylim(-1.05 * lim, 1.05 * lim)
    ax_t.set_aspect("equal")
    ax_t.set_xlabel("x: distance along broadside (m)")
    ax_t.set_ylabel("y: along the array (m)")
    ax_t.legend(handles=legend, fontsize=8, loc="lower right")
    fig.savefig(path, dpi=dpi, format="png")


def _nice_step(r_max: float) -> float:
    """A 1-2-5 ring spacing giving 3 to 6 rings up to r_max."""
    raw = r_max / 4.0
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if raw <= m * mag:
            return m * mag
    return 10.0 * mag


def _check_figsize(value) -> str | None:
    if len(value) != 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 1 <= v <= 50 for v in value
    ):
        return "[width, height] in inches, each between 1 and 50"
    return None


class PlotSink(Sink):
    """PNG pictures of spectra, estimates, truth and a top view, every k frames or at the end."""

    reads = (optional(ARRAY), optional(TARGETS), optional(COARSE), optional(FAULTY), TRUTH) + SPECTRA
    params = (
        Param("directory", str, doc="output directory for the PNG files (created if missing)"),
        Param(
            "every",
            int,
            0,
            "plot every k-th frame (0 = only the last frame, at the end)",
            check=lambda v: None if v >= 0 else "an integer >= 0",
        ),
        Param("dpi", int, 100, "resolution, dots per inch", check=positive),
        Param("figsize", list, [12.0, 6.75], "[width, height] in inches", check=_check_figsize),
        Param("prefix", str, "frame_", "file name prefix: {prefix}{seq:06d}.png"),
    )

    def validate(self) -> None:
        if not self.directory.strip():
            raise self.param_error("directory", "expected a directory path, got an empty string")
        if self.dpi * max(self.figsize) > 20000:
            raise self.param_error("dpi", f"{self.dpi} dpi x {max(self.figsize)} in exceeds 20000 pixels")
        if importlib.util.find_spec("matplotlib") is None:
            raise ParamError(
                f"block {self.name!r}: the plot sink needs matplotlib, which is not "
                "installed (pip install 'nearfield[plot]')"
            )
        self.written: list[str] = []
        self._count = 0
        self._last: PlotData | None = None

    def start(self) -> None:
        import matplotlib  # noqa: F401  (fail here, in the worker, if it vanished)

        path = Path(self.directory)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ParamError(
                f"block {self.name!r}, parameter 'directory': cannot create {str(path)!r}: {exc.strerror or exc}"
            ) from None
        if not path.is_dir():
            raise ParamError(f"block {self.name!r}, parameter 'directory': {str(path)!r} is not a directory")
        self._dir = path

    def _write(self, data: PlotData) -> None:
        out = self._dir / f"{self.prefix}{data.seq:06d}.png"
        plot_frame(data, out, figsize=tuple(float(v) for v in self.figsize), dpi=self.dpi)
        self.written.append(str(out))

    def process(self, frame: Frame) -> None:
        if not hasattr(self, "_dir"):
            self.start()
        data = PlotData(frame)  # every frame is checked: a bad one is dropped
        k = self._count
        self._count += 1
        if self.every == 0:
            self._last = data
        elif k % self.every == 0:
            self._write(data)
        return None

    def finish(self):
        if self.every == 0 and self._last is not None:
            self._write(self._last)
            self._last = None
        if self.written:
            log.info("plot %r: %d picture(s) in %s", self.name, len(self.written), self._dir)
        return None
