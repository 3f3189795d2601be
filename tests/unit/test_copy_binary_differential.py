"""``_speedups.copy_binary_rows`` against the reference ``_copy_binary.encode_rows``: the
same bytes, or the same exception (type and message), for arbitrary rows and columns.

The compiled module is imported directly (whatever ``POSTGRES_ASYNC_IMPL`` says), so
this runs under both implementations of the suite.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import os
import uuid
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postgres_async import _accel
from postgres_async import _copy_binary as cb
from support.differential import Outcome, leaked_bytes, outcome

SETTINGS = settings(
    max_examples=int(os.environ.get("POSTGRES_ASYNC_DIFF_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Str(str):
    pass


class _Int(enum.IntEnum):
    ONE = 1


class _Float(float):
    pass


class _Unsupported:
    pass


# Every supported type, the common kinds more often.
_HOT = [16, 17, 20, 21, 23, 25, 700, 701, 1043, 3802]
_oids = st.sampled_from(_HOT * 3 + sorted(cb.SUPPORTED_OIDS))

_surrogates = st.integers(0xD800, 0xDFFF).map(chr)
_texts = st.text(
    st.one_of(st.characters(), st.sampled_from(["\0", "é", "€", "😀", "\x7f"]), _surrogates),
    max_size=10,
)
_int_edges = st.sampled_from(
    [
        0,
        -1,
        2**15 - 1,
        2**15,
        -(2**15),
        -(2**15) - 1,
        2**31 - 1,
        2**31,
        -(2**31),
        -(2**31) - 1,
        2**32 - 1,
        2**32,
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        2**64,
        2**1024,
    ]
)
_float_edges = st.sampled_from(
    [3.4028234663852886e38, 3.4028235677973366e38, 3.402823567797337e38, 1e39, 1e-46, -0.0]
)
_value = st.one_of(
    st.none(),
    st.integers(),
    _int_edges,
    st.integers(-(2**70), 2**70),
    st.just(_Int.ONE),
    st.booleans(),
    st.floats(),
    st.floats(width=32),
    _float_edges,
    st.floats().map(_Float),
    _texts,
    _texts.map(_Str),
    st.binary(max_size=6),
    st.binary(max_size=6).map(bytearray),
    st.binary(max_size=6).map(lambda b: memoryview(b)),
    st.decimals(),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=st.just(datetime.UTC)),
    st.times(),
    st.timedeltas(),
    st.uuids(),
    st.just(_Unsupported()),
)
# How a row is given: mostly tuples and lists, sometimes something else.
_row_kind = st.sampled_from(["tuple"] * 4 + ["list"] * 4 + ["iter", "str", "int", "short", "long"])


def _make_row(kind: str, values: list[Any]) -> Any:
    if kind == "tuple":
        return tuple(values)
    if kind == "list":
        return list(values)
    if kind == "iter":
        return iter(values)
    if kind == "str":
        return "ab"
    if kind == "int":
        return 7
    if kind == "short":
        return tuple(values[:-1])
    return (*values, None)


@st.composite
def _case(draw: st.DrawFn) -> tuple[list[cb.Column], list[tuple[str, list[Any]]]]:
    oids = draw(st.lists(_oids, min_size=1, max_size=5))
    columns = [cb.column(f"c{i}", f"t{oid}", oid) for i, oid in enumerate(oids)]
    rows = draw(
        st.lists(
            st.tuples(_row_kind, st.lists(_value, min_size=len(oids), max_size=len(oids))),
            max_size=6,
        )
    )
    return columns, rows


def _both(
    speedups: ModuleType, columns: list[cb.Column], specs: list[tuple[str, list[Any]]]
) -> tuple[Outcome, Outcome]:
    # Fresh rows per call: an iterator row is used up by the first.
    reference = cb.BatchEncoder(columns)
    compiled = cb.BatchEncoder(columns, speedups.copy_binary_rows)
    expected = outcome(reference, [_make_row(k, v) for k, v in specs])
    actual = outcome(compiled, [_make_row(k, v) for k, v in specs])
    return expected, actual


@SETTINGS
@given(case=_case())
def test_copy_binary_rows_differential(
    speedups: ModuleType, case: tuple[list[cb.Column], list[tuple[str, list[Any]]]]
) -> None:
    expected, actual = _both(speedups, *case)
    assert actual == expected


# Valid values only: the bytes must agree (an error here would hide a difference).
_valid_by_oid: dict[int, st.SearchStrategy[Any]] = {
    16: st.booleans(),
    17: st.binary(max_size=8),
    20: st.integers(-(2**63), 2**63 - 1),
    21: st.integers(-(2**15), 2**15 - 1),
    23: st.integers(-(2**31), 2**31 - 1),
    25: st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0")),
    700: st.floats(width=32),
    701: st.floats(),
    3802: st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0")),
    1700: st.decimals(allow_nan=True, places=4).filter(lambda d: not d.is_snan()),
    1184: st.datetimes(timezones=st.just(datetime.UTC)),
    2950: st.uuids(),
}


@st.composite
def _valid_case(draw: st.DrawFn) -> tuple[list[cb.Column], list[list[Any]]]:
    oids = draw(st.lists(st.sampled_from(sorted(_valid_by_oid)), min_size=1, max_size=6))
    columns = [cb.column(f"c{i}", f"t{oid}", oid) for i, oid in enumerate(oids)]
    row = st.tuples(*[st.one_of(st.none(), _valid_by_oid[oid]) for oid in oids])
    return columns, draw(st.lists(row.map(list), max_size=8))


@SETTINGS
@given(case=_valid_case())
def test_copy_binary_rows_valid_values(
    speedups: ModuleType, case: tuple[list[cb.Column], list[list[Any]]]
) -> None:
    columns, rows = case
    expected = cb.BatchEncoder(columns)(rows)
    assert cb.BatchEncoder(columns, speedups.copy_binary_rows)(rows) == expected
    as_tuples = [tuple(row) for row in rows]
    assert cb.BatchEncoder(columns, speedups.copy_binary_rows)(as_tuples) == expected


@pytest.mark.parametrize(
    "rows",
    [
        [(1, "a", 1.5)] * 3 + [("x", "a", 1.5)],
        [(1, "a", 1.5)] * 3 + [[1, "a\0", 1.5]],
        [(1, "a", 1.5)] * 3 + [(1, "a\ud800", 1.5)],
        [(1, "a", 1.5)] * 3 + [(2**31, "a", 1.5)],
        [(1, "a", 1.5)] * 3 + [[1, "a"]],
        [(1, "a", 1.5)] * 3 + ["ab"],
        [(1, "é" * 3000, 2)] * 3 + [[_Int.ONE, _Str("s"), _Float(1.0)]],
        ((1, "a", 1.5), [2, "b", 2.5]),
    ],
)
def test_copy_binary_rows_cases(speedups: ModuleType, rows: Any) -> None:
    columns = [cb.column("i", "integer", 23), cb.column("t", "text", 25), cb.column("f", "x", 701)]
    expected = outcome(cb.BatchEncoder(columns), rows)
    assert outcome(cb.BatchEncoder(columns, speedups.copy_binary_rows), rows) == expected


def test_copy_binary_rows_large(speedups: ModuleType) -> None:
    columns = [cb.column("i", "integer", 23), cb.column("t", "text", 25)]
    rows = [(i, f"name-{i}" * (i % 7)) for i in range(20000)]
    assert cb.BatchEncoder(columns, speedups.copy_binary_rows)(rows) == cb.BatchEncoder(columns)(
        rows
    )


def test_copy_binary_rows_signature(speedups: ModuleType) -> None:
    with pytest.raises(TypeError, match="4 positional arguments"):
        speedups.copy_binary_rows([])
    with pytest.raises(TypeError, match="kinds must be bytes"):
        speedups.copy_binary_rows([], b"\x02", (), cb.encode_row)
    with pytest.raises(TypeError, match="not iterable"):
        speedups.copy_binary_rows(5, b"", (), cb.encode_row)
    with pytest.raises(TypeError, match="returned int, not bytes"):
        speedups.copy_binary_rows([(1,)], b"\x00", (lambda v: 5,), cb.encode_row)
    with pytest.raises(TypeError, match="encode_row returned str"):
        speedups.copy_binary_rows([7], b"\x00", (cb.encode_int4,), lambda r, i: "x")
    with pytest.raises(ZeroDivisionError):
        speedups.copy_binary_rows([(1,)], b"\x00", (lambda v: 1 / 0,), cb.encode_row)


def test_copy_binary_rows_list_changed_by_an_encoder(speedups: ModuleType) -> None:
    """An encoder that empties the row list: the row is taken as it was, as tuple(row)."""
    row: list[Any] = [decimal.Decimal(1), 5]

    def clearing(value: Any) -> bytes:
        row.clear()
        return cb.encode_numeric(value)

    columns = [cb.Column("d", "numeric", 1700, cb.KIND_OTHER, clearing), cb.column("i", "i", 23)]
    data = cb.BatchEncoder(columns, speedups.copy_binary_rows)([row])
    row[:] = [decimal.Decimal(1), 5]
    assert data == cb.BatchEncoder(columns)([row])


def test_binding_matches_the_reference() -> None:
    columns = [cb.column("i", "integer", 23), cb.column("u", "uuid", 2950)]
    rows = [(1, uuid.UUID(int=5)), [None, None]]
    assert cb.BatchEncoder(columns, _accel.copy_binary_rows)(rows) == cb.BatchEncoder(columns)(rows)
    if os.environ.get("POSTGRES_ASYNC_IMPL", "").strip().lower() == "c":
        assert _accel.copy_binary_rows is not cb.encode_rows
    if os.environ.get("POSTGRES_ASYNC_IMPL", "").strip().lower() == "python":
        assert _accel.copy_binary_rows is cb.encode_rows


def test_no_leaks(speedups: ModuleType) -> None:
    columns = [
        cb.column("i", "integer", 23),
        cb.column("t", "text", 25),
        cb.column("d", "date", 1082),
    ]
    good = (1, "é", datetime.date(2020, 1, 1))
    for rows in (
        [good] * 5,
        [list(good)] * 5,
        [good] * 5 + [(1, "\0", None)],
        [good] * 5 + [(1, "a", "not a date")],
        [good] * 5 + [[2**40, "a", None]],
        [good] * 5 + ["ab"],
        [good] * 5 + [(1, 2)],
    ):
        encoder = cb.BatchEncoder(columns, speedups.copy_binary_rows)
        assert leaked_bytes(encoder, rows) < 20000
