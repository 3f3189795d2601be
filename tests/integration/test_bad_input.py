"""Bad input from the caller: refused with ValueError/TypeError, nothing harmful sent.

Issue 3, "Bad input from the caller". What API.md promises:
* a NUL character in the SQL, a parameter or a channel name, a lone surrogate (not
  encodable as UTF-8) and more than 65535 parameters raise ``ValueError`` before anything
  is sent, and the connection stays usable;
* a NUL in a login field (user, database, password, application_name, a server_settings
  key or value, the DSN) raises ``ValueError`` before any connection is made: no
  StartupMessage leaves the client;
* a COPY row with a value of an unsupported type (``TypeError``), a NUL or a lone
  surrogate (``ValueError``) aborts the COPY, the exception is re-raised, no row is
  committed and the connection stays usable; a str given where a row belongs, and
  ``column_names`` given as one str, raise ``TypeError``.

"Nothing is sent" is proved with local listeners that record every byte they get: a
deaf one for the login fields, and a minimal scripted server that logs the client in
(trust) for the query-time input, followed by a well-formed marker query that must be
the very next thing on the wire. Every case also runs against each real server version.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

import postgres_async as pg
from postgres_async.testing import TEST_PASSWORD, PostgresServer
from support import assert_usable, backend_message, close_quietly, fetch_rows, ignore_row

BadCall = Callable[[pg.Connection], Awaitable[object]]

#: Seconds any single scenario may take.
BOUND = 10.0
#: Time the listeners are given to see bytes that should never come.
SETTLE = 0.2


# ------------------------------------------------------------------------------ helpers
LOGIN_OK = (
    backend_message(b"R", struct.pack("!I", 0))
    + backend_message(b"K", struct.pack("!II", 4242, 99))
    + backend_message(b"Z", b"I")
)
#: The answer to Parse/Bind/Describe(portal)/Execute/Sync of a statement without rows.
NO_DATA_ANSWER = (
    backend_message(b"1")
    + backend_message(b"2")
    + backend_message(b"n")
    + backend_message(b"C", b"DO\x00")
    + backend_message(b"Z", b"I")
)


@dataclass
class Listener:
    """A loopback listener that records connections and every byte received.

    With ``login`` it reads one StartupMessage, logs the client in (trust) and then
    answers each Sync with ``NO_DATA_ANSWER``; without, it never answers anything.
    """

    login: bool
    connections: int = 0
    startup: bytearray = field(default_factory=bytearray)
    after_login: bytearray = field(default_factory=bytearray)
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            if not self.login:
                while chunk := await reader.read(65536):
                    self.startup += chunk
                return
            head = await reader.readexactly(4)
            (length,) = struct.unpack("!I", head)
            self.startup += head + await reader.readexactly(length - 4)
            writer.write(LOGIN_OK)
            syncs_answered = 0
            while chunk := await reader.read(65536):
                self.after_login += chunk
                # Sync is the 5-byte message "S\0\0\0\4"; Terminate "X" ends the session.
                for _ in range(
                    bytes(self.after_login).count(b"S\x00\x00\x00\x04") - syncs_answered
                ):
                    writer.write(NO_DATA_ANSWER)
                    syncs_answered += 1
                if self.after_login.endswith(b"X\x00\x00\x00\x04"):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def aclose(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=2)
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def listening(*, login: bool) -> AsyncIterator[Listener]:
    listener = Listener(login=login)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.aclose()


def target(listener: Listener, **kwargs: Any) -> dict[str, Any]:
    """``kwargs`` redirected to ``listener`` (plain TCP: no SSLRequest either)."""
    return {**kwargs, "server": ("127.0.0.1", listener.port), "ssl_mode": "disable"}


# --------------------------------------------------------------- login-time bad input
@dataclass(frozen=True)
class LoginCase:
    """Connection arguments with a NUL in one field, and the same without it."""

    bad: dict[str, Any]
    good: dict[str, Any]


LOGIN_CASES: dict[str, LoginCase] = {
    "user": LoginCase({"user": "postgres\x00evil"}, {"user": "postgres"}),
    "database": LoginCase({"database": "postgres\x00evil"}, {"database": "postgres"}),
    "password": LoginCase(
        {"user": "password_user", "password": TEST_PASSWORD + "\x00evil"},
        {"user": "password_user", "password": TEST_PASSWORD},
    ),
    "application_name": LoginCase({"application_name": "app\x00evil"}, {"application_name": "app"}),
    "server_settings_key": LoginCase(
        {"server_settings": {"search_path\x00evil": "public"}},
        {"server_settings": {"search_path": "public"}},
    ),
    "server_settings_value": LoginCase(
        {"server_settings": {"search_path": "public\x00evil"}},
        {"server_settings": {"search_path": "public"}},
    ),
}


@pytest.mark.parametrize("case", LOGIN_CASES.values(), ids=LOGIN_CASES.keys())
async def test_nul_in_login_field_sends_no_startup_message(
    pg_server: PostgresServer, case: LoginCase
) -> None:
    base = pg_server.connect_kwargs()
    async with asyncio.timeout(BOUND):
        # The same arguments without the NUL log in: the refusal is about the NUL alone.
        good = await pg.connect(**{**base, **case.good})
        await assert_usable(good)
        await good.close()
        with pytest.raises(ValueError, match="NUL"):
            await pg.connect(**{**base, **case.bad})
        async with listening(login=False) as deaf:
            with pytest.raises(ValueError, match="NUL"):
                await pg.connect(**target(deaf, **{**base, **case.bad}))
            await asyncio.sleep(SETTLE)
            assert deaf.connections == 0
            assert bytes(deaf.startup) == b""


DSN_CASES = {
    "uri_user": "postgresql://postgres%00evil@127.0.0.1:{port}/postgres",
    "uri_database": "postgresql://postgres@127.0.0.1:{port}/postgres%00evil",
    "uri_password": "postgresql://postgres:pw%00evil@127.0.0.1:{port}/postgres",
    "uri_application_name": (
        "postgresql://postgres@127.0.0.1:{port}/postgres?application_name=a%00b"
    ),
    "keyword_user": "host=127.0.0.1 port={port} user='postgres\x00evil' dbname=postgres",
    "keyword_application_name": (
        "host=127.0.0.1 port={port} user=postgres dbname=postgres application_name=a\x00b"
    ),
}


@pytest.mark.parametrize("dsn", DSN_CASES.values(), ids=DSN_CASES.keys())
async def test_nul_in_dsn_sends_no_startup_message(pg_server: PostgresServer, dsn: str) -> None:
    async with asyncio.timeout(BOUND):
        with pytest.raises(ValueError, match=r"NUL|%00"):
            await pg.connect(dsn.format(port=pg_server.port), ssl_mode="disable")
        async with listening(login=False) as deaf:
            with pytest.raises(ValueError, match=r"NUL|%00"):
                await pg.connect(dsn.format(port=deaf.port), ssl_mode="disable")
            await asyncio.sleep(SETTLE)
            assert deaf.connections == 0
            assert bytes(deaf.startup) == b""


async def test_listener_sees_a_startup_message(pg_server: PostgresServer) -> None:
    """Control: the deaf listener of the tests above does see a client that connects."""
    async with asyncio.timeout(BOUND), listening(login=False) as deaf:
        kwargs = target(deaf, **pg_server.connect_kwargs(), connect_timeout=0.5)
        with pytest.raises(pg.PgasyncError, match="timeout"):
            await pg.connect(**kwargs)
        assert deaf.connections == 1
        assert b"user\x00postgres\x00" in deaf.startup


# --------------------------------------------------------------- query-time bad input
async def _too_many_parameters(conn: pg.Connection) -> object:
    return await conn.query("SELECT 1", ["1"] * 65536, handle_row=ignore_row)


async def _nul_in_channel(conn: pg.Connection) -> object:
    await conn.listen_to_notifications("chan\x00nel", lambda _pid, _payload: None)
    return None


async def _empty_channel(conn: pg.Connection) -> object:
    await conn.listen_to_notifications("", lambda _pid, _payload: None)
    return None


async def _column_names_as_str(conn: pg.Connection) -> object:
    return await conn.copy_in_rows("t", "a", feed_data=[["1"]])


QUERY_CASES: dict[str, tuple[BadCall, type[Exception]]] = {
    "nul_in_sql": (
        lambda c: c.query("SELECT 1 -- \x00", handle_row=ignore_row),
        ValueError,
    ),
    "nul_in_sql_expect_no_data": (
        lambda c: c.query_expect_no_data("SELECT 1 -- \x00"),
        ValueError,
    ),
    "nul_in_parameter": (
        lambda c: c.query("SELECT $1::text", ["a\x00b"], handle_row=ignore_row),
        ValueError,
    ),
    "nul_in_second_parameter": (
        lambda c: c.query("SELECT $1::text, $2::text", ["a", "b\x00"], handle_row=ignore_row),
        ValueError,
    ),
    "nul_in_channel": (_nul_in_channel, ValueError),
    "surrogate_in_sql": (
        lambda c: c.query("SELECT '\ud800'", handle_row=ignore_row),
        ValueError,
    ),
    "surrogate_in_parameter": (
        lambda c: c.query("SELECT $1::text", ["a\ud800"], handle_row=ignore_row),
        ValueError,
    ),
    "surrogate_in_copy_sql": (
        lambda c: c.copy_in_raw("COPY t FROM STDIN -- \udfff", feed_data=["1\n"]),
        ValueError,
    ),
    "too_many_parameters": (_too_many_parameters, ValueError),
    "unsupported_parameter_type": (
        lambda c: c.query("SELECT $1::text", [object()], handle_row=ignore_row),
        TypeError,
    ),
    "column_names_as_one_str": (_column_names_as_str, TypeError),
    "parameters_as_one_str": (
        lambda c: c.query("SELECT $1::text", "abc", handle_row=ignore_row),
        TypeError,
    ),
    "sql_as_bytes": (
        lambda c: c.query(b"SELECT 1", handle_row=ignore_row),  # type: ignore[arg-type]
        TypeError,
    ),
    "empty_channel": (_empty_channel, ValueError),
}


@pytest.mark.parametrize(("call", "exception"), QUERY_CASES.values(), ids=QUERY_CASES.keys())
async def test_bad_query_input_refused_before_sending(
    server_kwargs: dict[str, Any], call: BadCall, exception: type[Exception]
) -> None:
    async with asyncio.timeout(BOUND):
        # A real server: refused, and the same connection goes on working.
        conn = await pg.connect(**server_kwargs)
        try:
            await conn.query_expect_no_data("CREATE TEMPORARY TABLE t (a text)")
            with pytest.raises(exception):
                await call(conn)
            await assert_usable(conn)
            with pytest.raises(exception):
                await call(conn)
            assert await fetch_rows(conn, "SELECT count(*) FROM t") == [("0",)]
            await assert_usable(conn)
        finally:
            await close_quietly(conn)

        # A recording server: not one byte of the refused call reached the wire.
        async with listening(login=True) as recorder:
            fake = await pg.connect(**target(recorder, user="u", database="d"))
            try:
                with pytest.raises(exception):
                    await call(fake)
                await asyncio.sleep(SETTLE)
                assert bytes(recorder.after_login) == b""
                marker = await fake.query_expect_no_data("DO $$ BEGIN END $$ -- marker")
                assert marker == pg.CommandComplete("DO", None)
                wire = bytes(recorder.after_login)
                assert wire.startswith(b"P"), wire[:80]
                assert b"-- marker\x00" in wire[:80], wire[:80]
            finally:
                await fake.close()


# ----------------------------------------------------------------- COPY with bad rows
@pytest_asyncio.fixture
async def copy_conn(conn: pg.Connection) -> pg.Connection:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE t (a text, b int)")
    return conn


def rows_then(bad: object, good_rows: int = 3) -> list[object]:
    """``good_rows`` well-formed rows, then ``bad`` in a row's place, then more rows."""
    good: list[object] = [[str(i), i] for i in range(good_rows)]
    return [*good, bad, ["after", 99]]


COPY_ROW_CASES: dict[str, tuple[object, type[Exception]]] = {
    "object_value": (["x", object()], TypeError),
    "nul_value": (["x\x00y", 1], ValueError),
    "surrogate_value": (["x\ud800y", 1], ValueError),
    "str_instead_of_row": ("x\t1", TypeError),
    "bytes_instead_of_row": (b"x\t1", TypeError),
}


def _feed_variants(rows: list[object]) -> dict[str, Any]:
    def callable_feed() -> Any:
        it = iter(rows)

        def feed() -> object:
            row = next(it, None)
            return pg.Finished() if row is None else pg.Data(row)

        return feed

    async def async_iterable() -> AsyncIterator[object]:
        for row in rows:
            await asyncio.sleep(0)
            yield row

    return {"callable": callable_feed(), "list": list(rows), "async_iterable": async_iterable()}


@pytest.mark.parametrize("feed_kind", ["callable", "list", "async_iterable"])
@pytest.mark.parametrize(
    ("bad_row", "exception"), COPY_ROW_CASES.values(), ids=COPY_ROW_CASES.keys()
)
async def test_bad_copy_row_aborts_copy(
    copy_conn: pg.Connection, feed_kind: str, bad_row: object, exception: type[Exception]
) -> None:
    conn = copy_conn
    async with asyncio.timeout(BOUND):
        feed = _feed_variants(rows_then(bad_row))[feed_kind]
        with pytest.raises(exception):
            await conn.copy_in_rows("t", ["a", "b"], feed_data=feed)
        assert await fetch_rows(conn, "SELECT count(*) FROM t") == [("0",)]
        await assert_usable(conn)
        # The table still takes a good COPY afterwards.
        done = await conn.copy_in_rows("t", ["a", "b"], feed_data=[["ok", 1]])
        assert done == pg.CommandComplete("COPY", 1)


async def test_bad_copy_row_after_many_good_ones(copy_conn: pg.Connection) -> None:
    """The bad row comes after several batches were already sent: still 0 rows."""
    conn = copy_conn
    rows: list[Any] = [[f"r{i}", i] for i in range(20000)]
    rows.append(["bad", object()])
    async with asyncio.timeout(BOUND):
        with pytest.raises(TypeError):
            await conn.copy_in_rows("t", ["a", "b"], feed_data=rows)
        assert await fetch_rows(conn, "SELECT count(*) FROM t") == [("0",)]
        await assert_usable(conn)


@pytest.mark.parametrize("chunk", ["1\t\ud800\n", object()], ids=["surrogate", "object"])
async def test_bad_raw_copy_chunk_aborts_copy(copy_conn: pg.Connection, chunk: object) -> None:
    conn = copy_conn
    chunks: list[Any] = ["a\t1\n", chunk, "b\t2\n"]
    expected = ValueError if isinstance(chunk, str) else TypeError
    async with asyncio.timeout(BOUND):
        with pytest.raises(expected):
            await conn.copy_in_raw("COPY t (a, b) FROM STDIN", feed_data=chunks)
        assert await fetch_rows(conn, "SELECT count(*) FROM t") == [("0",)]
        await assert_usable(conn)


async def test_refused_call_leaves_the_same_sql_usable(conn: pg.Connection) -> None:
    """A refused call does not poison the parse cache: the same SQL text, fixed, runs."""
    name = f"tmp_{uuid.uuid4().hex[:8]}"
    async with asyncio.timeout(BOUND):
        with pytest.raises(ValueError, match="NUL"):
            await conn.query("SELECT $1::text AS " + name, ["a\x00"], handle_row=ignore_row)
        assert await fetch_rows(conn, "SELECT $1::text AS " + name, ["a"]) == [("a",)]
        with pytest.raises(ValueError, match="UTF-8"):
            await conn.query("SELECT $1::text AS " + name, ["\ud800"], handle_row=ignore_row)
        assert await fetch_rows(conn, "SELECT $1::text AS " + name, ["b"]) == [("b",)]
