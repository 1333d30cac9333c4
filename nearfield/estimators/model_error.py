"""Static model error: what the point-source model of eq. (1) leaves in real data, and its effect.

A real array's data rarely follow eq. (1) exactly: a calibration from a reference transmitter
in a room keeps part of the reference's reflections in its HI vector, the target's own
reflections add coherent paths the one-path model lacks, element positions and couplings are
off.  To first order each antenna then carries a *static* relative error ``delta_n``: the
residual of a good fit at antenna n is ``delta_n x_{n,t}`` (x the modelled signal) plus noise.
This module models ``delta_n`` as independent over the antennas with a common power and
draws three consequences:

* **Detection** (:func:`detect_model_error`): the residual power per antenna, weighted by
  the noise weights, is tested against the fit-independent noise floor (an F test); when
  the noise explains it, nothing changes.
* **Weights** (:func:`model_error_weights`): antenna n's residual variance is
  ``sigma2 / w0_n + sigma_m2`` (noise plus model error), so the fit's weights become
  ``1 / (sigma2 / w0_n + sigma_m2)``.  The noise weights ``w0_n = |hi_n|^2`` of a calibrated
  array trust the channels with a large gain; when the model error dominates, every
  calibrated channel is about equally wrong and the weights tend to uniform.  (On our
  9-antenna stand-in with 5 dB gain spread, the noise weights sent 4 in 100 recordings to
  spurious positions more than 5 deg off; the model-error weights none.)
* **Error bars** (:func:`static_error_variance`): a static error does not average over the
  T snapshots as noise does.  To first order the estimate moves by a linear function of the
  residual summed over the snapshots; noise adds T independent terms, the static error T
  equal ones, so its variance is T times that of noise of the same power.  The CRB error
  bars are therefore evaluated with the effective variance ``sigma2 + T sigma_m2``
  (the CRB is proportional to the noise variance).  On the stand-in this turns a 2-sigma
  coverage of 10-20 % into 90-98 %.

The model-error power is estimated robustly: ``d_n = eu_n - s sigma2 / w0_n`` (residual power
above the noise the fit leaves, share ``s`` of it) is about exponentially distributed over the
antennas, whose median is ``ln 2`` times its mean, so ``sigma_m2 = median(d) / ln 2`` -- one
faulty antenna with a large residual does not inflate it.
"""

from __future__ import annotations

import numpy as np

from ..array import ULA
from ..ml import ls_gains, ls_waveforms
from ..steering import steering
from .uncertainty import _f_quantile

__all__ = ["detect_model_error", "model_error_bars", "model_error_weights", "residual_power", "static_error_variance"]


def residual_power(Y: np.ndarray, array: ULA, fit, pilots: np.ndarray | None, c=None) -> tuple[np.ndarray, np.ndarray]:
    """Model and residual power of a :func:`nearfield.ml.refine_ml` fit.

    Parameters
    ----------
    Y : (N, T) snapshots.  array : ULA.  fit : MLFit (``theta``, ``r``, ``gains``, ``pilots``).
    pilots : (K, T) or None (blind: ``fit.pilots`` are the LS waveforms).  c : (N,) HI of the model or None.

    Returns
    -------
    M : (N, T) complex, the modelled signal without ``c``.
    eu : (N,) float, residual power per antenna and snapshot, ``mean_t |y_nt - c_n m_nt|^2`` (unweighted).
    """
    A = steering(array, fit.theta, fit.r)
    M = A @ (fit.gains[:, None] * fit.pilots) if pilots is not None else A @ fit.pilots
    E = Y - (M if c is None else np.asarray(c)[:, None] * M)
    return M, np.sum(np.abs(E) ** 2, axis=1) / Y.shape[1]


def model_error_weights(eu, w0, sigma2: float, dof_share: float = 1.0) -> tuple[np.ndarray, float]:
    """Antenna weights with a static model-error term and the model-error power (module doc).

    Parameters
    ----------
    eu : (N,) residual power per antenna and snapshot (unweighted).
    w0 : (N,) noise weights (antenna n's noise variance ``sigma2 / w0_n``; 0 excludes).
    sigma2 : noise variance of a unit-weight antenna.
    dof_share : share of the noise the fit leaves in the residual, ``dof_fit / (N_eff T)``.

    Returns
    -------
    w : (N,) ``1 / (sigma2 / w0_n + sigma_m2)``, scaled to mean 1 on the antennas with ``w0 > 0`` (0 elsewhere).
    sigma_m2 : float, model-error power per antenna and snapshot, ``median(d) / ln 2`` (>= 0).
    """
    eu, w0 = np.asarray(eu, float), np.asarray(w0, float)
    good = w0 > 0
    var0 = sigma2 / np.where(good, w0, 1.0)
    d = eu[good] - dof_share * var0[good]
    sm2 = max(float(np.median(d)) / np.log(2.0), 0.0)
    w = np.where(good, 1.0 / (var0 + sm2), 0.0)
    return w / np.mean(w[good]), sm2


def detect_model_error(
    eu, w0, sigma2: float, n_targets: int, T: int, blind: bool, alpha: float = 0.01, floor_dof: float | None = None
) -> tuple[np.ndarray | None, float]:
    """Is the residual more than noise?  If so, the model-error weights and power (module doc).

    Parameters
    ----------
    eu : (N,) residual power per antenna and snapshot.  w0 : (N,) noise weights.
    sigma2 : fit-independent noise floor (:func:`~.uncertainty.noise_floor`) of the w0-weighted data.
    n_targets : K.  T : snapshots.  blind : the fit estimated the waveforms (K T + K complex dof), else K gains.
    alpha : false-alarm rate of the F test.  floor_dof : complex dof of the floor (default N_eff T).

    Returns
    -------
    (w, sigma_m2) of :func:`model_error_weights`, or ``(None, 0.0)`` when the test passes.
    """
    eu, w0 = np.asarray(eu, float), np.asarray(w0, float)
    good = w0 > 0
    n_eff = float(np.sum(good))
    if not sigma2 > 0 or n_eff < 2:
        return None, 0.0
    K = int(n_targets)
    dof_fit = max(n_eff * T - (K * T + K if blind else 2 * K), 1.0)
    ratio = float(np.sum(w0[good] * eu[good])) * T / (sigma2 * dof_fit)
    dof_floor = n_eff * T if floor_dof is None else float(floor_dof)
    if ratio <= _f_quantile(1.0 - alpha, 2 * dof_fit, 2 * dof_floor):
        return None, 0.0
    return model_error_weights(eu, w0, sigma2, dof_fit / (n_eff * T))


def static_error_variance(sigma2: float, sigma_m2: float, T: int) -> float:
    """Effective noise variance for CRB error bars with a static model error: ``sigma2 + (T - 1) sigma_m2``.

    ``sigma2`` is the fit's residual variance per degree of freedom (noise plus the model
    error's one-snapshot share ``sigma_m2``); the static error counts T-fold (module doc).
    """
    return float(sigma2) + max(int(T) - 1, 0) * max(float(sigma_m2), 0.0)


def model_error_bars(
    Y: np.ndarray,
    array: ULA,
    theta,
    r,
    gains,
    pilots: np.ndarray | None,
    w,
    check: dict,
    theta_std,
    r_std,
    alpha: float = 0.01,
) -> tuple[np.ndarray, np.ndarray, float]:
    """CRB error bars of a final estimate with a static model error counted T-fold (module doc).

    Parameters
    ----------
    Y : (N, T) snapshots the estimate was fitted to.  theta, r : (K,) rad, m.  gains : (K,) complex
    (pilots; None: LS gains) or None (blind: the LS waveforms are fitted here).  pilots : (K, T) or None.
    w : (N,) noise weights.  check : the estimate's :func:`~.uncertainty.model_check` dict
    (``sigma2_fit``, ``sigma2_floor``).  theta_std, r_std : (K,) error bars at ``sigma2_fit``.

    Returns
    -------
    theta_std, r_std : (K,) scaled by ``sqrt(static_error_variance / sigma2_fit)`` when a model
    error is detected (:func:`detect_model_error`), else unchanged.
    sigma_m2 : float, the model-error power (0 when none).
    """
    theta, r = np.atleast_1d(theta), np.atleast_1d(r)
    w = np.ones(Y.shape[0]) if w is None else np.asarray(w, float)
    T = Y.shape[1]
    A = steering(array, theta, r)
    if pilots is not None:
        g = ls_gains(A, pilots, Y, None, w) if gains is None else np.asarray(gains)
        M = A @ (g[:, None] * pilots)
    else:
        M = A @ ls_waveforms(A, Y, None, w)
    eu = np.sum(np.abs(Y - M) ** 2, axis=1) / T
    wm, sm2 = detect_model_error(eu, w, float(check["sigma2_floor"]), theta.size, T, pilots is None, alpha)
    if wm is None:
        return np.asarray(theta_std), np.asarray(r_std), 0.0
    k = np.sqrt(static_error_variance(check["sigma2_fit"], sm2, T) / check["sigma2_fit"])
    return np.asarray(theta_std) * k, np.asarray(r_std) * k, sm2
