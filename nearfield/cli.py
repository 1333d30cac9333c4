"""The ``nearfield`` command line.

::

    nearfield run FILE [--set block.param=value ...] [--inproc] [--transport ipc|tcp] [--hwm N] [--quiet]
                       [--max-drop-share X] [--stall-timeout S] [--checkpoint-s S] [--no-curve]
    nearfield blocks [TYPE ...]
    nearfield experiment ...        (delegates to nearfield.experiments.main)

Exit codes: 0 success; 1 a block failed, stalled or a worker died; 2 invalid flowgraph,
``--set`` or usage, or an error in a block's ``start()``; 3 the run produced nothing or
dropped more than ``--max-drop-share`` of its frames; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .runtime import registry
from .runtime.flowgraph import FlowgraphError, load_flowgraph

__all__ = ["main", "describe_blocks"]


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="nearfield",
        description="Near-field localization with XL-arrays under hardware impairments: run "
        "block flowgraphs, list block types, run the paper's experiments.",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run a flowgraph file",
        description="Validate a YAML flowgraph, then run every block in its own "
        "process (or thread with --inproc) until end of stream.",
    )
    run.add_argument("file", metavar="FILE", help="flowgraph YAML file")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="BLOCK.PARAM=VALUE",
        help="override a block parameter (value parsed as YAML); repeatable",
    )
    run.add_argument(
        "--inproc", action="store_true", help="run all blocks as threads of one process (inproc:// sockets)"
    )
    run.add_argument(
        "--transport",
        choices=("ipc", "tcp"),
        default=None,
        help="socket transport between blocks (default: ipc for processes, inproc:// for --inproc threads)",
    )
    run.add_argument(
        "--hwm", type=int, default=4, metavar="N", help="high-water mark of every link, frames (default 4)"
    )
    run.add_argument("--quiet", action="store_true", help="do not print the per-block summary")
    run.add_argument(
        "--max-drop-share",
        type=float,
        default=0.5,
        metavar="X",
        help="exit with code 3 when more than this share of the frames the blocks "
        "received was dropped (default 0.5), or when no frame reached a sink",
    )
    run.add_argument(
        "--stall-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="stop the graph when a block makes no progress for S seconds (default 60; 0 = no watchdog)",
    )
    run.add_argument(
        "--checkpoint-s",
        type=float,
        default=30.0,
        metavar="S",
        help="save block state (checkpoint()) every S seconds (default 30; 0 = only at close)",
    )
    run.add_argument(
        "--no-curve",
        dest="curve",
        action="store_false",
        default=None,
        help="with --transport tcp: do not encrypt/authenticate the links with CURVE (on by default)",
    )

    bl = sub.add_parser(
        "blocks",
        help="list block types and their parameters",
        description="List every registered block type: kind, one-line doc, ports and parameters (type, default, doc).",
    )
    bl.add_argument("types", nargs="*", metavar="TYPE", help="only these types")

    sub.add_parser("experiment", help="run the paper's experiments (nearfield experiment --help)", add_help=False)
    return ap


def _fmt_default(p) -> str:
    return "required" if p.required else f"default {p.default!r}"


def describe_blocks(types=None) -> tuple[str, bool]:
    """Text listing of block types; returns (text, all_loaded)."""
    names = registry.available() if not types else list(types)
    lines = []
    all_ok = True
    for name in names:
        try:
            cls = registry.get(name)
        except registry.RegistryError as exc:
            all_ok = False
            lines.append(f"{name}  [cannot load]")
            lines.append(f"    error: {exc}")
            lines.append("")
            continue
        ins = ", ".join(cls.inputs) or "-"
        outs = ", ".join(cls.outputs) or "-"
        lines.append(f"{name}  ({cls.kind})  {registry.origin(name)}")
        if cls.summary():
            lines.append(f"    {cls.summary()}")
        lines.append(
            f"    inputs: {ins}    outputs: {outs}"
            + (f"    requires: {', '.join(cls.requires)}" if cls.requires else "")
        )
        if not cls.params:
            lines.append("    (no parameters)")
        for p in cls.params:
            extra = f"; one of {list(p.choices)}" if p.choices else ""
            lines.append(f"    {p.name}: {p.type_name} ({_fmt_default(p)}{extra})  {p.doc}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n", all_ok


def _experiment(argv) -> int:
    try:
        mod = importlib.import_module("nearfield.experiments")
    except ModuleNotFoundError as exc:
        if exc.name in ("nearfield.experiments",):
            print(
                "nearfield experiment: the experiment runner (nearfield.experiments) is not installed in this version",
                file=sys.stderr,
            )
            return 2
        raise
    entry = getattr(mod, "main", None)
    if entry is None:
        print("nearfield experiment: nearfield.experiments has no main(argv)", file=sys.stderr)
        return 2
    rc = entry(list(argv))
    return int(rc or 0)


def main(argv=None) -> int:
    """Entry point of the ``nearfield`` console script; returns the exit code (130 on Ctrl-C)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while loading or starting, before the runner takes over
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "experiment":
        return _experiment(argv[1:])
    ap = _build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or usage error (2)
        return int(exc.code or 0)

    if args.command == "blocks":
        text, ok = describe_blocks(args.types)
        sys.stdout.write(text)
        if args.types:
            unknown = [t for t in args.types if t not in registry.available()]
            if unknown:
                return 2
        return 0

    if args.command == "run":
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        for opt, v, ok in (
            ("--hwm", args.hwm, args.hwm > 0),
            ("--max-drop-share", args.max_drop_share, 0 <= args.max_drop_share <= 1),
            ("--stall-timeout", args.stall_timeout, args.stall_timeout >= 0),
            ("--checkpoint-s", args.checkpoint_s, args.checkpoint_s >= 0),
        ):
            if not ok:
                what = (
                    "a positive integer"
                    if opt == "--hwm"
                    else ("a number in [0, 1]" if opt == "--max-drop-share" else "a number of seconds >= 0")
                )
                print(f"nearfield run: {opt}: expected {what}, got {v}", file=sys.stderr)
                return 2
        if args.curve is False and args.transport != "tcp":
            args.curve = None
        try:
            graph = load_flowgraph(args.file, args.overrides)
        except FlowgraphError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        from .runtime import exit_code, run_flowgraph

        result = run_flowgraph(
            graph,
            inproc=args.inproc,
            transport=args.transport,
            hwm=args.hwm,
            quiet=args.quiet,
            curve=args.curve,
            stall_timeout_s=args.stall_timeout or None,
            checkpoint_s=args.checkpoint_s or None,
        )
        rc = exit_code(result, args.max_drop_share)
        if rc == 3:
            print(f"nearfield run: {result.degraded(args.max_drop_share)}", file=sys.stderr)
        return rc
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
