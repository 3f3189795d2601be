"""conn.listen_to_notifications against real servers.

A port of upstream's test_notify.ml, plus the cautions of the seed's documentation
(notifications wait for the end of a transaction; LISTEN in a rolled-back transaction
has no effect) and API.md's promises (callbacks run in order, an exception in one is
logged and harms nothing, notifications arrive while idle or during other queries).
Channel names get a unique suffix: channels are server-wide and other tests share the
server.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import postgres_async as pg
from support import (
    Boom,
    Row,
    fetch_rows,
    ignore_row,
    open_gates_and_end,
    poll_for_client_write,
    with_connection_fixture,
)

Note = tuple[str, int, str]  # (channel, pid, payload)
LOGGER = "postgres_async"


# ------------------------------------------------------------------------------ helpers
async def wait_until(predicate: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(0.005)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def recorder(channel: str, into: list[Note]) -> Callable[[int, str], None]:
    def callback(pid: int, payload: str) -> None:
        into.append((channel, pid, payload))

    return callback


def quoted(channel: str) -> str:
    return '"' + channel.replace('"', '""') + '"'


async def notify(conn: pg.Connection, channel: str, payload: str = "") -> None:
    await conn.query("SELECT pg_notify($1, $2)", [channel, payload], handle_row=ignore_row)


# Connections made by pg.with_connection (support.with_connection_fixture).
conn = with_connection_fixture()
other_conn = with_connection_fixture()


# -------------------------------------------------------------------------- upstream
async def test_listen_notify(conn: pg.Connection, other_conn: pg.Connection) -> None:
    one = unique("channel_one_")
    two = unique("channel-2-")  # the hyphen needs quoting; the library does it
    got: list[Note] = []
    await conn.listen_to_notifications(one, recorder(one, got))
    await conn.listen_to_notifications(two, recorder(two, got))
    pid = conn.backend_pid
    assert isinstance(pid, int)
    other_pid = other_conn.backend_pid
    assert isinstance(other_pid, int)

    # On the same connection the server sends the notification before ReadyForQuery,
    # so it has been handled by the time the NOTIFY returns.
    await conn.query_expect_no_data(f"NOTIFY {one}")
    assert got == [(one, pid, "")]
    await conn.query_expect_no_data(f"NOTIFY {quoted(two)}, 'hello'")
    assert got[1:] == [(two, pid, "hello")]

    # From another connection, delivered while this one is idle.
    await other_conn.query_expect_no_data(f"NOTIFY {one}, 'from-another-process'")
    await wait_until(lambda: len(got) == 3, "the notification from another connection")
    assert got[2] == (one, other_pid, "from-another-process")

    # Two in a row arrive in order.
    await other_conn.query_expect_no_data(f"NOTIFY {one}, 'm1'")
    await other_conn.query_expect_no_data(f"NOTIFY {one}, 'm2'")
    await wait_until(lambda: len(got) == 5, "m1 and m2")
    assert got[3:] == [(one, other_pid, "m1"), (one, other_pid, "m2")]

    await asyncio.sleep(0.05)
    assert len(got) == 5  # nothing else turned up
    assert conn.status == pg.Open()


async def test_multiple_listeners(conn: pg.Connection, other_conn: pg.Connection) -> None:
    channel = unique("a_")
    calls: list[tuple[int, str]] = []

    def numbered(index: int) -> Callable[[int, str], None]:
        def callback(_pid: int, payload: str) -> None:
            calls.append((index, payload))

        return callback

    for index in (1, 2, 3):
        await conn.listen_to_notifications(channel, numbered(index))
    await conn.query_expect_no_data(f"NOTIFY {channel}")
    assert calls == [(1, ""), (2, ""), (3, "")]
    await notify(other_conn, channel, "again")
    await wait_until(lambda: len(calls) == 6, "the second notification")
    assert calls[3:] == [(1, "again"), (2, "again"), (3, "again")]


async def test_notify_with_no_listeners_is_logged(
    conn: pg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    channel = unique("channel_three_")
    await conn.query_expect_no_data(f"LISTEN {channel}")  # no callback registered
    await conn.query_expect_no_data(f"NOTIFY {channel}")

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == LOGGER and channel in r.getMessage()]

    await wait_until(lambda: bool(logged()), "the error record")
    [record] = logged()
    assert record.levelno == logging.ERROR
    assert "no callbacks are listening" in record.getMessage()
    assert conn.status == pg.Open()
    assert await fetch_rows(conn, "SELECT 1") == [("1",)]


async def test_callback_raising_is_logged_and_harmless(
    conn: pg.Connection, other_conn: pg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    channel = unique("raising_")
    got: list[Note] = []

    def bad(_pid: int, payload: str) -> None:
        raise Boom(f"callback broke on {payload}")

    await conn.listen_to_notifications(channel, bad)
    await conn.listen_to_notifications(channel, recorder(channel, got))
    await notify(other_conn, channel, "first")
    await wait_until(lambda: len(got) == 1, "the first notification")
    # The callback after the raising one still ran, with the same notification.
    assert got == [(channel, other_conn.backend_pid, "first")]

    def boom_records() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == LOGGER and r.exc_info is not None and isinstance(r.exc_info[1], Boom)
        ]

    await wait_until(lambda: len(boom_records()) == 1, "the logged exception")
    record = boom_records()[0]
    assert record.levelno >= logging.ERROR
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "callback broke on first"

    # The connection keeps working, and later notifications still arrive.
    assert conn.status == pg.Open()
    assert await fetch_rows(conn, "SELECT 2") == [("2",)]
    await notify(other_conn, channel, "second")
    await wait_until(lambda: len(got) == 2, "the second notification")
    assert got[1] == (channel, other_conn.backend_pid, "second")
    await wait_until(lambda: len(boom_records()) == 2, "the second logged exception")
    assert conn.status == pg.Open()


# ------------------------------------------------------------- during other queries
async def test_notification_during_a_long_query_is_delivered_before_it_returns(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    """The listening connection streams a big result with a slow pushback; another
    connection commits a NOTIFY meanwhile. The server sends the notification at the end
    of that command, before its ReadyForQuery, so it reaches the callback while the
    query is still running from the caller's point of view: before ``query`` returns,
    without another statement being needed."""
    channel = unique("busy_")
    loop = asyncio.get_running_loop()
    total = 20000  # about 20 MB of rows: more than the socket buffers hold
    rows_seen = 0
    rows_at_notification: list[int] = []
    got: list[Note] = []

    def on_notification(pid: int, payload: str) -> None:
        rows_at_notification.append(rows_seen)
        got.append((channel, pid, payload))

    await conn.listen_to_notifications(channel, on_notification)
    gate: asyncio.Future[None] = loop.create_future()

    def handle_row(_names: tuple[str, ...], _values: Row) -> None:
        nonlocal rows_seen
        rows_seen += 1

    def pushback() -> Any:
        if rows_seen == 1:
            return gate
        if rows_seen % 2000 == 0:
            return asyncio.sleep(0.001)  # slow consumer
        return None

    task = asyncio.create_task(
        conn.query(
            f"SELECT g, repeat('a', 1000) FROM generate_series(1, {total}) AS g",
            handle_row=handle_row,
            pushback=pushback,
        )
    )
    try:
        # Wait until the server is stuck writing rows to us: the query is running.
        state = await poll_for_client_write(other_conn, conn.backend_pid)
        assert state == [("active", "ClientWrite")]
        await notify(other_conn, channel, "while you were busy")
        await asyncio.sleep(0.05)
        assert got == []  # the client is holding back; nothing has been read yet
        assert not task.done()
        gate.set_result(None)
        result = await asyncio.wait_for(task, 30)
        # No waiting here: it was handled before the query's result was delivered.
        assert got == [(channel, other_conn.backend_pid, "while you were busy")]
    finally:
        await open_gates_and_end(task, gate)
    assert result == pg.CommandComplete("SELECT", total)
    assert rows_seen == total
    # The server holds notifications until the command ends: after the last row.
    assert rows_at_notification == [total]
    assert conn.status == pg.Open()


async def test_notifications_wait_for_the_end_of_a_transaction(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    channel = unique("in_tx_")
    got: list[Note] = []
    await conn.listen_to_notifications(channel, recorder(channel, got))
    await conn.query_expect_no_data("BEGIN")
    await notify(other_conn, channel, "held")
    await asyncio.sleep(0.1)
    assert await fetch_rows(conn, "SELECT 1") == [("1",)]
    assert got == []  # the listening session is inside a transaction
    await conn.query_expect_no_data("COMMIT")
    assert got == [(channel, other_conn.backend_pid, "held")]


async def test_listen_in_a_rolled_back_transaction_has_no_effect(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    dropped = unique("rolled_back_")
    control = unique("control_")
    got: list[Note] = []
    await conn.listen_to_notifications(control, recorder(control, got))
    await conn.query_expect_no_data("BEGIN")
    await conn.listen_to_notifications(dropped, recorder(dropped, got))
    await conn.query_expect_no_data("ROLLBACK")
    await notify(other_conn, dropped, "lost")
    await notify(other_conn, control, "after")  # ordered after the first one
    await wait_until(lambda: any(note[0] == control for note in got), "the control note")
    assert got == [(control, other_conn.backend_pid, "after")]


async def test_channel_names_are_quoted_literally(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    """A dot or a double quote is part of the channel name (no splitting on dots)."""
    channels = [unique("dotted.name."), unique('q"uote '), unique("MixedCase-")]
    got: list[Note] = []
    for channel in channels:
        await conn.listen_to_notifications(channel, recorder(channel, got))
    payload = "héllo\nworld ☃ 'quoted' \\ \t"
    for channel in channels:
        await notify(other_conn, channel, payload)
    await wait_until(lambda: len(got) == 3, "three notifications")
    assert got == [(channel, other_conn.backend_pid, payload) for channel in channels]
    # The lower-cased name gets nothing: MixedCase was not folded.
    folded = channels[2].lower()
    listeners = await fetch_rows(conn, "SELECT pg_listening_channels() ORDER BY 1")
    assert (channels[2],) in listeners
    assert (folded,) not in listeners
