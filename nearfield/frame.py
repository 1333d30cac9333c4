"""The unit that flows between blocks, and the helpers that parse and write its meta fields."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One frame of snapshots and what the stages add to it.

    Attributes
    ----------
    seq : int
        Frame counter set by the source; gaps reveal drops.
    t0 : float
        Time of the first snapshot, seconds (source clock).
    arrays : dict[str, ndarray]
        Named arrays: ``snapshots`` (N, T) complex64, and where present ``pilots`` (K, T),
        ``c_hat`` (N,), ``covariance`` (N, N), ...  Arrays received from the wire are
        read-only views of the message buffers: blocks must not write into them.
    meta : dict
        JSON-serialisable: ``array`` geometry (see :meth:`nearfield.array.ULA.describe`),
        what each stage adds (``faulty``, ``coarse``, ``gains``, ``targets``) and
        ``truth`` when the source knows it.
    """

    seq: int
    t0: float
    arrays: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def snapshots(self) -> np.ndarray:
        """The (N, T) snapshot array (``KeyError`` if absent)."""
        return self.arrays["snapshots"]


def meta_positions(meta: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``meta[key]``, a list of ``{"theta": rad, "range": m}``, into two (K,) arrays.

    Raises ``ValueError`` naming the field when it is missing or malformed.
    """
    try:
        items = meta[key]
        theta = np.array([float(t["theta"]) for t in items])
        r = np.array([float(t["range"]) for t in items])
    except KeyError as exc:
        raise ValueError(f"meta.{key}: missing {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta.{key}: expected a list of {{theta, range}} numbers ({exc})") from None
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(r))):
        raise ValueError(f"meta.{key}: NaN or Inf positions")
    return theta, r


def meta_gains(meta: dict, key: str = "gains") -> np.ndarray:
    """Parse ``meta[key]``, a list of ``[re, im]``, into a (K,) complex array (``ValueError`` if malformed)."""
    try:
        g = np.asarray(meta[key], dtype=float).reshape(-1, 2)
    except KeyError:
        raise ValueError(f"meta.{key}: missing") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta.{key}: expected a list of [re, im] pairs ({exc})") from None
    return g[:, 0] + 1j * g[:, 1]


def positions_meta(theta, r, sort: bool = True) -> list[dict]:
    """Positions as meta entries ``[{"theta": rad, "range": m}, ...]``, sorted by theta when ``sort``
    (the order of ``targets`` in the estimates record); inverse of :func:`meta_positions`."""
    theta = np.asarray(theta, float).reshape(-1)
    r = np.asarray(r, float).reshape(-1)
    order = np.argsort(theta, kind="stable") if sort else np.arange(theta.size)
    return [{"theta": float(theta[i]), "range": float(r[i])} for i in order]


def jsonable(obj, finite: bool = True):
    """``obj`` as plain JSON data, recursively: numpy scalars and arrays become Python numbers
    and lists, tuples become lists, dict keys strings; with ``finite`` (strict JSON for outside
    tools, which has no NaN/Inf) non-finite floats become None.  The one JSON sanitiser."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return None if finite and not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v, finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, finite) for v in obj]
    return obj


def finite_or_none(obj):
    """JSON has no NaN/Inf: map them to null, recursively (strict JSON for outside tools); see :func:`jsonable`."""
    return jsonable(obj, finite=True)
