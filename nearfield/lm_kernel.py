"""Compiled Levenberg-Marquardt kernel for the exact spherical model (numba, issue 11).

The same iteration as :func:`nearfield.ml._lm` (parameters eta = [Re beta, Im beta, theta, r],
cost and gradient on the sufficient statistics ``Q = Y S^H``, ``yy = ||y_n||^2``,
``P = S^* S^T``), written as loops over the antennas: the steering vector of eq. (1),
its first derivatives, the (4K x 4K) normal matrix and the cost are accumulated in one
pass per antenna, with no (N x K) temporaries.  Why hand-written: the NumPy version spends
most of its time in the overhead of ~60 small array operations per iteration (at N = 256 an
iteration is ~20 k flops); compiled, one LM fit costs tens of microseconds instead of
milliseconds.  ``cache=True`` and one signature: the compiled code is stored next to this
file on the first call (``python -m nearfield.warmup`` does it ahead of a run).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["lm_exact", "gain_normal", "check_fisher"]


@numba.njit(cache=True)
def _cost_es(pos, kw, yy, Q, P, w, c, th, rr, b, ES, AC, RN):  # pragma: no cover - compiled
    """Weighted LS cost from the sufficient statistics; fills ES = Q - M P^T (N, K), and the
    steering of this point for :func:`_normal`: AC = diag(c) A (N, K) and the distances RN (N, K)."""
    N, K = Q.shape
    sn = np.sin(th)
    M = np.empty(K, np.complex128)
    cost = 0.0
    for n in range(N):
        for k in range(K):
            rn = math.sqrt(rr[k] * rr[k] + pos[n] * pos[n] - 2.0 * pos[n] * rr[k] * sn[k])
            ph = -kw * (rn - rr[k])
            a = c[n] * complex(math.cos(ph), math.sin(ph))
            AC[n, k] = a
            RN[n, k] = rn
            M[k] = a * b[k]
        p = yy[n]
        for k in range(K):
            mp = 0j
            for j in range(K):
                mp += M[j] * P[k, j]
            ES[n, k] = Q[n, k] - mp
            mc = M[k].conjugate()
            p += -2.0 * (mc * Q[n, k]).real + (mc * mp).real
        cost += w[n] * p
    return cost


@numba.njit(cache=True)
def _normal(pos, kw, w, th, rr, b, ES, P, JJ, g, AC, RN):  # pragma: no cover - compiled
    """JJ = Re(G^H W G .* P[kidx, kidx]) and g = Re(G^H W (E S^H)[:, kidx]) without forming G (N, 4K);
    AC, RN: the steering and distances :func:`_cost_es` stored for this point (no trigonometry again)."""
    N, K = ES.shape
    F = 4 * K
    sn, cs = np.sin(th), np.cos(th)
    G = np.empty(F, np.complex128)
    C = np.zeros((F, F), np.complex128)  # sum_n w_n conj(G_ni) G_nj, upper triangle
    JJ[:, :] = 0.0
    g[:] = 0.0
    for n in range(N):
        if w[n] == 0.0:  # an excluded antenna adds nothing
            continue
        for k in range(K):
            rn = RN[n, k]
            a = AC[n, k]
            p_t = kw * pos[n] * rr[k] * cs[k] / rn  # d psi / d theta
            p_r = -kw * ((rr[k] - pos[n] * sn[k]) / rn - 1.0)  # d psi / d r
            G[k] = a
            G[K + k] = 1j * a
            G[2 * K + k] = 1j * p_t * a * b[k]
            G[3 * K + k] = 1j * p_r * a * b[k]
        for i in range(F):
            gi = G[i].conjugate() * w[n]
            g[i] += (gi * ES[n, i % K]).real
            for j in range(i, F):
                C[i, j] += gi * G[j]
    for i in range(F):  # JJ = Re(C .* P[kidx, kidx]), C Hermitian: fill the lower triangle from the upper
        for j in range(i, F):
            JJ[i, j] = (C[i, j] * P[i % K, j % K]).real
            JJ[j, i] = JJ[i, j]


@numba.njit(cache=True)
def lm_exact(pos, kw, yy, Q, P, w, c, theta, r, gains, max_iter, tol, r_min, r_max):  # pragma: no cover
    """LM of :func:`nearfield.ml._lm` on the exact model, compiled.

    Parameters
    ----------
    pos : (N,) antenna positions, m.  kw : wavenumber, rad/m.  yy : (N,) ||y_n||^2.
    Q : (N, K) Y S^H.  P : (K, K) S^* S^T.  w : (N,) antenna weights.  c : (N,) HI vector (ones = none).
    theta, r, gains : (K,) start.  max_iter, tol : limits.  r_min, r_max : range window, m.

    Returns
    -------
    theta, r, gains, cost (from the sufficient statistics), iterations, converged
    """
    N, K = Q.shape
    F = 4 * K
    theta, r, gains = theta.copy(), r.copy(), gains.copy()
    ES = np.empty((N, K), np.complex128)
    nES = np.empty((N, K), np.complex128)
    AC, nAC = np.empty((N, K), np.complex128), np.empty((N, K), np.complex128)  # steering of the point, trial
    RN, nRN = np.empty((N, K)), np.empty((N, K))
    JJ = np.empty((F, F))
    g = np.empty(F)
    cost = _cost_es(pos, kw, yy, Q, P, w, c, theta, r, gains, ES, AC, RN)
    mu = 1e-3
    it = 0
    converged = False
    rel = np.inf
    lim = np.pi / 2 - 1e-6
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned after the loop
        _normal(pos, kw, w, theta, r, gains, ES, P, JJ, g, AC, RN)
        diag = np.empty(F)
        for i in range(F):
            diag[i] = max(JJ[i, i], 1e-300)
        improved = False
        flat = False
        for trial in range(12):
            A = JJ.copy()
            for i in range(F):
                A[i, i] += mu * diag[i]
            step = np.linalg.solve(A, g)
            if trial == 0 and mu <= 1e-2:
                # Gauss-Newton predicted decrease 2 step.g - step^T JJ step: below tol * cost, no step can
                # pass the convergence test below; stop instead of burning trials on rounding noise
                pred = 0.0
                for i in range(F):
                    pred += 2.0 * step[i] * g[i]
                    for j in range(F):
                        pred -= step[i] * JJ[i, j] * step[j]
                if pred <= tol * cost:
                    flat = True
                    break
            nb = gains + step[:K] + 1j * step[K : 2 * K]
            nt = np.minimum(np.maximum(theta + step[2 * K : 3 * K], -lim), lim)
            nr = np.minimum(np.maximum(r + step[3 * K :], r_min), r_max)
            ncost = _cost_es(pos, kw, yy, Q, P, w, c, nt, nr, nb, nES, nAC, nRN)
            if ncost <= cost:
                rel = (cost - ncost) / max(cost, 1e-300)
                gains, theta, r, cost = nb, nt, nr, ncost
                ES, nES = nES, ES
                AC, nAC = nAC, AC
                RN, nRN = nRN, RN
                mu = max(mu / 10.0, 1e-9)
                improved = True
                break
            mu *= 10.0
        if flat or not improved or rel < tol:
            converged = True
            break
    return theta, r, gains, cost, it, converged


@numba.njit(cache=True)
def gain_normal(pos, kw, w, theta, r, Q):  # pragma: no cover - compiled
    """The LS-gain system of :func:`nearfield.ml.ls_gains` without forming A (N, K) in Python.

    Returns ``AWA = A^H W A`` (K, K) complex and ``rhs_k = sum_n w_n conj(a_nk) Q_nk`` (K,), with
    ``Q = Y S^H``; the gains solve ``(AWA o P) beta = rhs`` (P = S^* S^T).  One pass over the antennas.
    """
    N, K = Q.shape
    sn = np.sin(theta)
    AWA = np.zeros((K, K), np.complex128)
    rhs = np.zeros(K, np.complex128)
    a = np.empty(K, np.complex128)
    for n in range(N):
        for k in range(K):
            rn = math.sqrt(r[k] * r[k] + pos[n] * pos[n] - 2.0 * pos[n] * r[k] * sn[k])
            ph = -kw * (rn - r[k])
            a[k] = complex(math.cos(ph), math.sin(ph))
        for k in range(K):
            ak = a[k].conjugate() * w[n]
            rhs[k] += ak * Q[n, k]
            for j in range(K):
                AWA[k, j] += ak * a[j]
    return AWA, rhs


@numba.njit(cache=True)
def check_fisher(pos, kw, yy, Q, P, w, theta, r, gains_ls, gains_fim):  # pragma: no cover - compiled
    """The fit cost and ``E S^H`` at the LS gains, and the Fisher matrix's data part at ``gains_fim``.

    Returns ``cost`` (the weighted LS cost, as :func:`_cost_es`), ``ES = (Y - A diag(beta) S) S^H``
    (N, K) and ``JJ = Re((G^H W G) o P[kidx, kidx])`` (4K, 4K) with G = [a, j a, beta a_theta,
    beta a_r] (N, 4K): the FIM of :func:`nearfield.bounds.fim` is ``(2 / sigma2) JJ``.  Used by
    :func:`nearfield.estimators.uncertainty.assess_estimate`.
    """
    N, K = Q.shape
    c = np.ones(N, np.complex128)
    ES = np.empty((N, K), np.complex128)
    AC, RN = np.empty((N, K), np.complex128), np.empty((N, K))
    cost = _cost_es(pos, kw, yy, Q, P, w, c, theta, r, gains_ls, ES, AC, RN)
    JJ = np.empty((4 * K, 4 * K))
    g = np.empty(4 * K)
    _normal(pos, kw, w, theta, r, gains_fim, ES, P, JJ, g, AC, RN)
    return cost, ES, JJ
