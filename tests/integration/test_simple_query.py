"""conn.simple_query against real servers.

A port of upstream's test_simple_query.ml (``Private.simple_query``), items 1-15.
Translation: ``Completed_with_no_warnings cmds`` is ``SimpleQueryResult(cmds, ())``,
``Completed_with_warnings (cmds, warnings)`` is ``SimpleQueryResult(cmds, warnings)``,
and ``Failed err`` is a raised PgasyncError whose phase is "Postgres Server Error".
Item 16 (``execute_simple``) has no equivalent in the Python API and is not ported.
Every test works on its own temporary tables.
"""

from __future__ import annotations

from typing import Any

import pytest

import postgres_async as pg
from support import Boom, Row, fetch_rows, with_connection_fixture

INT4, TEXT, BOOL = 23, 25, 16
SERVER_ERROR_PHASE = "Postgres Server Error"


# ------------------------------------------------------------------------------ helpers
class Recorder:
    """Everything the callbacks saw, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def handle_columns(self, columns: tuple[pg.ColumnMetadata, ...]) -> None:
        self.events.append(("columns", [(c.name, c.pg_type_oid) for c in columns]))

    def handle_row(self, names: tuple[str, ...], values: Row) -> None:
        self.events.append(("row", (names, values)))

    @property
    def rows(self) -> list[Row]:
        return [data[1] for kind, data in self.events if kind == "row"]


async def run(conn: pg.Connection, sql: str) -> tuple[pg.SimpleQueryResult, Recorder]:
    recorder = Recorder()
    result = await conn.simple_query(
        sql, handle_row=recorder.handle_row, handle_columns=recorder.handle_columns
    )
    assert isinstance(result, pg.SimpleQueryResult)
    return result, recorder


def cc(tag: str, rows: int | None = None) -> pg.CommandComplete:
    return pg.CommandComplete(tag, rows)


async def assert_usable(conn: pg.Connection) -> None:
    assert conn.status == pg.Open()
    result, recorder = await run(conn, "SELECT 42")
    assert result == pg.SimpleQueryResult((cc("SELECT", 1),), ())
    assert recorder.rows == [("42",)]


def assert_server_error(err: pg.PgasyncError, code: str, sql: str) -> None:
    assert err.postgres_error_code == code
    assert err.phase == SERVER_ERROR_PHASE
    assert err.query == sql
    assert SERVER_ERROR_PHASE in str(err)
    assert code in str(err)


async def create_a(conn: pg.Connection) -> None:
    """Temporary table a holding the rows (1), (2)."""
    result, _ = await run(
        conn, "CREATE TEMPORARY TABLE a (y integer); INSERT INTO a VALUES (1), (2)"
    )
    assert result.commands == (cc("CREATE TABLE"), cc("INSERT", 2))


# Connections made by pg.with_connection (support.with_connection_fixture).
conn = with_connection_fixture()


# ----------------------------------------------------------------------------- 1 - 4
async def test_create_and_insert(conn: pg.Connection) -> None:
    result, recorder = await run(conn, "CREATE TEMPORARY TABLE t (x integer, y text)")
    assert result == pg.SimpleQueryResult((cc("CREATE TABLE"),), ())
    result, recorder = await run(conn, "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, NULL)")
    assert result == pg.SimpleQueryResult((cc("INSERT", 3),), ())
    assert recorder.events == []
    assert await fetch_rows(conn, "SELECT * FROM t ORDER BY x") == [
        ("1", "one"),
        ("2", "two"),
        ("3", None),
    ]


async def test_select(conn: pg.Connection) -> None:
    await run(conn, "CREATE TEMPORARY TABLE t (x integer, y text)")
    await run(conn, "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, NULL)")
    result, recorder = await run(conn, "SELECT x, y FROM t ORDER BY x")
    assert result == pg.SimpleQueryResult((cc("SELECT", 3),), ())
    assert recorder.events == [
        ("columns", [("x", INT4), ("y", TEXT)]),
        ("row", (("x", "y"), ("1", "one"))),
        ("row", (("x", "y"), ("2", "two"))),
        ("row", (("x", "y"), ("3", None))),
    ]


async def test_chained_create_insert_select(conn: pg.Connection) -> None:
    result, recorder = await run(
        conn,
        "CREATE TEMPORARY TABLE t (x integer, y text);"
        " INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three');"
        " SELECT * FROM t ORDER BY x",
    )
    assert result == pg.SimpleQueryResult(
        (cc("CREATE TABLE"), cc("INSERT", 3), cc("SELECT", 3)), ()
    )
    assert recorder.rows == [("1", "one"), ("2", "two"), ("3", "three")]


async def test_chained_selects(conn: pg.Connection) -> None:
    await run(
        conn,
        "CREATE TEMPORARY TABLE t (x integer, y text, z boolean);"
        " INSERT INTO t VALUES (1, 'c', true), (2, 'b', false), (3, 'a', NULL)",
    )
    result, recorder = await run(
        conn, "SELECT x, y FROM t ORDER BY y; SELECT y, z FROM t ORDER BY x"
    )
    assert result == pg.SimpleQueryResult((cc("SELECT", 3), cc("SELECT", 3)), ())
    assert recorder.events == [
        ("columns", [("x", INT4), ("y", TEXT)]),
        ("row", (("x", "y"), ("3", "a"))),
        ("row", (("x", "y"), ("2", "b"))),
        ("row", (("x", "y"), ("1", "c"))),
        ("columns", [("y", TEXT), ("z", BOOL)]),
        ("row", (("y", "z"), ("c", "t"))),
        ("row", (("y", "z"), ("b", "f"))),
        ("row", (("y", "z"), ("a", None))),
    ]


# ------------------------------------------------------------------------------ 5, 6
async def test_errors_do_not_close_the_connection(conn: pg.Connection) -> None:
    await create_a(conn)
    sql = "SELECT 1/0; SELECT * FROM a"
    recorder = Recorder()
    with pytest.raises(pg.PgasyncError) as info:
        await conn.simple_query(sql, handle_row=recorder.handle_row)
    assert_server_error(info.value, "22012", sql)
    assert isinstance(info.value, pg.errors.DivisionByZero)
    assert info.value.postgres_field(pg.PostgresField.MESSAGE) == "division by zero"
    assert recorder.events == []  # the SELECT after the error never ran
    result, recorder = await run(conn, "SELECT * FROM a ORDER BY y")
    assert result == pg.SimpleQueryResult((cc("SELECT", 2),), ())
    assert recorder.rows == [("1",), ("2",)]


async def test_chained_commands_form_an_implicit_transaction(conn: pg.Connection) -> None:
    await run(
        conn, "CREATE TEMPORARY TABLE mytable (x integer); INSERT INTO mytable VALUES (1), (2), (3)"
    )
    sql = "INSERT INTO mytable VALUES (15); SELECT 1/0; INSERT INTO mytable VALUES (16)"
    with pytest.raises(pg.PgasyncError) as info:
        await conn.simple_query(sql)
    assert_server_error(info.value, "22012", sql)
    # The first INSERT was rolled back with the rest.
    result, recorder = await run(conn, "SELECT x FROM mytable ORDER BY x")
    assert result.commands == (cc("SELECT", 3),)
    assert recorder.rows == [("1",), ("2",), ("3",)]


# ---------------------------------------------------------------------------- COPY IN
async def test_copy_in_gracefully_handled(conn: pg.Connection) -> None:
    await create_a(conn)
    sql = "COPY a FROM STDIN; SELECT * FROM a"
    recorder = Recorder()
    with pytest.raises(pg.PgasyncError) as info:
        await conn.simple_query(sql, handle_row=recorder.handle_row)
    err = info.value
    assert_server_error(err, "57014", sql)
    message = err.postgres_field(pg.PostgresField.MESSAGE) or ""
    assert message.startswith("COPY from stdin failed: ")
    assert "COPY FROM STDIN is not appropriate" in message
    assert (err.postgres_field(pg.PostgresField.WHERE) or "").startswith("COPY a, line 1")
    assert recorder.events == []
    await assert_usable(conn)
    assert await fetch_rows(conn, "SELECT count(*) FROM a") == [("2",)]


async def test_copy_in_in_a_chain(conn: pg.Connection) -> None:
    await create_a(conn)
    sql = "SELECT * FROM a ORDER BY y; COPY a FROM STDIN;"
    recorder = Recorder()
    with pytest.raises(pg.PgasyncError) as info:
        await conn.simple_query(sql, handle_row=recorder.handle_row)
    assert_server_error(info.value, "57014", sql)
    assert recorder.rows == [("1",), ("2",)]  # delivered before the COPY failed
    await assert_usable(conn)


# --------------------------------------------------------------------------- COPY OUT
COPY_OUT_WARNING = "COPY TO STDOUT is not appropriate"


async def test_copy_out_gracefully_handled(conn: pg.Connection) -> None:
    await create_a(conn)
    result, recorder = await run(conn, "COPY a TO STDOUT")
    assert result.commands == (cc("COPY", 2),)
    assert len(result.warnings) == 1
    assert COPY_OUT_WARNING in result.warnings[0]
    assert result.warnings[0].startswith("Command ignored")
    assert recorder.events == []
    await assert_usable(conn)


async def test_copy_out_in_a_chain(conn: pg.Connection) -> None:
    await create_a(conn)
    result, recorder = await run(conn, "COPY a TO STDOUT; SELECT * FROM a ORDER BY y")
    assert result.commands == (cc("COPY", 2), cc("SELECT", 2))
    assert len(result.warnings) == 1
    assert COPY_OUT_WARNING in result.warnings[0]
    assert recorder.rows == [("1",), ("2",)]

    result, recorder = await run(conn, "SELECT * FROM a ORDER BY y; COPY a TO STDOUT")
    assert result.commands == (cc("SELECT", 2), cc("COPY", 2))
    assert len(result.warnings) == 1
    assert COPY_OUT_WARNING in result.warnings[0]
    assert recorder.rows == [("1",), ("2",)]

    # Two COPYs, two warnings.
    result, _ = await run(conn, "COPY a TO STDOUT; COPY (SELECT 1) TO STDOUT")
    assert result.commands == (cc("COPY", 2), cc("COPY", 1))
    assert len(result.warnings) == 2


async def test_chained_selects_across_tables(conn: pg.Connection) -> None:
    result, recorder = await run(
        conn,
        "CREATE TEMPORARY TABLE t1 (x integer);"
        " CREATE TEMPORARY TABLE t2 (y text);"
        " CREATE TEMPORARY TABLE t3 (z boolean);"
        " INSERT INTO t1 VALUES (2), (1);"
        " INSERT INTO t2 VALUES ('foo'), ('bar');"
        " INSERT INTO t3 VALUES (false), (true)",
    )
    assert result == pg.SimpleQueryResult(
        (cc("CREATE TABLE"),) * 3 + (cc("INSERT", 2),) * 3,
        (),
    )
    assert recorder.events == []
    result, recorder = await run(
        conn,
        "SELECT x FROM t1 ORDER BY x; SELECT y FROM t2 ORDER BY y;"
        " SELECT z FROM t3 ORDER BY z DESC",
    )
    assert result == pg.SimpleQueryResult((cc("SELECT", 2),) * 3, ())
    assert recorder.events == [
        ("columns", [("x", INT4)]),
        ("row", (("x",), ("1",))),
        ("row", (("x",), ("2",))),
        ("columns", [("y", TEXT)]),
        ("row", (("y",), ("bar",))),
        ("row", (("y",), ("foo",))),
        ("columns", [("z", BOOL)]),
        ("row", (("z",), ("t",))),
        ("row", (("z",), ("f",))),
    ]


async def test_copy_out_does_not_prevent_the_rest(conn: pg.Connection) -> None:
    result, recorder = await run(
        conn,
        "CREATE TEMPORARY TABLE a (y integer); INSERT INTO a VALUES (1); INSERT INTO a VALUES (2);"
        " COPY a TO STDOUT; INSERT INTO a VALUES (3)",
    )
    assert result.commands == (
        cc("CREATE TABLE"),
        cc("INSERT", 1),
        cc("INSERT", 1),
        cc("COPY", 2),
        cc("INSERT", 1),
    )
    assert len(result.warnings) == 1
    assert COPY_OUT_WARNING in result.warnings[0]
    assert recorder.events == []
    result, recorder = await run(conn, "SELECT y FROM a ORDER BY y")
    assert recorder.rows == [("1",), ("2",), ("3",)]


# -------------------------------------------------------------------------- callbacks
async def test_exception_in_handle_row(conn: pg.Connection) -> None:
    error = Boom("handle_row broke")
    calls = 0

    def handle_row(_names: tuple[str, ...], _values: Row) -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(Boom) as info:
        await conn.simple_query("select * from pg_class", handle_row=handle_row)
    assert info.value is error
    assert calls == 1  # no callback after the one that raised
    assert conn.status == pg.Open()
    await assert_usable(conn)


async def test_exception_in_handle_columns(conn: pg.Connection) -> None:
    error = Boom("handle_columns broke")
    rows = 0

    def handle_columns(_columns: tuple[pg.ColumnMetadata, ...]) -> None:
        raise error

    def handle_row(_names: tuple[str, ...], _values: Row) -> None:
        nonlocal rows
        rows += 1

    with pytest.raises(Boom) as info:
        await conn.simple_query(
            "select * from pg_class; select 1",
            handle_row=handle_row,
            handle_columns=handle_columns,
        )
    assert info.value is error
    assert rows == 0
    assert conn.status == pg.Open()
    await assert_usable(conn)


async def test_handle_columns(conn: pg.Connection) -> None:
    await run(
        conn,
        "CREATE TEMPORARY TABLE t (x integer, y text, z boolean);"
        " INSERT INTO t VALUES (1, 'one', true), (2, 'two', NULL), (3, 'three', false)",
    )
    result, recorder = await run(
        conn,
        "SELECT * FROM t ORDER BY x;BEGIN;SELECT x, y FROM t ORDER BY y;COMMIT;"
        " SELECT z FROM t ORDER BY z",
    )
    assert result == pg.SimpleQueryResult(
        (cc("SELECT", 3), cc("BEGIN"), cc("SELECT", 3), cc("COMMIT"), cc("SELECT", 3)), ()
    )
    assert recorder.events == [
        ("columns", [("x", INT4), ("y", TEXT), ("z", BOOL)]),
        ("row", (("x", "y", "z"), ("1", "one", "t"))),
        ("row", (("x", "y", "z"), ("2", "two", None))),
        ("row", (("x", "y", "z"), ("3", "three", "f"))),
        ("columns", [("x", INT4), ("y", TEXT)]),
        ("row", (("x", "y"), ("1", "one"))),
        ("row", (("x", "y"), ("3", "three"))),
        ("row", (("x", "y"), ("2", "two"))),
        ("columns", [("z", BOOL)]),
        ("row", (("z",), ("f",))),
        ("row", (("z",), ("t",))),
        ("row", (("z",), (None,))),  # NULL sorts last
    ]


async def test_handle_columns_for_an_empty_result(conn: pg.Connection) -> None:
    result, recorder = await run(conn, "SELECT 1 AS one WHERE false; SELECT 'x'::text AS two")
    assert result.commands == (cc("SELECT", 0), cc("SELECT", 1))
    assert recorder.events == [
        ("columns", [("one", INT4)]),
        ("columns", [("two", TEXT)]),
        ("row", (("two",), ("x",))),
    ]


# ------------------------------------------------------------------------------ extra
async def test_empty_and_default_callbacks(conn: pg.Connection) -> None:
    assert await conn.simple_query("") == pg.SimpleQueryResult((), ())
    assert await conn.simple_query(";") == pg.SimpleQueryResult((), ())
    # handle_row may be left out: the rows are dropped.
    assert await conn.simple_query("SELECT generate_series(1, 5)") == pg.SimpleQueryResult(
        (cc("SELECT", 5),), ()
    )
    await assert_usable(conn)
