"""Query parameters, CommandComplete, and concurrent use of one connection, against real
servers.

Parameters: every Python type API.md section 3 converts, checked by a round trip through
the server; what is refused (TypeError / ValueError) is refused before anything is sent,
and the connection stays usable. Concurrency: FIFO service, cancelling a waiting call,
and asyncio.timeout cancelling a running one without leaving a stale cancel behind.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import pytest

import postgres_async as pg
from support import Row, assert_healthy, fetch_rows

UTC = datetime.UTC
PLUS_2 = datetime.timezone(datetime.timedelta(hours=2))
PLUS_530 = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
MINUS_3 = datetime.timezone(datetime.timedelta(hours=-3))
SOME_UUID = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")


# ------------------------------------------------------------------------------ helpers
async def assert_refused_before_sending(
    conn: pg.Connection,
    attempts: Sequence[Callable[[], Awaitable[object]]],
    exc_type: type[Exception],
) -> list[Exception]:
    """Each attempt raises exc_type at once, while another statement is still running
    (so it was neither queued nor sent); the connection is fine afterwards."""
    sleeper = asyncio.create_task(fetch_rows(conn, "SELECT pg_sleep(0.3)::text, 'sleeper'"))
    await asyncio.sleep(0.05)
    raised: list[Exception] = []
    try:
        for attempt in attempts:
            with pytest.raises(exc_type) as info:
                await attempt()
            raised.append(info.value)
            assert not sleeper.done()
    finally:
        assert await sleeper == [("", "sleeper")]
    await assert_healthy(conn)
    return raised


class Colour(enum.IntEnum):
    RED = 3


# ------------------------------------------------------------ conversions: round trip
ROUND_TRIPS: list[tuple[str, object, str, str | None]] = [
    # (id, value, sql, expected text)
    ("str", "héllo wörld ✓ 😀", "SELECT $1::text", "héllo wörld ✓ 😀"),
    ("str-empty", "", "SELECT $1::text", ""),
    ("str-quotes", 'it\'s "quoted" \\ back\nslash\t', "SELECT $1::text", None),
    ("none", None, "SELECT $1::text", None),
    ("none-is-null", None, "SELECT ($1::int IS NULL)::text", "true"),
    ("int-zero", 0, "SELECT $1::int8", "0"),
    ("int-negative", -1, "SELECT $1::int4", "-1"),
    ("int-max-int8", 2**63 - 1, "SELECT $1::int8", "9223372036854775807"),
    ("int-min-int8", -(2**63), "SELECT $1::int8", "-9223372036854775808"),
    ("int-huge-numeric", 10**30, "SELECT $1::numeric", "1" + "0" * 30),
    ("int-arithmetic", 41, "SELECT $1::int4 + 1", "42"),
    ("int-enum", Colour.RED, "SELECT $1::int4", "3"),
    ("float", 1.5, "SELECT $1::float8", "1.5"),
    ("float-tenth", 0.1, "SELECT $1::float8", "0.1"),
    ("float-third", 1 / 3, "SELECT $1::float8", repr(1 / 3)),
    ("float-big", 1e300, "SELECT $1::float8", "1e+300"),
    ("float-negative-zero", -0.0, "SELECT $1::float8", "-0"),
    ("float-nan", float("nan"), "SELECT $1::float8", "NaN"),
    ("float-inf", float("inf"), "SELECT $1::float8", "Infinity"),
    ("float-minus-inf", float("-inf"), "SELECT $1::float8", "-Infinity"),
    ("float-nan-equal", float("nan"), "SELECT ($1::float8 = 'NaN'::float8)::text", "true"),
    ("float-to-numeric", 0.1, "SELECT $1::numeric", "0.1"),
    ("decimal", decimal.Decimal("123.4500"), "SELECT $1::numeric", "123.4500"),
    ("decimal-negative", decimal.Decimal("-0.001"), "SELECT $1::numeric", "-0.001"),
    ("decimal-exponent", decimal.Decimal("1E+3"), "SELECT $1::numeric", "1000"),
    ("decimal-tiny", decimal.Decimal("1E-20"), "SELECT $1::numeric", "0." + "0" * 19 + "1"),
    ("decimal-nan", decimal.Decimal("NaN"), "SELECT $1::numeric", "NaN"),
    ("decimal-inf", decimal.Decimal("Infinity"), "SELECT $1::numeric", "Infinity"),
    ("decimal-minus-inf", decimal.Decimal("-Infinity"), "SELECT $1::numeric", "-Infinity"),
    ("bool-true", True, "SELECT $1::bool", "t"),
    ("bool-false", False, "SELECT $1::bool", "f"),
    ("bool-as-text", True, "SELECT $1::text", "true"),
    ("date", datetime.date(2024, 2, 29), "SELECT $1::date", "2024-02-29"),
    ("date-min", datetime.date(1, 1, 1), "SELECT $1::date", "0001-01-01"),
    ("date-max", datetime.date(9999, 12, 31), "SELECT $1::date", "9999-12-31"),
    ("time", datetime.time(13, 45, 30, 123456), "SELECT $1::time", "13:45:30.123456"),
    ("time-midnight", datetime.time(0, 0), "SELECT $1::time", "00:00:00"),
    ("timetz", datetime.time(13, 45, tzinfo=PLUS_2), "SELECT $1::timetz", "13:45:00+02"),
    (
        "timetz-half-hour",
        datetime.time(13, 45, 1, 5, tzinfo=PLUS_530),
        "SELECT $1::timetz",
        "13:45:01.000005+05:30",
    ),
    (
        "datetime-naive",
        datetime.datetime(2024, 2, 29, 13, 45, 30, 500000),
        "SELECT $1::timestamp",
        "2024-02-29 13:45:30.5",
    ),
    (
        "datetime-naive-whole-seconds",
        datetime.datetime(1999, 12, 31, 23, 59, 59),
        "SELECT $1::timestamp",
        "1999-12-31 23:59:59",
    ),
    (
        "datetime-aware",
        datetime.datetime(2024, 2, 29, 13, 45, 30, tzinfo=PLUS_2),
        "SELECT ($1::timestamptz AT TIME ZONE 'UTC')::text",
        "2024-02-29 11:45:30",
    ),
    (
        "datetime-aware-negative-offset",
        datetime.datetime(2024, 12, 31, 22, 30, 0, 250, tzinfo=MINUS_3),
        "SELECT ($1::timestamptz AT TIME ZONE 'UTC')::text",
        "2025-01-01 01:30:00.00025",
    ),
    (
        "datetime-aware-equal",
        datetime.datetime(2024, 2, 29, 13, 45, 30, tzinfo=PLUS_530),
        "SELECT ($1::timestamptz = '2024-02-29 08:15:30+00'::timestamptz)::text",
        "true",
    ),
    (
        "datetime-utc",
        datetime.datetime(2000, 1, 1, tzinfo=UTC),
        "SELECT extract(epoch FROM $1::timestamptz)::bigint::text",
        "946684800",
    ),
    ("uuid", SOME_UUID, "SELECT $1::uuid", str(SOME_UUID)),
    (
        "uuid-equal",
        SOME_UUID,
        "SELECT ($1::uuid = '{12345678-9abc-def0-1234-56789abcdef0}'::uuid)::text",
        "true",
    ),
    ("bytes", b"\x00\x01\xff'\\\"", "SELECT $1::bytea", "\\x0001ff275c22"),
    ("bytes-length", b"\x00\x01\xff'\\\"", "SELECT length($1::bytea)", "6"),
    ("bytes-empty", b"", "SELECT $1::bytea", "\\x"),
    ("bytes-utf8", "héllo".encode(), "SELECT convert_from($1::bytea, 'UTF8')", "héllo"),
]


@pytest.mark.parametrize(
    ("value", "sql", "expected"),
    [pytest.param(v, s, e, id=i) for i, v, s, e in ROUND_TRIPS],
)
async def test_parameter_round_trip(
    conn: pg.Connection, value: object, sql: str, expected: str | None
) -> None:
    if expected is None and isinstance(value, str):
        expected = value
    assert await fetch_rows(conn, sql, [value]) == [(expected,)]


async def test_parameter_types_inferred_from_columns(conn: pg.Connection) -> None:
    await conn.query_expect_no_data(
        "CREATE TEMPORARY TABLE t (i int8, f float8, n numeric, b bool, d date, tm time, "
        "ts timestamp, tz timestamptz, u uuid, by bytea, s text)"
    )
    values: list[object] = [
        -7,
        2.25,
        decimal.Decimal("3.14159"),
        False,
        datetime.date(2020, 1, 2),
        datetime.time(3, 4, 5),
        datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
        datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=PLUS_2),
        SOME_UUID,
        b"\xde\xad\xbe\xef",
        None,
    ]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    cc = await conn.query_expect_no_data(f"INSERT INTO t VALUES ({placeholders})", values)
    assert cc == pg.CommandComplete("INSERT", 1)
    rows = await fetch_rows(
        conn,
        "SELECT i, f, n, b, d, tm, ts, (tz AT TIME ZONE 'UTC')::text, u, by, s FROM t",
    )
    assert rows == [
        (
            "-7",
            "2.25",
            "3.14159",
            "f",
            "2020-01-02",
            "03:04:05",
            "2020-01-02 03:04:05.000006",
            "2020-01-02 01:04:05",
            str(SOME_UUID),
            "\\xdeadbeef",
            None,
        )
    ]


async def test_parameters_as_tuple_and_other_sequences(conn: pg.Connection) -> None:
    assert await fetch_rows(conn, "SELECT $1::int + $2::int", (1, 2)) == [("3",)]
    assert await fetch_rows(conn, "SELECT $1::text || $2::text", ("a", None)) == [(None,)]
    assert await fetch_rows(conn, "SELECT $1::int * 2", range(21, 22)) == [("42",)]
    assert await fetch_rows(conn, "SELECT 'none'", ()) == [("none",)]
    assert await fetch_rows(conn, "SELECT 'none'", []) == [("none",)]


async def test_string_is_not_a_parameter_sequence(conn: pg.Connection) -> None:
    # "ab" as parameters would be ("a", "b") if taken as a sequence.
    await assert_refused_before_sending(
        conn,
        [
            lambda: fetch_rows(conn, "SELECT $1::text", "ab"),
            lambda: fetch_rows(conn, "SELECT $1::text", b"ab"),
        ],
        TypeError,
    )


# ------------------------------------------------------------- refused parameters
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param([1, 2], id="list"),
        pytest.param({"a": 1}, id="dict"),
        pytest.param({1, 2}, id="set"),
        pytest.param(1j, id="complex"),
        pytest.param(datetime.timedelta(seconds=1), id="timedelta"),
    ],
)
async def test_unsupported_parameter_type_raises_type_error(
    conn: pg.Connection, value: object
) -> None:
    raised = await assert_refused_before_sending(
        conn,
        [
            lambda: fetch_rows(conn, "SELECT $1::text", [value]),
            lambda: conn.query_expect_no_data("SELECT $2::text", ["ok", value]),
            lambda: conn.copy_in_raw("COPY nothing FROM STDIN", [value], feed_data=[]),
        ],
        TypeError,
    )
    assert type(value).__name__ in str(raised[0])


async def test_nul_in_sql_or_parameter_raises_value_error(conn: pg.Connection) -> None:
    await assert_refused_before_sending(
        conn,
        [
            lambda: fetch_rows(conn, "SELECT 'a\0b'"),
            lambda: fetch_rows(conn, "SELECT $1::text", ["a\0b"]),
            lambda: conn.query_expect_no_data("SELECT $1::text", ["\0"]),
            lambda: conn.query_expect_no_data("SELECT $2::text", [None, "x\0"]),
        ],
        ValueError,
    )
    # A NUL byte in bytes is fine: bytea goes as hex text.
    assert await fetch_rows(conn, "SELECT $1::bytea", [b"a\0b"]) == [("\\x610062",)]


async def test_lone_surrogate_raises_value_error(conn: pg.Connection) -> None:
    await assert_refused_before_sending(
        conn,
        [
            lambda: fetch_rows(conn, "SELECT $1::text", ["\ud800"]),
            lambda: fetch_rows(conn, "SELECT $1::text", ["ok \udfff end"]),
            lambda: fetch_rows(conn, "SELECT '\ud800'"),
        ],
        ValueError,
    )
    # A proper astral character is fine.
    assert await fetch_rows(conn, "SELECT $1::text", ["\U0001f600"]) == [("\U0001f600",)]


# --------------------------------------------------------------- CommandComplete
async def test_command_complete_tags(conn: pg.Connection) -> None:
    async def run(sql: str) -> pg.CommandComplete:
        return await conn.query(sql, handle_row=lambda _n, _v: None)

    assert await run("CREATE TEMPORARY TABLE cc (x int)") == pg.CommandComplete(
        "CREATE TABLE", None
    )
    assert await run("INSERT INTO cc SELECT generate_series(1, 5)") == pg.CommandComplete(
        "INSERT", 5
    )
    assert await run("INSERT INTO cc VALUES (6) RETURNING x") == pg.CommandComplete("INSERT", 1)
    assert await run("SELECT * FROM cc WHERE x <= 3") == pg.CommandComplete("SELECT", 3)
    assert await run("SELECT * FROM cc WHERE false") == pg.CommandComplete("SELECT", 0)
    assert await run("UPDATE cc SET x = x + 10 WHERE x > 2") == pg.CommandComplete("UPDATE", 4)
    assert await run("UPDATE cc SET x = 0 WHERE false") == pg.CommandComplete("UPDATE", 0)
    assert await run("DELETE FROM cc WHERE x > 10") == pg.CommandComplete("DELETE", 4)
    assert await run("BEGIN") == pg.CommandComplete("BEGIN", None)
    assert await run("SAVEPOINT sp") == pg.CommandComplete("SAVEPOINT", None)
    assert await run("ROLLBACK TO SAVEPOINT sp") == pg.CommandComplete("ROLLBACK", None)
    assert await run("COMMIT") == pg.CommandComplete("COMMIT", None)
    assert await run("CREATE TEMPORARY TABLE cc2 AS SELECT 1 AS y") == pg.CommandComplete(
        "SELECT", 1
    )
    assert await run("SET search_path = public") == pg.CommandComplete("SET", None)
    assert await run("") == pg.CommandComplete("", None)
    assert await run("-- only a comment") == pg.CommandComplete("", None)
    assert await run("DROP TABLE cc") == pg.CommandComplete("DROP TABLE", None)


def test_command_complete_parse() -> None:
    parse = pg.CommandComplete.parse
    assert parse("SELECT 3") == pg.CommandComplete("SELECT", 3)
    assert parse("INSERT 0 5") == pg.CommandComplete("INSERT", 5)
    assert parse("UPDATE 10") == pg.CommandComplete("UPDATE", 10)
    assert parse("DELETE 0") == pg.CommandComplete("DELETE", 0)
    assert parse("COPY 2") == pg.CommandComplete("COPY", 2)
    assert parse("MERGE 7") == pg.CommandComplete("MERGE", 7)
    assert parse("CREATE TABLE") == pg.CommandComplete("CREATE TABLE", None)
    assert parse("BEGIN") == pg.CommandComplete("BEGIN", None)


# ------------------------------------------------------------------- concurrency
async def test_concurrent_queries_are_served_in_fifo_order(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY SEQUENCE fifo")
    order: list[int] = []

    async def one(i: int) -> list[Row]:
        rows: list[Row] = []

        def handle_row(_names: tuple[str, ...], values: Row) -> None:
            if not rows:
                order.append(i)
            rows.append(values)

        # nextval shows the order in which the server ran them; i + 1 rows each.
        await conn.query(
            "SELECT $1::int, nextval('fifo'), g FROM generate_series(1, $1::int + 1) g",
            [i],
            handle_row=handle_row,
        )
        return rows

    results = await asyncio.gather(*(one(i) for i in range(20)))
    assert order == list(range(20))
    first_seq = 1
    for i, rows in enumerate(results):
        assert [r[0] for r in rows] == [str(i)] * (i + 1)
        assert [r[2] for r in rows] == [str(g) for g in range(1, i + 2)]
        # Each statement's nextval values are consecutive and follow the previous one's.
        assert [r[1] for r in rows] == [str(first_seq + k) for k in range(i + 1)]
        first_seq += i + 1
    await assert_healthy(conn)


async def test_concurrent_failure_does_not_disturb_the_others(conn: pg.Connection) -> None:
    async def one(i: int) -> list[Row]:
        if i == 7:
            return await fetch_rows(conn, "SELECT 1 / 0")
        if i == 12:
            return await fetch_rows(conn, "SELECT $1::int", ["not a number"])
        return await fetch_rows(conn, "SELECT $1::int * 2", [i])

    results = await asyncio.gather(*(one(i) for i in range(20)), return_exceptions=True)
    for i, result in enumerate(results):
        if i == 7:
            assert isinstance(result, pg.errors.DivisionByZero)
        elif i == 12:
            assert isinstance(result, pg.errors.InvalidTextRepresentation)
        else:
            assert result == [(str(i * 2),)]
    await assert_healthy(conn)


async def test_cancelling_a_call_waiting_behind_copy_in_removes_it(
    conn: pg.Connection,
) -> None:
    # Nothing can be sent while a COPY FROM STDIN is in progress, so the calls behind it
    # really wait in the client: a cancelled one must never reach the server.
    await conn.query_expect_no_data("CREATE TEMPORARY SEQUENCE s")
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE c (x int)")
    calls = 0

    def feed_data() -> pg.Data[str | bytes] | pg.Wait | pg.Abort | pg.Finished:
        nonlocal calls
        calls += 1
        if calls == 1:
            return pg.Wait(asyncio.sleep(0.3))
        if calls <= 3:
            return pg.Data(f"{calls - 1}\n")
        return pg.Finished()

    running = asyncio.create_task(conn.copy_in_raw("COPY c FROM STDIN", feed_data=feed_data))
    waiting_rows: list[Row] = []
    waiting = asyncio.create_task(
        conn.query("SELECT nextval('s')", handle_row=lambda _n, v: waiting_rows.append(v))
    )
    behind = asyncio.create_task(fetch_rows(conn, "SELECT nextval('s')"))
    await asyncio.sleep(0.05)
    assert not running.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not running.done()
    assert await running == pg.CommandComplete("COPY", 2)
    # The cancelled call never ran: the next one takes the sequence's first value.
    assert await behind == [("1",)]
    assert waiting_rows == []
    assert await fetch_rows(conn, "SELECT x FROM c ORDER BY x") == [("1",), ("2",)]
    await assert_healthy(conn)


async def test_cancelling_a_waiting_call_leaves_the_running_one(conn: pg.Connection) -> None:
    # Plain queries may be pipelined (API.md), so the cancelled call may already be on
    # the wire; whatever happens to it, the running one and the one behind it must get
    # exactly their own results, and the cancelled one no callback.
    start = time.monotonic()
    running = asyncio.create_task(fetch_rows(conn, "SELECT pg_sleep(0.3)::text, 'running'"))
    waiting_rows: list[Row] = []
    waiting = asyncio.create_task(
        conn.query("SELECT 'waiting'", handle_row=lambda _n, v: waiting_rows.append(v))
    )
    behind = asyncio.create_task(fetch_rows(conn, "SELECT 'behind'"))
    await asyncio.sleep(0.05)
    assert not running.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not running.done()
    assert await running == [("", "running")]
    assert time.monotonic() - start >= 0.29  # pg_sleep(0.3) was not cut short
    assert await behind == [("behind",)]
    assert waiting_rows == []
    await assert_healthy(conn)


async def test_timeout_cancels_running_query(conn: pg.Connection) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await fetch_rows(conn, "SELECT pg_sleep(10)")
    assert time.monotonic() - start < 1.5
    # The server statement was cancelled: the next query does not wait 10 s.
    start = time.monotonic()
    assert await fetch_rows(conn, "SELECT 1") == [("1",)]
    assert time.monotonic() - start < 1.5
    assert conn.status == pg.Open()


async def test_timeout_cancels_running_query_with_another_queued(conn: pg.Connection) -> None:
    # API.md: asyncio.timeout sends a CancelRequest. With another call queued (or
    # pipelined) behind, the running statement must still be cancelled on the server,
    # not run to its end while the next caller waits, and the next call keeps its result.
    async def sleeper() -> list[Row]:
        async with asyncio.timeout(0.2):
            return await fetch_rows(conn, "SELECT pg_sleep(5)")

    start = time.monotonic()
    timed_out = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    behind = asyncio.create_task(fetch_rows(conn, "SELECT 'behind'"))
    with pytest.raises(TimeoutError):
        await timed_out
    assert time.monotonic() - start < 1.5
    assert await behind == [("behind",)]
    assert time.monotonic() - start < 2.5, "the timed-out pg_sleep(5) ran to its end"
    await assert_healthy(conn)


async def test_timeout_while_rows_stream(conn: pg.Connection) -> None:
    handled = 0

    def handle_row(_names: tuple[str, ...], _values: Row) -> None:
        nonlocal handled
        handled += 1

    async def slow_pushback() -> None:
        await asyncio.sleep(0.001)
        if handled == 1:
            # The server materialises the whole series before the first row, which
            # on a slow machine takes a good part of a second: time from that row.
            deadline.reschedule(asyncio.get_running_loop().time() + 0.2)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(30) as deadline:
            await conn.query(
                "SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g",
                handle_row=handle_row,
                pushback=slow_pushback,
            )
    assert 0 < handled < 1000000
    await assert_healthy(conn)
    assert await fetch_rows(conn, "SELECT 'after'") == [("after",)]


async def test_tiny_timeouts_never_leave_a_stale_cancel(conn: pg.Connection) -> None:
    rng = random.Random(20240229)
    timeouts = [0.0, 0.0001, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05]
    outcomes = {"timeout": 0, "completed": 0}
    for i in range(50):
        delay = rng.choice(timeouts)
        try:
            async with asyncio.timeout(delay):
                rows = await fetch_rows(conn, "SELECT pg_sleep(0.01)::text, $1::int", [i])
            assert rows == [("", str(i))]
            outcomes["completed"] += 1
        except TimeoutError:
            outcomes["timeout"] += 1
        # A CancelRequest that arrives late must not hit this statement.
        assert await fetch_rows(conn, "SELECT $1::int + 1000", [i]) == [(str(i + 1000),)], i
        assert conn.status == pg.Open()
    assert outcomes["timeout"] > 0
    assert outcomes["completed"] > 0
