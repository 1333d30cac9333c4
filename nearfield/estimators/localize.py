"""The proposed chain as one call: Phase 1, Phase 2, Phase 3 and the exact-model refinement.

``localize(Y, array, pilots)`` runs the same core functions the streaming blocks run, with
no sockets::

    >>> import numpy as np, nearfield as nf
    >>> rng = np.random.default_rng(1)
    >>> sc = nf.paper_scenario(rng, snr_db=20)
    >>> est = nf.localize(sc.sample(rng), sc.array, sc.pilots)
    >>> est.theta, est.r, est.faulty          # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..array import ULA
from .interface import Estimate
from .phase1 import detect_faults
from .phase2 import calibrate
from .phase3 import fine_positions


@dataclass
class Localization(Estimate):
    """Result of :func:`localize`: an :class:`~nearfield.estimators.interface.Estimate` plus the
    intermediate estimates; per-target arrays follow the pilot rows when pilots are given.

    Attributes (besides Estimate's)
    -------------------------------
    coarse_theta, coarse_r : (K,) Phase-1 triangulation (the paper's coarse estimate).
    music_theta, music_r : (K,) Phase-3 decoupled MUSIC (the paper's final estimate).
    diagnostics : noise_var, phase1_iterations, n_subarrays, z (N,), spectra.
    """

    coarse_theta: np.ndarray | None = None
    coarse_r: np.ndarray | None = None
    music_theta: np.ndarray | None = None
    music_r: np.ndarray | None = None


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
        Extra keyword arguments of :func:`~nearfield.estimators.phase1.detect_faults`
        and :func:`~nearfield.estimators.phase3.decoupled_music`.

    Returns
    -------
    Localization
    """
    Y = np.asarray(Y)
    p1 = detect_faults(Y, array, pilots, n_targets, **(detector or {}))
    c_hat, Yc = calibrate(Y.astype(np.complex128), array, p1.faulty, p1.theta, p1.r, p1.gains, p1.waveforms,
                          calibration)
    R = (Yc @ Yc.conj().T) / Y.shape[1]
    est = fine_positions(R, Yc, array, p1.coarse_theta, p1.coarse_r, pilots, refine=refine,
                         fallback=(p1.theta, p1.r), **(music or {}))
    diag = {"noise_var": p1.sigma2, "phase1_iterations": p1.iterations, "n_subarrays": p1.n_subarrays,
            "z": p1.z, "spectra": est.spectra}
    return Localization(est.theta, est.r, est.gains, p1.faulty, c_hat, diagnostics=diag,
                        coarse_theta=p1.coarse_theta, coarse_r=p1.coarse_r, music_theta=est.music_theta,
                        music_r=est.music_r)


def paper(Y: np.ndarray, array: ULA, pilots: np.ndarray | None = None, n_targets=None, **options) -> Localization:
    """The three phases as the paper writes them (:func:`localize` with ``refine=False``)."""
    return localize(Y, array, pilots, n_targets, refine=False, **options)
