"""A password never shows: not in errors, their causes, tracebacks, logs or reprs.

Issue 3, "Secrets". Every test gives the client a fresh sentinel password and drives it
down one failure path: a wrong password (cleartext, MD5 and SCRAM roles, from the
keyword, the DSN, PGPASSWORD and a password file), auth refused by pg_hba, connection
refused, a connect timeout (a listener that never answers, with and without TLS), a bad
DSN (malformed URI, unknown keyword), a TLS failure (the server refuses SSL; a fake that
answers ``S`` and then garbage) and a protocol violation (a fake server sending garbage
after the StartupMessage or after it got the password). The sentinel must appear in no
``str``/``repr`` of the error or of any exception reachable through ``__cause__``,
``__context__`` or ``original_error``, in no formatted traceback and in no log record
of any logger, captured at DEBUG. A successful connection whose password is the
sentinel must not show it in ``repr(conn)`` or ``repr(config)`` either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import postgres_async as pg
from postgres_async.config import resolve_config
from postgres_async.testing import TEST_PASSWORD, PostgresServer
from support import backend_message

#: Seconds any single scenario may take.
BOUND = 10.0

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# ------------------------------------------------------------------------------ helpers
@pytest.fixture
def sentinel() -> str:
    return f"S3ntinel-Pa55-{secrets.token_hex(8)}"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger, from DEBUG up."""
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("postgres_async", "asyncio")):
            caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def exception_chain(err: BaseException) -> list[BaseException]:
    """``err`` and every exception reachable from it (cause, context, original_error)."""
    found: list[BaseException] = []
    stack = [err]
    while stack:
        exc = stack.pop()
        if any(exc is seen for seen in found):
            continue
        found.append(exc)
        for linked in (exc.__cause__, exc.__context__, getattr(exc, "original_error", None)):
            if isinstance(linked, BaseException):
                stack.append(linked)
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
    return found


def assert_not_shown(sentinel: str, err: BaseException, logs: pytest.LogCaptureFixture) -> None:
    places: dict[str, str] = {}
    for index, exc in enumerate(exception_chain(err)):
        places[f"str(chain[{index}])"] = str(exc)
        places[f"repr(chain[{index}])"] = repr(exc)
        places[f"chain[{index}].args"] = repr(exc.args)
        places[f"chain[{index}].__notes__"] = repr(getattr(exc, "__notes__", None))
    places["traceback"] = "".join(traceback.format_exception(err))
    formatter = logging.Formatter()
    for index, record in enumerate(logs.records):
        places[f"log[{index}] message"] = record.getMessage()
        places[f"log[{index}] args"] = repr(record.args)
        if record.exc_info:
            places[f"log[{index}] exc_info"] = formatter.formatException(record.exc_info)
        if record.exc_text:
            places[f"log[{index}] exc_text"] = record.exc_text
    places["caplog.text"] = logs.text
    leaks = [where for where, text in places.items() if sentinel in text]
    assert not leaks, f"the password shows in {leaks}: " + "; ".join(
        places[where][:300] for where in leaks
    )


async def failure_of(
    attempt: Awaitable[Any],
    expected: type[BaseException] | tuple[type[BaseException], ...],
) -> BaseException:
    """The exception ``attempt`` raises (it must raise ``expected``), within BOUND."""
    async with asyncio.timeout(BOUND):
        with pytest.raises(expected) as info:
            await attempt
    return info.value


GARBAGE = b"\x00\xffthis is not the PostgreSQL protocol\xfe\x01" * 4


@contextlib.asynccontextmanager
async def fake_server(script: Script) -> AsyncIterator[int]:
    """A loopback server running ``script`` for each connection; yields its port."""
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.append(writer)
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        await server.wait_closed()


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    (length,) = struct.unpack("!I", head[1:])
    return head[:1], await reader.readexactly(length - 4)


async def read_startup_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    (length,) = struct.unpack("!I", head)
    return await reader.readexactly(length - 4)


@contextlib.contextmanager
def deaf_socket() -> Iterator[int]:
    """A socket that listens (the kernel completes handshakes) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -------------------------------------------------------------------- wrong password
PASSWORD_ROLES = ["md5_user", "scram_user", "password_user"]


@pytest.mark.parametrize("role", PASSWORD_ROLES)
async def test_wrong_password_keyword(
    pg_server: PostgresServer, role: str, sentinel: str, logs: pytest.LogCaptureFixture
) -> None:
    kwargs = pg_server.connect_kwargs(user=role, password=sentinel)
    err = await failure_of(pg.connect(**kwargs), pg.PgasyncError)
    assert isinstance(err, pg.PgasyncError)
    assert err.postgres_error_code == "28P01"
    assert_not_shown(sentinel, err, logs)


@pytest.mark.parametrize("role", PASSWORD_ROLES)
async def test_wrong_password_in_dsn(
    pg_server: PostgresServer, role: str, sentinel: str, logs: pytest.LogCaptureFixture
) -> None:
    dsn = pg_server.dsn(user=role, password=sentinel)
    assert sentinel in dsn
    err = await failure_of(pg.connect(dsn=dsn), pg.PgasyncError)
    assert isinstance(err, pg.PgasyncError)
    assert err.postgres_error_code == "28P01"
    assert_not_shown(sentinel, err, logs)


@pytest.mark.parametrize("role", PASSWORD_ROLES)
async def test_wrong_password_from_environment(
    pg_server: PostgresServer,
    role: str,
    sentinel: str,
    logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSWORD", sentinel)
    kwargs = pg_server.connect_kwargs(user=role)
    del kwargs["password"]
    err = await failure_of(pg.connect(**kwargs), pg.PgasyncError)
    assert isinstance(err, pg.PgasyncError)
    assert err.postgres_error_code == "28P01"
    assert_not_shown(sentinel, err, logs)


async def test_wrong_password_from_password_file(
    pg_server: PostgresServer,
    sentinel: str,
    logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:scram_user:{sentinel}\n")
    passfile.chmod(0o600)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    kwargs = pg_server.connect_kwargs(user="scram_user")
    del kwargs["password"]
    err = await failure_of(pg.connect(**kwargs), pg.PgasyncError)
    assert isinstance(err, pg.PgasyncError)
    assert err.postgres_error_code == "28P01"
    assert_not_shown(sentinel, err, logs)


async def test_auth_refused(
    pg_server: PostgresServer, sentinel: str, logs: pytest.LogCaptureFixture
) -> None:
    for attempt in (
        pg.connect(**pg_server.connect_kwargs(user="reject_user", password=sentinel)),
        pg.connect(dsn=pg_server.dsn(user="reject_user", password=sentinel)),
    ):
        err = await failure_of(attempt, pg.PgasyncError)
        assert isinstance(err, pg.PgasyncError)
        assert err.postgres_error_code == "28000"
        assert_not_shown(sentinel, err, logs)


# ------------------------------------------------------------- refused and timed out
async def test_connection_refused(sentinel: str, logs: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    attempts = [
        pg.connect(server=("127.0.0.1", port), user="u", password=sentinel),
        pg.connect(dsn=f"postgresql://u:{sentinel}@127.0.0.1:{port}/db"),
        pg.connect(dsn=f"host=127.0.0.1 port={port} user=u password={sentinel} dbname=db"),
    ]
    for attempt in attempts:
        err = await failure_of(attempt, pg.PgasyncError)
        assert isinstance(err, pg.PgasyncError)
        assert err.postgres_error_code == "08001"
        assert_not_shown(sentinel, err, logs)


@pytest.mark.parametrize("ssl_mode", ["disable", "prefer", "require"])
async def test_connect_timeout(
    pg_server: PostgresServer, ssl_mode: str, sentinel: str, logs: pytest.LogCaptureFixture
) -> None:
    del pg_server  # one run per server version, like every scenario
    with deaf_socket() as port:
        attempts = [
            pg.connect(
                server=("127.0.0.1", port),
                user="u",
                password=sentinel,
                ssl_mode=ssl_mode,
                connect_timeout=0.3,
            ),
            pg.connect(
                dsn=f"postgresql://u:{sentinel}@127.0.0.1:{port}/db"
                f"?sslmode={ssl_mode}&connect_timeout=1"
            ),
        ]
        for attempt in attempts:
            err = await failure_of(attempt, pg.PgasyncError)
            assert isinstance(err, pg.PgasyncError)
            assert err.postgres_error_code == "08001"
            assert "timeout" in str(err)
            assert_not_shown(sentinel, err, logs)


async def test_interrupted_login(
    pg_server: PostgresServer, sentinel: str, logs: pytest.LogCaptureFixture
) -> None:
    del pg_server
    with deaf_socket() as port:
        attempt = pg.connect(
            server=("127.0.0.1", port),
            user="u",
            password=sentinel,
            ssl_mode="disable",
            interrupt=asyncio.sleep(0.2),
        )
        err = await failure_of(attempt, pg.PgasyncError)
    assert "login interrupted" in str(err)
    assert_not_shown(sentinel, err, logs)


# ------------------------------------------------------------------------- bad DSNs
BAD_DSNS = {
    "uri_bad_port": "postgresql://u:{pw}@127.0.0.1:notaport/db",
    "uri_port_out_of_range": "postgresql://u:{pw}@127.0.0.1:99999/db",
    "uri_unclosed_ipv6": "postgresql://u:{pw}@[::1/db",
    "uri_bad_percent_in_password": "postgresql://u:{pw}%ZZ@127.0.0.1/db",
    "uri_bad_percent_after_password": "postgresql://u:{pw}@127.0.0.1/db%G1",
    "uri_unknown_parameter": "postgresql://u:{pw}@127.0.0.1/db?bogus=1",
    "uri_bad_sslmode": "postgresql://u:{pw}@127.0.0.1/db?sslmode=bogus",
    "uri_parameter_without_value": "postgresql://u:{pw}@127.0.0.1/db?sslmode",
    "uri_two_hosts": "postgresql://u:{pw}@127.0.0.1:5432,127.0.0.2:5432/db",
    "uri_password_parameter_and_bad_port": "postgresql://u@127.0.0.1:x/db?password={pw}",
    "keyword_unknown_keyword": "host=127.0.0.1 user=u password={pw} bogus=1",
    "keyword_unknown_keyword_first": "bogus=1 password={pw}",
    "keyword_quoted_unknown_keyword": "password='{pw}' no_such_option='x'",
    "keyword_unterminated_quote": "host=127.0.0.1 password='{pw}",
    "keyword_missing_equals": "host=127.0.0.1 password {pw}",
    "keyword_glued_to_keyword": "host=127.0.0.1 password:{pw}",
    "keyword_bad_port": "host=127.0.0.1 password={pw} port=abc",
    "keyword_empty_keyword": "password={pw} =x",
}


@pytest.mark.parametrize("dsn", BAD_DSNS.values(), ids=BAD_DSNS.keys())
async def test_bad_dsn(
    pg_server: PostgresServer, dsn: str, sentinel: str, logs: pytest.LogCaptureFixture
) -> None:
    del pg_server
    text = dsn.format(pw=sentinel)
    err = await failure_of(pg.connect(dsn=text, connect_timeout=2), ValueError)
    assert_not_shown(sentinel, err, logs)
    # The same failure through with_connection.
    async with contextlib.AsyncExitStack() as stack:
        err = await failure_of(
            stack.enter_async_context(pg.with_connection(text, connect_timeout=2)), ValueError
        )
    assert_not_shown(sentinel, err, logs)


# ------------------------------------------------------------------------------ TLS
async def test_tls_required_but_refused(
    pg_server: PostgresServer, sentinel: str, logs: pytest.LogCaptureFixture
) -> None:
    attempts = [
        pg.connect(
            **pg_server.connect_kwargs(user="scram_user", password=sentinel, ssl_mode="require")
        ),
        pg.connect(dsn=pg_server.dsn(user="scram_user", password=sentinel, sslmode="require")),
    ]
    for attempt in attempts:
        err = await failure_of(attempt, pg.PgasyncError)
        assert "cannot use SSL" in str(err)
        assert_not_shown(sentinel, err, logs)


async def _s_then_garbage_after_hello(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await reader.readexactly(8)  # SSLRequest
    writer.write(b"S")
    await reader.read(1)  # the start of the ClientHello
    writer.write(GARBAGE)
    await writer.drain()
    await reader.read(65536)


async def _s_and_garbage_at_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await reader.readexactly(8)
    writer.write(b"S" + GARBAGE)
    await writer.drain()
    await reader.read(65536)


async def _not_s_nor_n(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readexactly(8)
    writer.write(b"E" + GARBAGE)
    await writer.drain()
    await reader.read(65536)


TLS_FAKES: dict[str, Script] = {
    "s_then_garbage_after_client_hello": _s_then_garbage_after_hello,
    "s_and_garbage_in_one_write": _s_and_garbage_at_once,
    "neither_s_nor_n": _not_s_nor_n,
}


@pytest.mark.parametrize("ssl_mode", ["prefer", "require", "verify-full"])
@pytest.mark.parametrize("script", TLS_FAKES.values(), ids=TLS_FAKES.keys())
async def test_tls_failure_from_fake_server(
    pg_server: PostgresServer,
    script: Script,
    ssl_mode: str,
    sentinel: str,
    logs: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    del pg_server
    # verify-full needs a root certificate to load before the handshake can even fail.
    root = tmp_path / "root.crt"
    root.write_text("")
    async with fake_server(script) as port:
        kwargs: dict[str, Any] = {
            "server": ("127.0.0.1", port),
            "user": "u",
            "password": sentinel,
            "ssl_mode": ssl_mode,
            "connect_timeout": 5,
        }
        if ssl_mode == "verify-full":
            kwargs["sslrootcert"] = str(root)
        err = await failure_of(pg.connect(**kwargs), pg.PgasyncError)
        assert "timeout" not in str(err), "the failure must be detected, not waited out"
        assert_not_shown(sentinel, err, logs)
        dsn = f"postgresql://u:{sentinel}@127.0.0.1:{port}/db?sslmode={ssl_mode}"
        if ssl_mode == "verify-full":
            dsn += f"&sslrootcert={root}"
        err = await failure_of(pg.connect(dsn=dsn), pg.PgasyncError)
        assert_not_shown(sentinel, err, logs)


# -------------------------------------------------------------- protocol violations
async def _garbage_after_startup(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await read_startup_message(reader)
    writer.write(GARBAGE)
    await writer.drain()
    await reader.read(65536)


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
    await read_startup_message(reader)
    writer.write(backend_message(b"R", request))
    _type, payload = await read_message(reader)
    return payload


def password_then(
    request: bytes, answer: bytes, received: list[bytes], *, close: bool = False
) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await _ask(reader, writer, request))
        writer.write(answer)
        await writer.drain()
        if not close:
            await reader.read(65536)

    return script


CLEARTEXT = struct.pack("!I", 3)
MD5 = struct.pack("!I", 5) + b"salt"
SASL = struct.pack("!I", 10) + b"SCRAM-SHA-256\x00\x00"

PROTOCOL_FAKES: dict[str, Callable[[list[bytes]], Script]] = {
    "garbage_after_startup": lambda _got: _garbage_after_startup,
    "garbage_after_cleartext_password": lambda got: password_then(CLEARTEXT, GARBAGE, got),
    "garbage_after_md5_password": lambda got: password_then(MD5, GARBAGE, got),
    "eof_after_cleartext_password": lambda got: password_then(CLEARTEXT, b"", got, close=True),
    "truncated_message_after_password": lambda got: password_then(
        CLEARTEXT, b"R\x00\x00\x00\x08\x00", got, close=True
    ),
    "unknown_auth_after_password": lambda got: password_then(
        CLEARTEXT, backend_message(b"R", struct.pack("!I", 77)), got
    ),
    "bad_scram_continue": lambda got: password_then(
        SASL, backend_message(b"R", struct.pack("!I", 11) + b"r=not-our-nonce,s=???,i=x"), got
    ),
    "ok_before_scram_final": lambda got: password_then(
        SASL, backend_message(b"R", struct.pack("!I", 0)), got
    ),
    "huge_length_after_password": lambda got: password_then(CLEARTEXT, b"R\x7f\xff\xff\xff", got),
}


@pytest.mark.parametrize("make_script", PROTOCOL_FAKES.values(), ids=PROTOCOL_FAKES.keys())
async def test_protocol_violation_from_fake_server(
    pg_server: PostgresServer,
    make_script: Callable[[list[bytes]], Script],
    sentinel: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    del pg_server
    received: list[bytes] = []
    async with fake_server(make_script(received)) as port:
        attempts = [
            pg.connect(
                server=("127.0.0.1", port),
                user="u",
                password=sentinel,
                ssl_mode="disable",
                connect_timeout=5,
            ),
            pg.connect(
                dsn=f"postgresql://u:{sentinel}@127.0.0.1:{port}/db?sslmode=disable",
                connect_timeout=5,
            ),
        ]
        for attempt in attempts:
            err = await failure_of(attempt, pg.PgasyncError)
            assert "timeout" not in str(err), "the failure must be detected, not waited out"
            assert_not_shown(sentinel, err, logs)
    if received and received[0].startswith(b"S3ntinel"):
        # Control: the fake really got the password the client must not show.
        assert received[0] == sentinel.encode() + b"\x00"


# ------------------------------------------------------------ successful connections
async def current_user(conn: pg.Connection) -> str | None:
    rows: list[tuple[str | None, ...]] = []
    await conn.query("SELECT current_user", handle_row=lambda _n, values: rows.append(values))
    assert len(rows) == 1
    return rows[0][0]


@contextlib.asynccontextmanager
async def role_password(
    server_kwargs: dict[str, Any], role: str, password: str
) -> AsyncIterator[None]:
    """Give a harness role ``password`` for the duration (restored afterwards)."""
    encryption = "md5" if role == "md5_user" else "scram-sha-256"
    admin = await pg.connect(**server_kwargs)
    try:

        async def set_password(value: str) -> None:
            await admin.query_expect_no_data(f"SET password_encryption = '{encryption}'")
            await admin.query_expect_no_data(
                f"ALTER ROLE {role} PASSWORD '{value}'"  # both values are ours
            )

        await set_password(password)
        try:
            yield
        finally:
            await set_password(TEST_PASSWORD)
    finally:
        await admin.close()


@pytest.mark.parametrize("role", PASSWORD_ROLES)
async def test_successful_connection_does_not_show_password(
    pg_server: PostgresServer,
    server_kwargs: dict[str, Any],
    role: str,
    sentinel: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    async with asyncio.timeout(BOUND), role_password(server_kwargs, role, sentinel):
        shown: dict[str, str] = {}
        for how in ("keyword", "dsn"):
            if how == "keyword":
                conn = await pg.connect(**pg_server.connect_kwargs(user=role, password=sentinel))
            else:
                conn = await pg.connect(dsn=pg_server.dsn(user=role, password=sentinel))
            assert await current_user(conn) == role
            shown[f"{how} repr(conn)"] = repr(conn)
            shown[f"{how} str(conn)"] = str(conn)
            shown[f"{how} status"] = repr(conn.status)
            shown[f"{how} runtime_parameters"] = repr(conn.runtime_parameters)
            await conn.close()
            shown[f"{how} repr(conn) closed"] = repr(conn)
        config = resolve_config(
            pg_server.dsn(user=role, password=sentinel), password=sentinel, environ={}
        )
        assert config.password == sentinel
        shown["repr(config)"] = repr(config)
        shown["str(config)"] = str(config)
        shown["logs"] = logs.text
    leaks = [where for where, text in shown.items() if sentinel in text]
    assert not leaks, {where: shown[where][:300] for where in leaks}


def test_checker_catches_a_password_that_shows(
    sentinel: str, logs: pytest.LogCaptureFixture
) -> None:
    """Control: assert_not_shown does fail on a sentinel in a message, a cause, a log."""
    with pytest.raises(AssertionError, match="password shows"):
        assert_not_shown(sentinel, pg.PgasyncError(f"oops {sentinel}"), logs)
    wrapped = ValueError("outer")
    wrapped.__cause__ = RuntimeError(sentinel)
    with pytest.raises(AssertionError, match="password shows"):
        assert_not_shown(sentinel, wrapped, logs)
    logging.getLogger("postgres_async.anything").debug("here: %s", sentinel)
    with pytest.raises(AssertionError, match="password shows"):
        assert_not_shown(sentinel, ValueError("clean"), logs)
