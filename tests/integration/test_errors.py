"""Errors from real servers: codes, fields, phases, rendering, classes, pickling.

A port of upstream's test_error_code.ml (deadlock_detected, the error code erased on a
dead connection, short and long syntax errors), plus the Python additions of API.md
section 6: SQLSTATE subclasses and pickling.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Sequence
from typing import Any

import pytest

import postgres_async as pg
from postgres_async.errors import PgasyncError, PostgresField
from support import assert_healthy, fetch_rows

PARSING = "Postgres Server Error (state=Parsing)"
EXECUTING = "Postgres Server Error (state=Executing)"
AFTER_COMPLETE = "Error waiting for ReadyForQuery (after query execution finished)"
ASYNC_DEAD = "ErrorResponse received asynchronously, assuming connection is dead"


async def server_error(
    conn: pg.Connection, sql: str, params: Sequence[object] | None = None
) -> PgasyncError:
    """The PgasyncError a query raises (fails the test if it succeeds)."""
    with pytest.raises(PgasyncError) as info:
        await fetch_rows(conn, sql, params)
    return info.value


# -------------------------------------------------------------- deadlock_detected
async def test_deadlock_detected(conn: pg.Connection) -> None:
    sql = "DO $$ BEGIN RAISE deadlock_detected; END; $$"
    with pytest.raises(pg.errors.DeadlockDetected) as info:
        await conn.query_expect_no_data(sql)
    err = info.value
    assert err.postgres_error_code == "40P01"
    assert err.postgres_field(PostgresField.SEVERITY) == "ERROR"
    assert err.postgres_field(PostgresField.SEVERITY_NON_LOCALISED) == "ERROR"
    assert err.postgres_field(PostgresField.CODE) == "40P01"
    assert err.postgres_field(PostgresField.MESSAGE) == "deadlock_detected"
    assert err.phase == EXECUTING
    assert isinstance(err, pg.errors.TransactionRollback)
    text = str(err)
    assert text.startswith(f'query "{sql}": {EXECUTING}: ')
    assert "40P01" in text
    await assert_healthy(conn)


# ---------------------------------------------- error code erased on a dead connection
async def test_error_code_erased_on_dead_connection(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    pid = conn.backend_pid
    assert pid is not None
    assert await fetch_rows(other_conn, "SELECT pg_terminate_backend($1)", [pid]) == [("t",)]

    with pytest.raises(PgasyncError) as info:
        async with asyncio.timeout(5):
            await conn.close_finished()
    dead = info.value
    assert dead.postgres_error_code == "57P01"
    assert isinstance(dead, pg.errors.AdminShutdown)
    assert dead.postgres_field(PostgresField.SEVERITY) == "FATAL"
    assert dead.phase == ASYNC_DEAD
    assert ASYNC_DEAD in str(dead)
    assert "FATAL 57P01" in str(dead)
    status = conn.status
    assert isinstance(status, pg.Failed)
    assert status.error is dead
    assert status.resources_released

    # A new query does not report the old code as its own.
    with pytest.raises(PgasyncError) as info:
        await conn.query_expect_no_data("")
    err = info.value
    assert err is not dead
    assert err.postgres_error_code == "08003"
    assert isinstance(err, pg.errors.ConnectionDoesNotExist)
    assert err.postgres_field(PostgresField.SEVERITY) is None
    assert "query issued against previously-failed connection" in str(err)
    assert str(err).startswith('query "": ')
    assert err.original_error is not None
    assert err.original_error.postgres_error_code == "57P01"
    assert err.original_error.postgres_field(PostgresField.SEVERITY) == "FATAL"
    assert ASYNC_DEAD in str(err)

    # close_finished and close keep reporting the original failure.
    with pytest.raises(PgasyncError) as info:
        await conn.close_finished()
    assert info.value.postgres_error_code == "57P01"
    with pytest.raises(PgasyncError) as info:
        await conn.close()
    assert info.value.postgres_error_code == "57P01"
    assert isinstance(conn.status, pg.Failed)


async def test_query_on_connection_closed_by_user(server_kwargs: dict[str, Any]) -> None:
    conn = await pg.connect(**server_kwargs)
    await conn.close()
    assert conn.status == pg.ClosedGracefully()
    with pytest.raises(PgasyncError) as info:
        await fetch_rows(conn, "SELECT 1")
    err = info.value
    assert err.postgres_error_code == "08003"
    assert "query issued against connection closed by user" in str(err)
    await conn.close()  # idempotent: does not raise
    assert conn.status == pg.ClosedGracefully()


# ------------------------------------------------------------------- syntax errors
async def test_syntax_errors_for_short_queries_include_full_query(conn: pg.Connection) -> None:
    sql = "select foo, bar from baz"
    err = await server_error(conn, sql)
    assert err.postgres_error_code == "42P01"
    assert isinstance(err, pg.errors.UndefinedTable)
    assert err.postgres_field(PostgresField.SEVERITY) == "ERROR"
    assert err.postgres_field(PostgresField.POSITION) == str(sql.index("baz") + 1)
    assert err.phase == PARSING
    assert str(err).startswith(f'query "{sql}": {PARSING}: ERROR 42P01: ')
    await assert_healthy(conn)


async def test_long_queries_are_shrunk_around_the_error_position(conn: pg.Connection) -> None:
    nums = ", ".join(str(i) for i in range(10000))
    sql = "select $1, " + nums + ", foobar, " + nums
    err = await server_error(conn, sql, [nums])
    assert err.postgres_error_code == "42703"
    assert isinstance(err, pg.errors.UndefinedColumn)
    assert err.phase == PARSING
    error_index = sql.index("foobar")
    assert err.postgres_field(PostgresField.POSITION) == str(error_index + 1)

    text = str(err)
    window = sql[error_index - 1024 : error_index + 1024]
    # Upstream's expected output: "... 29, 9830, ... 9999, foobar, 0, 1, ... 224, 2 ..."
    assert window.startswith("29, 9830, 9831, ")
    assert "9998, 9999, foobar, 0, 1, 2, " in window
    assert window.endswith(", 223, 224, 2")
    assert text.startswith(f'query "... {window} ..." parameters ')
    # The parameter is cut to its first 128 characters.
    assert f"parameters ({nums[:128]!r}...,): {PARSING}: ERROR 42703: " in text
    assert len(text) < 2048 + 500
    # Nothing from the far ends of the query shows.
    assert "select $1" not in text
    await assert_healthy(conn)


async def test_error_reporting_limits_apply(conn: pg.Connection) -> None:
    params = [f"{i}000" for i in range(20)]
    sql = "SELECT " + ", ".join(f"${i}::int" for i in range(1, 21)) + ", nope"
    err = await server_error(conn, sql, params)
    assert err.postgres_error_code == "42703"
    text = str(err)
    shown = ", ".join(repr(p) for p in params[:15])
    assert f"parameters ({shown}, remaining 5 parameter(s) omitted)" in text
    try:
        pg.errors.set_error_reporting_limits(query_length=10, parameter_length=2, parameters=2)
        text = str(err)
        assert 'query "... int, nope" parameters' in text
        assert "parameters ('00'..., remaining 19 parameter(s) omitted)" in text
    finally:
        pg.errors.set_error_reporting_limits()
    assert str(err).count("::int") == 20


# ------------------------------------------------------------- fields and classes
async def test_unique_violation_is_an_integrity_constraint_violation(
    conn: pg.Connection,
) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE t (x int PRIMARY KEY)")
    await conn.query_expect_no_data("INSERT INTO t VALUES (1)")
    with pytest.raises(pg.errors.IntegrityConstraintViolation) as info:
        await conn.query_expect_no_data("INSERT INTO t VALUES ($1)", [1])
    err = info.value
    assert isinstance(err, pg.errors.UniqueViolation)
    assert isinstance(err, PgasyncError)
    assert not isinstance(err, pg.errors.ForeignKeyViolation)
    assert err.postgres_error_code == "23505"
    assert err.postgres_field(PostgresField.CONSTRAINT) == "t_pkey"
    assert err.postgres_field(PostgresField.TABLE) == "t"
    assert err.postgres_field(PostgresField.DETAIL) == "Key (x)=(1) already exists."
    assert (err.postgres_field(PostgresField.SCHEMA) or "").startswith("pg_temp")
    assert err.postgres_field(PostgresField.FILE) is not None
    assert err.postgres_field(PostgresField.LINE) is not None
    assert err.postgres_field(PostgresField.ROUTINE) is not None
    assert err.postgres_field(PostgresField.HINT) is None
    text = str(err)
    assert "ERROR 23505: duplicate key value violates unique constraint" in text
    assert "; DETAIL: Key (x)=(1) already exists." in text
    assert "parameters ('1',)" in text
    assert "Postgres Server Error (state=Executing)" in text
    await assert_healthy(conn)


async def test_raise_with_detail_hint_and_errcode(conn: pg.Connection) -> None:
    err = await server_error(
        conn,
        "DO $$ BEGIN RAISE EXCEPTION 'boom %', 42 "
        "USING DETAIL = E'line1\\nline2', HINT = 'try again', ERRCODE = '22012'; END $$",
    )
    assert isinstance(err, pg.errors.DivisionByZero)
    assert isinstance(err, pg.errors.DataException)
    assert err.postgres_error_code == "22012"
    assert err.postgres_field(PostgresField.MESSAGE) == "boom 42"
    assert err.postgres_field(PostgresField.DETAIL) == "line1\nline2"
    assert err.postgres_field(PostgresField.HINT) == "try again"
    assert err.postgres_field(PostgresField.WHERE) is not None
    text = str(err)
    assert "\n" not in text
    assert "ERROR 22012: boom 42; DETAIL: line1\\nline2; HINT: try again" in text


async def test_error_at_implicit_commit(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE parent (id int PRIMARY KEY)")
    await conn.query_expect_no_data(
        "CREATE TEMPORARY TABLE child (id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)"
    )
    # The insert itself succeeds; the deferred check fails when Sync commits.
    sql = "INSERT INTO child VALUES (1)"
    with pytest.raises(pg.errors.ForeignKeyViolation) as info:
        await conn.query_expect_no_data(sql)
    err = info.value
    assert err.postgres_error_code == "23503"
    assert err.phase == AFTER_COMPLETE
    assert str(err).startswith(f'query "{sql}": {AFTER_COMPLETE}: ERROR 23503: ')
    assert await fetch_rows(conn, "SELECT count(*) FROM child") == [("0",)]
    await assert_healthy(conn)


async def test_error_inside_explicit_transaction(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("BEGIN")
    err = await server_error(conn, "SELECT 1/0")
    assert err.postgres_error_code == "22012"
    err = await server_error(conn, "SELECT 1")
    assert err.postgres_error_code == "25P02"
    assert isinstance(err, pg.errors.InFailedSqlTransaction)
    assert await conn.query_expect_no_data("ROLLBACK") == pg.CommandComplete("ROLLBACK", None)
    await assert_healthy(conn)


# ----------------------------------------------------------------------- pickling
async def test_server_error_pickles(conn: pg.Connection) -> None:
    err = await server_error(conn, "SELECT $1::int", ["a"])
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err) is pg.errors.InvalidTextRepresentation
    assert str(copy) == str(err)
    assert repr(copy) == repr(err)
    assert copy.postgres_error_code == "22P02"
    assert copy.fields == err.fields
    assert copy.phase == "Postgres Server Error (state=Binding)"
    assert copy.query == "SELECT $1::int"
    assert copy.parameters == ("a",)
    assert copy.args == err.args
    for field in PostgresField:
        assert copy.postgres_field(field) == err.postgres_field(field)


async def test_client_error_with_original_error_pickles(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    pid = conn.backend_pid
    assert await fetch_rows(other_conn, "SELECT pg_terminate_backend($1)", [pid]) == [("t",)]
    with pytest.raises(PgasyncError):
        async with asyncio.timeout(5):
            await conn.close_finished()
    with pytest.raises(PgasyncError) as info:
        await fetch_rows(conn, "SELECT 1")
    err = info.value
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert str(copy) == str(err)
    assert copy.postgres_error_code == "08003"
    assert copy.original_error is not None
    assert type(copy.original_error) is pg.errors.AdminShutdown
    assert copy.original_error.postgres_error_code == "57P01"
