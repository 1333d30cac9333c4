"""Shared test-only blocks for the runtime, flowgraph and CLI tests.

They are registered with :func:`nearfield.runtime.registry.register` at import time under names
starting with ``t_``; the runtime forks its block processes, so the children see them too.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from nearfield.block import BadFrame, Block, Param, Sink, Source
from nearfield.frame import Frame
from nearfield.runtime import registry


class CountSource(Source):
    """Test source: frame seq holds an (rows, cols) complex64 array filled with seq."""

    params = (
        Param("frames", int, 10, "number of frames; 0 = endless"),
        Param("rows", int, 4, "rows of the snapshots array"),
        Param("cols", int, 4, "columns of the snapshots array"),
        Param("offset", int, 0, "first seq"),
        Param("nan_at", list, [], "seqs whose snapshots hold a NaN"),
        Param("sleep", float, 0.0, "seconds to sleep before each frame"),
    )

    def generate(self):
        i = 0
        while self.frames == 0 or i < self.frames:
            seq = self.offset + i
            if self.sleep:
                time.sleep(self.sleep)
            y = np.full((self.rows, self.cols), seq, dtype=np.complex64)
            if seq in self.nan_at:
                y[0, 0] = np.nan
            yield Frame(seq=seq, t0=float(seq), arrays={"snapshots": y}, meta={"src": self.name})
            i += 1


class PassBlock(Block):
    """Test stage: passes frames on, optionally slowly, failing or refusing some."""

    params = (
        Param("delay", float, 0.0, "seconds of work per frame"),
        Param("fail_at", (int, type(None)), None, "seq at which process() raises RuntimeError"),
        Param("bad_at", list, [], "seqs refused with BadFrame"),
        Param("exit_at", (int, type(None)), None, "seq at which the worker process dies (os._exit)"),
        Param("fail_in", str, "", "'start', 'finish' or 'close': raise there"),
        Param("hold", bool, False, "keep every frame and emit them all from finish()"),
    )
    requires = ("snapshots",)

    def start(self):
        if self.fail_in == "start":
            raise OSError("cannot open the device")
        self.kept = []

    def process(self, frame):
        if self.delay:
            time.sleep(self.delay)
        if frame.seq in self.bad_at:
            raise BadFrame(f"refusing seq {frame.seq}")
        if frame.seq == self.fail_at:
            raise RuntimeError("boom")
        if frame.seq == self.exit_at:
            os._exit(3)
        frame.meta.setdefault("path", []).append(self.name)
        if self.hold:
            self.kept.append(frame)
            return None
        return frame

    def finish(self):
        if self.fail_in == "finish":
            raise ValueError("flush failed")
        return self.kept

    def close(self):
        if self.fail_in == "close":
            raise RuntimeError("close failed")


class SplitBlock(Block):
    """Test stage with two outputs: even seqs to 'even', odd seqs to 'odd'."""

    outputs = ("even", "odd")

    def process(self, frame):
        return {"even" if frame.seq % 2 == 0 else "odd": frame}


class JoinBlock(Block):
    """Test stage with two inputs 'a' and 'b'; tags each frame with the port it came in on."""

    inputs = ("a", "b")

    def process(self, frame, port):
        frame.meta["port"] = port
        return frame


class CollectSink(Sink):
    """Test sink: one line per frame 'seq value port pid' in a file, 'EOS' at the end."""

    params = (
        Param("path", str, doc="output file"),
        Param("delay", float, 0.0, "seconds per frame"),
    )

    def start(self):
        self.fh = open(self.path, "w")

    def process(self, frame):
        if self.delay:
            time.sleep(self.delay)
        y = frame.arrays["snapshots"]
        ok = bool(np.all(y == y.flat[0]))
        self.fh.write(
            f"{frame.seq} {y.flat[0].real:g} {frame.meta.get('port', '-')} {os.getpid()} "
            f"{int(ok)} {','.join(frame.meta.get('path', []))}\n"
        )
        self.fh.flush()

    def finish(self):
        self.fh.write("EOS\n")

    def close(self):
        self.fh.close()


TEST_BLOCKS = {
    "t_count": CountSource,
    "t_pass": PassBlock,
    "t_split": SplitBlock,
    "t_join": JoinBlock,
    "t_collect": CollectSink,
}
for _name, _cls in TEST_BLOCKS.items():
    registry.register(_name, _cls, replace=True)


def read_collect(path):
    """Parse a CollectSink file -> (rows [(seq, value, port, pid, ok, path)], saw_eos)."""
    rows, eos = [], False
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line == "EOS":
                eos = True
                continue
            seq, val, port, pid, ok, via = (line.split(" ") + [""])[:6]
            rows.append((int(seq), float(val), port, int(pid), ok == "1", via))
    return rows, eos


@pytest.fixture(scope="session", autouse=True)
def _numba_kernels_compiled():
    """Compile (or load from the on-disk cache) the numba kernels once, before any test.

    A flowgraph test whose first frame paid a cold compile would block its source for
    seconds and make timing-sensitive device emulations fail for a reason they do not test;
    a real deployment runs ``python -m nearfield.warmup`` once after installing.
    """
    from nearfield.warmup import warmup

    warmup()
