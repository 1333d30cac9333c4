"""Block base classes: one small class per block, typed and documented parameters.

A block declares its parameters once, as a class attribute ``params`` of
:class:`Param` objects; the flowgraph loader validates a graph file against them
before anything starts, and ``nearfield blocks`` lists them.  A block has one
processing method:

* :class:`Source` -- ``generate()`` yields frames, or ``None`` while idle (at least every
  ~50 ms while waiting for data), so the runtime can check its stop flag;
* :class:`Block` (a stage) -- ``process(frame)`` returns a frame, ``None`` (nothing to
  emit) or a dict ``{output_port: frame}``; a block with several input ports is called
  as ``process(frame, port)``;
* :class:`Sink` -- ``process(frame)`` returns ``None``.

``start()`` runs in the worker (process or thread) before the first frame: open files
and sockets, compile kernels there, not in ``__init__`` (which runs in the parent, for
validation).  ``finish()`` runs at end of stream and may return frames to flush;
``close()`` always runs last, also after an error.

What a block reads from a frame and adds to it is declared once, as ``reads`` and ``adds``
tuples of :class:`nearfield.contract.Field`: ``self.read(frame)`` validates a frame against
``reads`` and returns the parsed values, and the loader refuses a graph in which a block
reads a field no upstream block adds (:func:`nearfield.contract.check_graph`).
``checkpoint()`` persists a stateful block's state (the runtime calls it periodically).

A frame whose *data* is bad makes ``process`` raise :class:`BadFrame`: the runtime
drops the frame, counts and logs it, and goes on; the block must then leave its state
untouched.  Any other exception stops the graph.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .contract import ContractError, Field, read_fields
from .frame import Frame


class BadFrame(ValueError):
    """Raised by a block for a frame whose data is unusable (dropped and counted)."""


class ParamError(ValueError):
    """A block parameter failed validation; the message names block and parameter."""


_REQUIRED = object()


_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool", list: "list", dict: "dict", type(None): "null"}


@dataclass(frozen=True)
class Param:
    """A declared block parameter.

    Parameters
    ----------
    name : str
    types : type or tuple of types
        Accepted Python types after YAML parsing (``int`` is accepted for ``float``;
        ``bool`` is never accepted for ``int``/``float``).
    default : optional
        Omit for a required parameter.
    doc : str
        One line: meaning and unit.
    choices : tuple, optional
        Allowed values.
    check : callable, optional
        ``check(value)`` returns an error string (what was expected) or ``None``.
    """

    name: str
    types: Any
    default: Any = _REQUIRED
    doc: str = ""
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    @property
    def type_name(self) -> str:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        return " | ".join(_TYPE_NAMES.get(t, getattr(t, "__name__", str(t))) for t in types)

    def convert(self, value):
        """Return the validated value or raise ``ValueError`` saying what was expected."""
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        ok = False
        for t in types:
            if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                value, ok = float(value), True
                break
            if t is int and isinstance(value, bool):
                continue
            if isinstance(value, t):
                ok = True
                break
        if not ok:
            raise ValueError(f"expected {self.type_name}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"expected one of {list(self.choices)}, got {value!r}")
        if self.check is not None:
            msg = self.check(value)
            if msg:
                raise ValueError(f"expected {msg}, got {value!r}")
        return value


def idle_until(deadline: float, slice_s: float = 0.05):
    """Wait until ``time.monotonic() >= deadline``, yielding ``None`` every ``slice_s`` seconds.

    For paced sources (``rate_hz``): ``yield from idle_until(t_next)`` keeps the Source
    contract of yielding at least every ~50 ms, so the runtime can stop them promptly.
    """
    import time

    while True:
        delay = deadline - time.monotonic()
        if delay <= 0:
            return
        time.sleep(min(delay, slice_s))
        if deadline > time.monotonic():
            yield None


def n_targets_check(value) -> str | None:
    """``Param.check`` for K parameters: null, 'auto' or an integer >= 1."""
    ok = value is None or value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    return None if ok else "an integer >= 1, 'auto' or null"


def unit_interval(value) -> str | None:
    """``Param.check`` helper: 0 <= value <= 1."""
    return None if value is None or 0.0 <= value <= 1.0 else "a value in [0, 1]"


def positive(value) -> str | None:
    """``Param.check`` helper: value > 0."""
    return None if value is None or value > 0 else "a positive value"


def non_negative(value) -> str | None:
    """``Param.check`` helper: value >= 0."""
    return None if value is None or value >= 0 else "a value >= 0"


class Block:
    """A pipeline stage with one input port and one output port by default.

    Class attributes
    ----------------
    params : tuple of Param
        Declared parameters; each becomes an attribute of the instance.
    inputs, outputs : tuple of str
        Port names; the first is the default port of a connection.
    reads, adds : tuple of :class:`nearfield.contract.Field`
        The frame contract: what the block reads from an input frame and adds to it.
        :meth:`read` validates a frame against ``reads``; the flowgraph loader checks that
        every non-optional read is added upstream (:func:`nearfield.contract.check_graph`).
    requires : tuple of str
        Arrays an input frame must carry; the runtime drops (and counts) a frame that
        lacks one or holds NaN/Inf in one, before ``process`` sees it.  Derived from the
        non-optional array ``reads`` unless the class sets it.
    """

    params: ClassVar[tuple[Param, ...]] = ()
    inputs: ClassVar[tuple[str, ...]] = ("in",)
    outputs: ClassVar[tuple[str, ...]] = ("out",)
    reads: ClassVar[tuple[Field, ...]] = ()
    adds: ClassVar[tuple[Field, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = "block"

    if TYPE_CHECKING:
        # Parameters become instance attributes from ``params`` at run time (``__init__``
        # sets them); this tells the type checker so, without changing attribute lookup.
        def __getattr__(self, name: str) -> Any: ...

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "reads" in cls.__dict__ and "requires" not in cls.__dict__:
            cls.requires = tuple(f.name for f in cls.reads if f.kind == "array" and not f.optional)

    def __init__(self, name: str | None = None, **params):
        self.name = name or type(self).__name__
        declared = {p.name: p for p in self.params}
        for key in params:
            if key not in declared:
                known = ", ".join(sorted(declared)) or "none"
                raise ParamError(f"block {self.name!r}: unknown parameter {key!r} (known: {known})")
        for p in self.params:
            if p.name in params:
                try:
                    value = p.convert(params[p.name])
                except ValueError as exc:
                    raise ParamError(f"block {self.name!r}, parameter {p.name!r}: {exc}") from None
            elif p.required:
                raise ParamError(f"block {self.name!r}: missing required parameter {p.name!r} ({p.doc})")
            else:
                value = p.default
            setattr(self, p.name, value)
        self.validate()

    # -- hooks ---------------------------------------------------------------------
    def validate(self) -> None:
        """Cross-parameter checks; raise :class:`ParamError` naming block and parameter."""

    def param_error(self, param: str, message: str) -> ParamError:
        """A :class:`ParamError` naming this block and ``param``."""
        return ParamError(f"block {self.name!r}, parameter {param!r}: {message}")

    def start(self) -> None:
        """Set-up in the worker before the first frame."""

    def process(self, frame: Frame):
        """Process one frame: return a Frame, ``None``, or ``{port: Frame}``."""
        raise NotImplementedError

    def read(self, frame: Frame) -> dict:
        """Validate ``frame`` against the declared ``reads`` and return the parsed values.

        Returns ``{name: value}`` (None for absent optional fields): arrays as they are,
        meta ``geometry`` as a :class:`nearfield.array.ULA`, ``positions`` as ``(theta, r)``,
        ``gains`` as a complex array, ``indices`` as an int array (see
        :mod:`nearfield.contract`).  Raises :class:`BadFrame` naming the block and the field.
        """
        try:
            return read_fields(self.reads, frame)
        except ContractError as exc:
            raise BadFrame(f"block {self.name!r}: {exc}") from None

    def state_size_error(self, held: int, n: int) -> Exception:
        """The error for a frame of ``n`` antennas while the block's state holds ``held``.

        With a ``state_path`` the state file belongs to another array: a configuration error
        (``ValueError``, the run stops, naming the file); without, the frame is dropped (BadFrame).
        """
        path = getattr(self, "state_path", None)
        if path:
            return ValueError(
                f"block {self.name!r}, state_path {path!r}: the state holds {held} antennas, the frames {n}"
            )
        return BadFrame(f"snapshots: N={n} differs from the block state's {held}")

    def checkpoint(self) -> None:
        """Persist the block's state (called periodically by the runtime); no-op by default."""

    def finish(self):
        """End of stream: return ``None`` or an iterable of frames to emit."""
        return None

    def close(self) -> None:
        """Release resources; always called last."""

    # -- introspection -------------------------------------------------------------
    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""


class Source(Block):
    """A block with no input that yields frames from ``generate()``."""

    inputs: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = "source"

    def generate(self) -> Iterator[Frame]:
        raise NotImplementedError

    def process(self, frame: Frame):  # pragma: no cover - sources have no input
        raise TypeError(f"source {self.name!r} takes no input")


class Sink(Block):
    """A block with no output."""

    outputs: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = "sink"
