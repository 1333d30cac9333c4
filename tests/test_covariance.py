"""QA of the covariance block against an independent float64 computation."""

import logging

import numpy as np
import pytest

from nearfield.block import BadFrame, ParamError
from nearfield.blocks.covariance import Covariance, sample_covariance
from nearfield.frame import Frame


def frames(rng, n=12, t=30, count=4):
    for k in range(count):
        y = (rng.standard_normal((n, t)) + 1j * rng.standard_normal((n, t))).astype(np.complex64)
        yield Frame(seq=k, t0=0.0, arrays={"snapshots": y})


def reference(y):
    y = y.astype(np.complex128)
    return np.einsum("it,jt->ij", y, y.conj()) / y.shape[1]


def test_per_frame_covariance_matches_independent_sum():
    blk = Covariance()
    blk.start()
    for f in frames(np.random.default_rng(0)):
        y = f.arrays["snapshots"].copy()
        out = blk.process(f)
        R = out.arrays["covariance"]
        assert R.dtype == np.complex64 and R.shape == (12, 12)
        ref = reference(y)
        assert np.max(np.abs(R - ref)) < 1e-5 * np.max(np.abs(ref))
        assert np.allclose(R, R.conj().T, atol=1e-6)
        assert np.array_equal(out.arrays["snapshots"], y)  # input untouched


def test_exponential_average_follows_documented_recursion():
    ff = 0.75
    blk = Covariance(forget=ff)
    blk.start()
    acc = None
    for fr in frames(np.random.default_rng(1), count=6):
        ref = reference(fr.arrays["snapshots"])
        acc = ref if acc is None else ff * acc + (1 - ff) * ref
        R = blk.process(fr).arrays["covariance"]
        assert np.max(np.abs(R - acc)) < 1e-5 * np.max(np.abs(acc))


def test_average_converges_to_true_covariance():
    # white unit-variance noise: E[R] = 2 I (re and im each variance 1)
    blk = Covariance(forget=0.95)
    blk.start()
    for f in frames(np.random.default_rng(2), n=4, t=50, count=200):
        R = blk.process(f).arrays["covariance"]
    assert np.max(np.abs(R - 2 * np.eye(4))) < 0.3


def test_antenna_count_change_restarts_average(caplog):
    blk = Covariance(name="cov", forget=0.5)
    blk.start()
    rng = np.random.default_rng(3)
    for f in frames(rng, n=8, count=2):
        blk.process(f)
    f = next(frames(rng, n=5, count=1))
    ref = reference(f.arrays["snapshots"])
    with caplog.at_level(logging.WARNING):
        R = blk.process(f).arrays["covariance"]
    assert R.shape == (5, 5) and np.allclose(R, ref, atol=1e-5)
    assert blk.resets == 1 and "restarting" in caplog.text


def test_bad_snapshots_raise_badframe_and_bad_forget_is_refused():
    blk = Covariance()
    blk.start()
    with pytest.raises(BadFrame):
        blk.process(Frame(0, 0.0, {"snapshots": np.zeros(8, np.complex64)}))
    with pytest.raises(ParamError, match="forget"):
        Covariance(forget=1.0)
    assert Covariance.requires == ("snapshots",)


def test_library_function_keeps_complex64():
    y = np.ones((3, 4), np.complex64)
    R = sample_covariance(y)
    assert R.dtype == np.complex64 and np.allclose(R, np.ones((3, 3)))
