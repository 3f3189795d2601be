"""The compiled accelerator against the pure-Python reference: same values, same errors.

``postgres_async._speedups`` is imported directly (whatever ``POSTGRES_ASYNC_IMPL`` says),
so these tests run under both implementations of the suite. When the module was not
built they skip, except in CI (``CI`` set), where a missing module is a failure.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import os
import struct
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postgres_async import _accel, _values
from postgres_async.protocol.buffer import parse_data_rows as py_parse_data_rows
from support.differential import leaked_bytes, outcome

# POSTGRES_ASYNC_DIFF_EXAMPLES=100000 for a long soak; the default keeps the file fast.
SETTINGS = settings(
    max_examples=int(os.environ.get("POSTGRES_ASYNC_DIFF_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------------------
# parse_data_rows

MAX_INT32 = 2**31 - 1
BIG = 2**70  # beyond any C integer: compared as an unbounded int all the same


def _i32(value: int) -> bytes:
    return struct.pack("!i", value)


def _data_row(values: list[bytes | None]) -> bytes:
    body = struct.pack("!H", len(values)) + b"".join(
        _i32(-1) if v is None else _i32(len(v)) + v for v in values
    )
    return b"D" + _i32(len(body) + 4) + body


def _flag(rare: int = 6) -> st.SearchStrategy[bool]:
    """True about once in ``rare`` draws."""
    return st.sampled_from([False] * (rare - 1) + [True])


_valid_value = st.one_of(
    st.none(),
    st.text(max_size=8).map(str.encode),
    # Longer values: the C side checks 8 bytes at a time for ASCII.
    st.text(st.characters(max_codepoint=0x7F), min_size=8, max_size=40).map(str.encode),
    st.text(min_size=8, max_size=24).map(str.encode),
)
_invalid_value = st.one_of(
    # Surrogates encoded anyway (invalid UTF-8), and raw bytes (often invalid UTF-8).
    st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=3).map(
        lambda s: s.encode("utf-8", "surrogatepass")
    ),
    st.binary(max_size=6),
    # ASCII but for one byte somewhere in a long value.
    st.tuples(st.binary(max_size=20), st.integers(0x80, 0xFF), st.binary(max_size=20)).map(
        lambda t: bytes(b & 0x7F for b in t[0]) + bytes([t[1]]) + bytes(b & 0x7F for b in t[2])
    ),
)


@st.composite
def _value_bytes(draw: st.DrawFn) -> bytes | None:
    return draw(_invalid_value if draw(_flag(12)) else _valid_value)


@st.composite
def _messy_data_row(draw: st.DrawFn, column_count: int) -> bytes:
    if draw(_flag()):
        values = draw(st.lists(_value_bytes(), max_size=5))
    else:
        values = draw(st.lists(_value_bytes(), min_size=column_count, max_size=column_count))
    count = len(values)
    if draw(_flag(10)):
        count = draw(st.integers(0, 2**16 - 1))
    body = struct.pack("!H", count)
    for value in values:
        if draw(_flag(15)):
            size = draw(st.one_of(st.integers(-5, 20), st.integers(-(2**31), MAX_INT32)))
        else:
            size = -1 if value is None else len(value)
        body += _i32(size) + (value or b"")
    if draw(_flag(10)):
        body += draw(st.binary(min_size=1, max_size=4))  # trailing bytes
    length = len(body) + 4
    if draw(_flag(10)):
        length = draw(
            st.one_of(st.integers(length - 8, length + 8), st.integers(-(2**31), MAX_INT32))
        )
    return b"D" + _i32(length) + body


_other_message = st.sampled_from(
    [
        b"C\x00\x00\x00\x0dSELECT 1\x00",
        b"Z\x00\x00\x00\x05I",
        b"E\x00\x00\x00\x05\x00",
        b"D\x00\x00\x00",  # a header cut short
    ]
)


@st.composite
def _stream(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """(bytes, pos, column_count): DataRows (mostly sound) after some prefix."""
    column_count = draw(st.integers(0, 4))
    row = _messy_data_row(column_count)
    kinds = draw(st.lists(_flag(8), max_size=8))  # True: some other message
    messages = [draw(_other_message if other else row) for other in kinds]
    prefix = draw(st.binary(max_size=6))
    data = prefix + b"".join(messages)
    if draw(_flag(4)):
        data = data[: draw(st.integers(0, len(data)))]  # truncated anywhere
    pos = len(prefix) if not draw(_flag(8)) else draw(st.integers(0, len(data) + 3))
    return data, pos, column_count


_limits = st.one_of(st.integers(-2, 12), st.just(1 << 30), st.just(BIG), st.just(-BIG))
_max_lengths = st.one_of(
    st.just(1 << 30), st.integers(-2, 80), st.just(MAX_INT32 + 1), st.just(BIG), st.just(-BIG)
)
_column_counts = st.one_of(st.integers(-2, 5), st.just(2**15), st.just(BIG), st.just(-BIG))


def _check_parse(
    speedups: ModuleType, data: bytes, pos: int, column_count: int, limit: int, max_length: int
) -> None:
    for buffer in (bytearray(data), data):
        args = (buffer, pos, column_count, limit, max_length)
        expected = outcome(py_parse_data_rows, *args)
        actual = outcome(speedups.parse_data_rows, *args)
        assert actual == expected
        assert buffer == data  # untouched
        if isinstance(buffer, bytearray):
            buffer.append(0)  # BufferError if the C code had kept its export


@SETTINGS
@given(
    data=st.one_of(st.binary(max_size=120), st.binary(max_size=60).map(lambda b: b"D" + b)),
    pos=st.integers(0, 130) | st.just(BIG),
    column_count=_column_counts,
    limit=_limits,
    max_length=_max_lengths,
)
def test_parse_data_rows_arbitrary_bytes(
    speedups: ModuleType, data: bytes, pos: int, column_count: int, limit: int, max_length: int
) -> None:
    _check_parse(speedups, data, pos, column_count, limit, max_length)


@SETTINGS
@given(
    stream=_stream(),
    other_count=_flag(8),
    column_count=_column_counts,
    limit=st.one_of(st.just(1 << 30), _limits),
    max_length=st.one_of(st.just(1 << 30), _max_lengths),
)
def test_parse_data_rows_streams(
    speedups: ModuleType,
    stream: tuple[bytes, int, int],
    other_count: bool,
    column_count: int,
    limit: int,
    max_length: int,
) -> None:
    data, pos, count = stream
    _check_parse(speedups, data, pos, column_count if other_count else count, limit, max_length)


def test_parse_data_rows_many_rows(speedups: ModuleType) -> None:
    rows = [[f"{i}", None, "é€😀" * (i % 5), "x" * (i % 300)] for i in range(5000)]
    data = bytearray(
        b"".join(_data_row([None if v is None else v.encode() for v in r]) for r in rows)
    )
    data += b"C\x00\x00\x00\x0dSELECT 1\x00"
    result = speedups.parse_data_rows(data, 0, 4, 1 << 30, 1 << 30)
    assert result == py_parse_data_rows(data, 0, 4, 1 << 30, 1 << 30)
    assert result[0] == [tuple(r) for r in rows]
    assert result[1] == len(data) - 14
    assert result[2] is None


def test_parse_data_rows_problem_strings(speedups: ModuleType) -> None:
    cases = {
        _data_row([b"a"]) + b"": None,
        _data_row([b"a", b"b"]): (
            "number of columns in DataRow message did not match RowDescription: expected 1, got 2"
        ),
        b"D" + _i32(10) + b"\x00\x01" + _i32(-2): "Failed to parse DataRow: column length -2",
        b"D" + _i32(10) + b"\x00\x01" + _i32(5): "Failed to parse DataRow: truncated column",
        b"D" + _i32(8) + b"\x00\x01\x00\x00": "Failed to parse DataRow: truncated column",
        b"D" + _i32(11) + b"\x00\x01" + _i32(1) + b"\xff": (
            "Failed to parse DataRow: invalid UTF-8 in a value"
        ),
        b"D" + _i32(12) + b"\x00\x01" + _i32(1) + b"ab": "Failed to parse DataRow: trailing bytes",
    }
    for data, problem in cases.items():
        buffer = bytearray(_data_row([b"ok"]) + data)
        result = speedups.parse_data_rows(buffer, 0, 1, 100, 1 << 30)
        assert result == py_parse_data_rows(buffer, 0, 1, 100, 1 << 30)
        assert result[2] == problem
        assert result[0][0] == ("ok",)


def test_parse_data_rows_negative_pos(speedups: ModuleType) -> None:
    """The one deliberate difference: the reference would index from the end."""
    data = bytearray(_data_row([b"a"]))
    with pytest.raises(ValueError, match="pos must not be negative"):
        speedups.parse_data_rows(data, -1, 1, 10, 1 << 30)
    # Where the reference stops before indexing, both agree.
    assert speedups.parse_data_rows(data, -1, 1, 0, 1 << 30) == ([], -1, None)
    assert speedups.parse_data_rows(bytearray(), -1, 1, 5, 1 << 30) == ([], -1, None)


def test_parse_data_rows_signature(speedups: ModuleType) -> None:
    with pytest.raises(TypeError, match="exactly 5"):
        speedups.parse_data_rows(bytearray(), 0, 1, 2)
    with pytest.raises(TypeError):
        speedups.parse_data_rows("not a buffer", 0, 1, 2, 3)
    with pytest.raises(TypeError):
        speedups.parse_data_rows(bytearray(), "0", 1, 2, 3)


# ---------------------------------------------------------------------------------------
# format_copy_rows


class _Str(str):
    pass


class _Color(enum.IntEnum):
    RED = 1


class _Unsupported:
    pass


_special_chars = st.sampled_from(["\\", "\n", "\r", "\t", "\0", "é", "€", "😀", "\x80", "\xff"])
_surrogates = st.integers(0xD800, 0xDFFF).map(chr)
_texts = st.text(st.one_of(st.characters(), _special_chars, _surrogates), max_size=8)
_cell = st.one_of(
    st.none(),
    st.text(max_size=6),
    _texts,
    _texts.map(_Str),
    st.integers(),
    st.integers(-(2**200), 2**200),
    st.floats(),
    st.decimals(),
    st.booleans(),
    st.just(_Color.RED),
    st.dates(),
    st.datetimes(),
    st.times(),
    st.uuids(),
    st.binary(max_size=4),
    st.binary(max_size=4).map(bytearray),
    st.just(_Unsupported()),
)
# A row spec (kind, cells); kind says what container _build makes of it, afresh per call.
_row_spec = st.tuples(
    st.sampled_from(["list"] * 4 + ["tuple", "iter", "str", "bytes", "int"]),
    st.lists(_cell, max_size=6),
)
_rows_spec = st.tuples(st.sampled_from(["list", "tuple", "iter"]), st.lists(_row_spec, max_size=6))


def _build(spec: tuple[str, list[Any]], inner: bool = False) -> Any:
    kind, items = spec
    if not inner:
        items = [_build(row, inner=True) for row in items]
    if kind == "list":
        return list(items)
    if kind == "tuple":
        return tuple(items)
    if kind == "iter":
        return iter(items)
    if kind == "str":
        return "ab"
    if kind == "bytes":
        return b"ab"
    return 7


def _check_format(speedups: ModuleType, spec: tuple[str, list[Any]]) -> None:
    expected = outcome(_accel.format_copy_rows_python, _build(spec))
    actual = outcome(speedups.format_copy_rows, _build(spec), _values.to_text)
    assert actual == expected


@SETTINGS
@given(spec=_rows_spec)
def test_format_copy_rows_mixed(speedups: ModuleType, spec: tuple[str, list[Any]]) -> None:
    _check_format(speedups, spec)


@SETTINGS
@given(rows=st.lists(st.lists(st.one_of(st.none(), _texts, st.integers()), max_size=4), max_size=8))
def test_format_copy_rows_text(speedups: ModuleType, rows: list[list[object]]) -> None:
    _check_format(speedups, ("list", [("list", row) for row in rows]))


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [[]],
        [(), ()],
        [["a\\b\nc\rd\te", None, 0, -1, 2**63, -(2**63) - 1, 2**64]],
        [["x\ud800", 1], ["fine"]],  # lone surrogate: the UnicodeEncodeError of .encode()
        [["\ud800\udc00", "\t\udfff"]],  # a run of surrogates, positions after escapes
        [["\ud800", "\0"]],  # the NUL error comes first, as in copy_text_line
        [["\ud800", _Unsupported()]],  # so does a to_text error
        [["ok"], "ab"],
        [[b"ab"], b"ab"],
        [None],
        [[10**5000]],  # str(int) refuses: the same ValueError
        "ab",
        None,
        5,
    ],
)
def test_format_copy_rows_cases(speedups: ModuleType, rows: Any) -> None:
    expected = outcome(_accel.format_copy_rows_python, rows)
    actual = outcome(speedups.format_copy_rows, rows, _values.to_text)
    assert actual == expected


def test_format_copy_rows_large(speedups: ModuleType) -> None:
    rows = [
        (i, f"name {i}\t{'é' * (i % 3)}", None if i % 7 else decimal.Decimal(i) / 3)
        for i in range(20000)
    ]
    assert speedups.format_copy_rows(rows, _values.to_text) == _accel.format_copy_rows_python(rows)
    assert speedups.format_copy_rows(iter(rows), _values.to_text) == _accel.format_copy_rows_python(
        rows
    )


def test_format_copy_rows_fallback_contract(speedups: ModuleType) -> None:
    calls: list[tuple[object, str]] = []

    def fallback(value: object, what: str) -> str | None:
        calls.append((value, what))
        return None if value == 1.5 else "a\tb"

    day = datetime.date(2020, 1, 2)
    row = ["s", None, 3, 1.5, day] + [day] * 70
    out = speedups.format_copy_rows([row], fallback)
    assert out.startswith(b"s\t\\N\t3\t\\N\ta\\tb\t")
    assert calls[:2] == [(1.5, "COPY column 4"), (day, "COPY column 5")]
    assert calls[-1] == (day, "COPY column 75")
    with pytest.raises(TypeError, match="not str or None"):
        speedups.format_copy_rows([[1.5]], lambda value, what: 42)
    with pytest.raises(ZeroDivisionError):
        speedups.format_copy_rows([[1.5]], lambda value, what: 1 / 0)


def test_format_copy_rows_row_changed_by_fallback(speedups: ModuleType) -> None:
    """A row the fallback shortens or grows is read as list iteration reads it."""
    row: list[object] = [1.5, "b", "c"]

    def shrinking(value: object, what: str) -> str | None:
        row.pop()
        return "x"

    assert speedups.format_copy_rows([row], shrinking) == b"x\tb\n"
    grown: list[object] = [1.5]

    def growing(value: object, what: str) -> str | None:
        if len(grown) < 3:
            grown.append(2.5)
        return "y"

    assert speedups.format_copy_rows([grown], growing) == b"y\ty\ty\n"


def test_binding_matches_the_reference() -> None:
    rows = [[1, "a\tb", None, uuid.UUID(int=5)], ("é", 2.5, True)]
    assert _accel.format_copy_rows(rows) == _accel.format_copy_rows_python(rows)
    assert _accel.IMPLEMENTATION in ("python", "c")
    if os.environ.get("POSTGRES_ASYNC_IMPL", "").strip().lower() == "c":
        assert _accel.IMPLEMENTATION == "c"


# ---------------------------------------------------------------------------------------
# no leaks on the error paths


def _rows_iter() -> Iterator[list[object]]:
    yield ["ok", 1]
    yield ["x\ud800", 2]


def test_no_leaks(speedups: ModuleType) -> None:
    good = _data_row([b"abc", None])
    buffers = [
        bytearray(good * 3 + b"D" + _i32(11) + b"\x00\x02" + _i32(1) + b"\xff"),
        bytearray(good * 3 + _data_row([b"a"])),
        bytearray(good * 3 + b"D" + _i32(12) + b"\x00\x02" + _i32(-1) + _i32(-3)),
        bytearray(good * 5),
    ]
    for buffer in buffers:
        assert leaked_bytes(speedups.parse_data_rows, buffer, 0, 2, 100, 1 << 30) < 20000
    for rows in (
        [["a", 1, 2.5]] * 5 + [["\0"]],
        [["a", 1, 2.5]] * 5 + [[_Unsupported()]],
        [["a", 1, 2.5]] * 5 + ["ab"],
        [["a", 1, 2.5]] * 5 + [["x\ud800"]],
        [["a", 1, 2.5, None, 2**80]] * 5,
    ):
        assert leaked_bytes(speedups.format_copy_rows, rows, _values.to_text) < 20000
    assert leaked_bytes(lambda: speedups.format_copy_rows(_rows_iter(), _values.to_text)) < 20000
