"""One result type and one calling convention for every localization scheme.

Every scheme -- the proposed chain, the paper as written, Phase 1's coarse estimate alone,
the BCD baseline, 2-D MUSIC, and what is added later -- is a *localizer*: a callable

    localizer(Y, array, pilots=None, n_targets=None, **options) -> Estimate

on one block of snapshots ``Y`` (N, T) of the array ``array``.  The streaming blocks and
the Monte Carlo runner handle any of them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..array import ULA


@dataclass
class Estimate:
    """What a localization scheme returns.

    Per-target arrays share one order: the pilot rows when pilots are given, else the
    scheme's own (:meth:`order` sorts by angle, the order of the estimates record).

    Attributes
    ----------
    theta : ndarray, shape (K,)
        Angles, rad.
    r : ndarray, shape (K,)
        Ranges, m.
    gains : ndarray, shape (K,), complex, or None
        Channel gains beta_k, when the scheme estimates them.
    faulty : ndarray, shape (D,), int, or None
        Detected faulty antennas (0-based, sorted); None when the scheme does not detect faults.
    c_hat : ndarray, shape (N,), complex, or None
        Estimated HI vector (eq. 26), when the scheme estimates it.
    status : list of str, one per target
        "ok", or a short word saying why a target is unreliable.
    theta_std, r_std : ndarray, shape (K,), or None
        Standard deviations (rad, m), when the scheme reports them.
    residual : float or None
        Final cost of the scheme's fit (sum of squared residuals), when it has one.
    diagnostics : dict
        Scheme-specific extras (noise variance ``noise_var``, iteration counts, spectra, ...).
    """

    theta: np.ndarray
    r: np.ndarray
    gains: np.ndarray | None = None
    faulty: np.ndarray | None = None
    c_hat: np.ndarray | None = None
    status: list[str] = field(default_factory=list)
    theta_std: np.ndarray | None = None
    r_std: np.ndarray | None = None
    residual: float | None = None
    diagnostics: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.theta = np.asarray(self.theta, dtype=float).reshape(-1)
        self.r = np.asarray(self.r, dtype=float).reshape(-1)
        if self.theta.shape != self.r.shape:
            raise ValueError(f"Estimate: theta {self.theta.shape} and r {self.r.shape} differ in length")
        if self.faulty is not None:
            self.faulty = np.asarray(self.faulty, dtype=int).reshape(-1)
        if not self.status:
            self.status = ["ok"] * self.theta.size

    @property
    def n_targets(self) -> int:
        """K, the number of estimated targets."""
        return int(self.theta.size)

    def order(self) -> np.ndarray:
        """Indices that sort the targets by angle (stable)."""
        return np.argsort(self.theta, kind="stable")

    def positions(self) -> list[dict]:
        """Targets as estimates-record entries ``{"theta": rad, "range": m}``, sorted by angle."""
        return [{"theta": float(self.theta[i]), "range": float(self.r[i])} for i in self.order()]


class Localizer(Protocol):
    """A localization scheme: one block of snapshots in, an :class:`Estimate` out.

    Parameters
    ----------
    Y : ndarray, shape (N, T), complex
        Snapshots of eq. (5).
    array : ULA
    pilots : ndarray, shape (K, T), complex, optional
        Known probing signals (schemes that need them raise ``ValueError`` without).
    n_targets : int or "auto", optional
        K; from ``pilots`` when given.
    """

    def __call__(
        self, Y: np.ndarray, array: ULA, pilots: np.ndarray | None = None, n_targets: Any = None, **options: Any
    ) -> Estimate: ...


def resolve_order(pilots: np.ndarray | None, n_targets: Any, what: str = "n_targets") -> int | None:
    """K from the pilots (rows) or ``n_targets`` (an int); None when neither fixes it ("auto"/None)."""
    if pilots is not None:
        return int(np.asarray(pilots).shape[0])
    if n_targets is None or n_targets == "auto":
        return None
    if isinstance(n_targets, bool) or not isinstance(n_targets, (int, np.integer)) or n_targets < 1:
        raise ValueError(f"{what}: expected an integer >= 1, 'auto' or None, got {n_targets!r}")
    return int(n_targets)
