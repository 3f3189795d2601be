"""tools/gen_errcodes.py: --check, reproducible output, naming rules."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "gen_errcodes.py"
COMMITTED = ROOT / "src" / "postgres_async" / "_sqlstate.py"


def run_tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_errcodes", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up by name while building the classes.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_check_passes_on_the_committed_module() -> None:
    result = run_tool("--check")
    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_modified_copy(tmp_path: Path) -> None:
    copy = tmp_path / "_sqlstate.py"
    copy.write_text(COMMITTED.read_text(encoding="utf-8").replace('"23505"', '"23506"'))
    result = run_tool("--check", "--output", copy)
    assert result.returncode == 1
    assert "out of date" in result.stderr
    assert "python tools/gen_errcodes.py" in result.stderr


def test_check_fails_on_a_missing_file(tmp_path: Path) -> None:
    result = run_tool("--check", "--output", tmp_path / "missing.py")
    assert result.returncode == 1
    assert "cannot read" in result.stderr


def test_generating_reproduces_the_committed_module(tmp_path: Path) -> None:
    out = tmp_path / "_sqlstate.py"
    assert run_tool("--output", out).returncode == 0
    assert out.read_bytes() == COMMITTED.read_bytes()


def test_output_is_ruff_formatted() -> None:
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed")
    result = subprocess.run(
        [ruff, "format", "--check", "--diff", str(COMMITTED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_malformed_input_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "errcodes.txt"
    bad.write_text("Section: Class 23 - Integrity\n2350 E ERRCODE_X x\n")
    result = run_tool("--errcodes", bad, "--output", tmp_path / "out.py")
    assert result.returncode == 2
    assert "line 2" in result.stderr
    assert not (tmp_path / "out.py").exists()


SAMPLE = """\
# comment
Section: Class 01 - Warning
01000    W    ERRCODE_WARNING                     warning
01004    W    ERRCODE_WARNING_STRING_DATA_RIGHT_TRUNCATION   string_data_right_truncation
Section: Class 10 - XQuery Error
10608    E    ERRCODE_INVALID_ARGUMENT_FOR_XQUERY invalid_argument_for_xquery
Section: Class 22 - Data Exception
22000    E    ERRCODE_DATA_EXCEPTION              data_exception
2202E    E    ERRCODE_ARRAY_ELEMENT_ERROR
2202E    E    ERRCODE_ARRAY_SUBSCRIPT_ERROR       array_subscript_error
22001    E    ERRCODE_STRING_DATA_RIGHT_TRUNCATION string_data_right_truncation
22004    E    ERRCODE_NULL_VALUE_NOT_ALLOWED      null_value_not_allowed
22P99    E    ERRCODE_ONLY_A_MACRO
Section: Class 39 - External Routine Invocation Exception
39000    E    ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION external_routine_invocation_exception
39004    E    ERRCODE_E_R_I_E_NULL_VALUE_NOT_ALLOWED null_value_not_allowed
Section: Class 42 - Syntax Error or Access Rule Violation
42601    E    ERRCODE_SYNTAX_ERROR                syntax_error
"""


def test_naming_rules() -> None:
    model = load_tool().build(SAMPLE)
    assert model.names == {
        "01000": "PostgresWarning",
        "01004": "StringDataRightTruncationWarning",
        "10608": "InvalidArgumentForXquery",
        "22000": "DataException",
        "2202E": "ArraySubscriptError",
        "22001": "StringDataRightTruncation",
        "22004": "NullValueNotAllowed",
        "22P99": "OnlyAMacro",
        "39000": "ExternalRoutineInvocationException",
        "39004": "NullValueNotAllowedExternalRoutineInvocation",
        "42601": "PostgresSyntaxError",
    }
    assert model.parents["01004"] == "01000"
    assert model.parents["01000"] is None
    assert model.parents["10608"] is None
    assert model.parents["22P99"] == "22000"
    assert model.parents["42601"] is None
    assert model.class_titles["22"] == "Data Exception"


def test_names_that_still_collide_are_an_error(tmp_path: Path) -> None:
    tool = load_tool()
    clash = "22000 E ERRCODE_A data_exception\n22001 E ERRCODE_B data_exception_x\n"
    clash += "22002 W ERRCODE_C data_exception_x\n23000 E ERRCODE_D data_exception_x_data\n"
    with pytest.raises(tool.ErrcodesError, match="would both be named"):
        tool.build(clash)
