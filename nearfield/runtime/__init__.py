"""The flowgraph runtime: load a graph file, run one worker per block, report.

Modules
-------
* :mod:`.flowgraph` -- load, override and validate a YAML flowgraph (bounded, linear time);
* :mod:`.registry` -- the block types a flowgraph may name (entry points);
* :mod:`.wire` -- the zero-copy frame encoding and its defensive decoder;
* :mod:`.plan` -- every socket's endpoint, end-of-stream token and CURVE keys;
* :mod:`.endpoints` -- typed socket ends that own their sockets and counters;
* :mod:`.worker` -- one block's loop: start-up, frames, drops, cancellation, checkpoints;
* :mod:`.runner` -- :func:`run_flowgraph`: start, supervise (errors, deaths, watchdog), stop;
* :mod:`.summary` -- :class:`RunResult`, the summary table, drop reasons and exit codes.

How a run works
---------------
* **One worker per block.**  Process mode (default): one ``multiprocessing`` process per
  block, started with ``fork`` (block classes registered at run time are available in the
  children; nothing is pickled); ZeroMQ contexts are created only after forking.
  In-process mode (``inproc=True``): one thread per block, one shared context and
  ``inproc://`` sockets; the worker code is the same.
* **Links.**  An input port binds one ``PULL`` socket (fan-in); every edge has its own
  ``PUSH`` socket (fan-out duplicates).  Endpoints are ``ipc://`` paths in a private
  directory (``transport="tcp"``: ``tcp://127.0.0.1``, CURVE by default).  High-water marks
  are small (``hwm`` frames) so a slow block blocks its upstream and nothing is dropped.  A
  *lossy* edge is ``XPUB``/``SUB``: frames that do not fit are dropped and counted at the
  sender (``lost``).  End of stream is always delivered, with the edge's random token.
* **Frames** travel as the zero-copy multipart messages of :mod:`.wire`.
* **Errors.**  Any exception other than :class:`~nearfield.block.BadFrame` is reported to
  the runner, which prints ``block 'X' failed on frame seq=N: <Error>: <msg>`` and stops
  every worker.  Children ignore SIGINT and die with the parent (``PR_SET_PDEATHSIG``).
"""

from .runner import run_flowgraph
from .summary import (
    EXIT_DEGRADED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    RunResult,
    exit_code,
    format_summary,
)

__all__ = [
    "run_flowgraph",
    "RunResult",
    "format_summary",
    "exit_code",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_DEGRADED",
    "EXIT_INTERRUPTED",
]
