"""QA of the console sink."""

import numpy as np

from nearfield.frame import Frame
from nearfield.sinks.console import ConsoleSink


def test_prints_every_kth_frame_in_degrees_and_metres(capsys):
    sink = ConsoleSink(every=2)
    sink.start()
    for seq in range(5):
        sink.process(
            Frame(
                seq,
                0.0,
                {"snapshots": np.zeros((1, 1), np.complex64)},
                {
                    "targets": [{"theta": np.pi / 6, "range": 10.0}, {"theta": -np.pi / 12, "range": 18.5}],
                    "faulty": [1, 2, 3],
                },
            )
        )
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[1] for ln in lines] == ["0", "2", "4"]
    assert "(-15.00 deg, 18.50 m) (30.00 deg, 10.00 m)" in lines[0]
    assert "faulty: 3" in lines[0]


def test_frame_without_estimates(capsys):
    sink = ConsoleSink()
    sink.start()
    sink.process(Frame(3, 0.5, {}, {"truth": {"targets": [{"theta": 0.0, "range": 5.0}], "faulty": [4]}}))
    out = capsys.readouterr().out
    assert "targets: none" in out and "faulty: n/a" in out and "truth: (0.00 deg, 5.00 m), 1 faulty" in out
