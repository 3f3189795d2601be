"""conn.query and conn.query_expect_no_data against real servers.

A port of upstream's test_smoke.ml (basic query) and test_query.ml (items 1 and 3-14;
item 2, raw iobufs, has no Python counterpart), translated through API.md: errors are
raised as PgasyncError, callback exceptions are raised from query, and too many
parameters raise ValueError before anything is sent instead of killing the connection.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

import postgres_async as pg
from support import Row, assert_healthy, fetch_rows

#: The big table of the pushback tests: 65536 rows of (y, 1 KB of 'a'), about 65 MB.
BIG_ROWS = 65536
BIG_TEXT = "a" * 1024
BLOCK_AFTER = 10000


# ------------------------------------------------------------------------------ helpers
async def fetch_with_names(
    conn: pg.Connection, sql: str, params: Sequence[object] | None = None
) -> tuple[list[tuple[str, ...]], list[Row]]:
    """(the column names handed to every handle_row call, the rows)."""
    names: list[tuple[str, ...]] = []
    rows: list[Row] = []

    def handle_row(column_names: tuple[str, ...], values: Row) -> None:
        names.append(column_names)
        rows.append(values)

    await conn.query(sql, params, handle_row=handle_row)
    return names, rows


async def columns_of(conn: pg.Connection, sql: str) -> list[tuple[str, int]]:
    """(name, type oid) of each column handle_columns saw; checks it ran once, first."""
    events: list[str] = []
    seen: list[tuple[pg.ColumnMetadata, ...]] = []

    def handle_columns(columns: tuple[pg.ColumnMetadata, ...]) -> None:
        events.append("columns")
        seen.append(columns)

    def handle_row(_names: tuple[str, ...], _values: Row) -> None:
        events.append("row")

    await conn.query(sql, handle_row=handle_row, handle_columns=handle_columns)
    assert events.count("columns") == 1, events
    assert events[0] == "columns", events
    return [(c.name, c.pg_type_oid) for c in seen[0]]


class Boom(Exception):
    """Raised by the test callbacks."""


def no_rows(_names: tuple[str, ...], values: Row) -> None:
    raise AssertionError(f"no row expected, got {values!r}")


async def make_big_table(conn: pg.Connection) -> None:
    await conn.query_expect_no_data(
        "CREATE TEMPORARY TABLE x AS "
        f"SELECT y, repeat('a', {len(BIG_TEXT)}) AS z FROM generate_series(1, {BIG_ROWS}) y"
    )


# -------------------------------------------------------------------------- 3.1 smoke
async def test_smoke_basic_query(conn: pg.Connection) -> None:
    names, rows = await fetch_with_names(conn, "SELECT $1::int", ["1234"])
    assert rows == [("1234",)]
    assert names == [("int4",)]


async def test_query_returns_command_complete(conn: pg.Connection) -> None:
    cc = await conn.query("SELECT 1 UNION ALL SELECT 2", handle_row=lambda _n, _v: None)
    assert cc == pg.CommandComplete("SELECT", 2)
    assert cc.tag == "SELECT"
    assert cc.rows == 2


# --------------------------------------------------------------- 3.2.1 column names
NASTY = "nasty\nstring\t'\",x"


async def _make_table_a(conn: pg.Connection) -> None:
    await conn.query_expect_no_data(
        "CREATE TEMPORARY TABLE a (x timestamp, y int PRIMARY KEY, z text)"
    )
    cc = await conn.query_expect_no_data(
        "INSERT INTO a (x, y, z) VALUES "
        "('2000-01-01 00:00:00', 1, 'test string'), "
        "('2000-01-01 00:00:00', 5, E'nasty\\nstring\\t''\",x'), "
        "('2019-03-14 00:00:00', 10, NULL)"
    )
    assert cc == pg.CommandComplete("INSERT", 3)


async def test_column_names_and_ordering(conn: pg.Connection) -> None:
    await _make_table_a(conn)

    names, rows = await fetch_with_names(conn, "SELECT * FROM a ORDER BY y")
    assert names == [("x", "y", "z")] * 3
    assert rows == [
        ("2000-01-01 00:00:00", "1", "test string"),
        ("2000-01-01 00:00:00", "5", NASTY),
        ("2019-03-14 00:00:00", "10", None),
    ]

    names, rows = await fetch_with_names(conn, "SELECT z, x FROM a ORDER BY y")
    assert names == [("z", "x")] * 3
    assert rows == [
        ("test string", "2000-01-01 00:00:00"),
        (NASTY, "2000-01-01 00:00:00"),
        (None, "2019-03-14 00:00:00"),
    ]

    names, rows = await fetch_with_names(conn, "SELECT x AS moo, y FROM a ORDER BY y")
    assert names == [("moo", "y")] * 3
    assert rows == [
        ("2000-01-01 00:00:00", "1"),
        ("2000-01-01 00:00:00", "5"),
        ("2019-03-14 00:00:00", "10"),
    ]


# ---------------------------------------------------------------- 3.2.3 parameters
async def test_parameters(conn: pg.Connection) -> None:
    rows = await fetch_rows(
        conn,
        "WITH b AS (SELECT 1 AS s, $1::int AS x, $2::int AS y "
        "UNION SELECT 2, $2, $3 UNION SELECT 3, $4, $4) "
        "SELECT x, y FROM b ORDER BY s",
        ["1", "-5", None, "1000000"],
    )
    assert rows == [("1", "-5"), ("-5", None), ("1000000", "1000000")]

    assert await fetch_rows(conn, "SELECT $1::text", [NASTY]) == [(NASTY,)]

    await conn.query_expect_no_data("CREATE TEMPORARY TABLE c (x int, y text)")
    cc = await conn.query_expect_no_data(
        "INSERT INTO c (x, y) VALUES ($1, $2), ($3, $4)", ["5", "five", "10", None]
    )
    assert cc == pg.CommandComplete("INSERT", 2)
    assert await fetch_rows(conn, "SELECT * FROM c ORDER BY x") == [("5", "five"), ("10", None)]

    rows = await fetch_rows(conn, "UPDATE c SET y = 'ten' WHERE x = $1 RETURNING x, y", ["10"])
    assert rows == [("10", "ten")]
    assert await fetch_rows(conn, "SELECT * FROM c ORDER BY x") == [("5", "five"), ("10", "ten")]


# ------------------------------------------------------------------ 3.2.4 NoData
async def test_describe_portal_no_data_accepted_by_query(conn: pg.Connection) -> None:
    columns_called = False

    def handle_columns(_columns: tuple[pg.ColumnMetadata, ...]) -> None:
        nonlocal columns_called
        columns_called = True

    cc = await conn.query(
        "CREATE TEMPORARY TABLE d (x integer)", handle_row=no_rows, handle_columns=handle_columns
    )
    assert cc == pg.CommandComplete("CREATE TABLE", None)
    assert not columns_called
    assert await fetch_rows(conn, "SELECT count(*) FROM d") == [("0",)]


# -------------------------------------------------------------- 3.2.5 empty query
@pytest.mark.parametrize("sql", ["", "-- comment", "   ", "/* block */"])
async def test_empty_query(conn: pg.Connection, sql: str) -> None:
    columns_called = False

    def handle_columns(_columns: tuple[pg.ColumnMetadata, ...]) -> None:
        nonlocal columns_called
        columns_called = True

    cc = await conn.query(sql, handle_row=no_rows, handle_columns=handle_columns)
    assert cc == pg.CommandComplete("", None)
    assert not columns_called
    assert await conn.query_expect_no_data(sql) == pg.CommandComplete("", None)
    await assert_healthy(conn)


# ------------------------------------------------------ 3.2.6 failures are graceful
async def test_parse_error_reported_and_connection_survives(conn: pg.Connection) -> None:
    with pytest.raises(pg.PgasyncError) as info:
        await fetch_rows(conn, "syntactically invalid")
    err = info.value
    assert err.postgres_error_code == "42601"
    assert isinstance(err, pg.errors.PostgresSyntaxError)
    assert err.phase == "Postgres Server Error (state=Parsing)"
    assert err.query == "syntactically invalid"
    text = str(err)
    assert text.startswith('query "syntactically invalid": ')
    assert "Postgres Server Error (state=Parsing)" in text
    assert "42601" in text
    assert "parameters" not in text
    await assert_healthy(conn)


async def test_bind_error_shows_parameters(conn: pg.Connection) -> None:
    with pytest.raises(pg.PgasyncError) as info:
        await fetch_rows(conn, "SELECT $1::int", ["a"])
    err = info.value
    assert err.postgres_error_code == "22P02"
    assert isinstance(err, pg.errors.InvalidTextRepresentation)
    assert err.phase == "Postgres Server Error (state=Binding)"
    text = str(err)
    assert text.startswith("query \"SELECT $1::int\" parameters ('a',): ")
    assert "Postgres Server Error (state=Binding)" in text
    assert "22P02" in text
    await assert_healthy(conn)


async def test_execute_error_reported(conn: pg.Connection) -> None:
    sql = "DO $$ BEGIN RAISE 'hi'; END $$"
    with pytest.raises(pg.PgasyncError) as info:
        await conn.query(sql, handle_row=no_rows)
    err = info.value
    assert err.postgres_error_code == "P0001"
    assert err.postgres_field(pg.PostgresField.MESSAGE) == "hi"
    assert err.phase == "Postgres Server Error (state=Executing)"
    assert f'query "{sql}"' in str(err)
    assert "Postgres Server Error (state=Executing)" in str(err)
    assert await fetch_rows(conn, "SELECT 'everything is fine'") == [("everything is fine",)]
    assert conn.status == pg.Open()


async def test_error_while_reading_rows(conn: pg.Connection) -> None:
    rows: list[Row] = []
    with pytest.raises(pg.PgasyncError) as info:
        await conn.query(
            "SELECT 10 / (3 - g) FROM generate_series(1, 5) g",
            handle_row=lambda _n, v: rows.append(v),
        )
    err = info.value
    assert err.postgres_error_code == "22012"
    assert err.phase == "Error during query execution (despite parsing ok)"
    assert rows == [("5",), ("10",)]
    await assert_healthy(conn)


async def test_copy_through_query_is_refused(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE c (x integer)")

    with pytest.raises(pg.PgasyncError) as info:
        await conn.query("COPY c FROM STDIN", handle_row=no_rows)
    assert "COPY FROM STDIN is not appropriate" in str(info.value)
    assert 'query "COPY c FROM STDIN"' in str(info.value)
    await assert_healthy(conn)

    with pytest.raises(pg.PgasyncError) as info:
        await conn.query("COPY c TO STDOUT", handle_row=no_rows)
    assert "COPY TO STDOUT is not appropriate" in str(info.value)
    await assert_healthy(conn)

    cc = await conn.copy_in_raw("COPY c FROM STDIN", feed_data=["10\n"])
    assert cc == pg.CommandComplete("COPY", 1)
    assert await fetch_rows(conn, "SELECT * FROM c") == [("10",)]

    # The COPY's output is refused, but the INSERT inside it happened.
    with pytest.raises(pg.PgasyncError) as info:
        await conn.query(
            "COPY (INSERT INTO c (x) VALUES (20) RETURNING x) TO STDOUT", handle_row=no_rows
        )
    assert "COPY TO STDOUT is not appropriate" in str(info.value)
    assert await fetch_rows(conn, "SELECT * FROM c ORDER BY x") == [("10",), ("20",)]
    await assert_healthy(conn)


# ------------------------------------------------ 3.2.7 one transaction per statement
async def test_each_statement_runs_in_its_own_transaction(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE x (y integer) ON COMMIT DELETE ROWS")
    assert await fetch_rows(conn, "INSERT INTO x (y) VALUES (1) RETURNING y") == [("1",)]
    assert await fetch_rows(conn, "SELECT count(*) FROM x") == [("0",)]

    assert await conn.query_expect_no_data("BEGIN") == pg.CommandComplete("BEGIN", None)
    assert await fetch_rows(conn, "INSERT INTO x (y) VALUES (1) RETURNING y") == [("1",)]
    assert await fetch_rows(conn, "SELECT count(*) FROM x") == [("1",)]
    assert await conn.query_expect_no_data("COMMIT") == pg.CommandComplete("COMMIT", None)
    assert await fetch_rows(conn, "SELECT count(*) FROM x") == [("0",)]


# ------------------------------------------------------------ 3.2.8 transactions
async def test_transactions_seen_from_another_connection(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    table = f"transaction_test_{uuid.uuid4().hex}"
    await conn.query_expect_no_data(f"CREATE TABLE {table} (x integer)")
    try:
        count = f"SELECT count(*) FROM {table}"
        insert = f"INSERT INTO {table} (x) VALUES (1)"
        await conn.query_expect_no_data(insert)
        assert await fetch_rows(other_conn, count) == [("1",)]

        await conn.query_expect_no_data("BEGIN")
        await conn.query_expect_no_data(insert)
        assert await fetch_rows(conn, count) == [("2",)]
        assert await fetch_rows(other_conn, count) == [("1",)]
        await conn.query_expect_no_data("COMMIT")
        assert await fetch_rows(other_conn, count) == [("2",)]

        await conn.query_expect_no_data("BEGIN")
        await conn.query_expect_no_data(insert)
        assert await fetch_rows(conn, count) == [("3",)]
        assert await fetch_rows(other_conn, count) == [("2",)]
        assert await conn.query_expect_no_data("ROLLBACK") == pg.CommandComplete("ROLLBACK", None)
        assert await fetch_rows(conn, count) == [("2",)]
        assert await fetch_rows(other_conn, count) == [("2",)]
    finally:
        await other_conn.query_expect_no_data(f"DROP TABLE IF EXISTS {table}")


# --------------------------------------------------------------- 3.2.9 pushback
async def test_pushback(conn: pg.Connection) -> None:
    await make_big_table(conn)
    rows_handled = 0
    pushback_calls = 0
    blocked = asyncio.Event()
    release: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def handle_row(names: tuple[str, ...], values: Row) -> None:
        nonlocal rows_handled
        assert names == ("y", "z")
        assert values == (str(rows_handled + 1), BIG_TEXT)
        rows_handled += 1

    def pushback() -> asyncio.Future[None] | None:
        nonlocal pushback_calls
        pushback_calls += 1
        if rows_handled > BLOCK_AFTER and not release.done():
            blocked.set()
            return release
        return None

    task = asyncio.create_task(
        conn.query("SELECT y, z FROM x ORDER BY y", handle_row=handle_row, pushback=pushback)
    )
    try:
        async with asyncio.timeout(20):
            await blocked.wait()
        at_block = rows_handled
        assert at_block < 20000
        for _ in range(10):
            await asyncio.sleep(0)
        assert rows_handled == at_block
        # Give the server time to send more; still nothing may be delivered.
        await asyncio.sleep(0.1)
        for _ in range(5):
            await asyncio.sleep(0)
        assert rows_handled == at_block
        assert not task.done()
    finally:
        if not release.done():
            release.set_result(None)
    cc = await task
    assert cc == pg.CommandComplete("SELECT", BIG_ROWS)
    assert rows_handled == BIG_ROWS
    assert pushback_calls > 10
    await assert_healthy(conn)


async def test_pushback_may_be_a_coroutine_function(conn: pg.Connection) -> None:
    calls = 0

    async def pushback() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)

    rows: list[Row] = []
    cc = await conn.query(
        "SELECT g FROM generate_series(1, 50) g",
        handle_row=lambda _n, v: rows.append(v),
        pushback=pushback,
    )
    assert cc == pg.CommandComplete("SELECT", 50)
    assert rows == [(str(i),) for i in range(1, 51)]
    assert calls >= 50


# -------------------------------------------------------- 3.2.10 expect no data
async def test_query_expect_no_data(conn: pg.Connection) -> None:
    assert await conn.query_expect_no_data("SELECT 1 WHERE FALSE") == pg.CommandComplete(
        "SELECT", 0
    )
    assert await conn.query_expect_no_data(
        "CREATE TEMPORARY TABLE c (x integer)"
    ) == pg.CommandComplete("CREATE TABLE", None)
    assert await conn.query_expect_no_data("SELECT * FROM c") == pg.CommandComplete("SELECT", 0)
    assert await conn.query_expect_no_data("INSERT INTO c (x) VALUES (10)") == pg.CommandComplete(
        "INSERT", 1
    )
    assert await conn.query_expect_no_data("") == pg.CommandComplete("", None)

    failures = [
        ("SELECT 1", "query unexpectedly produced rows"),
        ("COPY c FROM STDIN", "query attempted COPY IN"),
        ("COPY c TO STDOUT", "query attempted COPY OUT"),
        ("INSERT INTO c (x) VALUES (20) RETURNING x", "query unexpectedly produced rows"),
        (
            "COPY (INSERT INTO c (x) VALUES (20) RETURNING x) TO STDOUT",
            "query attempted COPY OUT",
        ),
    ]
    for sql, expected in failures:
        with pytest.raises(pg.PgasyncError) as info:
            await conn.query_expect_no_data(sql)
        text = str(info.value)
        assert expected in text, (sql, text)
        assert f'query "{sql}"' in text, (sql, text)
        assert conn.status == pg.Open()

    # The side effects of the refused statements stand.
    assert await fetch_rows(conn, "SELECT x FROM c ORDER BY x") == [("10",), ("20",), ("20",)]
    await assert_healthy(conn)


# ---------------------------------------------- 3.2.11 insane number of parameters
async def test_insane_number_of_parameters(conn: pg.Connection) -> None:
    # A statement already running: if the bad call were queued or sent, it could only
    # fail after this one. It must fail at once, before anything is written.
    sleeper = asyncio.create_task(fetch_rows(conn, "SELECT pg_sleep(0.3)::text"))
    await asyncio.sleep(0.05)
    for count in (100000, 65536):
        with pytest.raises(ValueError, match="parameters"):
            await conn.query_expect_no_data("", [None] * count)
        with pytest.raises(ValueError, match="parameters"):
            await conn.query("SELECT 1", [None] * count, handle_row=no_rows)
        assert not sleeper.done()
    assert await sleeper == [("",)]
    await assert_healthy(conn)


async def test_max_parameter_count_is_sent(conn: pg.Connection) -> None:
    # 65535 parameters fit in the protocol: the server, not the client, refuses them
    # for a statement that takes none, and the connection stays usable.
    with pytest.raises(pg.PgasyncError) as info:
        await conn.query_expect_no_data("SELECT 1", [None] * 65535)
    assert not isinstance(info.value, ValueError)
    assert info.value.postgres_error_code == "08P01"
    assert "remaining 65520 parameter(s) omitted" in str(info.value)
    await assert_healthy(conn)


# ------------------------------------------ 3.2.12 query terminated mid execution
async def test_query_terminated_mid_execution(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    await make_big_table(conn)
    rows_handled = 0
    blocked = asyncio.Event()
    release: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def handle_row(_names: tuple[str, ...], values: Row) -> None:
        nonlocal rows_handled
        assert values == (str(rows_handled + 1), BIG_TEXT)
        rows_handled += 1

    def pushback() -> asyncio.Future[None] | None:
        if rows_handled > BLOCK_AFTER and not release.done():
            blocked.set()
            return release
        return None

    sql = "SELECT y, z FROM x ORDER BY y"
    task = asyncio.create_task(conn.query(sql, handle_row=handle_row, pushback=pushback))
    try:
        async with asyncio.timeout(20):
            await blocked.wait()
        pid = conn.backend_pid
        assert pid is not None
        assert await fetch_rows(other_conn, "SELECT pg_cancel_backend($1)", [pid]) == [("t",)]
    finally:
        if not release.done():
            release.set_result(None)
    with pytest.raises(pg.PgasyncError) as info:
        async with asyncio.timeout(20):
            await task
    err = info.value
    assert err.postgres_error_code == "57014"
    assert isinstance(err, pg.errors.QueryCanceled)
    assert err.phase == "Error during query execution (despite parsing ok)"
    assert f'query "{sql}"' in str(err)
    assert "Error during query execution (despite parsing ok)" in str(err)
    assert BLOCK_AFTER < rows_handled < 50000
    await assert_healthy(conn)


# -------------------------------------------------------- 3.2.13 handle_columns
async def test_handle_columns(conn: pg.Connection) -> None:
    await _make_table_a(conn)
    assert await columns_of(conn, "SELECT * FROM a") == [("x", 1114), ("y", 23), ("z", 25)]
    assert await columns_of(conn, "SELECT z, x FROM a") == [("z", 25), ("x", 1114)]
    assert await columns_of(conn, "SELECT x AS moo, y FROM a") == [("moo", 1114), ("y", 23)]
    assert await columns_of(conn, "SELECT * FROM a LIMIT 0") == [
        ("x", 1114),
        ("y", 23),
        ("z", 25),
    ]
    await conn.query_expect_no_data("CREATE TEMPORARY VIEW vw_a AS SELECT z, y FROM a")
    assert await columns_of(conn, "SELECT * FROM vw_a") == [("z", 25), ("y", 23)]
    assert await columns_of(conn, "SELECT * FROM a JOIN a AS b USING (x) ORDER BY a.y") == [
        ("x", 1114),
        ("y", 23),
        ("z", 25),
        ("y", 23),
        ("z", 25),
    ]
    assert await columns_of(conn, "SELECT a.x, a.y, b.y, b.z FROM a, a AS b LIMIT 1") == [
        ("x", 1114),
        ("y", 23),
        ("y", 23),
        ("z", 25),
    ]


async def test_handle_columns_metadata(conn: pg.Connection) -> None:
    await _make_table_a(conn)
    seen: list[tuple[pg.ColumnMetadata, ...]] = []
    rows: list[Row] = []
    await conn.query(
        "SELECT y, z, 1::int2 AS lit FROM a WHERE y = 1",
        handle_row=lambda _n, v: rows.append(v),
        handle_columns=seen.append,
    )
    assert len(seen) == 1
    y, z, lit = seen[0]
    table_oid = await fetch_rows(conn, "SELECT 'a'::regclass::oid")
    assert str(y.table_oid) == table_oid[0][0]
    assert (y.column_number, z.column_number) == (2, 3)
    assert (y.type_size, z.type_size, lit.type_size) == (4, -1, 2)
    assert (lit.table_oid, lit.column_number, lit.pg_type_oid) == (0, 0, 21)
    assert {c.format for c in seen[0]} == {0}
    assert rows == [("1", "test string", "1")]


async def test_same_sql_after_schema_change(conn: pg.Connection) -> None:
    # Every query is parsed afresh (unnamed statement): a cached statement or row
    # description must not outlive a change of the table behind the same SQL text.
    sql = "SELECT * FROM s"
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE s (a int)")
    await conn.query_expect_no_data("INSERT INTO s VALUES (1)")
    assert await columns_of(conn, sql) == [("a", 23)]
    assert await fetch_with_names(conn, sql) == ([("a",)], [("1",)])

    await conn.query_expect_no_data("DROP TABLE s")
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE s (b text, c int8)")
    await conn.query_expect_no_data("INSERT INTO s VALUES ('x', 2)")
    assert await columns_of(conn, sql) == [("b", 25), ("c", 20)]
    assert await fetch_with_names(conn, sql) == ([("b", "c")], [("x", "2")])

    await conn.query_expect_no_data("DROP TABLE s")
    with pytest.raises(pg.errors.UndefinedTable):
        await fetch_rows(conn, sql)
    await assert_healthy(conn)


async def test_handle_columns_raising_prevents_handle_row(conn: pg.Connection) -> None:
    boom = RuntimeError("Intentionally raising in handle_columns")
    rows_handled = 0

    def handle_columns(_columns: tuple[pg.ColumnMetadata, ...]) -> None:
        raise boom

    def handle_row(_names: tuple[str, ...], _values: Row) -> None:
        nonlocal rows_handled
        rows_handled += 1

    with pytest.raises(RuntimeError) as info:
        await conn.query(
            "SELECT * FROM pg_type", handle_row=handle_row, handle_columns=handle_columns
        )
    assert info.value is boom
    assert rows_handled == 0
    await assert_healthy(conn)


async def test_handle_row_raising(conn: pg.Connection) -> None:
    boom = Boom("Intentionally raising in handle_row")
    calls: list[Row] = []
    pushbacks = 0

    def handle_row(_names: tuple[str, ...], values: Row) -> None:
        calls.append(values)
        if len(calls) == 3:
            raise boom

    def pushback() -> None:
        nonlocal pushbacks
        pushbacks += 1

    with pytest.raises(Boom) as info:
        await conn.query(
            "SELECT g FROM generate_series(1, 20000) g", handle_row=handle_row, pushback=pushback
        )
    assert info.value is boom
    assert calls == [("1",), ("2",), ("3",)]
    assert pushbacks == 2
    # The rest of the result was drained: the next query sees its own rows only.
    assert await fetch_rows(conn, "SELECT 'next'") == [("next",)]
    await assert_healthy(conn)


async def test_handle_row_raising_without_pushback(conn: pg.Connection) -> None:
    boom = KeyError("boom")
    calls = 0

    def handle_row(_names: tuple[str, ...], _values: Row) -> None:
        nonlocal calls
        calls += 1
        raise boom

    with pytest.raises(KeyError) as info:
        await conn.query("SELECT g FROM generate_series(1, 20000) g", handle_row=handle_row)
    assert info.value is boom
    assert calls == 1
    assert conn.status == pg.Open()
    assert await fetch_rows(conn, "SELECT 'next'") == [("next",)]
