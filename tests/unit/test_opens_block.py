"""Which statements open a transaction block, for draining rather than cancelling one
with statements pipelined behind it (a stray cancel inside a block cannot be undone)."""

from __future__ import annotations

import pytest

from postgres_async.connection import _opens_block


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
