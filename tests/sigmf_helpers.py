"""Helpers shared by the SigMF tests: recordings made with the sigmf library's own API."""

import numpy as np
import sigmf
from sigmf import SigMFFile
from sigmf.sigmffile import SigMFCollection

from nearfield.sinks.sigmf_writer import SigMFWriter
from nearfield.sources.synthetic import SyntheticSource

SPATIAL = {"name": "spatial", "version": "1.1.0", "optional": True}


def ula_points(n, d):
    return [{"point": [0.0, (2 * i - n + 1) * d / 2.0, 0.0]} for i in range(n)]


def record(path, frames=5, **src_params):
    """Record a synthetic run with the writer; return the frames that were written."""
    params = dict(n_antennas=16, snapshots=10, frames=frames, sample_rate_hz=1000.0, seed=4)
    params.update(src_params)
    out = list(SyntheticSource(**params).generate())
    w = SigMFWriter(path=str(path))
    w.start()
    for f in out:
        w.process(f)
    w.finish()
    w.close()
    return out


def foreign_recording(
    base,
    data: np.ndarray,
    datatype="cf32_le",
    n=None,
    carrier=3e9,
    d=0.05,
    geometry=True,
    extra_global=None,
    capture_extra=None,
    annotations=(),
):
    """Write a recording with sigmf.SigMFFile as another tool would; ``data`` is raw (file layout).

    ``geometry``: True (our centred ULA along y), False (none) or a list of [x, y, z] points
    in channel order (another tool's layout).
    """
    base = str(base)
    data.tofile(base + ".sigmf-data")
    n = n if n is not None else 4
    g = {
        "core:datatype": datatype,
        "core:num_channels": n,
        "core:version": sigmf.__specification__,
        "core:sample_rate": 1e6,
        "core:extensions": [SPATIAL],
        "spatial:num_elements": n,
        "spatial:channel_index": 0,
    }
    g.update(extra_global or {})
    sf = SigMFFile(global_info=g)
    sf.set_data_file(base + ".sigmf-data", skip_checksum=True)
    cap = {}
    if carrier is not None:
        cap["core:frequency"] = carrier
    if isinstance(geometry, list):
        cap["spatial:element_geometry"] = [{"point": [float(v) for v in p]} for p in geometry]
    elif geometry:
        cap["spatial:element_geometry"] = ula_points(n, d)
    cap.update(capture_extra or {})
    sf.add_capture(0, metadata=cap)
    for start, count, md in annotations:
        sf.add_annotation(start, count, metadata=md)
    with open(base + ".sigmf-meta", "w") as fh:
        sf.dump(fh)
    return base


def split_into_collection(directory, base, name="coll", order=None):
    """Split an interleaved cf32 recording into single-channel recordings + a Collection."""
    import json

    meta = json.load(open(str(base) + ".sigmf-meta"))
    g = meta["global"]
    n = g["core:num_channels"]
    data = np.fromfile(str(base) + ".sigmf-data", np.complex64).reshape(-1, n)
    order = list(range(n)) if order is None else order
    metafiles = []
    for ch in order:
        stem = f"{name}-ch{ch}"
        np.ascontiguousarray(data[:, ch]).tofile(str(directory / stem) + ".sigmf-data")
        sg = {
            "core:datatype": "cf32_le",
            "core:version": sigmf.__specification__,
            "core:sample_rate": g.get("core:sample_rate", 1e6),
            "core:extensions": meta["global"]["core:extensions"],
            "spatial:num_elements": n,
            "spatial:channel_index": ch,
        }
        if ch == 0:
            for k, v in g.items():
                if k.startswith("nearfield:"):
                    sg[k] = v
        sf = SigMFFile(global_info=sg)
        sf.set_data_file(str(directory / stem) + ".sigmf-data")
        sf.add_capture(0, metadata={"core:frequency": meta["captures"][0]["core:frequency"]})
        if ch == 0:
            for a in meta["annotations"]:
                sf.add_annotation(
                    a["core:sample_start"],
                    a["core:sample_count"],
                    metadata={k: v for k, v in a.items() if k not in ("core:sample_start", "core:sample_count")},
                )
        sf.tofile(str(directory / stem))
        metafiles.append(stem + ".sigmf-meta")
    coll = SigMFCollection(
        metafiles=metafiles,
        base_path=str(directory),
        metadata={
            "collection": {
                "core:extensions": [SPATIAL],
                "spatial:element_geometry": meta["captures"][0]["spatial:element_geometry"],
            }
        },
    )
    coll.tofile(str(directory / name))
    return directory / (name + ".sigmf-collection")
