"""The sans-I/O core (protocol/, auth/) imports no I/O module: asyncio, socket, ssl, selectors.

Two checks: a fresh interpreter imports the core and looks at ``sys.modules`` (catches
transitive imports), and every core source file is parsed with ``ast`` (catches an
import hidden in a function or a branch the runtime check never takes).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import postgres_async

PACKAGE_DIR = Path(postgres_async.__file__).resolve().parent
CORE_DIRS = [PACKAGE_DIR / "protocol", PACKAGE_DIR / "auth"]
FORBIDDEN = ("asyncio", "socket", "ssl", "selectors")
# Our own modules that are I/O (or import it): the core must not reach them either.
FORBIDDEN_OWN = tuple(
    f"postgres_async.{name}" for name in ("_transport", "connection", "testing", "cli", "demo")
)

# Imports the core without running postgres_async/__init__.py (which pulls in the
# asyncio Connection): the parent package is registered but not executed.
_CORE_ONLY = """
import importlib.util, json, sys
before = sorted(m for m in {forbidden!r} if m in sys.modules)
spec = importlib.util.find_spec("postgres_async")
sys.modules["postgres_async"] = importlib.util.module_from_spec(spec)
import postgres_async.protocol
{extra}
print(json.dumps({{
    "before": before,
    "after": sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r}),
    "own": sorted(m for m in sys.modules if m.startswith("postgres_async")),
}}))
"""

_WHOLE_PACKAGE = """
import json, sys
import postgres_async.protocol
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})))
"""


def run_python(code: str) -> object:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=PACKAGE_DIR.parent,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def core_report(extra: str = "") -> dict[str, list[str]]:
    report = run_python(_CORE_ONLY.format(forbidden=FORBIDDEN, extra=extra))
    assert isinstance(report, dict)
    return report


def test_interpreter_starts_clean() -> None:
    # Otherwise the checks below would prove nothing.
    assert core_report()["before"] == []


def test_protocol_imports_no_io_module() -> None:
    report = core_report()
    assert report["after"] == []
    assert "postgres_async.protocol.machines" in report["own"]
    assert not [m for m in report["own"] if m.startswith(FORBIDDEN_OWN)]


def test_whole_core_imports_no_io_module() -> None:
    imports = "\n".join(f"import {_module_name(p)}" for p in core_sources())
    report = core_report(imports)
    assert report["after"] == []
    assert not [m for m in report["own"] if m.startswith(FORBIDDEN_OWN)]


def test_importing_protocol_through_the_package_imports_no_io_module() -> None:
    assert run_python(_WHOLE_PACKAGE.format(forbidden=FORBIDDEN)) == []


# ------------------------------------------------------------------------- static check


def core_sources() -> Iterator[Path]:
    for directory in CORE_DIRS:
        yield from sorted(directory.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def imported_modules(path: Path, module: str | None = None) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports (relative imports resolved), with line numbers.

    Also ``importlib.import_module("x")`` and ``__import__("x")`` with a literal name.
    ``module`` is the dotted name the file has (by default, from its place in the tree).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if module is None:
        module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from . import connection` imports a module
                yield node.lineno, f"{target}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


def is_forbidden(name: str) -> bool:
    return name.split(".")[0] in FORBIDDEN or name.startswith(FORBIDDEN_OWN)


def test_core_sources_exist() -> None:
    names = {p.relative_to(PACKAGE_DIR).as_posix() for p in core_sources()}
    assert {"protocol/messages.py", "protocol/buffer.py", "protocol/machines.py"} <= names
    assert "protocol/_wire.py" in names


@pytest.mark.parametrize(
    "path", list(core_sources()), ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix()
)
def test_core_source_has_no_io_import(path: Path) -> None:
    bad = [f"line {line}: {name}" for line, name in imported_modules(path) if is_forbidden(name)]
    assert not bad, f"{path.name} imports I/O modules: {bad}"


def test_static_check_catches_io_imports(tmp_path: Path) -> None:
    # The checker itself: every spelling of an I/O import is caught.
    source = tmp_path / "probe.py"
    source.write_text(
        "import os\n"
        "import asyncio.events\n"
        "import ssl as _ssl\n"
        "from socket import socket\n"
        "def f():\n"
        "    import selectors\n"
        "    from .. import connection\n"
        "    from .._transport import stream\n"
        "    importlib.import_module('asyncio')\n"
        "    __import__('ssl')\n"
        "from .messages import Query\n",
        encoding="utf-8",
    )
    # Parsed as if it were postgres_async/protocol/probe.py.
    found = list(imported_modules(source, "postgres_async.protocol.probe"))
    flagged = sorted({line for line, name in found if is_forbidden(name)})
    assert flagged == [2, 3, 4, 6, 7, 8, 9, 10]
    assert (11, "postgres_async.protocol.messages") in found
    assert not is_forbidden("postgres_async.protocol.messages")
