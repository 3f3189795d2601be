"""conn.copy_in_raw and conn.copy_in_rows against real servers.

A port of upstream's test_copy_in.ml and the copy-in half of test_smoke.ml, translated
through API.md:
* the library quotes table, schema and column names itself, so names are passed raw
  (upstream's callers pre-quoted them) and a dot in ``table_name`` is part of the name;
* a NUL character in a str value raises ValueError (upstream read it back as ""), and
  ``bytes`` values go in as bytea hex;
* errors are raised as PgasyncError; an exception from ``feed_data`` is re-raised
  (upstream left the deferred undetermined);
* ``feed_data`` may also be a list, a generator or an async generator.
Every test uses temporary tables (or a uniquely named schema it drops afterwards).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeAlias

import pytest

import postgres_async as pg
from support import Boom, Row, assert_usable, fetch_rows, with_connection_fixture

RowFeed: TypeAlias = pg.Data[Sequence[object]] | pg.Wait | pg.Abort | pg.Finished
RawFeed: TypeAlias = pg.Data[str | bytes] | pg.Wait | pg.Abort | pg.Finished

COPY_X = "COPY x (y, z) FROM STDIN"


# ------------------------------------------------------------------------------ helpers
async def fetch_with_names(conn: pg.Connection, sql: str) -> tuple[set[tuple[str, ...]], list[Row]]:
    names: set[tuple[str, ...]] = set()
    rows: list[Row] = []

    def handle_row(column_names: tuple[str, ...], values: Row) -> None:
        names.add(column_names)
        rows.append(values)

    await conn.query(sql, handle_row=handle_row)
    return names, rows


async def create_x(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE x (y integer PRIMARY KEY, z text)")


def rows_feed(rows: Sequence[Sequence[object]]) -> Any:
    """A feed_data callable returning Data(row) for each row, then Finished."""
    it = iter(rows)

    def feed() -> RowFeed:
        row = next(it, None)
        return pg.Finished() if row is None else pg.Data(row)

    return feed


# Connections made by pg.with_connection (support.with_connection_fixture).
conn = with_connection_fixture()
other_conn = with_connection_fixture()


# ------------------------------------------------------------------- basics (3.1, 3.3)
async def test_copy_in_rows_smoke(conn: pg.Connection) -> None:
    """test_smoke "copy-in basics": 10 rows counting down, NULL for odd z."""
    await create_x(conn)
    rows = [[i, f"asdf-{i}" if i % 2 == 0 else None] for i in range(10, 0, -1)]
    result = await conn.copy_in_rows("x", ["y", "z"], feed_data=rows_feed(rows))
    assert result == pg.CommandComplete("COPY", 10)
    names, got = await fetch_with_names(conn, "SELECT * FROM x ORDER BY y")
    assert names == {("y", "z")}
    assert got == [(str(i), f"asdf-{i}" if i % 2 == 0 else None) for i in range(1, 11)]


async def test_copy_in_rows_columns_in_another_order(conn: pg.Connection) -> None:
    await create_x(conn)
    rows: list[list[str | None]] = [["one", "1"], [None, "2"], ["three", "3"]]
    result = await conn.copy_in_rows("x", ["z", "y"], feed_data=rows_feed(rows))
    assert result == pg.CommandComplete("COPY", 3)
    assert await fetch_rows(conn, "SELECT * FROM x ORDER BY y") == [
        ("1", "one"),
        ("2", None),
        ("3", "three"),
    ]


async def test_copy_in_rows_schema_and_dotted_table_name(conn: pg.Connection) -> None:
    """upstream "copy_in_rows, schema": the library quotes, so the raw name is passed."""
    await conn.query_expect_no_data(
        'CREATE TEMPORARY TABLE "test.table" (y integer PRIMARY KEY, z text)'
    )
    rows: list[list[str | None]] = [["one", "1"], [None, "2"], ["three", "3"]]
    result = await conn.copy_in_rows(
        "test.table", ["z", "y"], schema_name="pg_temp", feed_data=rows_feed(rows)
    )
    assert result == pg.CommandComplete("COPY", 3)
    assert await fetch_rows(conn, 'SELECT * FROM pg_temp."test.table" ORDER BY y') == [
        ("1", "one"),
        ("2", None),
        ("3", "three"),
    ]


async def test_copy_in_rows_prequoted_name_is_taken_literally(conn: pg.Connection) -> None:
    """Upstream's pre-quoted '"test.table"' names a table whose name has quotes in it."""
    await conn.query_expect_no_data('CREATE TEMPORARY TABLE "test.table" (y integer)')
    fed = 0

    def feed() -> RowFeed:
        nonlocal fed
        fed += 1
        return pg.Finished()

    with pytest.raises(pg.PgasyncError) as info:
        await conn.copy_in_rows('"test.table"', ["y"], schema_name="pg_temp", feed_data=feed)
    assert info.value.postgres_error_code == "42P01"  # undefined_table
    assert fed == 0
    await assert_usable(conn)


async def test_copy_in_rows_nasty_characters(conn: pg.Connection) -> None:
    await conn.query_expect_no_data(
        "CREATE TEMPORARY TABLE x (y integer PRIMARY KEY, z text, w bytea)"
    )
    # (z sent, z read back, w sent, w read back)
    cases: list[tuple[str | None, str | None, object, str | None]] = [
        ("\n", "\n", "asdf", "\\x61736466"),
        ("\\N", "\\N", "\n", "\\x0a"),
        ("\t", "\t", "\\x00", "\\x00"),
        ("\\t", "\\t", "\\x61", "\\x61"),
        (",", ",", b"asdf", "\\x61736466"),
        ("", "", b"\x00\xff\n\\\t", "\\x00ff0a5c09"),
        ("\\", "\\", b"", "\\x"),
        ("\\x61", "\\x61", None, None),
        ("\r\n", "\r\n", b"\\N", "\\x5c4e"),
        ("a\tb\nc\\d\\N\\", "a\tb\nc\\d\\N\\", bytearray(b"\x01"), "\\x01"),
        ("é ☃ 𝄞", "é ☃ 𝄞", "\\\\", "\\x5c"),
        (None, None, "\\000\\001", "\\x0001"),
    ]
    rows = [[i, z, w] for i, (z, _, w, _) in enumerate(cases)]
    result = await conn.copy_in_rows("x", ["y", "z", "w"], feed_data=rows_feed(rows))
    assert result == pg.CommandComplete("COPY", len(cases))
    got = await fetch_rows(conn, "SELECT y, z, w FROM x ORDER BY y")
    assert got == [(str(i), z, w) for i, (_, z, _, w) in enumerate(cases)]
    # Sanity: "\\N" really is the two-character text, not NULL.
    assert await fetch_rows(conn, "SELECT z IS NULL, length(z) FROM x WHERE y = 1") == [("f", "2")]


async def test_copy_in_rows_nul_in_value_raises_value_error(conn: pg.Connection) -> None:
    await create_x(conn)
    rows: list[list[object]] = [[1, "fine"], [2, "a\x00b"], [3, "never"]]
    with pytest.raises(ValueError, match="NUL"):
        await conn.copy_in_rows("x", ["y", "z"], feed_data=rows_feed(rows))
    assert await fetch_rows(conn, "SELECT count(*) FROM x") == [("0",)]
    await assert_usable(conn)
    # The same table still takes a clean copy afterwards.
    result = await conn.copy_in_rows("x", ["y", "z"], feed_data=[[1, "ok"]])
    assert result == pg.CommandComplete("COPY", 1)
    assert await fetch_rows(conn, "SELECT * FROM x") == [("1", "ok")]


async def test_copy_in_rows_nul_in_names_raises_before_anything_is_sent(
    conn: pg.Connection,
) -> None:
    await create_x(conn)
    fed = 0

    def feed() -> RowFeed:
        nonlocal fed
        fed += 1
        return pg.Finished()

    with pytest.raises(ValueError, match="NUL"):
        await conn.copy_in_rows("x\x00", ["y"], feed_data=feed)
    with pytest.raises(ValueError, match="NUL"):
        await conn.copy_in_rows("x", ["y\x00"], feed_data=feed)
    with pytest.raises(ValueError, match="NUL"):
        await conn.copy_in_rows("x", ["y"], schema_name="pg_\x00temp", feed_data=feed)
    assert fed == 0
    await assert_usable(conn)


async def test_copy_in_rows_nasty_column_names(conn: pg.Connection) -> None:
    await conn.query_expect_no_data(
        'CREATE TEMPORARY TABLE "table-name " (k integer, "y space" text, "z""quote" text,'
        ' "year" text, LOWERCASE1 text, "UPPERCASE2" text)'
    )
    columns = ["k", "y space", 'z"quote', "year", "lowercase1", "UPPERCASE2"]
    result = await conn.copy_in_rows(
        "table-name ", columns, feed_data=[[1, "A", "B", "C", "D", "E"]]
    )
    assert result == pg.CommandComplete("COPY", 1)
    names, rows = await fetch_with_names(conn, 'SELECT * FROM "table-name "')
    assert names == {tuple(columns)}
    assert rows == [("1", "A", "B", "C", "D", "E")]


async def test_copy_in_rows_lots_of_data_with_waits(conn: pg.Connection) -> None:
    await create_x(conn)
    total = 8192
    text = "a" * 1024
    loop = asyncio.get_running_loop()
    state = {"next": 1, "calls": 0, "waits": 0, "waits_done": 0}

    def round_trip() -> asyncio.Future[None]:
        """Like upstream's do_an_epoll: completes after one trip through the loop."""
        future: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            state["waits_done"] += 1
            future.set_result(None)

        loop.call_soon(done)
        return future

    def feed() -> RowFeed:
        state["calls"] += 1
        i = state["next"]
        if i > total:
            return pg.Finished()
        if i % 256 == 0 and state["waits"] < i // 256:
            state["waits"] += 1
            return pg.Wait(round_trip())
        state["next"] = i + 1
        return pg.Data([i, text])

    result = await conn.copy_in_rows("x", ["y", "z"], feed_data=feed)
    assert result == pg.CommandComplete("COPY", total)
    assert state["waits"] == state["waits_done"] == total // 256
    assert state["calls"] == total + total // 256 + 1
    assert await fetch_rows(
        conn, "SELECT count(*), min(y), max(y), sum(y), min(length(z)), max(length(z)) FROM x"
    ) == [("8192", "1", "8192", "33558528", "1024", "1024")]


# ----------------------------------------------------------------------- copy_in_raw
async def test_copy_in_raw_weird_chunking(conn: pg.Connection) -> None:
    await create_x(conn)
    chunks: list[str | bytes] = [
        "1\tone\n",
        "2\t",
        "two",
        "\n",
        b"3\t\xc3",
        b"\xa9t\xc3",
        b"\xa9\n",
    ]
    it = iter(chunks)

    def feed() -> RawFeed:
        chunk = next(it, None)
        return pg.Finished() if chunk is None else pg.Data(chunk)

    result = await conn.copy_in_raw(COPY_X, feed_data=feed)
    assert result == pg.CommandComplete("COPY", 3)
    assert await fetch_rows(conn, "SELECT * FROM x ORDER BY y") == [
        ("1", "one"),
        ("2", "two"),
        ("3", "été"),
    ]


async def test_copy_in_raw_aborting(conn: pg.Connection) -> None:
    await create_x(conn)
    script: list[RawFeed] = [
        pg.Data("1\tone\n"),
        pg.Wait(asyncio.sleep(0)),
        pg.Data("2\ttwo\n"),
        pg.Abort("user reason"),
    ]
    calls = 0

    def feed() -> RawFeed:
        nonlocal calls
        calls += 1
        return script[calls - 1]

    with pytest.raises(pg.PgasyncError) as info:
        await conn.copy_in_raw(COPY_X, feed_data=feed)
    err = info.value
    assert err.postgres_error_code == "57014"
    assert isinstance(err, pg.errors.QueryCanceled)
    assert "user reason" in (err.postgres_field(pg.PostgresField.MESSAGE) or "")
    assert err.query == COPY_X
    assert COPY_X in str(err)
    assert calls == 4  # nothing is pulled after Abort
    assert await fetch_rows(conn, "SELECT count(*) FROM x") == [("0",)]
    await assert_usable(conn)


async def test_copy_in_rows_with_schema_name(conn: pg.Connection) -> None:
    schema = f"my_schema_{uuid.uuid4().hex[:12]}"
    await conn.query_expect_no_data(f'CREATE SCHEMA "{schema}"')
    try:
        await conn.query_expect_no_data(f'CREATE TABLE "{schema}".x (y integer)')
        result = await conn.copy_in_rows("x", ["y"], schema_name=schema, feed_data=[[1], [2]])
        assert result == pg.CommandComplete("COPY", 2)
        assert await fetch_rows(conn, f'SELECT * FROM "{schema}".x ORDER BY y') == [("1",), ("2",)]
        # Upstream passed "my_schema.x" as the table name; here a dot belongs to the name,
        # so that names a table "my_schema.x" (in the search path), which does not exist.
        with pytest.raises(pg.PgasyncError) as info:
            await conn.copy_in_rows(f"{schema}.x", ["y"], feed_data=[[3]])
        assert info.value.postgres_error_code == "42P01"
        assert await fetch_rows(conn, f'SELECT count(*) FROM "{schema}".x') == [("2",)]
    finally:
        await conn.query_expect_no_data(f'DROP SCHEMA "{schema}" CASCADE')


async def test_copy_in_error_mid_copy_stops_feeding(conn: pg.Connection) -> None:
    """upstream "error handling" (the 2024-11 Sync fix): a bad row at call 900."""
    await create_x(conn)
    calls = 0

    def feed() -> RawFeed:
        nonlocal calls
        calls += 1
        if calls > 1000:
            return pg.Finished()
        if calls == 900:
            return pg.Data("not-a-number\ttwo\n")
        if calls % 2 == 0:
            return pg.Wait(asyncio.sleep(0.001))
        return pg.Data(f"{calls}\ttrue\n")

    with pytest.raises(pg.PgasyncError) as info:
        await conn.copy_in_raw(COPY_X, feed_data=feed)
    assert info.value.postgres_error_code == "22P02"  # invalid_text_representation
    assert info.value.query == COPY_X
    # The server rejected row 900 as soon as it saw it: feeding must stop soon after
    # (50 more waits of >= 1 ms each is ample time for the ErrorResponse to arrive).
    assert calls <= 900 + 100, f"feed_data was called {calls} times; the bad row was call 900"
    assert await fetch_rows(conn, "SELECT count(*) FROM x") == [("0",)]
    await assert_usable(conn)


@pytest.mark.parametrize("form", ["callable", "generator"])
async def test_copy_in_unique_violation_stops_a_big_stream_early(
    conn: pg.Connection, form: str
) -> None:
    await create_x(conn)
    total = 200_000
    calls = 0

    def row() -> list[object]:
        nonlocal calls
        calls += 1
        key = 1 if calls == 10 else calls  # duplicate of row 1 early on
        return [key, "some text to make the rows a little longer"]

    def feed() -> RowFeed:
        return pg.Finished() if calls >= total else pg.Data(row())

    def gen() -> Iterator[list[object]]:
        while calls < total:
            yield row()

    with pytest.raises(pg.errors.UniqueViolation) as info:
        await conn.copy_in_rows("x", ["y", "z"], feed_data=feed if form == "callable" else gen())
    assert info.value.postgres_error_code == "23505"
    assert calls < total // 2, f"{calls} of {total} rows were produced"
    assert await fetch_rows(conn, "SELECT count(*) FROM x") == [("0",)]
    await assert_usable(conn)


# ------------------------------------------------------------- forms of feed_data
def _list_feed(rows: list[list[object]]) -> Any:
    return list(rows)


def _generator_feed(rows: list[list[object]]) -> Any:
    def gen() -> Iterator[list[object]]:
        yield from rows

    return gen()


def _async_generator_feed(rows: list[list[object]]) -> Any:
    async def agen() -> AsyncIterator[list[object]]:
        for row in rows:
            await asyncio.sleep(0)
            yield row

    return agen()


@pytest.mark.parametrize(
    "make_feed",
    [rows_feed, _list_feed, _generator_feed, _async_generator_feed],
    ids=["callable", "list", "generator", "async-generator"],
)
async def test_copy_in_rows_feed_forms(conn: pg.Connection, make_feed: Any) -> None:
    await create_x(conn)
    rows: list[list[object]] = [[i, None if i % 3 == 0 else f"row {i}"] for i in range(1, 3001)]
    result = await conn.copy_in_rows("x", ["y", "z"], feed_data=make_feed(rows))
    assert result == pg.CommandComplete("COPY", 3000)
    got = await fetch_rows(conn, "SELECT y, z FROM x ORDER BY y")
    assert got == [(str(y), z) for y, z in rows]


async def test_copy_in_raw_feed_forms(conn: pg.Connection) -> None:
    await create_x(conn)

    async def agen() -> AsyncIterator[str | bytes]:
        yield "1\tone\n2\t"
        await asyncio.sleep(0)
        yield b"two\n"

    assert await conn.copy_in_raw(COPY_X, feed_data=agen()) == pg.CommandComplete("COPY", 2)
    assert await conn.copy_in_raw(COPY_X, feed_data=["3\tthree\n", b"4\tf"]) == (
        pg.CommandComplete("COPY", 2)
    )
    assert await fetch_rows(conn, "SELECT * FROM x ORDER BY y") == [
        ("1", "one"),
        ("2", "two"),
        ("3", "three"),
        ("4", "f"),
    ]


def _raising_callable(error: Exception) -> Any:
    calls = 0

    def feed() -> RowFeed:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise error
        if calls == 2:
            return pg.Wait(asyncio.sleep(0))
        return pg.Data([calls, "before the error"])

    return feed


def _raising_generator(error: Exception) -> Any:
    def gen() -> Iterator[list[object]]:
        yield [1, "before the error"]
        yield [2, "before the error"]
        raise error

    return gen()


def _raising_async_generator(error: Exception) -> Any:
    async def agen() -> AsyncIterator[list[object]]:
        yield [1, "before the error"]
        await asyncio.sleep(0)
        yield [2, "before the error"]
        raise error

    return agen()


@pytest.mark.parametrize(
    "make_feed",
    [_raising_callable, _raising_generator, _raising_async_generator],
    ids=["callable", "generator", "async-generator"],
)
async def test_copy_in_feed_data_raising(conn: pg.Connection, make_feed: Any) -> None:
    await create_x(conn)
    error = Boom("feed broke")
    with pytest.raises(Boom) as info:
        await conn.copy_in_rows("x", ["y", "z"], feed_data=make_feed(error))
    assert info.value is error
    assert await fetch_rows(conn, "SELECT count(*) FROM x") == [("0",)]
    await assert_usable(conn)
    # A new copy into the same table works.
    assert await conn.copy_in_rows("x", ["y", "z"], feed_data=[[7, "after"]]) == (
        pg.CommandComplete("COPY", 1)
    )
    assert await fetch_rows(conn, "SELECT * FROM x") == [("7", "after")]


# ------------------------------------------------------------ not a COPY FROM STDIN
@pytest.mark.parametrize(
    ("sql", "tag"),
    [
        ("SELECT generate_series(1, 3)", pg.CommandComplete("SELECT", 3)),
        ("CREATE TEMPORARY TABLE not_a_copy (y integer)", pg.CommandComplete("CREATE TABLE", None)),
    ],
    ids=["select", "create"],
)
async def test_copy_in_raw_of_a_non_copy_statement(
    conn: pg.Connection, sql: str, tag: pg.CommandComplete
) -> None:
    fed = 0

    def feed() -> RawFeed:
        nonlocal fed
        fed += 1
        return pg.Finished()

    with pytest.raises(pg.PgasyncError, match="Query did not initiate copy-in mode") as info:
        await conn.copy_in_raw(sql, feed_data=feed)
    assert info.value.query == sql
    assert fed == 0
    await assert_usable(conn)


async def test_copy_in_raw_of_copy_to_stdout(conn: pg.Connection) -> None:
    await create_x(conn)
    await conn.query_expect_no_data("INSERT INTO x VALUES (1, 'one')")
    fed = 0

    def feed() -> RawFeed:
        nonlocal fed
        fed += 1
        return pg.Finished()

    with pytest.raises(pg.PgasyncError) as info:
        await conn.copy_in_raw("COPY x TO STDOUT", feed_data=feed)
    text = str(info.value)
    assert "COPY TO STDOUT" in text or "copy-in mode" in text, text
    assert fed == 0
    await assert_usable(conn)
    assert await fetch_rows(conn, "SELECT * FROM x") == [("1", "one")]


async def test_copy_in_then_queries_from_other_connection_see_commit(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    """A successful copy is committed (visible elsewhere); an aborted one is not."""
    name = f"copy_in_{uuid.uuid4().hex[:12]}"
    await conn.query_expect_no_data(f'CREATE TABLE "{name}" (y integer)')
    try:
        await conn.copy_in_rows(name, ["y"], feed_data=[[1], [2]])
        script: list[RawFeed] = [pg.Data("3\n"), pg.Abort("no")]
        with pytest.raises(pg.errors.QueryCanceled):
            await conn.copy_in_raw(f'COPY "{name}" FROM STDIN', feed_data=lambda: script.pop(0))
        assert await fetch_rows(other_conn, f'SELECT y FROM "{name}" ORDER BY y') == [
            ("1",),
            ("2",),
        ]
    finally:
        await conn.query_expect_no_data(f'DROP TABLE "{name}"')
