"""Early reads against real servers, under the default asyncio loop and under uvloop.

Right after a request is written, ``Stream.read_early`` reads whatever the socket
already holds (see ``_transport/stream.py``). Whether the reply is there that early
depends on the scheduler, so these tests put a spy in place of ``os.read``: ``Ready``
first waits until the socket is readable, as when the server answered before the client
looked; ``Never`` finds nothing, as when the server is slower. Either way the bytes are
real replies of a real server, and every result is checked against the query.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

import postgres_async as pg
from postgres_async import connection as connection_module
from postgres_async._transport import stream as stream_module
from postgres_async._transport.stream import EARLY_READ_SIZE
from postgres_async.testing import PostgresServer
from support import Boom, assert_usable, close_quietly, fetch_rows, fetch_value, query_error

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
Run = Callable[[Coroutine[Any, Any, Any]], Any]


class Ready:
    """Waits (up to 5 s) until the socket is readable, then reads it: every early read
    finds its reply, whatever the scheduler did."""

    def __init__(self) -> None:
        self.calls = 0
        self.found = 0

    def __call__(self, fd: int, size: int) -> bytes:
        self.calls += 1
        select.select([fd], [], [], 5.0)
        data = os.read(fd, size)
        if data:
            self.found += 1
        return data


class Never:
    """Finds nothing: the transport delivers every reply."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int, size: int) -> bytes:
        self.calls += 1
        raise BlockingIOError


def _wait_for_bytes(fd: int, wanted: bytes, within: float = 5.0) -> None:
    """Until what the socket ``fd`` holds (peeked, not taken) contains ``wanted``."""
    deadline = time.monotonic() + within
    with socket.socket(fileno=os.dup(fd)) as peek:
        while wanted not in peek.recv(EARLY_READ_SIZE, socket.MSG_PEEK):
            if time.monotonic() > deadline:
                raise AssertionError(f"{wanted!r} did not arrive within {within} s")
            time.sleep(0.005)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """Runs a coroutine to completion on a fresh loop of the parametrized kind."""
    factory: LoopFactory = (
        uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    )
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner.run


@pytest.fixture
def ready(monkeypatch: pytest.MonkeyPatch) -> Ready:
    spy = Ready()
    monkeypatch.setattr(stream_module, "_read", spy)
    monkeypatch.setattr(connection_module, "_early_streak", 0)
    return spy


@pytest.fixture
def never(monkeypatch: pytest.MonkeyPatch) -> Never:
    spy = Never()
    monkeypatch.setattr(stream_module, "_read", spy)
    return spy


def test_replies_taken_early_are_the_replies(
    run: Run, server_kwargs: dict[str, Any], ready: Ready
) -> None:
    async def body() -> None:
        async with pg.with_connection(**server_kwargs) as conn:
            for i in range(60):
                rows = await fetch_rows(conn, "SELECT $1::int, repeat('x', $1::int)", [i])
                assert rows == [(str(i), "x" * i)]
            assert await fetch_rows(conn, "SELECT g FROM generate_series(1, 3) g") == [
                ("1",),
                ("2",),
                ("3",),
            ]
            done = await conn.query_expect_no_data("CREATE TEMP TABLE early (n int)")
            assert done == pg.CommandComplete("CREATE TABLE", None)
            done = await conn.query_expect_no_data("INSERT INTO early VALUES (1), (2)")
            assert done == pg.CommandComplete("INSERT", 2)
            # An error reply is read early too, and taken message by message (the
            # second time on the way for statements parsed before).
            for _ in range(2):
                error = await query_error(conn, "SELECT 1 / 0")
                assert isinstance(error, pg.errors.DivisionByZero)
            result = await conn.simple_query("SELECT 1; SELECT 2")
            assert [c.tag for c in result.commands] == ["SELECT", "SELECT"]
            await assert_usable(conn)

    run(body())
    # Nearly every operation found its reply at once (the streak limit sends a few of
    # them through the loop instead).
    assert ready.found >= 60


async def forever(conn: pg.Connection) -> None:
    while True:
        assert await fetch_value(conn, "SELECT 1") == "1"


def test_a_task_running_queries_back_to_back_still_lets_the_loop_run(
    run: Run, server_kwargs: dict[str, Any], ready: Ready
) -> None:
    async def body() -> int:
        ticks = 0
        stop = False

        async def tick() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        async with pg.with_connection(**server_kwargs) as conn:
            ticker = asyncio.create_task(tick())
            await asyncio.sleep(0)
            for i in range(200):
                assert await fetch_value(conn, "SELECT $1::int", [i]) == str(i)
            stop = True
            await ticker
            # A timeout around queries that all complete early still fires.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(forever(conn), 0.2)
            await assert_usable(conn)
        return ticks

    ticks = run(body())
    assert ready.found >= 150
    # One trip through the loop per _EARLY_STREAK_LIMIT queries at least.
    assert ticks >= 200 // (connection_module._EARLY_STREAK_LIMIT + 1)


def test_reads_that_find_nothing_are_mostly_skipped(
    run: Run, server_kwargs: dict[str, Any], never: Never
) -> None:
    async def body() -> None:
        async with pg.with_connection(**server_kwargs) as conn:
            for i in range(90):
                assert await fetch_value(conn, "SELECT $1::int", [i]) == str(i)

    run(body())
    # A miss costs EARLY_MISS_COST credit, repaid one skipped read at a time: one read
    # every EARLY_MISS_COST + 1 queries.
    assert never.calls == 90 // (stream_module.EARLY_MISS_COST + 1)


class LateByOneLook:
    """After a look that found its reply, the next request's first look finds nothing:
    as when the server shares the CPU but the kernel has not switched to it yet. The
    yield is where the server runs, so the second look waits for the reply."""

    def __init__(self) -> None:
        self.yields = 0
        self.found = 0
        self._behind = False

    def read(self, fd: int, size: int) -> bytes:
        if self._behind:
            self._behind = False
            raise BlockingIOError
        select.select([fd], [], [], 5.0)
        data = os.read(fd, size)
        if data:
            self.found += 1
            self._behind = True
        return data

    def yield_cpu(self) -> None:
        self.yields += 1


@pytest.mark.parametrize("cache", [0, 10])
def test_a_miss_after_hits_yields_and_takes_the_reply_on_the_second_look(
    run: Run, server_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, cache: int
) -> None:
    spy = LateByOneLook()
    monkeypatch.setattr(stream_module, "_read", spy.read)
    monkeypatch.setattr(stream_module, "_yield_cpu", spy.yield_cpu)
    monkeypatch.setattr(connection_module, "_early_streak", 0)

    async def body() -> None:
        async with pg.with_connection(**server_kwargs, statement_cache_size=cache) as conn:
            for i in range(60):
                rows = await fetch_rows(conn, "SELECT $1::int, repeat('y', $1::int)", [i])
                assert rows == [(str(i), "y" * i)]
            await assert_usable(conn)

    run(body())
    # Every look after the first hit missed once, yielded, and found its reply; only
    # the requests the streak limit leaves to the loop make no look at all.
    assert spy.yields >= 50
    assert spy.found >= spy.yields


@pytest.mark.parametrize("how", ["keyword", "dsn"])
def test_early_reads_can_be_turned_off(
    run: Run, server_kwargs: dict[str, Any], ready: Ready, how: str
) -> None:
    async def body() -> None:
        kwargs = dict(server_kwargs)
        dsn = None
        if how == "keyword":
            kwargs["early_reads"] = False
        else:
            dsn = "early_reads=off"
        async with pg.with_connection(dsn, **kwargs, statement_cache_size=10) as conn:
            for i in range(20):
                assert await fetch_value(conn, "SELECT $1::int", [i]) == str(i)
        # The same server, early reads on: they are made.
        async with pg.with_connection(**server_kwargs) as conn:
            assert await fetch_value(conn, "SELECT 1") == "1"

    run(body())
    assert ready.calls == 1


def test_a_shared_connection_pipelines_instead_of_reading_early(
    run: Run, server_kwargs: dict[str, Any], ready: Ready
) -> None:
    async def body() -> None:
        async with pg.with_connection(**server_kwargs) as conn:

            async def worker(k: int) -> list[str | None]:
                return [
                    await fetch_value(conn, "SELECT $1::int", [k * 1000 + i]) for i in range(40)
                ]

            results = await asyncio.gather(*(worker(k) for k in range(5)))
            assert results == [[str(k * 1000 + i) for i in range(40)] for k in range(5)]

    run(body())
    # The first task's streak at most, then queries queue behind one another, which
    # holds early reads off for as long as they do.
    assert ready.calls <= connection_module._EARLY_STREAK_LIMIT + 5


def test_no_early_reads_under_tls(run: Run, pg_ssl_server: PostgresServer, ready: Ready) -> None:
    async def body() -> None:
        kwargs = pg_ssl_server.connect_kwargs(ssl_mode="require")
        async with pg.with_connection(**kwargs) as conn:
            for i in range(20):
                assert await fetch_value(conn, "SELECT $1::int", [i]) == str(i)

    run(body())
    assert ready.calls == 0  # the socket holds ciphertext: only the TLS transport reads it


@pytest.mark.parametrize("cache", [0, 10])
def test_callback_errors_in_a_reply_taken_at_once(
    run: Run,
    server_kwargs: dict[str, Any],
    ready: Ready,
    cache: int,
) -> None:
    async def body() -> None:
        async with pg.with_connection(**server_kwargs, statement_cache_size=cache) as conn:
            sql = "SELECT g FROM generate_series(1, $1::int) g"
            await fetch_rows(conn, sql, [1])  # Parsed: later calls can be taken at once
            seen: list[str | None] = []

            def row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
                seen.append(values[0])
                if len(seen) == 2:
                    raise Boom("row")

            with pytest.raises(Boom, match="row"):
                await conn.query(sql, [5], handle_row=row)
            assert seen == ["1", "2"]  # no callback after the one that raised

            def columns(_columns: tuple[pg.ColumnMetadata, ...]) -> None:
                raise Boom("columns")

            seen.clear()
            with pytest.raises(Boom, match="columns"):
                await conn.query(sql, [3], handle_row=row, handle_columns=columns)
            assert seen == []
            assert await fetch_rows(conn, sql, [2]) == [("1",), ("2",)]
            await assert_usable(conn)

    run(body())
    assert ready.found >= 4


def test_a_notification_read_with_the_reply_is_delivered_with_it(
    run: Run,
    pg_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The read that takes the reply also takes a notification another session sent
    # just after it: the notification is delivered before the query returns.
    armed = [False]

    def read(fd: int, size: int) -> bytes:
        select.select([fd], [], [], 5.0)
        if armed[0]:
            armed[0] = False
            pg_server.run_sql("NOTIFY early_channel, 'behind the reply'")
            _wait_for_bytes(fd, b"behind the reply")  # our backend sends it soon after
        return os.read(fd, size)

    monkeypatch.setattr(stream_module, "_read", read)
    monkeypatch.setattr(connection_module, "_early_streak", 0)

    async def body() -> None:
        got: list[str] = []
        async with pg.with_connection(**pg_server.connect_kwargs()) as conn:
            await conn.listen_to_notifications("early_channel", lambda _pid, p: got.append(p))
            assert await fetch_value(conn, "SELECT $1::int", [1]) == "1"
            armed[0] = True
            assert await fetch_value(conn, "SELECT $1::int", [2]) == "2"
            assert got == ["behind the reply"]
            await assert_usable(conn)

    run(body())


@pytest.mark.parametrize("cache", [0, 10])
def test_a_write_on_a_dead_transport_fails_the_query_as_usual(
    run: Run, server_kwargs: dict[str, Any], cache: int
) -> None:
    async def body() -> None:
        conn = await pg.connect(**server_kwargs, statement_cache_size=cache)
        try:
            assert await fetch_value(conn, "SELECT $1::int", [1]) == "1"
            # As if the socket had just died under the connection, with no loop
            # iteration yet to say so.
            stream = conn._stream
            assert stream.transport is not None
            stream.transport.abort()
            error = await query_error(conn, "SELECT $1::int")
            assert error.postgres_error_code == "08003"
            assert "cannot write" in str(error)
            assert error.query == "SELECT $1::int"
            assert isinstance(conn.status, pg.Failed)
        finally:
            await close_quietly(conn)

    run(body())


@pytest.mark.parametrize("cache", [0, 10])
def test_part_of_a_reply_read_early_and_the_rest_from_the_loop(
    run: Run,
    server_kwargs: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    cache: int,
) -> None:
    # Each early read takes only the first `cut` bytes of the reply (the rest stays in
    # the socket for the transport), at every cut from inside the first message to
    # inside the last.
    cut = [0]

    def read(fd: int, size: int) -> bytes:
        select.select([fd], [], [], 5.0)
        return os.read(fd, cut[0])

    monkeypatch.setattr(stream_module, "_read", read)

    async def body() -> None:
        async with pg.with_connection(**server_kwargs, statement_cache_size=cache) as conn:
            sql = "SELECT $1::int AS n, 'a' || $1::text AS t"
            cut[0] = 1 << 16
            assert await fetch_rows(conn, sql, [0]) == [("0", "a0")]
            for i in range(1, 90):
                cut[0] = i
                # Early reads are skipped for a while after a miss, and a streak ends
                # in a trip through the loop: reset both so that every query reads.
                conn._stream._early_credit = 0
                connection_module._early_streak = 0
                assert await fetch_rows(conn, sql, [i]) == [(str(i), f"a{i}")]
            await assert_usable(conn)

    run(body())
