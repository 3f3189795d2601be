"""The server dies, lies or hangs up: the connection fails cleanly and says why.

Port of upstream ``test/test_server_failure.ml`` (spec 3.9). A failed connection is
``Failed``; a later query raises 08003 "query issued against previously-failed
connection" carrying the original error; ``close`` and ``close_finished`` raise it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import postgres_async as pg
from postgres_async import PostgresField
from postgres_async.protocol import messages as m
from support import (
    assert_same_error,
    close_error,
    close_finished_error,
    fetch_value,
    open_socket_count,
    query_error,
    status_of,
)
from support.fake_server import (
    Call,
    Expect,
    FakeServer,
    HalfClose,
    Reset,
    Send,
    ServerConnection,
    ShutdownRead,
    Sleep,
    Step,
    WaitForClose,
    expect_query,
    login_ok,
)

PROTOCOL_VIOLATION = "08P01"
CONNECTION_DOES_NOT_EXIST = "08003"
ADMIN_SHUTDOWN = "57P01"
PREVIOUSLY_FAILED = "query issued against previously-failed connection"
DURING_EXECUTION = "Error during query execution (despite parsing ok)"
ASYNCHRONOUS_ERROR = "ErrorResponse received asynchronously, assuming connection is dead"
DUMMY = "<dummy>"


async def assert_dead(conn: pg.Connection, original: pg.PgasyncError) -> None:
    """Failed for ``original``: queries are refused, close/close_finished raise."""
    status = status_of(conn)
    assert isinstance(status, pg.Failed)
    assert_same_error(status.error, original)
    error = await query_error(conn, "")
    assert error.postgres_error_code == CONNECTION_DOES_NOT_EXIST
    assert PREVIOUSLY_FAILED in str(error)
    assert str(original) in str(error)
    assert_same_error(await close_finished_error(conn), original)
    assert_same_error(await close_error(conn), original)
    status = status_of(conn)
    assert isinstance(status, pg.Failed)
    assert status.resources_released


# ---------------------------------------------------------------- terminate backend
async def test_terminate_backend_during_a_query(server_kwargs: dict[str, Any]) -> None:
    conn = await pg.connect(**server_kwargs)
    error = await query_error(conn, "SELECT pg_terminate_backend(pg_backend_pid())")
    assert error.postgres_error_code == ADMIN_SHUTDOWN
    assert error.postgres_field(PostgresField.SEVERITY) == "FATAL"
    assert DURING_EXECUTION in str(error)
    assert "pg_terminate_backend" in str(error)  # the query is named
    await assert_dead(conn, error)


async def test_terminated_from_another_connection_while_idle(
    server_kwargs: dict[str, Any],
) -> None:
    conn = await pg.connect(**server_kwargs)
    killer = await pg.connect(**server_kwargs)
    try:
        finished = asyncio.ensure_future(conn.close_finished())
        await asyncio.sleep(0.05)
        assert not finished.done()
        assert (
            await fetch_value(killer, "SELECT pg_terminate_backend($1)", [conn.backend_pid]) == "t"
        )
    finally:
        await killer.close()
    with pytest.raises(pg.PgasyncError) as info:
        async with asyncio.timeout(5):
            await finished
    error = info.value
    assert error.postgres_error_code == ADMIN_SHUTDOWN
    assert error.postgres_field(PostgresField.SEVERITY) == "FATAL"
    assert ASYNCHRONOUS_ERROR in str(error)
    await assert_dead(conn, error)


# ------------------------------------------------------------- invalid login replies
OK_LOGIN = b"R\0\0\0\x08\0\0\0\0" + b"Z\0\0\0\x05I"


async def test_minimal_valid_login_bytes() -> None:
    script: list[Step] = [Expect(m.StartupMessage), Send(OK_LOGIN), Expect(m.Terminate)]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        assert conn.backend_pid is None
        await conn.close()
    assert status_of(conn) == pg.ClosedGracefully()


LOGIN_CASES: dict[str, tuple[bytes, bool, list[str]]] = {
    # name: (bytes sent after the StartupMessage, then EOF?, texts the error must contain)
    "nonsense length": (b"R\0\0\0\x03", False, ["Nonsense message length"]),
    "auth type 255": (
        b"R\0\0\0\x08\0\0\0\xff",
        False,
        ["AuthenticationRequest", "unrecognised type 255"],
    ),
    "unknown type byte": (b"x\0\0\0\x04", False, ["Unrecognised message type character"]),
    "portal suspended": (
        b"s\0\0\0\x04",
        False,
        ["Unexpected message type", "PortalSuspended", "logging in"],
    ),
    # No body follows: the header alone must be refused.
    "too long": (b"R\x40\0\0\x04", False, ["Message too long", "1073741829"]),
    "cut short": (b"R\0\0\0\x05", True, ["Unexpected EOF (unconsumed_bytes 5)"]),
}


@pytest.mark.parametrize("case", list(LOGIN_CASES))
async def test_invalid_messages_during_login(case: str) -> None:
    data, then_eof, texts = LOGIN_CASES[case]
    script: list[Step] = [Expect(m.StartupMessage), Send(data)]
    if not then_eof:
        script.append(WaitForClose())
    sockets_before = open_socket_count()
    async with FakeServer(script) as server:
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(5):
                await pg.connect(**server.connect_kwargs())
    error = info.value
    for text in texts:
        assert text in str(error)
    # A message cut short by the end of the stream is a lost connection (08003, as
    # upstream); everything else is a protocol violation.
    expected = "08003" if then_eof else PROTOCOL_VIOLATION
    assert error.postgres_error_code == expected
    assert open_socket_count() == sockets_before


# ------------------------------------------------------------- invalid query replies
PARSE_COMPLETE = b"1\0\0\0\x04"
BIND_COMPLETE = b"2\0\0\0\x04"
NO_DATA = b"n\0\0\0\x04"
EMPTY_QUERY = b"I\0\0\0\x04"
NO_COLUMNS = b"T\0\0\0\x06\0\0"
COMMAND_COMPLETE = b"C\0\0\0\x06_\0"
READY = b"Z\0\0\0\x05I"
UNKNOWN = b"x\0\0\0\x04"
PORTAL_SUSPENDED = b"s\0\0\0\x04"
TWO_COLUMNS = m.RowDescription((pg.ColumnMetadata("A", 25), pg.ColumnMetadata("B", 25))).encode()
ONE_VALUE_ROW = m.DataRow((b"a",)).encode()


async def test_valid_query_reply_bytes() -> None:
    reply = PARSE_COMPLETE + BIND_COMPLETE + NO_DATA + EMPTY_QUERY + READY
    script: list[Step] = [
        *login_ok(),
        *expect_query(),
        Send(reply),
        *expect_query(),
        Send(reply),
        Expect(m.Terminate),
    ]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        for _ in range(2):
            result = await conn.query_expect_no_data(DUMMY)
            assert result == pg.CommandComplete("", None)
        await conn.close()
    assert server.received[1] == m.Parse(DUMMY)


QUERY_CASES: dict[str, tuple[bytes, bool, list[str]]] = {
    # name: (reply to the query, then EOF?, texts the error must contain)
    "x": (UNKNOWN, False, ["Unrecognised message type character"]),
    "1 s": (
        PARSE_COMPLETE + PORTAL_SUSPENDED,
        False,
        ["Unexpected message type", "PortalSuspended", "Binding"],
    ),
    "1 2 x": (PARSE_COMPLETE + BIND_COMPLETE + UNKNOWN, False, ["Unrecognised message type"]),
    "1 2 T s": (
        PARSE_COMPLETE + BIND_COMPLETE + NO_COLUMNS + PORTAL_SUSPENDED,
        False,
        ["Unexpected message type", "PortalSuspended", "reading DataRows"],
    ),
    "1 2 T(4095 fields)": (
        PARSE_COMPLETE + BIND_COMPLETE + b"T\0\0\0\x06\x0f\xff",
        False,
        ["Failed to parse RowDescription"],
    ),
    "1 2 T(A,B) D(a) C Z": (
        PARSE_COMPLETE + BIND_COMPLETE + TWO_COLUMNS + ONE_VALUE_ROW + COMMAND_COMPLETE + READY,
        False,
        ["number of columns in DataRow message did not match RowDescription"],
    ),
    "1 2 T D(too long)": (
        PARSE_COMPLETE + BIND_COMPLETE + NO_COLUMNS + b"D\x40\0\0\x04",
        False,
        ["Message too long", "1073741829"],
    ),
    "1 2 T D(cut short)": (
        PARSE_COMPLETE + BIND_COMPLETE + NO_COLUMNS + b"D\0\0\0\x10",
        True,
        ["Unexpected EOF (unconsumed_bytes 5)"],
    ),
}


@pytest.mark.parametrize("case", list(QUERY_CASES))
async def test_invalid_messages_during_a_query(case: str) -> None:
    reply, then_eof, texts = QUERY_CASES[case]
    script: list[Step] = [*login_ok(), *expect_query(), Send(reply)]
    if not then_eof:
        script.append(WaitForClose())
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        error = await query_error(conn, DUMMY)
        for text in texts:
            assert text in str(error)
        if not then_eof:
            assert error.postgres_error_code == PROTOCOL_VIOLATION
        assert f'"{DUMMY}"' in str(error)  # the query is named
        await assert_dead(conn, error)


# ------------------------------------------------------------------ while idle
async def test_asynchronous_eof_while_idle() -> None:
    script: list[Step] = [*login_ok(), Sleep(0.3), HalfClose(), WaitForClose()]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        finished = asyncio.ensure_future(conn.close_finished())
        await asyncio.sleep(0.1)
        assert not finished.done()
        assert isinstance(status_of(conn), pg.Open)
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(2):
                await finished
        error = info.value
        assert "Unexpected EOF (no unconsumed messages)" in str(error)
        await assert_dead(conn, error)


async def test_reset_while_idle() -> None:
    script: list[Step] = [*login_ok(), Sleep(0.1), Reset()]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        error = await close_finished_error(conn)
        await assert_dead(conn, error)


async def test_fatal_error_while_idle() -> None:
    fatal = m.ErrorResponse({"S": "FATAL", "V": "FATAL", "C": ADMIN_SHUTDOWN, "M": "bye"})
    script: list[Step] = [*login_ok(), Sleep(0.1), Send(fatal)]  # then close, as PostgreSQL
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        error = await close_finished_error(conn)
        assert error.postgres_error_code == ADMIN_SHUTDOWN
        assert ASYNCHRONOUS_ERROR in str(error)
        await assert_dead(conn, error)


async def test_unsolicited_message_while_idle() -> None:
    script: list[Step] = [*login_ok(), Sleep(0.1), Send(READY), WaitForClose()]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        error = await close_finished_error(conn)
        assert "Unsolicited message from server outside of query conversation" in str(error)
        await assert_dead(conn, error)


# ------------------------------------------------------------------- writer failures
async def test_writer_failure_during_login() -> None:
    # The server stops reading, then asks for a password: writing it fails (EPIPE on a
    # unix socket). The server keeps the socket open for 3 s, so only the failed write
    # can end connect within the bound below.
    script: list[Step] = [
        Expect(m.StartupMessage),
        ShutdownRead(),
        Send(m.AuthenticationMD5Password(b"salt")),
        Sleep(3),
    ]
    async with FakeServer(script, unix=True) as server:
        with pytest.raises(pg.PgasyncError):
            async with asyncio.timeout(2):
                await pg.connect(**server.connect_kwargs(password="secret"))


async def test_writer_failure_during_a_query() -> None:
    reading_stopped = asyncio.Event()

    def stopped(_conn: ServerConnection) -> None:
        reading_stopped.set()

    script: list[Step] = [*login_ok(), ShutdownRead(), Call(stopped), Sleep(3)]
    async with FakeServer(script, unix=True) as server:
        conn = await pg.connect(**server.connect_kwargs())
        await reading_stopped.wait()
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(2):
                await conn.query_expect_no_data(DUMMY)
        error = info.value
        assert error.postgres_error_code in {"08003", "08006", "08000", PROTOCOL_VIOLATION}
        assert f'"{DUMMY}"' in str(error)
        await assert_dead(conn, error)
