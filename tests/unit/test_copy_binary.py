"""postgres_async._copy_binary, the reference COPY binary encoder: exact bytes, strict
types, range errors and the messages that name the row and column."""

from __future__ import annotations

import datetime
import decimal
import enum
import struct
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import postgres_async as pg
from postgres_async import _copy_binary as cb

UTC = datetime.UTC


def col(oid: int, name: str = "c", server_version: int | None = None) -> cb.Column:
    return cb.column(name, f"type{oid}", oid, server_version)


def encode(oid: int, value: object, server_version: int | None = None) -> bytes:
    return col(oid, server_version=server_version).encode(value)


def decode_numeric(data: bytes) -> decimal.Decimal:
    """The value a numeric's binary form stands for (what the server will store)."""
    ndigits, weight, sign, _dscale = struct.unpack(">hhHH", data[:8])
    assert len(data) == 8 + 2 * ndigits
    if sign == 0xC000:
        return decimal.Decimal("NaN")
    if sign in (0xD000, 0xF000):
        return decimal.Decimal("-Infinity" if sign == 0xF000 else "Infinity")
    assert sign in (0, 0x4000)
    digits = struct.unpack(f">{ndigits}H", data[8:])
    assert all(0 <= d < 10000 for d in digits)
    assert not digits or (digits[0] != 0 and digits[-1] != 0)
    # Built from its digits and exponent: exact, whatever the context's precision.
    text = "".join(f"{d:04d}" for d in digits) or "0"
    return decimal.Decimal((1 if sign else 0, tuple(map(int, text)), 4 * (weight - ndigits + 1)))


class Color(enum.IntEnum):
    RED = 1


# ------------------------------------------------------------------------ framing
def test_header_and_trailer() -> None:
    assert b"PGCOPY\n\xff\r\n\x00" + bytes(8) == cb.HEADER
    assert len(cb.HEADER) == 19
    assert struct.pack(">h", -1) == cb.TRAILER


def test_rows_exact_bytes() -> None:
    columns = [col(23, "id"), col(25, "name"), col(16, "ok")]
    encoder = cb.BatchEncoder(columns)
    data = encoder([(1, "ab", True), [None, "é", None]])
    assert data == (
        b"\x00\x03"
        + b"\x00\x00\x00\x04\x00\x00\x00\x01"
        + b"\x00\x00\x00\x02ab"
        + b"\x00\x00\x00\x01\x01"
        + b"\x00\x03"
        + b"\xff\xff\xff\xff"
        + b"\x00\x00\x00\x02\xc3\xa9"
        + b"\xff\xff\xff\xff"
    )
    assert encoder([]) == b""


# ------------------------------------------------------------------ per-type values
@pytest.mark.parametrize(
    ("oid", "value", "expected"),
    [
        (16, True, b"\x01"),
        (16, False, b"\x00"),
        (17, b"\x00\xff", b"\x00\xff"),
        (17, bytearray(b"ab"), b"ab"),
        (17, memoryview(b"abc")[1:], b"bc"),
        (18, "a", b"a"),
        (18, "", b"\x00"),
        (19, "pg_class", b"pg_class"),
        (20, -(2**63), b"\x80" + bytes(7)),
        (21, -2, b"\xff\xfe"),
        (21, Color.RED, b"\x00\x01"),
        (23, 2**31 - 1, b"\x7f\xff\xff\xff"),
        (25, "☃", "☃".encode()),
        (26, 2**32 - 1, b"\xff\xff\xff\xff"),
        (114, '{"a": 1}', b'{"a": 1}'),
        (700, 1.5, struct.pack(">f", 1.5)),
        (700, 3, struct.pack(">f", 3.0)),
        (701, -0.0, struct.pack(">d", -0.0)),
        (701, float("inf"), struct.pack(">d", float("inf"))),
        (701, 2**60 + 1, struct.pack(">d", float(2**60))),
        (1042, "x ", b"x "),
        (1043, "v", b"v"),
        (1082, datetime.date(2000, 1, 1), b"\x00\x00\x00\x00"),
        (1082, datetime.date(1999, 12, 31), b"\xff\xff\xff\xff"),
        (1083, datetime.time(0, 0, 1, 5), struct.pack(">q", 1_000_005)),
        (1114, datetime.datetime(2000, 1, 2), struct.pack(">q", 86_400_000_000)),
        (1114, datetime.datetime(1, 1, 1), struct.pack(">q", -63082281600000000)),
        (
            1184,
            datetime.datetime(2000, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
            bytes(8),
        ),
        (1184, datetime.datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC), struct.pack(">q", 1)),
        (
            1186,
            datetime.timedelta(days=-1, seconds=5, microseconds=7),
            struct.pack(">qii", 5_000_007, -1, 0),
        ),
        (2950, uuid.UUID(int=1), bytes(15) + b"\x01"),
        (3802, '{"a": 1}', b'\x01{"a": 1}'),
        (1700, 0, b"\x00\x00\x00\x00\x00\x00\x00\x00"),
        (1700, -10000, struct.pack(">hhHHH", 1, 1, 0x4000, 0, 1)),
        (1700, decimal.Decimal("-0.00"), struct.pack(">hhHH", 0, 0, 0, 2)),
        (1700, decimal.Decimal("12345.678"), struct.pack(">hhHHHHH", 3, 1, 0, 3, 1, 2345, 6780)),
        (1700, decimal.Decimal("0.001"), struct.pack(">hhHHH", 1, -1, 0, 3, 10)),
        (1700, decimal.Decimal("1E+8"), struct.pack(">hhHHH", 1, 2, 0, 0, 1)),
        (1700, decimal.Decimal("NaN"), struct.pack(">hhHH", 0, 0, 0xC000, 0)),
        (1700, decimal.Decimal("Infinity"), struct.pack(">hhHH", 0, 0, 0xD000, 0)),
        (1700, decimal.Decimal("-Infinity"), struct.pack(">hhHH", 0, 0, 0xF000, 0)),
    ],
)
def test_value_bytes(oid: int, value: object, expected: bytes) -> None:
    assert encode(oid, value) == expected


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_numeric_decimal_round_trip(value: decimal.Decimal) -> None:
    try:
        data = encode(1700, value)
    except ValueError:
        assert value.as_tuple().exponent < -0x3FFF or value.adjusted() > 4 * 2**15  # type: ignore[operator]
        return
    assert decode_numeric(data) == value
    assert struct.unpack(">H", data[6:8])[0] == max(0, -value.as_tuple().exponent)  # type: ignore[operator]


@given(st.integers(-(10**60), 10**60))
def test_numeric_int_round_trip(value: int) -> None:
    data = encode(1700, value)
    assert decode_numeric(data) == value
    assert data[6:8] == b"\x00\x00"


@pytest.mark.parametrize(
    ("oid", "value", "error", "message"),
    [
        (21, 2**15, ValueError, "value out of range for int2"),
        (21, -(2**15) - 1, ValueError, "out of range for int2"),
        (23, 2**31, ValueError, "out of range for int4"),
        (20, 2**63, ValueError, "out of range for int8"),
        (26, -1, ValueError, "out of range for oid"),
        (23, True, TypeError, "int4 takes int, not bool"),
        (23, 1.0, TypeError, "int4 takes int, not float"),
        (23, "1", TypeError, "int4 takes int, not str"),
        (16, 1, TypeError, "bool takes bool, not int"),
        (700, 1e300, ValueError, "out of range for float4"),
        (700, 2**1024, ValueError, "out of range for float4"),
        (701, 2**1024, ValueError, "out of range for float8"),
        (701, True, TypeError, "float8 takes float or int, not bool"),
        (701, decimal.Decimal(1), TypeError, "float8 takes float or int, not Decimal"),
        (25, b"x", TypeError, "text takes str, not bytes"),
        (25, "a\0b", ValueError, "text cannot contain a NUL character"),
        (1043, 5, TypeError, "varchar takes str, not int"),
        (3802, "\0", ValueError, "jsonb cannot contain a NUL"),
        (25, "\ud800", UnicodeEncodeError, "surrogates not allowed"),
        (17, "ab", TypeError, "bytea takes bytes, bytearray or memoryview, not str"),
        (18, "ab", ValueError, "one ASCII character"),
        (18, "é", ValueError, "one ASCII character"),
        (18, 1, TypeError, '"char" takes str, not int'),
        (1700, 1.5, TypeError, "numeric takes int or Decimal, not float"),
        (1700, True, TypeError, "numeric takes int or Decimal, not bool"),
        (1700, decimal.Decimal("sNaN"), ValueError, "signalling NaN"),
        (1700, decimal.Decimal("1E-16384"), ValueError, "out of range for numeric"),
        (1700, decimal.Decimal("1E+131072"), ValueError, "out of range for numeric"),
        (1082, datetime.datetime(2000, 1, 1), TypeError, "date takes date, not datetime"),
        (1083, datetime.time(1, tzinfo=UTC), TypeError, "naive time"),
        (1114, datetime.datetime(2000, 1, 1, tzinfo=UTC), TypeError, "naive datetime"),
        (1114, datetime.date(2000, 1, 1), TypeError, "timestamp takes datetime, not date"),
        (1184, datetime.datetime(2000, 1, 1), TypeError, "aware datetime"),
        (1186, 5, TypeError, "interval takes timedelta, not int"),
        (2950, str(uuid.UUID(int=1)), TypeError, "uuid takes UUID, not str"),
    ],
)
def test_value_errors(oid: int, value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        encode(oid, value)


def test_numeric_infinity_needs_postgresql_14() -> None:
    with pytest.raises(ValueError, match="PostgreSQL 14"):
        encode(1700, decimal.Decimal("Infinity"), server_version=130010)
    assert encode(1700, decimal.Decimal("NaN"), server_version=130010) == encode(
        1700, decimal.Decimal("NaN")
    )
    assert encode(1700, decimal.Decimal("-Infinity"), server_version=140000).startswith(
        b"\x00\x00\x00\x00\xf0"
    )


# ------------------------------------------------------------------------- columns
def test_unsupported_type_names_the_column_and_type() -> None:
    with pytest.raises(TypeError, match=r"column 'tags' has type text\[\].*format='text'"):
        cb.column("tags", "text[]", 1009)


def test_columns_for() -> None:
    found: list[tuple[str | None, ...]] = [("a", "integer", "23"), ("b", "posint", "23")]
    columns = cb.columns_for(["b", "a"], found, '"t"')
    assert [(c.name, c.declared, c.oid, c.kind) for c in columns] == [
        ("b", "posint", 23, cb.KIND_INT4),
        ("a", "integer", 23, cb.KIND_INT4),
    ]
    with pytest.raises(pg.PgasyncError) as info:
        cb.columns_for(["a", "nope"], found, '"t"')
    assert info.value.postgres_error_code == "42703"
    assert isinstance(info.value, pg.errors.UndefinedColumn)
    assert 'column "nope" of relation "t" does not exist' in str(info.value)


def test_every_supported_oid_has_a_known_kind() -> None:
    kinds = {getattr(cb, name) for name in dir(cb) if name.startswith("KIND_")}
    for oid in cb.SUPPORTED_OIDS:
        assert col(oid).kind in kinds


# ---------------------------------------------------------------------------- rows
@pytest.mark.parametrize(
    ("row", "error", "message"),
    [
        ((1,), ValueError, "row 5 has 1 values for 2 columns"),
        ((1, "a", None), ValueError, "row 5 has 3 values for 2 columns"),
        ("ab", TypeError, "row 5: a COPY row must be a sequence of values, not a str/bytes"),
        (b"ab", TypeError, "row 5: a COPY row must be a sequence of values, not a str/bytes"),
        (7, TypeError, "row 5: a COPY row must be a sequence of values, not int"),
        (("1", "a"), TypeError, r"row 5, column 'id' \(integer\): int4 takes int, not str"),
        ((2**40, "a"), ValueError, r"row 5, column 'id' \(integer\): value out of range for int4$"),
        ((1, "\ud800"), ValueError, r"row 5, column 'name' \(text\): 'utf-8' codec can't"),
        ((1, "\0"), ValueError, r"row 5, column 'name' \(text\): text cannot contain a NUL"),
    ],
)
def test_row_errors(row: Any, error: type[Exception], message: str) -> None:
    columns = [cb.column("id", "integer", 23), cb.column("name", "text", 25)]
    with pytest.raises(error, match=message) as info:
        cb.encode_row(row, 5, columns)
    assert type(info.value) is error  # UnicodeEncodeError and the like become ValueError


def test_rows_from_any_iterable() -> None:
    columns = [col(23), col(25)]
    expected = cb.encode_row((1, "a"), 0, columns)
    assert cb.encode_row([1, "a"], 0, columns) == expected
    assert cb.encode_row(iter([1, "a"]), 0, columns) == expected


def test_row_numbers_count_from_the_first_row_of_the_copy() -> None:
    encoder = cb.BatchEncoder([col(23, "id")])
    encoder([(1,), (2,)])
    encoder([(3,)])
    with pytest.raises(TypeError, match=r"^row 4, column 'id'"):
        encoder([(4,), ("five",)])
    assert cb.encode_rows([(1,)], b"\x02", (cb.encode_int4,), lambda r, i: b"%d" % i) == b"0"
