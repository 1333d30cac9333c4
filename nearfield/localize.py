"""Library entry point: the three-phase HI-aware localization on one block of snapshots.

``localize(Y, array, pilots)`` runs the same functions the streaming blocks run
(:mod:`nearfield.blocks.fault_detector`, :mod:`~nearfield.blocks.calibrator`,
:mod:`~nearfield.blocks.music_localizer`), with no sockets::

    >>> import numpy as np, nearfield as nf
    >>> rng = np.random.default_rng(1)
    >>> sc = nf.paper_scenario(rng, snr_db=20)
    >>> est = nf.localize(sc.sample(rng), sc.array, sc.pilots)
    >>> est.theta, est.r, est.faulty          # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .array import ULA


@dataclass
class Localization:
    """Result of :func:`localize`; per-target arrays follow the pilot rows when pilots are given.

    Attributes
    ----------
    theta, r : (K,) final positions, rad and m.
    gains : (K,) complex channel gains (or None without refinement).
    faulty : (D,) int, detected faulty antennas (0-based).
    c_hat : (N,) complex, estimated HI vector (eq. 26).
    coarse_theta, coarse_r : (K,) Phase-1 triangulation (the paper's coarse estimate).
    music_theta, music_r : (K,) Phase-3 decoupled MUSIC (the paper's final estimate).
    diagnostics : dict -- noise_var, phase1_iterations, n_subarrays, z (N,), spectra.
    """

    theta: np.ndarray
    r: np.ndarray
    gains: np.ndarray | None
    faulty: np.ndarray
    c_hat: np.ndarray
    coarse_theta: np.ndarray
    coarse_r: np.ndarray
    music_theta: np.ndarray
    music_r: np.ndarray
    diagnostics: dict = field(default_factory=dict, repr=False)

    def positions(self) -> list[dict]:
        """Targets as estimates-record entries, sorted by theta."""
        return [{"theta": float(self.theta[i]), "range": float(self.r[i])} for i in np.argsort(self.theta)]


def localize(Y: np.ndarray, array: ULA, pilots: np.ndarray | None = None, n_targets=None, *,
             refine: bool = True, calibration: str = "circular", detector: dict | None = None,
             music: dict | None = None) -> Localization:
    """Detect faults, calibrate, and localize the targets in one block of snapshots.

    Parameters
    ----------
    Y : ndarray, shape (N, T), complex
        Snapshots of eq. (5).
    array : ULA
    pilots : ndarray, shape (K, T), optional
        Known probing signals; estimated from the data when None.
    n_targets : int or "auto", optional
        K; from ``pilots`` when given, MDL when "auto"/None without pilots.
    refine : bool
        Exact-model ML refinement after the MUSIC stage (False: the paper as written).
    calibration : {"circular", "unwrap"}
        Phase-2 estimator.
    detector, music : dict, optional
        Extra keyword arguments of :func:`~nearfield.blocks.fault_detector.detect_faults`
        and :func:`~nearfield.blocks.music_localizer.localize_fine`.

    Returns
    -------
    Localization
    """
    from .blocks.calibrator import calibrate
    from .blocks.fault_detector import detect_faults
    from .blocks.music_localizer import fine_localize

    Y = np.asarray(Y)
    p1 = detect_faults(Y, array, pilots, n_targets, **(detector or {}))
    c_hat, Yc = calibrate(Y.astype(np.complex128), array, p1.faulty, p1.theta, p1.r, p1.gains, p1.waveforms,
                          calibration)
    R = (Yc @ Yc.conj().T) / Y.shape[1]
    est = fine_localize(R, Yc, array, p1.coarse_theta, p1.coarse_r, pilots, refine=refine,
                        fallback=(p1.theta, p1.r), **(music or {}))
    diag = {"noise_var": p1.sigma2, "phase1_iterations": p1.iterations, "n_subarrays": p1.n_subarrays,
            "z": p1.z, "spectra": est.spectra}
    return Localization(est.theta, est.r, est.gains, p1.faulty, c_hat, p1.coarse_theta, p1.coarse_r,
                        est.music_theta, est.music_r, diag)
