"""Closing: idempotence, status transitions, close_finished, in-flight work, a server
that misbehaves after Terminate, and the warning for a connection never closed.

API.md section 2, with upstream's close semantics (spec 1.3, 2.3, 2.12).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

import postgres_async as pg
from postgres_async.protocol import messages as m
from support import close_error, fetch_value, ignore_row, status_of, wait_until_running
from support.fake_server import (
    Call,
    Expect,
    FakeServer,
    HalfClose,
    Send,
    ServerConnection,
    Sleep,
    Step,
    WaitForClose,
    login_ok,
)

CONNECTION_EXCEPTION = "08000"
CONNECTION_DOES_NOT_EXIST = "08003"
QUERY_CANCELED = "57014"


# ---------------------------------------------------------------------- idempotence
async def test_close_twice(server_kwargs: dict[str, Any]) -> None:
    conn = await pg.connect(**server_kwargs)
    await conn.close()
    await conn.close()
    await conn.close_finished()
    assert status_of(conn) == pg.ClosedGracefully()


async def test_close_on_a_failed_connection_raises_the_same_error_each_time() -> None:
    script: list[Step] = [*login_ok(), HalfClose(), WaitForClose()]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        first = await close_error(conn)
        second = await close_error(conn)
    assert "Unexpected EOF" in str(first)
    for again in (second,):
        assert type(again) is type(first)
        assert again.postgres_error_code == first.postgres_error_code
        assert str(again) == str(first)
    status = status_of(conn)
    assert isinstance(status, pg.Failed)
    assert str(status.error) == str(first)


async def test_query_after_close(server_kwargs: dict[str, Any]) -> None:
    conn = await pg.connect(**server_kwargs)
    await conn.close()
    for attempt in (
        conn.query("SELECT 1", handle_row=ignore_row),
        conn.query_expect_no_data(""),
    ):
        with pytest.raises(pg.PgasyncError) as info:
            await attempt
        assert info.value.postgres_error_code == CONNECTION_DOES_NOT_EXIST
        assert "query issued against connection closed by user" in str(info.value)
    assert status_of(conn) == pg.ClosedGracefully()


# ---------------------------------------------------------------- status and waiting
async def test_close_finished_waits_for_the_close(server_kwargs: dict[str, Any]) -> None:
    conn = await pg.connect(**server_kwargs)
    finished = asyncio.ensure_future(conn.close_finished())
    await asyncio.sleep(0.1)
    assert await fetch_value(conn, "SELECT 1") == "1"
    assert not finished.done()
    await conn.close()
    async with asyncio.timeout(1):
        await finished  # returns None; raising would mean a failed close
    assert finished.exception() is None


async def test_status_goes_open_closing_closed_gracefully() -> None:
    terminated = asyncio.Event()

    def saw_terminate(_conn: ServerConnection) -> None:
        terminated.set()

    # The server waits a little after Terminate before hanging up: Closing is visible.
    script: list[Step] = [*login_ok(), Expect(m.Terminate), Call(saw_terminate), Sleep(0.3)]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        assert status_of(conn) == pg.Open()
        closing = asyncio.ensure_future(conn.close())
        await terminated.wait()
        assert status_of(conn) == pg.Closing()
        assert not closing.done()
        await closing
        assert status_of(conn) == pg.ClosedGracefully()


# ------------------------------------------------------------------ in-flight work
async def test_close_while_a_query_is_in_flight(server_kwargs: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    conn = await pg.connect(**server_kwargs)
    in_flight = asyncio.ensure_future(fetch_value(conn, "SELECT 'done' FROM pg_sleep(0.2)"))
    await asyncio.sleep(0.05)  # written and running
    started = loop.time()
    close_outcome: pg.PgasyncError | None = None
    try:
        async with asyncio.timeout(3):
            await conn.close()
    except pg.PgasyncError as error:
        close_outcome = error
    assert loop.time() - started < 2
    try:
        result: str | pg.PgasyncError | None = await in_flight
    except pg.PgasyncError as error:
        result = error
    # The query finishes or says clearly that it could not; the close is bounded.
    assert result == "done" or isinstance(result, pg.PgasyncError), result
    final = status_of(conn)
    if close_outcome is None:
        assert final == pg.ClosedGracefully()
    else:
        assert isinstance(final, pg.Failed)


async def test_close_cancels_a_long_statement_when_asked(server_kwargs: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    conn = await pg.connect(**server_kwargs)
    observer = await pg.connect(**server_kwargs)
    try:
        in_flight = asyncio.ensure_future(
            conn.query("SELECT 1 FROM pg_sleep(10)", handle_row=ignore_row)
        )
        await wait_until_running(observer, conn.backend_pid, "%pg_sleep(10)%")
        started = loop.time()
        async with asyncio.timeout(5):
            await conn.close(try_cancel_statement_before_close=True)
        assert loop.time() - started < 3
        assert status_of(conn) == pg.ClosedGracefully()
        with pytest.raises(pg.PgasyncError) as info:
            await in_flight
        assert info.value.postgres_error_code == QUERY_CANCELED
    finally:
        await observer.close()


async def test_queries_issued_while_closing_are_refused(server_kwargs: dict[str, Any]) -> None:
    conn = await pg.connect(**server_kwargs)
    running = asyncio.ensure_future(fetch_value(conn, "SELECT 'ran' FROM pg_sleep(0.2)"))
    # Issued before close: may be pipelined (then it is in flight and runs) or still
    # waiting its turn (then close refuses it).
    queued = asyncio.ensure_future(fetch_value(conn, "SELECT 'queued'"))
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(conn.close())
    await asyncio.sleep(0)
    assert status_of(conn) == pg.Closing()
    with pytest.raises(pg.PgasyncError) as info:
        await conn.query_expect_no_data("SELECT 'after close'")
    assert info.value.postgres_error_code == CONNECTION_DOES_NOT_EXIST
    assert "query issued against connection closed by user" in str(info.value)
    await closing
    assert await running == "ran"
    outcome: str | BaseException | None
    try:
        outcome = await queued
    except pg.PgasyncError as error:
        outcome = error
    if isinstance(outcome, pg.PgasyncError):
        assert "query issued against connection closed by user" in str(outcome)
    else:
        assert outcome == "queued"
    assert status_of(conn) == pg.ClosedGracefully()


# --------------------------------------------------------- misbehaviour after Terminate
@pytest.mark.parametrize(
    "after_terminate",
    [m.ReadyForQuery(m.TransactionStatus.IDLE).encode(), b"junk!"],
    ids=["a message", "junk"],
)
async def test_bytes_after_terminate(after_terminate: bytes) -> None:
    script: list[Step] = [*login_ok(), Expect(m.Terminate), Send(after_terminate), WaitForClose()]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        error = await close_error(conn, within=3)
    assert error.postgres_error_code == CONNECTION_EXCEPTION
    assert "close: EOF expected" in str(error)
    assert isinstance(status_of(conn), pg.Failed)


async def test_server_that_never_hangs_up_after_terminate() -> None:
    loop = asyncio.get_running_loop()
    script: list[Step] = [*login_ok(), Expect(m.Terminate), WaitForClose()]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs())
        started = loop.time()
        error = await close_error(conn, within=5)
        elapsed = loop.time() - started
    assert error.postgres_error_code == CONNECTION_EXCEPTION
    assert "close: EOF expected, but instead stuck" in str(error)
    assert 0.8 <= elapsed < 2.0
    status = status_of(conn)
    assert isinstance(status, pg.Failed)
    assert status.resources_released


# ----------------------------------------------------------------- never closed at all
def drop_and_collect(holder: list[pg.Connection]) -> None:
    holder.clear()
    gc.collect()


async def test_unclosed_connection_warns_when_collected() -> None:
    async with FakeServer([*login_ok(), WaitForClose()]) as server:
        holder = [await pg.connect(**server.connect_kwargs())]
        ref = weakref.ref(holder[0])
        try:
            with pytest.warns(ResourceWarning, match="unclosed connection"):
                drop_and_collect(holder)
            assert ref() is None
        finally:
            leaked = ref()
            if leaked is not None:  # not collected: close it, so that nothing leaks on
                await leaked.close()
