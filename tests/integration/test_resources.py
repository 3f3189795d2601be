"""Resources stay bounded: memory under a slow consumer, objects and descriptors over
many connections, and a warning for a connection nobody closed.

Issue 3, "Resources":
* 1M rows of 1 KB read by a slow consumer: the client does not buffer what it has not
  handled (its resident memory grows by less than 50 MB) and the server is the one that
  waits (``pg_stat_activity.wait_event = 'ClientWrite'`` for the reading backend);
* 100k notifications flooding a connection whose callback is slow: every one is
  delivered, in order, and memory stays bounded;
* connect/query/close 1000 times leaves the number of live objects and of open file
  descriptors where it was;
* a connection garbage-collected while still open emits a ResourceWarning that names
  it, and its socket is released.

Memory is the process's resident set size read from /proc/self/statm, sampled while the
data flows; a baseline is taken right before.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import time
from collections.abc import Awaitable
from typing import Any

import pytest

import postgres_async as pg
from support import Row, assert_usable, fetch_rows, ignore_row

MB = 1024 * 1024
#: Most the client's resident memory may grow while a big result or a flood streams in.
MEMORY_BOUND = 50 * MB
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------ helpers
def resident_memory() -> int:
    """Bytes of the process's resident set right now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class MemoryWatch:
    """The baseline resident memory and the highest sample since."""

    def __init__(self) -> None:
        gc.collect()
        self.baseline = resident_memory()
        self.peak = self.baseline

    def sample(self) -> None:
        self.peak = max(self.peak, resident_memory())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


# ------------------------------------------------------------- 1M rows, slow consumer
TOTAL_ROWS = 1_000_000
BIG_QUERY = f"SELECT g, repeat('x', 1000) FROM generate_series(1, {TOTAL_ROWS}) g"
SLOW_ROWS = 50_000


@pytest.mark.parametrize("slowness", ["pushback_sleep", "blocking_handle_row"])
async def test_slow_consumer_of_a_million_rows(
    conn: pg.Connection, observer: pg.Connection, slowness: str
) -> None:
    """The first ~50k rows are consumed slowly (pushback awaiting a short sleep every
    50 rows, or handle_row itself blocking in time.sleep every 50 rows), until the
    server has been seen waiting in ClientWrite; the rest go at full speed. Every row
    arrives once and in order; memory stays bounded throughout."""
    memory = MemoryWatch()
    state = {"count": 0, "slow": True}
    wait_events: list[str | None] = []

    def handle_row(_names: tuple[str, ...], values: Row) -> None:
        count = state["count"] + 1
        state["count"] = count
        if values[0] != str(count) or values[1] is None or len(values[1]) != 1000:
            raise AssertionError(f"row {count}: {values[0]!r}, {len(values[1] or '')} chars")
        if count % 1000 == 0:
            memory.sample()
        if slowness == "blocking_handle_row" and state["slow"] and count % 50 == 0:
            time.sleep(0.001)

    def pushback() -> Awaitable[None] | None:
        if slowness == "pushback_sleep" and state["slow"] and state["count"] % 50 == 0:
            return asyncio.sleep(0.001)
        return None

    async def watch() -> None:
        """From the observer: sample the reader's wait_event until it is ClientWrite
        and enough rows went by slowly, then let the consumer speed up."""
        sql = "SELECT wait_event FROM pg_stat_activity WHERE pid = $1"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            rows = await fetch_rows(observer, sql, [conn.backend_pid])
            memory.sample()
            if rows:
                wait_events.append(rows[0][0])
            if "ClientWrite" in wait_events and state["count"] >= SLOW_ROWS:
                break
            await asyncio.sleep(0.005)
        state["slow"] = False

    started = time.monotonic()
    async with asyncio.timeout(40):
        watcher = asyncio.ensure_future(watch())
        try:
            done = await conn.query(BIG_QUERY, handle_row=handle_row, pushback=pushback)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    elapsed = time.monotonic() - started
    assert done == pg.CommandComplete("SELECT", TOTAL_ROWS)
    assert state["count"] == TOTAL_ROWS
    assert "ClientWrite" in wait_events, f"wait events seen: {sorted(set(map(str, wait_events)))}"
    assert memory.growth < MEMORY_BOUND, f"resident memory grew by {memory.growth / MB:.1f} MB"
    assert elapsed < 30
    await assert_usable(conn)


async def test_slow_consumer_cancelled_mid_stream(
    conn: pg.Connection, observer: pg.Connection
) -> None:
    """Consumed slowly until the server waits in ClientWrite, then cancelled: the
    cancel is prompt, memory stayed bounded and the connection goes on."""
    memory = MemoryWatch()
    count = 0
    server_waits = asyncio.Event()

    def handle_row(_names: tuple[str, ...], values: Row) -> None:
        nonlocal count
        count += 1
        assert values[0] == str(count)
        if count % 1000 == 0:
            memory.sample()

    def pushback() -> Awaitable[None] | None:
        return asyncio.sleep(0.001) if count % 100 == 0 else None

    async with asyncio.timeout(20):
        task = asyncio.ensure_future(
            conn.query(BIG_QUERY, handle_row=handle_row, pushback=pushback)
        )
        sql = "SELECT wait_event FROM pg_stat_activity WHERE pid = $1"
        while not server_waits.is_set():
            if await fetch_rows(observer, sql, [conn.backend_pid]) == [("ClientWrite",)]:
                server_waits.set()
            else:
                await asyncio.sleep(0.005)
        while count < SLOW_ROWS:
            await asyncio.sleep(0.01)
            memory.sample()
        task.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - cancelled_at < 1.0
        stopped_at = count
        assert SLOW_ROWS <= stopped_at < TOTAL_ROWS
        await assert_usable(conn)
        assert count == stopped_at, "handle_row ran after the cancel"
    assert memory.growth < MEMORY_BOUND, f"resident memory grew by {memory.growth / MB:.1f} MB"


# --------------------------------------------------------------- notification flood
FLOOD = 100_000
FLOOD_BATCH = 20_000
PAYLOAD_PAD = 1000


async def test_notification_flood_to_a_slow_callback(
    conn: pg.Connection, observer: pg.Connection
) -> None:
    """100k notifications (about 100 MB of payload) sent in five big transactions to a
    connection whose callback is slow.

    The policy: notification callbacks run inline, in the order the server sent them,
    while the connection is reading; a slow callback therefore holds the reading (the
    socket is not read while it runs), so the kernel's buffers and then the server's
    notification queue absorb the flood, not the client's memory. Nothing is dropped.
    """
    memory = MemoryWatch()
    received: list[int] = []
    senders: set[int] = set()

    def callback(pid: int, payload: str) -> None:
        head, _, pad = payload.partition(":")
        received.append(int(head))
        senders.add(pid)
        assert len(pad) == PAYLOAD_PAD
        count = len(received)
        if count % 50 == 0:
            time.sleep(0.0005)  # slow, and synchronous: the loop is held meanwhile
        if count % 1000 == 0:
            memory.sample()

    await conn.listen_to_notifications("flood", callback)
    async with asyncio.timeout(45):
        for start in range(1, FLOOD + 1, FLOOD_BATCH):
            await observer.query(
                f"SELECT pg_notify('flood', g::text || ':' || repeat('x', {PAYLOAD_PAD})) "
                f"FROM generate_series({start}, {start + FLOOD_BATCH - 1}) g",
                handle_row=ignore_row,
            )
            memory.sample()
        while len(received) < FLOOD:
            await asyncio.sleep(0.02)
            memory.sample()
    assert received == list(range(1, FLOOD + 1))
    assert senders == {observer.backend_pid}
    assert memory.growth < MEMORY_BOUND, f"resident memory grew by {memory.growth / MB:.1f} MB"
    await assert_usable(conn)


# ------------------------------------------------------------------ 1000 connections
CYCLES = 1000
WARM_UP = 30
#: Live objects the 1000 cycles may add (caches that fill once, interning, ...); a leak
#: of even one object per connection would exceed it.
OBJECT_SLACK = 200
FAILED_CYCLES = 300


async def test_connect_query_close_1000_times_is_flat(server_kwargs: dict[str, Any]) -> None:
    async def cycle(i: int) -> None:
        conn = await pg.connect(**server_kwargs)
        try:
            assert await fetch_rows(conn, "SELECT $1::int", [i]) == [(str(i),)]
        finally:
            await conn.close()
        assert conn.status == pg.ClosedGracefully()

    async with asyncio.timeout(60):
        for i in range(WARM_UP):
            await cycle(i)
        await asyncio.sleep(0.05)
        gc.collect()
        objects_before = len(gc.get_objects())
        fds_before = open_fds()
        for i in range(CYCLES):
            await cycle(i)
        await asyncio.sleep(0.05)
        gc.collect()
        objects_after = len(gc.get_objects())
        fds_after = open_fds()
    assert fds_after == fds_before, f"open descriptors: {fds_before} -> {fds_after}"
    assert objects_after - objects_before < OBJECT_SLACK, (
        f"live objects: {objects_before} -> {objects_after}"
    )


async def test_failed_connects_300_times_are_flat(server_kwargs: dict[str, Any]) -> None:
    """The same for attempts that fail (a wrong password), 300 of them: nothing piles
    up, not even in the errors' tracebacks."""
    # MD5: a cheap hash; the failure is what matters here.
    kwargs = {**server_kwargs, "user": "md5_user", "password": "wrong"}

    async def attempt() -> None:
        with pytest.raises(pg.PgasyncError) as info:
            await pg.connect(**kwargs)
        assert info.value.postgres_error_code == "28P01"

    async with asyncio.timeout(60):
        for _ in range(WARM_UP):
            await attempt()
        await asyncio.sleep(0.05)
        gc.collect()
        objects_before = len(gc.get_objects())
        fds_before = open_fds()
        for _ in range(FAILED_CYCLES):
            await attempt()
        await asyncio.sleep(0.05)
        gc.collect()
        objects_after = len(gc.get_objects())
        fds_after = open_fds()
    assert fds_after == fds_before, f"open descriptors: {fds_before} -> {fds_after}"
    assert objects_after - objects_before < OBJECT_SLACK, (
        f"live objects: {objects_before} -> {objects_after}"
    )


# ---------------------------------------------------------------- unclosed connection
def release(box: list[pg.Connection]) -> None:
    """Drop the last reference to a connection and collect garbage."""
    box.clear()
    gc.collect()


async def test_unclosed_connection_warns_and_is_released(
    server_kwargs: dict[str, Any], observer: pg.Connection
) -> None:
    fds_before = open_fds()
    conn = await pg.connect(**server_kwargs)
    await assert_usable(conn)
    pid = conn.backend_pid
    assert pid is not None
    shown = repr(conn)
    box = [conn]
    del conn
    with pytest.warns(ResourceWarning) as warned:
        release(box)
    texts = [str(w.message) for w in warned if issubclass(w.category, ResourceWarning)]
    assert any(f"pid={pid}" in text for text in texts), texts
    assert any(shown in text for text in texts), (shown, texts)
    async with asyncio.timeout(10):
        # The socket goes (polling /proc: there is no event for it) ...
        while open_fds() > fds_before:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        # ... and the server sees the client leave.
        sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
        while await fetch_rows(observer, sql, [pid]) != [("0",)]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


class Listener:
    """A notification callback that keeps a reference to its connection."""

    def __init__(self, conn: pg.Connection) -> None:
        self.conn = conn

    def __call__(self, _pid: int, _payload: str) -> None:
        pass


async def test_unclosed_connection_in_a_cycle_warns(server_kwargs: dict[str, Any]) -> None:
    """A connection kept alive only by a reference cycle through one of its own
    notification callbacks is still collected, with the warning."""
    conn = await pg.connect(**server_kwargs)
    pid = conn.backend_pid
    await conn.listen_to_notifications("c", Listener(conn))
    del conn  # only the cycle conn -> its callbacks -> Listener -> conn is left
    with pytest.warns(ResourceWarning, match=re.escape(f"pid={pid}")):
        gc.collect()
