"""Reference calibration: the full complex HI vector from transmitters at known positions.

Model (eq. (5) of the paper with a general HI vector): snapshots of K transmitters at
known angles theta (K,) and ranges r (K,),

    Y = diag(c) A(theta, r) diag(beta) S + N,     Y: (N, T),  A: (N, K) exact model (eq. 1),

where c (N,) is the complex gain of every receive channel (amplitude and phase; the
paper's faults are the special case |c_n| = 1 on a few antennas), beta (K,) the unknown
channel gains and S (K, T) the waveforms (known pilots, or unknown).

What is identifiable
--------------------
* The common complex factor of c never is: ``diag(c) A diag(beta) S`` does not change
  when c is multiplied by z and beta (or S) divided by z.  :func:`calibrate` therefore
  returns c normalised so that the mean of |c_n| over live channels is 1 and the sum
  ``sum_n c_n`` is real and positive (its phase is averaged over the array, so no single
  noisy channel sets it).  Compare estimates with :func:`hi_error`, which removes the
  common factor by least squares.
* With a reference at a *known* position everything else is identifiable: A(theta, r)
  is known, so ``c_n`` is the ratio of what antenna n receives to what an ideal antenna
  at its nominal position would receive.  One transmitter (K = 1) suffices; more
  transmitters (K > 1) average over directions.
* Without a reference (blind self-calibration from targets at unknown positions) only
  part of c is identifiable: a per-channel phase that is linear across the array,
  ``phi_n = a l_n``, is indistinguishable from an angle shift (the far-field phase is
  ``k l_n sin(theta)``), and a quadratic one, ``phi_n = b l_n^2``, from a range shift (the
  Fresnel term ``-k l_n^2 cos^2(theta) / (2 r)``).  A blind method can recover only the
  part of c outside the span of {1, l_n, l_n^2} (and |c_n|), and a position estimated
  from a blindly calibrated array inherits the unresolved linear and quadratic part as
  a bias.  The paper's sparse-fault detector works anyway because most antennas are
  intact (c_n = 1): the intact majority pins the linear and quadratic terms to zero
  and the faults stand out as outliers.  On a real receiver, where every channel has
  its own gain and phase, that premise fails; calibrate from a reference first.
* Element position errors along the axis act as per-channel phases that depend on the
  direction; a reference in one direction calibrates them for directions near it only.

Estimators (all least squares of ``||Y - diag(c) A diag(beta) S||_F^2``):

* pilots known, K = 1: beta is absorbed into c, and per-antenna LS is exact in one step,
  ``c_n = sum_t y_nt conj(x_nt) / sum_t |x_nt|^2`` with ``x = a s`` (a in A);
* pilots known, K > 1: the per-antenna, per-transmitter LS ``Z = Y S^H (S S^H)^-1`` equals
  ``diag(c) A diag(beta)`` plus noise, so ``Z / A`` is rank one, ``c beta^T``; its leading
  singular pair starts an alternation of per-antenna LS for c and LS for beta
  (:func:`nearfield.ml.ls_gains`' normal equations);
* blind, K = 1: the principal eigenvector of the sample covariance is ``c * a`` up to a
  factor, so ``c = u / a``;
* blind, K > 1: the signal subspace U (N, K) equals ``diag(c) A M``; with ``d = 1 / c`` this
  is linear, ``(I - A A^+) diag(u_k) d = 0`` for every column u_k, so d is the least
  eigenvector of ``sum_k diag(u_k)^H (I - A A^+) diag(u_k)`` over the live channels
  (a subspace calibration with known sources).  It starts an alternation of waveform
  LS ``S = (B^H B)^-1 B^H Y`` (B = diag(c) A) and per-antenna LS for c.

Everything runs on sufficient statistics (:class:`CalibrationStats`: ``Y S^H`` and
``S S^H`` with pilots, ``Y Y^H`` without), so a streaming block can accumulate frames.

Dead channels (|c_n| ~ 0) come out as small values (noise only), never NaN;
:func:`dead_channels` names them and :func:`apply_hi` zeroes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..array import ULA
from ..steering import steering

#: Default threshold of :func:`dead_channels`: |c_n| below this share of the median |c|.
DEAD_THRESHOLD = 0.1


def _as_positions(theta, r) -> tuple[np.ndarray, np.ndarray]:
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    r = np.atleast_1d(np.asarray(r, dtype=float))
    if theta.ndim != 1 or theta.size == 0 or not np.all(np.isfinite(theta)) or np.any(np.abs(theta) >= np.pi / 2):
        raise ValueError(f"theta: expected (K,) finite angles in rad with |theta| < pi/2, got {theta!r}")
    if r.shape != theta.shape or not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"r: expected ({theta.size},) positive ranges in m (one per theta), got {r!r}")
    return theta, r


@dataclass
class CalibrationStats:
    """Sufficient statistics of reference snapshots, summed over frames.

    Attributes
    ----------
    n_antennas, n_sources : int
        N and K.
    ys : ndarray (N, K) complex or None
        ``sum Y S^H`` (pilots known).
    ss : ndarray (K, K) complex or None
        ``sum S S^H`` (pilots known).
    yy : ndarray (N, N) complex or None
        ``sum Y Y^H`` (blind).
    power : ndarray (N,)
        ``sum_t |y_nt|^2`` per channel.
    n_snapshots : int
        Snapshots accumulated, T.
    """

    n_antennas: int
    n_sources: int
    blind: bool
    ys: np.ndarray | None = None
    ss: np.ndarray | None = None
    yy: np.ndarray | None = None
    power: np.ndarray | None = None
    n_snapshots: int = 0

    def update(self, Y: np.ndarray, pilots: np.ndarray | None = None) -> CalibrationStats:
        """Add a block of snapshots Y (N, T) (and its pilots (K, T) unless blind); returns self."""
        Y = _check_Y(Y, self.n_antennas)
        if self.blind:
            if pilots is not None:
                raise ValueError("pilots: these statistics are blind (built without pilots)")
            yy = Y @ Y.conj().T
            self.yy = yy if self.yy is None else self.yy + yy
        else:
            S = _check_pilots(pilots, self.n_sources, Y.shape[1])
            ys, ss = Y @ S.conj().T, S @ S.conj().T
            self.ys = ys if self.ys is None else self.ys + ys
            self.ss = ss if self.ss is None else self.ss + ss
        p = np.einsum("nt,nt->n", Y, Y.conj()).real
        self.power = p if self.power is None else self.power + p
        self.n_snapshots += Y.shape[1]
        return self


def _check_Y(Y, n: int) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != n or Y.shape[1] < 1:
        raise ValueError(f"Y: expected snapshots of shape ({n}, T) for the {n}-antenna array, got {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y: snapshots contain NaN or inf")
    return Y.astype(np.complex128, copy=False)


def _check_pilots(pilots, k: int, t: int) -> np.ndarray:
    S = np.asarray(pilots)
    if S.ndim == 1 and k == 1:
        S = S[None, :]
    if S.shape != (k, t):
        raise ValueError(f"pilots: expected shape ({k}, {t}) (one row per transmitter, T columns), got {S.shape}")
    if not np.all(np.isfinite(S)) or not np.any(S):
        raise ValueError("pilots: expected finite, not all-zero waveforms")
    return S.astype(np.complex128, copy=False)


def accumulate(Y: np.ndarray, n_sources: int, pilots: np.ndarray | None = None) -> CalibrationStats:
    """:class:`CalibrationStats` of one block of snapshots Y (N, T)."""
    st = CalibrationStats(np.asarray(Y).shape[0] if np.ndim(Y) == 2 else -1, int(n_sources), pilots is None)
    return st.update(Y, pilots)


def normalize_hi(c: np.ndarray, live: np.ndarray | None = None) -> np.ndarray:
    """Remove the common complex factor: mean |c| over live channels = 1, ``sum c`` real > 0.

    ``live`` (N,) bool defaults to the channels :func:`dead_channels` does not name.
    """
    c = np.asarray(c, dtype=np.complex128)
    if live is None:
        live = np.ones(c.size, bool)
        live[dead_channels(c)] = False
    scale = np.mean(np.abs(c[live]))
    if not scale > 0:
        return c.copy()
    s = np.sum(c[live])
    rot = np.exp(-1j * np.angle(s)) if s != 0 else 1.0
    return c * (rot / scale)


def dead_channels(c: np.ndarray, threshold: float = DEAD_THRESHOLD) -> np.ndarray:
    """Indices (sorted, 0-based) of dead channels: ``|c_n| < threshold * median_n |c_n|``.

    A dead channel receives noise only, so its calibrated gain is of the order of the
    noise-to-signal amplitude ratio / sqrt(T); the default 0.1 (-20 dB) separates it from
    any live receiver whose gain spread is within +-20 dB of the median.
    """
    a = np.abs(np.asarray(c))
    if not 0 < threshold < 1:
        raise ValueError(f"threshold: expected a ratio in (0, 1), got {threshold!r}")
    return np.flatnonzero(a < threshold * np.median(a))


def apply_hi(Y: np.ndarray, c: np.ndarray, threshold: float = DEAD_THRESHOLD) -> np.ndarray:
    """Calibrated snapshots: ``Y / c`` on live channels, 0 on dead ones (:func:`dead_channels`).

    For unit-modulus c this equals ``conj(c) * Y``, the paper's eq. (27).  ``Y`` (N, T) or
    (N,); the result has Y's dtype (complex64 stays complex64).
    """
    Y = np.asarray(Y)
    c = np.asarray(c)
    if c.ndim != 1 or Y.shape[0] != c.size:
        raise ValueError(f"c: expected ({Y.shape[0]},) for Y of shape {Y.shape}, got {c.shape}")
    inv = np.zeros(c.size, np.complex128)
    live = np.ones(c.size, bool)
    live[dead_channels(c, threshold)] = False
    inv[live] = 1.0 / c[live]
    shape = (-1,) + (1,) * (Y.ndim - 1)
    out = Y * inv.reshape(shape)
    return out.astype(Y.dtype if np.iscomplexobj(Y) else np.complex128, copy=False)


def hi_error(c_hat: np.ndarray, c: np.ndarray) -> float:
    """NMSE of an HI estimate after removing the common complex factor by least squares.

    ``min_z ||z c_hat - c||^2 / ||c||^2`` (the unobservable factor does not count).
    """
    c_hat = np.asarray(c_hat, np.complex128)
    c = np.asarray(c, np.complex128)
    den = np.vdot(c_hat, c_hat).real
    z = np.vdot(c_hat, c) / den if den > 0 else 0.0
    return float(np.sum(np.abs(z * c_hat - c) ** 2) / np.sum(np.abs(c) ** 2))


# -- the estimators on sufficient statistics ------------------------------------------------------------------


def _per_antenna_ls(u: np.ndarray, ys: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """c_n = sum_t y_nt conj(x_nt) / sum_t |x_nt|^2 with x = u S, from Y S^H and S S^H."""
    num = np.sum(u.conj() * ys, axis=1)
    den = np.einsum("nk,kl,nl->n", u, ss, u.conj()).real
    return num / np.maximum(den, np.finfo(float).tiny)


def _gains_ls(B: np.ndarray, ys: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """beta minimising ||Y - B diag(beta) S||^2 (the normal equations of ml.ls_gains)."""
    G = (B.conj().T @ B) * ss.conj()
    rhs = np.sum(B.conj() * ys, axis=0)
    return np.linalg.lstsq(G, rhs, rcond=None)[0]


def _blind_init(yy: np.ndarray, A: np.ndarray, live_floor: float = 0.05) -> np.ndarray:
    """Subspace start for blind K >= 1: c = u / a (K = 1) or 1 / d of the module docstring."""
    n, k = A.shape
    _, v = np.linalg.eigh(yy)
    U = v[:, -k:]  # signal subspace (N, K)
    if k == 1:
        return U[:, 0] / A[:, 0]
    energy = np.sum(np.abs(U) ** 2, axis=1)
    live = energy > live_floor * np.median(energy)  # dead channels carry no signal energy
    Al = A[live]
    Q_perp = np.eye(int(live.sum())) - Al @ np.linalg.pinv(Al)
    Ul = U[live]
    # sum_k diag(u_k)^H P diag(u_k) = (P * sum_k conj(u_k) u_k^T), elementwise
    Q = Q_perp * (Ul.conj() @ Ul.T)
    _, vq = np.linalg.eigh(Q)
    d = vq[:, 0]
    c = np.zeros(n, np.complex128)
    ok = np.abs(d) > 1e-12 * np.max(np.abs(d))
    idx = np.flatnonzero(live)
    c[idx[ok]] = 1.0 / d[ok]
    return c


def calibrate_stats(
    stats: CalibrationStats, array: ULA, theta, r, *, n_iter: int = 50, tol: float = 1e-10, model: str = "exact"
) -> np.ndarray:
    """:func:`calibrate` on accumulated :class:`CalibrationStats` (see there)."""
    theta, r = _as_positions(theta, r)
    if stats.n_antennas != array.n_antennas:
        raise ValueError(f"Y: {stats.n_antennas} channels for a {array.n_antennas}-antenna array")
    if theta.size != stats.n_sources:
        raise ValueError(f"theta: {theta.size} positions for statistics of {stats.n_sources} transmitter(s)")
    if isinstance(n_iter, bool) or int(n_iter) != n_iter or n_iter < 0:
        raise ValueError(f"n_iter: expected an integer >= 0, got {n_iter!r}")
    if stats.n_snapshots < 1:
        raise ValueError("Y: no snapshots accumulated")
    A = steering(array, theta, r, model)
    k = theta.size
    if not stats.blind:
        ys, ss = stats.ys, stats.ss
        if ys is None or ss is None:
            raise ValueError("Y: no pilot statistics accumulated")
        if k == 1:  # beta absorbed into c: per-antenna LS is exact in one step
            c = _per_antenna_ls(A, ys, ss)
        else:
            # Z = Y S^H (S S^H)^-1 = diag(c) A diag(beta) + noise; Z / A = c beta^T (rank one)
            Z = np.linalg.lstsq(ss.T, ys.T, rcond=None)[0].T
            u, sv, vh = np.linalg.svd(Z / A, full_matrices=False)
            c = u[:, 0] * sv[0]
            beta = vh[0].copy()
            for _ in range(int(n_iter)):
                beta = _gains_ls(c[:, None] * A, ys, ss)
                c_new = _per_antenna_ls(A * beta[None, :], ys, ss)
                step = np.linalg.norm(c_new - c) / max(np.linalg.norm(c_new), np.finfo(float).tiny)
                c = c_new
                if step < tol:
                    break
    else:
        yy = stats.yy
        if yy is None:
            raise ValueError("Y: no covariance accumulated")
        if stats.n_snapshots < k + 1 or array.n_antennas < k + 2:
            raise ValueError(
                f"Y: blind calibration of K={k} needs T >= {k + 1} snapshots and N >= {k + 2} "
                f"antennas, got T={stats.n_snapshots}, N={array.n_antennas}"
            )
        c = _blind_init(yy, A)
        if k > 1:
            for _ in range(int(n_iter)):
                B = c[:, None] * A
                P = np.linalg.pinv(B)  # (K, N): waveform LS S = P Y
                ys = yy @ P.conj().T  # Y S^H
                ss = P @ yy @ P.conj().T  # S S^H
                c_new = _per_antenna_ls(A, ys, ss)
                z = np.vdot(c_new, c)  # keep the arbitrary common factor fixed between steps
                c_new = c_new * (z / abs(z)) if z != 0 else c_new
                step = np.linalg.norm(c_new - c) / max(np.linalg.norm(c_new), np.finfo(float).tiny)
                c = c_new
                if step < tol:
                    break
    if not np.all(np.isfinite(c)):
        raise ValueError("Y: calibration gave non-finite gains (degenerate reference data?)")
    return normalize_hi(c)


def calibrate(
    Y: np.ndarray,
    array: ULA,
    theta,
    r,
    pilots: np.ndarray | None = None,
    *,
    n_iter: int = 50,
    tol: float = 1e-10,
    model: str = "exact",
) -> np.ndarray:
    """Estimate the complex HI vector c (gain and phase per antenna) from reference snapshots.

    Parameters
    ----------
    Y : ndarray, shape (N, T), complex
        Snapshots while K transmitters at known positions are on (eq. 5 with general c).
    array : ULA
        The *nominal* array the estimators assume.
    theta, r : array_like, shape (K,)
        Known angles (rad, from broadside) and ranges (m, from the array centre).
    pilots : ndarray, shape (K, T), optional
        Known transmitted waveforms; ``None``: blind (the waveforms are estimated).
    n_iter : int
        Maximum alternation rounds (K > 1); K = 1 is closed form.
    tol : float
        Stop when the relative change of c between rounds is below this.
    model : {"exact", "fresnel"}
        Steering model of the reference (eq. 1 or 2); keep "exact".

    Returns
    -------
    c : ndarray, shape (N,), complex128
        The HI vector up to the unobservable common factor, normalised so that the mean
        of |c_n| over live channels is 1 and ``sum_n c_n`` is real positive.  Dead channels
        come out near 0 (:func:`dead_channels`).  Apply with :func:`apply_hi`.

    Raises
    ------
    ValueError
        Naming the argument (``Y``, ``theta``, ``r``, ``pilots``, ``n_iter``) on bad shapes or values.
    """
    if not isinstance(array, ULA):
        raise ValueError(f"array: expected a nearfield.array.ULA, got {type(array).__name__}")
    theta_a, r_a = _as_positions(theta, r)
    Yc = _check_Y(Y, array.n_antennas)
    stats = CalibrationStats(array.n_antennas, theta_a.size, pilots is None).update(Yc, pilots)
    return calibrate_stats(stats, array, theta_a, r_a, n_iter=n_iter, tol=tol, model=model)


# -- the HI state file ---------------------------------------------------------------------------------------
#
# {"version": 1, "kind": "hi_vector", "n_antennas": N, "hi": [[re, im]] * N, "dead": [indices],
#  "array": ULA.describe(), "references": [{"theta": rad, "range": m}], "method": "pilots" | "blind",
#  "frames": F, "snapshots": T_total, "normalisation": "..."}


def hi_state(
    c: np.ndarray, array: ULA, theta, r, *, method: str, frames: int, snapshots: int, threshold: float = DEAD_THRESHOLD
) -> dict:
    """The JSON-serialisable HI state (version 1, ``kind: "hi_vector"``) that :func:`load_hi` reads."""
    from ..state import complex_to_json

    theta, r = _as_positions(theta, r)
    c = np.asarray(c)
    return {
        "version": 1,
        "kind": "hi_vector",
        "n_antennas": int(c.size),
        "hi": complex_to_json(c),
        "dead": [int(i) for i in dead_channels(c, threshold)],
        "array": array.describe(),
        "references": [{"theta": float(t), "range": float(x)} for t, x in zip(theta, r)],
        "method": method,
        "frames": int(frames),
        "snapshots": int(snapshots),
        "normalisation": "mean |c| over live channels = 1, sum of c real positive",
    }


def load_hi(path: str, n_antennas: int | None = None, who: str = "hi") -> np.ndarray:
    """Read the HI vector c (N,) complex128 from a state file written by the reference calibrator.

    ``ValueError`` naming ``who``, the path and the field when the file is unreadable, not an
    HI state, or holds another number of antennas than ``n_antennas``.
    """
    from ..state import complex_from_json, load_json

    st = load_json(path, who)
    if st.get("kind") != "hi_vector" or "hi" not in st:
        raise ValueError(f"{who}, state_path {path!r}: expected an HI state (kind 'hi_vector' with field 'hi')")
    try:
        c = complex_from_json(st["hi"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{who}, state_path {path!r}: bad field 'hi' ({exc})") from None
    if not np.all(np.isfinite(c)) or c.size < 2:
        raise ValueError(f"{who}, state_path {path!r}: field 'hi' must hold >= 2 finite complex gains")
    if n_antennas is not None and c.size != n_antennas:
        raise ValueError(f"{who}, state_path {path!r}: the state holds {c.size} antennas, the frames {n_antennas}")
    return c
