"""Compile and cache the numba kernels ahead of a run: ``python -m nearfield.warmup``.

Every kernel is compiled with ``cache=True``, so the machine code is stored next to its
module on the first call and later processes load it in milliseconds; without a warm cache
the first frame of a run pays the compilation (seconds).  This module runs each kernel once
on a tiny problem and prints how long that took (a second call prints ~0 s: warm).
"""

from __future__ import annotations

import time

import numpy as np


def warmup() -> float:
    """Call every compiled kernel once; returns the seconds it took."""
    from .array import ULA
    from .ml import refine_ml
    from .scenario import make_pilots
    from .steering import steering

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    arr = ULA(16, 30e9)
    S = make_pilots(1, 8, rng)
    Y = steering(arr, [0.1], [1.0]) @ S + 0.01 * (rng.standard_normal((16, 8)) + 1j * rng.standard_normal((16, 8)))
    refine_ml(Y, arr, [0.1], [1.0], S)  # lm_kernel.lm_exact (pilots)
    refine_ml(Y, arr, [0.1], [1.0], None)  # same kernel, estimated waveforms
    from .estimators.uncertainty import assess_estimate

    assess_estimate(Y, arr, [0.1], [1.0], S)  # lm_kernel.gain_normal, check_fisher (per-frame error bars)
    from .estimators.fullarray import full_array_localize

    full_array_localize(Y, arr, 1, S)  # fullarray._scan_kernel (the coarse grid scan)
    full_array_localize(Y, arr, 1)  # blind: the same kernel on the signal subspace
    return time.perf_counter() - t0


def main() -> None:
    print(f"nearfield: numba kernels ready in {warmup():.2f} s")


if __name__ == "__main__":
    main()
