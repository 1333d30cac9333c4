"""SigMF sink: record any frame stream to a SigMF recording as the frames arrive.

Files (``path`` is the base name; a ``.sigmf-meta``/``.sigmf-data`` suffix is dropped)::

    BASE.sigmf-data          snapshots, cf32_le, N interleaved channels (sample t: N values)
    BASE.sigmf-meta          SigMF metadata (core + spatial + nearfield namespaces)
    BASE-pilots.sigmf-data   only when the frames carry pilots: the (K, T) pilots of every
    BASE-pilots.sigmf-meta   frame, cf32_le, K interleaved channels, sample-aligned with BASE

Frame ``seq`` with T snapshots occupies samples ``[s, s + T)`` of both datasets and is
described by one annotation (``core:sample_start`` s, ``core:sample_count`` T,
``nearfield:seq``, ``nearfield:t0`` and, when the frame carries it, ``nearfield:truth``).
The array geometry goes into the ``spatial`` extension (``spatial:num_elements``, a
``spatial:element_geometry`` of ``[0, l_n, 0]`` points in the capture) and the carrier
into the capture's ``core:frequency``; ``nearfield:array`` keeps the exact geometry dict.
All fields of the ``nearfield`` namespace are documented in ``docs/sigmf.md``.

Crash safety: data are appended frame by frame with an incremental SHA-512 (hashlib).
After the first frame and then at most every ``checkpoint_s`` seconds, the data are
flushed to disk and a *provisional* ``.sigmf-meta`` is written atomically
(temp file + rename) with ``nearfield:complete = false`` and ``nearfield:valid_samples``
= the samples that are on disk and described; it has no ``core:sha512``.  So a crash
leaves a recording that passes the SigMF validator and whose metadata says how far the
data is valid; :class:`nearfield.sources.sigmf_source.SigMFSource` replays that part.
At end of stream (or on close after an error elsewhere) the final metadata is written
with ``core:sha512`` of each dataset (``nearfield:complete`` true only after a normal end
of stream).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import sigmf

from .. import __version__
from ..array import ULA
from ..block import BadFrame, Param, ParamError, Sink, non_negative, positive
from ..contract import ARRAY, PILOTS, SNAPSHOTS, TRUTH, optional
from ..frame import Frame, jsonable

log = logging.getLogger(__name__)

#: Version of the ``nearfield`` SigMF namespace written by this sink (docs/sigmf.md).
NAMESPACE_VERSION = "1.0.0"
#: Version of the ``spatial`` extension whose fields we use.
SPATIAL_VERSION = "1.1.0"
EXTENSIONS = [
    {"name": "spatial", "version": SPATIAL_VERSION, "optional": True},
    {"name": "nearfield", "version": NAMESPACE_VERSION, "optional": True},
]

_SUFFIXES = (".sigmf-meta", ".sigmf-data", ".sigmf")


def base_path(path) -> Path:
    """The recording's base name: ``path`` without a SigMF suffix."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in _SUFFIXES else p


def bearing_from_target(theta: float, r: float) -> dict:
    """``spatial`` bearing object of a target at (theta rad from broadside, r m).

    The spatial extension's boresight is +x and its azimuth increases clockwise (seen from
    +z), i.e. towards -y, while our theta is positive towards +y: azimuth = -theta in
    degrees.
    """
    return {"azimuth": -math.degrees(theta), "elevation": 0.0, "range": float(r)}


def _write_json_atomic(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class _Dataset:
    """An append-only cf32_le dataset with an incremental SHA-512."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = open(path, "wb")
        self.sha = hashlib.sha512()
        self.samples = 0

    def append(self, block: np.ndarray) -> None:
        """Append ``block`` (T, C) complex64 (C-contiguous, little-endian)."""
        buf = block.data.cast("B")
        self.fh.write(buf)
        self.sha.update(buf)
        self.samples += block.shape[0]

    def sync(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.flush()
            self.fh.close()


def _le_c64(a: np.ndarray) -> np.ndarray:
    """(C, T) -> contiguous (T, C) little-endian complex64 (the sample-major file layout)."""
    out = np.ascontiguousarray(a.T, dtype=np.complex64)
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
        out = out.astype("<c8")
    return out


class SigMFWriter(Sink):
    """Record frames (snapshots, pilots, truth) to a SigMF recording; crash-safe metadata."""

    reads = (optional(ARRAY), optional(SNAPSHOTS), PILOTS, TRUTH)  # frame contract (nearfield.contract)
    params = (
        Param("path", str, doc="base name of the recording (BASE.sigmf-meta / BASE.sigmf-data)"),
        Param("overwrite", bool, False, "replace an existing recording of the same name"),
        Param(
            "checkpoint_s",
            float,
            1.0,
            "rewrite the provisional metadata at most every this many seconds (0 = every frame)",
            check=non_negative,
        ),
        Param(
            "sample_rate_hz",
            (float, type(None)),
            None,
            "core:sample_rate in Hz; null = the frames' meta['sample_rate_hz'] when present",
            check=positive,
        ),
        Param("description", str, "", "core:description of the recording"),
    )

    # set by start() (None until the first frame fixes them)
    _data: _Dataset
    _pilots: _Dataset | None
    _n: int | None  # antennas N
    _k: int | None  # pilot channels K
    _array: dict | None  # the frames' meta["array"]
    _fs: float | None  # sample rate, Hz
    _last_checkpoint: float | None  # monotonic time, s

    def validate(self) -> None:
        if not self.path.strip():
            raise self.param_error("path", "expected a file path, got an empty string")
        self.base = base_path(self.path)
        self.meta_path = self.base.with_name(self.base.name + ".sigmf-meta")
        self.data_path = self.base.with_name(self.base.name + ".sigmf-data")
        self.pilots_base = self.base.with_name(self.base.name + "-pilots")
        self.pilots_meta_path = self.pilots_base.with_name(self.pilots_base.name + ".sigmf-meta")
        self.pilots_data_path = self.pilots_base.with_name(self.pilots_base.name + ".sigmf-data")

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        if not self.overwrite:
            for p in (self.meta_path, self.data_path):
                if p.exists():
                    raise ParamError(
                        f"block {self.name!r}, parameter 'path': {str(p)!r} exists (set overwrite: true to replace it)"
                    )
        try:
            self.base.parent.mkdir(parents=True, exist_ok=True)
            self._data = _Dataset(self.data_path)
        except OSError as exc:
            raise ParamError(
                f"block {self.name!r}, parameter 'path': cannot write {str(self.data_path)!r}: {exc.strerror or exc}"
            ) from None
        for p in (self.pilots_meta_path, self.pilots_data_path):
            if p.exists():
                p.unlink()  # a stale sidecar must not be paired with the new recording
        self._pilots = None
        self._n = None
        self._k = None
        self._array = None
        self._fs = self.sample_rate_hz
        self._annotations: list[dict] = []
        self._truths: list[dict | None] = []
        self._datetime = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        self._last_checkpoint = None
        self._finalized = False
        self._ended = False
        self.frames = 0

    def _check(self, frame: Frame):
        """Validate a frame against the recording; return (Y, pilots or None). Nothing written."""
        Y = frame.arrays.get("snapshots")
        if Y is None:
            raise BadFrame(f"block {self.name!r}: frame {frame.seq} has no 'snapshots' array")
        if Y.ndim != 2 or Y.dtype != np.complex64 or Y.shape[1] < 1:
            raise BadFrame(
                f"block {self.name!r}: frame {frame.seq}: snapshots: expected an (N, T) complex64 "
                f"array, got shape {Y.shape} dtype {Y.dtype}"
            )
        if self._n is None:
            geom = (frame.meta or {}).get("array")
            if geom is None:
                raise BadFrame(
                    f"block {self.name!r}: frame {frame.seq}: meta['array'] (geometry) is missing; "
                    "the recording needs it for spatial:element_geometry and core:frequency"
                )
            try:
                ula = ULA.from_meta(geom)
            except (ValueError, TypeError) as exc:
                raise BadFrame(f"block {self.name!r}: frame {frame.seq}: meta['array']: {exc}") from None
            if ula.n_antennas != Y.shape[0]:
                raise BadFrame(
                    f"block {self.name!r}: frame {frame.seq}: snapshots have {Y.shape[0]} rows, "
                    f"meta['array'] says n_antennas = {ula.n_antennas}"
                )
        elif Y.shape[0] != self._n:
            raise BadFrame(
                f"block {self.name!r}: frame {frame.seq}: snapshots have N = {Y.shape[0]} antennas, "
                f"the recording has {self._n}"
            )
        elif (frame.meta or {}).get("array") not in (None, self._array):
            raise BadFrame(
                f"block {self.name!r}: frame {frame.seq}: meta['array'] differs from the "
                f"recording's geometry {self._array}"
            )
        P = frame.arrays.get("pilots")
        first = self._n is None
        if P is not None:
            if P.ndim != 2 or P.dtype != np.complex64 or P.shape[1] != Y.shape[1]:
                raise BadFrame(
                    f"block {self.name!r}: frame {frame.seq}: pilots: expected a (K, T={Y.shape[1]}) "
                    f"complex64 array, got shape {P.shape} dtype {P.dtype}"
                )
            if not first and self._k is None:
                log.warning(
                    "block %r: frame %d carries pilots but the first frame did not; pilots are not recorded",
                    self.name,
                    frame.seq,
                )
                P = None
            elif not first and P.shape[0] != self._k:
                raise BadFrame(
                    f"block {self.name!r}: frame {frame.seq}: pilots have K = {P.shape[0]} rows, "
                    f"the recording has {self._k}"
                )
        elif not first and self._k is not None:
            raise BadFrame(
                f"block {self.name!r}: frame {frame.seq} has no pilots but the recording's "
                f"pilot dataset needs them (K = {self._k})"
            )
        return Y, P

    def process(self, frame: Frame) -> None:
        if not hasattr(self, "_data"):
            self.start()
        Y, P = self._check(frame)
        meta = frame.meta or {}
        if self._n is None:
            self._n = Y.shape[0]
            self._array = dict(meta["array"])
            if self._fs is None and meta.get("sample_rate_hz"):
                self._fs = float(meta["sample_rate_hz"])
            if P is not None:
                self._k = P.shape[0]
                self._pilots = _Dataset(self.pilots_data_path)
        s0 = self._data.samples
        self._data.append(_le_c64(Y))
        if self._pilots is not None:
            self._pilots.append(_le_c64(P))
        ann = {
            "core:sample_start": int(s0),
            "core:sample_count": int(Y.shape[1]),
            "core:label": f"frame {frame.seq}"[:20],
            "nearfield:seq": int(frame.seq),
            "nearfield:t0": float(frame.t0),
        }
        truth = meta.get("truth")
        if truth is not None:
            ann["nearfield:truth"] = jsonable(truth)
        self._annotations.append(ann)
        self._truths.append(truth)
        self.frames += 1
        now = time.monotonic()
        if self._last_checkpoint is None or now - self._last_checkpoint >= self.checkpoint_s:
            self.checkpoint()
            self._last_checkpoint = now
        return None

    def checkpoint(self) -> None:
        """Flush the data and write the provisional metadata (valid up to the samples on disk)."""
        if self._n is None:
            return
        self._data.sync()
        if self._pilots is not None:
            self._pilots.sync()
            _write_json_atomic(self.pilots_meta_path, self._pilots_metadata(final=False))
        _write_json_atomic(self.meta_path, self._metadata(final=False))

    def finish(self):
        self._ended = True
        self._finalize()
        return None

    def close(self) -> None:
        if getattr(self, "_data", None) is None:
            return
        try:
            self._finalize()
        finally:
            self._data.close()
            if self._pilots is not None:
                self._pilots.close()

    def _finalize(self) -> None:
        if self._finalized or getattr(self, "_data", None) is None:
            return
        self._finalized = True
        if self._n is None:
            self._data.close()
            self.data_path.unlink(missing_ok=True)  # nothing recorded: leave no half recording
            log.warning("block %r: no frame recorded; no SigMF recording written", self.name)
            return
        self._data.sync()
        if self._pilots is not None:
            self._pilots.sync()
            _write_json_atomic(self.pilots_meta_path, self._pilots_metadata(final=True))
        _write_json_atomic(self.meta_path, self._metadata(final=True))

    # -- metadata ----------------------------------------------------------------
    def _metadata(self, final: bool) -> dict:
        if self._n is None or self._array is None:
            raise RuntimeError(f"block {self.name!r}: no metadata before the first frame")
        ula = ULA.from_meta(self._array)
        g = {
            "core:datatype": "cf32_le",
            "core:version": sigmf.__specification__,
            "core:num_channels": int(self._n),
            "core:recorder": f"nearfield {__version__} sigmf_writer",
            "core:extensions": [dict(e) for e in EXTENSIONS],
            "spatial:num_elements": int(self._n),
            "spatial:channel_index": 0,
            "nearfield:array": dict(self._array),
            "nearfield:complete": bool(final and self._ended),
            "nearfield:valid_samples": int(self._data.samples),
            "nearfield:frames": int(self.frames),
        }
        if self.description:
            g["core:description"] = self.description
        if self._fs:
            g["core:sample_rate"] = float(self._fs)
        if self._k is not None:
            g["nearfield:pilots_dataset"] = self.pilots_base.name
            g["nearfield:n_pilots"] = int(self._k)
        if final:
            g["core:sha512"] = self._data.sha.hexdigest()
        capture = {
            "core:sample_start": 0,
            "core:frequency": float(ula.carrier_hz),
            "core:datetime": self._datetime,
            "spatial:element_geometry": [{"point": [0.0, float(y), 0.0]} for y in ula.positions],
        }
        bearing = self._static_single_target()
        if final and bearing is not None:
            capture["spatial:emitter_bearing"] = bearing
        return {"global": g, "captures": [capture], "annotations": list(self._annotations)}

    def _static_single_target(self):
        """Bearing of the single, static truth target of every frame, else None."""
        first = None
        for truth in self._truths:
            tg = (truth or {}).get("targets") or []
            if len(tg) != 1:
                return None
            pos = (float(tg[0]["theta"]), float(tg[0]["range"]))
            if first is None:
                first = pos
            elif pos != first:
                return None
        return None if first is None else bearing_from_target(*first)

    def _pilots_metadata(self, final: bool) -> dict:
        if self._k is None or self._pilots is None:
            raise RuntimeError(f"block {self.name!r}: no pilot metadata before the first frame with pilots")
        g = {
            "core:datatype": "cf32_le",
            "core:version": sigmf.__specification__,
            "core:num_channels": int(self._k),
            "core:recorder": f"nearfield {__version__} sigmf_writer",
            "core:description": f"probing signals (pilots) of the targets, one channel per target, "
            f"sample-aligned with {self.base.name}",
            "core:extensions": [dict(EXTENSIONS[1])],
            "nearfield:pilots_of": self.base.name,
            "nearfield:complete": bool(final and self._ended),
            "nearfield:valid_samples": int(self._pilots.samples),
        }
        if self._fs:
            g["core:sample_rate"] = float(self._fs)
        if final:
            g["core:sha512"] = self._pilots.sha.hexdigest()
        return {"global": g, "captures": [{"core:sample_start": 0}], "annotations": []}
