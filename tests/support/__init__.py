"""Test support code shared by the suites (importable as ``support`` under pytest).

``support.fake_server`` is a scripted fake PostgreSQL server for what a real server will
not do; the helpers here are small conveniences for tests of the client.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from postgres_async import Connection, Status


def ignore_row(_names: tuple[str, ...], _values: tuple[str | None, ...]) -> None:
    """A ``handle_row`` for queries whose rows do not matter."""


async def fetch_rows(
    conn: Connection, sql: str, parameters: Sequence[object] | None = None
) -> list[tuple[str | None, ...]]:
    """Run ``sql`` and return its rows as tuples of text values (None for NULL)."""
    rows: list[tuple[str | None, ...]] = []

    def handle_row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
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


async def wait_until_running(
    observer: Connection, pid: int | None, pattern: str, within: float = 10.0
) -> None:
    """Poll pg_stat_activity from ``observer`` until backend ``pid`` is active on a
    statement matching the LIKE ``pattern``."""
    assert pid is not None, "the connection has no backend pid"
    sql = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE pid = $1 AND state = 'active' AND query LIKE $2"
    )
    async with asyncio.timeout(within):
        while True:  # polling another server process: there is no event to wait for
            if await fetch_value(observer, sql, [pid, pattern]) == "1":
                return
            await asyncio.sleep(0.02)


def open_socket_count() -> int:
    """How many sockets this process has open (Linux: /proc/self/fd)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue  # the fd of the listing itself, already closed
    return count


def status_of(conn: Connection) -> Status:
    """``conn.status``, read through a call so type checkers do not carry an earlier
    ``isinstance`` narrowing over to the next check."""
    return conn.status
