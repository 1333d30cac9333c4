"""ISTA for the fault-mask problem (P3), paper Sec. IV-A1, eqs. (9)-(12).

We minimise

    F(z) = 1/2 sum_t || y_t - diag(1 + z) x_t ||^2 + rho ||z||_1,        (P3)

whose smooth part has the gradient of eq. (11),
``grad f(z) = -sum_t conj(x_t) * (y_t - (1 + z) * x_t)`` (the factor 1/2 makes (11)
exact), and iterate eq. (10) ``z <- S(z - nu grad f(z), nu rho)`` with the *complex*
soft-threshold ``S(z, g) = z / |z| * max(|z| - g, 0)`` (eq. (9) is the real one).

Step size: ``nu = 1 / L`` with L the Lipschitz constant of grad f,
``L = max_n sum_t |x_{n,t}|^2`` (the Hessian of f is diagonal), which guarantees
monotone convergence (Beck & Teboulle 2009).  The paper's
nu = 1e-4, rho = 0.01 make the l1 term negligible; :func:`noise_rho` sets rho from
the noise level instead.

(P3) is separable over antennas, so its minimiser has the closed form
``z_n = S(sum_t conj(x) (y - x) / sum_t |x|^2, rho / sum_t |x|^2)``.  The detectors use
that closed form (:func:`ista_solve`):
it is the point ISTA converges to, without iterating and without a compiled kernel.
:func:`ista` and :func:`ista_iterate` keep the iterations of eq. (10) (vectorised over
antennas) as the paper's algorithm and as a cross-check of the closed form.
"""

from __future__ import annotations

import numpy as np


def ista_stats(Y: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-antenna sufficient statistics of (P3): ``e_n = sum_t |x|^2``, ``b_n = sum_t conj(x)(y - x)``.

    The gradient (11) is ``e * z - b``, so ISTA needs only these; statistics of several
    frames add up (the streaming detector accumulates them).  Shapes (N,), (N,).
    """
    Y = np.asarray(Y, dtype=np.complex128)
    X = np.asarray(X, dtype=np.complex128)
    if Y.shape != X.shape or Y.ndim != 2:
        raise ValueError(f"Y and X: expected two (N, T) arrays of one shape, got {Y.shape} and {X.shape}")
    e = np.einsum("it,it->i", X.real, X.real) + np.einsum("it,it->i", X.imag, X.imag)
    b = np.einsum("it,it->i", X.conj(), Y - X)
    return e, b


def ista_solve(e, b, rho: float) -> np.ndarray:
    """The minimiser of (P3) from its statistics: ``z_n = S(b_n / e_n, rho / e_n)``, shape (N,).

    Antennas with ``e_n = 0`` (no signal) get z_n = 0.
    """
    e = np.asarray(e, dtype=np.float64)
    b = np.asarray(b, dtype=np.complex128)
    safe = np.where(e > 0, e, 1.0)
    return np.where(e > 0, soft_threshold(b / safe, rho / safe), 0.0).astype(np.complex128)


def ista_iterate(
    e: np.ndarray,
    b: np.ndarray,
    rho: float,
    step: float | None = None,
    tol: float = 1e-7,
    max_iter: int = 1000,
    z0: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """ISTA iterations (10) on the statistics of :func:`ista_stats`; returns (z, n_iter)."""
    e = np.asarray(e, dtype=np.float64)
    b = np.asarray(b, dtype=np.complex128)
    if step is None:
        L = float(np.max(e)) if e.size else 0.0
        step = 1.0 / L if L > 0 else 1.0
    z = np.zeros(e.size, np.complex128) if z0 is None else np.array(z0, dtype=np.complex128)
    it = 0
    # a loop over iterations; each one is vectorised over antennas. `it` is the returned count (B007 misses the use
    # after the loop).
    for it in range(1, int(max_iter) + 1):  # noqa: B007
        new = soft_threshold(z - step * (e * z - b), step * rho)
        change = float(np.max(np.abs(new - z))) if z.size else 0.0
        z = new
        if change <= tol:
            break
    return z, int(it)


def lipschitz(X: np.ndarray) -> float:
    """L = max_n sum_t |x_{n,t}|^2, the Lipschitz constant of grad f in (P3)."""
    return float(np.max(np.sum(np.abs(X) ** 2, axis=1)))


def noise_rho(X: np.ndarray, sigma2: float, kappa: float = 3.0) -> float:
    """Regularisation from the noise level: rho = kappa * sigma * sqrt(mean_n sum_t |x|^2).

    The unregularised per-antenna estimate of z_n has noise standard deviation
    ``sigma / sqrt(sum_t |x_n|^2)``; this rho shrinks it by ``kappa`` such deviations,
    so an intact antenna survives the shrinkage with probability about
    ``exp(-kappa^2)`` (circular complex Gaussian).
    """
    return float(kappa * np.sqrt(sigma2) * np.sqrt(np.mean(np.sum(np.abs(X) ** 2, axis=1))))


def ista(
    Y: np.ndarray,
    X: np.ndarray,
    rho: float,
    step: float | None = None,
    tol: float = 1e-7,
    max_iter: int = 1000,
    z0: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Solve (P3) by ISTA.

    Parameters
    ----------
    Y : ndarray, shape (N, T), complex
        Received snapshots.
    X : ndarray, shape (N, T), complex
        Model of the fault-free signal, ``x_t = A(theta, r) diag(beta) s_t``.
    rho : float
        l1 weight (see :func:`noise_rho`).
    step : float, optional
        nu; ``1 / lipschitz(X)`` when omitted.
    tol : float
        Stop when ``max_n |z_new - z| <= tol`` (the paper's varsigma).
    max_iter : int
    z0 : ndarray, shape (N,), optional
        Warm start (zeros by default).

    Returns
    -------
    z : ndarray, shape (N,), complex128
        Fault mask estimate z_hat = c_hat - 1.
    n_iter : int
    """
    e, b = ista_stats(Y, X)
    if step is None:
        step = 1.0 / lipschitz(X) if np.any(e > 0) else 1.0
    return ista_iterate(e, b, rho, step, tol, max_iter, z0)


def soft_threshold(v: np.ndarray, gamma) -> np.ndarray:
    """Complex soft-threshold S(v, gamma) = v / |v| * max(|v| - gamma, 0)."""
    mag = np.abs(v)
    return np.where(mag > gamma, v * (1.0 - gamma / np.maximum(mag, 1e-300)), 0.0).astype(np.complex128)


def closed_form(Y: np.ndarray, X: np.ndarray, rho: float) -> np.ndarray:
    """The exact minimiser of (P3) (separable problem) from the snapshots, shape (N,)."""
    return ista_solve(*ista_stats(Y, X), rho)
