#!/usr/bin/env python3
"""Generate src/postgres_async/_sqlstate.py (one exception class per SQLSTATE).

Reads PostgreSQL's errcodes.txt (the vendored tools/errcodes.txt by default) and writes
the module with text that is already `ruff format`-clean, so the output depends only on
the input file (and on the names of Python's builtins, which classes must not shadow).

    python tools/gen_errcodes.py            # rewrite the module
    python tools/gen_errcodes.py --check    # exit 1 if the committed module is stale

The naming rules are in _RULES below, which is also copied into the generated module's
docstring so that users read them where the classes are.
"""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ERRCODES = ROOT / "tools" / "errcodes.txt"
DEFAULT_OUTPUT = ROOT / "src" / "postgres_async" / "_sqlstate.py"

_SQLSTATE_RE = re.compile(r"[0-9A-Z]{5}")
_SECTION_RE = re.compile(r"Section:\s+Class\s+([0-9A-Z]{2})\s+-\s+(.*)")
_BUILTIN_NAMES = frozenset(dir(builtins))
_BUILTIN_PREFIX = "Postgres"


class ErrcodesError(ValueError):
    """errcodes.txt could not be parsed or names could not be made unique."""


@dataclasses.dataclass(frozen=True)
class Code:
    sqlstate: str
    kind: str  # E (error), W (warning) or S (success)
    condition: str  # the spec (PL/pgSQL condition) name, or one made from the macro

    @property
    def sqlclass(self) -> str:
        return self.sqlstate[:2]


@dataclasses.dataclass(frozen=True)
class Model:
    codes: tuple[Code, ...]  # file order, one per SQLSTATE
    class_titles: dict[str, str]  # "23" -> "Integrity Constraint Violation"
    names: dict[str, str]  # sqlstate -> Python class name
    parents: dict[str, str | None]  # sqlstate -> parent sqlstate (None: PgasyncError)


def parse(text: str) -> tuple[tuple[Code, ...], dict[str, str]]:
    """The codes in file order (the first named line of each SQLSTATE) and class titles."""
    titles: dict[str, str] = {}
    named: dict[str, Code] = {}
    unnamed: dict[str, Code] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("Section:"):
            match = _SECTION_RE.fullmatch(line)
            if match is None:
                raise ErrcodesError(f"line {lineno}: unrecognised section line {raw!r}")
            titles.setdefault(match[1], match[2].strip())
            continue
        fields = line.split()
        if len(fields) not in (3, 4):
            raise ErrcodesError(f"line {lineno}: expected 3 or 4 fields, got {raw!r}")
        sqlstate, kind, macro = fields[:3]
        if not _SQLSTATE_RE.fullmatch(sqlstate) or kind not in ("E", "W", "S"):
            raise ErrcodesError(f"line {lineno}: bad SQLSTATE or E/W/S field in {raw!r}")
        if not macro.startswith("ERRCODE_"):
            raise ErrcodesError(f"line {lineno}: macro name must start with ERRCODE_: {raw!r}")
        if len(fields) == 4:
            # The spec name is the documented condition; macro-only lines are C aliases,
            # used for the name only if a code has no spec name at all.
            named.setdefault(sqlstate, Code(sqlstate, kind, fields[3]))
        else:
            unnamed.setdefault(sqlstate, Code(sqlstate, kind, macro[8:].lower()))
    codes = list(named.values())
    codes += [code for sqlstate, code in unnamed.items() if sqlstate not in named]
    if not codes:
        raise ErrcodesError("no error codes found")
    return tuple(codes), titles


def camel(condition: str) -> str:
    return "".join(part.capitalize() for part in condition.split("_"))


def build(text: str) -> Model:
    codes, titles = parse(text)
    by_state = {code.sqlstate: code for code in codes}

    def qualifier(sqlclass: str) -> str:
        base = by_state.get(sqlclass + "000")
        if base is None:
            return "Class" + sqlclass
        return re.sub(r"(?<=.)(Exception|Error)$", "", camel(base.condition))

    sharing: dict[str, list[Code]] = {}
    for code in codes:
        sharing.setdefault(code.condition, []).append(code)
    names: dict[str, str] = {}
    for group in sharing.values():
        primary = next((c for c in group if c.kind == "E"), group[0])
        for code in group:
            name = camel(code.condition)
            if code is not primary:
                name += qualifier(code.sqlclass)
            if name in _BUILTIN_NAMES:
                name = _BUILTIN_PREFIX + name
            if not name.isidentifier():
                raise ErrcodesError(f"{code.sqlstate}: {name!r} is not an identifier")
            names[code.sqlstate] = name
    seen: dict[str, str] = {}
    for sqlstate, name in names.items():
        if name in seen or name == "PgasyncError":
            other = seen.get(name, "the base class")
            raise ErrcodesError(f"{sqlstate} and {other} would both be named {name}")
        seen[name] = sqlstate

    parents: dict[str, str | None] = {}
    for code in codes:
        base = code.sqlclass + "000"
        parents[code.sqlstate] = base if base in by_state and base != code.sqlstate else None
    return Model(codes, titles, names, parents)


def render(model: Model) -> str:
    """The module text, laid out exactly as `ruff format` would."""
    out: list[str] = [
        "# Generated by tools/gen_errcodes.py from tools/errcodes.txt: do not edit.",
        "# Regenerate with `python tools/gen_errcodes.py`; CI runs it with --check.",
        '"""One PgasyncError subclass per SQLSTATE in PostgreSQL\'s errcodes.txt.',
        "",
        "Import them from postgres_async.errors. Naming rules:",
    ]
    out += [line.rstrip() for line in _RULES.strip("\n").splitlines()]
    out += [
        '"""',
        "",
        "from collections.abc import Mapping",
        "from typing import Final",
        "",
        "from ._pgerror import PgasyncError",
        "",
        "__all__ = [",
    ]
    out += [f'    "{name}",' for name in sorted(model.names.values())]
    out += ["]"]

    current_class = None
    for code in model.codes:
        if code.sqlclass != current_class:
            current_class = code.sqlclass
            title = model.class_titles.get(current_class, "")
            out += ["", "", f"# Class {current_class}" + (f" - {title}" if title else "")]
        parent = model.parents[code.sqlstate]
        parent_name = "PgasyncError" if parent is None else model.names[parent]
        header = f"class {model.names[code.sqlstate]}({parent_name}):"
        if len(header) > 100:
            raise ErrcodesError(f"{header!r} is longer than the 100-column line limit")
        out += [
            "",
            "",
            header,
            f'    """SQLSTATE {code.sqlstate}: {code.condition}."""',
            "",
            f'    sqlstate = "{code.sqlstate}"',
        ]
    out += [
        "",
        "",
        "# Every SQLSTATE above and its class, for postgres_async.errors.error_class_for.",
        "SQLSTATE_CLASSES: Final[Mapping[str, type[PgasyncError]]] = {",
    ]
    out += [f'    "{c.sqlstate}": {model.names[c.sqlstate]},' for c in model.codes]
    out += ["}", ""]
    return "\n".join(out)


# The naming rules build() implements, rendered into the generated module's docstring.
_RULES = """
- A class is the CamelCase of the condition name: unique_violation -> UniqueViolation.
- Each SQLSTATE class's XX000 code is the base of the class's other codes, e.g.
  UniqueViolation (23505) subclasses IntegrityConstraintViolation (23000). Class 10
  has no XX000 code, so its codes subclass PgasyncError directly.
- A condition name shared by several codes keeps its plain name for the first error
  code in errcodes.txt; the others get their class's qualifier (the base class's name
  without a trailing Exception/Error) appended: 22001 is StringDataRightTruncation and
  01004 StringDataRightTruncationWarning; 22004 is NullValueNotAllowed and 39004
  NullValueNotAllowedExternalRoutineInvocation.
- A name that is a Python builtin gets the prefix Postgres: PostgresWarning (01000),
  PostgresSyntaxError (42601), PostgresSystemError (58000).
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--errcodes", type=Path, default=DEFAULT_ERRCODES, metavar="PATH")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, metavar="PATH")
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if --output differs from what would be generated",
    )
    args = parser.parse_args(argv)
    try:
        text = render(build(args.errcodes.read_text(encoding="utf-8")))
    except (OSError, ErrcodesError) as exc:
        print(f"gen_errcodes: {exc}", file=sys.stderr)
        return 2
    if args.check:
        try:
            current = args.output.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"gen_errcodes: cannot read {args.output}: {exc}", file=sys.stderr)
            return 1
        if current != text:
            print(
                f"gen_errcodes: {args.output} is out of date with {args.errcodes}; "
                "run `python tools/gen_errcodes.py` and commit the result",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
