"""conn.copy_in_rows(..., format="binary") against real servers.

Each supported type is sent in its binary form and read back as text; a bad value
mid-feed, an Abort and an exception from feed_data end the COPY with nothing committed
and the connection usable; a missing table, a missing column and an unsupported column
type fail before the COPY starts. A statement-level trigger counting into a sequence
(sequences ignore rollbacks) tells whether a COPY started at all.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import decimal
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeAlias

import pytest

import postgres_async as pg
from support import Boom, assert_usable, fetch_rows, fetch_value

RowFeed: TypeAlias = pg.Data[Sequence[object]] | pg.Wait | pg.Abort | pg.Finished

D = decimal.Decimal
PLUS_0530 = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


async def create_counted(conn: pg.Connection, name: str, columns: str) -> None:
    """A temporary table whose COPYs (and INSERTs) count in the sequence ``copies``."""
    await conn.query_expect_no_data(f"CREATE TEMPORARY TABLE {name} ({columns})")
    await conn.query_expect_no_data("CREATE TEMPORARY SEQUENCE copies")
    await conn.query_expect_no_data(
        "CREATE FUNCTION pg_temp.count_statement() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM nextval('copies'); RETURN NULL; END $$"
    )
    await conn.query_expect_no_data(
        f"CREATE TRIGGER counted BEFORE INSERT ON {name} "
        "FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.count_statement()"
    )


async def copies_started(conn: pg.Connection) -> int:
    rows = await fetch_rows(conn, "SELECT last_value, is_called FROM copies")
    last_value, is_called = rows[0]
    return int(last_value or 0) if is_called == "t" else 0


def counting_feed(rows: Sequence[Sequence[object]]) -> tuple[Any, list[int]]:
    """A feed_data callable over ``rows``, and a list holding how often it was called."""
    calls = [0]
    it = iter(rows)

    def feed() -> RowFeed:
        calls[0] += 1
        row = next(it, None)
        return pg.Finished() if row is None else pg.Data(row)

    return feed, calls


# ---------------------------------------------------------------- every type, by value
# (column type, values sent, what the server prints for each); NULL is added to each.
TYPE_CASES: list[tuple[str, list[object], list[str]]] = [
    ("bool", [True, False], ["t", "f"]),
    (
        "bytea",
        [b"\x00\xff", bytearray(b"ab"), memoryview(b"xyz")[1:], b""],
        ["\\x00ff", "\\x6162", "\\x797a", "\\x"],
    ),
    ('"char"', ["a", "~"], ["a", "~"]),
    ("name", ["pg_class", "é"], ["pg_class", "é"]),
    ("int2", [-(2**15), 2**15 - 1, 0], ["-32768", "32767", "0"]),
    ("int4", [-(2**31), 2**31 - 1, 7], ["-2147483648", "2147483647", "7"]),
    ("int8", [-(2**63), 2**63 - 1], ["-9223372036854775808", "9223372036854775807"]),
    ("oid", [0, 2**32 - 1], ["0", "4294967295"]),
    ("text", ["", "é ☃ 𝄞", "tab\there\nnew\\line \\N"], ["", "é ☃ 𝄞", "tab\there\nnew\\line \\N"]),
    ("varchar(5)", ["abc", "héllo"], ["abc", "héllo"]),
    ("character(3)", ["x", "abc"], ["x  ", "abc"]),
    ("json", ['{"b": 1,  "a": [1, 2]}'], ['{"b": 1,  "a": [1, 2]}']),
    ("jsonb", ['{"b": 1,  "a": [1, 2]}', '"é"'], ['{"a": [1, 2], "b": 1}', '"é"']),
    ("float4", [1.5, 0.1, 3, float("-inf"), float("nan")], ["1.5", "0.1", "3", "-Infinity", "NaN"]),
    (
        "float8",
        [0.1, -0.0, 1e300, 2**53 + 1, float("inf")],
        ["0.1", "-0", "1e+300", "9.007199254740992e+15", "Infinity"],
    ),
    (
        "numeric",
        [
            D("-12345.678"),
            D("0.00"),
            10**30,
            D("1E+8"),
            D("0.0001"),
            D("NaN"),
            D("Infinity"),
            D("-Infinity"),
            -7,
        ],
        [
            "-12345.678",
            "0.00",
            "1000000000000000000000000000000",
            "100000000",
            "0.0001",
            "NaN",
            "Infinity",
            "-Infinity",
            "-7",
        ],
    ),
    ("numeric(6,2)", [D("1.005"), 3], ["1.01", "3.00"]),
    (
        "date",
        [datetime.date(1999, 12, 31), datetime.date(1, 1, 1), datetime.date(9999, 12, 31)],
        ["1999-12-31", "0001-01-01", "9999-12-31"],
    ),
    ("time", [datetime.time(23, 59, 59, 999999), datetime.time()], ["23:59:59.999999", "00:00:00"]),
    (
        "timestamp",
        [
            datetime.datetime(2000, 1, 1, 0, 0, 0, 1),
            datetime.datetime(1, 1, 1),
            datetime.datetime(2024, 2, 29, 12, 30),
        ],
        ["2000-01-01 00:00:00.000001", "0001-01-01 00:00:00", "2024-02-29 12:30:00"],
    ),
    (
        "timestamptz",
        [
            datetime.datetime(2020, 6, 1, 12, 0, tzinfo=PLUS_0530),
            datetime.datetime(1999, 12, 31, 23, 59, 59, 5, tzinfo=datetime.UTC),
        ],
        ["2020-06-01 06:30:00+00", "1999-12-31 23:59:59.000005+00"],
    ),
    (
        "interval",
        [
            datetime.timedelta(days=1, hours=2, microseconds=5),
            datetime.timedelta(seconds=-1),
            datetime.timedelta(),
        ],
        ["1 day 02:00:00.000005", "-1 days +23:59:59", "00:00:00"],
    ),
    (
        "uuid",
        [uuid.UUID(int=1), uuid.UUID("12345678-1234-5678-1234-567812345678")],
        ["00000000-0000-0000-0000-000000000001", "12345678-1234-5678-1234-567812345678"],
    ),
]


@pytest.mark.parametrize(
    ("sql_type", "values", "expected"), TYPE_CASES, ids=[case[0] for case in TYPE_CASES]
)
async def test_every_supported_type_round_trips(
    conn: pg.Connection, sql_type: str, values: list[object], expected: list[str]
) -> None:
    await conn.query_expect_no_data("SET TimeZone TO 'UTC'")
    await conn.query_expect_no_data(f"CREATE TEMPORARY TABLE t (k int, v {sql_type})")
    rows = [(k, value) for k, value in enumerate([*values, None])]
    result = await conn.copy_in_rows("t", ["k", "v"], feed_data=rows, format="binary")
    assert result == pg.CommandComplete("COPY", len(rows))
    got = await fetch_rows(conn, "SELECT v FROM t ORDER BY k")
    assert got == [(text,) for text in [*expected, None]]


async def test_domains_are_sent_as_their_base_type(conn: pg.Connection) -> None:
    schema = f"binary_copy_{uuid.uuid4().hex[:12]}"
    await conn.query_expect_no_data(f'CREATE SCHEMA "{schema}"')
    try:
        await conn.query_expect_no_data(
            f'CREATE DOMAIN "{schema}".posint AS int4 CHECK (VALUE > 0)'
        )
        await conn.query_expect_no_data(
            f'CREATE DOMAIN "{schema}".small AS "{schema}".posint CHECK (VALUE < 100)'
        )
        await conn.query_expect_no_data(f'CREATE DOMAIN "{schema}".word AS varchar(4)')
        await conn.query_expect_no_data(
            f'CREATE TABLE "{schema}".t (n "{schema}".small, w "{schema}".word)'
        )
        result = await conn.copy_in_rows(
            "t", ["n", "w"], schema_name=schema, feed_data=[(1, "a"), (99, None)], format="binary"
        )
        assert result == pg.CommandComplete("COPY", 2)
        # The domain's constraint is checked by the server.
        with pytest.raises(pg.errors.CheckViolation):
            await conn.copy_in_rows(
                "t", ["n"], schema_name=schema, feed_data=[(5,), (100,)], format="binary"
            )
        # Values are checked against the base type here.
        with pytest.raises(TypeError, match=r"row 0, column 'n' \(.*small\): int4 takes int"):
            await conn.copy_in_rows(
                "t", ["n"], schema_name=schema, feed_data=[("5",)], format="binary"
            )
        assert await fetch_rows(conn, f'SELECT n, w FROM "{schema}".t ORDER BY n') == [
            ("1", "a"),
            ("99", None),
        ]
        await assert_usable(conn)
    finally:
        await conn.query_expect_no_data(f'DROP SCHEMA "{schema}" CASCADE')


async def test_several_columns_in_another_order_and_defaults(conn: pg.Connection) -> None:
    await conn.query_expect_no_data(
        "CREATE TEMPORARY TABLE t (id int8, created date DEFAULT '2001-02-03', "
        "name text, score float8, ok bool)"
    )
    rows = [(True, 2.5, "two", 2), (None, None, None, 1)]
    result = await conn.copy_in_rows(
        "t", ("ok", "score", "name", "id"), feed_data=rows, format="binary"
    )
    assert result == pg.CommandComplete("COPY", 2)
    assert await fetch_rows(conn, "SELECT * FROM t ORDER BY id") == [
        ("1", "2001-02-03", None, None, None),
        ("2", "2001-02-03", "two", "2.5", "t"),
    ]


# ------------------------------------------------------------ forms of feed_data, size
def _list_feed(rows: list[tuple[object, ...]]) -> Any:
    return list(rows)


def _generator_feed(rows: list[tuple[object, ...]]) -> Any:
    def gen() -> Iterator[tuple[object, ...]]:
        yield from rows

    return gen()


def _async_generator_feed(rows: list[tuple[object, ...]]) -> Any:
    async def agen() -> AsyncIterator[tuple[object, ...]]:
        for i, row in enumerate(rows):
            if i % 500 == 0:
                await asyncio.sleep(0)
            yield row

    return agen()


def _callable_feed(rows: list[tuple[object, ...]]) -> Any:
    return counting_feed(rows)[0]


def _callable_with_waits_feed(rows: list[tuple[object, ...]]) -> Any:
    it = iter(rows)
    calls = 0

    def feed() -> RowFeed:
        nonlocal calls
        calls += 1
        if calls % 1000 == 0:
            return pg.Wait(asyncio.sleep(0))
        row = next(it, None)
        return pg.Finished() if row is None else pg.Data(row)

    return feed


@pytest.mark.parametrize(
    "make_feed",
    [_list_feed, _generator_feed, _async_generator_feed, _callable_feed, _callable_with_waits_feed],
    ids=["list", "generator", "async-generator", "callable", "callable-with-waits"],
)
async def test_many_rows_in_several_batches(conn: pg.Connection, make_feed: Any) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE t (id int4, name text, label text)")
    total = 10_000  # several batches whatever the form
    rows = [(i, f"name-{i}", None if i % 7 == 0 else "é" * (i % 5)) for i in range(total)]
    result = await conn.copy_in_rows(
        "t", ["id", "name", "label"], feed_data=make_feed(rows), format="binary"
    )
    assert result == pg.CommandComplete("COPY", total)
    got = await fetch_rows(conn, "SELECT id, name, label FROM t ORDER BY id")
    assert got == [(str(i), name, label) for i, name, label in rows]


async def test_no_rows_at_all(conn: pg.Connection) -> None:
    await create_counted(conn, "t", "id int4")
    feeds: list[Any] = [[], _callable_feed([]), _async_generator_feed([])]
    for feed in feeds:
        result = await conn.copy_in_rows("t", ["id"], feed_data=feed, format="binary")
        assert result == pg.CommandComplete("COPY", 0)
    assert await copies_started(conn) == 3
    assert await fetch_value(conn, "SELECT count(*) FROM t") == "0"


async def test_rows_as_lists_tuples_and_other_sequences(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE t (id int4, name text)")
    rows: list[Any] = [(1, "a"), [2, "b"], collections.deque([3, "c"]), iter([4, "d"])]
    result = await conn.copy_in_rows("t", ["id", "name"], feed_data=rows, format="binary")
    assert result == pg.CommandComplete("COPY", 4)
    assert await fetch_rows(conn, "SELECT * FROM t ORDER BY id") == [
        ("1", "a"),
        ("2", "b"),
        ("3", "c"),
        ("4", "d"),
    ]


# --------------------------------------------------------------- ending early, errors
async def test_abort(conn: pg.Connection) -> None:
    await create_counted(conn, "t", "id int4, name text")
    script: list[RowFeed] = [
        pg.Data((1, "one")),
        pg.Wait(asyncio.sleep(0)),
        pg.Data((2, "two")),
        pg.Abort("changed my mind"),
    ]
    with pytest.raises(pg.errors.QueryCanceled) as info:
        await conn.copy_in_rows(
            "t", ["id", "name"], feed_data=lambda: script.pop(0), format="binary"
        )
    assert "changed my mind" in (info.value.postgres_field(pg.PostgresField.MESSAGE) or "")
    assert script == []
    assert await copies_started(conn) == 1
    assert await fetch_value(conn, "SELECT count(*) FROM t") == "0"
    await assert_usable(conn)


def _raising_generator(error: Exception) -> Any:
    def gen() -> Iterator[tuple[object, ...]]:
        for i in range(5000):
            yield (i, "before the error")
        raise error

    return gen()


def _raising_callable(error: Exception) -> Any:
    calls = 0

    def feed() -> RowFeed:
        nonlocal calls
        calls += 1
        if calls == 3000:
            raise error
        return pg.Data((calls, "before the error"))

    return feed


@pytest.mark.parametrize(
    "make_feed", [_raising_generator, _raising_callable], ids=["generator", "callable"]
)
async def test_exception_from_feed_data(conn: pg.Connection, make_feed: Any) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE t (id int4, name text)")
    error = Boom("feed broke")
    with pytest.raises(Boom) as info:
        await conn.copy_in_rows("t", ["id", "name"], feed_data=make_feed(error), format="binary")
    assert info.value is error
    assert await fetch_value(conn, "SELECT count(*) FROM t") == "0"
    await assert_usable(conn)
    result = await conn.copy_in_rows("t", ["id", "name"], feed_data=[(1, "x")], format="binary")
    assert result == pg.CommandComplete("COPY", 1)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (
            ("seven", "x", 1.0),
            TypeError,
            r"row 5000, column 'id' \(integer\): int4 takes int, not str",
        ),
        ((True, "x", 1.0), TypeError, "int4 takes int, not bool"),
        (
            (2**31, "x", 1.0),
            ValueError,
            r"row 5000, column 'id' \(integer\): value out of range for int4",
        ),
        (
            (1, "a\0b", 1.0),
            ValueError,
            r"row 5000, column 'name' \(text\): text cannot contain a NUL",
        ),
        ((1, "\udc80", 1.0), ValueError, r"row 5000, column 'name' \(text\): 'utf-8' codec"),
        (
            (1, "x", "1.0"),
            TypeError,
            r"row 5000, column 'score' \(real\): float4 takes float or int",
        ),
        ((1, "x", 1e39), ValueError, "out of range for float4"),
        ((1, "x"), ValueError, "row 5000 has 2 values for 3 columns"),
        ((1, "x", 1.0, None), ValueError, "row 5000 has 4 values for 3 columns"),
        ("abc", TypeError, "row 5000: a COPY row must be a sequence of values"),
    ],
)
async def test_bad_value_mid_feed(
    conn: pg.Connection, bad: Any, error: type[Exception], message: str
) -> None:
    await create_counted(conn, "t", "id int4, name text, score float4")
    rows: list[Any] = [(i, f"row {i}", i / 2) for i in range(6000)]
    rows[5000] = bad  # in the second batch: the first has gone to the server already
    with pytest.raises(error, match=message) as info:
        await conn.copy_in_rows("t", ["id", "name", "score"], feed_data=rows, format="binary")
    assert type(info.value) is error
    assert await copies_started(conn) == 1
    assert await fetch_value(conn, "SELECT count(*) FROM t") == "0"
    await assert_usable(conn)
    result = await conn.copy_in_rows(
        "t", ["id", "name", "score"], feed_data=rows[:5000], format="binary"
    )
    assert result == pg.CommandComplete("COPY", 5000)


async def test_bad_value_from_a_callable_feed(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE t (at timestamptz)")
    naive = datetime.datetime(2020, 1, 1)
    feed, calls = counting_feed([(datetime.datetime.now(datetime.UTC),), (naive,)])
    with pytest.raises(TypeError, match=r"row 1, column 'at' .*aware datetime"):
        await conn.copy_in_rows("t", ["at"], feed_data=feed, format="binary")
    assert calls[0] <= 3
    assert await fetch_value(conn, "SELECT count(*) FROM t") == "0"
    await assert_usable(conn)


async def test_server_rejects_a_value(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE t (id int4 PRIMARY KEY, v varchar(3))")
    with pytest.raises(pg.errors.StringDataRightTruncation):
        await conn.copy_in_rows(
            "t", ["id", "v"], feed_data=[(1, "abc"), (2, "abcd")], format="binary"
        )
    with pytest.raises(pg.errors.UniqueViolation):
        await conn.copy_in_rows("t", ["id", "v"], feed_data=[(1, "a"), (1, "b")], format="binary")
    assert await fetch_value(conn, "SELECT count(*) FROM t") == "0"
    await assert_usable(conn)


# ------------------------------------------------------------- before the COPY starts
async def test_unsupported_column_type(conn: pg.Connection) -> None:
    await create_counted(conn, "t", "id int4, tags text[], p point")
    for column, type_name in (("tags", r"text\[\]"), ("p", "point")):
        feed, calls = counting_feed([(1, None)])
        with pytest.raises(TypeError, match=rf"column '{column}' has type {type_name}"):
            await conn.copy_in_rows("t", ["id", column], feed_data=feed, format="binary")
        assert calls[0] == 0
    assert await copies_started(conn) == 0
    await assert_usable(conn)
    # The text format takes any type.
    result = await conn.copy_in_rows("t", ["id", "tags"], feed_data=[(1, "{a,b}")])
    assert result == pg.CommandComplete("COPY", 1)


async def test_unknown_table(conn: pg.Connection) -> None:
    feed, calls = counting_feed([(1,)])
    with pytest.raises(pg.errors.UndefinedTable) as undefined:
        await conn.copy_in_rows("no_such_table", ["id"], feed_data=feed, format="binary")
    assert undefined.value.postgres_error_code == "42P01"
    with pytest.raises(pg.PgasyncError) as info:
        await conn.copy_in_rows(
            "t", ["id"], schema_name="no_such_schema", feed_data=feed, format="binary"
        )
    # PostgreSQL 15 says invalid_schema_name, 18 undefined_table.
    assert info.value.postgres_error_code in ("3F000", "42P01")
    assert calls[0] == 0
    await assert_usable(conn)


async def test_unknown_column(conn: pg.Connection) -> None:
    await create_counted(conn, "t", "id int4, name text")
    await conn.query_expect_no_data("ALTER TABLE t DROP COLUMN name")
    for missing in ("nope", "name", "ID", "ctid"):
        feed, calls = counting_feed([(1, None)])
        with pytest.raises(pg.errors.UndefinedColumn) as info:
            await conn.copy_in_rows("t", ["id", missing], feed_data=feed, format="binary")
        assert info.value.postgres_error_code == "42703"
        assert f'column "{missing}" of relation "t" does not exist' in str(info.value)
        assert calls[0] == 0
    assert await copies_started(conn) == 0
    await assert_usable(conn)


@pytest.mark.parametrize("bad_format", ["BINARY", "csv", "", None, b"binary"])
async def test_invalid_format(conn: pg.Connection, bad_format: Any) -> None:
    await create_counted(conn, "t", "id int4")
    feed, calls = counting_feed([(1,)])
    with pytest.raises(ValueError, match="format must be 'text' or 'binary'"):
        await conn.copy_in_rows("t", ["id"], feed_data=feed, format=bad_format)
    assert calls[0] == 0
    assert await copies_started(conn) == 0
    await assert_usable(conn)


async def test_odd_identifiers_and_schema_name(conn: pg.Connection) -> None:
    schema = f'odd "schema".{uuid.uuid4().hex[:8]}'
    quoted_schema = '"' + schema.replace('"', '""') + '"'
    await conn.query_expect_no_data(f"CREATE SCHEMA {quoted_schema}")
    try:
        await conn.query_expect_no_data(
            f'CREATE TABLE {quoted_schema}."table-name. x" '
            '(k int, "y space" text, "z""quote" text, "UPPER" int8, "é" bool)'
        )
        columns = ["k", "y space", 'z"quote', "UPPER", "é"]
        result = await conn.copy_in_rows(
            "table-name. x",
            columns,
            schema_name=schema,
            feed_data=[(1, "A", "B", 2**40, True)],
            format="binary",
        )
        assert result == pg.CommandComplete("COPY", 1)
        assert await fetch_rows(conn, f'SELECT * FROM {quoted_schema}."table-name. x"') == [
            ("1", "A", "B", str(2**40), "t")
        ]
        # A schema-qualified name in table_name is a name with a dot in it.
        with pytest.raises(pg.errors.UndefinedTable):
            await conn.copy_in_rows(
                f"{schema}.table-name. x", columns, feed_data=[], format="binary"
            )
    finally:
        await conn.query_expect_no_data(f"DROP SCHEMA {quoted_schema} CASCADE")


async def test_temporary_table_shadowing_a_permanent_one(conn: pg.Connection) -> None:
    """The lookup resolves the name as COPY does (search_path, pg_temp first)."""
    name = f"shadow_{uuid.uuid4().hex[:12]}"
    await conn.query_expect_no_data(f'CREATE TABLE "{name}" (v text)')
    try:
        await conn.query_expect_no_data(f'CREATE TEMPORARY TABLE "{name}" (v int4)')
        result = await conn.copy_in_rows(name, ["v"], feed_data=[(5,)], format="binary")
        assert result == pg.CommandComplete("COPY", 1)
        assert await fetch_rows(conn, f'SELECT v FROM pg_temp."{name}"') == [("5",)]
    finally:
        await conn.query_expect_no_data(f'DROP TABLE public."{name}"')


async def test_concurrent_with_other_statements(conn: pg.Connection) -> None:
    """The type lookup and the COPY each take their turn in the FIFO: statements issued
    meanwhile run before, between or after them, and all get their own outcomes."""
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE t (id int4, name text)")
    rows = [(i, f"n{i}") for i in range(3000)]
    results = await asyncio.gather(
        fetch_value(conn, "SELECT count(*) FROM t"),
        conn.copy_in_rows("t", ["id", "name"], feed_data=rows, format="binary"),
        fetch_value(conn, "SELECT count(*) FROM t"),
        conn.copy_in_rows("t", ["id", "name"], feed_data=rows[:10], format="binary"),
        conn.copy_in_rows("t", ["id", "name"], feed_data=rows[:5], format="text"),
        fetch_value(conn, "SELECT count(*) FROM t"),
    )
    copied = [pg.CommandComplete("COPY", n) for n in (3000, 10, 5)]
    assert [results[1], results[3], results[4]] == copied
    assert results[0] == "0"
    assert results[2] in ("0", "5", "3000", "3005")
    assert await fetch_value(conn, "SELECT count(*) FROM t") == "3015"
    await assert_usable(conn)


# ------------------------------------------------------------------------- cancellation
@pytest.mark.parametrize("stage", ["feeding", "blocked by a lock"])
async def test_cancelled_caller(conn: pg.Connection, other_conn: pg.Connection, stage: str) -> None:
    """A caller cancelled while its rows are being fed, or before the COPY could start
    (another session holds an ACCESS EXCLUSIVE lock on the table, so the server waits),
    gets CancelledError within 2 s; its own futures are left alone, nothing is committed
    and the connection stays usable."""
    await conn.query_expect_no_data("CREATE TABLE cancelled_binary (id int4, name text)")
    try:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sent = [0]
        fed_all = asyncio.Event()

        def feed() -> RowFeed:
            sent[0] += 1
            if sent[0] <= 500:
                return pg.Data((sent[0], "row"))
            fed_all.set()
            return pg.Wait(never)

        if stage == "blocked by a lock":
            await other_conn.query_expect_no_data("BEGIN")
            await other_conn.query_expect_no_data(
                "LOCK TABLE cancelled_binary IN ACCESS EXCLUSIVE MODE"
            )
        copying = asyncio.ensure_future(
            conn.copy_in_rows("cancelled_binary", ["id", "name"], feed_data=feed, format="binary")
        )
        if stage == "blocked by a lock":
            await asyncio.sleep(0.3)  # long enough for a COPY that should not start
        else:
            async with asyncio.timeout(10):
                await fed_all.wait()
        assert not copying.done()
        assert sent[0] == (0 if stage == "blocked by a lock" else 501)
        copying.cancel()
        async with asyncio.timeout(2):
            with pytest.raises(asyncio.CancelledError):
                await copying
        assert not never.done()  # the caller's own future is never touched
        if stage == "blocked by a lock":
            await other_conn.query_expect_no_data("ROLLBACK")
        assert sent[0] in (0, 501)
        await assert_usable(conn)
        assert await fetch_value(conn, "SELECT count(*) FROM cancelled_binary") == "0"
    finally:
        await conn.query_expect_no_data("DROP TABLE cancelled_binary")


async def test_a_lock_taken_first_holds_off_a_concurrent_type_change(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    """The README's advice against another session's ALTER TABLE between the type lookup
    and the COPY: in a transaction that locks the table first, the ALTER waits for the
    commit, so the int4 bytes are written as int4 and converted by the ALTER after."""
    await conn.query_expect_no_data("CREATE TABLE locked_binary (x int4)")
    try:
        await conn.query_expect_no_data("BEGIN")
        await conn.query_expect_no_data("LOCK TABLE locked_binary IN ROW EXCLUSIVE MODE")
        altering = asyncio.ensure_future(
            other_conn.query_expect_no_data("ALTER TABLE locked_binary ALTER x TYPE float4")
        )
        await asyncio.sleep(0.2)
        assert not altering.done()
        result = await conn.copy_in_rows(
            "locked_binary", ["x"], feed_data=[(1,), (2,), (1 << 30,)], format="binary"
        )
        assert result == pg.CommandComplete("COPY", 3)
        assert not altering.done()
        await conn.query_expect_no_data("COMMIT")
        async with asyncio.timeout(5):
            await altering
        rows = await fetch_rows(conn, "SELECT x::text FROM locked_binary ORDER BY locked_binary.x")
        assert rows == [("1",), ("2",), ("1.0737418e+09",)]
    finally:
        await conn.query_expect_no_data("DROP TABLE locked_binary")
