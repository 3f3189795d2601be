"""Cancelling a running statement: conn.cancel(), a cancelled task, asyncio.timeout.

Port of upstream ``test/test_cancellation.ml`` (spec 3.13; upstream had its live test
disabled, here it runs), plus the cancellation promises of API.md section 3.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import postgres_async as pg
from postgres_async.protocol import messages as m
from support import fetch_value, ignore_row, status_of, wait_until_running
from support.fake_server import Expect, FakeServer, Step, login_ok

QUERY_CANCELED = "57014"
LONG_SLEEP = "SELECT 1 FROM pg_sleep(100)"


async def test_cancel_a_running_query(server_kwargs: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    conn = await pg.connect(**server_kwargs)
    observer = await pg.connect(**server_kwargs)
    try:
        running = asyncio.ensure_future(conn.query(LONG_SLEEP, handle_row=ignore_row))
        await wait_until_running(observer, conn.backend_pid, "%pg_sleep(100)%")
        started = loop.time()
        await conn.cancel()
        with pytest.raises(pg.PgasyncError) as info:
            async with asyncio.timeout(2):
                await running
        assert loop.time() - started < 2
        error = info.value
        assert error.postgres_error_code == QUERY_CANCELED
        assert error.postgres_field(pg.PostgresField.MESSAGE) == (
            "canceling statement due to user request"
        )
        assert isinstance(status_of(conn), pg.Open)
        await conn.query_expect_no_data("BEGIN")
        await conn.close()
        assert status_of(conn) == pg.ClosedGracefully()
    finally:
        await observer.close()


async def test_cancel_while_idle_is_harmless(server_kwargs: dict[str, Any]) -> None:
    conn = await pg.connect(**server_kwargs)
    await conn.cancel()
    assert await fetch_value(conn, "SELECT 1") == "1"
    await conn.close()


async def test_cancelling_the_awaiting_task(server_kwargs: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    conn = await pg.connect(**server_kwargs)
    observer = await pg.connect(**server_kwargs)
    try:
        task = asyncio.ensure_future(conn.query(LONG_SLEEP, handle_row=ignore_row))
        await wait_until_running(observer, conn.backend_pid, "%pg_sleep(100)%")
        started = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() - started < 0.5  # at once, not after the drain
        async with asyncio.timeout(5):
            assert await fetch_value(conn, "SELECT 1") == "1"
        assert isinstance(status_of(conn), pg.Open)
        # The statement was cancelled on the server, not left running.
        assert (
            await fetch_value(
                observer,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE pid = $1 AND query LIKE '%pg_sleep(100)%' AND state = 'active'",
                [conn.backend_pid],
            )
            == "0"
        )
        await conn.close()
    finally:
        await observer.close()


async def test_asyncio_timeout_around_a_query(server_kwargs: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    conn = await pg.connect(**server_kwargs)
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await conn.query(LONG_SLEEP, handle_row=ignore_row)
    assert loop.time() - started < 1.0
    async with asyncio.timeout(5):
        assert await fetch_value(conn, "SELECT 2") == "2"
    await conn.close()
    assert status_of(conn) == pg.ClosedGracefully()


async def test_cancelling_a_queued_query_leaves_the_running_one_alone(
    server_kwargs: dict[str, Any],
) -> None:
    conn = await pg.connect(**server_kwargs)
    running = asyncio.ensure_future(fetch_value(conn, "SELECT 'first' FROM pg_sleep(0.3)"))
    queued = asyncio.ensure_future(fetch_value(conn, "SELECT 'second'"))
    await asyncio.sleep(0.05)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert await running == "first"
    assert await fetch_value(conn, "SELECT 'third'") == "third"
    await conn.close()


@pytest.mark.parametrize(
    ("pid", "secret"),
    [(9999, 2147483647), (9999, -2147483648), (2147483647, 1)],
)
async def test_full_backend_key_range(pid: int, secret: int) -> None:
    session: list[Step] = [*login_ok(pid=pid, secret=secret), Expect(m.Terminate)]
    cancel: list[Step] = [Expect(m.CancelRequest)]  # then the server hangs up, as PostgreSQL
    async with FakeServer(session, cancel) as server:
        conn = await pg.connect(**server.connect_kwargs())
        assert conn.backend_pid == pid
        await conn.cancel()
        await conn.close()
    # The secret went back exactly as it came.
    assert server.connections[1].received == [m.CancelRequest(pid, secret)]
