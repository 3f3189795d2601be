"""COPY binary format: typed Python values to PostgreSQL's binary input forms.

This module is the specification (the reference) of ``copy_in_rows(..., format="binary")``;
``_speedups.copy_binary_rows`` is its compiled twin for the common kinds, bound in
``_accel``. Everything here runs before the bytes are written, so a bad value raises
``TypeError`` / ``ValueError`` and the COPY is ended with CopyFail.

The stream is: ``HEADER``, then per row an int16 field count and per field an int32
length (-1 for NULL) and the value's bytes, then ``TRAILER``. Values are encoded by
column type (the OID of the column's type, a domain resolved to its base type, as
``COLUMN_TYPES_SQL`` looks it up) and Python types are strict: ``int`` for integers (not
``bool``), ``str`` for text, ``bytes``-like for bytea, and so on (see ``_ENCODERS``).
"""

from __future__ import annotations

import datetime
import decimal
import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import client_error

# Signature, flags (no OIDs), header-extension length: the fixed 19-byte file header.
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
# A field count of -1 ends the data.
TRAILER = b"\xff\xff"

# The target's columns with the type COPY reads for each: a domain is received by its
# base type's receive function (domain constraints are checked after), so domains are
# followed down to a base type. $1 is the quoted (schema-qualified) name: regclass input
# understands quoted identifiers, and a missing relation fails with 42P01 right here.
COLUMN_TYPES_SQL = """\
WITH RECURSIVE t(attname, attnum, declared, typid, typtype, typbasetype) AS (
  SELECT a.attname, a.attnum, pg_catalog.format_type(a.atttypid, a.atttypmod),
         y.oid, y.typtype, y.typbasetype
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type y ON y.oid = a.atttypid
  WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT t.attname, t.attnum, t.declared, y.oid, y.typtype, y.typbasetype
  FROM t JOIN pg_catalog.pg_type y ON y.oid = t.typbasetype
  WHERE t.typtype = 'd'
)
SELECT attname, declared, typid FROM t WHERE typtype <> 'd' ORDER BY attnum"""

# Kind codes shared with _speedups.c: the kinds it encodes itself. Any other kind (and
# any value of an unexpected Python type) goes through the column's Python encoder.
KIND_OTHER = 0
KIND_INT2 = 1
KIND_INT4 = 2
KIND_INT8 = 3
KIND_FLOAT4 = 4
KIND_FLOAT8 = 5
KIND_BOOL = 6
KIND_TEXT = 7
KIND_BYTEA = 8
KIND_JSONB = 9

Encoder = Callable[[Any], bytes]
RowEncoder = Callable[[Any, int], bytes]
# (rows, kind codes, per-column encoders, row encoder) -> the rows' bytes.
RowsEncoder = Callable[[list[Any], bytes, tuple[Encoder, ...], RowEncoder], bytes]

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_NULL = _INT32.pack(-1)
_MAX_FIELD = 0x7FFFFFFF
_PACK_INT2 = struct.Struct(">h").pack
_PACK_INT4 = struct.Struct(">i").pack
_PACK_INT8 = struct.Struct(">q").pack
_PACK_OID = struct.Struct(">I").pack
_PACK_FLOAT4 = struct.Struct(">f").pack
_PACK_FLOAT8 = struct.Struct(">d").pack
_PACK_INTERVAL = struct.Struct(">qii").pack
_TRUE = b"\x01"
_FALSE = b"\x00"

_EPOCH_ORDINAL = datetime.date(2000, 1, 1).toordinal()
_USECS_PER_DAY = 86_400_000_000


def _expected(type_name: str, accepted: str, value: object) -> TypeError:
    return TypeError(f"{type_name} takes {accepted}, not {type(value).__name__}")


def _out_of_range(type_name: str, _value: object) -> ValueError:
    # Never the value itself: it may be sensitive, and an int's repr can even raise.
    return ValueError(f"value out of range for {type_name}")


# --------------------------------------------------------------------- per-type encoders
def _integer(type_name: str, low: int, high: int, pack: Callable[[int], bytes]) -> Encoder:
    def encode(value: Any) -> bytes:
        # bool is an int, but True in an integer column is almost certainly a mistake.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _expected(type_name, "int", value)
        if not low <= value <= high:
            raise _out_of_range(type_name, value)
        return pack(value)

    return encode


encode_int2 = _integer("int2", -(2**15), 2**15 - 1, _PACK_INT2)
encode_int4 = _integer("int4", -(2**31), 2**31 - 1, _PACK_INT4)
encode_int8 = _integer("int8", -(2**63), 2**63 - 1, _PACK_INT8)
encode_oid = _integer("oid", 0, 2**32 - 1, _PACK_OID)


def _as_float(type_name: str, value: Any) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise _out_of_range(type_name, value) from None
    raise _expected(type_name, "float or int", value)


def encode_float4(value: Any) -> bytes:
    number = _as_float("float4", value)
    try:
        # Rounds to the nearest float4; only a finite value that rounds to infinity fails.
        return _PACK_FLOAT4(number)
    except OverflowError:
        raise _out_of_range("float4", value) from None


def encode_float8(value: Any) -> bytes:
    return _PACK_FLOAT8(_as_float("float8", value))


def encode_bool(value: Any) -> bytes:
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    raise _expected("bool", "bool", value)


def _text(type_name: str) -> Encoder:
    def encode(value: Any) -> bytes:
        if not isinstance(value, str):
            raise _expected(type_name, "str", value)
        # The server refuses NUL in text; saying so here names the row and column.
        if "\0" in value:
            raise ValueError(f"{type_name} cannot contain a NUL character")
        return value.encode("utf-8")

    return encode


encode_text = _text("text")
encode_varchar = _text("varchar")
encode_bpchar = _text("bpchar")
encode_name = _text("name")
encode_json = _text("json")
_encode_jsonb_text = _text("jsonb")


def encode_jsonb(value: Any) -> bytes:
    # jsonb's binary form is a version byte (1) and the JSON text.
    return b"\x01" + _encode_jsonb_text(value)


def encode_char(value: Any) -> bytes:
    """The one-byte ``"char"`` type: a one-character ASCII str ("" is its zero byte)."""
    if not isinstance(value, str):
        raise _expected('"char"', "str", value)
    if value == "":
        return b"\x00"
    if len(value) != 1 or not value.isascii() or value == "\0":
        raise ValueError('"char" takes one ASCII character (or "")')
    return value.encode("ascii")


def encode_bytea(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise _expected("bytea", "bytes, bytearray or memoryview", value)


# numeric: int16 ndigits, int16 weight, uint16 sign, uint16 display scale, then ndigits
# base-10000 digits, most significant first; value = sum(d[i] * 10000**(weight - i)).
_NUMERIC_POS = 0x0000
_NUMERIC_NEG = 0x4000
_NUMERIC_NAN = b"\x00\x00\x00\x00\xc0\x00\x00\x00"
_NUMERIC_PINF = b"\x00\x00\x00\x00\xd0\x00\x00\x00"
_NUMERIC_NINF = b"\x00\x00\x00\x00\xf0\x00\x00\x00"
_NUMERIC_MAX_DSCALE = 0x3FFF
_NUMERIC_HEAD = struct.Struct(">hhHH")


def _numeric_bytes(negative: bool, groups: list[int], weight: int, dscale: int) -> bytes:
    """``groups`` most significant first, without leading zero groups."""
    while groups and groups[-1] == 0:  # trailing zero groups say nothing
        groups.pop()
    if not groups:
        negative = False  # PostgreSQL has no negative zero
        weight = 0
    if not -(2**15) <= weight < 2**15 or dscale > _NUMERIC_MAX_DSCALE or len(groups) >= 2**15:
        raise ValueError("out of range for numeric")
    sign = _NUMERIC_NEG if negative else _NUMERIC_POS
    head = _NUMERIC_HEAD.pack(len(groups), weight, sign, dscale)
    return head + struct.pack(f">{len(groups)}H", *groups)


def _numeric(infinity_allowed: bool) -> Encoder:
    def encode(value: Any) -> bytes:
        if isinstance(value, int) and not isinstance(value, bool):
            magnitude = -value if value < 0 else value
            groups: list[int] = []
            while magnitude:
                magnitude, group = divmod(magnitude, 10000)
                groups.append(group)
            groups.reverse()
            return _numeric_bytes(value < 0, groups, len(groups) - 1, 0)
        if not isinstance(value, decimal.Decimal):
            # A float would carry its binary rounding into an exact type: refused.
            raise _expected("numeric", "int or Decimal", value)
        if value.is_nan():
            if value.is_snan():
                raise ValueError("numeric cannot take a signalling NaN")
            return _NUMERIC_NAN
        if value.is_infinite():
            if not infinity_allowed:
                raise ValueError("numeric infinity needs PostgreSQL 14 or later")
            return _NUMERIC_NINF if value.is_signed() else _NUMERIC_PINF
        sign, digit_tuple, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        dscale = -exponent if exponent < 0 else 0
        if dscale > _NUMERIC_MAX_DSCALE:
            raise ValueError("out of range for numeric")
        digits = "".join(map(str, digit_tuple)).lstrip("0")
        # Align the last digit on a base-10000 boundary, then the first.
        pad = exponent % 4
        digits += "0" * pad
        exponent -= pad
        digits = "0" * (-len(digits) % 4) + digits
        groups = [int(digits[i : i + 4]) for i in range(0, len(digits), 4)]
        return _numeric_bytes(bool(sign), groups, exponent // 4 + len(groups) - 1, dscale)

    return encode


def _days(value: datetime.date) -> int:
    return value.toordinal() - _EPOCH_ORDINAL


def _usecs_of_day(value: datetime.time | datetime.datetime) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def encode_date(value: Any) -> bytes:
    # A datetime is a date too; taking its date silently would drop the time.
    if not isinstance(value, datetime.date) or isinstance(value, datetime.datetime):
        raise _expected("date", "date", value)
    return _PACK_INT4(_days(value))


def encode_time(value: Any) -> bytes:
    if not isinstance(value, datetime.time):
        raise _expected("time", "time", value)
    if value.tzinfo is not None:
        raise TypeError("time (without time zone) takes a naive time, not one with tzinfo")
    return _PACK_INT8(_usecs_of_day(value))


def encode_timestamp(value: Any) -> bytes:
    if not isinstance(value, datetime.datetime):
        raise _expected("timestamp", "datetime", value)
    if value.utcoffset() is not None:
        raise TypeError("timestamp (without time zone) takes a naive datetime, not an aware one")
    return _PACK_INT8(_days(value) * _USECS_PER_DAY + _usecs_of_day(value))


def encode_timestamptz(value: Any) -> bytes:
    if not isinstance(value, datetime.datetime):
        raise _expected("timestamptz", "datetime", value)
    offset = value.utcoffset()
    if offset is None:
        # Which zone a naive datetime means is a guess; the caller must say.
        raise TypeError("timestamptz takes an aware datetime, not a naive one")
    local = _days(value) * _USECS_PER_DAY + _usecs_of_day(value)
    return _PACK_INT8(local - offset // datetime.timedelta(microseconds=1))


def encode_interval(value: Any) -> bytes:
    # timedelta's own fields: days stay days (PostgreSQL keeps days and time apart).
    if not isinstance(value, datetime.timedelta):
        raise _expected("interval", "timedelta", value)
    return _PACK_INTERVAL(value.seconds * 1_000_000 + value.microseconds, value.days, 0)


def encode_uuid(value: Any) -> bytes:
    if not isinstance(value, uuid.UUID):
        raise _expected("uuid", "UUID", value)
    return value.bytes


encode_numeric = _numeric(infinity_allowed=True)
_encode_numeric_finite = _numeric(infinity_allowed=False)

# Type OID -> (name, kind, encoder). The OIDs are fixed in PostgreSQL's catalog.
_ENCODERS: dict[int, tuple[str, int, Encoder]] = {
    16: ("bool", KIND_BOOL, encode_bool),
    17: ("bytea", KIND_BYTEA, encode_bytea),
    18: ('"char"', KIND_OTHER, encode_char),
    19: ("name", KIND_TEXT, encode_name),
    20: ("int8", KIND_INT8, encode_int8),
    21: ("int2", KIND_INT2, encode_int2),
    23: ("int4", KIND_INT4, encode_int4),
    25: ("text", KIND_TEXT, encode_text),
    26: ("oid", KIND_OTHER, encode_oid),
    114: ("json", KIND_TEXT, encode_json),
    700: ("float4", KIND_FLOAT4, encode_float4),
    701: ("float8", KIND_FLOAT8, encode_float8),
    1042: ("bpchar", KIND_TEXT, encode_bpchar),
    1043: ("varchar", KIND_TEXT, encode_varchar),
    1082: ("date", KIND_OTHER, encode_date),
    1083: ("time", KIND_OTHER, encode_time),
    1114: ("timestamp", KIND_OTHER, encode_timestamp),
    1184: ("timestamptz", KIND_OTHER, encode_timestamptz),
    1186: ("interval", KIND_OTHER, encode_interval),
    1700: ("numeric", KIND_OTHER, encode_numeric),
    2950: ("uuid", KIND_OTHER, encode_uuid),
    3802: ("jsonb", KIND_JSONB, encode_jsonb),
}
NUMERIC_OID = 1700
SUPPORTED_OIDS = frozenset(_ENCODERS)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    declared: str  # the type as the table declares it (a domain, varchar(10), ...)
    oid: int  # the base type's OID
    kind: int
    encode: Encoder


def column(name: str, declared: str, oid: int, server_version: int | None = None) -> Column:
    """The encoder for one column; TypeError if binary COPY of its type is unsupported."""
    found = _ENCODERS.get(oid)
    if found is None:
        raise TypeError(
            f"copy_in_rows(format='binary'): column {name!r} has type {declared}, which "
            "the binary format does not support here; use format='text'"
        )
    _, kind, encode = found
    if oid == NUMERIC_OID and server_version is not None and server_version < 140000:
        encode = _encode_numeric_finite  # numeric infinities came with PostgreSQL 14
    return Column(name, declared, oid, kind, encode)


def columns_for(
    names: Sequence[str],
    found: Iterable[tuple[str | None, ...]],
    table: str,
    server_version: int | None = None,
) -> list[Column]:
    """The columns ``names`` of ``table`` given the rows of ``COLUMN_TYPES_SQL``.

    A name not among them raises PgasyncError 42703, as the server would."""
    types: dict[str, tuple[str, int]] = {}
    for attname, declared, typid in found:
        if attname is not None and declared is not None and typid is not None:
            types[attname] = (declared, int(typid))
    columns = []
    for name in names:
        if name not in types:
            raise client_error("42703", f'column "{name}" of relation {table} does not exist')
        declared, oid = types[name]
        columns.append(column(name, declared, oid, server_version))
    return columns


# --------------------------------------------------------------------------- rows
def encode_row(row: Any, index: int, columns: Sequence[Column]) -> bytes:
    """One row: int16 field count, then per field int32 length (-1: NULL) and bytes.

    ``index`` is only for messages: errors say ``row {index}, column {name!r}
    ({type}): ...`` and are TypeError or ValueError whatever the encoder raised."""
    if isinstance(row, str | bytes):
        raise TypeError(f"row {index}: a COPY row must be a sequence of values, not a str/bytes")
    try:
        values = tuple(row)
    except TypeError:
        raise TypeError(
            f"row {index}: a COPY row must be a sequence of values, not {type(row).__name__}"
        ) from None
    if len(values) != len(columns):
        raise ValueError(f"row {index} has {len(values)} values for {len(columns)} columns")
    parts = [_INT16.pack(len(values))]
    for value, col in zip(values, columns, strict=True):
        if value is None:
            parts.append(_NULL)
            continue
        try:
            data = col.encode(value)
        except (TypeError, ValueError) as exc:
            # One message format whatever failed (UnicodeEncodeError included).
            error = TypeError if isinstance(exc, TypeError) else ValueError
            raise error(f"row {index}, column {col.name!r} ({col.declared}): {exc}") from exc
        if len(data) > _MAX_FIELD:
            raise ValueError(
                f"row {index}, column {col.name!r} ({col.declared}): {len(data)} bytes is "
                "more than a COPY field can hold"
            )
        parts.append(_INT32.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def encode_rows(
    rows: list[Any],
    kinds: bytes,
    encoders: tuple[Encoder, ...],
    encode_one: RowEncoder,
) -> bytes:
    """The reference of ``_speedups.copy_binary_rows``: every row through ``encode_one``
    (``kinds`` and ``encoders`` only let the compiled one skip it for common values)."""
    return b"".join([encode_one(row, index) for index, row in enumerate(rows)])


class BatchEncoder:
    """What ``_CopyWriter`` calls with each batch of rows: their bytes, in one call to
    ``rows_encoder`` (compiled when available). Row numbers in errors count from the
    first row of the COPY, not of the batch."""

    __slots__ = ("_columns", "_encoders", "_first", "_kinds", "_rows_encoder")

    def __init__(self, columns: Sequence[Column], rows_encoder: RowsEncoder = encode_rows) -> None:
        self._columns = tuple(columns)
        self._kinds = bytes(c.kind for c in self._columns)
        self._encoders = tuple(c.encode for c in self._columns)
        self._rows_encoder = rows_encoder
        self._first = 0

    def _encode_one(self, row: Any, index: int) -> bytes:
        return encode_row(row, self._first + index, self._columns)

    def __call__(self, rows: list[Any]) -> bytes:
        data = self._rows_encoder(rows, self._kinds, self._encoders, self._encode_one)
        self._first += len(rows)
        return data
