"""Cramér-Rao bounds with and without HI knowledge, paper Sec. V, eqs. (38)-(47).

Parameter vector (Sec. V-A): ``eta = [Re beta, Im beta, theta, r]`` (4K,), so index
``i`` belongs to target ``i % K`` and to the component ``i // K`` (0: Re beta,
1: Im beta, 2: theta in rad, 3: r in m).

Mean model (eq. (37)), on the *exact* spherical steering model that generates the data
(:mod:`nearfield.steering`, eq. (1)):

    mu(eta) = diag(c) A(theta, r) diag(beta) S         (N, T), flattened C-order to (N T,)

Every first derivative is an outer product, ``d mu / d eta_i = g_i s_{k_i}^T`` with
``g_i`` in C^N:

    d/d Re beta_k = c o a_k,   d/d Im beta_k = j c o a_k,
    d/d theta_k   = beta_k c o a_t,k,   d/d r_k = beta_k c o a_r,k,

and every second derivative too, ``d2 mu / d eta_i d eta_j = h_ij s_k^T`` when both
indices belong to target k (zero otherwise):

    (Re b, theta): c o a_t    (Im b, theta): j c o a_t    (Re b, r): c o a_r   (Im b, r): j c o a_r
    (theta, theta): beta c o a_tt   (theta, r): beta c o a_tr   (r, r): beta c o a_rr
    (Re b, Re b) = (Re b, Im b) = (Im b, Im b) = 0.

a_t, a_r, a_tt, ... are the analytic steering derivatives of
:func:`nearfield.steering.steering_derivatives` (tested against finite differences);
Appendix B of the paper is not used (errata 12).  With this structure the
inner products never need the (N T x 4K) Jacobian:
``<g s_k^T, h s_l^T> = (g^H h) (s_k^H s_l)``, i.e. ``D^H D = (G^H G) o P`` with
``P_kl = sum_t conj(s_{k,t}) s_{l,t}``.

Noise is circularly-symmetric complex Gaussian, ``n ~ CN(0, sigma2 I)``, so
``ln p(y | eta) = const - ||y - mu(eta)||^2 / sigma2`` and (errata 9; the paper's
eqs. (38)-(39), (44)-(46) are written for a real Gaussian and lose a factor 2):

* score:     ``d ln p / d eta_i = (2 / sigma2) Re{dmu_i^H (y - mu)}``
* FIM (46):  ``J = (2 / sigma2) Re{D^H D}``; CRB = J^-1 (the full matrix; Sec. VI uses
  its diagonal, not the trace of eq. (47), errata 10).
* C (44):    ``C_ij = (2 / sigma2) Re{d2mu_ij^H eps - dmu_i^H dmu_j}``, the expected
  Hessian of the assumed log-likelihood under the true density, with
  ``eps = mu_true - mu~(eta)`` (mu~ the assumed fault-free model, c = 1).
* J~ (45):   ``J~_ij = (4 / sigma2^2) Re{dmu_i^H eps} Re{dmu_j^H eps} + (2 / sigma2) Re{dmu_i^H dmu_j}``,
  from ``E[Re(a^H n) Re(b^H n)] = (sigma2 / 2) Re(a^H b)`` for CN noise.  At the exact
  pseudo-true point the first term vanishes (the expected score is zero there), so J~
  is the assumed model's FIM there; it is kept for evaluation at other points.
* MCRB (41) = C^-1 J~ C^-1; Bias (43) = (eta_pt - eta)(eta_pt - eta)^T; LB (42) = Bias + MCRB.

The pseudo-true parameter (40) minimises KL(p || p~), which for two Gaussians with
the same covariance is ``||mu_true - mu~(eta)||^2 / sigma2`` up to a constant: a
least-squares fit of the fault-free model to the true noiseless mean, independent of
sigma2.  :func:`pseudo_true` solves it with ``scipy.optimize.least_squares``
(Levenberg-Marquardt, analytic Jacobian), started at the truth *and* at perturbed
points (a quarter beamwidth in angle, a few per cent in range), keeps the lowest
cost, and verifies that the cost is not above the cost at the truth and that the
gradient is negligible (see docs/bounds.md).

Root figures of Sec. VI-A (errata 11): ``R-X_angle = sqrt(mean_k X[theta_k, theta_k])``,
the average over targets (the RMSEs average too), same for range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from .array import ULA
from .steering import steering_derivatives

__all__ = [
    "pack",
    "unpack",
    "mean_model",
    "derivative_vectors",
    "jacobian",
    "fim",
    "crb",
    "pseudo_true",
    "PseudoTrue",
    "MisspecifiedBounds",
    "misspecified_bounds",
    "root_bounds",
    "fim_unknown_waveforms",
    "crb_unknown_waveforms",
    "crb_positions",
]


# ----------------------------------------------------------------------------- parameters
def pack(theta, r, gains) -> np.ndarray:
    """eta = [Re beta, Im beta, theta, r], shape (4K,)."""
    gains = np.asarray(gains, dtype=complex).ravel()
    return np.concatenate([gains.real, gains.imag, np.asarray(theta, float).ravel(), np.asarray(r, float).ravel()])


def unpack(eta):
    """Inverse of :func:`pack`: (theta (K,), r (K,), gains (K,) complex)."""
    eta = np.asarray(eta, float)
    if eta.ndim != 1 or eta.size % 4:
        raise ValueError(f"eta: expected a vector of length 4K, got shape {eta.shape}")
    k = eta.size // 4
    return eta[2 * k : 3 * k].copy(), eta[3 * k :].copy(), eta[:k] + 1j * eta[k : 2 * k]


def _inputs(theta, r, gains, pilots, c, n_antennas):
    theta = np.atleast_1d(np.asarray(theta, float))
    r = np.atleast_1d(np.asarray(r, float))
    gains = np.atleast_1d(np.asarray(gains, complex))
    S = np.atleast_2d(np.asarray(pilots, complex))
    k = theta.size
    if r.shape != (k,) or gains.shape != (k,) or S.shape[0] != k:
        raise ValueError(
            f"theta, r, gains, pilots: expected shapes (K,), (K,), (K,), (K, T); got "
            f"{theta.shape}, {r.shape}, {gains.shape}, {S.shape}"
        )
    if c is None:
        c = np.ones(n_antennas, complex)
    else:
        c = np.asarray(c, complex)
        if c.shape != (n_antennas,):
            raise ValueError(f"c: expected shape ({n_antennas},), got {c.shape}")
    return theta, r, gains, S, c


# ----------------------------------------------------------------------------- model
def mean_model(array: ULA, theta, r, gains, pilots, c=None, model: str = "exact") -> np.ndarray:
    """mu = diag(c) A(theta, r) diag(beta) S, shape (N, T) complex (eq. (37))."""
    theta, r, gains, S, c = _inputs(theta, r, gains, pilots, c, array.n_antennas)
    d = steering_derivatives(array, theta, r, model)
    return (c[:, None] * d.a) @ (gains[:, None] * S)


def derivative_vectors(array: ULA, theta, r, gains, c=None, model: str = "exact"):
    """Antenna-domain factors of the first and second derivatives of mu.

    Returns
    -------
    G : ndarray, shape (N, 4K), complex
        ``d mu / d eta_i = G[:, i] s_{k_i}^T``.
    H : ndarray, shape (N, 4K, 4K), complex
        ``d2 mu / d eta_i d eta_j = H[:, i, j] s_k^T`` when ``i % K == j % K == k``;
        zero (and H zero) otherwise.  Symmetric in (i, j).
    """
    theta = np.atleast_1d(np.asarray(theta, float))
    r = np.atleast_1d(np.asarray(r, float))
    gains = np.atleast_1d(np.asarray(gains, complex))
    k = theta.size
    c = np.ones(array.n_antennas, complex) if c is None else np.asarray(c, complex)
    d = steering_derivatives(array, theta, r, model)
    cc = c[:, None]
    a, a_t, a_r = cc * d.a, cc * d.a_t, cc * d.a_r
    G = np.concatenate([a, 1j * a, gains * a_t, gains * a_r], axis=1)
    n = array.n_antennas
    H = np.zeros((n, 4 * k, 4 * k), complex)
    for q in range(k):
        ire, iim, it, ir = q, k + q, 2 * k + q, 3 * k + q
        pairs = {
            (ire, it): a_t[:, q],
            (iim, it): 1j * a_t[:, q],
            (ire, ir): a_r[:, q],
            (iim, ir): 1j * a_r[:, q],
            (it, it): gains[q] * c * d.a_tt[:, q],
            (it, ir): gains[q] * c * d.a_tr[:, q],
            (ir, ir): gains[q] * c * d.a_rr[:, q],
        }
        for (i, j), v in pairs.items():
            H[:, i, j] = v
            H[:, j, i] = v
    return G, H


def jacobian(array: ULA, theta, r, gains, pilots, c=None, model: str = "exact") -> np.ndarray:
    """D = d mu / d eta^T, shape (N T, 4K) complex, rows in the C-order of mu (N, T).

    Formed explicitly (the solver of :func:`pseudo_true` and the tests need it); the
    bounds themselves use the factored form of :func:`derivative_vectors`.
    """
    theta, r, gains, S, c = _inputs(theta, r, gains, pilots, c, array.n_antennas)
    G, _ = derivative_vectors(array, theta, r, gains, c, model)
    kidx = np.tile(np.arange(theta.size), 4)
    return (G[:, None, :] * S[kidx].T[None, :, :]).reshape(-1, G.shape[1])


def _gram(G, S, K):
    kidx = np.tile(np.arange(K), 4)
    P = S.conj() @ S.T
    return np.real((G.conj().T @ G) * P[np.ix_(kidx, kidx)])


def _inv_sym(M: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric (possibly badly scaled) matrix, by diagonal equilibration."""
    s = 1.0 / np.sqrt(np.abs(np.diag(M)))
    inv = np.linalg.inv(M * s[:, None] * s[None, :]) * s[:, None] * s[None, :]
    return 0.5 * (inv + inv.T)


def fim(array: ULA, theta, r, gains, pilots, sigma2: float, c=None, model: str = "exact") -> np.ndarray:
    """Fisher information (eq. (46), CN noise): ``(2 / sigma2) Re{D^H D}``, shape (4K, 4K).

    ``c`` is the (known) HI vector; with unit-modulus c the FIM equals the fault-free one.
    """
    theta, r, gains, S, c = _inputs(theta, r, gains, pilots, c, array.n_antennas)
    if not sigma2 > 0:
        raise ValueError(f"sigma2: expected a positive noise variance, got {sigma2!r}")
    G, _ = derivative_vectors(array, theta, r, gains, c, model)
    return (2.0 / sigma2) * _gram(G, S, theta.size)


def crb(array: ULA, theta, r, gains, pilots, sigma2: float, c=None, model: str = "exact") -> np.ndarray:
    """CRB matrix J^-1 (Sec. V-B, the full matrix, not the trace of eq. (47)), (4K, 4K)."""
    return _inv_sym(fim(array, theta, r, gains, pilots, sigma2, c, model))


def fim_unknown_waveforms(array: ULA, theta, r, waveforms, sigma2: float, c=None, model: str = "exact") -> np.ndarray:
    """Fisher information of the positions alone with unknown deterministic waveforms, (2K, 2K).

    Blind model: ``Y = diag(c) A(theta, r) S + noise`` with S (K, T) unknown and deterministic
    (the gains are absorbed in S).  Parameters ``alpha = [theta (K,), r (K,)]`` and the
    nuisance ``S``.  The derivative of the mean w.r.t. ``alpha_i`` (target ``k_i``) is
    ``d_i s_{k_i}^T`` with ``d_i = c o da_k/dalpha_i``; w.r.t. the waveform of snapshot t it
    is ``A_c = diag(c) A`` acting on column t.  The full FIM is
    ``(2 / sigma2) Re{[D, A_c-blocks]^H [D, A_c-blocks]}``; eliminating the nuisance
    (the Schur complement, i.e. replacing every derivative by its part orthogonal to the
    columns of A_c, snapshot by snapshot) gives

        J_alpha = (2 / sigma2) Re{ (D^H P_A^perp D) o (S^* S^T)[k_i, k_j] },
        P_A^perp = I - A_c (A_c^H A_c)^-1 A_c^H,

    the deterministic ("conditional") CRB of Stoica & Nehorai (1989), here for the 2-D
    near-field parameters.  With known waveforms and unknown complex gains (the pilot case,
    :func:`crb`) only the directions ``a_k s_k^T`` are projected out, so this bound is never
    below that one; for K = 1 the two coincide exactly (projecting a s^T out of d s^T equals
    projecting a out of d), and for well-separated targets they agree closely.

    Parameters
    ----------
    array : ULA
    theta, r : array_like, shape (K,)
        Angles (rad) and ranges (m).
    waveforms : array_like, shape (K, T), complex
        The (estimated or true) waveforms, gains included.
    sigma2 : float
        Noise variance of CN(0, sigma2 I).
    c : array_like, shape (N,), optional
        Known HI vector (0 for an excluded antenna).

    Returns
    -------
    ndarray, shape (2K, 2K)
        Ordered [theta_1..K, r_1..K].
    """
    theta = np.atleast_1d(np.asarray(theta, float))
    gains = np.ones(theta.size, complex)
    theta, r, gains, S, c = _inputs(theta, r, gains, waveforms, c, array.n_antennas)
    if not sigma2 > 0:
        raise ValueError(f"sigma2: expected a positive noise variance, got {sigma2!r}")
    K = theta.size
    d = steering_derivatives(array, theta, r, model)
    A = c[:, None] * d.a
    Dm = c[:, None] * np.concatenate([d.a_t, d.a_r], axis=1)  # (N, 2K)
    # P_A^perp D by a least-squares projection (stable for close targets)
    coef = np.linalg.lstsq(A, Dm, rcond=None)[0]
    PD = Dm - A @ coef
    kidx = np.tile(np.arange(K), 2)
    P = S.conj() @ S.T
    return (2.0 / sigma2) * np.real((Dm.conj().T @ PD) * P[np.ix_(kidx, kidx)])


def crb_unknown_waveforms(array: ULA, theta, r, waveforms, sigma2: float, c=None, model: str = "exact") -> np.ndarray:
    """Deterministic CRB of [theta, r] with unknown waveforms, (2K, 2K); see :func:`fim_unknown_waveforms`."""
    return _inv_sym(fim_unknown_waveforms(array, theta, r, waveforms, sigma2, c, model))


def crb_positions(array: ULA, theta, r, gains, pilots, sigma2: float, c=None, model: str = "exact") -> np.ndarray:
    """The [theta, r] block (2K, 2K) of :func:`crb` (known pilots, unknown complex gains)."""
    K = np.atleast_1d(theta).size
    return crb(array, theta, r, gains, pilots, sigma2, c, model)[2 * K :, 2 * K :]


# ----------------------------------------------------------------------------- pseudo-true
@dataclass
class PseudoTrue:
    """Result of :func:`pseudo_true`.

    eta : (4K,) pseudo-true parameters (eq. (40)).  theta, r, gains : unpacked.
    cost : ||mu_true - mu~(eta)||^2 at the solution.  cost_truth : the same at the truth.
    grad_norm : ||Re{D^H eps}|| / ||D|| ||eps|| at the solution (relative stationarity).
    spread : (4K,) component-wise max |eta_s - eta_best| over the solutions eta_s of
    the starts that reached a cost within 1e-9 (relative) of the best (units of eta);
    small means those starts agree on one minimum.
    n_starts : starts tried.
    """

    eta: np.ndarray
    theta: np.ndarray
    r: np.ndarray
    gains: np.ndarray
    cost: float
    cost_truth: float
    grad_norm: float
    spread: np.ndarray
    n_starts: int


def _residual_fun(array, mu_true, S, model):
    K = S.shape[0]
    kidx = np.tile(np.arange(K), 4)

    def fun(eta):
        theta, r, gains = unpack(eta)
        d = steering_derivatives(array, theta, r, model)
        e = (mu_true - d.a @ (gains[:, None] * S)).ravel()
        return np.concatenate([e.real, e.imag])

    def jac(eta):
        theta, r, gains = unpack(eta)
        G, _ = derivative_vectors(array, theta, r, gains, None, model)
        D = (G[:, None, :] * S[kidx].T[None, :, :]).reshape(-1, 4 * K)
        return -np.concatenate([D.real, D.imag], axis=0)

    return fun, jac


def pseudo_true(
    array: ULA, theta, r, gains, pilots, c, model: str = "exact", perturb: bool = True, xtol: float = 1e-15
) -> PseudoTrue:
    """Pseudo-true parameters, eq. (40): LS fit of the fault-free model to the true mean.

    Parameters
    ----------
    array : ULA
    theta, r : array_like, shape (K,)
        True angles (rad) and ranges (m).
    gains : array_like, shape (K,), complex
        True channel gains beta.
    pilots : array_like, shape (K, T)
        Probing signals S.
    c : array_like, shape (N,)
        True HI vector (the data's); the assumed model has c = 1.
    model : {"exact", "fresnel"}
        Steering model of both the data and the assumed model.
    perturb : bool
        Also start from 4 perturbed points (all targets shifted by +-1/4 of the
        null-to-null half beamwidth ``1 / (N cos theta)`` in angle, or by +-3 % in range)
        and keep the lowest cost.

    Returns
    -------
    PseudoTrue

    Raises
    ------
    RuntimeError
        If the best cost is above the cost at the truth (the solver went astray).
    """
    theta, r, gains, S, c = _inputs(theta, r, gains, pilots, c, array.n_antennas)
    mu_true = mean_model(array, theta, r, gains, S, c, model)
    fun, jac = _residual_fun(array, mu_true, S, model)
    eta0 = pack(theta, r, gains)
    K = theta.size
    starts = [eta0]
    if perturb:
        dth = 0.25 / (array.n_antennas * np.maximum(np.cos(theta), 0.05))
        for sgn in (1.0, -1.0):
            e = eta0.copy()
            e[2 * K : 3 * K] += sgn * dth
            starts.append(e)
            e = eta0.copy()
            e[3 * K :] *= 1.0 + sgn * 0.03
            starts.append(e)
    cost_truth = float(np.sum(fun(eta0) ** 2))
    sols = []
    for e0 in starts:
        res = least_squares(
            fun, e0, jac=jac, method="lm", x_scale="jac", xtol=xtol, ftol=1e-15, gtol=1e-15, max_nfev=2000
        )
        sols.append((float(np.sum(res.fun**2)), res.x))
    best_cost, best = min(sols, key=lambda s: s[0])
    if best_cost > cost_truth * (1 + 1e-12) + 1e-300:
        raise RuntimeError(f"pseudo_true: solver ended above the truth's cost ({best_cost} > {cost_truth})")
    agree = [x for cst, x in sols if cst <= best_cost * (1 + 1e-9) + 1e-30]
    spread = np.max(np.abs(np.asarray(agree) - best), axis=0)
    J = jac(best)
    f = fun(best)
    grad_norm = float(np.linalg.norm(J.T @ f) / max(np.linalg.norm(J) * np.linalg.norm(f), 1e-300))
    th, rr, g = unpack(best)
    return PseudoTrue(best, th, rr, g, best_cost, cost_truth, grad_norm, spread, len(starts))


# ----------------------------------------------------------------------------- MCRB
@dataclass
class MisspecifiedBounds:
    """All the matrices of Sec. V, each (4K, 4K), in the order of eta.

    eta_true, eta_pt : (4K,) true and pseudo-true parameters.
    C : eq. (44).  J_tilde : eq. (45).  mcrb : eq. (41).  bias : eq. (43).  lb : eq. (42).
    crb : CRB with perfect HI knowledge (eqs. (46)-(47), full matrix).
    pseudo : the :class:`PseudoTrue` fit.
    """

    eta_true: np.ndarray
    eta_pt: np.ndarray
    C: np.ndarray
    J_tilde: np.ndarray
    mcrb: np.ndarray
    bias: np.ndarray
    lb: np.ndarray
    crb: np.ndarray
    pseudo: PseudoTrue


def c_matrix_and_j_tilde(array: ULA, eta, mu_true: np.ndarray, pilots, sigma2: float, model: str = "exact"):
    """C (eq. (44)) and J~ (eq. (45)) of the fault-free model at ``eta`` (CN noise).

    Parameters
    ----------
    eta : (4K,) point of evaluation (normally the pseudo-true parameters).
    mu_true : (N, T) true noiseless mean (with the faults).
    pilots : (K, T).  sigma2 : noise variance.

    Returns
    -------
    C, J_tilde : ndarray, shape (4K, 4K) each.
    """
    theta, r, gains = unpack(eta)
    S = np.atleast_2d(np.asarray(pilots, complex))
    K = theta.size
    G, H = derivative_vectors(array, theta, r, gains, None, model)
    mu = steering_derivatives(array, theta, r, model).a @ (gains[:, None] * S)
    eps = np.asarray(mu_true) - mu
    Es = eps @ S.conj().T  # (N, K): sum_t eps_{n,t} conj(s_{k,t})
    kidx = np.tile(np.arange(K), 4)
    gram = _gram(G, S, K)
    # Re{d2mu_ij^H eps} = Re{H[:, i, j]^H Es[:, k]} for same-target pairs (H is zero otherwise)
    He = np.real(np.einsum("nij,ni->ij", H.conj(), Es[:, kidx]))
    He = 0.5 * (He + He.T)
    g = np.real(np.sum(G.conj() * Es[:, kidx], axis=0))  # Re{dmu_i^H eps}
    C = (2.0 / sigma2) * (He - gram)
    J_tilde = (4.0 / sigma2**2) * np.outer(g, g) + (2.0 / sigma2) * gram
    return C, J_tilde


def misspecified_bounds(
    array: ULA, theta, r, gains, pilots, sigma2: float, c, model: str = "exact", pseudo: PseudoTrue | None = None
) -> MisspecifiedBounds:
    """MCRB, bias and LB of Sec. V-A (and the CRB of Sec. V-B) for one scenario.

    Parameters
    ----------
    array : ULA
    theta, r, gains : (K,) true angles (rad), ranges (m) and gains.
    pilots : (K, T) probing signals.
    sigma2 : float, noise variance of CN(0, sigma2 I).
    c : (N,) true HI vector (None = fault-free).
    model : steering model of data and assumed model ("exact" by default).
    pseudo : a :class:`PseudoTrue` already computed for this (array, targets, gains,
        pilots, c) -- it does not depend on sigma2, so SNR sweeps reuse it.
    """
    theta, r, gains, S, c = _inputs(theta, r, gains, pilots, c, array.n_antennas)
    if not sigma2 > 0:
        raise ValueError(f"sigma2: expected a positive noise variance, got {sigma2!r}")
    if pseudo is None:
        pseudo = pseudo_true(array, theta, r, gains, S, c, model)
    mu_true = mean_model(array, theta, r, gains, S, c, model)
    C, Jt = c_matrix_and_j_tilde(array, pseudo.eta, mu_true, S, sigma2, model)
    Ci = _inv_sym(C)
    mcrb = Ci @ Jt @ Ci
    mcrb = 0.5 * (mcrb + mcrb.T)
    eta = pack(theta, r, gains)
    delta = pseudo.eta - eta
    bias = np.outer(delta, delta)
    return MisspecifiedBounds(
        eta, pseudo.eta, C, Jt, mcrb, bias, bias + mcrb, crb(array, theta, r, gains, S, sigma2, c, model), pseudo
    )


def root_bounds(
    array: ULA, theta, r, gains, pilots, sigma2: float, c=None, model: str = "exact", pseudo: PseudoTrue | None = None
) -> dict:
    """Root figures of Sec. VI-A, averaged over the K targets (errata 11).

    ``X_angle = sqrt(mean_k X[theta_k, theta_k])`` (rad) and
    ``X_range = sqrt(mean_k X[r_k, r_k])`` (m) for X in CRB, LB, MCRB, Bias.

    Returns
    -------
    dict
        Keys ``crb_angle, crb_range, lb_angle, lb_range, mcrb_angle, mcrb_range,
        bias_angle, bias_range`` (floats).
    """
    b = misspecified_bounds(array, theta, r, gains, pilots, sigma2, c, model, pseudo)
    K = np.atleast_1d(theta).size
    it = slice(2 * K, 3 * K)
    ir = slice(3 * K, 4 * K)
    out = {}
    for name, M in (("crb", b.crb), ("lb", b.lb), ("mcrb", b.mcrb), ("bias", b.bias)):
        d = np.diag(M)
        out[f"{name}_angle"] = float(np.sqrt(np.mean(d[it])))
        out[f"{name}_range"] = float(np.sqrt(np.mean(d[ir])))
    return out


def _main(argv=None) -> None:
    """``python -m nearfield.bounds``: root bounds of the default scenario (Sec. VI-A) vs SNR."""
    import argparse

    from .scenario import noise_variance, paper_scenario

    ap = argparse.ArgumentParser(prog="python -m nearfield.bounds", description=_main.__doc__)
    ap.add_argument("--seed", type=int, default=1, help="seed of paper_scenario (gains, pilots, faults)")
    ap.add_argument("--p-fault", type=float, default=0.02)
    ap.add_argument("--snr-db", type=float, nargs="+", default=[10.0, 20.0, 30.0])
    ap.add_argument("--antennas", type=int, default=256)
    args = ap.parse_args(argv)
    sc = paper_scenario(np.random.default_rng(args.seed), n_antennas=args.antennas, p_fault=args.p_fault)
    pt = pseudo_true(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, sc.c)
    print(
        f"N={args.antennas} seed={args.seed} p_fault={args.p_fault} faulty={sc.faulty.tolist()} "
        f"pseudo-true: cost/cost_truth={pt.cost / max(pt.cost_truth, 1e-300):.4f} grad={pt.grad_norm:.1e}"
    )
    keys = ("crb", "mcrb", "bias", "lb")
    print("SNR dB | " + " | ".join(f"R-{k.upper()} angle (rad)  R-{k.upper()} range (m)" for k in keys))
    mu = sc.mean()
    for snr in args.snr_db:
        rb = root_bounds(sc.array, sc.theta, sc.r, sc.gains, sc.pilots, noise_variance(mu, snr), sc.c, pseudo=pt)
        print(f"{snr:6.1f} | " + " | ".join(f"{rb[k + '_angle']:.3e}  {rb[k + '_range']:.3e}" for k in keys))


if __name__ == "__main__":
    _main()
