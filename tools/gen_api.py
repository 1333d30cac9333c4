"""Generate docs/api.md, the API reference, from the docstrings (standard library only).

Usage::

    python tools/gen_api.py            # (re)write docs/api.md
    python tools/gen_api.py --check    # exit 1 when docs/api.md is not what the code gives
    python tools/gen_api.py --out -    # print the page

For every module of :data:`MODULES` the page lists its public names (``__all__`` when the
module has one, else the functions and classes it defines whose names do not start with
``_``): the signature, the first paragraph of the docstring, and its numpy-style
``Parameters``, ``Returns``, ``Raises`` and ``Attributes`` sections as lists.  An object
is described once, under the first listed module that defines it (or, when its defining
module is not listed, the first that exports it); the other modules that export it link
there.  Classes also list their public methods and properties with one-line summaries.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "api.md"

#: The modules documented, in page order; "pkg.*" adds every submodule of pkg (sorted).
MODULES = (
    "nearfield",
    "nearfield.estimators",
    "nearfield.estimators.*",
    "nearfield.bounds",
    "nearfield.ml",
    "nearfield.scenario",
    "nearfield.steering",
    "nearfield.array",
    "nearfield.impairments",
    "nearfield.montecarlo",
    "nearfield.experiments",
    "nearfield.runtime",
)

SECTIONS = ("Parameters", "Returns", "Yields", "Raises", "Attributes")
_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")


def module_names() -> list[str]:
    """The module names of :data:`MODULES` with the ``.*`` entries expanded."""
    names: list[str] = []
    for m in MODULES:
        if m.endswith(".*"):
            pkg = importlib.import_module(m[:-2])
            subs = sorted(i.name for i in pkgutil.iter_modules(pkg.__path__) if not i.name.startswith("_"))
            names += [f"{pkg.__name__}.{s}" for s in subs]
        else:
            names.append(m)
    return list(dict.fromkeys(names))


def public_names(mod) -> list[str]:
    """``__all__``, else the functions and classes defined in ``mod`` not starting with ``_``."""
    if hasattr(mod, "__all__"):
        return list(mod.__all__)
    return [
        n
        for n, o in vars(mod).items()
        if not n.startswith("_")
        and (inspect.isfunction(o) or inspect.isclass(o))
        and getattr(o, "__module__", None) == mod.__name__
    ]


def anchor(module: str, name: str) -> str:
    return (module + "-" + name).replace(".", "-").replace("_", "-").lower()


def signature(obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    return _ADDR.sub("", sig)


def split_doc(doc: str | None) -> tuple[str, dict[str, list[str]]]:
    """(summary paragraph, {section title: lines}) of a numpy-style docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip():
            break
        summary.append(line.strip())
    sections: dict[str, list[str]] = {}
    cur = None
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and set(nxt.strip()) <= {"-"} and len(nxt.strip()) >= 3:
            title = line.strip()
            cur = title if title in SECTIONS else None
            if cur:
                sections[cur] = []
            i += 2
            continue
        if cur is not None:
            sections[cur].append(line)
        i += 1
    return " ".join(summary), sections


def render_section(lines: list[str]) -> list[str]:
    """numpy entries ("name : type" then indented text) as a Markdown list."""
    out: list[str] = []
    body = textwrap.dedent("\n".join(lines)).strip("\n").splitlines()
    for line in body:
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            head = line.strip()
            name, _, typ = head.partition(" : ")
            out.append(f"- `{name.strip()}`" + (f" ({typ.strip()})" if typ else ""))
        elif out:
            out[-1] += (" — " if "—" not in out[-1] else " ") + line.strip()
        else:
            out.append("- " + line.strip())
    return out


def describe(obj, name: str, level: str = "###") -> list[str]:
    """Markdown for one function or class."""
    kind = "class" if inspect.isclass(obj) else "function"
    out = [f"{level} `{name}`", ""]
    sig = signature(obj)
    out += ["```python", f"{kind} {name}{sig}" if kind == "class" else f"{name}{sig}", "```", ""]
    summary, sections = split_doc(inspect.getdoc(obj) if kind == "function" else obj.__doc__)
    if summary:
        out += [summary, ""]
    for title in SECTIONS:
        if sections.get(title):
            items = render_section(sections[title])
            if items:
                out += [f"*{title}*", "", *items, ""]
    if kind == "class":
        members = []
        for mname, member in sorted(vars(obj).items()):
            if mname.startswith("_") and mname != "__call__":
                continue
            if isinstance(member, property):
                s, _ = split_doc(member.__doc__)
                members.append(f"- `{mname}` (property): {s}".rstrip(": "))
            elif isinstance(member, (staticmethod, classmethod)) or inspect.isfunction(member):
                f = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                s, _ = split_doc(f.__doc__)
                members.append(f"- `{mname}{signature(f)}`" + (f": {s}" if s else ""))
        if members:
            out += ["*Methods and properties*", "", *members, ""]
    return out


def constant_line(name: str, value) -> str:
    if isinstance(value, dict):
        text = "{" + ", ".join(repr(k) for k in value) + "}" if len(value) <= 12 else f"dict of {len(value)}"
    else:
        text = _ADDR.sub("", repr(value))
    if len(text) > 100:
        text = text[:97] + "..."
    return f"- `{name}` = `{text}`"


def generate() -> str:
    """The text of docs/api.md."""
    mods = [importlib.import_module(m) for m in module_names()]
    listed = {m.__name__ for m in mods}
    home: dict[int, tuple[str, str]] = {}  # id(obj) -> (module, name) where it is described
    for m in mods:  # defining modules first
        for n in public_names(m):
            o = getattr(m, n, None)
            if (inspect.isfunction(o) or inspect.isclass(o)) and getattr(o, "__module__", None) == m.__name__:
                home.setdefault(id(o), (m.__name__, n))
    for m in mods:  # then the first exporter of what is defined outside the listed modules
        for n in public_names(m):
            o = getattr(m, n, None)
            if (inspect.isfunction(o) or inspect.isclass(o)) and getattr(o, "__module__", None) not in listed:
                home.setdefault(id(o), (m.__name__, n))
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python tools/gen_api.py` (do not edit by hand; "
        "`python tools/gen_api.py --check` tells whether this page is current). Units are SI "
        "(radians, metres) unless a name says otherwise; equation numbers refer to the paper, "
        'and "errata N" to [paper-errata.md](paper-errata.md). How the pieces fit: '
        "[method.md](method.md).",
        "",
        "Modules:",
        "",
    ]
    for m in mods:
        s, _ = split_doc(m.__doc__)
        lines.append(f"- [`{m.__name__}`](#{m.__name__.replace('.', '')}) — {s}")
    lines.append("")
    for m in mods:
        s, _ = split_doc(m.__doc__)
        lines += [f"## {m.__name__}", "", s, ""] if s else [f"## {m.__name__}", ""]
        consts, links = [], []
        for n in public_names(m):
            if not hasattr(m, n):
                raise SystemExit(f"gen_api: {m.__name__}.__all__ names {n!r}, which the module does not define")
            o = getattr(m, n)
            if inspect.isfunction(o) or inspect.isclass(o):
                where = home.get(id(o))
                if where == (m.__name__, n):
                    lines += [f'<a id="{anchor(m.__name__, n)}"></a>', ""]
                    lines += describe(o, n)
                else:
                    links.append(f"- `{n}` → [`{where[0]}.{where[1]}`](#{anchor(*where)})")
            elif not inspect.ismodule(o):
                consts.append(constant_line(n, o))
        if consts:
            lines += ["### Constants", "", *consts, ""]
        if links:
            lines += ["### Re-exported", "", *links, ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT), help="output file, '-' for stdout (default docs/api.md)")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing; exit 1 if stale")
    args = ap.parse_args(argv)
    text = generate()
    if args.check:
        cur = Path(args.out).read_text() if Path(args.out).exists() else ""
        if cur != text:
            print(f"{args.out} is stale: run `python tools/gen_api.py`", file=sys.stderr)
            return 1
        return 0
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
