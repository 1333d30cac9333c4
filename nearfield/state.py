"""Persistent block state: atomic JSON files (write to a temp file, then rename)."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np


def save_json_atomic(path: str, obj: dict) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a crash leaves the old file or the new one)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".state-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_json(path: str, who: str) -> dict:
    """Read a state file; ``ValueError`` naming ``who`` and the path when unreadable."""
    try:
        with open(path) as fh:
            st = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{who}, state_path {path!r}: unreadable state ({exc})") from None
    if not isinstance(st, dict) or st.get("version") != 1:
        raise ValueError(f"{who}, state_path {path!r}: expected a version-1 state object")
    return st


def complex_to_json(v: np.ndarray) -> list:
    """Complex vector -> [[re, im], ...]."""
    return [[float(x.real), float(x.imag)] for x in np.asarray(v)]


def complex_from_json(v) -> np.ndarray:
    """Inverse of :func:`complex_to_json`."""
    a = np.asarray(v, dtype=float).reshape(-1, 2)
    return a[:, 0] + 1j * a[:, 1]
