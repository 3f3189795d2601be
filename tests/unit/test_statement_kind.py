"""What the client reads from a statement's first keyword.

Which statements open a transaction block, for draining rather than cancelling one with
statements pipelined behind it (a stray cancel inside a block cannot be undone); and
which ones the server plans, whose columns a cached statement may keep without asking
again (a utility statement's are worked out at each run)."""

from __future__ import annotations

import pytest

from postgres_async.connection import _opens_block, _result_is_fixed


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "begin isolation level serializable",
        "  \n\tStart Transaction read only",
        "-- a note\nBEGIN",
        "/* a /* nested */ note */ BEGIN",
        "/* one */ -- two\n  /* three */start transaction",
        "BEGIN;",
    ],
)
def test_statements_that_open_a_block(sql: str) -> None:
    assert _opens_block(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "   ",
        "SELECT 'BEGIN'",
        "COMMIT",
        "ROLLBACK",
        "END",
        "DO $$ BEGIN PERFORM 1; END $$",
        "-- BEGIN\nSELECT 1",
        "/* BEGIN */ SELECT 1",
        "/* unterminated BEGIN",
        "-- only a comment",
        "/* nested /* BEGIN */ still a comment */ SELECT 1",
    ],
)
def test_statements_that_do_not(sql: str) -> None:
    assert not _opens_block(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT $1::int",
        "select 1",
        "  \n\tWith t AS (SELECT 1) SELECT * FROM t",
        "VALUES (1), (2)",
        "TABLE pg_class",
        "INSERT INTO t VALUES (1) RETURNING *",
        "update t SET a = 1",
        "DELETE FROM t",
        "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
        "(SELECT 1) UNION (SELECT 2)",
        "-- a note\nSELECT 1",
        "/* a /* nested */ note */ SELECT 1",
        "SELECT\n1",
        "SELECT*FROM t",
    ],
)
def test_statements_the_server_plans(sql: str) -> None:
    assert _result_is_fixed(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "   ",
        "EXECUTE s",
        "execute s(1)",
        "FETCH 10 FROM c",
        "EXPLAIN SELECT 1",
        "SHOW work_mem",
        "CALL p()",
        "PREPARE s AS SELECT 1",
        "DECLARE c CURSOR FOR SELECT 1",
        "SELECTED",
        "WITHOUT",
        "-- SELECT\nEXECUTE s",
        "/* SELECT */ FETCH ALL FROM c",
        "/* unterminated SELECT",
        "1",
    ],
)
def test_utility_statements_and_anything_unrecognised(sql: str) -> None:
    assert not _result_is_fixed(sql)
