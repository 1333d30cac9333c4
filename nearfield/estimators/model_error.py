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
  9-antenna stand-in with 5 dB gain spread, the noise weights sent 4-6 in 100 recordings to
  spurious positions more than 5 deg off; the model-error weights none.)
* **Error bars** (:func:`model_error_bars`): a static error does not average over the T
  snapshots as noise does.  To first order the estimate moves by a linear function of the
  residual summed over the snapshots; noise adds T independent terms, the static error T
  equal ones, so its variance is T times that of noise of the same power: the CRB error bars
  hold with the effective variance ``sigma2 + T sigma_m2`` (:func:`static_error_variance`;
  the CRB is proportional to the noise variance).  That ratio is measured directly, target
  by target, by the residual along the target's own waveform (:func:`in_span_ratio`, the
  Birge ratio of the fit), and the bars are scaled by its square root where it is
  significant.  On the 9-antenna stand-in this turns a 2-sigma coverage of 10-20 % into
  about 95 %.

The model-error power is estimated robustly: ``d_n = eu_n - s sigma2 / w0_n`` (residual power
above the noise the fit leaves, share ``s`` of it) is about exponentially distributed over the
antennas, whose median is ``ln 2`` times its mean, so ``sigma_m2 = median(d) / ln 2`` -- one
faulty antenna with a large residual does not inflate it.
"""

from __future__ import annotations

import numpy as np

from ..array import ULA
from ..ml import check_fit_inputs, ls_gains, ls_waveforms
from ..steering import steering
from .uncertainty import _f_quantile

__all__ = [
    "detect_model_error",
    "model_error_bars",
    "model_error_weights",
    "residual_power",
    "in_span_ratio",
    "static_error_variance",
]


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


def _check_vectors(eu, w0):
    eu, w0 = np.asarray(eu, float), np.asarray(w0, float)
    if eu.ndim != 1 or w0.shape != eu.shape:
        raise ValueError(f"eu, w0: expected two (N,) vectors, got shapes {eu.shape} and {w0.shape}")
    if np.any(w0 < 0):
        raise ValueError("w0: expected non-negative antenna weights")
    return eu, w0


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

    Raises
    ------
    ValueError
        Shapes differ, negative weights, or no antenna with ``w0 > 0``.
    """
    eu, w0 = _check_vectors(eu, w0)
    good = w0 > 0
    if not np.any(good):
        raise ValueError("w0: every antenna has weight 0")
    var0 = sigma2 / np.where(good, w0, 1.0)
    d = eu[good] - dof_share * var0[good]
    sm2 = max(float(np.median(d)) / np.log(2.0), 0.0)
    w = np.where(good, 1.0 / (var0 + sm2), 0.0)
    return w / np.mean(w[good]), sm2


def detect_model_error(
    eu, w0, sigma2: float, n_targets: int, T: int, blind: bool, alpha: float = 0.01, floor_dof: float | None = None
) -> tuple[np.ndarray | None, float]:
    """Is the residual more than noise?  If so, the model-error weights and power (module doc).

    A global F test of the residual energy; it is meant for the *weights* of a fit (a small
    model error changes them little).  It is much weaker than the per-target test of
    :func:`~.uncertainty.model_check` when the error lies in the pilots' row space, so the
    error bars (:func:`static_error_scale`) do not use it.

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
    eu, w0 = _check_vectors(eu, w0)
    good = w0 > 0
    n_eff = float(np.sum(good))
    if not sigma2 > 0 or n_eff < 2:
        return None, 0.0
    K = int(n_targets)
    dof_fit = n_eff * T - (K * T + K if blind else 2 * K)
    if dof_fit < 1:  # as many parameters as data: no residual to test
        return None, 0.0
    ratio = float(np.sum(w0[good] * eu[good])) * T / (sigma2 * dof_fit)
    dof_floor = n_eff * T if floor_dof is None else float(floor_dof)
    if ratio <= _f_quantile(1.0 - alpha, 2 * dof_fit, 2 * dof_floor):
        return None, 0.0
    return model_error_weights(eu, w0, sigma2, dof_fit / (n_eff * T))


def static_error_variance(sigma2: float, sigma_m2: float, T: int) -> float:
    """Effective noise variance for CRB error bars with a static model error: ``sigma2 + (T - 1) sigma_m2``.

    ``sigma2`` is the fit's residual variance per degree of freedom (noise plus the model
    error's one-snapshot share ``sigma_m2``, both in the fit's weighted units); the static
    error counts T-fold (module doc).
    """
    return float(sigma2) + max(int(T) - 1, 0) * max(float(sigma_m2), 0.0)


def in_span_ratio(
    Y: np.ndarray, array: ULA, theta, r, waveforms: np.ndarray, w, sigma2: float, c=None
) -> tuple[np.ndarray, float]:
    """Residual energy along each target's waveform over the noise, per target (module doc).

    With the fitted waveforms X (K, T) (``gains * pilots``, or the LS waveforms blind) and the
    weighted residual ``E = sqrt(w) (Y - diag(c) A X)`` (``c``: the fit's channel amplitudes, or
    None), the decorrelated columns
    ``E_k = E X^H (X X^H)^-1/2`` hold what stays *the same* in every snapshot: a static
    per-antenna error ``delta_n`` gives ``|E_nk|^2 ~ |delta_n|^2 ||x_k||^2``, noise gives
    ``sigma2``.  Blind, the LS waveforms are functions of ``A^+ Y`` and the residual of
    ``P_A^perp Y``, orthogonal projections of white noise, so under the model the ratio is
    exactly ``chi2(2 m) / 2m`` with ``m = N_eff - K``.

    Returns
    -------
    F : (K,) ``||E_k||^2 / (m sigma2)`` (about 1 under the model; ``1 + T sigma_m2 / sigma2`` with a static error).
    m : float, complex degrees of freedom per target.
    """
    theta, r = np.atleast_1d(np.asarray(theta, float)), np.atleast_1d(np.asarray(r, float))
    X = np.atleast_2d(np.asarray(waveforms, complex))
    w = np.asarray(w, float)
    A = steering(array, theta, r)
    if c is not None:
        A = np.asarray(c)[:, None] * A
    E = np.sqrt(w)[:, None] * (Y - A @ X)
    lam, U = np.linalg.eigh(X @ X.conj().T)
    lam = np.maximum(lam, 1e-300 + 1e-12 * max(float(lam.max()), 0.0))
    Ek = E @ X.conj().T @ (U * (1.0 / np.sqrt(lam))) @ U.conj().T
    m = max(float(np.sum(w > 0)) - theta.size, 1.0)
    return np.sum(np.abs(Ek) ** 2, axis=0) / (m * sigma2), m


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
    c=None,
    per_target_F=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CRB error bars of a final estimate scaled for a static model error (module doc).

    A static error moves the estimate as T snapshots of noise would move it once, and it is
    exactly what the residual along the target's own waveform measures
    (:func:`in_span_ratio`): for every target whose ratio exceeds the ``1 - alpha`` quantile
    of its noise-only F law the bars become those at the noise floor times ``sqrt(F_k)`` (the
    Birge ratio of a least-squares fit, per target), i.e. the given bars (at ``sigma2_fit``)
    times ``sqrt(max(F_k sigma2_floor / sigma2_fit, 1))``; the others are left as they are.
    ``F = 1 + T sigma_m2 / sigma2`` is :func:`static_error_variance` over ``sigma2``.

    Parameters
    ----------
    Y : (N, T) snapshots the estimate was fitted to.  theta, r : (K,) rad, m.  gains : (K,) complex
    (pilots; None: LS gains) or None (blind: the LS waveforms are fitted here).  pilots : (K, T) or None.
    w : (N,) weights of the fit (None: ones).  check : the estimate's :func:`~.uncertainty.model_check`
    dict (``sigma2_floor``, ``sigma2_fit``, computed with ``w``).  theta_std, r_std : (K,) the bars
    at ``sigma2_fit``.  alpha : false-alarm rate of the per-target test.  c : (N,) channel amplitudes
    of the fit's model, or None.  per_target_F : (K,) the in-span ratios when the caller has them
    (the per-target test of :func:`~.uncertainty.model_check` with full-rank pilots is this ratio,
    and its ``mismatch`` flags are the test), else computed here.

    Returns
    -------
    theta_std, r_std : (K,) scaled bars.
    F : (K,) the in-span ratios (1 where not significant).

    Raises
    ------
    ValueError
        Inputs that do not fit together (:func:`nearfield.ml.check_fit_inputs`), a check dict without
        ``sigma2_floor`` / ``sigma2_fit``.
    """
    check_fit_inputs(Y, array, theta, r, pilots, gains if pilots is not None else None, w)
    Y = np.asarray(Y)
    theta, r = np.atleast_1d(np.asarray(theta, float)), np.atleast_1d(np.asarray(r, float))
    if "sigma2_floor" not in check or "sigma2_fit" not in check:
        raise ValueError("check: expected the model_check dict with 'sigma2_floor' and 'sigma2_fit'")
    w = np.ones(Y.shape[0]) if w is None else np.asarray(w, float)
    T = Y.shape[1]
    floor, fit = float(check["sigma2_floor"]), float(check["sigma2_fit"])
    if per_target_F is not None:
        F = np.asarray(per_target_F, float)
        sig = np.asarray(check["mismatch"], bool)
    else:
        A = steering(array, theta, r)
        if pilots is not None:
            g = ls_gains(A, pilots, Y, c, w) if gains is None else np.asarray(gains)
            X = g[:, None] * np.atleast_2d(pilots)
        else:
            X = ls_waveforms(A, Y, c, w)
        F, m = in_span_ratio(Y, array, theta, r, X, w, floor, c)
        sig = F > _f_quantile(1.0 - alpha, 2 * m, 2 * max(float(np.sum(w > 0)) * T, 1.0))
    F = np.where(sig, F, 1.0)
    k = np.where(sig, np.sqrt(np.maximum(F * floor / max(fit, 1e-300), 1.0)), 1.0)
    return np.asarray(theta_std) * k, np.asarray(r_std) * k, F
