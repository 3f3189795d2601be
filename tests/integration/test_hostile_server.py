"""Hostile servers: a real server that kills, times out, restarts or fails mid-stream.

Every scenario ends in a clear error (a ``PgasyncError`` with the server's SQLSTATE
where the server gives one), the promised connection status, no data lost and no hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

import pytest

import postgres_async as pg
from postgres_async.errors import PgasyncError
from postgres_async.testing import Installation, PostgresServer
from support import (
    STEP_BOUND,
    Row,
    assert_usable,
    close_ignoring_errors,
    connected,
    fetch_rows,
    ignore_row,
)

pytestmark = pytest.mark.timeout(30)  # a backstop; every test bounds its own waits

BOUND = STEP_BOUND  # no single step of a scenario may take longer
PROMPTLY = 2.0
ADMIN_SHUTDOWN = "57P01"
QUERY_CANCELED = "57014"
IDLE_IN_TRANSACTION_TIMEOUT = "25P03"
DIVISION_BY_ZERO = "22012"
UNIQUE_VIOLATION = "23505"


# ------------------------------------------------------------------------------ helpers
async def wait_until_active(observer: pg.Connection, pid: int | None, like: str) -> None:
    """Until backend ``pid`` is running a statement matching ``like`` (polled)."""
    assert pid is not None
    check = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE pid = $1 AND state = 'active' AND query LIKE $2"
    )
    for _ in range(int(BOUND / 0.01)):
        if await fetch_rows(observer, check, [pid, like]) == [("1",)]:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"backend {pid} did not start running {like!r} within {BOUND} s")


async def terminate(observer: pg.Connection, pid: int | None) -> None:
    assert pid is not None
    assert await fetch_rows(observer, "SELECT pg_terminate_backend($1)", [pid]) == [("t",)]


async def assert_failed_with(conn: pg.Connection, code: str | None) -> PgasyncError:
    """Status Failed with a PgasyncError (of SQLSTATE ``code`` unless None);
    close_finished raises it promptly; a new query gets 08003 "previously-failed"."""
    status = conn.status
    assert isinstance(status, pg.Failed), status
    error = status.error
    assert isinstance(error, PgasyncError)
    if code is not None:
        assert error.postgres_error_code == code, error
    with pytest.raises(PgasyncError) as closed:
        async with asyncio.timeout(PROMPTLY):
            await conn.close_finished()
    assert closed.value is error
    with pytest.raises(PgasyncError, match="query issued against previously-failed") as again:
        await conn.query("SELECT 1", handle_row=ignore_row)
    assert again.value.postgres_error_code == "08003"
    assert conn.status == status  # the first failure stays
    return error


# ------------------------------------------------------------------ pg_terminate_backend
async def test_terminate_backend_during_a_query(server_kwargs: dict[str, Any]) -> None:
    async with connected(**server_kwargs) as observer, connected(**server_kwargs) as conn:
        task = asyncio.create_task(conn.query("SELECT pg_sleep(60)", handle_row=ignore_row))
        await wait_until_active(observer, conn.backend_pid, "SELECT pg_sleep(60)")
        await terminate(observer, conn.backend_pid)
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(PROMPTLY):
                await task
        assert info.value.postgres_error_code == ADMIN_SHUTDOWN
        assert "terminating connection" in str(info.value)
        assert await assert_failed_with(conn, ADMIN_SHUTDOWN) is info.value


async def test_terminate_backend_during_copy_in(server_kwargs: dict[str, Any]) -> None:
    async with connected(**server_kwargs) as observer, connected(**server_kwargs) as conn:
        await conn.query_expect_no_data("CREATE TEMPORARY TABLE t (n int)")
        fed = 0

        def feed() -> pg.Data[str | bytes] | pg.Wait | pg.Finished:
            nonlocal fed
            fed += 1
            if fed > 2000:  # bounded: 2000 slow rounds is far beyond the test's bound
                return pg.Finished()
            if fed % 2:
                return pg.Data(f"{fed}\n")
            return pg.Wait(asyncio.sleep(0.005))

        task = asyncio.create_task(conn.copy_in_raw("COPY t FROM STDIN", feed_data=feed))
        await wait_until_active(observer, conn.backend_pid, "COPY t FROM STDIN")
        await terminate(observer, conn.backend_pid)
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(PROMPTLY):
                await task
        assert fed < 2000
        assert info.value.postgres_error_code == ADMIN_SHUTDOWN
        assert await assert_failed_with(conn, ADMIN_SHUTDOWN) is info.value


async def test_terminate_backend_while_idle(server_kwargs: dict[str, Any]) -> None:
    async with connected(**server_kwargs) as observer, connected(**server_kwargs) as conn:
        assert await fetch_rows(conn, "SELECT 1") == [("1",)]
        await terminate(observer, conn.backend_pid)
        # Nobody asks anything: the idle connection notices by itself.
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(PROMPTLY):
                await conn.close_finished()
        assert info.value.postgres_error_code == ADMIN_SHUTDOWN
        await assert_failed_with(conn, ADMIN_SHUTDOWN)


# ------------------------------------------------------------------ server-side timeouts
async def test_idle_in_transaction_session_timeout_fails_the_connection_promptly(
    server_kwargs: dict[str, Any],
) -> None:
    async with connected(**server_kwargs) as conn:
        await conn.query_expect_no_data("SET idle_in_transaction_session_timeout = '200ms'")
        await conn.query_expect_no_data("BEGIN")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(PROMPTLY):
                await conn.close_finished()
        assert 0.2 <= loop.time() - started < PROMPTLY
        assert info.value.postgres_error_code == IDLE_IN_TRANSACTION_TIMEOUT
        await assert_failed_with(conn, IDLE_IN_TRANSACTION_TIMEOUT)


async def test_statement_timeout_cancels_the_statement_and_the_connection_stays_usable(
    server_kwargs: dict[str, Any],
) -> None:
    async with connected(**server_kwargs) as conn:
        await conn.query_expect_no_data("SET statement_timeout = '100ms'")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await conn.query("SELECT pg_sleep(1)", handle_row=ignore_row)
        assert loop.time() - started < 0.9
        assert info.value.postgres_error_code == QUERY_CANCELED
        assert "statement timeout" in str(info.value)
        await assert_usable(conn, within=BOUND)


# ---------------------------------------------------------------------- restart under load
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_server_restart_under_load_fails_every_connection_clearly(
    pg_installation: Installation, mode: Literal["fast", "immediate"]
) -> None:
    server = PostgresServer(pg_installation)
    await asyncio.to_thread(server.start)
    conns: list[pg.Connection] = []
    try:
        kwargs = server.connect_kwargs()
        for _ in range(5):
            async with asyncio.timeout(BOUND):
                conns.append(await pg.connect(**kwargs))
        rounds = [0] * len(conns)
        all_running = asyncio.Event()

        async def hammer(index: int, conn: pg.Connection) -> BaseException | None:
            """Queries in a loop until one fails; returns what it failed with."""
            for _ in range(1_000_000):
                try:
                    await conn.query(
                        "SELECT count(*) FROM generate_series(1, 2000)", handle_row=ignore_row
                    )
                except Exception as exc:
                    return exc
                rounds[index] += 1
                if all(rounds):
                    all_running.set()
            return None

        async with asyncio.timeout(BOUND):
            tasks = [asyncio.create_task(hammer(i, c)) for i, c in enumerate(conns)]
            try:
                await all_running.wait()
                await asyncio.to_thread(server.restart, mode)
                outcomes = await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        # fast: each backend says FATAL 57P01 before it exits; immediate: the backends
        # only send a WARNING notice and vanish, so the client sees the connection end.
        expected = ADMIN_SHUTDOWN if mode == "fast" else "08003"
        for outcome in outcomes:
            assert isinstance(outcome, PgasyncError), repr(outcome)
            # A task whose connection failed between two of its queries is refused on
            # the next one, as on any previously-failed connection.
            if outcome.postgres_error_code != expected:
                assert "previously-failed" in str(outcome), outcome
                assert isinstance(outcome.original_error, PgasyncError)
                assert outcome.original_error.postgres_error_code == expected, outcome
        for conn in conns:
            status = conn.status
            assert isinstance(status, pg.Failed), status
            assert status.error.postgres_error_code == expected, status.error
            with pytest.raises(PgasyncError):
                async with asyncio.timeout(PROMPTLY):
                    await conn.close_finished()
        # The restarted server takes new connections.
        async with connected(**kwargs) as fresh:
            assert await fetch_rows(fresh, "SELECT 1") == [("1",)]
    finally:
        for conn in conns:
            await close_ignoring_errors(conn)
        await asyncio.to_thread(server.stop)


# ---------------------------------------------------------------- errors mid-stream
async def test_error_in_the_middle_of_a_stream_delivers_exactly_the_rows_before_it(
    server_kwargs: dict[str, Any],
) -> None:
    rows: list[Row] = []

    def handle_row(_names: tuple[str, ...], values: Row) -> None:
        rows.append(values)

    # Not 1/0: a constant would be folded (and fail) at planning time. The division is
    # per row, so the server sends rows 1..4999 before row 5000 raises.
    sql = (
        "SELECT CASE WHEN g = 5000 THEN g / (g - 5000) ELSE g END FROM generate_series(1, 10000) g"
    )
    async with connected(**server_kwargs) as conn:
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await conn.query(sql, handle_row=handle_row)
        assert info.value.postgres_error_code == DIVISION_BY_ZERO
        assert len(rows) == 4999
        assert rows == [(str(g),) for g in range(1, 5000)]
        await assert_usable(conn, within=BOUND)


async def test_error_after_megabytes_of_rows_delivers_exactly_the_rows_before_it(
    server_kwargs: dict[str, Any],
) -> None:
    """The same with 1 KB rows: 3 MB went out in many socket writes and client reads
    before the error. (A PL/pgSQL function raising after N ``RETURN NEXT`` would not do:
    it materialises its result, so the server sends no row at all.)"""
    rows: list[Row] = []

    def handle_row(_names: tuple[str, ...], values: Row) -> None:
        rows.append(values)

    sql = (
        "SELECT CASE WHEN g = 3001 THEN (g / (g - 3001))::text ELSE repeat('x', 1000) || g END "
        "FROM generate_series(1, 4000) g"
    )
    async with connected(**server_kwargs) as conn:
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await conn.query(sql, handle_row=handle_row)
        assert info.value.postgres_error_code == DIVISION_BY_ZERO
        assert len(rows) == 3000
        assert rows == [("x" * 1000 + str(g),) for g in range(1, 3001)]
        await assert_usable(conn, within=BOUND)


async def test_unique_violation_while_a_big_copy_streams_stops_the_feeding_early(
    server_kwargs: dict[str, Any],
) -> None:
    total = 2_000_000
    calls = 0

    def feed() -> pg.Data[Sequence[object]] | pg.Finished:
        nonlocal calls
        calls += 1
        if calls > total:
            return pg.Finished()
        # Row 10 repeats the key of row 1; the rest are distinct.
        key = 1 if calls == 10 else calls
        return pg.Data((key, "y" * 50))

    async with connected(**server_kwargs) as conn:
        await conn.query_expect_no_data(
            "CREATE TEMPORARY TABLE big (k int PRIMARY KEY, v text NOT NULL)"
        )
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await conn.copy_in_rows("big", ["k", "v"], feed_data=feed)
        assert info.value.postgres_error_code == UNIQUE_VIOLATION
        assert isinstance(info.value, pg.errors.UniqueViolation)
        # Feeding stopped soon after the server said no: a small fraction of the feed.
        assert calls < total // 20, calls
        await assert_usable(conn, within=BOUND)
        assert await fetch_rows(conn, "SELECT count(*) FROM big") == [("0",)]
