"""SigMF source: replay an N-channel SigMF recording (or Collection) as frames.

Two layouts are read:

* **one Recording** whose Dataset interleaves the N antennas (``core:num_channels`` = N;
  sample t holds N values), datatype ``cf32_le``, ``ci16_le`` (scaled by 2^-15, as the
  ``sigmf`` library's autoscale does) or ``cf64_le``;
* **a Collection** (``.sigmf-collection``) of N single-channel Recordings, channel order
  from each Recording's ``spatial:channel_index`` (else the ``core:streams`` order).

The Dataset is memory-mapped (``numpy.memmap``): a frame reads only its T samples, never
the whole file.  ``verify: true`` checks ``core:sha512`` first (this reads the whole file).

Geometry and carrier (required; a missing one is an error naming file and field):

* ``spatial:element_geometry`` (``cartesian_point`` objects, in a capture segment, or in
  the collection) must be a uniform linear array along y, centred on the origin, with y
  increasing with the channel index -- the array of :class:`nearfield.array.ULA`; its
  length must equal ``core:num_channels`` (or the number of streams), and
  ``spatial:num_elements`` must agree when present;
* ``core:frequency`` of the capture(s) is the carrier (every capture must agree);
* ``nearfield:array`` (optional) gives the exact :meth:`ULA.describe` dict (e.g. a
  rounded wavelength); it must agree with the two fields above.

Others' recordings are mapped, not refused (each mapping is logged):

* ``carrier_hz`` / ``spacing`` supply the carrier / element spacing when the metadata
  lacks them, and override them when set (the geometry may then be absent: a ULA of
  ``core:num_channels`` elements is assumed);
* an element geometry along x instead of y (``array_axis``, else detected), in another
  channel order (elements sorted along the axis) or off-centre (re-centred) is mapped to
  the nominal ULA; ``channel_order`` (a list, antenna n = recorded channel
  ``channel_order[n]``, or ``"reversed"``) overrides the order;
* ``spatial:emitter_bearing`` of an array along x is converted with
  ``theta = asin(cos(azimuth))``.

Without these parameters a recording in today's layout is read exactly as before.

Frames: when the recording carries ``nearfield`` frame annotations (written by
:class:`nearfield.sinks.sigmf_writer.SigMFWriter`) and ``snapshots`` is null, the recorded
frames are replayed exactly (same ``seq``, ``t0``, snapshots bit for bit, pilots, truth).
Otherwise the samples are cut into frames of ``snapshots`` (default 100) from
``start_sample``; ``seq`` counts frames from 0 and ``t0`` = first sample / ``core:sample_rate``
(the frame index when the rate is unknown); a last partial frame is dropped.

Ground truth (``meta["truth"]``): ``nearfield:truth`` of the frame annotation containing
the frame's first sample; else ``spatial:emitter_bearing`` of the capture (with its
``range``; theta = -azimuth, see :func:`target_from_bearing`).  Pilots come from the
sidecar dataset named by ``nearfield:pilots_dataset`` (sample-aligned, K channels).
``nearfield:calibration`` (N complex factors ``[re, im]``) multiplies channel n when
``apply_calibration`` is true.  See ``docs/sigmf.md``.

A recording whose writer crashed has ``nearfield:valid_samples`` < the file's samples:
only the valid part is replayed (a warning is logged).
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sigmf import hashing
from sigmf.sigmffile import dtype_info, get_sigmf_filenames

from ..array import ULA
from ..block import Param, ParamError, Source, idle_until, non_negative, positive
from ..contract import ARRAY, PILOTS, SAMPLE_RATE, SNAPSHOTS, TRUTH
from ..frame import Frame

log = logging.getLogger(__name__)

#: Supported ``core:datatype`` values and the memmap dtype of one complex sample component.
SUPPORTED_DATATYPES = ("cf32_le", "ci16_le", "cf64_le")
_CI16_SCALE = np.float32(2.0**-15)


#: Largest .sigmf-meta / .sigmf-collection file read (bytes); metadata is small, data is not in it.
MAX_META_BYTES = 64 << 20


class SigMFFormatError(ParamError):
    """A SigMF recording that cannot be replayed; the message names file and field."""


def target_from_bearing(bearing: dict, axis: str = "y") -> dict | None:
    """``{"theta", "range"}`` of a ``spatial`` bearing object, or None without a range.

    The spatial azimuth is in degrees, clockwise from the boresight (+x) seen from +z,
    i.e. towards -y; our theta (rad) is positive towards +y: theta = -radians(azimuth),
    with the azimuth wrapped to (-180, 180].  For an array along x (``axis="x"``) theta is
    measured from the array normal towards +x: ``sin(theta)`` is the direction's x
    component, ``theta = asin(cos(azimuth))`` (a linear array cannot tell front from back).
    """
    if not isinstance(bearing, dict) or bearing.get("range") is None or bearing.get("azimuth") is None:
        return None
    az = (float(bearing["azimuth"]) + 180.0) % 360.0 - 180.0
    if az == -180.0:
        az = 180.0
    if axis == "x":
        return {"theta": math.asin(max(-1.0, min(1.0, math.cos(math.radians(az))))), "range": float(bearing["range"])}
    return {"theta": -math.radians(az), "range": float(bearing["range"])}


@dataclass
class _Dataset:
    """One data file to memory-map: ``n_channels`` interleaved channels of ``datatype``."""

    path: Path
    datatype: str
    n_channels: int
    offset: int
    n_samples: int
    mm: np.ndarray | None = field(default=None, repr=False)

    def open(self) -> None:
        shape: tuple[int, ...]
        if self.datatype == "ci16_le":
            shape = (self.n_samples, self.n_channels, 2)
            dtype = np.dtype("<i2")
        else:
            shape = (self.n_samples, self.n_channels)
            dtype = np.dtype(dtype_info(self.datatype)["memmap_map_type"])
        if self.n_samples == 0:
            self.mm = np.zeros(shape, dtype)
        else:
            self.mm = np.memmap(self.path, dtype=dtype, mode="r", offset=self.offset, shape=shape)

    def read(self, s0: int, s1: int) -> np.ndarray:
        """Samples [s0, s1) as a (C, T) complex64 C-contiguous array."""
        if self.mm is None:
            raise RuntimeError(f"{self.path}: read() before open()")
        block = self.mm[s0:s1]
        if self.datatype == "ci16_le":
            out = np.empty((self.n_channels, s1 - s0), np.complex64)
            out.real = block[:, :, 0].T
            out.imag = block[:, :, 1].T
            out *= _CI16_SCALE
            return out
        return np.array(block.T, dtype=np.complex64, order="C")

    def close(self) -> None:
        mm, self.mm = self.mm, None
        handle = getattr(mm, "_mmap", None)  # numpy's private mmap: closing it releases the file now
        if isinstance(mm, np.memmap) and handle is not None:
            handle.close()


class SigMFSource(Source):
    """Replay a SigMF recording (N interleaved channels or a Collection) as frames of T snapshots."""

    adds = (ARRAY, SNAPSHOTS, PILOTS, TRUTH, SAMPLE_RATE)  # frame contract (nearfield.contract)
    params = (
        Param("path", str, doc="recording: BASE, BASE.sigmf-meta, BASE.sigmf-data or BASE.sigmf-collection"),
        Param(
            "snapshots",
            (int, type(None)),
            None,
            "snapshots per frame T; null = the recorded frames when annotated, else 100",
            check=positive,
        ),
        Param("loop", bool, False, "start again at the end (seq and t0 keep increasing)"),
        Param(
            "rate_hz",
            (float, type(None)),
            None,
            "frames per second to pace at; null = as fast as possible",
            check=positive,
        ),
        Param("start_sample", int, 0, "first sample (per channel) to replay", check=non_negative),
        Param(
            "stop_sample",
            (int, type(None)),
            None,
            "replay up to this sample (exclusive); null = the end",
            check=non_negative,
        ),
        Param("verify", bool, False, "check core:sha512 before replaying (reads the whole file)"),
        Param("pilots", bool, True, "emit the recorded pilots when there are any (false: recorded-data-like)"),
        Param("apply_calibration", bool, True, "multiply channel n by nearfield:calibration[n] when present"),
        Param(
            "carrier_hz",
            (float, type(None)),
            None,
            "carrier in Hz when core:frequency is missing, or to override it (a warning names both); "
            "null = from the metadata",
            check=positive,
        ),
        Param(
            "spacing",
            (float, type(None)),
            None,
            "element spacing d in m when spatial:element_geometry is missing, or to override it; "
            "null = from the geometry",
            check=positive,
        ),
        Param(
            "channel_order",
            (str, list, type(None)),
            None,
            "antenna n (from -y to +y along the array) is recorded channel channel_order[n]: a list of the "
            "N channel indices, or 'reversed'; null = from the geometry (elements sorted along the axis)",
            check=lambda v: (
                None
                if v is None or v == "reversed" or isinstance(v, list)
                else "'reversed' or a list of channel indices"
            ),
        ),
        Param(
            "array_axis",
            (str, type(None)),
            None,
            "axis of the recording's element geometry and bearings, 'x' or 'y'; null = detected from the "
            "geometry ('y' without one)",
            choices=("x", "y", None),
        ),
    )

    # -- errors --------------------------------------------------------------------
    def _fail(self, file, field_name: str | None, message: str) -> SigMFFormatError:
        where = f"{str(file)!r}" + (f", field {field_name!r}" if field_name else "")
        return SigMFFormatError(f"block {self.name!r}, parameter 'path': {where}: {message}")

    def _load_json(self, path: Path) -> dict:
        try:
            if path.stat().st_size > MAX_META_BYTES:
                raise self._fail(
                    path, None, f"{path.stat().st_size} bytes: metadata larger than {MAX_META_BYTES} bytes is refused"
                )
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            raise self._fail(path, None, "no such file") from None
        except OSError as exc:
            raise self._fail(path, None, f"cannot read: {exc.strerror or exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._fail(path, None, f"not valid JSON: {str(exc)[:200]}") from None
        except RecursionError:
            raise self._fail(path, None, "not valid JSON: nested too deeply") from None
        if not isinstance(doc, dict):
            raise self._fail(path, None, "expected a JSON object")
        return doc

    # set while parsing (validate)
    _geo_order: np.ndarray | None
    _pilot_ds: _Dataset | None

    # -- parsing (runs in validate: errors before anything starts) -------------------
    def validate(self) -> None:
        if self.stop_sample is not None and self.stop_sample <= self.start_sample:
            raise self.param_error(
                "stop_sample", f"expected > start_sample ({self.start_sample}), got {self.stop_sample}"
            )
        p = Path(self.path)
        names = get_sigmf_filenames(p)
        if p.suffix == ".sigmf":
            raise self._fail(p, None, "SigMF archives (.sigmf tar files) are not supported; extract them first")
        collection = p.suffix == ".sigmf-collection" or (
            not names["meta_fn"].is_file() and names["collection_fn"].is_file()
        )
        meta_path = names["collection_fn"] if collection else names["meta_fn"]
        try:
            if collection:
                self._parse_collection(meta_path)
            else:
                self._parse_recording(meta_path)
            self._plan_frames()
        except SigMFFormatError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError) as exc:
            # a field of an unexpected type or shape that no specific check caught: still the file's fault
            raise self._fail(meta_path, None, f"malformed metadata ({type(exc).__name__}: {str(exc)[:200]})") from None

    def _global(self, doc, path) -> dict:
        g = doc.get("global")
        if not isinstance(g, dict):
            raise self._fail(path, "global", "missing or not an object")
        return g

    def _datatype(self, g, path) -> str:
        dt = g.get("core:datatype")
        if dt not in SUPPORTED_DATATYPES:
            raise self._fail(
                path, "core:datatype", f"unsupported datatype {dt!r}; expected one of {', '.join(SUPPORTED_DATATYPES)}"
            )
        return dt

    def _carrier(self, captures, path) -> float | None:
        freqs: set[Any] = {c.get("core:frequency") for c in captures if isinstance(c, dict)} - {None}
        if not freqs and self.carrier_hz is not None:
            return None  # the parameter supplies it
        if not freqs:
            raise self._fail(path, "core:frequency", "missing carrier: no capture segment has core:frequency")
        if len(freqs) > 1:
            raise self._fail(
                path, "core:frequency", f"captures with different carriers {sorted(freqs)} are not supported"
            )
        (f,) = freqs
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0:
            raise self._fail(path, "core:frequency", f"expected a positive carrier in Hz, got {f!r}")
        return float(f)

    def _geometry(self, points, n_channels: int, path, field_name: str) -> float:
        """Read a ULA from the element geometry; return the spacing d in metres.

        Today's layout (along y, centred, y increasing with the channel index) is read as is.
        Otherwise the array is *mapped*: the axis (``array_axis``, or the coordinate that
        varies) becomes the nominal y axis, the elements are sorted along it (which sets the
        channel order unless ``channel_order`` is given) and an off-centre array is
        re-centred; each mapping is logged.  A geometry that is no uniform linear array along
        x or y is refused.  Sets ``self._geo_order`` and ``self._axis``.
        """
        if not isinstance(points, list) or not points:
            raise self._fail(path, field_name, "missing array geometry (a list of cartesian_point objects)")
        if len(points) != n_channels:
            raise self._fail(
                path,
                field_name,
                f"has {len(points)} elements but the data has {n_channels} channels (core:num_channels / streams)",
            )
        try:
            xyz = np.array([pt["point"] for pt in points], float)
        except (KeyError, TypeError, ValueError):
            raise self._fail(
                path,
                field_name,
                'expected cartesian_point objects {"point": [x, y, z]} (unknown points cannot be used)',
            ) from None
        if xyz.shape != (n_channels, 3) or not np.all(np.isfinite(xyz)):
            raise self._fail(path, field_name, "expected finite [x, y, z] points")
        if n_channels < 2:
            raise self._fail(path, field_name, "expected at least 2 elements")
        spread = np.ptp(xyz, axis=0)
        axis = {"x": 0, "y": 1}.get(self.array_axis)
        if axis is None:
            axis = 0 if spread[0] > spread[1] else 1
        coord = xyz[:, axis]
        order = np.argsort(coord, kind="stable")
        pos = coord[order]
        d = (pos[-1] - pos[0]) / (n_channels - 1)
        tol = 1e-6 * abs(d) + 1e-12
        across = np.delete(spread, axis)
        if not d > 0 or np.max(np.abs(np.diff(pos) - d)) > tol or np.max(across) > tol:
            raise self._fail(
                path,
                field_name,
                "expected a uniform linear array along y (or x), e.g. centred on "
                "the origin with y increasing with the channel index (antenna n at "
                "y = (2n-N-1)d/2, x = z = 0); set array_axis/spacing/channel_order to map others",
            )
        if axis == 0:
            log.warning(
                "block %r: %s: the array lies along x; mapped to the nominal axis (theta from its "
                "normal towards increasing x; bearings converted with theta = asin(cos(azimuth)))",
                self.name,
                path,
            )
        if not np.array_equal(order, np.arange(n_channels)):
            log.warning(
                "block %r: %s: the elements are not in channel order along the array; channels "
                "mapped to antennas by position: %s",
                self.name,
                path,
                order.tolist(),
            )
        centre = np.mean(xyz, axis=0)
        if np.max(np.abs(centre)) > tol:
            log.warning(
                "block %r: %s: the array is not centred on the origin (centre %s m); positions are "
                "taken relative to the array centre",
                self.name,
                path,
                centre.tolist(),
            )
        self._geo_order = order
        self._axis = "x" if axis == 0 else "y"
        return float(d)

    def _overrides(self, g, n, d, carrier, path) -> tuple[float, float]:
        """Apply the ``spacing`` and ``carrier_hz`` parameters (fallbacks or overrides); log a change."""
        if self.spacing is not None:
            if d is not None and not math.isclose(d, self.spacing, rel_tol=1e-6):
                log.warning(
                    "block %r: %s: spacing %.6g m overrides %.6g m from spatial:element_geometry",
                    self.name,
                    path,
                    self.spacing,
                    d,
                )
            d = float(self.spacing)
        if self.carrier_hz is not None:
            if carrier is not None and not math.isclose(carrier, self.carrier_hz, rel_tol=1e-9):
                log.warning(
                    "block %r: %s: carrier_hz %.9g Hz overrides core:frequency %.9g Hz",
                    self.name,
                    path,
                    self.carrier_hz,
                    carrier,
                )
            carrier = float(self.carrier_hz)
        return d, carrier

    def _set_order(self, n: int, path) -> None:
        """``self._order``: recorded channel of antenna n, or None for the identity."""
        order = getattr(self, "_geo_order", None)
        if self.channel_order is not None:
            if self.channel_order == "reversed":
                want = np.arange(n)[::-1]
            else:
                co = self.channel_order
                if (
                    len(co) != n
                    or any(isinstance(i, bool) or not isinstance(i, int) for i in co)
                    or sorted(co) != list(range(n))
                ):
                    raise self.param_error(
                        "channel_order",
                        f"expected 'reversed' or the {n} channel indices 0..{n - 1} once each, got {co!r}",
                    )
                want = np.asarray(co, dtype=int)
            if order is not None and not np.array_equal(order, want):
                log.warning(
                    "block %r: %s: channel_order %s overrides the order of the element geometry %s",
                    self.name,
                    path,
                    want.tolist(),
                    order.tolist(),
                )
            order = want
        self._order = None if order is None or np.array_equal(order, np.arange(n)) else order

    def _build_array(self, g, n, d, carrier, path) -> dict:
        ne = g.get("spatial:num_elements")
        if ne is not None and ne != n:
            raise self._fail(path, "spatial:num_elements", f"is {ne} but the data has {n} channels")
        nf = g.get("nearfield:array")
        if nf is None or self.carrier_hz is not None or self.spacing is not None:
            try:
                ula = ULA(n, carrier_hz=carrier, spacing=d)
            except ValueError as exc:
                raise self._fail(path, None, f"array geometry: {exc}") from None
            return ula.describe()
        try:
            ula = ULA.from_meta(nf)
        except (ValueError, TypeError) as exc:
            raise self._fail(path, "nearfield:array", str(exc)) from None
        if (
            ula.n_antennas != n
            or not math.isclose(ula.carrier_hz, carrier, rel_tol=1e-9)
            or not math.isclose(ula.d, d, rel_tol=1e-6)
        ):
            raise self._fail(
                path,
                "nearfield:array",
                f"{nf} disagrees with the recording (N = {n}, "
                f"core:frequency = {carrier}, spacing from spatial:element_geometry = {d})",
            )
        return ula.describe()

    def _data_samples(self, data_path, n_channels, datatype, g, captures, path) -> tuple[int, int]:
        """(offset bytes, usable samples per channel) with the truncation checks."""
        if not data_path.is_file():
            raise self._fail(data_path, None, f"dataset file missing (described by {str(path)!r})")
        offset = int(captures[0].get("core:header_bytes", 0)) if captures else 0
        trailing = int(g.get("core:trailing_bytes", 0))
        nbytes = data_path.stat().st_size - offset - trailing
        per_sample = dtype_info(datatype)["sample_size"] * n_channels
        n_samples, rem = divmod(max(nbytes, 0), per_sample)
        valid = g.get("nearfield:valid_samples")
        if valid is not None:
            if valid > n_samples:
                raise self._fail(
                    data_path,
                    "nearfield:valid_samples",
                    f"truncated: metadata says {valid} valid samples, the file holds {n_samples} "
                    f"({nbytes} bytes of {n_channels} x {datatype})",
                )
            if valid < n_samples or rem:
                log.warning(
                    "%s: recording incomplete (writer did not finish): replaying the %d valid samples of %d",
                    data_path,
                    valid,
                    n_samples,
                )
            n_samples = int(valid)
        elif rem:
            raise self._fail(
                data_path,
                "core:num_channels",
                f"truncated or inconsistent: {nbytes} bytes is not a multiple of "
                f"core:num_channels x sample size = {n_channels} x {per_sample // n_channels} bytes",
            )
        return offset, n_samples

    def _check_annotations_fit(self, annotations, n_samples, data_path):
        ends = [
            a.get("core:sample_start", 0) + a.get("core:sample_count", 0)
            for a in annotations
            if isinstance(a, dict) and "core:sample_count" in a
        ]
        if ends and max(ends) > n_samples:
            raise self._fail(
                data_path,
                "annotations",
                f"truncated: an annotation ends at sample {max(ends)} but the dataset holds "
                f"{n_samples} samples per channel",
            )

    def _parse_recording(self, meta_path: Path) -> None:
        doc = self._load_json(meta_path)
        g = self._global(doc, meta_path)
        captures = doc.get("captures") or []
        annotations = doc.get("annotations") or []
        dt = self._datatype(g, meta_path)
        n = g.get("core:num_channels", 1)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise self._fail(meta_path, "core:num_channels", f"expected a positive integer, got {n!r}")
        carrier = self._carrier(captures, meta_path)
        geo = next(
            (
                c["spatial:element_geometry"]
                for c in captures
                if isinstance(c, dict) and "spatial:element_geometry" in c
            ),
            None,
        )
        self._geo_order, self._axis = None, self.array_axis or "y"
        if geo is None and self.spacing is None:
            raise self._fail(
                meta_path,
                "spatial:element_geometry",
                "missing array geometry (expected in a "
                "capture segment, with spatial:num_elements in global; or set the spacing parameter)",
            )
        d = None if geo is None else self._geometry(geo, n, meta_path, "spatial:element_geometry")
        d, carrier = self._overrides(g, n, d, carrier, meta_path)
        self._set_order(n, meta_path)
        self._array = self._build_array(g, n, d, carrier, meta_path)
        data_path = get_sigmf_filenames(meta_path)["data_fn"]
        if g.get("core:dataset"):
            data_path = meta_path.parent / g["core:dataset"]
        offset, n_samples = self._data_samples(data_path, n, dt, g, captures, meta_path)
        self._check_annotations_fit(annotations, n_samples, data_path)
        self._datasets = [_Dataset(data_path, dt, n, offset, n_samples)]
        self._sha = [(data_path, g.get("core:sha512"), meta_path)]
        self._n_samples = n_samples
        self._common(g, captures, annotations, meta_path, n)

    def _parse_collection(self, coll_path: Path) -> None:
        doc = self._load_json(coll_path)
        coll = doc.get("collection")
        if not isinstance(coll, dict):
            raise self._fail(coll_path, "collection", "missing or not an object")
        streams = coll.get("core:streams")
        if not isinstance(streams, list) or not streams:
            raise self._fail(coll_path, "core:streams", "expected a non-empty list of recordings")
        recs = []
        for i, s in enumerate(streams):
            name = s.get("name") if isinstance(s, dict) else (s[0] if isinstance(s, list) and s else None)
            if not isinstance(name, str):
                raise self._fail(coll_path, "core:streams", f"stream {i}: expected {{name, hash}}")
            meta_path = coll_path.parent / get_sigmf_filenames(name)["meta_fn"]
            sdoc = self._load_json(meta_path)
            sg = self._global(sdoc, meta_path)
            dt = self._datatype(sg, meta_path)
            nch = sg.get("core:num_channels", 1)
            if nch != 1:
                raise self._fail(
                    meta_path, "core:num_channels", f"expected 1 channel per collection stream, got {nch!r}"
                )
            caps = sdoc.get("captures") or []
            recs.append(
                (
                    sg.get("spatial:channel_index", i),
                    i,
                    meta_path,
                    sdoc,
                    sg,
                    dt,
                    caps,
                    s.get("hash") if isinstance(s, dict) else None,
                )
            )
        idx = sorted(r[0] for r in recs)
        if idx != list(range(len(recs))):
            raise self._fail(
                coll_path,
                "spatial:channel_index",
                f"expected the channel indices 0..{len(recs) - 1} once each, got {idx}",
            )
        recs.sort(key=lambda r: r[0])
        n = len(recs)
        carriers = {self._carrier(r[6], r[2]) for r in recs} - ({None} if self.carrier_hz is not None else set())
        if not carriers:
            carriers = {None}
        if len(carriers) > 1:
            raise self._fail(
                coll_path,
                "core:frequency",
                f"streams with different carriers {sorted(c for c in carriers if c is not None)}",
            )
        carrier = carriers.pop()
        geo = coll.get("spatial:element_geometry")
        if geo is None:
            geo = next(
                (
                    c["spatial:element_geometry"]
                    for c in recs[0][6]
                    if isinstance(c, dict) and "spatial:element_geometry" in c
                ),
                None,
            )
        self._geo_order, self._axis = None, self.array_axis or "y"
        if geo is None and self.spacing is None:
            raise self._fail(
                coll_path, "spatial:element_geometry", "missing array geometry (or set the spacing parameter)"
            )
        d = None if geo is None else self._geometry(geo, n, coll_path, "spatial:element_geometry")
        d, carrier = self._overrides(coll, n, d, carrier, coll_path)
        self._set_order(n, coll_path)
        g0 = recs[0][4]
        self._array = self._build_array(
            {**g0, **{k: v for k, v in coll.items() if k.startswith("spatial:")}}, n, d, carrier, coll_path
        )
        self._datasets, self._sha = [], []
        for _, _, meta_path, sdoc, sg, dt, caps, _h in recs:
            data_path = get_sigmf_filenames(meta_path)["data_fn"]
            offset, ns = self._data_samples(data_path, 1, dt, sg, caps, meta_path)
            self._check_annotations_fit(sdoc.get("annotations") or [], ns, data_path)
            self._datasets.append(_Dataset(data_path, dt, 1, offset, ns))
            self._sha.append((data_path, sg.get("core:sha512"), meta_path))
        lengths = [ds.n_samples for ds in self._datasets]
        if len(set(lengths)) > 1:
            log.warning(
                "%s: streams have different lengths %s; replaying the common %d samples",
                coll_path,
                sorted(set(lengths)),
                min(lengths),
            )
        self._n_samples = min(lengths)
        self._collection = (coll_path, [r[2] for r in recs])
        self._common(g0, recs[0][6], recs[0][3].get("annotations") or [], recs[0][2], n)

    def _common(self, g, captures, annotations, meta_path, n) -> None:
        """Fields shared by both layouts, taken from the (channel-0) recording's metadata."""
        fs = g.get("core:sample_rate")
        self._fs = float(fs) if fs else None
        self._meta_path = meta_path
        self._captures = [c for c in captures if isinstance(c, dict)]
        self._frame_anns = sorted(
            (a for a in annotations if isinstance(a, dict) and "nearfield:seq" in a),
            key=lambda a: a.get("core:sample_start", 0),
        )
        self._ann_starts = [int(a.get("core:sample_start", 0)) for a in self._frame_anns]
        cal = g.get("nearfield:calibration")
        self._cal = None
        if cal is not None and self.apply_calibration:
            try:
                w = np.array([complex(c[0], c[1]) for c in cal], np.complex64)
            except (TypeError, IndexError, ValueError):
                raise self._fail(meta_path, "nearfield:calibration", "expected N complex factors [re, im]") from None
            if w.shape != (n,):
                raise self._fail(meta_path, "nearfield:calibration", f"expected {n} factors, got {len(cal)}")
            self._cal = w[:, None]
        self._pilot_ds = None
        pname = g.get("nearfield:pilots_dataset")
        if pname is not None and self.pilots:
            pmeta = meta_path.parent / get_sigmf_filenames(pname)["meta_fn"]
            pdoc = self._load_json(pmeta)
            pg = self._global(pdoc, pmeta)
            pdt = self._datatype(pg, pmeta)
            k = pg.get("core:num_channels", 1)
            if g.get("nearfield:n_pilots") not in (None, k):
                raise self._fail(
                    pmeta, "core:num_channels", f"is {k} but nearfield:n_pilots says {g.get('nearfield:n_pilots')}"
                )
            pdata = get_sigmf_filenames(pmeta)["data_fn"]
            off, ns = self._data_samples(pdata, k, pdt, pg, pdoc.get("captures") or [], pmeta)
            if ns < self._n_samples:
                raise self._fail(
                    pdata,
                    "nearfield:pilots_dataset",
                    f"truncated: {ns} pilot samples for {self._n_samples} snapshot samples",
                )
            self._pilot_ds = _Dataset(pdata, pdt, k, off, ns)
            self._sha.append((pdata, pg.get("core:sha512"), pmeta))

    def _truth_at(self, s0: int):
        # frame annotations are sorted and do not overlap: the last one starting at or before s0
        i = bisect.bisect_right(self._ann_starts, s0) - 1
        if i >= 0:
            a = self._frame_anns[i]
            if s0 < self._ann_starts[i] + a.get("core:sample_count", 0) and "nearfield:truth" in a:
                return a["nearfield:truth"]
        cap = None
        for c in self._captures:
            if c.get("core:sample_start", 0) <= s0:
                cap = c
        if cap is not None and "spatial:emitter_bearing" in cap:
            tgt = target_from_bearing(cap["spatial:emitter_bearing"], getattr(self, "_axis", "y"))
            if tgt is not None:
                return {"targets": [tgt]}
        return None

    def _plan_frames(self) -> None:
        lo = self.start_sample
        hi = self._n_samples if self.stop_sample is None else min(self.stop_sample, self._n_samples)
        plan = []
        if self.snapshots is None and self._frame_anns:
            for a in self._frame_anns:
                s0 = int(a.get("core:sample_start", 0))
                s1 = s0 + int(a.get("core:sample_count", 0))
                if lo <= s0 and s1 <= hi and s1 > s0:
                    plan.append(
                        (s0, s1, int(a["nearfield:seq"]), float(a.get("nearfield:t0", 0.0)), a.get("nearfield:truth"))
                    )
        else:
            t = self.snapshots or 100
            for i, s0 in enumerate(range(lo, hi - t + 1, t)):
                t0 = s0 / self._fs if self._fs else float(i)
                plan.append((s0, s0 + t, i, t0, self._truth_at(s0)))
            if hi - lo >= 0 and (hi - lo) % t:
                log.info(
                    "block %r: dropping the last %d samples (less than one frame of %d)", self.name, (hi - lo) % t, t
                )
        if not plan:
            raise self._fail(self._meta_path, None, f"no complete frame in samples [{lo}, {hi}) of the recording")
        self._plan = plan
        seqs = [p[2] for p in plan]
        self._seq_span = max(seqs) - min(seqs) + 1
        self._duration = (
            (plan[-1][1] - plan[0][0]) / self._fs
            if self._fs
            else plan[-1][3] - plan[0][3] + (plan[-1][3] - plan[-2][3] if len(plan) > 1 else 1.0)
        )

    # -- worker side -------------------------------------------------------------------
    def start(self) -> None:
        if self.verify:
            for data_path, sha, meta_path in self._sha:
                if sha is None:
                    raise self._fail(meta_path, "core:sha512", "verify: true but the recording has no checksum")
                got = hashing.calculate_sha512(filename=data_path)
                if got.lower() != str(sha).lower():
                    raise self._fail(
                        data_path,
                        "core:sha512",
                        f"checksum mismatch: the data file does not match its metadata {str(meta_path)!r}",
                    )
            if getattr(self, "_collection", None) is not None:
                from sigmf.sigmffile import fromfile  # SigMFCollection checks its streams' metadata hashes

                try:
                    fromfile(self._collection[0], skip_checksum=False)
                except Exception as exc:  # noqa: BLE001 - the library raises several types
                    raise self._fail(self._collection[0], "core:streams", f"verification failed: {exc}") from None
        for ds in self._datasets:
            ds.open()
        if self._pilot_ds is not None:
            self._pilot_ds.open()

    def read_frame(self, s0: int, s1: int) -> dict:
        """Arrays of samples [s0, s1): snapshots (N, T) complex64 [+ pilots (K, T) complex64]."""
        if len(self._datasets) == 1:
            Y = self._datasets[0].read(s0, s1)
        else:
            Y = np.empty((len(self._datasets), s1 - s0), np.complex64)
            for n, ds in enumerate(self._datasets):
                Y[n] = ds.read(s0, s1)[0]
        if self._cal is not None:
            Y *= self._cal  # per recorded channel, before the mapping to antennas
        if getattr(self, "_order", None) is not None:
            Y = Y[self._order]
        arrays = {"snapshots": Y}
        if self._pilot_ds is not None:
            arrays["pilots"] = self._pilot_ds.read(s0, s1)
        return arrays

    def generate(self) -> Iterator[Frame]:
        if self._datasets[0].mm is None:
            self.start()
        period = 1.0 / self.rate_hz if self.rate_hz else 0.0
        t_next = time.monotonic()
        rep = 0
        while True:
            for s0, s1, seq, t0, truth in self._plan:
                meta: dict[str, Any] = {"array": dict(self._array)}
                if truth is not None:
                    meta["truth"] = json.loads(json.dumps(truth))  # a private copy per frame
                if self._fs:
                    meta["sample_rate_hz"] = self._fs
                frame = Frame(
                    seq=seq + rep * self._seq_span,
                    t0=t0 + rep * self._duration,
                    arrays=self.read_frame(s0, s1),
                    meta=meta,
                )
                if period:
                    yield from idle_until(t_next)
                    t_next = max(t_next + period, time.monotonic())
                yield frame
            if not self.loop:
                return
            rep += 1

    def close(self) -> None:
        for ds in getattr(self, "_datasets", []):
            ds.close()
        pilot_ds = getattr(self, "_pilot_ds", None)
        if pilot_ds is not None:
            pilot_ds.close()
