"""Test support code shared by the suites (importable as ``support`` under pytest).

``support.fake_server`` is a scripted fake PostgreSQL server for what a real server will
not do; the helpers here are small conveniences for tests of the client. The usual
connection fixtures (``conn``, ``other_conn``, ``observer``) are in
``tests/integration/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import pytest_asyncio

import postgres_async as pg
from postgres_async import Connection, PgasyncError, Status

#: A result row as the client hands it over: text values, None for NULL.
Row = tuple[str | None, ...]

#: Seconds no single step of a hostile-network or hostile-server scenario may take.
STEP_BOUND = 5.0


class Boom(Exception):
    """Raised on purpose by a test's callback or feed."""


# ---------------------------------------------------------------------------- rows
def ignore_row(_names: tuple[str, ...], _values: Row) -> None:
    """A ``handle_row`` for queries whose rows do not matter."""


async def fetch_rows(
    conn: Connection, sql: str, parameters: Sequence[object] | None = None
) -> list[Row]:
    """Run ``sql`` and return its rows as tuples of text values (None for NULL)."""
    rows: list[Row] = []

    def handle_row(_names: tuple[str, ...], values: Row) -> None:
        rows.append(values)

    await conn.query(sql, parameters, handle_row=handle_row)
    return rows


async def fetch_value(
    conn: Connection, sql: str, parameters: Sequence[object] | None = None
) -> str | None:
    """The single value of a one-row, one-column result."""
    rows = await fetch_rows(conn, sql, parameters)
    assert len(rows) == 1, f"expected one row from {sql!r}, got {rows!r}"
    assert len(rows[0]) == 1, f"expected one column from {sql!r}, got {rows!r}"
    return rows[0][0]


# ------------------------------------------------------------------ connection state
def status_of(conn: Connection) -> Status:
    """``conn.status``, read through a call so type checkers do not carry an earlier
    ``isinstance`` narrowing over to the next check."""
    return conn.status


async def assert_usable(conn: Connection, within: float | None = None) -> None:
    """Open, and a query with a parameter gets its answer (within ``within`` seconds,
    if given)."""
    assert conn.status == pg.Open()
    async with asyncio.timeout(within):
        assert await fetch_rows(conn, "SELECT $1::int + 1", [41]) == [("42",)]


async def assert_healthy(conn: Connection) -> None:
    """Open, and ``SELECT 1`` gets its answer."""
    assert conn.status == pg.Open()
    assert await fetch_rows(conn, "SELECT 1") == [("1",)]


async def wait_until_running(
    observer: Connection,
    pid: int | None,
    pattern: str,
    within: float = 10.0,
    interval: float = 0.02,
) -> None:
    """Poll pg_stat_activity from ``observer`` (every ``interval`` seconds) until backend
    ``pid`` is active on a statement matching the LIKE ``pattern``."""
    assert pid is not None, "the connection has no backend pid"
    sql = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE pid = $1 AND state = 'active' AND query LIKE $2"
    )
    async with asyncio.timeout(within):
        while True:  # polling another server process: there is no event to wait for
            if await fetch_value(observer, sql, [pid, pattern]) == "1":
                return
            await asyncio.sleep(interval)


async def poll_for_client_write(observer: Connection, pid: int | None) -> list[Row]:
    """Poll backend ``pid``'s (state, wait_event) from ``observer`` until it is
    ('active', 'ClientWrite'), the server blocked on a client that is not reading: at
    most 200 times, 25 ms apart. Returns the rows last seen, for the caller to check."""
    state: list[Row] = []
    for _ in range(200):
        state = await fetch_rows(
            observer,
            "SELECT state, wait_event FROM pg_stat_activity WHERE pid = $1",
            [pid],
        )
        if state == [("active", "ClientWrite")]:
            break
        await asyncio.sleep(0.025)
    return state


async def open_gates_and_end(task: asyncio.Task[Any], *gates: asyncio.Future[None]) -> None:
    """The cleanup of a pushback test: set every gate still pending, then cancel ``task``
    if it has not finished, and wait for it to end."""
    for gate in gates:
        if not gate.done():
            gate.set_result(None)
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --------------------------------------------------------------------- errors raised
async def connect_error(**kwargs: Any) -> PgasyncError:
    """The PgasyncError ``connect(**kwargs)`` raises (it must raise one, within 10 s)."""
    with pytest.raises(PgasyncError) as info:
        async with asyncio.timeout(10):
            await pg.connect(**kwargs)
    return info.value


async def query_error(conn: Connection, sql: str, within: float = 10.0) -> PgasyncError:
    """The PgasyncError a query raises (it must raise one, within ``within`` seconds)."""
    with pytest.raises(PgasyncError) as info:
        async with asyncio.timeout(within):
            await conn.query(sql, handle_row=ignore_row)
    return info.value


async def close_error(conn: Connection, within: float = 10.0) -> PgasyncError:
    """The PgasyncError ``close`` raises (it must raise one, within ``within`` seconds)."""
    with pytest.raises(PgasyncError) as info:
        async with asyncio.timeout(within):
            await conn.close()
    return info.value


async def close_finished_error(conn: Connection, within: float = 10.0) -> PgasyncError:
    """The PgasyncError ``close_finished`` raises (it must, within ``within`` seconds)."""
    with pytest.raises(PgasyncError) as info:
        async with asyncio.timeout(within):
            await conn.close_finished()
    return info.value


def assert_same_error(error: PgasyncError, original: PgasyncError) -> None:
    assert type(error) is type(original)
    assert error.postgres_error_code == original.postgres_error_code
    assert str(error) == str(original)


# ------------------------------------------------------------ opening and closing
async def close_quietly(conn: Connection) -> None:
    """Close; a connection a test left failed on purpose may raise its failure (ignored),
    but a failure to close an open connection is raised."""
    was_open = isinstance(conn.status, pg.Open)
    try:
        await conn.close()
    except PgasyncError:
        if was_open:
            raise


async def close_ignoring_errors(conn: Connection, within: float = STEP_BOUND) -> None:
    """Close within ``within`` seconds; any PgasyncError (a connection the test broke on
    purpose raises its failure) is ignored."""
    with contextlib.suppress(PgasyncError):
        async with asyncio.timeout(within):
            await conn.close()


@contextlib.asynccontextmanager
async def connected(**kwargs: Any) -> AsyncIterator[Connection]:
    """A connection made within ``STEP_BOUND`` seconds, closed at the end by
    ``close_ignoring_errors``."""
    async with asyncio.timeout(STEP_BOUND):
        conn = await pg.connect(**kwargs)
    try:
        yield conn
    finally:
        await close_ignoring_errors(conn)


def with_connection_fixture() -> Callable[[dict[str, Any]], AsyncIterator[Connection]]:
    """A fixture (assign it to the fixture's name in a test module) of a connection to the
    session's server made by ``pg.with_connection``: a failed close at the end is logged,
    not raised, unlike with the ``conn`` fixture of tests/integration/conftest.py."""

    @pytest_asyncio.fixture
    async def fixture(server_kwargs: dict[str, Any]) -> AsyncIterator[Connection]:
        async with pg.with_connection(**server_kwargs) as connection:
            yield connection

    return fixture


# ------------------------------------------------------------------- raw bytes, sockets
def backend_message(type_byte: bytes, payload: bytes = b"") -> bytes:
    """A server message: type byte, int32 length, payload."""
    return type_byte + struct.pack("!I", len(payload) + 4) + payload


def socket_fds() -> set[int]:
    """The file descriptors of the sockets this process has open (Linux: /proc/self/fd)."""
    fds: set[int] = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd of the listing itself, already closed
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                fds.add(int(name))
    return fds


def open_socket_count() -> int:
    """How many sockets this process has open (Linux: /proc/self/fd)."""
    return len(socket_fds())
