"""Persistent block state: validated JSON files, written atomically.

A state file is a JSON object with ``"version": 1`` (:data:`STATE_VERSION`, the schema
version) and the fields of the block that wrote it.  Loading never trusts the file:
:func:`load_json` refuses (``ValueError`` naming the file and the field) a file that is
not a version-1 object, is larger than ``max_bytes``, or whose fields break the
:data:`STATE_FIELDS` rules -- types, finiteness, ranges, and the array they belong to
(every per-antenna vector has the same length N, ``n_antennas`` when given, and antenna
indices lie in ``0..N-1``).  A refused file stops the graph at start (exit code 2): a
poisoned calibration, e.g. a negative noise variance, is never fed back into the
estimates; delete or fix the file to start afresh.

:func:`save_json_atomic` writes to a temporary file in the same directory, then renames
it over the target (a crash leaves the old file or the new one, never half of one);
temporary files left by a killed writer are removed by the next save.
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "STATE_VERSION",
    "StateField",
    "STATE_FIELDS",
    "save_json_atomic",
    "load_json",
    "validate_state",
    "complex_to_json",
    "complex_from_json",
    "clean_stale_temp_files",
]

#: Schema version of every state file (field ``"version"``).
STATE_VERSION = 1
_MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class StateField:
    """Rule for one state field.

    Attributes
    ----------
    kind : {"int", "float", "real_vector", "complex_vector", "index_vector"}
        Scalar or vector; a complex vector is ``[[re, im], ...]``; an index vector holds
        antenna indices.
    low, high : float or None
        Allowed range (inclusive); ``low_open`` makes the low end exclusive.
    nullable : bool
        ``null`` allowed.
    per_antenna : bool
        A vector with one entry per antenna (its length is the array size N).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    nullable: bool = True
    per_antenna: bool = False


#: Rules of the fields the blocks' state files hold (a field not listed is not checked here).
STATE_FIELDS: dict[str, StateField] = {
    "n_antennas": StateField("int", low=2),
    "frames": StateField("int", low=0),
    "noise_var": StateField("float", low=0.0, low_open=True),
    "faulty": StateField("index_vector", nullable=False),
    "e": StateField("real_vector", per_antenna=True),
    "b": StateField("complex_vector", per_antenna=True),
    "evidence": StateField("complex_vector", per_antenna=True),
}


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a temp file or ipc folder it left is stale when not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temp_files(path: str) -> int:
    """Remove temporary files of :func:`save_json_atomic` for ``path`` whose writer is gone."""
    d, base = os.path.split(os.path.abspath(path))
    n = 0
    for tmp in glob.glob(os.path.join(glob.escape(d), f".{glob.escape(base)}.*.tmp")):
        pid = tmp[:-4].rsplit(".", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            try:
                os.unlink(tmp)
                n += 1
            except OSError:
                pass
    return n


def save_json_atomic(path: str, obj: dict) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a crash leaves the old file or the new one)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    clean_stale_temp_files(path)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_number(name: str, v, rule: StateField, integer: bool) -> None:
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type:
        raise ValueError(f"field {name!r}: expected {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"field {name!r}: expected a finite number, got {v!r}")
    if rule.low is not None and (v <= rule.low if rule.low_open else v < rule.low):
        raise ValueError(f"field {name!r}: expected a value {'>' if rule.low_open else '>='} {rule.low:g}, got {v!r}")
    if rule.high is not None and v > rule.high:
        raise ValueError(f"field {name!r}: expected a value <= {rule.high:g}, got {v!r}")


def _vector(name: str, v, rule: StateField) -> np.ndarray:
    if not isinstance(v, list):
        raise ValueError(f"field {name!r}: expected a list, got {type(v).__name__}")
    try:
        if rule.kind == "complex_vector":
            a = np.asarray(v, dtype=float)
            if a.ndim != 2 or a.shape[1] != 2:
                raise ValueError
        elif rule.kind == "index_vector":
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                raise ValueError
            a = np.asarray(v, dtype=np.int64).reshape(-1)
        else:
            a = np.asarray(v, dtype=float)
            if a.ndim != 1:
                raise ValueError
    except (ValueError, TypeError, OverflowError):
        what = {
            "complex_vector": "a list of [re, im] pairs",
            "index_vector": "a list of integers",
            "real_vector": "a list of numbers",
        }[rule.kind]
        raise ValueError(f"field {name!r}: expected {what}") from None
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"field {name!r}: holds NaN or Inf")
    if rule.low is not None and a.size and (a.min() <= rule.low if rule.low_open else a.min() < rule.low):
        raise ValueError(f"field {name!r}: values below {rule.low:g}")
    return a


def validate_state(st, rules: dict[str, StateField] | None = None, n_antennas: int | None = None) -> int | None:
    """Check a parsed state object against ``rules`` (default :data:`STATE_FIELDS`).

    Parameters
    ----------
    st : object
        The parsed JSON.
    rules : dict, optional
        Field name -> :class:`StateField`; fields absent from ``st`` are not required.
    n_antennas : int, optional
        The array size the state must belong to (e.g. the frames' N), when known.

    Returns
    -------
    int or None
        The array size N the state belongs to, when it says.

    Raises
    ------
    ValueError
        Naming the field and what was expected.
    """
    rules = STATE_FIELDS if rules is None else rules
    if not isinstance(st, dict):
        raise ValueError(f"expected a JSON object, got {type(st).__name__}")
    if st.get("version") != STATE_VERSION or isinstance(st.get("version"), bool):
        raise ValueError(
            f"field 'version': expected the state schema version {STATE_VERSION}, got {st.get('version')!r}"
        )
    sizes: dict[str, int] = {}
    indices: dict[str, np.ndarray] = {}
    for name, rule in rules.items():
        if name not in st:
            continue
        v = st[name]
        if v is None:
            if not rule.nullable:
                raise ValueError(f"field {name!r}: may not be null")
            continue
        if rule.kind in ("int", "float"):
            _check_number(name, v, rule, rule.kind == "int")
            if name == "n_antennas":
                sizes[name] = int(v)
            continue
        a = _vector(name, v, rule)
        if rule.per_antenna:
            sizes[name] = len(a)
        if rule.kind == "index_vector":
            indices[name] = a
    if n_antennas is not None:
        sizes["the frames' array"] = int(n_antennas)
    if len(set(sizes.values())) > 1:
        raise ValueError(
            "per-antenna fields disagree on the array size: " + ", ".join(f"{k} {v}" for k, v in sizes.items())
        )
    n = next(iter(sizes.values()), None)
    for name, a in indices.items():
        if a.size and (a.min() < 0 or (n is not None and a.max() >= n)):
            raise ValueError(f"field {name!r}: antenna indices outside 0..{'N-1' if n is None else n - 1}")
        if a.size != np.unique(a).size:
            raise ValueError(f"field {name!r}: repeated antenna indices")
    return n


def load_json(
    path: str,
    who: str,
    rules: dict[str, StateField] | None = None,
    n_antennas: int | None = None,
    max_bytes: int = _MAX_BYTES,
) -> dict:
    """Read and validate a state file (see :func:`validate_state`).

    Raises
    ------
    ValueError
        ``"<who>, state_path '<path>': <what is wrong>"`` when the file is unreadable,
        too large, not JSON or breaks a rule.
    """
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise ValueError(f"{size} bytes exceeds the limit of {max_bytes} bytes")
        with open(path, encoding="utf-8") as fh:
            st = json.load(fh)
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(f"{who}, state_path {path!r}: unreadable state ({str(exc)[:200]})") from None
    try:
        validate_state(st, rules, n_antennas)
    except ValueError as exc:
        raise ValueError(
            f"{who}, state_path {path!r}: refused: {exc} (fix or delete the file to start afresh)"
        ) from None
    return st


def complex_to_json(v: np.ndarray) -> list:
    """Complex vector -> [[re, im], ...]."""
    a = np.asarray(v).reshape(-1)
    return np.stack([a.real, a.imag], axis=1).astype(float).tolist()


def complex_from_json(v) -> np.ndarray:
    """Inverse of :func:`complex_to_json`."""
    a = np.asarray(v, dtype=float).reshape(-1, 2)
    return a[:, 0] + 1j * a[:, 1]
