"""The block registry: every block type a flowgraph may name.

Block types come from the entry-point group ``nearfield.blocks`` (see ``pyproject.toml``),
so another installed package adds block types by declaring entry points in the same group::

    [project.entry-points."nearfield.blocks"]
    my_filter = "mypkg.blocks:MyFilter"

Entry points are discovered once and *loaded lazily*: the module of a block type is
imported only when :func:`get` asks for it, so a broken or missing module gives a clear
error naming the block type and the module, and never breaks the other types.

:func:`register` adds a class directly (tests, plugins loaded by hand); a registered name
shadows an entry point of the same name.  A flowgraph can only name registered types --
never an import path -- so loading a graph file cannot run arbitrary code.
"""

from __future__ import annotations

import importlib.metadata as _md
import threading

from ..block import Block

__all__ = [
    "GROUP",
    "RegistryError",
    "UnknownBlockType",
    "BlockLoadError",
    "register",
    "unregister",
    "get",
    "available",
    "origin",
    "reset",
]

#: Entry-point group that provides block types.
GROUP = "nearfield.blocks"


class RegistryError(LookupError):
    """Base class of registry errors."""

    def __str__(self) -> str:  # LookupError/KeyError would add quotes
        return str(self.args[0]) if self.args else ""


class UnknownBlockType(RegistryError):
    """No block type of that name."""


class BlockLoadError(RegistryError):
    """A block type exists but its module or class cannot be loaded."""


_lock = threading.Lock()
_registered: dict[str, type[Block]] = {}
_entry_points: dict[str, list] | None = None  # name -> [EntryPoint, ...]
_cache: dict[str, type[Block]] = {}


def _discover() -> dict[str, list]:
    global _entry_points
    with _lock:
        if _entry_points is None:
            found: dict[str, list] = {}
            for ep in _md.entry_points(group=GROUP):
                lst = found.setdefault(ep.name, [])
                if all(e.value != ep.value for e in lst):  # same target twice (stale metadata): once
                    lst.append(ep)
            _entry_points = found
        return _entry_points


def reset() -> None:
    """Forget discovered entry points and loaded classes (registered classes stay)."""
    global _entry_points
    with _lock:
        _entry_points = None
        _cache.clear()


def register(name: str, cls: type, *, replace: bool = False) -> type[Block]:
    """Register block class ``cls`` under ``name`` (shadows an entry point of that name).

    Raises ``ValueError`` if ``name`` is already registered with another class and
    ``replace`` is false, ``TypeError`` if ``cls`` is not a :class:`~nearfield.block.Block`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"block type name: expected a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Block)):
        raise TypeError(f"block type {name!r}: expected a subclass of nearfield.block.Block, got {cls!r}")
    with _lock:
        old = _registered.get(name)
        if old is not None and old is not cls and not replace:
            raise ValueError(f"block type {name!r} is already registered ({old.__module__}.{old.__qualname__})")
        _registered[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a type added with :func:`register` (no error if absent)."""
    with _lock:
        _registered.pop(name, None)


def available() -> list[str]:
    """Sorted names of every block type (entry points and registered), loaded or not."""
    return sorted(set(_discover()) | set(_registered))


def origin(name: str) -> str:
    """Where a type comes from: ``"module:Class"`` of its entry point, or of the registered class."""
    if name in _registered:
        cls = _registered[name]
        return f"{cls.__module__}:{cls.__qualname__}"
    eps = _discover().get(name)
    if not eps:
        raise UnknownBlockType(_unknown_msg(name))
    return " | ".join(ep.value for ep in eps)


def _unknown_msg(name) -> str:
    known = ", ".join(available()) or "none"
    return f"unknown block type {name!r} (known types: {known})"


def get(name: str) -> type[Block]:
    """The block class registered as ``name``, importing its module on first use.

    Raises
    ------
    UnknownBlockType
        No such type; the message lists the known ones.
    BlockLoadError
        The entry point's module fails to import, lacks the class, or the object is not a
        Block subclass; the message names the block type and the module.
    """
    if name in _registered:
        return _registered[name]
    if name in _cache:
        return _cache[name]
    eps = _discover().get(name)
    if not eps:
        raise UnknownBlockType(_unknown_msg(name))
    if len(eps) > 1:
        raise BlockLoadError(
            f"block type {name!r} is ambiguous: provided by " + " and ".join(repr(ep.value) for ep in eps)
        )
    ep = eps[0]
    module = ep.value.split(":", 1)[0].strip()
    try:
        obj = ep.load()
    except Exception as exc:  # ImportError, SyntaxError, AttributeError, errors at import time
        raise BlockLoadError(
            f"block type {name!r}: cannot load {ep.value!r} (module {module!r}): {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, Block)):
        raise BlockLoadError(
            f"block type {name!r}: {ep.value!r} (module {module!r}) is not a "
            f"nearfield.block.Block subclass (got {obj!r})"
        )
    with _lock:
        _cache[name] = obj
    return obj
