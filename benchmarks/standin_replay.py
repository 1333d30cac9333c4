"""The issue-9 user path on stand-in recordings: SigMF files written as another tool would, replayed
through the shipped flowgraphs, against plain 2-D MUSIC on the same frames.

Each recording is a 9-channel array at 1.24 GHz (d = lambda / 2) with dense receiver errors
(5 dB gain std, uniform phase, or a 20 deg phase std), one transmitter at theta ~ U(-50, 50) deg,
r ~ U(0.5, 5.5) m with 1-2 specular reflections (:func:`nearfield.scenario.draw_reflections`),
20 dB, written with the ``sigmf`` library as cf32_le with the ``spatial`` extension's element
geometry and no ``nearfield:`` fields (no pilots: blind).  A reference recording (transmitter at
0 rad, 2 m, with its own reflections, 25 dB, 1024 snapshots) is written for each receiver too.

Per recording the script runs, in process (``inproc``):

* ``flowgraphs/replay_sigmf.yaml`` with ``source.pilots=false, source.snapshots=256,
  detect.n_targets=1`` -- the run of the issue, uncalibrated;
* ``flowgraphs/calibrate_reference.yaml`` on the reference recording (``refcal.theta=0,
  refcal.range=2``), then ``flowgraphs/replay_calibrated.yaml`` with the HI state it wrote;
* a 2-D MUSIC graph (``sigmf -> [hi_apply ->] music2d_localizer(n_targets=1) -> jsonl``) on the
  same recording, uncalibrated and calibrated,

and reads the estimates records: share of frames with an estimate, status words, angle / range
RMSE, median, 90th percentile, errors above 5 deg and the 2-sigma coverage of the records'
``theta_std`` / ``range_std``.

Usage::

    python benchmarks/standin_replay.py --recordings 20 --frames 4
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import sigmf  # noqa: E402
import yaml  # noqa: E402
from real_arrays import STANDIN_COLS, _standin_row  # noqa: E402  (benchmarks/, the script's folder)
from sigmf import SigMFFile  # noqa: E402

from nearfield.array import ULA  # noqa: E402
from nearfield.impairments import draw_dense_impairments  # noqa: E402
from nearfield.runtime import run_flowgraph  # noqa: E402
from nearfield.runtime.flowgraph import parse_flowgraph  # noqa: E402
from nearfield.scenario import draw_reflections, multipath_snapshots  # noqa: E402

FG = Path(__file__).resolve().parents[1] / "flowgraphs"
D2R = np.pi / 180


def write_sigmf(base: Path, Y: np.ndarray, array: ULA) -> Path:
    """Y (N, T) as an interleaved cf32_le recording with the spatial extension's geometry (another tool's way)."""
    n = Y.shape[0]
    np.ascontiguousarray(Y.T, dtype=np.complex64).tofile(str(base) + ".sigmf-data")
    sf = SigMFFile(
        global_info={
            "core:datatype": "cf32_le",
            "core:num_channels": n,
            "core:version": sigmf.__specification__,
            "core:sample_rate": 2.4e6,
            "core:extensions": [{"name": "spatial", "version": "1.1.0", "optional": True}],
            "spatial:num_elements": n,
            "spatial:channel_index": 0,
        }
    )
    sf.set_data_file(str(base) + ".sigmf-data", skip_checksum=True)
    pts = [{"point": [0.0, float(y), 0.0]} for y in array.positions]
    sf.add_capture(0, metadata={"core:frequency": array.carrier_hz, "spatial:element_geometry": pts})
    with open(str(base) + ".sigmf-meta", "w") as fh:
        sf.dump(fh)
    return Path(str(base) + ".sigmf-meta")


def _run(graph: dict, name: str) -> None:
    res = run_flowgraph(parse_flowgraph(graph, path=name), inproc=True, quiet=True)
    if not res.ok:
        raise RuntimeError(f"{name}: {res.error}")


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _music_graph(meta: Path, out: Path, hi_path: Path | None) -> dict:
    blocks = {
        "source": {"type": "sigmf", "path": str(meta), "snapshots": 256, "pilots": False},
        "music2d": {"type": "music2d_localizer", "n_targets": 1},
        "out": {"type": "jsonl", "path": str(out)},
    }
    conns = [["source", "music2d"], ["music2d", "out"]]
    if hi_path is not None:
        blocks["hi"] = {"type": "hi_apply", "state_path": str(hi_path)}
        conns = [["source", "hi"], ["hi", "music2d"], ["music2d", "out"]]
    return {"name": "music2d-replay", "blocks": blocks, "connections": conns}


def run(recordings: int, frames: int, phase_std, seed: int, work: Path) -> dict:
    rng = np.random.default_rng([seed, 9])
    arr = ULA(9, carrier_hz=1.24e9)
    rows = {
        k: {"et": [], "er": [], "ct": [], "cr": [], "n": 0, "status": Counter()}
        for k in (
            "localize chain, uncalibrated",
            "2-D MUSIC, uncalibrated",
            "localize chain, calibrated",
            "2-D MUSIC, calibrated",
        )
    }
    for i in range(recordings):
        c = draw_dense_impairments(9, rng, 5.0, phase_std).gain
        ref = draw_reflections(rng, 0.0, 2.0, int(rng.integers(1, 3)))
        ref_meta = write_sigmf(work / f"ref{i}", multipath_snapshots(arr, c, 0.0, 2.0, ref, 1024, 25.0, rng), arr)
        th, r = rng.uniform(-50, 50) * D2R, rng.uniform(0.5, 5.5)
        refl = draw_reflections(rng, th, r, int(rng.integers(1, 3)))
        meta = write_sigmf(work / f"rec{i}", multipath_snapshots(arr, c, th, r, refl, 256 * frames, 20.0, rng), arr)
        hi_path = work / f"hi{i}.json"
        g = yaml.safe_load((FG / "calibrate_reference.yaml").read_text())
        g["blocks"]["source"] = {"type": "sigmf", "path": str(ref_meta), "snapshots": 256, "pilots": False}
        g["blocks"]["refcal"].update(theta=0.0, range=2.0, frames=0, state_path=str(hi_path))
        g["blocks"]["out"] = {"type": "jsonl", "path": str(work / f"ref{i}.jsonl")}  # not the console
        _run(g, "calibrate_reference.yaml")
        outs = {}
        for key, fg in (("uncalibrated", "replay_sigmf.yaml"), ("calibrated", "replay_calibrated.yaml")):
            g = yaml.safe_load((FG / fg).read_text())
            g["blocks"]["source"] = {"type": "sigmf", "path": str(meta), "snapshots": 256, "pilots": False}
            g["blocks"]["detect"]["n_targets"] = 1
            if "hi" in g["blocks"]:
                g["blocks"]["hi"]["state_path"] = str(hi_path)
            outs[f"localize chain, {key}"] = work / f"est-{key}{i}.jsonl"
            g["blocks"]["out"]["path"] = str(outs[f"localize chain, {key}"])
            _run(g, fg)
            outs[f"2-D MUSIC, {key}"] = work / f"mus-{key}{i}.jsonl"
            _run(_music_graph(meta, outs[f"2-D MUSIC, {key}"], hi_path if key == "calibrated" else None), "music2d")
        for k, path in outs.items():
            d = rows[k]
            d["n"] += frames
            for rec in _records(path):
                if not rec.get("targets"):
                    continue
                t = rec["targets"][0]
                d["et"].append(np.degrees(t["theta"] - th))
                d["er"].append(t["range"] - r)
                if "theta_std" in t:
                    d["ct"].append(abs(t["theta"] - th) <= 2 * t["theta_std"])
                    d["cr"].append(abs(t["range"] - r) <= 2 * t["range_std"])
                if "status" in t:
                    d["status"][t["status"]] += 1
    return rows


def report(rows: dict, title: str) -> None:
    print(f"\n{title}")
    print(STANDIN_COLS)
    for name, d in rows.items():
        print(_standin_row(name, dict(d, ok=len(d["et"]))), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recordings", type=int, default=20)
    ap.add_argument("--frames", type=int, default=4, help="frames of 256 snapshots per recording")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        for phase in ("uniform", 0.35):
            rows = run(args.recordings, args.frames, phase, args.seed, Path(tmp))
            report(
                rows,
                f"N = 9, 1.24 GHz, 5 dB gain std, phase {phase}, 1-2 reflections, 20 dB, K = 1, blind; "
                f"{args.recordings} SigMF recordings x {args.frames} frames of 256",
            )


if __name__ == "__main__":
    main()
