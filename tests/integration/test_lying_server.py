"""A lying server: every malformed reply ends in a clear error, a dead connection, no hang.

Issue 3, "Lying server". A scripted fake server (no real PostgreSQL needed) sends what
no honest server would: lengths that cannot be, strings without their NUL, invalid
UTF-8, messages out of order or unasked for, a TLS reply followed by plaintext. Each
test asserts

* the error: a ``PgasyncError`` with SQLSTATE 08P01 (protocol violation), or 08003 when
  the stream simply ends inside a message, naming what was wrong;
* the time: it comes within ``BOUND`` seconds, although the fake server would keep the
  socket open far longer (a client that waited for a body it was promised would hang);
* the state: ``Failed`` with that error, ``close_finished``/``close`` raise it, a further
  query raises 08003 "previously-failed" (or, at login, ``connect`` raises);
* the socket: none left open (``open_socket_count`` before and after);
* the wire: nothing was sent that should not have been (no Terminate or retry after a
  failure, no password after a lying auth exchange, no CopyData for a COPY nobody asked
  for, no StartupMessage in plaintext after ``S``).

Where the protocol allows what the server did (an ErrorResponse whose text is not valid
UTF-8, a CopyInResponse to a query that did not ask for COPY), the connection must stay
usable, and the tests say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest

import postgres_async as pg
from postgres_async import PostgresField
from postgres_async.protocol import messages as m
from support import (
    assert_same_error,
    close_error,
    close_finished_error,
    ignore_row,
    open_socket_count,
    query_error,
    status_of,
)
from support.fake_server import (
    Call,
    Expect,
    ExpectBytes,
    FakeServer,
    ReadAny,
    Send,
    ServerConnection,
    Step,
    WaitForClose,
    expect_query,
    login_ok,
)

PROTOCOL_VIOLATION = "08P01"
CONNECTION_DOES_NOT_EXIST = "08003"
UNABLE_TO_CONNECT = "08001"
PREVIOUSLY_FAILED = "query issued against previously-failed connection"
ASYNCHRONOUS_ERROR = "ErrorResponse received asynchronously, assuming connection is dead"
DUMMY = "SELECT lie"
# Every failure below must be reported within this many seconds. The fake server keeps
# a connection open for up to STEP_TIMEOUT, so only the client's own judgement of the
# bytes it got can end these tests in time.
BOUND = 2.0
STEP_TIMEOUT = 8.0
# Negative length fields: -1 (0xFFFFFFFF) and the most negative int32 (0x80000000).
NONSENSE_LENGTHS = (0, 1, 2, 3, -1, -(2**31))
PASSWORD = "not-the-password"  # the fake server never checks it


# ----------------------------------------------------------------------- raw bytes
def header(type_byte: bytes, length: int) -> bytes:
    """A message header with any length field, including ones no int32 packer allows."""
    return type_byte + (length & 0xFFFFFFFF).to_bytes(4, "big")


def frame(type_byte: bytes, payload: bytes) -> bytes:
    """A message with an honest length field and any payload."""
    return header(type_byte, len(payload) + 4) + payload


def data_row(*values: bytes | None) -> bytes:
    return m.DataRow(tuple(values)).encode()


PARSE_COMPLETE = m.ParseComplete().encode()
BIND_COMPLETE = m.BindComplete().encode()
NO_DATA = m.NoData().encode()
PARSED = PARSE_COMPLETE + BIND_COMPLETE
ONE_COLUMN = m.RowDescription((pg.ColumnMetadata("a", 25),)).encode()
TWO_COLUMNS = m.RowDescription((pg.ColumnMetadata("a", 25), pg.ColumnMetadata("b", 25))).encode()
SELECT_1 = m.CommandComplete("SELECT 1").encode()
READY = m.ReadyForQuery(m.TransactionStatus.IDLE).encode()
AUTH_OK = m.AuthenticationOk().encode()
KEY = m.BackendKeyData(4242, 0x5EC2E7).encode()
# A whole good answer to one query: one row, "ok".
GOOD_REPLY = PARSED + ONE_COLUMN + data_row(b"ok") + SELECT_1 + READY


def error_response(**fields: str) -> bytes:
    defaults = {"S": "ERROR", "V": "ERROR", "C": "42601", "M": "lie"}
    return m.ErrorResponse({**defaults, **fields}).encode()


def frontend_types(raw: bytes, untyped: int = 1) -> list[bytes]:
    """The type bytes of the typed messages in ``raw`` (after ``untyped`` startup-phase
    packets: the StartupMessage, or SSLRequest then StartupMessage)."""
    pos = 0
    for _ in range(untyped):
        (length,) = struct.unpack_from("!i", raw, pos)
        pos += length
    types: list[bytes] = []
    while pos < len(raw):
        (length,) = struct.unpack_from("!i", raw, pos + 1)
        types.append(raw[pos : pos + 1])
        pos += 1 + length
    assert pos == len(raw), f"the client sent a message cut short: {raw[-16:]!r}"
    return types


# ------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def note(text: str) -> Iterator[None]:
    """Add ``text`` to any exception raised inside (which case of a loop failed)."""
    try:
        yield
    except BaseException as exc:
        exc.add_note(text)
        raise


def assert_error(error: pg.PgasyncError, code: str, *texts: str) -> None:
    assert error.postgres_error_code == code, str(error)
    for text in texts:
        assert text in str(error), f"{text!r} not in {str(error)!r}"


async def assert_dead(conn: pg.Connection, original: pg.PgasyncError) -> None:
    """Failed for ``original``: queries refused with 08003, close/close_finished raise it,
    resources released."""
    status = status_of(conn)
    assert isinstance(status, pg.Failed), status
    assert_same_error(status.error, original)
    error = await query_error(conn, "SELECT after_failure", within=BOUND)
    assert_error(error, CONNECTION_DOES_NOT_EXIST, PREVIOUSLY_FAILED, str(original))
    assert_same_error(await close_finished_error(conn, within=BOUND), original)
    assert_same_error(await close_error(conn, within=BOUND), original)
    status = status_of(conn)
    assert isinstance(status, pg.Failed)
    assert status.resources_released


def startup_only(server_conn: ServerConnection) -> None:
    """The client sent its StartupMessage and nothing else."""
    startup = server_conn.received[0]
    assert isinstance(startup, m.StartupMessage)
    assert bytes(server_conn.raw) == startup.encode()


async def login_failure(
    steps: Sequence[Step], *, then_eof: bool = False, **connect_extra: Any
) -> tuple[pg.PgasyncError, ServerConnection]:
    """``connect`` against a server that runs ``steps`` after the StartupMessage; the
    PgasyncError it raises (within BOUND) and what the server received. Leaves no socket
    open."""
    script: list[Step] = [Expect(m.StartupMessage), *steps]
    if not then_eof:
        script.append(WaitForClose())
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await pg.connect(**server.connect_kwargs(**connect_extra))
    assert open_socket_count() == sockets_before
    return info.value, server.connections[0]


async def query_failure(
    reply: bytes, *, then_eof: bool = False, **connect_extra: Any
) -> pg.PgasyncError:
    """One query answered by ``reply``: it must fail the connection within BOUND, and
    afterwards the client sends nothing at all (no Terminate, no second query)."""
    script: list[Step] = [*login_ok(), *expect_query(), Send(reply)]
    if not then_eof:
        script.append(WaitForClose())
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs(**connect_extra))
        error = await query_error(conn, DUMMY, within=BOUND)
        assert f'"{DUMMY}"' in str(error)  # the query is named
        await assert_dead(conn, error)
    assert open_socket_count() == sockets_before
    received = server.connections[0].received
    assert received[6:] == [], f"sent after the failure: {received[6:]!r}"
    assert frontend_types(bytes(server.connections[0].raw)) == [b"P", b"B", b"D", b"E", b"S"]
    return error


async def idle_failure(data: bytes, **connect_extra: Any) -> pg.PgasyncError:
    """``data`` sent to an idle, logged-in connection (once ``connect`` has returned):
    the connection must fail by itself, noticed by ``close_finished`` within BOUND,
    having sent nothing after the StartupMessage."""
    logged_in = asyncio.Event()

    async def wait_for_login(_conn: ServerConnection) -> None:
        await logged_in.wait()

    script: list[Step] = [*login_ok(), Call(wait_for_login), Send(data), WaitForClose()]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs(**connect_extra))
        assert isinstance(status_of(conn), pg.Open)
        logged_in.set()
        error = await close_finished_error(conn, within=BOUND)
        await assert_dead(conn, error)
    assert open_socket_count() == sockets_before
    startup_only(server.connections[0])
    return error


# ============================================================ every length field wrong
# Where a message of each type can come during login: what precedes it.
LOGIN_PREFIX: dict[str, bytes] = {
    "R": b"",
    "E": b"",
    "v": b"",
    "N": AUTH_OK,
    "K": AUTH_OK,
    "S": AUTH_OK + KEY,
    "Z": AUTH_OK + KEY,
}


# Each test below tries every nonsense length in turn (one fake server each): one test
# per message type keeps the file fast, and a failure names its length in a note.
@pytest.mark.parametrize("type_char", list(LOGIN_PREFIX))
async def test_nonsense_length_during_login(type_char: str) -> None:
    for length in NONSENSE_LENGTHS:
        with note(f"length field {length}"):
            data = LOGIN_PREFIX[type_char] + header(type_char.encode(), length)
            error, server_conn = await login_failure([Send(data)])
            assert_error(error, PROTOCOL_VIOLATION, f"Nonsense message length in header: {length}")
            startup_only(server_conn)


# Where a message of each type can come in the answer to one query: what precedes it.
QUERY_PREFIX: dict[str, bytes] = {
    "1": b"",
    "E": b"",
    "2": PARSE_COMPLETE,
    "n": PARSED,
    "T": PARSED,
    "S": PARSED,
    "N": PARSED,
    "A": PARSED,
    "D": PARSED + ONE_COLUMN,
    "C": PARSED + NO_DATA,
    "Z": PARSED + NO_DATA + SELECT_1,
}


@pytest.mark.parametrize("type_char", list(QUERY_PREFIX))
async def test_nonsense_length_during_a_query(type_char: str) -> None:
    for length in NONSENSE_LENGTHS:
        with note(f"length field {length}"):
            reply = QUERY_PREFIX[type_char] + header(type_char.encode(), length)
            error = await query_failure(reply)
            assert_error(error, PROTOCOL_VIOLATION, f"Nonsense message length in header: {length}")


@pytest.mark.parametrize("type_char", ["S", "A", "N", "E", "Z"])
async def test_nonsense_length_while_idle(type_char: str) -> None:
    for length in NONSENSE_LENGTHS:
        with note(f"length field {length}"):
            error = await idle_failure(header(type_char.encode(), length))
            assert_error(error, PROTOCOL_VIOLATION, f"Nonsense message length in header: {length}")


# A length field larger than what follows, then EOF: the message was cut short, which
# is a lost connection (08003) like upstream's "Unexpected EOF", not a protocol error.
LOGIN_CUT_SHORT: dict[str, tuple[bytes, int]] = {
    # name: (bytes, how many of them are unconsumed at EOF)
    "R": (header(b"R", 16) + b"\0\0\0", 8),
    "K": (AUTH_OK + header(b"K", 12) + b"\0\0\x10\x92", 9),
    "S": (AUTH_OK + KEY + header(b"S", 400) + b"server_version\0", 20),
    "E": (header(b"E", 1000) + b"SFATAL\0", 12),
}


@pytest.mark.parametrize("case", list(LOGIN_CUT_SHORT))
async def test_length_beyond_the_stream_during_login(case: str) -> None:
    data, unconsumed = LOGIN_CUT_SHORT[case]
    error, server_conn = await login_failure([Send(data)], then_eof=True)
    assert_error(
        error, CONNECTION_DOES_NOT_EXIST, f"Unexpected EOF (unconsumed_bytes {unconsumed})"
    )
    startup_only(server_conn)


QUERY_CUT_SHORT: dict[str, tuple[bytes, int]] = {
    "1": (header(b"1", 4)[:3], 3),
    "T": (PARSED + header(b"T", 50) + b"\0\x01", 7),
    "D": (PARSED + ONE_COLUMN + header(b"D", 100) + b"\0\x01\0\0\0\x05", 11),
    "D after rows": (
        PARSED + ONE_COLUMN + data_row(b"x") * 3 + header(b"D", 100) + b"\0\x01",
        7,
    ),
    "C": (PARSED + NO_DATA + header(b"C", 20) + b"SELECT", 11),
    "E": (PARSE_COMPLETE + header(b"E", 1000) + b"SERROR\0", 12),
    "Z": (PARSED + NO_DATA + SELECT_1 + header(b"Z", 5), 5),
}


@pytest.mark.parametrize("case", list(QUERY_CUT_SHORT))
async def test_length_beyond_the_stream_during_a_query(case: str) -> None:
    data, unconsumed = QUERY_CUT_SHORT[case]
    error = await query_failure(data, then_eof=True)
    assert_error(
        error, CONNECTION_DOES_NOT_EXIST, f"Unexpected EOF (unconsumed_bytes {unconsumed})"
    )


# Longer than max_message_length=4096: refused from the header, before any body comes
# (the fake server never sends one: a client waiting for it would hang).
MAX_LENGTH = 4096
CLAIMED = 5000


@pytest.mark.parametrize(
    "prefix_and_type",
    [
        pytest.param((PARSED + ONE_COLUMN, b"D"), id="D"),
        pytest.param((PARSED + ONE_COLUMN + data_row(b"x") * 2, b"D"), id="D after rows"),
        pytest.param((PARSED, b"T"), id="T"),
        pytest.param((PARSE_COMPLETE, b"E"), id="E"),
        pytest.param((PARSED, b"N"), id="N"),
        pytest.param((PARSED, b"A"), id="A"),
        pytest.param((PARSED, b"S"), id="S"),
    ],
)
async def test_longer_than_max_message_length_during_a_query(
    prefix_and_type: tuple[bytes, bytes],
) -> None:
    prefix, type_byte = prefix_and_type
    error = await query_failure(prefix + header(type_byte, CLAIMED), max_message_length=MAX_LENGTH)
    assert_error(error, PROTOCOL_VIOLATION, "Message too long", f"message_length {CLAIMED + 1}")


@pytest.mark.parametrize("type_char", ["E", "R", "S", "N"])
async def test_longer_than_max_message_length_during_login(type_char: str) -> None:
    prefix = b"" if type_char in "ER" else AUTH_OK
    error, server_conn = await login_failure(
        [Send(prefix + header(type_char.encode(), CLAIMED))], max_message_length=MAX_LENGTH
    )
    assert_error(error, PROTOCOL_VIOLATION, "Message too long", f"message_length {CLAIMED + 1}")
    startup_only(server_conn)


async def test_longer_than_max_message_length_while_idle() -> None:
    error = await idle_failure(header(b"A", CLAIMED), max_message_length=MAX_LENGTH)
    assert_error(error, PROTOCOL_VIOLATION, "Message too long", f"message_length {CLAIMED + 1}")


def row_of_total_size(size: int) -> bytes:
    """A one-column DataRow whose whole frame (type byte included) is ``size`` bytes."""
    row = data_row(b"v" * (size - 11))
    assert len(row) == size
    return row


async def test_a_message_of_exactly_max_message_length_is_accepted() -> None:
    row = row_of_total_size(MAX_LENGTH)
    rows: list[tuple[str | None, ...]] = []

    def handle_row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
        rows.append(values)

    script: list[Step] = [
        *login_ok(),
        *expect_query(),
        Send(PARSED + ONE_COLUMN + row + SELECT_1 + READY),
        Expect(m.Terminate),
    ]
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs(max_message_length=MAX_LENGTH))
        async with asyncio.timeout(BOUND):
            await conn.query(DUMMY, handle_row=handle_row)
        assert rows == [("v" * (MAX_LENGTH - 11),)]
        await conn.close()
    assert status_of(conn) == pg.ClosedGracefully()


async def test_a_message_one_byte_over_max_message_length_is_refused() -> None:
    row = row_of_total_size(MAX_LENGTH + 1)
    error = await query_failure(PARSED + ONE_COLUMN + row[:5], max_message_length=MAX_LENGTH)
    assert_error(error, PROTOCOL_VIOLATION, "Message too long", f"message_length {MAX_LENGTH + 1}")


# A type whose honest messages are short, claiming 30001 bytes (libpq's rule): refused
# from the header alone, no body sent.
SHORT_TYPE_LIE = 30001


@pytest.mark.parametrize("type_char", ["Z", "C", "S", "1", "n", "2"])
async def test_short_message_type_claiming_too_much_during_a_query(type_char: str) -> None:
    error = await query_failure(
        QUERY_PREFIX[type_char] + header(type_char.encode(), SHORT_TYPE_LIE)
    )
    assert_error(error, PROTOCOL_VIOLATION, repr(type_char), str(SHORT_TYPE_LIE))


@pytest.mark.parametrize("type_char", ["R", "K", "S", "Z", "v"])
async def test_short_message_type_claiming_too_much_during_login(type_char: str) -> None:
    data = LOGIN_PREFIX[type_char] + header(type_char.encode(), SHORT_TYPE_LIE)
    error, server_conn = await login_failure([Send(data)])
    assert_error(error, PROTOCOL_VIOLATION, repr(type_char), str(SHORT_TYPE_LIE))
    startup_only(server_conn)


@pytest.mark.parametrize("type_char", ["S", "Z", "C", "K"])
async def test_short_message_type_claiming_too_much_while_idle(type_char: str) -> None:
    error = await idle_failure(header(type_char.encode(), SHORT_TYPE_LIE))
    assert_error(error, PROTOCOL_VIOLATION, repr(type_char), str(SHORT_TYPE_LIE))


async def test_short_message_type_at_the_limit_is_accepted() -> None:
    tag = "T" * (30000 - 5)  # length field 30000: 4 + tag + NUL
    complete = m.CommandComplete(tag).encode()
    assert complete[1:5] == (30000).to_bytes(4, "big")
    script: list[Step] = [
        *login_ok(),
        *expect_query(),
        Send(PARSED + NO_DATA + complete + READY),
        Expect(m.Terminate),
    ]
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())
        async with asyncio.timeout(BOUND):
            result = await conn.query_expect_no_data(DUMMY)
        assert result == pg.CommandComplete(tag, None)
        await conn.close()


# Exact-size types with another size (sent with a body of that size).
async def test_ready_for_query_of_length_6_during_a_query() -> None:
    error = await query_failure(QUERY_PREFIX["Z"] + header(b"Z", 6) + b"II")
    assert_error(error, PROTOCOL_VIOLATION, "'Z'", "impossible length 6")


async def test_ready_for_query_of_length_6_during_login() -> None:
    error, server_conn = await login_failure([Send(AUTH_OK + KEY + header(b"Z", 6) + b"II")])
    assert_error(error, PROTOCOL_VIOLATION, "'Z'", "impossible length 6")
    startup_only(server_conn)


@pytest.mark.parametrize("length", [8, 16, 11, 13])
async def test_backend_key_data_of_the_wrong_size(length: int) -> None:
    data = AUTH_OK + header(b"K", length) + b"\x01" * (length - 4) + READY
    error, server_conn = await login_failure([Send(data)])
    assert_error(error, PROTOCOL_VIOLATION, "'K'", f"impossible length {length}")
    startup_only(server_conn)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(PARSE_COMPLETE + header(b"2", 5) + b"\0", id="BindComplete 5"),
        pytest.param(PARSED + header(b"n", 8) + b"\0" * 4, id="NoData 8"),
        pytest.param(header(b"1", 5) + b"\0", id="ParseComplete 5"),
    ],
)
async def test_empty_message_types_with_a_body(reply: bytes) -> None:
    error = await query_failure(reply)
    assert_error(error, PROTOCOL_VIOLATION, "impossible length")


# A length field too small for the content: the rest is read as the next message.
async def test_length_smaller_than_the_content() -> None:
    # "C" claiming 6 bytes: payload "SE", no NUL; the rest ("LECT 1\0") never parses.
    reply = PARSED + NO_DATA + header(b"C", 6) + b"SELECT 1\0" + READY
    error = await query_failure(reply)
    assert_error(error, PROTOCOL_VIOLATION, "CommandComplete", "NUL")


async def test_wrong_length_during_copy_in_stops_the_feeder() -> None:
    """A lie while COPY data is flowing: the feeder (here inside the caller's async
    generator, waiting) is stopped, nothing but CopyData went out, no task is left."""
    produced = 0

    async def feed() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            yield b"1\n"
            await asyncio.sleep(0.02)

    script: list[Step] = [
        *login_ok(),
        *expect_query(),
        Send(PARSED + NO_DATA + COPY_IN_RESPONSE),
        ExpectBytes(len(frame(b"d", b"1\n"))),  # some data has flowed
        Send(header(b"Z", SHORT_TYPE_LIE)),
        WaitForClose(),
    ]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await conn.copy_in_raw("COPY t FROM STDIN", feed_data=feed())
        error = info.value
        assert_error(error, PROTOCOL_VIOLATION, "'Z'", str(SHORT_TYPE_LIE))
        await assert_dead(conn, error)
        produced_at_failure = produced
        await asyncio.sleep(0.1)
        assert produced == produced_at_failure  # the generator is no longer pulled
    assert open_socket_count() == sockets_before
    sent = frontend_types(bytes(server.connections[0].raw))
    assert sent[:5] == [b"P", b"B", b"D", b"E", b"S"]
    assert len(sent) > 5
    assert set(sent[5:]) == {b"d"}  # no CopyDone, CopyFail, Sync or Terminate


async def test_wrong_length_behind_rows_held_by_pushback() -> None:
    """Rows already read are delivered one pushback at a time; the lie behind them is
    judged once reading resumes, and the query fails then (not hangs)."""
    rows: list[tuple[str | None, ...]] = []
    loop = asyncio.get_running_loop()

    def handle_row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
        rows.append(values)

    def pushback() -> asyncio.Future[None]:
        future: asyncio.Future[None] = loop.create_future()
        loop.call_later(0.02, future.set_result, None)
        return future

    reply = PARSED + ONE_COLUMN + data_row(b"1") + data_row(b"2") + data_row(b"3")
    script: list[Step] = [*login_ok(), *expect_query(), Send(reply + header(b"D", 3))]
    script.append(WaitForClose())
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await conn.query(DUMMY, handle_row=handle_row, pushback=pushback)
        error = info.value
        assert_error(error, PROTOCOL_VIOLATION, "Nonsense message length in header: 3")
        assert rows == [("1",), ("2",), ("3",)]
        await assert_dead(conn, error)
    assert open_socket_count() == sockets_before
    assert server.connections[0].received[6:] == []


# ================================================================= DataRow lies
async def test_data_row_before_row_description() -> None:
    error = await query_failure(PARSED + NO_DATA + data_row(b"x") + SELECT_1 + READY)
    assert_error(error, PROTOCOL_VIOLATION, "Unexpected message type DataRow", "Executing")


async def test_data_row_instead_of_row_description() -> None:
    error = await query_failure(PARSED + data_row(b"x") + SELECT_1 + READY)
    assert_error(error, PROTOCOL_VIOLATION, "Unexpected message type DataRow", "Describing")


@pytest.mark.parametrize("count", [0, 1, 3, 0xFFFF])
async def test_data_row_with_the_wrong_column_count(count: int) -> None:
    # Two columns described; the DataRow claims ``count`` (with as many values, as far
    # as 3; 0xFFFF with none).
    values = struct.pack("!H", count) + b"".join(
        struct.pack("!i", 1) + b"v" for _ in range(min(count, 3))
    )
    error = await query_failure(PARSED + TWO_COLUMNS + frame(b"D", values) + SELECT_1 + READY)
    assert_error(
        error,
        PROTOCOL_VIOLATION,
        "number of columns in DataRow message did not match RowDescription",
        f"expected 2, got {count}",
    )


async def test_the_rows_before_a_bad_data_row_are_delivered_exactly_once() -> None:
    rows: list[tuple[str | None, ...]] = []

    def handle_row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
        rows.append(values)

    good = data_row(b"1") + data_row(b"2") + data_row(None)
    reply = PARSED + ONE_COLUMN + good + data_row(b"a", b"b") + data_row(b"3") + SELECT_1 + READY
    script: list[Step] = [*login_ok(), *expect_query(), Send(reply), WaitForClose()]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await conn.query(DUMMY, handle_row=handle_row)
        error = info.value
        assert_error(error, PROTOCOL_VIOLATION, "number of columns in DataRow")
        assert rows == [("1",), ("2",), (None,)]
        await assert_dead(conn, error)
    assert open_socket_count() == sockets_before
    assert server.connections[0].received[6:] == []


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        # One column, claiming 100 bytes, 1 present.
        pytest.param(b"\0\x01" + struct.pack("!i", 100) + b"x", "truncated column", id="100"),
        pytest.param(
            b"\0\x01" + struct.pack("!i", 0x7FFFFFFF) + b"x", "truncated column", id="2**31-1"
        ),
        pytest.param(b"\0\x01" + struct.pack("!i", -2) + b"x", "column length -2", id="-2"),
        pytest.param(
            b"\0\x01" + struct.pack("!i", -(2**31)), f"column length {-(2**31)}", id="-2**31"
        ),
        # The column length itself cut short by the message's end.
        pytest.param(b"\0\x01\0\0", "truncated column", id="cut length"),
        pytest.param(b"\0\x01" + struct.pack("!i", 1) + b"xy", "trailing bytes", id="trailing"),
        pytest.param(b"\0", "needed 2 more bytes", id="count cut"),
    ],
)
async def test_data_row_column_overruns_the_message(payload: bytes, text: str) -> None:
    error = await query_failure(PARSED + ONE_COLUMN + frame(b"D", payload) + SELECT_1 + READY)
    assert_error(error, PROTOCOL_VIOLATION, "DataRow", text)


# ======================================================= C strings without their NUL
async def test_command_complete_tag_without_terminator() -> None:
    error = await query_failure(PARSED + NO_DATA + frame(b"C", b"SELECT 1") + READY)
    assert_error(error, PROTOCOL_VIOLATION, "CommandComplete", "without a NUL terminator")


async def test_command_complete_tag_without_terminator_after_rows() -> None:
    reply = PARSED + ONE_COLUMN + data_row(b"x") + frame(b"C", b"SELECT 1") + READY
    error = await query_failure(reply)
    assert_error(error, PROTOCOL_VIOLATION, "CommandComplete", "without a NUL terminator")


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"TimeZone\0UTC", id="value"),
        pytest.param(b"TimeZone", id="name"),
    ],
)
async def test_parameter_status_without_terminator_during_login(payload: bytes) -> None:
    error, server_conn = await login_failure([Send(AUTH_OK + KEY + frame(b"S", payload) + READY)])
    assert_error(error, PROTOCOL_VIOLATION, "ParameterStatus", "without a NUL terminator")
    startup_only(server_conn)


async def test_parameter_status_without_terminator_while_idle() -> None:
    error = await idle_failure(frame(b"S", b"TimeZone\0UTC"))
    assert_error(error, PROTOCOL_VIOLATION, "ParameterStatus", "without a NUL terminator")


async def test_parameter_status_without_terminator_during_a_query() -> None:
    error = await query_failure(PARSED + frame(b"S", b"TimeZone\0UTC") + NO_DATA + SELECT_1 + READY)
    assert_error(error, PROTOCOL_VIOLATION, "ParameterStatus", "without a NUL terminator")


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        pytest.param(b"SERROR\0C42601\0Mno terminator", "without a NUL terminator", id="field"),
        pytest.param(b"SERROR\0C42601\0Mno end of fields\0", "needed 1 more bytes", id="list"),
    ],
)
async def test_error_response_without_terminator_during_a_query(payload: bytes, text: str) -> None:
    error = await query_failure(PARSE_COMPLETE + frame(b"E", payload) + READY)
    assert_error(error, PROTOCOL_VIOLATION, "ErrorResponse", text)


async def test_error_response_without_terminator_during_login() -> None:
    error, server_conn = await login_failure([Send(frame(b"E", b"SFATAL\0C28P01\0Mno end"))])
    assert_error(error, PROTOCOL_VIOLATION, "ErrorResponse", "without a NUL terminator")
    startup_only(server_conn)


async def test_error_response_without_terminator_while_idle() -> None:
    error = await idle_failure(frame(b"E", b"SFATAL\0C57P01\0Mbye"))
    assert_error(error, PROTOCOL_VIOLATION, "ErrorResponse", "without a NUL terminator")


async def test_row_description_name_without_terminator() -> None:
    error = await query_failure(PARSED + frame(b"T", b"\0\x01column") + SELECT_1 + READY)
    assert_error(error, PROTOCOL_VIOLATION, "RowDescription", "without a NUL terminator")


async def test_notification_channel_without_terminator_while_idle() -> None:
    error = await idle_failure(frame(b"A", struct.pack("!i", 77) + b"channel"))
    assert_error(error, PROTOCOL_VIOLATION, "NotificationResponse", "without a NUL terminator")


async def test_sasl_mechanism_list_without_terminator() -> None:
    payload = struct.pack("!i", 10) + b"SCRAM-SHA-256\0"  # the list's final NUL missing
    error, server_conn = await login_failure([Send(frame(b"R", payload))], password=PASSWORD)
    assert_error(error, PROTOCOL_VIOLATION, "AuthenticationRequest", "without a NUL terminator")
    startup_only(server_conn)


# ================================================================== invalid UTF-8
BAD_UTF8 = b"caf\xc3 \xff\xfe"  # a cut sequence and two bytes UTF-8 never uses


@pytest.mark.parametrize("field", ["M", "D", "S", "C"])
async def test_error_response_with_invalid_utf8_during_a_query(field: str) -> None:
    """An ErrorResponse's text is shown with replacement characters: the error is the
    server's (a query error, not a protocol violation) and the connection stays usable.
    """
    fields = {"S": b"ERROR", "V": b"ERROR", "C": b"42601", "M": b"syntax error", "D": b"d"}
    fields[field] = BAD_UTF8
    payload = b"".join(k.encode() + v + b"\0" for k, v in fields.items()) + b"\0"
    expected = BAD_UTF8.decode("utf-8", "replace")
    assert "\ufffd" in expected
    rows: list[tuple[str | None, ...]] = []

    def handle_row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
        rows.append(values)

    script: list[Step] = [
        *login_ok(),
        *expect_query(),
        Send(PARSE_COMPLETE + frame(b"E", payload) + READY),
        *expect_query(),
        Send(GOOD_REPLY),
        Expect(m.Terminate),
    ]
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())
        error = await query_error(conn, DUMMY, within=BOUND)
        assert error.postgres_field(PostgresField(field)) == expected
        if field == "C":
            assert error.postgres_error_code == expected
        else:
            assert error.postgres_error_code == "42601"
            assert isinstance(error, pg.errors.SyntaxErrorOrAccessRuleViolation)
        if field in "MC":
            assert expected in str(error)
        assert isinstance(status_of(conn), pg.Open)
        async with asyncio.timeout(BOUND):
            await conn.query("SELECT 'ok'", handle_row=handle_row)
        assert rows == [("ok",)]
        await conn.close()
    assert status_of(conn) == pg.ClosedGracefully()


async def test_fatal_error_with_invalid_utf8_during_login() -> None:
    payload = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for " + BAD_UTF8 + b"\0\0"
    error, server_conn = await login_failure([Send(frame(b"E", payload))], then_eof=True)
    assert error.postgres_error_code == "28P01"
    assert "password authentication failed for " + BAD_UTF8.decode("utf-8", "replace") in str(error)
    startup_only(server_conn)


async def test_unsolicited_error_with_invalid_utf8_while_idle() -> None:
    payload = b"SFATAL\0VFATAL\0C57P01\0Mbye " + BAD_UTF8 + b"\0\0"
    error = await idle_failure(frame(b"E", payload))
    assert_error(error, "57P01", ASYNCHRONOUS_ERROR, "bye " + BAD_UTF8.decode("utf-8", "replace"))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(struct.pack("!i", 77) + b"chan" + BAD_UTF8 + b"\0payload\0", id="channel"),
        pytest.param(struct.pack("!i", 77) + b"chan\0pay" + BAD_UTF8 + b"\0", id="payload"),
    ],
)
async def test_notification_with_invalid_utf8_while_idle(payload: bytes) -> None:
    error = await idle_failure(frame(b"A", payload))
    assert_error(error, PROTOCOL_VIOLATION, "NotificationResponse", "invalid UTF-8")


async def test_notification_with_invalid_utf8_to_a_listener() -> None:
    """The channel is listened to: the callback is not called with a damaged payload."""
    heard: list[tuple[int, str]] = []
    listening = asyncio.Event()

    async def wait_for_listen(_conn: ServerConnection) -> None:
        await listening.wait()

    listen_reply = PARSED + NO_DATA + m.CommandComplete("LISTEN").encode() + READY
    bad = frame(b"A", struct.pack("!i", 77) + b"chan\0pay" + BAD_UTF8 + b"\0")
    good = m.NotificationResponse(77, "chan", "fine").encode()
    script: list[Step] = [
        *login_ok(),
        *expect_query(),
        Send(listen_reply),
        Call(wait_for_listen),
        Send(good + bad + good),
        WaitForClose(),
    ]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())
        async with asyncio.timeout(BOUND):
            await conn.listen_to_notifications("chan", lambda pid, text: heard.append((pid, text)))
        listening.set()
        error = await close_finished_error(conn, within=BOUND)
        assert_error(error, PROTOCOL_VIOLATION, "NotificationResponse", "invalid UTF-8")
        assert heard == [(77, "fine")]
        await assert_dead(conn, error)
    assert open_socket_count() == sockets_before
    assert server.connections[0].received[6:] == []


async def test_column_name_with_invalid_utf8() -> None:
    description = frame(
        b"T", b"\0\x01" + BAD_UTF8 + b"\0" + struct.pack("!IhIhih", 0, 0, 25, -1, -1, 0)
    )
    error = await query_failure(PARSED + description + data_row(b"x") + SELECT_1 + READY)
    assert_error(error, PROTOCOL_VIOLATION, "RowDescription", "invalid UTF-8")


async def test_data_row_value_with_invalid_utf8() -> None:
    rows: list[tuple[str | None, ...]] = []

    def handle_row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
        rows.append(values)

    reply = PARSED + ONE_COLUMN + data_row(b"good") + data_row(BAD_UTF8) + SELECT_1 + READY
    script: list[Step] = [*login_ok(), *expect_query(), Send(reply), WaitForClose()]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await conn.query(DUMMY, handle_row=handle_row)
        error = info.value
        assert_error(error, PROTOCOL_VIOLATION, "DataRow", "invalid UTF-8")
        assert rows == [("good",)]
        await assert_dead(conn, error)
    assert open_socket_count() == sockets_before
    assert server.connections[0].received[6:] == []


async def test_command_tag_with_invalid_utf8() -> None:
    error = await query_failure(PARSED + NO_DATA + frame(b"C", BAD_UTF8 + b"\0") + READY)
    assert_error(error, PROTOCOL_VIOLATION, "CommandComplete", "invalid UTF-8")


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"TimeZone\0" + BAD_UTF8 + b"\0", id="value"),
        pytest.param(BAD_UTF8 + b"\0UTC\0", id="name"),
    ],
)
async def test_parameter_status_with_invalid_utf8_during_login(payload: bytes) -> None:
    error, server_conn = await login_failure([Send(AUTH_OK + KEY + frame(b"S", payload) + READY)])
    assert_error(error, PROTOCOL_VIOLATION, "ParameterStatus", "invalid UTF-8")
    startup_only(server_conn)


async def test_parameter_status_with_invalid_utf8_while_idle() -> None:
    error = await idle_failure(frame(b"S", b"TimeZone\0" + BAD_UTF8 + b"\0"))
    assert_error(error, PROTOCOL_VIOLATION, "ParameterStatus", "invalid UTF-8")


async def test_parameter_status_with_invalid_utf8_during_a_query() -> None:
    status = frame(b"S", b"TimeZone\0" + BAD_UTF8 + b"\0")
    error = await query_failure(PARSED + status + NO_DATA + SELECT_1 + READY)
    assert_error(error, PROTOCOL_VIOLATION, "ParameterStatus", "invalid UTF-8")


async def test_notice_with_invalid_utf8_while_idle_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A notice is an error's sibling: shown with replacement characters, harmless."""
    logged_in = asyncio.Event()

    async def wait_for_login(_conn: ServerConnection) -> None:
        await logged_in.wait()

    payload = b"SWARNING\0VWARNING\0C01000\0Mnotice " + BAD_UTF8 + b"\0\0"
    script: list[Step] = [
        *login_ok(),
        Call(wait_for_login),
        Send(frame(b"N", payload)),
        *expect_query(),
        Send(GOOD_REPLY),
        Expect(m.Terminate),
    ]
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        with caplog.at_level(logging.INFO, logger="postgres_async"):
            conn = await pg.connect(**server.connect_kwargs())
            logged_in.set()
            async with asyncio.timeout(BOUND):
                await conn.query(DUMMY, handle_row=ignore_row)
            assert isinstance(status_of(conn), pg.Open)
            await conn.close()
    assert "notice " + BAD_UTF8.decode("utf-8", "replace") in caplog.text


# =========================================================== ReadyForQuery status
async def test_ready_for_query_with_unknown_status_during_login() -> None:
    error, server_conn = await login_failure([Send(AUTH_OK + KEY + b"Z\0\0\0\x05X")])
    assert_error(error, PROTOCOL_VIOLATION, "ReadyForQuery", "unknown transaction status", "X")
    startup_only(server_conn)


async def test_ready_for_query_in_a_transaction_during_login() -> None:
    error, server_conn = await login_failure([Send(AUTH_OK + KEY + b"Z\0\0\0\x05T")])
    assert_error(error, PROTOCOL_VIOLATION, "Unexpected initial transaction status")
    startup_only(server_conn)


async def test_ready_for_query_with_unknown_status_during_a_query() -> None:
    error = await query_failure(PARSED + NO_DATA + SELECT_1 + b"Z\0\0\0\x05X")
    assert_error(error, PROTOCOL_VIOLATION, "ReadyForQuery", "unknown transaction status", "X")


async def test_ready_for_query_with_unknown_status_after_an_error() -> None:
    """The query's result is its first error, the server's; the bad ReadyForQuery that
    follows kills the connection, and that is what the status and later calls say."""
    reply = PARSE_COMPLETE + error_response() + b"Z\0\0\0\x05\0"
    script: list[Step] = [*login_ok(), *expect_query(), Send(reply), WaitForClose()]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())
        error = await query_error(conn, DUMMY, within=BOUND)
        assert_error(error, "42601", "lie")
        status = status_of(conn)
        assert isinstance(status, pg.Failed)
        violation = status.error
        assert_error(violation, PROTOCOL_VIOLATION, "ReadyForQuery", "unknown transaction status")
        await assert_dead(conn, violation)
    assert open_socket_count() == sockets_before
    assert server.connections[0].received[6:] == []


async def test_ready_for_query_with_unknown_status_while_idle() -> None:
    error = await idle_failure(b"Z\0\0\0\x05X")
    assert_error(error, PROTOCOL_VIOLATION, "ReadyForQuery", "unknown transaction status")


# ============================================= a COPY nobody asked for (legal protocol)
COPY_IN_RESPONSE = m.CopyInResponse(0, (0, 0)).encode()


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        ("query", "COPY FROM STDIN is not appropriate"),
        ("query_expect_no_data", "query attempted COPY IN"),
    ],
)
async def test_copy_in_response_to_a_select(method: str, reason: str) -> None:
    """CopyFail + Sync go out, never a CopyData; the query raises; the connection stays
    usable (the server may do this: the protocol lets any statement start COPY)."""
    failed_copy = m.ErrorResponse(
        {"S": "ERROR", "V": "ERROR", "C": "57014", "M": f"COPY from stdin failed: {reason}"}
    )

    def is_our_copy_fail(message: m.CopyFail) -> bool:
        return reason in message.reason

    rows: list[tuple[str | None, ...]] = []

    def handle_row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
        rows.append(values)

    script: list[Step] = [
        *login_ok(),
        *expect_query(),
        Send(PARSED + NO_DATA + COPY_IN_RESPONSE),
        Expect(m.CopyFail, check=is_our_copy_fail),
        Expect(m.Sync),
        Send(failed_copy, READY),
        *expect_query(),
        Send(GOOD_REPLY),
        Expect(m.Terminate),
    ]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())

        async def run() -> pg.CommandComplete:
            if method == "query":
                return await conn.query("SELECT 1", handle_row=handle_row)
            return await conn.query_expect_no_data("SELECT 1")

        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await run()
        assert reason in str(info.value)
        assert rows == []
        assert isinstance(status_of(conn), pg.Open)
        async with asyncio.timeout(BOUND):
            await conn.query("SELECT 'ok'", handle_row=handle_row)
        assert rows == [("ok",)]
        await conn.close()
    assert status_of(conn) == pg.ClosedGracefully()
    assert open_socket_count() == sockets_before
    sent = frontend_types(bytes(server.connections[0].raw))
    assert b"d" not in sent
    assert sent == [b"P", b"B", b"D", b"E", b"S", b"f", b"S", b"P", b"B", b"D", b"E", b"S", b"X"]


async def test_copy_in_response_with_a_pipelined_query_behind() -> None:
    """Two SELECTs written back to back, the first answered by CopyInResponse. Still no
    CopyData goes out, both calls end (within the bound) with a PgasyncError or a result,
    and nothing hangs."""
    script: list[Step] = [
        *login_ok(),
        *expect_query(),
        *expect_query(),
        Send(PARSED + NO_DATA + COPY_IN_RESPONSE),
        Expect(m.CopyFail),
        Expect(m.Sync),
        # What PostgreSQL does: the second query's Parse aborts the COPY; the rest of
        # it is skipped up to its Sync; CopyFail outside COPY is ignored; then a Sync.
        Send(error_response(C="08P01", M="unexpected message type 0x50 during COPY"), READY),
        Send(READY),
        WaitForClose(),
    ]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())
        async with asyncio.timeout(BOUND):
            outcomes = await asyncio.gather(
                conn.query("SELECT 1", handle_row=ignore_row),
                conn.query("SELECT 2", handle_row=ignore_row),
                return_exceptions=True,
            )
        first, second = outcomes
        assert isinstance(first, pg.PgasyncError), first
        assert_error(first, "0A000", "COPY FROM STDIN is not appropriate")
        # The server swallowed the second query's messages with the COPY: what comes
        # back for it is a lone ReadyForQuery, which ends the connection.
        assert isinstance(second, pg.PgasyncError), second
        assert_error(second, PROTOCOL_VIOLATION, "ReadyForQuery", '"SELECT 2"')
        status = status_of(conn)
        assert isinstance(status, pg.Failed)
        assert_same_error(status.error, second)
        await assert_dead(conn, second)
    assert open_socket_count() == sockets_before
    assert b"d" not in frontend_types(bytes(server.connections[0].raw))


async def test_copy_both_response_to_a_select() -> None:
    """CopyBoth exists only for replication, which was not asked for."""
    copy_both = m.CopyBothResponse(0, ()).encode()
    error = await query_failure(PARSED + NO_DATA + copy_both + READY)
    assert_error(error, PROTOCOL_VIOLATION, "CopyBothResponse")


# ============================================================ unsolicited messages
@pytest.mark.parametrize("severity", ["FATAL", "PANIC", "ERROR"])
async def test_unsolicited_error_while_idle(severity: str) -> None:
    # The server keeps the socket open: the client must give up on it by itself.
    error = await idle_failure(error_response(S=severity, V=severity, C="53300", M="lied"))
    assert_error(error, "53300", ASYNCHRONOUS_ERROR, "lied")
    assert error.postgres_field(PostgresField.SEVERITY) == severity


UNSOLICITED: dict[str, bytes] = {
    "CommandComplete": SELECT_1,
    "DataRow": data_row(b"x"),
    "RowDescription": ONE_COLUMN,
    "ParseComplete": PARSE_COMPLETE,
    "EmptyQueryResponse": m.EmptyQueryResponse().encode(),
    "CopyInResponse": COPY_IN_RESPONSE,
    "CopyData": m.CopyData(b"x").encode(),
    "BackendKeyData": KEY,
    "AuthenticationRequest": AUTH_OK,
    "ReadyForQuery": READY,
}


@pytest.mark.parametrize("name", list(UNSOLICITED))
async def test_unsolicited_message_while_idle(name: str) -> None:
    error = await idle_failure(UNSOLICITED[name])
    assert_error(
        error,
        PROTOCOL_VIOLATION,
        f"Unsolicited message from server outside of query conversation: {name}",
    )


# ============================================================= login exchange lies
async def test_duplicate_backend_key_data() -> None:
    other_key = m.BackendKeyData(1, 2).encode()
    error, server_conn = await login_failure([Send(AUTH_OK + KEY + other_key + READY)])
    assert_error(error, PROTOCOL_VIOLATION, "duplicate BackendKeyData")
    startup_only(server_conn)


async def test_negotiate_protocol_version_during_login() -> None:
    # The client asked for 3.0 and no protocol options: there is nothing to negotiate.
    npv = m.NegotiateProtocolVersion(0, ("_pq_.lie",)).encode()
    error, server_conn = await login_failure([Send(npv + AUTH_OK + KEY + READY)])
    assert_error(error, PROTOCOL_VIOLATION, "NegotiateProtocolVersion")
    startup_only(server_conn)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(m.AuthenticationSASLFinal(b"v=bGll"), id="SASLFinal"),
        pytest.param(m.AuthenticationSASLContinue(b"r=x,s=eA==,i=4096"), id="SASLContinue"),
    ],
)
async def test_sasl_step_without_a_sasl_exchange(request_: m.AuthenticationRequest) -> None:
    error, server_conn = await login_failure(
        [Send(request_, m.AuthenticationOk(), KEY, READY)], password=PASSWORD
    )
    assert_error(error, PROTOCOL_VIOLATION, type(request_).__name__.removeprefix("Authentication"))
    startup_only(server_conn)


def _sasl_initial(message: m.SASLInitialResponse) -> bool:
    return message.mechanism == "SCRAM-SHA-256"


async def test_authentication_ok_right_after_sasl_initial_response() -> None:
    """The server never proved it knows the password: the client must refuse it."""
    error, server_conn = await login_failure(
        [
            Send(m.AuthenticationSASL(("SCRAM-SHA-256",))),
            Expect(m.SASLInitialResponse, check=_sasl_initial),
            Send(m.AuthenticationOk(), KEY, READY),
        ],
        password=PASSWORD,
    )
    assert_error(error, PROTOCOL_VIOLATION, "AuthenticationOk", "SCRAM")
    assert len(server_conn.received) == 2  # StartupMessage, SASLInitialResponse
    assert frontend_types(bytes(server_conn.raw)) == [b"p"]


async def _send_server_first(conn: ServerConnection) -> None:
    """Answer the client-first-message with a well-formed server-first-message."""
    initial = conn.received[-1]
    assert isinstance(initial, m.SASLInitialResponse)
    assert initial.data is not None
    client_nonce = initial.data.decode().rpartition("r=")[2]
    server_first = f"r={client_nonce}fakeserver,s=c2FsdHNhbHQ=,i=4096".encode()
    conn.writer.write(m.AuthenticationSASLContinue(server_first).encode())
    await conn.writer.drain()


async def test_authentication_ok_without_sasl_final() -> None:
    """After the full client side of SCRAM, Ok without the server's signature."""
    error, server_conn = await login_failure(
        [
            Send(m.AuthenticationSASL(("SCRAM-SHA-256",))),
            Expect(m.SASLInitialResponse, check=_sasl_initial),
            Call(_send_server_first),
            Expect(m.SASLResponse),
            Send(m.AuthenticationOk(), KEY, READY),
        ],
        password=PASSWORD,
    )
    assert_error(error, PROTOCOL_VIOLATION, "AuthenticationOk", "SCRAM")
    assert frontend_types(bytes(server_conn.raw)) == [b"p", b"p"]


async def test_sasl_final_before_sasl_continue() -> None:
    error, server_conn = await login_failure(
        [
            Send(m.AuthenticationSASL(("SCRAM-SHA-256",))),
            Expect(m.SASLInitialResponse, check=_sasl_initial),
            Send(m.AuthenticationSASLFinal(b"v=bGll"), m.AuthenticationOk(), KEY, READY),
        ],
        password=PASSWORD,
    )
    assert_error(error, PROTOCOL_VIOLATION, "SCRAM")
    assert frontend_types(bytes(server_conn.raw)) == [b"p"]


async def test_sasl_final_with_a_wrong_signature() -> None:
    error, server_conn = await login_failure(
        [
            Send(m.AuthenticationSASL(("SCRAM-SHA-256",))),
            Expect(m.SASLInitialResponse, check=_sasl_initial),
            Call(_send_server_first),
            Expect(m.SASLResponse),
            Send(m.AuthenticationSASLFinal(b"v=" + b"A" * 44), m.AuthenticationOk(), KEY, READY),
        ],
        password=PASSWORD,
    )
    assert error.postgres_error_code in {PROTOCOL_VIOLATION, "28P01"}, str(error)
    assert "SCRAM" in str(error)
    assert PASSWORD not in str(error)
    assert frontend_types(bytes(server_conn.raw)) == [b"p", b"p"]


# =========================================================================== TLS
SSL_REQUEST = m.SSLRequest().encode()
CLIENT_HELLO = b"\x16\x03"  # a TLS handshake record, any version


async def ssl_failure(steps: Sequence[Step]) -> tuple[pg.PgasyncError, bytes]:
    script: list[Step] = [Expect(m.SSLRequest), *steps]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await pg.connect(**server.connect_kwargs(ssl_mode="require", password=PASSWORD))
    assert open_socket_count() == sockets_before
    raw = bytes(server.connections[0].raw)
    assert raw.startswith(SSL_REQUEST)
    # No StartupMessage (nor anything else) in plaintext.
    assert b"user\0" not in raw
    assert b"database\0" not in raw
    return info.value, raw


async def test_plaintext_after_ssl_accepted() -> None:
    """'S' and then plaintext in the same packet, before any handshake: someone in the
    middle injected it (CVE-2021-23222); refused, the handshake never starts."""
    error, raw = await ssl_failure([Send(b"S" + AUTH_OK + KEY + READY), WaitForClose()])
    assert_error(error, PROTOCOL_VIOLATION, "unencrypted data after its SSL response")
    assert raw == SSL_REQUEST


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"HTTP/1.1 400 Bad Request\r\n\r\n", id="http"),
        # A handshake record holding a message of an unknown type (99).
        pytest.param(b"\x16\x03\x03\x00\x04\x63\0\0\0", id="bad handshake record"),
        pytest.param(b"\x15\x03\x03\x00\x02\x02\x28", id="fatal alert"),
        pytest.param(b"\xff" * 64, id="noise"),
    ],
)
async def test_garbage_instead_of_a_tls_handshake(garbage: bytes) -> None:
    error, raw = await ssl_failure([Send(b"S"), ReadAny(), Send(garbage), WaitForClose()])
    assert_error(error, UNABLE_TO_CONNECT, "SSL negotiation failed")
    assert raw[len(SSL_REQUEST) :].startswith(CLIENT_HELLO)


async def test_eof_instead_of_a_tls_handshake() -> None:
    error, raw = await ssl_failure([Send(b"S"), ReadAny()])
    assert_error(error, UNABLE_TO_CONNECT, "SSL negotiation failed")
    assert raw[len(SSL_REQUEST) :].startswith(CLIENT_HELLO)


async def test_tls_handshake_cut_short_is_bounded_by_connect_timeout() -> None:
    """A handshake message begun and never finished: TLS rightly waits for the rest,
    and connect_timeout bounds the wait (08001, naming the phase)."""
    started = b"\x16\x03\x03\x00\x40\x02\x00\x00\x3c\x03\x03"  # a ServerHello's start
    script: list[Step] = [
        Expect(m.SSLRequest),
        Send(b"S"),
        ReadAny(),
        Send(started),
        WaitForClose(),
    ]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await pg.connect(**server.connect_kwargs(ssl_mode="require", connect_timeout=0.3))
    assert open_socket_count() == sockets_before
    assert_error(info.value, UNABLE_TO_CONNECT, "timeout expired while negotiating SSL")


@pytest.mark.parametrize("failing", ["encoding", "feed_data"])
async def test_copy_fail_says_which_side_failed(failing: str) -> None:
    """A row that cannot be encoded and a raising feed_data both end the COPY with
    CopyFail + Sync and nothing else; the reason (which the server logs) says which of
    the two happened, and never carries the value."""
    raised = RuntimeError("the feeder broke")
    reason = (
        "COPY data could not be encoded" if failing == "encoding" else "feed_data callback raised"
    )

    def feed() -> pg.Finished:
        raise raised

    def is_our_copy_fail(message: m.CopyFail) -> bool:
        return message.reason == reason

    failed_copy = m.ErrorResponse(
        {"S": "ERROR", "V": "ERROR", "C": "57014", "M": f"COPY from stdin failed: {reason}"}
    )
    script: list[Step] = [
        *login_ok(),
        *expect_query(),
        Send(PARSED + NO_DATA + COPY_IN_RESPONSE),
        Expect(m.CopyFail, check=is_our_copy_fail),
        Expect(m.Sync),
        Send(failed_copy, READY),
        Expect(m.Terminate),
    ]
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs())
        feed_data: list[tuple[str]] | Callable[[], pg.Finished] = (
            [("secret\0value",)] if failing == "encoding" else feed
        )
        copying = conn.copy_in_rows("t", ["c"], feed_data=feed_data)
        with pytest.raises(ValueError if failing == "encoding" else RuntimeError) as info:
            await asyncio.wait_for(copying, BOUND)
        if failing == "feed_data":
            assert info.value is raised
        assert isinstance(status_of(conn), pg.Open)
        await conn.close()
    assert status_of(conn) == pg.ClosedGracefully()


# ======================================================== statement cache replies
def _named_parse(message: m.Parse) -> bool:
    return message.statement.startswith("__postgres_async_")


def _bound_to_cached(message: m.Bind) -> bool:
    return message.statement.startswith("__postgres_async_")


def _unnamed_parse(message: m.Parse) -> bool:
    return message.statement == ""


async def _cached_second_query_failure(
    sql: str, second: list[Step], reply: bytes
) -> pg.PgasyncError:
    """With a statement cache of one, a first query prepares DUMMY; the second (``sql``,
    whose client half is ``second``) is answered by ``reply``, which must fail the
    connection within BOUND with nothing sent afterwards."""
    script: list[Step] = [
        *login_ok(),
        Expect(m.Parse, check=_named_parse),
        Expect(m.Bind, check=_bound_to_cached),
        Expect(m.Describe),
        Expect(m.Execute),
        Expect(m.Sync),
        Send(GOOD_REPLY),
        *second,
        Send(reply),
        WaitForClose(),
    ]
    sockets_before = open_socket_count()
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs(statement_cache_size=1))
        await conn.query(DUMMY, handle_row=ignore_row)
        error = await query_error(conn, sql, within=BOUND)
        await assert_dead(conn, error)
        count = len(server.connections[0].received)
    assert open_socket_count() == sockets_before
    assert count == 1 + 5 + len(second), "sent after the failure"
    return error


# A cached statement not yet described (its first run, or a new one after a Close)...
BOUND_AND_DESCRIBED: list[Step] = [
    Expect(m.Bind, check=_bound_to_cached),
    Expect(m.Describe),
    Expect(m.Execute),
    Expect(m.Sync),
]
# ... and one whose Describe was answered: its columns are known, none is sent.
BOUND_ONLY: list[Step] = [
    Expect(m.Bind, check=_bound_to_cached),
    Expect(m.Execute),
    Expect(m.Sync),
]


async def test_parse_complete_for_a_statement_that_was_not_parsed() -> None:
    """The second run of a cached statement sends no Parse: a ParseComplete is a lie."""
    error = await _cached_second_query_failure(DUMMY, BOUND_ONLY, GOOD_REPLY)
    assert_error(error, PROTOCOL_VIOLATION, "ParseComplete")


@pytest.mark.parametrize("answer", [ONE_COLUMN, NO_DATA], ids=["RowDescription", "NoData"])
async def test_a_describe_answer_for_a_statement_sent_no_describe(answer: bytes) -> None:
    """The second run of a cached statement sends no Describe: an answer to one is a
    lie, never taken for the columns."""
    reply = BIND_COMPLETE + answer + data_row(b"ok") + SELECT_1 + READY
    error = await _cached_second_query_failure(DUMMY, BOUND_ONLY, reply)
    assert_error(error, PROTOCOL_VIOLATION, "RowDescription" if answer is ONE_COLUMN else "NoData")


@pytest.mark.parametrize("values", [(), (b"a", b"b")], ids=["none", "two"])
async def test_a_data_row_that_does_not_fit_the_known_columns(values: tuple[bytes, ...]) -> None:
    """The columns of a described statement are known: a DataRow of another width is
    refused as it would be after a RowDescription."""
    reply = BIND_COMPLETE + data_row(*values) + SELECT_1 + READY
    error = await _cached_second_query_failure(DUMMY, BOUND_ONLY, reply)
    assert_error(
        error,
        PROTOCOL_VIOLATION,
        "number of columns in DataRow message did not match RowDescription",
        f"expected 1, got {len(values)}",
    )


async def test_close_complete_missing_before_parse_complete() -> None:
    """With the cache full, the next new statement goes out as Close + Parse + ...: a
    reply without the CloseComplete is out of step."""
    close_then_parse: list[Step] = [
        Expect(m.Close),
        Expect(m.Parse, check=_named_parse),
        *BOUND_AND_DESCRIBED,
    ]
    error = await _cached_second_query_failure("SELECT other", close_then_parse, GOOD_REPLY)
    assert_error(error, PROTOCOL_VIOLATION, "ParseComplete", "Closing statements")


@pytest.mark.parametrize("times", [1, 2])
async def test_a_lost_statement_is_retried_once_on_the_unnamed_statement(times: int) -> None:
    """26000 at Bind says the cached statement is gone: the query is sent again with an
    unnamed Parse. If the server says 26000 to that too, the caller gets it: no loop."""
    lost = error_response(C="26000", M="prepared statement does not exist")
    retry: list[Step] = [
        Expect(m.Parse, check=_unnamed_parse),
        Expect(m.Bind, check=lambda bind: bind.statement == ""),
        Expect(m.Describe),
        Expect(m.Execute),
        Expect(m.Sync),
    ]
    script: list[Step] = [
        *login_ok(),
        Expect(m.Parse, check=_named_parse),
        *BOUND_AND_DESCRIBED,
        Send(GOOD_REPLY),
        *BOUND_ONLY,
        Send(lost + READY),
        *retry,
        Send(GOOD_REPLY if times == 1 else PARSE_COMPLETE + lost + READY),
        Expect(m.Terminate),
    ]
    async with FakeServer(script, step_timeout=STEP_TIMEOUT) as server:
        conn = await pg.connect(**server.connect_kwargs(statement_cache_size=4))
        await conn.query(DUMMY, handle_row=ignore_row)
        if times == 1:
            rows: list[tuple[str | None, ...]] = []
            await asyncio.wait_for(
                conn.query(DUMMY, handle_row=lambda _n, v: rows.append(v)), BOUND
            )
            assert rows == [("ok",)]
        else:
            error = await query_error(conn, DUMMY, within=BOUND)
            assert_error(error, "26000", "prepared statement does not exist")
        assert isinstance(status_of(conn), pg.Open)
        await conn.close()
    assert status_of(conn) == pg.ClosedGracefully()
