"""scan_reply: a whole ordinary query reply in one call, the reference and its C twin.

The table-driven cases run against both ``protocol.reply.scan_reply`` (the
specification) and ``postgres_async._speedups.scan_reply``. Hypothesis then checks that
the two agree on arbitrary and on mutated bytes, that generated valid replies round-trip,
and that whatever they accept, the message-by-message path (ReceiveBuffer and
QueryConversation) accepts too, with the same result: None must only ever mean "read
the messages one by one", never a different answer. Replies to a statement whose result
was known (``known_columns``: no Describe, so no RowDescription or NoData) are held to
that path with the RowDescription or NoData it would have had put back.

``postgres_async._speedups`` is imported directly (whatever ``POSTGRES_ASYNC_IMPL``
says). When it was not built its half skips, except in CI (``CI`` set), where a missing
module is a failure.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import os
import re
import struct
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from postgres_async import _accel
from postgres_async.protocol import messages as m
from postgres_async.protocol.buffer import SHORT_MESSAGE_LIMIT, ReceiveBuffer
from postgres_async.protocol.machines import (
    Completed,
    QueryConversation,
    QueryPhase,
    Ready,
    RowsStart,
)
from postgres_async.protocol.messages import ColumnMetadata, TransactionStatus
from postgres_async.protocol.reply import COMMAND_COMPLETE_LIMIT, Reply
from postgres_async.protocol.reply import scan_reply as py_scan_reply
from support.differential import leaked_bytes, outcome

# POSTGRES_ASYNC_DIFF_EXAMPLES=100000 for a long soak; the default keeps the file fast.
SETTINGS = settings(
    max_examples=int(os.environ.get("POSTGRES_ASYNC_DIFF_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Scan = Callable[..., Reply | None]
Row = tuple[str | None, ...]

BIG = 2**70  # beyond any C integer
MAX_INT32 = 2**31 - 1
NO_LIMIT = 1 << 30


@pytest.fixture(params=["python", "c"])
def scan(request: pytest.FixtureRequest) -> Scan:
    if request.param == "python":
        return py_scan_reply
    compiled: Scan = request.getfixturevalue("speedups").scan_reply
    return compiled


# ---------------------------------------------------------------------------------------
# building replies


def _i32(value: int) -> bytes:
    return struct.pack("!i", value)


def _raw(type_code: bytes, payload: bytes, length: int | None = None) -> bytes:
    """A frame, with the length field given (a lie) or computed."""
    return type_code + _i32(len(payload) + 4 if length is None else length) + payload


def _column(name: str, fmt: int = 0) -> ColumnMetadata:
    return ColumnMetadata(name, 25, 16384, 1, -1, -1, fmt)


def _description(names: Sequence[str]) -> bytes:
    return m.RowDescription(tuple(_column(n) for n in names)).encode()


def _row(*values: str | None) -> bytes:
    return m.DataRow(tuple(None if v is None else v.encode() for v in values)).encode()


def _parts(
    names: Sequence[str] | None,
    rows: Sequence[Sequence[str | None]] = (),
    tag: str = "SELECT 1",
    status: TransactionStatus = TransactionStatus.IDLE,
) -> list[bytes]:
    """The messages of a reply, each encoded by the messages module."""
    return [
        m.ParseComplete().encode(),
        m.BindComplete().encode(),
        m.NoData().encode() if names is None else _description(names),
        *(_row(*r) for r in rows),
        m.CommandComplete(tag).encode(),
        m.ReadyForQuery(status).encode(),
    ]


def _expected(
    names: Sequence[str] | None,
    rows: Sequence[Sequence[str | None]] = (),
    tag: str = "SELECT 1",
    status: TransactionStatus = TransactionStatus.IDLE,
    start: int = 0,
) -> Reply:
    data = b"".join(_parts(names, rows, tag, status))
    description = None if names is None else _description(names)[5:]
    return start + len(data), description, [tuple(r) for r in rows], tag, ord(status.value)


PARSE = m.ParseComplete().encode()
BIND = m.BindComplete().encode()
NO_DATA = m.NoData().encode()
T_AB = _description(["a", "b"])
D_AB = _row("1", None)
SELECT_1 = m.CommandComplete("SELECT 1").encode()
READY = m.ReadyForQuery(TransactionStatus.IDLE).encode()
BASE = [PARSE, BIND, T_AB, D_AB, SELECT_1, READY]
BASE_RESULT: Reply = (len(b"".join(BASE)), T_AB[5:], [("1", None)], "SELECT 1", ord("I"))


def _t_payload(*columns: bytes, count: int | None = None) -> bytes:
    """A RowDescription payload from raw column bytes (name, NUL, 18 bytes)."""
    return struct.pack("!H", len(columns) if count is None else count) + b"".join(columns)


def _field(name: bytes, fmt: int = 0, tail: int = 18) -> bytes:
    return (name + b"\0" + bytes(16) + struct.pack("!h", fmt))[: len(name) + 1 + tail]


def _d_payload(*columns: bytes, count: int) -> bytes:
    return struct.pack("!H", count) + b"".join(columns)


def _replace(index: int, *messages: bytes) -> bytes:
    """BASE with the message at ``index`` replaced by ``messages`` (none: dropped)."""
    return b"".join([*BASE[:index], *messages, *BASE[index + 1 :]])


# ---------------------------------------------------------------------------------------
# the message-by-message path, for comparison


def _message_by_message(
    data: bytes | bytearray, pos: int, max_length: int, parsed: bool = True
) -> Reply:
    """What ReceiveBuffer and QueryConversation make of the same bytes, one by one.

    Raises (or fails an assertion) where that path would report an error or wait.
    """
    buffer = ReceiveBuffer(max_length)
    buffer.feed(bytes(data[pos:]))
    conversation = QueryConversation(parse=parsed)
    description: bytes | None = None
    rows: list[Row] = []
    tag: str | None = None
    status: int | None = None
    while conversation.phase is not QueryPhase.DONE:
        if conversation.phase is QueryPhase.ROWS:
            assert conversation.columns is not None
            batch = buffer.take_data_rows(len(conversation.columns))
            if batch:
                rows += batch
                continue
        elif conversation.take_parse_bind_complete(buffer):
            continue
        frame = buffer.next_frame()
        assert frame is not None, "the message-by-message path waits for more bytes"
        type_code, payload = frame
        if type_code == ord("T"):
            description = payload
        event = conversation.handle_frame(type_code, payload)
        if isinstance(event, Completed):
            tag = event.tag
        elif isinstance(event, Ready):
            status = ord(event.status.value)
        else:
            assert event is None or isinstance(event, RowsStart), event
    assert tag is not None
    assert status is not None
    consumed = len(data) - pos - len(buffer)
    return pos + consumed, description, rows, tag, status


# ---------------------------------------------------------------------------------------
# ordinary replies


VALID: dict[str, tuple[bytes, int, int, int, Reply]] = {}


def _valid(
    name: str,
    names: Sequence[str] | None,
    rows: Sequence[Sequence[str | None]] = (),
    tag: str = "SELECT 1",
    status: TransactionStatus = TransactionStatus.IDLE,
    *,
    prefix: bytes = b"",
    suffix: bytes = b"",
    row_limit: int = NO_LIMIT,
) -> None:
    data = prefix + b"".join(_parts(names, rows, tag, status)) + suffix
    VALID[name] = (
        data,
        len(prefix),
        1 << 30,
        row_limit,
        _expected(names, rows, tag, status, len(prefix)),
    )


_valid("NoData", None, tag="INSERT 0 1")
_valid("no rows", ["a", "b"], [], "SELECT 0")
_valid("one row", ["a", "b"], [["1", "x"]])
_valid("many rows", ["n", "s", "z"], [[str(i), "é" * (i % 4), None] for i in range(300)])
_valid("NULLs only", ["a", "b", "c"], [[None, None, None], [None, "", None]])
_valid("empty strings", ["a"], [[""], [""]])
_valid(
    "multibyte UTF-8",
    ["名前", "€", "😀x"],
    [["é", "日本語のテキスト", "😀" * 9], ["ascii then é", "x" * 8 + "€", "\u07ff\uffff"]],
    tag="SELECT 2 — ß",
)
_valid("no columns", [], [[], []], "SELECT 2")
_valid("in a transaction", ["a"], [["1"]], status=TransactionStatus.IN_TRANSACTION)
_valid("failed transaction", None, tag="ROLLBACK", status=TransactionStatus.IN_FAILED_TRANSACTION)
_valid("long ASCII values", ["a", "b"], [["x" * 1000, "0123456789abcdef"]])
_valid("after a prefix", ["a"], [["1"]], prefix=b"Z\x00\x00\x00\x05I\xff")
_valid("followed by the next reply", ["a"], [["1"]], suffix=b"".join(BASE) + b"1\x00")
_valid("followed by garbage", None, suffix=b"\xff" * 9)
_valid("row_limit reached exactly", ["a"], [["1"], ["2"], ["3"]], row_limit=3)
_valid("row_limit 0, no rows", ["a"], [], row_limit=0)
_valid("row_limit 0, NoData", None, row_limit=0)
_valid("row_limit beyond any C integer", ["a"], [["1"]], row_limit=BIG)
_valid("longest tag", None, tag="x" * (COMMAND_COMPLETE_LIMIT - 5))
_T_BINARY = m.RowDescription((_column("a", 1), _column("b", 0))).encode()
VALID["binary format column"] = (
    _replace(2, _T_BINARY),
    0,
    1 << 30,
    NO_LIMIT,
    (len(_replace(2, _T_BINARY)), _T_BINARY[5:], [("1", None)], "SELECT 1", ord("I")),
)
_LONGEST = max(len(part) for part in BASE)
VALID["max_length exactly the longest message"] = (
    b"".join(BASE),
    0,
    _LONGEST,
    NO_LIMIT,
    BASE_RESULT,
)
VALID["max_length beyond any C integer"] = (b"".join(BASE), 0, BIG, NO_LIMIT, BASE_RESULT)


@pytest.mark.parametrize("case", list(VALID))
def test_ordinary_reply(scan: Scan, case: str) -> None:
    data, pos, max_length, row_limit, expected = VALID[case]
    for buffer in (bytearray(data), data):
        result = scan(buffer, pos, max_length, row_limit)
        assert result == expected
        assert result is not None
        new_pos, description, rows, tag, status = result
        assert type(new_pos) is int
        assert description is None or type(description) is bytes
        assert type(rows) is list
        assert all(type(row) is tuple for row in rows)
        assert all(v is None or type(v) is str for row in rows for v in row)
        assert type(tag) is str
        assert type(status) is int
        assert buffer == data  # untouched
        if isinstance(buffer, bytearray):
            buffer.append(0)  # BufferError if the export had been kept
    assert _message_by_message(data, pos, max_length) == expected


@pytest.mark.parametrize("case", list(VALID))
def test_every_truncation_is_incomplete(scan: Scan, case: str) -> None:
    data, pos, max_length, row_limit, expected = VALID[case]
    whole = expected[0]
    if whole - pos > 2000:  # the big ones: both ends, and every 7th byte between
        cuts = [*range(pos, pos + 200), *range(pos, whole, 7), *range(whole - 200, whole)]
    else:
        cuts = list(range(pos, whole))
    for cut in cuts:
        assert scan(bytearray(data[:cut]), pos, max_length, row_limit) is None, cut
    assert scan(bytearray(data[:whole]), pos, max_length, row_limit) == expected


# ---------------------------------------------------------------------------------------
# anything else


_TOO_LONG_TAG = m.CommandComplete("x" * (COMMAND_COMPLETE_LIMIT - 4)).encode()

MALFORMED: dict[str, bytes | tuple[bytes, int]] = {
    # ParseComplete and BindComplete
    "nothing": b"",
    "no ParseComplete": _replace(0),
    "no BindComplete": _replace(1),
    "BindComplete first": b"".join([BIND, PARSE, *BASE[2:]]),
    "ParseComplete twice": _replace(0, PARSE, PARSE),
    "ParseComplete with a payload": _replace(0, _raw(b"1", b"\0")),
    "ParseComplete length 3": _replace(0, b"1" + _i32(3)),
    "BindComplete with a payload": _replace(1, _raw(b"2", b"x")),
    "BindComplete length -1": _replace(1, b"2" + _i32(-1)),
    # NoData / RowDescription
    "neither NoData nor RowDescription": b"".join([PARSE, BIND, SELECT_1, READY]),
    "NoData with a payload": b"".join([PARSE, BIND, _raw(b"n", b"\0"), SELECT_1, READY]),
    "NoData then a DataRow": b"".join([PARSE, BIND, NO_DATA, _row(), SELECT_1, READY]),
    "NoData then RowDescription": _replace(2, NO_DATA, T_AB),
    "RowDescription twice": _replace(2, T_AB, T_AB),
    "RowDescription, empty payload": _replace(2, _raw(b"T", b"")),
    "RowDescription, one byte": _replace(2, _raw(b"T", b"\0")),
    "RowDescription, more columns said than there": _replace(
        2, _raw(b"T", _t_payload(_field(b"a"), _field(b"b"), count=3))
    ),
    "RowDescription, fewer columns said than there": _replace(
        2, _raw(b"T", _t_payload(_field(b"a"), _field(b"b"), count=1))
    ),
    "RowDescription, name without NUL": _replace(2, _raw(b"T", _t_payload(b"abc", count=1))),
    "RowDescription, name not UTF-8": _replace(
        2, _raw(b"T", _t_payload(_field(b"\xff"), _field(b"b")))
    ),
    "RowDescription, name a surrogate": _replace(
        2, _raw(b"T", _t_payload(_field(b"a"), _field(b"\xed\xa0\x80")))
    ),
    "RowDescription, name overlong UTF-8": _replace(
        2, _raw(b"T", _t_payload(_field(b"a"), _field(b"\xe0\x80\xaf")))
    ),
    "RowDescription, name beyond U+10FFFF": _replace(
        2, _raw(b"T", _t_payload(_field(b"a"), _field(b"\xf4\x90\x80\x80")))
    ),
    "RowDescription, name cut mid-character": _replace(
        2, _raw(b"T", _t_payload(_field(b"a"), _field(b"\xe2\x82")))
    ),
    "RowDescription, 17 bytes after a name": _replace(
        2, _raw(b"T", _t_payload(_field(b"a"), _field(b"b", tail=17)))
    ),
    "RowDescription, a trailing byte": _replace(
        2, _raw(b"T", _t_payload(_field(b"a"), _field(b"b")) + b"\0")
    ),
    "RowDescription, format 2": _replace(
        2, _raw(b"T", _t_payload(_field(b"a"), _field(b"b", fmt=2)))
    ),
    "RowDescription, format -1": _replace(
        2, _raw(b"T", _t_payload(_field(b"a", fmt=-1), _field(b"b")))
    ),
    "RowDescription, format 256": _replace(
        2, _raw(b"T", _t_payload(_field(b"a", fmt=256), _field(b"b")))
    ),
    "RowDescription, length field 5": _replace(2, _raw(b"T", b"\0", length=5)),
    "RowDescription, length field beyond the data": _replace(2, T_AB[:1] + _i32(MAX_INT32)),
    "RowDescription, negative length field": _replace(2, T_AB[:1] + _i32(-(2**31))),
    "RowDescription too long for max_length": (b"".join(BASE), len(T_AB) - 1),
    # DataRow
    "DataRow with too few columns": _replace(3, _row("1")),
    "DataRow with too many columns": _replace(3, _row("1", "2", "3")),
    "DataRow, empty payload": _replace(3, _raw(b"D", b"")),
    "DataRow, one byte": _replace(3, _raw(b"D", b"\0")),
    "DataRow, column length -2": _replace(3, _raw(b"D", _d_payload(_i32(-1), _i32(-2), count=2))),
    "DataRow, column length -2**31": _replace(
        3, _raw(b"D", _d_payload(_i32(-(2**31)), _i32(-1), count=2))
    ),
    "DataRow, value beyond the message": _replace(
        3, _raw(b"D", _d_payload(_i32(1) + b"1", _i32(2) + b"x", count=2))
    ),
    "DataRow, value length 2**31-1": _replace(
        3, _raw(b"D", _d_payload(_i32(-1), _i32(MAX_INT32) + b"xyz", count=2))
    ),
    "DataRow, column header cut short": _replace(
        3, _raw(b"D", _d_payload(_i32(-1), b"\xff\xff\xff", count=2))
    ),
    "DataRow, value not UTF-8": _replace(
        3, _raw(b"D", _d_payload(_i32(1) + b"\xff", _i32(-1), count=2))
    ),
    "DataRow, value a surrogate": _replace(
        3, _raw(b"D", _d_payload(_i32(3) + b"\xed\xb0\x80", _i32(-1), count=2))
    ),
    "DataRow, non-ASCII after 8 ASCII bytes": _replace(
        3, _raw(b"D", _d_payload(_i32(10) + b"abcdefgh\xc3(", _i32(-1), count=2))
    ),
    "DataRow, value cut mid-character": _replace(
        3, _raw(b"D", _d_payload(_i32(-1), _i32(2) + b"\xf0\x9f", count=2))
    ),
    "DataRow, trailing bytes": _replace(3, _raw(b"D", D_AB[5:] + b"\0")),
    "DataRow, the second of three malformed": _replace(
        3, D_AB, _raw(b"D", _d_payload(_i32(1) + b"\xff", _i32(-1), count=2)), D_AB
    ),
    "DataRow, length field beyond the data": _replace(3, D_AB[:1] + _i32(MAX_INT32)),
    "DataRow, length field 3": _replace(3, D_AB[:1] + _i32(3)),
    "DataRow too long for max_length": (
        _replace(3, _row("1", "x" * 100)),
        len(_row("1", "x" * 100)) - 1,
    ),
    "DataRow after CommandComplete": _replace(4, SELECT_1, D_AB),
    # CommandComplete
    "no CommandComplete": _replace(4),
    "CommandComplete twice": _replace(4, SELECT_1, SELECT_1),
    "CommandComplete, empty payload": _replace(4, _raw(b"C", b"")),
    "CommandComplete without NUL": _replace(4, _raw(b"C", b"SELECT 1")),
    "CommandComplete, NUL in the middle": _replace(4, _raw(b"C", b"SEL\0ECT 1\0")),
    "CommandComplete, NUL only in the middle": _replace(4, _raw(b"C", b"SEL\0ECT 1")),
    "CommandComplete, two NULs at the end": _replace(4, _raw(b"C", b"SELECT 1\0\0")),
    "CommandComplete, tag not UTF-8": _replace(4, _raw(b"C", b"SELECT \xff\0")),
    "CommandComplete, tag a surrogate": _replace(4, _raw(b"C", b"\xed\xa0\x80\0")),
    "CommandComplete, length field 30001": _replace(4, _TOO_LONG_TAG),
    "CommandComplete, length field beyond the data": _replace(4, b"C" + _i32(MAX_INT32)),
    "CommandComplete too long for max_length": (
        _replace(4, m.CommandComplete("x" * 60).encode()),
        len(m.CommandComplete("x" * 60).encode()) - 1,
    ),
    # ReadyForQuery
    "no ReadyForQuery": _replace(5),
    "ReadyForQuery, length field 4": _replace(5, b"Z" + _i32(4)),
    "ReadyForQuery, length field 6": _replace(5, _raw(b"Z", b"II")),
    "ReadyForQuery, status X": _replace(5, _raw(b"Z", b"X")),
    "ReadyForQuery, status i": _replace(5, _raw(b"Z", b"i")),
    "ReadyForQuery, status NUL": _replace(5, _raw(b"Z", b"\0")),
    "ReadyForQuery, status 0xC9": _replace(5, _raw(b"Z", b"\xc9")),
    "the shortest reply, max_length 5": (
        b"".join([PARSE, BIND, NO_DATA, m.CommandComplete("").encode(), READY]),
        5,
    ),
    # other replies
    "EmptyQueryResponse": b"".join([PARSE, BIND, NO_DATA, m.EmptyQueryResponse().encode(), READY]),
    "PortalSuspended": _replace(4, m.PortalSuspended().encode()),
    "ErrorResponse at Parse": b"".join(
        [m.ErrorResponse({"S": "ERROR", "C": "42601", "M": "syntax"}).encode(), READY]
    ),
    "ErrorResponse during rows": _replace(
        4, m.ErrorResponse({"S": "ERROR", "C": "22012", "M": "division by zero"}).encode()
    ),
    "CopyInResponse": b"".join([PARSE, BIND, NO_DATA, m.CopyInResponse(0, (0,)).encode()]),
    "CopyOutResponse": b"".join(
        [PARSE, BIND, NO_DATA, m.CopyOutResponse(0, (0,)).encode(), *BASE[4:]]
    ),
}
# The cases refused for their max_length alone.
_MALFORMED_MAX_LENGTH = {
    name: case[1] for name, case in MALFORMED.items() if isinstance(case, tuple)
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_not_ordinary(scan: Scan, case: str) -> None:
    spec = MALFORMED[case]
    data, max_length = spec if isinstance(spec, tuple) else (spec, 1 << 30)
    assert scan(bytearray(data), 0, max_length, NO_LIMIT) is None
    assert scan(data, 0, max_length, NO_LIMIT) is None
    # With the right max_length the same bytes are ordinary (the limit alone decided).
    if case in _MALFORMED_MAX_LENGTH:
        assert scan(data, 0, max_length + 1, NO_LIMIT) is not None


def test_command_complete_limit_is_the_short_message_limit() -> None:
    assert COMMAND_COMPLETE_LIMIT == SHORT_MESSAGE_LIMIT


_FOREIGN = {
    "ErrorResponse": m.ErrorResponse({"S": "ERROR", "C": "XX000", "M": "boom"}).encode(),
    "NoticeResponse": m.NoticeResponse({"S": "NOTICE", "C": "00000", "M": "hi"}).encode(),
    "ParameterStatus": m.ParameterStatus("TimeZone", "UTC").encode(),
    "NotificationResponse": m.NotificationResponse(42, "chan", "payload").encode(),
    "EmptyQueryResponse": m.EmptyQueryResponse().encode(),
    "CopyInResponse": m.CopyInResponse(0, (0, 0)).encode(),
    "CopyOutResponse": m.CopyOutResponse(0, (0, 0)).encode(),
    "CopyData": m.CopyData(b"1\t2\n").encode(),
    "CopyDone": m.CopyDone().encode(),
    "PortalSuspended": m.PortalSuspended().encode(),
    "CloseComplete": m.CloseComplete().encode(),
    "ParameterDescription": m.ParameterDescription((23,)).encode(),
    "BackendKeyData": m.BackendKeyData(1, 2).encode(),
    "AuthenticationOk": m.AuthenticationOk().encode(),
    "unknown type byte": _raw(b"!", b""),
}


@pytest.mark.parametrize("foreign", list(_FOREIGN))
def test_other_messages_interleaved(scan: Scan, foreign: str) -> None:
    message = _FOREIGN[foreign]
    for at in range(len(BASE)):
        data = bytearray(b"".join([*BASE[:at], message, *BASE[at:]]))
        assert scan(data, 0, 1 << 30, NO_LIMIT) is None, at
    data = bytearray(b"".join([PARSE, BIND, NO_DATA, message, SELECT_1, READY]))
    assert scan(data, 0, 1 << 30, NO_LIMIT) is None
    # After the reply it is the next thing's business.
    data = bytearray(b"".join([*BASE, message]))
    assert scan(data, 0, 1 << 30, NO_LIMIT) == BASE_RESULT


# ---------------------------------------------------------------------------------------
# arguments


def test_row_limit(scan: Scan) -> None:
    three = bytearray(b"".join(_parts(["a"], [["1"], ["2"], ["3"]])))
    expected = _expected(["a"], [["1"], ["2"], ["3"]])
    for limit in (3, 4, NO_LIMIT, BIG):
        assert scan(three, 0, 1 << 30, limit) == expected
    for limit in (2, 1, 0, -1, -BIG):
        assert scan(three, 0, 1 << 30, limit) is None
    none = bytearray(b"".join(_parts(["a"], [])))
    no_data = bytearray(b"".join(_parts(None)))
    for data in (none, no_data):
        assert scan(data, 0, 1 << 30, 0) is not None
        assert scan(data, 0, 1 << 30, -1) is None  # "at most -1 rows": none can be
        assert scan(data, 0, 1 << 30, -BIG) is None


def test_max_length(scan: Scan) -> None:
    data = bytearray(b"".join(BASE))
    assert scan(data, 0, _LONGEST, NO_LIMIT) == BASE_RESULT
    for max_length in (_LONGEST - 1, 6, 5, 0, -1, -BIG):
        assert scan(data, 0, max_length, NO_LIMIT) is None
    # ReadyForQuery (6 bytes) is the longest message of this one.
    short = bytearray(b"".join([PARSE, BIND, NO_DATA, m.CommandComplete("").encode(), READY]))
    assert scan(short, 0, 6, NO_LIMIT) == (len(short), None, [], "", ord("I"))
    assert scan(short, 0, 5, NO_LIMIT) is None


def test_pos(scan: Scan) -> None:
    data = bytearray(b"".join(BASE))
    for pos in (-1, -BIG):
        with pytest.raises(ValueError, match="pos must not be negative"):
            scan(data, pos, 1 << 30, NO_LIMIT)
        with pytest.raises(ValueError, match="pos must not be negative"):
            scan(bytearray(), pos, 1 << 30, NO_LIMIT)
    for pos in (1, 5, len(data) - 6, len(data), len(data) + 1, BIG):
        assert scan(data, pos, 1 << 30, NO_LIMIT) is None
    doubled = data + data
    first = scan(doubled, 0, 1 << 30, NO_LIMIT)
    assert first is not None
    second = scan(doubled, first[0], 1 << 30, NO_LIMIT)
    assert second is not None
    assert second[0] == len(doubled)
    assert second[1:] == first[1:]


def test_without_parse_complete(scan: Scan) -> None:
    """A query binding a statement prepared earlier gets no ParseComplete."""
    whole = b"".join(BASE)
    unparsed = whole[len(PARSE) :]
    expected = (len(unparsed), *BASE_RESULT[1:])
    assert scan(bytearray(unparsed), 0, 1 << 30, NO_LIMIT, False) == expected
    assert _message_by_message(unparsed, 0, 1 << 30, parsed=False) == expected
    # Each shape only where it is expected.
    assert scan(bytearray(unparsed), 0, 1 << 30, NO_LIMIT, True) is None
    assert scan(bytearray(unparsed), 0, 1 << 30, NO_LIMIT) is None
    assert scan(bytearray(whole), 0, 1 << 30, NO_LIMIT, False) is None
    assert scan(bytearray(whole), 0, 1 << 30, NO_LIMIT, True) == BASE_RESULT
    for cut in range(len(unparsed)):
        assert scan(bytearray(unparsed[:cut]), 0, 1 << 30, NO_LIMIT, False) is None


# ---------------------------------------------------------------------------------------
# a statement whose result is known: no Describe, so no RowDescription or NoData

KNOWN_NO_ROWS = -2


def _known_parts(
    rows: Sequence[Sequence[str | None]] = (),
    tag: str = "SELECT 1",
    status: TransactionStatus = TransactionStatus.IDLE,
    parsed: bool = True,
) -> list[bytes]:
    return [
        *([PARSE] if parsed else []),
        BIND,
        *(_row(*r) for r in rows),
        m.CommandComplete(tag).encode(),
        m.ReadyForQuery(status).encode(),
    ]


def _described(
    data: bytes | bytearray, pos: int, parsed: bool, known_columns: int, with_rows: bool
) -> tuple[bytes, int]:
    """The same reply as it is when a Describe was sent (NoData, or a RowDescription
    with ``known_columns`` columns, after BindComplete), and the bytes that adds. Without
    rows a RowDescription of no columns stands for any count (which may be beyond
    what one can hold)."""
    at = pos + (10 if parsed else 5)
    if known_columns == KNOWN_NO_ROWS:
        inserted = NO_DATA
    else:
        inserted = _description([""] * (known_columns if with_rows else 0))
    return bytes(data[:at]) + inserted + bytes(data[at:]), len(inserted)


# name: (data, known_columns, parsed, row_limit, result)
KNOWN: dict[str, tuple[bytes, int, bool, int, Reply]] = {}


def _known(
    name: str,
    known_columns: int,
    rows: Sequence[Sequence[str | None]] = (),
    tag: str = "SELECT 1",
    status: TransactionStatus = TransactionStatus.IDLE,
    *,
    parsed: bool = True,
    row_limit: int = NO_LIMIT,
) -> None:
    data = b"".join(_known_parts(rows, tag, status, parsed))
    result: Reply = (len(data), None, [tuple(r) for r in rows], tag, ord(status.value))
    KNOWN[name] = (data, known_columns, parsed, row_limit, result)


_known("no rows", KNOWN_NO_ROWS, tag="INSERT 0 1")
_known("no rows, not parsed", KNOWN_NO_ROWS, tag="UPDATE 3", parsed=False)
_known("no rows, row_limit 0", KNOWN_NO_ROWS, tag="INSERT 0 1", row_limit=0)
_known(
    "no rows, failed transaction",
    KNOWN_NO_ROWS,
    tag="ROLLBACK",
    status=TransactionStatus.IN_FAILED_TRANSACTION,
)
_known("two columns", 2, [["1", None], ["x" * 20, "é"]], "SELECT 2")
_known("two columns, not parsed", 2, [["1", None]], parsed=False)
_known("two columns, none returned", 2, [], "SELECT 0")
_known("one column, many rows", 1, [[str(i)] for i in range(300)], "SELECT 300")
_known(
    "three columns, in a transaction", 3, [["a", "", None]], status=TransactionStatus.IN_TRANSACTION
)
_known("zero columns", 0, [[], [], []], "SELECT 3")  # SELECT FROM generate_series(1, 3)
_known("zero columns, not parsed", 0, [[]], parsed=False)
_known("zero columns, none returned", 0, [], "SELECT 0")
_known("row_limit reached exactly", 1, [["1"], ["2"]], row_limit=2)
_known("row_limit 0, none returned", 3, [], row_limit=0)
_known("the most columns a DataRow holds, none returned", 65535, [], "SELECT 0")
_known("more columns than a DataRow holds, none returned", 65536, [], "SELECT 0")
_known("beyond any C integer, none returned", BIG, [], "SELECT 0")


@pytest.mark.parametrize("case", list(KNOWN))
def test_known_columns(scan: Scan, case: str) -> None:
    data, known_columns, parsed, row_limit, expected = KNOWN[case]
    for buffer in (bytearray(data), data):
        assert scan(buffer, 0, 1 << 30, row_limit, parsed, known_columns) == expected
        assert buffer == data
    # After a prefix, and followed by the next reply.
    prefix = b"Z\x00\x00\x00\x05I\xff"
    shifted = bytearray(prefix + data + b"".join(BASE))
    found = scan(shifted, len(prefix), 1 << 30, row_limit, parsed, known_columns)
    assert found == (len(prefix) + expected[0], *expected[1:])
    # The reply with its RowDescription or NoData back is the same reply, described.
    described, added = _described(data, 0, parsed, known_columns, bool(expected[2]))
    found = scan(bytearray(described), 0, 1 << 30, row_limit, parsed)
    assert found is not None
    assert (found[0] - added, None, *found[2:]) == expected
    via = _message_by_message(described, 0, 1 << 30, parsed)
    assert (via[0] - added, None, *via[2:]) == expected
    # Described, it is not the reply expected here.
    assert scan(bytearray(described), 0, 1 << 30, row_limit, parsed, known_columns) is None


@pytest.mark.parametrize("case", list(KNOWN))
def test_known_columns_every_truncation_is_incomplete(scan: Scan, case: str) -> None:
    data, known_columns, parsed, row_limit, expected = KNOWN[case]
    for cut in range(len(data)):
        assert scan(bytearray(data[:cut]), 0, 1 << 30, row_limit, parsed, known_columns) is None
    assert scan(bytearray(data), 0, 1 << 30, row_limit, parsed, known_columns) == expected


def _k(*messages: bytes) -> bytes:
    """A reply to a known statement: ParseComplete, BindComplete, then ``messages``."""
    return b"".join([PARSE, BIND, *messages])


_T_NONE = _description([])
_ROW_1 = _row("1")
_ROW_0 = _row()
_D_NOT_UTF8 = _raw(b"D", _d_payload(_i32(1) + b"\xff", _i32(-1), count=2))

# name: (data, known_columns)
KNOWN_NOT_ORDINARY: dict[str, tuple[bytes, int]] = {
    "nothing": (b"", KNOWN_NO_ROWS),
    "no BindComplete": (b"".join([PARSE, D_AB, SELECT_1, READY]), 2),
    "no CommandComplete": (_k(D_AB, READY), 2),
    "no ReadyForQuery": (_k(SELECT_1), KNOWN_NO_ROWS),
    # a description where none is expected
    "no rows, NoData": (_k(NO_DATA, SELECT_1, READY), KNOWN_NO_ROWS),
    "no rows, RowDescription": (_k(T_AB, SELECT_1, READY), KNOWN_NO_ROWS),
    "no rows, RowDescription and a DataRow": (_k(T_AB, D_AB, SELECT_1, READY), KNOWN_NO_ROWS),
    "rows, NoData": (_k(NO_DATA, SELECT_1, READY), 2),
    "zero columns, NoData": (_k(NO_DATA, SELECT_1, READY), 0),
    "rows, RowDescription": (_k(T_AB, D_AB, SELECT_1, READY), 2),
    "rows, RowDescription and none returned": (_k(T_AB, SELECT_1, READY), 2),
    "zero columns, zero-column RowDescription": (_k(_T_NONE, _ROW_0, SELECT_1, READY), 0),
    "rows, RowDescription after the rows": (_k(D_AB, T_AB, SELECT_1, READY), 2),
    "rows, NoData after the rows": (_k(D_AB, NO_DATA, SELECT_1, READY), 2),
    # rows where none are expected
    "no rows, a DataRow": (_k(D_AB, SELECT_1, READY), KNOWN_NO_ROWS),
    "no rows, a zero-column DataRow": (_k(_ROW_0, SELECT_1, READY), KNOWN_NO_ROWS),
    "no rows, a DataRow after CommandComplete": (_k(SELECT_1, D_AB, READY), KNOWN_NO_ROWS),
    "rows, a DataRow after CommandComplete": (_k(D_AB, SELECT_1, D_AB, READY), 2),
    # column counts
    "too few columns": (_k(D_AB, SELECT_1, READY), 3),
    "too many columns": (_k(D_AB, SELECT_1, READY), 1),
    "zero columns, a one-column row": (_k(_ROW_1, SELECT_1, READY), 0),
    "zero columns, after zero-column rows": (_k(_ROW_0, _ROW_0, _ROW_1, SELECT_1, READY), 0),
    "one column, a zero-column row": (_k(_ROW_0, SELECT_1, READY), 1),
    "the second row's count differs": (_k(D_AB, _ROW_1, SELECT_1, READY), 2),
    # counts a C integer of some width could wrap to 2
    "65538 columns, a row of 2": (_k(D_AB, SELECT_1, READY), 65538),
    "2**32 + 2 columns, a row of 2": (_k(D_AB, SELECT_1, READY), 2**32 + 2),
    "2**64 + 2 columns, a row of 2": (_k(D_AB, SELECT_1, READY), 2**64 + 2),
    "beyond any C integer, a row": (_k(D_AB, SELECT_1, READY), BIG),
    # malformed rows, other replies
    "DataRow not UTF-8": (_k(D_AB, _D_NOT_UTF8, SELECT_1, READY), 2),
    "DataRow with a trailing byte": (_k(_raw(b"D", D_AB[5:] + b"\0"), SELECT_1, READY), 2),
    "DataRow, length field beyond the data": (_k(D_AB[:1] + _i32(MAX_INT32)), 2),
    "EmptyQueryResponse": (_k(m.EmptyQueryResponse().encode(), READY), KNOWN_NO_ROWS),
    "PortalSuspended": (_k(D_AB, m.PortalSuspended().encode(), READY), 2),
    "ErrorResponse during rows": (
        _k(D_AB, m.ErrorResponse({"S": "ERROR", "C": "22012", "M": "boom"}).encode(), READY),
        2,
    ),
    "CopyOutResponse": (_k(m.CopyOutResponse(0, (0,)).encode()), KNOWN_NO_ROWS),
}


@pytest.mark.parametrize("case", list(KNOWN_NOT_ORDINARY))
def test_known_columns_not_ordinary(scan: Scan, case: str) -> None:
    data, known_columns = KNOWN_NOT_ORDINARY[case]
    assert scan(bytearray(data), 0, 1 << 30, NO_LIMIT, True, known_columns) is None
    assert scan(data, 0, 1 << 30, NO_LIMIT, True, known_columns) is None


def test_known_columns_widest_row(scan: Scan) -> None:
    """A DataRow holds at most 65535 columns: that many match, one more never."""
    data = bytearray(_k(_row(*[None] * 65535), SELECT_1, READY))
    found = scan(data, 0, 1 << 30, NO_LIMIT, True, 65535)
    assert found == (len(data), None, [(None,) * 65535], "SELECT 1", ord("I"))
    for known_columns in (65534, 65536, 2**16 + 65535, 2**32 + 65535, BIG):
        assert scan(data, 0, 1 << 30, NO_LIMIT, True, known_columns) is None


def test_known_columns_row_limit(scan: Scan) -> None:
    for known_columns, rows in ((1, [["1"], ["2"], ["3"]]), (0, [[], [], []])):
        three = bytearray(b"".join(_known_parts(rows)))
        expected = (len(three), None, [tuple(r) for r in rows], "SELECT 1", ord("I"))
        for limit in (3, 4, NO_LIMIT, BIG):
            assert scan(three, 0, 1 << 30, limit, True, known_columns) == expected
        for limit in (2, 1, 0, -1, -BIG):
            assert scan(three, 0, 1 << 30, limit, True, known_columns) is None
    for known_columns in (KNOWN_NO_ROWS, 0, 2):
        none = bytearray(b"".join(_known_parts([])))
        assert scan(none, 0, 1 << 30, 0, True, known_columns) is not None
        assert scan(none, 0, 1 << 30, -1, True, known_columns) is None
        assert scan(none, 0, 1 << 30, -BIG, True, known_columns) is None


def test_known_columns_parsed(scan: Scan) -> None:
    for known_columns, rows in ((KNOWN_NO_ROWS, []), (0, [[]]), (2, [["1", None]])):
        whole = bytearray(b"".join(_known_parts(rows, parsed=True)))
        unparsed = bytearray(b"".join(_known_parts(rows, parsed=False)))
        assert scan(whole, 0, 1 << 30, NO_LIMIT, True, known_columns) is not None
        assert scan(unparsed, 0, 1 << 30, NO_LIMIT, False, known_columns) is not None
        assert scan(whole, 0, 1 << 30, NO_LIMIT, False, known_columns) is None
        assert scan(unparsed, 0, 1 << 30, NO_LIMIT, True, known_columns) is None


def test_known_columns_max_length(scan: Scan) -> None:
    parts = _known_parts([["1", "x" * 100]])
    data = bytearray(b"".join(parts))
    longest = max(map(len, parts))
    assert scan(data, 0, longest, NO_LIMIT, True, 2) is not None
    assert scan(data, 0, longest - 1, NO_LIMIT, True, 2) is None


def test_known_columns_default(scan: Scan) -> None:
    """-1, the default: a Describe was sent."""
    whole = bytearray(b"".join(BASE))
    assert scan(whole, 0, 1 << 30, NO_LIMIT, True, -1) == BASE_RESULT
    assert scan(whole, 0, 1 << 30, NO_LIMIT, True) == BASE_RESULT
    unparsed = whole[len(PARSE) :]
    assert scan(unparsed, 0, 1 << 30, NO_LIMIT, False, -1) == scan(
        unparsed, 0, 1 << 30, NO_LIMIT, False
    )
    # Neither a RowDescription nor NoData: not what a Describe gets.
    assert scan(bytearray(_k(D_AB, SELECT_1, READY)), 0, 1 << 30, NO_LIMIT, True, -1) is None
    assert scan(bytearray(_k(SELECT_1, READY)), 0, 1 << 30, NO_LIMIT, True, -1) is None


_INVALID_KNOWN = (-3, -4, -(2**31), -(2**63), -BIG)


_INVALID_KNOWN_MESSAGE = "scan_reply: known_columns must be -2, -1 or a column count"


def test_known_columns_invalid(scan: Scan) -> None:
    for known_columns in _INVALID_KNOWN:
        for data in (bytearray(b"".join(BASE)), bytearray(), b""):
            for pos in (0, BIG):
                with pytest.raises(ValueError, match=re.escape(_INVALID_KNOWN_MESSAGE)):
                    scan(data, pos, 1 << 30, NO_LIMIT, True, known_columns)
        # A negative pos is reported first.
        with pytest.raises(ValueError, match="pos must not be negative"):
            scan(bytearray(), -1, 1 << 30, NO_LIMIT, False, known_columns)


def test_known_columns_invalid_same_error(speedups: ModuleType) -> None:
    for known_columns in _INVALID_KNOWN:
        args = (bytearray(b"".join(BASE)), 0, 1 << 30, NO_LIMIT, True, known_columns)
        expected = outcome(py_scan_reply, *args)
        assert expected[0] == "raised"
        assert outcome(speedups.scan_reply, *args) == expected


def test_signature(speedups: ModuleType) -> None:
    with pytest.raises(TypeError, match="4 to 6"):
        speedups.scan_reply(bytearray(), 0, 1)
    with pytest.raises(TypeError, match="4 to 6"):
        speedups.scan_reply(bytearray(), 0, 1, 2, True, -1, 7)
    with pytest.raises(TypeError):
        speedups.scan_reply("not a buffer", 0, 1, 2)
    with pytest.raises(TypeError):
        speedups.scan_reply(bytearray(), "0", 1, 2)
    with pytest.raises(TypeError):
        speedups.scan_reply(bytearray(), 0, None, 2)
    for not_an_int in ("2", None, 2.0):
        with pytest.raises(TypeError):
            speedups.scan_reply(bytearray(), 0, 1, 2, True, not_an_int)
    parameters = list(inspect.signature(speedups.scan_reply).parameters.values())
    assert [p.name for p in parameters] == list(inspect.signature(py_scan_reply).parameters)
    assert [p.default for p in parameters[4:]] == [True, -1]
    assert all(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in parameters)


def test_rows_are_untracked(speedups: ModuleType) -> None:
    """As in parse_data_rows: tuples of str and None are left to no collector."""
    data = bytearray(b"".join(_parts(["a", "b"], [["1", None], ["x" * 20, "é"]])))
    result = speedups.scan_reply(data, 0, 1 << 30, NO_LIMIT)
    assert result is not None
    assert not any(gc.is_tracked(row) for row in result[2])
    data = bytearray(b"".join(_known_parts([["1", None], ["x" * 20, "é"]])))
    result = speedups.scan_reply(data, 0, 1 << 30, NO_LIMIT, True, 2)
    assert result is not None
    assert not any(gc.is_tracked(row) for row in result[2])


def test_binding() -> None:
    if _accel.IMPLEMENTATION == "c":
        compiled = importlib.import_module("postgres_async._speedups")
        assert _accel.scan_reply is compiled.scan_reply
    else:
        assert _accel.scan_reply is None
    if os.environ.get("POSTGRES_ASYNC_IMPL", "").strip().lower() == "c":
        assert _accel.scan_reply is not None


def test_no_leaks(speedups: ModuleType) -> None:
    buffers = [
        b"".join(_parts(["a", "b"], [["abc", None], ["x" * 30, "é"]] * 3)),
        _replace(3, D_AB, D_AB, _raw(b"D", _d_payload(_i32(1) + b"\xff", _i32(-1), count=2))),
        _replace(3, D_AB, _raw(b"D", _d_payload(_i32(-1), _i32(-3), count=2))),
        _replace(4, _raw(b"C", b"SELECT \xff\0")),
        b"".join(BASE)[:-1],
    ]
    for data in buffers:
        assert leaked_bytes(speedups.scan_reply, bytearray(data), 0, 1 << 30, NO_LIMIT) < 20000
    assert leaked_bytes(speedups.scan_reply, bytearray(buffers[0]), -1, 1 << 30, NO_LIMIT) < 20000
    known = [
        (b"".join(_known_parts([["abc", None], ["x" * 30, "é"]] * 3)), 2),
        (b"".join(_known_parts([[]] * 5)), 0),
        (b"".join(_known_parts([])), KNOWN_NO_ROWS),
        (_k(D_AB, D_AB, _D_NOT_UTF8, SELECT_1, READY), 2),
        (_k(D_AB, _ROW_1, SELECT_1, READY), 2),
        (b"".join(BASE), 2),
        (b"".join(BASE), -3),
    ]
    for data, known_columns in known:
        args = (bytearray(data), 0, 1 << 30, NO_LIMIT, True, known_columns)
        assert leaked_bytes(speedups.scan_reply, *args) < 20000


# ---------------------------------------------------------------------------------------
# hypothesis: round trips, mutations and arbitrary bytes


def _check_same(
    speedups: ModuleType,
    data: bytes,
    pos: int,
    max_length: int,
    limit: int,
    parsed: bool = True,
    known_columns: int = -1,
) -> Any:
    """Both give the same outcome; what they accept, the message path gives too."""
    buffer = bytearray(data)
    args = (buffer, pos, max_length, limit, parsed, known_columns)
    expected = outcome(py_scan_reply, *args)
    actual = outcome(speedups.scan_reply, *args)
    assert actual == expected
    assert buffer == data
    buffer.append(0)  # BufferError if the C code had kept its export
    if pos >= 0 and known_columns >= KNOWN_NO_ROWS:
        assert expected[0] == "value", expected  # never raises for any bytes
    elif pos >= 0:
        assert expected[0] == "raised", expected
        assert expected[1] == (ValueError, (_INVALID_KNOWN_MESSAGE,)), expected
    result = cast(Reply | None, expected[1]) if expected[0] == "value" else None
    mode = "described" if known_columns == -1 else "known columns"
    event(f"{mode}: {'ordinary' if result is not None else 'not'}")
    if result is None:
        return None
    if known_columns == -1:
        assert _message_by_message(data, pos, max_length, parsed) == result
        return result
    # Known columns: the message path, given the description it would have had.
    assert result[1] is None
    assert known_columns != KNOWN_NO_ROWS or result[2] == []
    assert all(len(row) == known_columns for row in result[2])
    described, added = _described(data, pos, parsed, known_columns, bool(result[2]))
    via = _message_by_message(described, pos, max(max_length, added), parsed)
    assert (via[0] - added, None, *via[2:]) == result
    return result


_names = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=6)
_columns = st.builds(
    ColumnMetadata,
    name=_names,
    pg_type_oid=st.integers(0, 2**32 - 1),
    table_oid=st.integers(0, 2**32 - 1),
    column_number=st.integers(-(2**15), 2**15 - 1),
    type_size=st.integers(-(2**15), 2**15 - 1),
    type_modifier=st.integers(-(2**31), 2**31 - 1),
    format=st.sampled_from([0, 1]),
)
_texts = st.one_of(
    st.text(max_size=8),
    st.text(st.characters(max_codepoint=0x7F), min_size=8, max_size=40),
    st.text(min_size=8, max_size=24),
)
_values = st.one_of(st.none(), _texts)


@st.composite
def _replies(
    draw: st.DrawFn, parsed: bool = True, described: bool = True
) -> tuple[list[bytes], Reply, int]:
    """(messages, result, known_columns) of a valid reply, encoded by the messages
    module; without ParseComplete unless ``parsed``. ``known_columns`` is what the
    statement's description says (-2: NoData); unless ``described`` that description
    is not among the messages nor in the result."""
    columns = draw(st.none() | st.lists(_columns, max_size=5).map(tuple))
    rows: list[tuple[str | None, ...]] = []
    if columns is not None:
        rows = draw(st.lists(st.tuples(*[_values] * len(columns)), max_size=6))
    tag = draw(st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"])))
    status = draw(st.sampled_from(list(TransactionStatus)))
    description = None if columns is None else m.RowDescription(columns).encode()
    parts = [
        *([PARSE] if parsed else []),
        BIND,
        *([NO_DATA if description is None else description] if described else []),
        *(
            m.DataRow(tuple(None if v is None else v.encode() for v in row)).encode()
            for row in rows
        ),
        m.CommandComplete(tag).encode(),
        m.ReadyForQuery(status).encode(),
    ]
    size = sum(len(p) for p in parts)
    result: Reply = (
        size,
        None if description is None or not described else description[5:],
        rows,
        tag,
        ord(status.value),
    )
    return parts, result, KNOWN_NO_ROWS if columns is None else len(columns)


@SETTINGS
@given(
    parsed=st.booleans(),
    described=st.booleans(),
    data=st.data(),
    prefix=st.binary(max_size=6),
    suffix=st.binary(max_size=6),
)
def test_round_trip(
    speedups: ModuleType,
    parsed: bool,
    described: bool,
    data: st.DataObject,
    prefix: bytes,
    suffix: bytes,
) -> None:
    parts, result, known = data.draw(_replies(parsed, described))
    known_columns = -1 if described else known
    whole = prefix + b"".join(parts) + suffix
    start = len(prefix)
    expected = (start + result[0], *result[1:])
    rows = len(result[2])
    assert _check_same(speedups, whole, start, 1 << 30, rows, parsed, known_columns) == expected
    longest = max(map(len, parts))
    assert _check_same(speedups, whole, start, longest, NO_LIMIT, parsed, known_columns) == expected
    assert _check_same(speedups, whole, start, 1 << 30, rows - 1, parsed, known_columns) is None
    # Not the other shapes.
    assert _check_same(speedups, whole, start, 1 << 30, rows, not parsed, known_columns) is None
    if described:
        assert _check_same(speedups, whole, start, 1 << 30, rows, parsed, known) is None
    else:
        assert _check_same(speedups, whole, start, 1 << 30, rows, parsed, -1) is None
        if rows:
            for other in (KNOWN_NO_ROWS, known + 1, *([known - 1] if known else [])):
                assert _check_same(speedups, whole, start, 1 << 30, rows, parsed, other) is None
        else:  # no rows fit any count, and "no rows"
            for other in (KNOWN_NO_ROWS, 0, 1, 7, 65536, BIG):
                assert _check_same(speedups, whole, start, 1 << 30, rows, parsed, other) == expected
    cut = whole[: expected[0] - 1]  # without the status byte
    assert _check_same(speedups, cut, start, 1 << 30, rows, parsed, known_columns) is None


_interesting_lengths = st.sampled_from([-(2**31), -1, 0, 3, 4, 5, 6, 7, 8, 30000, 30001, MAX_INT32])


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[bytes, int]:
    """(bytes, known_columns): a valid reply, described or not, mutated; known_columns
    is -1 for a described one, else what its statement's description says."""
    described = draw(st.booleans())
    parts, _, known = draw(_replies(described=described))
    parts = list(parts)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(
            st.sampled_from(["flip", "insert", "delete", "length", "message", "drop", "swap"])
        )
        data = b"".join(parts)
        if action == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            bit = draw(st.integers(1, 255))
            data = data[:at] + bytes([data[at] ^ bit]) + data[at + 1 :]
            parts = [data]
        elif action == "insert":
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
            parts = [data]
        elif action == "delete" and data:
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + data[at + draw(st.integers(1, 4)) :]
            parts = [data]
        elif action == "length" and len(parts) > 1:
            i = draw(st.integers(0, len(parts) - 1))
            part = parts[i]
            length = len(part) - 1 + draw(st.integers(-3, 3))
            if draw(st.booleans()):
                length = draw(_interesting_lengths)
            parts[i] = part[:1] + _i32(length) + part[5:]
        elif action == "message" and len(parts) > 1:
            i = draw(st.integers(0, len(parts)))
            extra = draw(
                st.sampled_from(
                    [
                        *_FOREIGN.values(),
                        PARSE,
                        BIND,
                        NO_DATA,
                        T_AB,
                        _T_NONE,
                        D_AB,
                        _ROW_0,
                        _ROW_1,
                        SELECT_1,
                        READY,
                    ]
                )
            )
            parts.insert(i, extra)
        elif action == "drop" and len(parts) > 1:
            del parts[draw(st.integers(0, len(parts) - 1))]
        elif action == "swap" and len(parts) > 1:
            i = draw(st.integers(0, len(parts) - 2))
            parts[i], parts[i + 1] = parts[i + 1], parts[i]
    return b"".join(parts), -1 if described else known


_max_lengths = st.one_of(
    st.just(1 << 30), st.integers(-2, 80), st.just(MAX_INT32 + 1), st.just(BIG), st.just(-BIG)
)
_row_limits = st.one_of(st.just(NO_LIMIT), st.integers(-2, 8), st.just(BIG), st.just(-BIG))
# Mostly the valid ones; the invalid ones must raise the same ValueError in both.
_known_columns = st.one_of(
    st.sampled_from([-2, -1, 0, 1, 2, 3]),
    st.integers(-2, 8),
    st.sampled_from([65535, 65536, 2**32 + 2, BIG]),
    st.sampled_from([-3, -(2**63), -BIG]),
)


@SETTINGS
@given(
    mutated=_mutated(),
    pos=st.one_of(st.just(0), st.integers(0, 12), st.just(BIG), st.just(-1)),
    max_length=st.one_of(st.just(1 << 30), _max_lengths),
    row_limit=st.one_of(st.just(NO_LIMIT), _row_limits),
    parsed=st.booleans(),
    known_columns=_known_columns,
)
def test_mutated_replies(
    speedups: ModuleType,
    mutated: tuple[bytes, int],
    pos: int,
    max_length: int,
    row_limit: int,
    parsed: bool,
    known_columns: int,
) -> None:
    data, known = mutated
    _check_same(speedups, data, 0, 1 << 30, NO_LIMIT, True, known)
    _check_same(speedups, data, 0, 1 << 30, NO_LIMIT, False, known)
    # With ParseComplete cut off, the same reply is one of the "not parsed" kind.
    _check_same(speedups, data, 5, 1 << 30, NO_LIMIT, False, known)
    _check_same(speedups, data, pos, max_length, row_limit, parsed)
    _check_same(speedups, data, pos, max_length, row_limit, parsed, known_columns)


_openings = st.sampled_from(
    [
        b"",
        PARSE,
        PARSE + BIND,
        PARSE + BIND + b"n\0\0\0\x04",
        PARSE + BIND + T_AB,
        PARSE + BIND + b"T",
        PARSE + BIND + D_AB,
        PARSE + BIND + _ROW_0,
        PARSE + BIND + b"D",
        PARSE + BIND + b"C",
    ]
)


@SETTINGS
@given(
    opening=_openings,
    rest=st.binary(max_size=80),
    pos=st.integers(0, 100) | st.just(BIG),
    max_length=_max_lengths,
    row_limit=_row_limits,
    known_columns=_known_columns,
)
def test_arbitrary_bytes(
    speedups: ModuleType,
    opening: bytes,
    rest: bytes,
    pos: int,
    max_length: int,
    row_limit: int,
    known_columns: int,
) -> None:
    _check_same(speedups, opening + rest, 0, max_length, row_limit)
    _check_same(speedups, opening + rest, pos, max_length, row_limit)
    _check_same(speedups, opening + rest, pos, max_length, row_limit, False)
    _check_same(speedups, opening + rest, 0, max_length, row_limit, True, known_columns)
    _check_same(speedups, opening + rest, 5, max_length, row_limit, False, known_columns)
    _check_same(speedups, opening + rest, pos, max_length, row_limit, False, known_columns)
