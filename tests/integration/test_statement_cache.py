"""The opt-in statement cache (``connect(..., statement_cache_size=N)``).

Off by default: every query then Parses the unnamed statement, as API.md specifies.
With a size, each distinct SQL of ``query`` / ``query_expect_no_data`` is Parsed once
into a named statement and later only bound. What the server holds is read with the
simple query protocol, which never uses the cache, so observing changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import postgres_async as pg

SELECT_INT = "SELECT $1::int AS n"


async def _rows(conn: pg.Connection, sql: str, params: list[object] | None = None) -> list[Any]:
    out: list[Any] = []
    await conn.query(sql, params, handle_row=lambda _n, v: out.append(v))
    return out


async def _prepared(conn: pg.Connection) -> dict[str, str]:
    """The session's prepared statements, SQL -> name, seen through the simple protocol."""
    found: dict[str, str] = {}

    def row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
        name, statement = values
        assert name is not None
        assert statement is not None
        found[statement] = name

    await conn.simple_query("SELECT name, statement FROM pg_prepared_statements", handle_row=row)
    return found


@contextlib.asynccontextmanager
async def _table(conn: pg.Connection, name: str) -> AsyncIterator[None]:
    """A table ``name (a int)`` for the block, dropped after it."""
    await conn.query_expect_no_data(f"CREATE TABLE {name} (a int)")
    try:
        yield
    finally:
        await conn.query_expect_no_data(f"DROP TABLE {name}")


async def _cached(
    server_kwargs: dict[str, Any], size: int = 8, *, early_reads: bool = True
) -> pg.Connection:
    return await pg.connect(**server_kwargs, statement_cache_size=size, early_reads=early_reads)


async def test_off_by_default_nothing_is_prepared(conn: pg.Connection) -> None:
    for i in range(3):
        assert await _rows(conn, SELECT_INT, [i]) == [(str(i),)]
    assert await _prepared(conn) == {}


async def test_a_repeated_statement_is_prepared_once(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs) as conn:
        for i in range(5):
            assert await _rows(conn, SELECT_INT, [i]) == [(str(i),)]
        prepared = await _prepared(conn)
        assert list(prepared) == [SELECT_INT]
        assert prepared[SELECT_INT].startswith("__postgres_async_")


async def test_the_least_recently_used_statement_is_closed(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs, size=2) as conn:
        for sql in ("SELECT 'a'", "SELECT 'b'", "SELECT 'a'", "SELECT 'c'"):
            assert await _rows(conn, sql) == [(sql[-2],)]
        # 'b' was least recently used when 'c' came; its Close went with c's Parse.
        assert set(await _prepared(conn)) == {"SELECT 'a'", "SELECT 'c'"}
        for sql in ("SELECT 'b'", "SELECT 'c'"):
            assert await _rows(conn, sql) == [(sql[-2],)]
        assert set(await _prepared(conn)) == {"SELECT 'b'", "SELECT 'c'"}


async def test_columns_and_results_are_those_of_an_uncached_query(
    server_kwargs: dict[str, Any], conn: pg.Connection
) -> None:
    sql = "SELECT $1::int AS a, 'x'::text AS b, NULL::numeric AS c"

    async def run(connection: pg.Connection) -> tuple[Any, ...]:
        columns: list[Any] = []
        rows: list[Any] = []
        cc = await connection.query(
            sql,
            [7],
            handle_row=lambda n, v: rows.append((n, v)),
            handle_columns=columns.append,
        )
        return cc, columns, rows

    expected = await run(conn)
    async with await _cached(server_kwargs) as cached:
        first = await run(cached)
        again = await run(cached)
    assert first == expected
    assert again == expected
    assert expected[2] == [(("a", "b", "c"), ("7", "x", None))]


async def test_expect_no_data_is_cached_too(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs) as conn:
        await conn.query_expect_no_data("CREATE TEMP TABLE t (a int)")
        for i in range(3):
            cc = await conn.query_expect_no_data("INSERT INTO t VALUES ($1)", [i])
            assert cc == pg.CommandComplete("INSERT", 1)
        with pytest.raises(pg.PgasyncError, match="query unexpectedly produced rows"):
            await conn.query_expect_no_data("SELECT a FROM t")
        assert "INSERT INTO t VALUES ($1)" in await _prepared(conn)
        assert await _rows(conn, "SELECT count(*) FROM t") == [("3",)]


async def test_copy_is_never_cached(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs) as conn:
        await conn.query_expect_no_data("CREATE TEMP TABLE t (a int)")
        for _ in range(2):
            await conn.copy_in_raw("COPY t FROM STDIN", feed_data=[b"1\n"])
        assert await _rows(conn, "SELECT count(*) FROM t") == [("2",)]
        assert not any("COPY" in sql for sql in await _prepared(conn))


async def test_a_failed_parse_is_not_cached(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs) as conn:
        for _ in range(2):
            with pytest.raises(pg.PgasyncError) as info:
                await conn.query("SELEC 1", handle_row=lambda _n, _v: None)
            assert info.value.postgres_error_code == "42601"  # never 26000
        assert await _prepared(conn) == {}
        assert await _rows(conn, "SELECT 1") == [("1",)]


async def test_a_bind_error_keeps_the_statement(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs) as conn:
        with pytest.raises(pg.PgasyncError) as info:
            await conn.query(SELECT_INT, ["not a number"], handle_row=lambda _n, _v: None)
        assert info.value.postgres_error_code == "22P02"
        name = (await _prepared(conn))[SELECT_INT]
        assert await _rows(conn, SELECT_INT, [5]) == [("5",)]
        assert (await _prepared(conn))[SELECT_INT] == name


async def test_a_schema_change_is_retried_outside_a_transaction(
    server_kwargs: dict[str, Any], other_conn: pg.Connection
) -> None:
    async with await _cached(server_kwargs) as conn, _table(conn, "cache_alter"):
        await conn.query_expect_no_data("INSERT INTO cache_alter VALUES (1)")
        sql = "SELECT * FROM cache_alter"
        assert await _rows(conn, sql) == [("1",)]
        old_name = (await _prepared(conn))[sql]
        await other_conn.query_expect_no_data(
            "ALTER TABLE cache_alter ADD COLUMN b text DEFAULT 'x'"
        )
        names: list[tuple[str | None, ...]] = []
        await conn.query(sql, handle_row=lambda n, v: names.append((*n, *v)))
        assert names == [("a", "b", "1", "x")]
        # The retry ran on the unnamed statement; the next use prepares it afresh,
        # closing the stale one.
        assert await _rows(conn, sql) == [("1", "x")]
        prepared = await _prepared(conn)
        assert old_name not in prepared.values()
        assert sql in prepared


async def test_a_schema_change_in_a_transaction_raises_0A000(
    server_kwargs: dict[str, Any], other_conn: pg.Connection
) -> None:
    async with await _cached(server_kwargs) as conn, _table(conn, "cache_alter_tx"):
        sql = "SELECT * FROM cache_alter_tx"
        assert await _rows(conn, sql) == []
        await other_conn.query_expect_no_data("ALTER TABLE cache_alter_tx ADD COLUMN b int")
        await conn.query_expect_no_data("BEGIN")
        with pytest.raises(pg.PgasyncError) as info:
            await _rows(conn, sql)
        # The transaction has failed: retrying would hide that from the caller.
        assert info.value.postgres_error_code == "0A000"
        assert info.value.postgres_field(pg.PostgresField.ROUTINE) == "RevalidateCachedQuery"
        await conn.query_expect_no_data("ROLLBACK")
        assert conn.status == pg.Open()
        await _rows(conn, sql)
        assert await _rows(conn, "SELECT 1") == [("1",)]


@pytest.mark.parametrize("statement", ["DEALLOCATE ALL", "DISCARD ALL"])
async def test_statements_dropped_by_the_user_are_prepared_again(
    server_kwargs: dict[str, Any], statement: str
) -> None:
    async with await _cached(server_kwargs) as conn:
        assert await _rows(conn, SELECT_INT, [1]) == [("1",)]
        assert await _rows(conn, "SELECT 2") == [("2",)]
        await conn.simple_query(statement)
        assert await _prepared(conn) == {}
        for _ in range(2):  # the first run finds them gone, the second prepares them
            assert await _rows(conn, SELECT_INT, [3]) == [("3",)]
            assert await _rows(conn, "SELECT 2") == [("2",)]
        assert set(await _prepared(conn)) == {SELECT_INT, "SELECT 2"}


async def test_concurrent_first_uses_prepare_one_statement(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs) as conn:
        results = await asyncio.gather(*(_rows(conn, SELECT_INT, [i]) for i in range(50)))
        assert results == [[(str(i),)] for i in range(50)]
        assert list(await _prepared(conn)) == [SELECT_INT]
        results = await asyncio.gather(*(_rows(conn, SELECT_INT, [i]) for i in range(50)))
        assert results == [[(str(i),)] for i in range(50)]
        assert list(await _prepared(conn)) == [SELECT_INT]


async def test_pipelined_queries_behind_a_stale_statement_are_not_overtaken(
    server_kwargs: dict[str, Any], other_conn: pg.Connection
) -> None:
    # A retry would run after the queries pipelined behind it, so then the caller gets
    # the 0A000 instead; every query either succeeds or reports it, in order. Without
    # early reads the first reply is read only after all three are written: an early
    # read could take the 0A000 while the first query is still alone, and rightly retry.
    async with (
        await _cached(server_kwargs, early_reads=False) as conn,
        _table(conn, "cache_pipeline"),
    ):
        sql = "SELECT * FROM cache_pipeline"
        assert await _rows(conn, sql) == []
        await other_conn.query_expect_no_data("ALTER TABLE cache_pipeline ADD COLUMN b int")
        inserted = "INSERT INTO cache_pipeline VALUES (1, 2)"
        outcomes = await asyncio.gather(
            _rows(conn, sql),
            conn.query_expect_no_data(inserted),
            _rows(conn, sql),
            return_exceptions=True,
        )
        first, insert, last = outcomes
        assert isinstance(first, pg.PgasyncError)
        assert first.postgres_error_code == "0A000"
        assert insert == pg.CommandComplete("INSERT", 1)
        # The last one ran after the INSERT either way (retried alone, or already
        # bound to a fresh statement).
        assert last == [("1", "2")]
        assert await _rows(conn, sql) == [("1", "2")]


async def test_a_query_cancelled_before_it_was_sent_leaves_no_statement(
    server_kwargs: dict[str, Any],
) -> None:
    async with await _cached(server_kwargs) as conn:
        # Nothing is pipelined behind SQL that mentions COPY (it might start COPY FROM
        # STDIN), so the next query waits unsent.
        blocker = asyncio.ensure_future(_rows(conn, 'SELECT pg_sleep(0.3) AS "copy"'))
        waiting = asyncio.ensure_future(_rows(conn, "SELECT 'never sent'"))
        await asyncio.sleep(0.05)  # the sleep is running, the other waits its turn
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await blocker
        assert "SELECT 'never sent'" not in await _prepared(conn)
        assert await _rows(conn, "SELECT 'never sent'") == [("never sent",)]
        assert "SELECT 'never sent'" in await _prepared(conn)


async def test_a_timeout_leaves_the_cache_usable(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs) as conn:
        sql = "SELECT pg_sleep($1::float8)"
        assert await _rows(conn, sql, [0]) == [("",)]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await _rows(conn, sql, [5])
        assert conn.status == pg.Open()
        assert await _rows(conn, sql, [0]) == [("",)]
        assert list(await _prepared(conn)) == [sql]


async def test_statements_survive_a_rollback(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs) as conn:
        await conn.query_expect_no_data("BEGIN")
        assert await _rows(conn, SELECT_INT, [1]) == [("1",)]
        await conn.query_expect_no_data("ROLLBACK")
        # Protocol-level statements are not transactional: the Bind still finds it.
        assert await _rows(conn, SELECT_INT, [2]) == [("2",)]
        assert SELECT_INT in await _prepared(conn)


async def test_in_a_failed_transaction_errors_are_the_usual_ones(
    server_kwargs: dict[str, Any],
) -> None:
    async with await _cached(server_kwargs) as conn:
        assert await _rows(conn, SELECT_INT, [1]) == [("1",)]
        await conn.query_expect_no_data("BEGIN")
        with pytest.raises(pg.PgasyncError):
            await _rows(conn, "SELECT 1/0")
        for sql in (SELECT_INT, "SELECT 'new'"):
            with pytest.raises(pg.PgasyncError) as info:
                await _rows(conn, sql, [2] if sql == SELECT_INT else None)
            assert info.value.postgres_error_code == "25P02"
        await conn.query_expect_no_data("ROLLBACK")
        assert await _rows(conn, SELECT_INT, [3]) == [("3",)]
        assert await _rows(conn, "SELECT 'new'") == [("new",)]


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (1_000_001, ValueError), (True, TypeError), (2.0, TypeError)],
)
async def test_invalid_sizes_are_refused_before_connecting(
    server_kwargs: dict[str, Any], value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="statement_cache_size"):
        await pg.connect(**server_kwargs, statement_cache_size=value)


async def test_the_size_can_come_from_the_dsn(server_kwargs: dict[str, Any]) -> None:
    kwargs = dict(server_kwargs)
    async with await pg.connect("statement_cache_size=4", **kwargs) as conn:
        assert await _rows(conn, SELECT_INT, [1]) == [("1",)]
        assert list(await _prepared(conn)) == [SELECT_INT]
    with pytest.raises(ValueError, match="statement_cache_size"):
        await pg.connect("statement_cache_size=many", **kwargs)


async def test_pushback_on_a_cached_statement(server_kwargs: dict[str, Any]) -> None:
    sql = "SELECT g FROM generate_series(1, $1::int) AS g"
    async with await _cached(server_kwargs) as conn:
        for count in (3, 2000):
            rows: list[str | None] = []
            pauses = 0

            def keep(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
                rows.append(values[0])  # noqa: B023 (called before the loop moves on)

            async def pushback() -> None:
                nonlocal pauses
                pauses += 1
                await asyncio.sleep(0)

            cc = await conn.query(sql, [count], handle_row=keep, pushback=pushback)
            assert cc == pg.CommandComplete("SELECT", count)
            assert rows == [str(i) for i in range(1, count + 1)]
            assert pauses == count
        assert list(await _prepared(conn)) == [sql]


async def test_the_statements_own_26000_leaves_the_cache_alone(
    server_kwargs: dict[str, Any],
) -> None:
    # EXECUTE of a missing SQL-level statement fails with 26000 while executing, not at
    # Bind: the cached statements are fine and nothing is retried.
    async with await _cached(server_kwargs) as conn:
        assert await _rows(conn, SELECT_INT, [1]) == [("1",)]
        before = await _prepared(conn)
        for _ in range(2):
            with pytest.raises(pg.PgasyncError) as info:
                await conn.query_expect_no_data("EXECUTE missing_statement")
            assert info.value.postgres_error_code == "26000"
        after = await _prepared(conn)
        assert after[SELECT_INT] == before[SELECT_INT]
        assert "EXECUTE missing_statement" in after
        await conn.simple_query("PREPARE missing_statement AS SELECT 1")
        assert await _rows(conn, "EXECUTE missing_statement") == [("1",)]


# ------------------------------------------------- a described statement: no Describe
def _record_writes(conn: pg.Connection) -> list[bytes]:
    """Every frontend message ``conn`` writes from now on, one bytes each."""
    written: list[bytes] = []
    stream = conn._stream
    write = stream.write

    def recording(data: bytes) -> None:
        data = bytes(data)
        pos = 0
        while pos < len(data):
            end = pos + 1 + int.from_bytes(data[pos + 1 : pos + 5], "big")
            written.append(data[pos:end])
            pos = end
        write(data)

    stream.write = recording  # type: ignore[method-assign]
    return written


def _kinds(messages: list[bytes]) -> str:
    return "".join(chr(message[0]) for message in messages)


async def test_a_described_statement_is_bound_without_a_describe(
    server_kwargs: dict[str, Any],
) -> None:
    async with await _cached(server_kwargs) as conn:
        written = _record_writes(conn)
        columns: list[Any] = []
        rows: list[Any] = []
        for i in range(3):
            await conn.query(
                SELECT_INT,
                [i],
                handle_row=lambda n, v: rows.append((n, v)),
                handle_columns=columns.append,
            )
        assert rows == [(("n",), (str(i),)) for i in range(3)]
        # Parse + Bind + Describe the first time; then the description is known.
        assert _kinds(written) == "PBDES" + "BES" * 2
        assert len(columns) == 3
        assert columns[0] == columns[1] == columns[2]
        assert [(c.name, c.pg_type_oid) for c in columns[0]] == [("n", 23)]


async def test_a_statement_of_no_rows_is_bound_without_a_describe(
    server_kwargs: dict[str, Any],
) -> None:
    async with await _cached(server_kwargs) as conn:
        await conn.query_expect_no_data("CREATE TEMP TABLE t (a int)")
        written = _record_writes(conn)
        columns: list[Any] = []
        for i in range(3):
            cc = await conn.query(
                "INSERT INTO t VALUES ($1)",
                [i],
                handle_row=lambda _n, _v: pytest.fail("an INSERT has no rows"),
                handle_columns=columns.append,
            )
            assert cc == pg.CommandComplete("INSERT", 1)
        assert _kinds(written) == "PBDES" + "BES" * 2
        assert columns == []
        assert await _rows(conn, "SELECT a FROM t ORDER BY a") == [("0",), ("1",), ("2",)]


async def test_rows_of_no_columns_keep_their_description(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs) as conn:
        columns: list[Any] = []
        rows: list[Any] = []
        for _ in range(3):
            await conn.query(
                "SELECT FROM generate_series(1, 3)",
                handle_row=lambda n, v: rows.append((n, v)),
                handle_columns=columns.append,
            )
        assert columns == [()] * 3
        assert rows == [((), ())] * 9


async def test_a_statement_first_failing_at_bind_is_described_by_the_next_use(
    server_kwargs: dict[str, Any],
) -> None:
    async with await _cached(server_kwargs) as conn:
        written = _record_writes(conn)
        with pytest.raises(pg.PgasyncError) as info:
            await conn.query(SELECT_INT, ["not a number"], handle_row=lambda _n, _v: None)
        assert info.value.postgres_error_code == "22P02"
        for i in range(2):
            assert await _rows(conn, SELECT_INT, [i]) == [(str(i),)]
        # The Parse succeeded but nothing was described: the second use describes it.
        assert _kinds(written) == "PBDES" + "BDES" + "BES"


async def test_a_renamed_column_is_never_reported_by_its_old_name(
    server_kwargs: dict[str, Any], other_conn: pg.Connection
) -> None:
    # The description kept for the statement is never used once it is out of date:
    # the server refuses to bind a statement whose result changed (0A000), and the
    # query is run again with a fresh description.
    async with await _cached(server_kwargs) as conn, _table(conn, "cache_rename"):
        await conn.query_expect_no_data("INSERT INTO cache_rename VALUES (1)")
        sql = "SELECT * FROM cache_rename"
        seen: list[Any] = []
        for _ in range(2):
            await conn.query(sql, handle_row=lambda n, v: seen.append((n, v)))
        await other_conn.query_expect_no_data("ALTER TABLE cache_rename RENAME COLUMN a TO z")
        for _ in range(2):
            await conn.query(sql, handle_row=lambda n, v: seen.append((n, v)))
        await other_conn.query_expect_no_data("ALTER TABLE cache_rename ALTER COLUMN z TYPE text")
        columns: list[Any] = []
        for _ in range(2):
            await conn.query(
                sql, handle_row=lambda n, v: seen.append((n, v)), handle_columns=columns.append
            )
        assert seen == [(("a",), ("1",))] * 2 + [(("z",), ("1",))] * 4
        assert [[(c.name, c.pg_type_oid) for c in cols] for cols in columns] == [[("z", 25)]] * 2


async def test_errors_of_a_described_statement_are_those_of_a_described_one(
    server_kwargs: dict[str, Any], conn: pg.Connection
) -> None:
    sql = "SELECT 10 / (3 - i) FROM generate_series(1, 5) AS i"

    async def run(connection: pg.Connection) -> tuple[list[Any], str, str | None]:
        rows: list[Any] = []
        with pytest.raises(pg.PgasyncError) as info:
            await connection.query(sql, handle_row=lambda _n, v: rows.append(v))
        return rows, str(info.value), info.value.postgres_error_code

    expected = await run(conn)
    assert expected[2] == "22012"
    async with await _cached(server_kwargs) as cached:
        written = _record_writes(cached)
        outcomes = [await run(cached) for _ in range(3)]
        assert _kinds(written) == "PBDES" + "BES" * 2
        assert cached.status == pg.Open()
    assert outcomes == [expected] * 3


async def test_expect_no_data_refuses_rows_of_a_described_statement(
    server_kwargs: dict[str, Any],
) -> None:
    async with await _cached(server_kwargs) as conn:
        assert await _rows(conn, "SELECT 1") == [("1",)]
        written = _record_writes(conn)
        for _ in range(2):
            with pytest.raises(pg.PgasyncError, match="query unexpectedly produced rows"):
                await conn.query_expect_no_data("SELECT 1")
        assert _kinds(written) == "BES" * 2
        assert await _rows(conn, "SELECT 1") == [("1",)]


async def test_pipelined_uses_of_a_described_statement(server_kwargs: dict[str, Any]) -> None:
    async with await _cached(server_kwargs, early_reads=False) as conn:
        assert await _rows(conn, SELECT_INT, [0]) == [("0",)]
        written = _record_writes(conn)
        results = await asyncio.gather(*(_rows(conn, SELECT_INT, [i]) for i in range(20)))
        assert results == [[(str(i),)] for i in range(20)]
        assert _kinds(written) == "BES" * 20


async def test_a_utility_statement_is_described_every_time(server_kwargs: dict[str, Any]) -> None:
    # What EXECUTE returns depends on the SQL-level statement it names at that moment,
    # which a prepared statement of ours does not pin: it is asked every time.
    async with await _cached(server_kwargs) as conn:
        await conn.simple_query("PREPARE changing AS SELECT 1 AS one")
        written = _record_writes(conn)
        seen: list[Any] = []
        for _ in range(2):
            await conn.query("EXECUTE changing", handle_row=lambda n, v: seen.append((n, v)))
        await conn.simple_query("DEALLOCATE changing")
        await conn.simple_query("PREPARE changing AS SELECT 'a' AS x, 2 AS y")
        await conn.query("EXECUTE changing", handle_row=lambda n, v: seen.append((n, v)))
        assert seen == [(("one",), ("1",))] * 2 + [(("x", "y"), ("a", "2"))]
        assert "EXECUTE changing" in await _prepared(conn)
        assert _kinds(written).count("D") == 3
