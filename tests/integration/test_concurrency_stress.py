"""Cancellation and concurrency under stress: nothing stale, nothing lost, no hang.

Issue 3, "Concurrency". What API.md promises and these tests hold the client to:
* cancelling the awaiting task (or ``asyncio.timeout``) sends a CancelRequest, drains to
  ReadyForQuery and leaves the connection usable, and a cancel never hits a later
  statement: 500 rounds of a tiny timeout on ``pg_sleep`` each followed by a query never
  see 57014 or another statement's result;
* a task cancelled while its ``pushback`` or its COPY ``feed_data`` waits gets its
  CancelledError at once, nothing of a cancelled COPY is committed, the next query works
  and nothing (task, socket) is left behind;
* a cancelled ``close()`` still ends with the connection closed or failed; ``close()``
  with a query in flight is bounded (about 1 s) and the query gets a PgasyncError;
* concurrent calls are served first come, first served, each with its own outcome, even
  pipelined and with server errors among them; cancelling a pipelined call that is not
  at the head affects it alone; a pushback holds the calls queued behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

import postgres_async as pg
from support import (
    Row,
    assert_usable,
    fetch_rows,
    ignore_row,
    open_socket_count,
    wait_until_running,
)


# ------------------------------------------------------------------------------ helpers
def other_tasks() -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task is not current}


async def settle_tasks(before: set[asyncio.Task[Any]], within: float = 2.0) -> None:
    """Wait (bounded) until no task started since ``before`` is pending, else fail."""
    deadline = time.monotonic() + within
    while True:
        leftover = other_tasks() - before
        if not leftover:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"tasks left behind: {leftover!r}")
        await asyncio.sleep(0.01)


async def finished_within(task: asyncio.Task[Any], seconds: float) -> None:
    """``task`` is done after at most ``seconds`` (its outcome is not looked at)."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    assert task in done, f"{task!r} still running after {seconds} s"


# ------------------------------------------------------------------ tiny timeouts x500
async def test_tiny_timeouts_never_leave_a_stale_cancel(conn: pg.Connection) -> None:
    """500 rounds: ``pg_sleep(0.05)`` under a 1-10 ms timeout, then a query that must
    give its own answer (never 57014 from a late CancelRequest, never another result)."""
    timeouts = 0
    started = time.monotonic()
    async with asyncio.timeout(60):
        for i in range(500):
            # 1..10 ms, in a pattern that is not a multiple of anything else here.
            limit = 0.001 + ((i * 7) % 10) * 0.001
            try:
                async with asyncio.timeout(limit):
                    await conn.query("SELECT pg_sleep(0.05)", handle_row=ignore_row)
            except TimeoutError:
                timeouts += 1
            try:
                rows = await fetch_rows(conn, "SELECT $1::int, 'round'", [i])
            except pg.PgasyncError as exc:
                pytest.fail(f"round {i} (timeout {limit * 1000:.0f} ms): {exc}")
            assert rows == [(str(i), "round")], f"round {i}: {rows!r}"
            assert conn.status == pg.Open()
    assert timeouts == 500
    assert time.monotonic() - started < 60


async def test_tiny_timeouts_with_a_query_queued_behind(conn: pg.Connection) -> None:
    """The same with the follow-up query already queued when the timeout fires."""
    async with asyncio.timeout(60):
        for i in range(200):
            limit = 0.001 + (i % 10) * 0.001
            follow = asyncio.ensure_future(fetch_rows(conn, "SELECT $1::int", [i]))
            try:
                async with asyncio.timeout(limit):
                    await conn.query("SELECT pg_sleep(0.05)", handle_row=ignore_row)
            except TimeoutError:
                pass
            else:
                pytest.fail("pg_sleep(0.05) finished within 10 ms")
            # The slow statement went out first with the follow-up pipelined behind it;
            # the follow-up must get its own answer, not 57014.
            assert await follow == [(str(i),)], f"round {i}"
            assert await fetch_rows(conn, "SELECT $1::int + 1", [i]) == [(str(i + 1),)]


async def test_timeout_after_follow_up_is_queued(conn: pg.Connection) -> None:
    """A timeout on a statement that has another one queued behind it (not yet sent)."""
    cancelled = 0
    async with asyncio.timeout(60):
        for i in range(100):
            slow = asyncio.ensure_future(conn.query("SELECT pg_sleep(0.05)", handle_row=ignore_row))
            await asyncio.sleep(0)  # slow is in flight first
            follow = asyncio.ensure_future(fetch_rows(conn, "SELECT $1::int", [i]))
            await asyncio.sleep(0.001 + (i % 10) * 0.001)
            # A stalled machine may wake us after the reply, with nothing left to cancel.
            if slow.cancel():
                cancelled += 1
                with pytest.raises(asyncio.CancelledError):
                    await slow
            else:
                assert await slow == pg.CommandComplete("SELECT", 1)
            try:
                assert await follow == [(str(i),)], f"round {i}"
            except pg.PgasyncError as exc:
                pytest.fail(f"round {i}: the follow-up query failed: {exc}")
    assert cancelled > 0


# -------------------------------------------------------------- cancel during pushback
@pytest.mark.parametrize("kind", ["future", "coroutine"])
async def test_cancel_during_pushback(conn: pg.Connection, kind: str) -> None:
    """handle_row's pushback blocks; cancelling the task raises at once, the connection
    goes on with correct results, and the client leaves no task behind."""
    loop = asyncio.get_running_loop()
    blocked = asyncio.Event()
    gate: asyncio.Future[None] = loop.create_future()
    never = asyncio.Event()
    seen: list[int] = []
    before = other_tasks()

    def handle_row(_names: tuple[str, ...], values: Row) -> None:
        assert values[0] is not None
        seen.append(int(values[0]))

    async def block_forever() -> None:
        await never.wait()

    def pushback() -> Awaitable[None] | None:
        if len(seen) == 100:
            blocked.set()
            return gate if kind == "future" else block_forever()
        return None

    task = asyncio.ensure_future(
        conn.query(
            "SELECT g, repeat('x', 1000) FROM generate_series(1, 200000) g",
            handle_row=handle_row,
            pushback=pushback,
        )
    )
    async with asyncio.timeout(10):
        await blocked.wait()
        await asyncio.sleep(0.1)
        assert not task.done()
        assert seen == list(range(1, 101))
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - cancelled_at < 1.0
        assert seen == list(range(1, 101)), "handle_row ran after the cancel"
        rows = await fetch_rows(conn, "SELECT g FROM generate_series(1, 5) g")
        assert rows == [(str(g),) for g in range(1, 6)]
        await assert_usable(conn)
        # The client dropped what it awaited for us; our own future we settle ourselves.
        await settle_tasks(before)
    gate.cancel()


async def test_cancel_during_pushback_with_queued_queries(conn: pg.Connection) -> None:
    """Queries queued behind a blocked pushback get their own results after the cancel."""
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    blocked = asyncio.Event()
    count = 0

    def handle_row(_names: tuple[str, ...], _values: Row) -> None:
        nonlocal count
        count += 1

    def pushback() -> Awaitable[None] | None:
        if count == 10:
            blocked.set()
            return gate
        return None

    async with asyncio.timeout(10):
        task = asyncio.ensure_future(
            conn.query(
                "SELECT g FROM generate_series(1, 100000) g",
                handle_row=handle_row,
                pushback=pushback,
            )
        )
        await blocked.wait()
        queued = [asyncio.ensure_future(fetch_rows(conn, "SELECT $1::int", [i])) for i in range(20)]
        await asyncio.sleep(0.05)
        assert not any(q.done() for q in queued)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        results = await asyncio.gather(*queued)
        assert results == [[(str(i),)] for i in range(20)]
        await assert_usable(conn)
    gate.cancel()


# ---------------------------------------------------------------- cancel during COPY IN
def feed_variants(rows: int, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """feed_data forms that send ``rows`` rows and then wait forever."""
    never: asyncio.Future[None] = loop.create_future()
    gate = asyncio.Event()

    def wait_future() -> Callable[[], object]:
        sent = 0

        def feed() -> object:
            nonlocal sent
            if sent < rows:
                sent += 1
                return pg.Data([str(sent)])
            return pg.Wait(never)

        return feed

    def wait_coroutine() -> Callable[[], object]:
        sent = 0

        def feed() -> object:
            nonlocal sent
            if sent < rows:
                sent += 1
                return pg.Data([str(sent)])
            return pg.Wait(gate.wait())

        return feed

    def async_callable() -> Callable[[], Awaitable[object]]:
        sent = 0

        async def feed() -> object:
            nonlocal sent
            if sent < rows:
                sent += 1
                return pg.Data([str(sent)])
            await gate.wait()
            return pg.Finished()

        return feed

    async def async_iterator() -> AsyncIterator[list[str]]:
        for i in range(1, rows + 1):
            yield [str(i)]
        await gate.wait()

    return {
        "wait_future": wait_future(),
        "wait_coroutine": wait_coroutine(),
        "async_callable": async_callable(),
        "async_iterator": async_iterator(),
    }


@pytest.mark.parametrize(
    "kind", ["wait_future", "wait_coroutine", "async_callable", "async_iterator"]
)
async def test_cancel_during_copy_in(
    conn: pg.Connection, observer: pg.Connection, kind: str
) -> None:
    table = f"stress_copy_{uuid.uuid4().hex[:12]}"
    await conn.query_expect_no_data(f"CREATE TABLE {table} (a int)")
    loop = asyncio.get_running_loop()
    before = other_tasks()
    try:
        feed = feed_variants(5000, loop)[kind]
        task = asyncio.ensure_future(conn.copy_in_rows(table, ["a"], feed_data=feed))
        async with asyncio.timeout(15):
            await wait_until_running(observer, conn.backend_pid, "COPY%", within=5.0, interval=0.01)
            await asyncio.sleep(0.2)  # the feeder has sent its rows and now waits
            assert not task.done()
            cancelled_at = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - cancelled_at < 1.0
            assert await fetch_rows(conn, f"SELECT count(*) FROM {table}") == [("0",)]
            assert await fetch_rows(observer, f"SELECT count(*) FROM {table}") == [("0",)]
            await assert_usable(conn)
            # A COPY after the cancelled one works.
            done = await conn.copy_in_rows(table, ["a"], feed_data=[["7"], ["8"]])
            assert done == pg.CommandComplete("COPY", 2)
            await settle_tasks(before)
    finally:
        await observer.query_expect_no_data(f"DROP TABLE IF EXISTS {table}")


# ------------------------------------------------------------------ cancel during close
async def test_cancel_during_close_with_query_in_flight(
    server_kwargs: dict[str, Any],
) -> None:
    """close() waits for the in-flight query; cancelling it must not leave the
    connection half-closed: it still ends closed (or failed), nothing is left open."""
    sockets_before = open_socket_count()
    before = other_tasks()
    conn = await pg.connect(**server_kwargs)
    async with asyncio.timeout(10):
        query = asyncio.ensure_future(fetch_rows(conn, "SELECT pg_sleep(0.5), 'done'"))
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(conn.close())
        await asyncio.sleep(0.05)
        assert not closing.done()
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        # The query either finished (the close waited for it) or learnt of the failure.
        with contextlib.suppress(pg.PgasyncError):
            assert await query == [("", "done")]
        with contextlib.suppress(pg.PgasyncError):
            await conn.close_finished()
        assert isinstance(conn.status, pg.ClosedGracefully | pg.Failed)
        if isinstance(conn.status, pg.Failed):
            assert conn.status.resources_released
        await settle_tasks(before)
    assert open_socket_count() == sockets_before


@pytest.mark.parametrize("steps", [0, 1, 2, 5])
async def test_cancel_during_close_of_idle_connection(
    server_kwargs: dict[str, Any], steps: int
) -> None:
    """Cancelled after ``steps`` loop iterations of close(): still ends closed."""
    sockets_before = open_socket_count()
    before = other_tasks()
    conn = await pg.connect(**server_kwargs)
    async with asyncio.timeout(10):
        closing = asyncio.ensure_future(conn.close())
        await asyncio.sleep(0)  # close() has started: Terminate is written
        for _ in range(steps):
            await asyncio.sleep(0)
        closing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closing
        with contextlib.suppress(pg.PgasyncError):
            await asyncio.wait_for(conn.close_finished(), 2)
        assert isinstance(conn.status, pg.ClosedGracefully | pg.Failed), conn.status
        # close() again gives the same final outcome, at once.
        again = asyncio.ensure_future(conn.close())
        await finished_within(again, 0.1)
        if isinstance(conn.status, pg.ClosedGracefully):
            again.result()
        else:
            with pytest.raises(pg.PgasyncError):
                again.result()
        await settle_tasks(before)
    assert open_socket_count() == sockets_before


# --------------------------------------------------------- close with a query in flight
async def test_close_with_query_in_flight_is_bounded(server_kwargs: dict[str, Any]) -> None:
    sockets_before = open_socket_count()
    conn = await pg.connect(**server_kwargs)
    async with asyncio.timeout(10):
        query = asyncio.ensure_future(fetch_rows(conn, "SELECT pg_sleep(5)"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        closing = asyncio.ensure_future(conn.close())
        await finished_within(closing, 1.5)
        assert time.monotonic() - started < 1.5
        await finished_within(query, 0.1)
        error = query.exception()
        assert isinstance(error, pg.PgasyncError), repr(error)
        # A connection exception (class 08) that says the close is why.
        assert (error.postgres_error_code or "").startswith("08"), str(error)
        assert "close" in str(error), str(error)
        # close() raised (the teardown was not graceful) or returned: either way final.
        if closing.exception() is not None:
            assert isinstance(closing.exception(), pg.PgasyncError)
        assert isinstance(conn.status, pg.ClosedGracefully | pg.Failed)
        with pytest.raises(pg.PgasyncError, match=r"closed by user|previously-failed"):
            await fetch_rows(conn, "SELECT 1")
    assert open_socket_count() == sockets_before


async def test_close_with_queued_queries(server_kwargs: dict[str, Any]) -> None:
    """A query in flight and more queued behind it: every one gets a clear outcome."""
    conn = await pg.connect(**server_kwargs)
    async with asyncio.timeout(10):
        running = asyncio.ensure_future(fetch_rows(conn, "SELECT pg_sleep(5)"))
        queued = [asyncio.ensure_future(fetch_rows(conn, "SELECT $1::int", [i])) for i in range(5)]
        await asyncio.sleep(0.1)
        closing = asyncio.ensure_future(conn.close())
        await finished_within(closing, 1.5)
        await asyncio.wait([running, *queued], timeout=0.5)
        for task in [running, *queued]:
            assert task.done()
            if task.exception() is None:
                continue  # a query pipelined before close() may have been answered
            assert isinstance(task.exception(), pg.PgasyncError), repr(task.exception())
        if closing.exception() is not None:
            assert isinstance(closing.exception(), pg.PgasyncError)


async def test_close_with_cancel_before_close(server_kwargs: dict[str, Any]) -> None:
    """try_cancel_statement_before_close: the statement is cancelled (57014) and the
    close is graceful, well within the bound."""
    conn = await pg.connect(**server_kwargs)
    async with asyncio.timeout(10):
        query = asyncio.ensure_future(fetch_rows(conn, "SELECT pg_sleep(5)"))
        await asyncio.sleep(0.1)
        closing = asyncio.ensure_future(conn.close(try_cancel_statement_before_close=True))
        await finished_within(closing, 1.5)
        await finished_within(query, 0.1)
        error = query.exception()
        assert isinstance(error, pg.PgasyncError)
        assert error.postgres_error_code == "57014"
        assert closing.exception() is None
        assert conn.status == pg.ClosedGracefully()


# ---------------------------------------------------------------------- pipelining
async def test_pipelined_tasks_each_see_their_own_outcome(conn: pg.Connection) -> None:
    """10 tasks x 200 queries on one connection; every 7th query divides by zero."""

    async def worker(task_id: int) -> list[str]:
        outcomes: list[str] = []
        for i in range(200):
            divisor = 0 if i % 7 == 0 else 1
            try:
                rows = await fetch_rows(
                    conn,
                    "SELECT $1::int, $2::int, 100 / $3::int",
                    [task_id, i, divisor],
                )
            except pg.PgasyncError as exc:
                outcomes.append(f"{task_id}:{i}:{exc.postgres_error_code}")
            else:
                assert rows == [(str(task_id), str(i), "100")], rows
                outcomes.append(f"{task_id}:{i}:ok")
        return outcomes

    async with asyncio.timeout(30):
        results = await asyncio.gather(*(worker(t) for t in range(10)))
    for task_id, outcomes in enumerate(results):
        expected = [f"{task_id}:{i}:{'22012' if i % 7 == 0 else 'ok'}" for i in range(200)]
        assert outcomes == expected
    await assert_usable(conn)


async def test_deep_pipeline_completes_in_submission_order(conn: pg.Connection) -> None:
    """2000 queries submitted at once: outcomes match, completions come in order."""
    completed: list[int] = []

    async def one(i: int) -> str:
        try:
            rows = await fetch_rows(
                conn, "SELECT $1::int, 10 / $2::int", [i, 0 if i % 7 == 0 else 2]
            )
        except pg.PgasyncError as exc:
            completed.append(i)
            return str(exc.postgres_error_code)
        completed.append(i)
        assert rows == [(str(i), "5")]
        return "ok"

    async with asyncio.timeout(30):
        results = await asyncio.gather(*(one(i) for i in range(2000)))
    assert results == ["22012" if i % 7 == 0 else "ok" for i in range(2000)]
    assert completed == list(range(2000))
    await assert_usable(conn)


async def test_cancel_one_pipelined_query_not_at_head(conn: pg.Connection) -> None:
    """Four pg_sleep queries pipelined; the second is cancelled while the first runs.
    Only it is affected: a stray CancelRequest would give another one 57014."""
    async with asyncio.timeout(10):
        tasks = [
            asyncio.ensure_future(fetch_rows(conn, f"SELECT pg_sleep(0.2), '{name}'"))
            for name in "abcd"
        ]
        await asyncio.sleep(0.05)  # all four are written; "a" is running
        tasks[1].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[0] == [("", "a")]
    assert results[2] == [("", "c")]
    assert results[3] == [("", "d")]
    await assert_usable(conn)


async def test_cancel_many_pipelined_queries(conn: pg.Connection) -> None:
    """Every third of 60 pipelined queries cancelled at once: the others are intact."""
    async with asyncio.timeout(20):
        tasks = [
            asyncio.ensure_future(fetch_rows(conn, "SELECT pg_sleep(0.01), $1::int", [i]))
            for i in range(60)
        ]
        await asyncio.sleep(0.005)
        for i in range(1, 60, 3):
            tasks[i].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        if i % 3 == 1:
            # Cancelled, unless it had already completed when cancel() was called.
            assert isinstance(result, asyncio.CancelledError) or result == [("", str(i))]
        else:
            assert result == [("", str(i))], f"query {i}: {result!r}"
    await assert_usable(conn)


async def test_pushback_of_one_pipelined_query_holds_the_others(conn: pg.Connection) -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    blocked = asyncio.Event()
    seen: list[int] = []

    def handle_row(_names: tuple[str, ...], values: Row) -> None:
        assert values[0] is not None
        seen.append(int(values[0]))

    def pushback() -> Awaitable[None] | None:
        if len(seen) == 100:
            blocked.set()
            return gate
        return None

    async with asyncio.timeout(15):
        head = asyncio.ensure_future(
            conn.query(
                "SELECT g FROM generate_series(1, 50000) g",
                handle_row=handle_row,
                pushback=pushback,
            )
        )
        behind = [asyncio.ensure_future(fetch_rows(conn, "SELECT $1::int", [i])) for i in range(10)]
        await blocked.wait()
        await asyncio.sleep(0.3)
        assert not head.done()
        assert not any(task.done() for task in behind), "a query overtook a pushback"
        assert seen == list(range(1, 101))
        gate.set_result(None)
        assert await head == pg.CommandComplete("SELECT", 50000)
        assert seen == list(range(1, 50001))
        assert await asyncio.gather(*behind) == [[(str(i),)] for i in range(10)]
    await assert_usable(conn)


# ------------------------------------------------------------- random cancellations
async def test_random_cancellations_never_cross_wires(conn: pg.Connection) -> None:
    """300 queries launched at random moments, a random third of them cancelled at
    random moments: every query not cancelled gets exactly its own outcome (its row, or
    its own division by zero), never 57014 and never another query's row."""
    rng = random.Random(20240603)
    outcomes: dict[int, object] = {}
    cancelled: set[int] = set()

    async def one(i: int, sleep: float, divisor: int) -> None:
        try:
            rows = await fetch_rows(
                conn, "SELECT pg_sleep($1), $2::int, 6 / $3::int", [sleep, i, divisor]
            )
        except pg.PgasyncError as exc:
            outcomes[i] = exc.postgres_error_code
        else:
            outcomes[i] = rows

    tasks: dict[int, asyncio.Task[None]] = {}
    plans: dict[int, tuple[float, int]] = {}
    async with asyncio.timeout(45):
        for i in range(300):
            sleep = rng.choice([0.0, 0.0, 0.002, 0.01])
            divisor = 0 if rng.random() < 0.1 else rng.choice([1, 2, 3])
            plans[i] = (sleep, divisor)
            tasks[i] = asyncio.ensure_future(one(i, sleep, divisor))
            if rng.random() < 0.33:
                victim = rng.choice(list(tasks))
                if not tasks[victim].done():
                    cancelled.add(victim)
                    tasks[victim].cancel()
            await asyncio.sleep(rng.choice([0.0, 0.0, 0.001, 0.003]))
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    for i, task in tasks.items():
        sleep, divisor = plans[i]
        if task.cancelled():
            assert i in cancelled, f"query {i} was cancelled without being asked to"
            continue
        expected: object = "22012" if divisor == 0 else [("", str(i), str(6 // divisor))]
        assert outcomes[i] == expected, f"query {i} (sleep {sleep}, /{divisor}): {outcomes[i]!r}"
    assert any(task.cancelled() for task in tasks.values())
    await assert_usable(conn)


# --------------------------------------------------------- cancel a streaming COPY IN
def endless_rows() -> Iterator[list[str]]:
    i = 0
    while True:
        i += 1
        yield [str(i)]


async def endless_rows_async() -> AsyncIterator[list[str]]:
    i = 0
    while True:
        i += 1
        if i % 1000 == 0:
            await asyncio.sleep(0)
        yield [str(i)]


@pytest.mark.parametrize("kind", ["iterator", "async_iterator"])
async def test_cancel_copy_in_while_rows_stream(
    conn: pg.Connection, observer: pg.Connection, kind: str
) -> None:
    """A feed that never ends and never waits: cancelling still stops it at once and
    commits nothing."""
    table = f"stress_copy_{uuid.uuid4().hex[:12]}"
    await conn.query_expect_no_data(f"CREATE TABLE {table} (a int)")
    before = other_tasks()
    try:
        feed: Any = endless_rows() if kind == "iterator" else endless_rows_async()
        task = asyncio.ensure_future(conn.copy_in_rows(table, ["a"], feed_data=feed))
        async with asyncio.timeout(15):
            await wait_until_running(observer, conn.backend_pid, "COPY%", within=5.0, interval=0.01)
            await asyncio.sleep(0.3)  # some megabytes of rows are on their way
            assert not task.done()
            cancelled_at = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - cancelled_at < 1.0
            assert await fetch_rows(conn, f"SELECT count(*) FROM {table}") == [("0",)]
            await assert_usable(conn)
            await settle_tasks(before)
    finally:
        await observer.query_expect_no_data(f"DROP TABLE IF EXISTS {table}")


# ----------------------------------------------------- close while a pushback blocks
async def test_close_while_pushback_blocks_is_bounded(server_kwargs: dict[str, Any]) -> None:
    """The query in flight is held by its pushback: close() cannot wait for it forever;
    within the bound it ends, and the query gets a PgasyncError."""
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    blocked = asyncio.Event()
    sockets_before = open_socket_count()
    conn = await pg.connect(**server_kwargs)

    def pushback() -> Awaitable[None] | None:
        blocked.set()
        return gate

    async with asyncio.timeout(10):
        query = asyncio.ensure_future(
            conn.query(
                "SELECT g FROM generate_series(1, 100000) g",
                handle_row=ignore_row,
                pushback=pushback,
            )
        )
        await blocked.wait()
        closing = asyncio.ensure_future(conn.close())
        await finished_within(closing, 1.5)
        await finished_within(query, 0.1)
        assert isinstance(query.exception(), pg.PgasyncError), repr(query.exception())
        if closing.exception() is not None:
            assert isinstance(closing.exception(), pg.PgasyncError)
        assert isinstance(conn.status, pg.ClosedGracefully | pg.Failed)
    gate.cancel()
    await asyncio.sleep(0.01)
    assert open_socket_count() == sockets_before


async def test_concurrent_closes_share_one_outcome(server_kwargs: dict[str, Any]) -> None:
    conn = await pg.connect(**server_kwargs)
    async with asyncio.timeout(5):
        results = await asyncio.gather(*(conn.close() for _ in range(5)), return_exceptions=True)
    assert results == [None] * 5
    assert conn.status == pg.ClosedGracefully()
