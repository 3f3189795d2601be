"""One benchmark measurement in a fresh process: ``python bench/clients.py --client ...``.

``bench/run.py`` starts this once per client, workload, loop and round, so every
measurement has its own interpreter (peak RSS is that measurement's alone, and only the
client library being measured is imported). The process first pins itself to ``--cpu``,
connects, warms up, times the workload and prints one JSON object on stdout:
``{"value": ..., "unit": ..., "maxrss_kb": ..., ...}``, or ``{"error": ...}`` with exit
status 1. Connecting and warming up are not timed.

Clients: ``postgres_async``, ``asyncpg`` and ``psycopg`` (3, async). Some workloads
have variants, named ``client+variant`` (e.g. ``asyncpg+fetch``, ``psycopg+lock``), or
with several ``+``-joined flags (``postgres_async+cache+lock``).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, cast

SELECT_SQL = "SELECT $1::int"
NOTIFY_CHANNEL = "bench_channel"
COPY_TABLE = "bench_copy"
COPY_COLUMNS = ("id", "name", "label")
STREAM_TABLE = "bench_rows"
STREAM_COLUMNS = ("id", "name", "label", "amount", "created")
#: postgres_async's statement cache in the ``+cache`` variants: asyncpg's default size.
STATEMENT_CACHE_SIZE = 100

#: Clients (with variants) per workload; bench/run.py uses this to decide what to run.
CLIENTS: dict[str, tuple[str, ...]] = {
    "select": (
        "postgres_async",
        "postgres_async+cache",
        "asyncpg",
        "psycopg",
        "wire",
        "wire+prepared",
    ),
    "stream": ("postgres_async", "asyncpg+cursor", "asyncpg+fetch", "psycopg+stream"),
    "copy": ("postgres_async", "postgres_async+binary", "asyncpg", "psycopg"),
    "multi": ("postgres_async", "postgres_async+cache", "asyncpg", "psycopg"),
    "shared": (
        "postgres_async",
        "postgres_async+lock",
        "postgres_async+cache",
        "postgres_async+cache+lock",
        "asyncpg+lock",
        "psycopg+lock",
    ),
    "notify": ("postgres_async", "postgres_async+simple", "asyncpg", "psycopg+notifies"),
}

Json = dict[str, Any]


def copy_rows(n: int) -> Iterator[tuple[int, str, str]]:
    """The rows COPY IN sends: (int, text, text). No character needs escaping, so the
    same rows written as a TSV file are what ``psql \\copy`` sends."""
    for i in range(n):
        yield (i, f"name-{i}", f"label {i * 7919 % 100003} of the benchmark row")


def stream_sql(rows: int) -> str:
    return f"SELECT {', '.join(STREAM_COLUMNS)} FROM {STREAM_TABLE} LIMIT {rows}"


def variant_flags(variant: str) -> frozenset[str]:
    """``"cache+lock"`` -> {"cache", "lock"}."""
    return frozenset(flag for flag in variant.split("+") if flag)


def postgres_async_has_binary_copy() -> bool:
    """Whether ``copy_in_rows`` takes ``format=`` (the binary COPY path of issue 4)."""
    import postgres_async as pg

    return "format" in inspect.signature(pg.Connection.copy_in_rows).parameters


def _current_rss_kb() -> int:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    index = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


# ------------------------------------------------------------------------ connections


class Target:
    """Where to connect, as each client library wants it."""

    def __init__(self, host: str, port: int, user: str, database: str) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.database = database

    async def postgres_async(self, flags: frozenset[str]) -> Any:
        import postgres_async as pg

        return await pg.connect(
            server=(self.host, self.port),
            user=self.user,
            database=self.database,
            statement_cache_size=STATEMENT_CACHE_SIZE if "cache" in flags else 0,
        )

    async def asyncpg(self, flags: frozenset[str]) -> Any:
        import asyncpg

        return await asyncpg.connect(
            host=self.host, port=self.port, user=self.user, database=self.database
        )

    async def psycopg(self, flags: frozenset[str]) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=self.database,
            autocommit=True,
        )

    async def wire(self, flags: frozenset[str]) -> WireConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(WireConnection, self.host, self.port)
        await conn.log_in(self.user, self.database)
        if "prepared" in flags:
            from postgres_async.protocol import messages as m

            parse = m.encode_parse(SELECT_SQL, WIRE_STATEMENT)
            await conn.round_trip(parse + m.Sync().encode())
        return conn

    async def connect(self, library: str, variant: str = "") -> Any:
        factory: Callable[[frozenset[str]], Awaitable[Any]] = getattr(self, library)
        return await factory(variant_flags(variant))


WIRE_STATEMENT = "wire_select"


class WireConnection(asyncio.Protocol):
    """The floor for workload 1: what an asyncio client costs when it does nothing but
    the wire. Per query it builds the same five messages postgres_async sends (with
    ``+prepared``, what postgres_async sends with its statement cache: Bind of a
    statement prepared and described at connect, Execute, Sync), writes them, waits on
    one future until the reply ends with ReadyForQuery, and walks the reply only to take
    the one value: no state machine, no checks, no error handling (it trusts the server,
    and needs trust authentication). Not a client: a reference for how much of a client's figure is
    Python, asyncio and the kernel themselves."""

    def __init__(self) -> None:
        self._reply = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reply = self._reply
        reply += data
        # ReadyForQuery ('Z', length 5, status byte) ends every reply we wait for.
        if len(reply) >= 6 and reply[-6] == 0x5A and reply[-5:-1] == b"\0\0\0\x05":
            self._reply = bytearray()
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(bytes(reply))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"server went away: {exc}"))

    async def round_trip(self, message: bytes) -> bytes:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(message)
        return await self._waiter

    async def log_in(self, user: str, database: str) -> None:
        from postgres_async.protocol import messages as m

        startup = m.StartupMessage({"user": user, "database": database})
        reply = await self.round_trip(startup.encode())
        if not reply.startswith(m.AuthenticationOk().encode()):
            raise RuntimeError("the wire reference needs trust authentication")

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.write(b"X\0\0\0\x04")  # Terminate
            self._transport.close()


def _wire_value(reply: bytes) -> str:
    """The first value of the first DataRow in ``reply``."""
    pos = 0
    while reply[pos] != 0x44:  # 'D'
        pos += 1 + int.from_bytes(reply[pos + 1 : pos + 5], "big")
    size = int.from_bytes(reply[pos + 7 : pos + 11], "big")
    return reply[pos + 11 : pos + 11 + size].decode()


# A "query function" runs SELECT $1::int once with parameter i and returns the value.
QueryFn = Callable[[int], Awaitable[object]]


def _query_fn(
    library: str, conn: Any, lock: asyncio.Lock | None, flags: frozenset[str] = frozenset()
) -> QueryFn:
    if library == "postgres_async":
        last: list[object] = [None]

        def keep(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
            last[0] = values[0]

        async def pa_query(i: int) -> object:
            await conn.query(SELECT_SQL, [i], handle_row=keep)
            return last[0]

        query: QueryFn = pa_query
    elif library == "asyncpg":

        async def apg_query(i: int) -> object:
            return await conn.fetchval(SELECT_SQL, i)

        query = apg_query
    elif library == "wire":
        from postgres_async.protocol import messages as m

        prepared = "prepared" in flags
        parse = b"" if prepared else m.encode_parse(SELECT_SQL)
        statement = WIRE_STATEMENT if prepared else ""
        # A cached statement, once described, is bound without a Describe.
        describe = b"" if prepared else m.Describe("P").encode()
        tail = describe + m.Execute().encode() + m.Sync().encode()

        async def wire_query(i: int) -> object:
            bind = m.encode_bind_text([str(i).encode()], statement=statement)
            return _wire_value(await conn.round_trip(parse + bind + tail))

        query = wire_query
    elif library == "psycopg":

        async def psy_query(i: int) -> object:
            cursor = await conn.execute("SELECT %s::int", (i,))
            row = await cursor.fetchone()
            return row[0]

        query = psy_query
    else:
        raise ValueError(f"unknown library {library!r}")
    if lock is None:
        return query
    held = lock

    async def locked(i: int) -> object:
        async with held:
            return await query(i)

    return locked


async def _close(library: str, conn: Any) -> None:
    await conn.close()


# -------------------------------------------------------------------------- workloads


async def run_select(target: Target, library: str, variant: str, args: argparse.Namespace) -> Json:
    """Workload 1: ``n`` sequential ``SELECT $1::int`` on one connection."""
    conn = await target.connect(library, variant)
    try:
        query = _query_fn(library, conn, None, variant_flags(variant))
        for i in range(args.warmup):
            await query(i)
        n = args.n
        start = time.perf_counter()
        for i in range(n):
            value = await query(i)
        elapsed = time.perf_counter() - start
        if str(value) != str(n - 1):
            raise AssertionError(f"last query returned {value!r}, expected {n - 1}")
    finally:
        await _close(library, conn)
    return {"value": n / elapsed, "unit": "queries/s", "seconds": elapsed, "queries": n}


async def run_multi(target: Target, library: str, variant: str, args: argparse.Namespace) -> Json:
    """Workload 4: ``tasks`` connections, each doing ``n`` sequential queries, at once."""
    conns = [await target.connect(library, variant) for _ in range(args.tasks)]
    try:
        queries = [_query_fn(library, conn, None) for conn in conns]
        for query in queries:
            for i in range(max(1, args.warmup // args.tasks)):
                await query(i)
        start = time.perf_counter()
        results = await asyncio.gather(*(_sequential(query, args.n) for query in queries))
        elapsed = time.perf_counter() - start
    finally:
        for conn in conns:
            await _close(library, conn)
    _check_sequential(results, args.n)
    total = args.n * args.tasks
    return {"value": total / elapsed, "unit": "queries/s", "seconds": elapsed, "queries": total}


async def run_shared(target: Target, library: str, variant: str, args: argparse.Namespace) -> Json:
    """Workload 5: ``tasks`` tasks sharing one connection, ``n`` queries each.

    The ``+lock`` variants serialise the tasks with an asyncio.Lock (asyncpg and psycopg
    do not allow concurrent operations on one connection; for postgres_async it is the
    baseline without pipelining)."""
    conn = await target.connect(library, variant)
    try:
        lock = asyncio.Lock() if "lock" in variant_flags(variant) else None
        # One query function per task: postgres_async's keeps the last value its row
        # callback saw, which must not be another task's.
        queries = [_query_fn(library, conn, lock) for _ in range(args.tasks)]
        for i in range(args.warmup):
            await queries[0](i)
        start = time.perf_counter()
        results = await asyncio.gather(*(_sequential(query, args.n) for query in queries))
        elapsed = time.perf_counter() - start
    finally:
        await _close(library, conn)
    _check_sequential(results, args.n)
    total = args.n * args.tasks
    return {"value": total / elapsed, "unit": "queries/s", "seconds": elapsed, "queries": total}


async def _sequential(query: QueryFn, n: int) -> object:
    value: object = None
    for i in range(n):
        value = await query(i)
    return value


def _check_sequential(results: list[object], n: int) -> None:
    for value in results:
        if str(value) != str(n - 1):
            raise AssertionError(f"a task's last query returned {value!r}, expected {n - 1}")


async def run_stream(target: Target, library: str, variant: str, args: argparse.Namespace) -> Json:
    """Workload 2: one query streaming ``n`` rows to a callback that keeps nothing."""
    conn = await target.connect(library)
    count = 0
    try:
        if library == "postgres_async":

            def pa_row(_names: tuple[str, ...], _values: tuple[str | None, ...]) -> None:
                nonlocal count
                count += 1

            async def body(sql: str) -> None:
                await conn.query(sql, handle_row=pa_row)

        elif library == "asyncpg":

            def apg_row(_row: object) -> None:
                nonlocal count
                count += 1

            if variant == "cursor":

                async def body(sql: str) -> None:
                    async with conn.transaction():
                        async for row in conn.cursor(sql):
                            apg_row(row)

            elif variant == "fetch":

                async def body(sql: str) -> None:
                    for row in await conn.fetch(sql):
                        apg_row(row)

            else:
                raise ValueError(f"unknown asyncpg variant {variant!r}")
        elif library == "psycopg":

            def psy_row(_row: object) -> None:
                nonlocal count
                count += 1

            async def body(sql: str) -> None:
                async with conn.cursor() as cursor:
                    async for row in cursor.stream(sql):
                        psy_row(row)

        else:
            raise ValueError(f"unknown library {library!r}")
        await body(stream_sql(min(args.n, 1000)))  # warm up; not timed
        count = 0
        rss_before = _current_rss_kb()
        start = time.perf_counter()
        await body(stream_sql(args.n))
        elapsed = time.perf_counter() - start
    finally:
        await _close(library, conn)
    if count != args.n:
        raise AssertionError(f"{count} rows delivered, expected {args.n}")
    return {
        "value": count / elapsed,
        "unit": "rows/s",
        "seconds": elapsed,
        "rows": count,
        "rss_before_kb": rss_before,
    }


async def run_copy(target: Target, library: str, variant: str, args: argparse.Namespace) -> Json:
    """Workload 3: COPY IN of ``n`` rows (int, text, text) built before timing.

    bench/run.py truncates the (unlogged) table before starting this process."""
    rows = list(copy_rows(args.n))
    conn = await target.connect(library)
    try:
        start = time.perf_counter()
        if library == "postgres_async":
            if variant == "binary":
                result = await conn.copy_in_rows(
                    COPY_TABLE, COPY_COLUMNS, feed_data=rows, format="binary"
                )
            else:
                result = await conn.copy_in_rows(COPY_TABLE, COPY_COLUMNS, feed_data=rows)
            copied = result.rows
        elif library == "asyncpg":
            tag = await conn.copy_records_to_table(
                COPY_TABLE, records=rows, columns=list(COPY_COLUMNS)
            )
            copied = int(tag.split()[-1])
        elif library == "psycopg":
            async with conn.cursor() as cursor:
                columns = ", ".join(COPY_COLUMNS)
                async with cursor.copy(f"COPY {COPY_TABLE} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        await copy.write_row(row)
                copied = cursor.rowcount
        else:
            raise ValueError(f"unknown library {library!r}")
        elapsed = time.perf_counter() - start
    finally:
        await _close(library, conn)
    if copied != args.n:
        raise AssertionError(f"COPY reported {copied} rows, expected {args.n}")
    return {"value": args.n / elapsed, "unit": "rows/s", "seconds": elapsed, "rows": args.n}


async def run_notify(target: Target, library: str, variant: str, args: argparse.Namespace) -> Json:
    """Workload 6: NOTIFY from a second connection to the listener's callback, one at a
    time; latency from just before sending to the callback."""
    loop = asyncio.get_running_loop()
    listener = await target.connect(library)
    sender = await target.connect(library)
    waiting: list[asyncio.Future[float]] = []
    background: asyncio.Task[None] | None = None

    def arrived() -> None:
        now = time.perf_counter()
        if waiting and not waiting[0].done():
            waiting[0].set_result(now)

    try:
        if library == "postgres_async":
            await listener.listen_to_notifications(NOTIFY_CHANNEL, lambda _pid, _p: arrived())

            if "simple" in variant_flags(variant):

                async def send(i: int) -> None:
                    await sender.simple_query(f"NOTIFY {NOTIFY_CHANNEL}, '{i}'")

            else:

                async def send(i: int) -> None:
                    await sender.query_expect_no_data(f"NOTIFY {NOTIFY_CHANNEL}, '{i}'")

        elif library == "asyncpg":
            await listener.add_listener(NOTIFY_CHANNEL, lambda *_: arrived())

            async def send(i: int) -> None:
                await sender.execute(f"NOTIFY {NOTIFY_CHANNEL}, '{i}'")

        elif library == "psycopg":
            await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            total = args.warmup + args.n

            async def consume() -> None:
                async for _notify in listener.notifies(stop_after=total):
                    arrived()

            background = asyncio.create_task(consume())

            async def send(i: int) -> None:
                await sender.execute(f"NOTIFY {NOTIFY_CHANNEL}, '{i}'")

        else:
            raise ValueError(f"unknown library {library!r}")
        await asyncio.sleep(0.05)  # let the psycopg consumer start waiting
        latencies: list[float] = []
        for i in range(args.warmup + args.n):
            future = loop.create_future()
            waiting[:] = [future]
            start = time.perf_counter()
            await send(i)
            arrived_at = await asyncio.wait_for(future, 10.0)
            if i >= args.warmup:
                latencies.append(arrived_at - start)
        if background is not None:
            await asyncio.wait_for(background, 10.0)
    finally:
        if background is not None and not background.done():
            background.cancel()
        await _close(library, listener)
        await _close(library, sender)
    latencies.sort()
    return {
        "value": statistics.median(latencies) * 1e6,
        "unit": "us p50",
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": _percentile(latencies, 0.99) * 1e6,
        "max_us": latencies[-1] * 1e6,
        "notifications": len(latencies),
    }


WORKLOADS: dict[
    str, Callable[[Target, str, str, argparse.Namespace], Coroutine[Any, Any, Json]]
] = {
    "select": run_select,
    "stream": run_stream,
    "copy": run_copy,
    "multi": run_multi,
    "shared": run_shared,
    "notify": run_notify,
}


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--client", required=True, help="e.g. postgres_async, asyncpg+fetch")
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--database", default="postgres")
    parser.add_argument("--n", type=int, required=True, help="queries, rows or notifications")
    parser.add_argument("--tasks", type=int, default=10, help="connections or tasks (4, 5)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed operations first")
    return parser.parse_args(argv)


def _library_versions(library: str) -> Json:
    if library == "postgres_async":
        import postgres_async
        from postgres_async import _accel

        return {"version": postgres_async.__version__, "implementation": _accel.IMPLEMENTATION}
    if library == "asyncpg":
        import asyncpg

        return {"version": asyncpg.__version__}
    if library == "wire":
        return {}  # bench/clients.py itself
    import psycopg

    return {
        "version": psycopg.__version__,
        "libpq": psycopg.pq.version(),
        "implementation": psycopg.pq.__impl__,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    library, _, variant = args.client.partition("+")
    try:
        target = Target(args.host, args.port, args.user, args.database)
        coroutine = WORKLOADS[args.workload](target, library, variant, args)
        if args.loop == "uvloop":
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        else:
            runner = asyncio.Runner()
        with runner:
            result = runner.run(coroutine)
        result["library"] = _library_versions(library)
    except Exception as exc:
        json.dump({"error": f"{type(exc).__name__}: {exc}"}, sys.stdout)
        print()
        traceback.print_exc()
        return 1
    result["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["cpu_affinity"] = sorted(os.sched_getaffinity(0))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
