"""docs/reliability.md and the tests agree, both ways (issue 3).

* Every test the document names (a backticked ``tests/...py::name`` node id, written
  without parameters) exists: the file is there and defines ``name`` at module level,
  or ``Class::name`` as a method of a module-level class.
* Every test function of the issue-3 integration files is named in the document.
* Every backticked ``tests/...py`` file path exists.
* The scenario count stated in the document is the number of rows in its tables under
  "## Scenarios", and the fuzzing total is the sum of the fuzzing table's examples.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"

#: The integration files that implement issue 3's scenarios: each of their tests must
#: be in the document.
ISSUE_3_FILES = (
    "tests/integration/test_hostile_network.py",
    "tests/integration/test_hostile_server.py",
    "tests/integration/test_lying_server.py",
    "tests/integration/test_concurrency_stress.py",
    "tests/integration/test_secrets.py",
    "tests/integration/test_resources.py",
    "tests/integration/test_bad_input.py",
)

NODE_ID = re.compile(r"`(tests/[^`\s:]+\.py)::([^`\s]*)`")
FILE_PATH = re.compile(r"`(tests/[^`\s:]+\.py)`")
PLAIN_NAME = re.compile(r"[A-Za-z_]\w*(::[A-Za-z_]\w*)?")
TABLE_SEPARATOR = re.compile(r"\|(\s*:?-+:?\s*\|)+")
STATED_COUNT = re.compile(r"\*\*(\d+) scenarios\*\*")
STATED_FUZZ = re.compile(r"Fuzzing: (\d+) examples per run")


def doc_text() -> str:
    assert DOC.is_file(), f"{DOC.relative_to(ROOT)} is missing"
    return DOC.read_text(encoding="utf-8")


def doc_lines() -> list[tuple[int, str]]:
    return list(enumerate(doc_text().splitlines(), start=1))


@functools.cache
def defined_names(path: str) -> frozenset[str]:
    """``name`` for each module-level function, ``Class::name`` for each method of a
    module-level class, in the file at ``path`` (relative to the repository)."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}::{item.name}")
    return frozenset(names)


def collected_tests(path: str) -> list[str]:
    """The tests pytest collects from ``path``: ``test*`` functions at module level and
    ``test*`` methods of ``Test*`` classes."""
    found = []
    for name in sorted(defined_names(path)):
        owner, _, method = name.rpartition("::")
        if method.startswith("test") and (not owner or owner.startswith("Test")):
            found.append(name)
    return found


def mentioned_node_ids() -> set[str]:
    return {f"{path}::{name}" for _, line in doc_lines() for path, name in NODE_ID.findall(line)}


def test_every_node_id_in_the_doc_exists() -> None:
    problems: list[str] = []
    count = 0
    for number, line in doc_lines():
        for path, name in NODE_ID.findall(line):
            count += 1
            where = f"docs/reliability.md:{number}: `{path}::{name}`"
            if not PLAIN_NAME.fullmatch(name):
                problems.append(f"{where} is not a plain node id (write it without parameters)")
            elif not (ROOT / path).is_file():
                problems.append(f"{where}: there is no file {path}")
            elif name not in defined_names(path):
                kind = "method" if "::" in name else "module-level function"
                problems.append(f"{where}: {path} defines no {kind} {name!r}")
    assert count > 0, "docs/reliability.md names no test (`tests/...py::name`)"
    assert not problems, "tests named in the document that do not exist:\n" + "\n".join(problems)


def test_every_issue_3_test_is_in_the_doc() -> None:
    mentioned = mentioned_node_ids()
    missing: list[str] = []
    for path in ISSUE_3_FILES:
        tests = collected_tests(path)
        assert tests, f"{path} defines no test function"
        missing += [f"`{path}::{name}`" for name in tests if f"{path}::{name}" not in mentioned]
    assert not missing, (
        f"{len(missing)} issue-3 test(s) missing from docs/reliability.md "
        "(add each to the row of its scenario):\n" + "\n".join(missing)
    )


def test_every_file_path_in_the_doc_exists() -> None:
    problems = [
        f"docs/reliability.md:{number}: `{path}` does not exist"
        for number, line in doc_lines()
        for path in FILE_PATH.findall(line)
        if not (ROOT / path).is_file()
    ]
    assert not problems, "\n".join(problems)


def scenario_tables() -> dict[str, list[list[str]]]:
    """The table rows (cells) under each ``###`` heading of the "## Scenarios" section,
    without header and separator lines."""
    tables: dict[str, list[list[str]]] = {}
    section = heading = ""
    previous = ""
    for _, line in doc_lines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("### "):
            heading = line[4:].strip()
        elif section == "Scenarios" and line.startswith("|"):
            if TABLE_SEPARATOR.fullmatch(line.strip()):
                rows = tables.setdefault(heading, [])
                assert rows, f"a table separator without a header line: {line}"
                assert rows[-1] == _cells(previous), f"a separator not after a header: {line}"
                rows.pop()  # that was the header
            else:
                tables.setdefault(heading, []).append(_cells(line))
        previous = line
    return tables


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_stated_scenario_count_matches_the_tables() -> None:
    stated = STATED_COUNT.findall(doc_text())
    assert len(stated) == 1, f"docs/reliability.md must state '**N scenarios**' once: {stated}"
    tables = scenario_tables()
    counts = {heading: len(rows) for heading, rows in tables.items()}
    assert sum(counts.values()) == int(stated[0]), (
        f"docs/reliability.md states {stated[0]} scenarios but its tables under "
        f"'## Scenarios' have {sum(counts.values())} rows: {counts}"
    )
    for heading, rows in tables.items():
        for cells in rows:
            assert "tests/" in cells[-1], f"a row under {heading!r} names no test: {cells}"


def _examples(cell: str) -> int:
    """``400``, ``24 × 60`` or ``500 + 500``."""
    total = 0
    for term in cell.split("+"):
        product = 1
        for factor in term.split("×"):
            product *= int(factor.strip().replace(",", ""))
        total += product
    return total


def test_stated_fuzz_total_matches_the_fuzzing_table() -> None:
    stated = STATED_FUZZ.findall(doc_text().replace("\n", " "))
    assert len(stated) == 1, "docs/reliability.md must state 'Fuzzing: N examples per run' once"
    rows = scenario_tables().get("Fuzzing")
    assert rows, "docs/reliability.md has no table under '### Fuzzing'"
    total = sum(_examples(cells[-2]) for cells in rows if cells[-2] not in ("—", "-"))
    assert total == int(stated[0]), (
        f"docs/reliability.md states {stated[0]} fuzz examples per run but the Examples "
        f"column of its Fuzzing table adds up to {total}"
    )
