"""Connecting: interrupt, auth methods, addresses, timeouts, defaults, with_connection.

Port of upstream ``test/test_connect.ml`` (spec 3.5), through API.md section 1: errors
are ``PgasyncError`` with ``postgres_error_code``. The fake server stands in where a
real one cannot (an interrupt at a chosen moment, an auth method PostgreSQL will not ask
for, a server that never answers).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import postgres_async as pg
from postgres_async.protocol import messages as m
from postgres_async.testing import TEST_PASSWORD, PostgresServer
from support import connect_error, fetch_rows, fetch_value, open_socket_count, status_of
from support.fake_server import (
    Expect,
    FakeServer,
    Send,
    Step,
    WaitForClose,
    login_ok,
)

CONNECTION_FAILURE = "08001"
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"


# ------------------------------------------------------------------------- interrupt
def already_done() -> Awaitable[Any]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def sleep_zero() -> Awaitable[Any]:
    return asyncio.sleep(0)


@pytest.mark.parametrize("ssl_mode", ["disable", "prefer"])
@pytest.mark.parametrize("interrupt", [already_done, sleep_zero], ids=["done-future", "sleep0"])
async def test_interrupt_before_the_socket_is_up_aborts_the_attempt(
    ssl_mode: str, interrupt: Callable[[], Awaitable[Any]]
) -> None:
    sockets_before = open_socket_count()
    async with FakeServer([WaitForClose()], must_connect=False) as server:
        error = await connect_error(
            **server.connect_kwargs(ssl_mode=ssl_mode), interrupt=interrupt()
        )
        assert "connection attempt aborted" in str(error)
        assert f"127.0.0.1:{server.port}" in str(error)
        assert error.postgres_error_code == CONNECTION_FAILURE
    # Whatever the client opened is closed (the fake server's sockets are gone too).
    assert open_socket_count() == sockets_before
    assert not any(conn.received for conn in server.connections)


async def test_interrupt_during_login() -> None:
    sockets_before = open_socket_count()
    async with FakeServer([Expect(m.StartupMessage), WaitForClose()]) as server:
        error = await connect_error(**server.connect_kwargs(), interrupt=server.bytes_seen.wait())
        assert "login interrupted" in str(error)
        assert error.postgres_error_code == CONNECTION_FAILURE
    assert open_socket_count() == sockets_before


async def test_interrupt_during_ssl_negotiation() -> None:
    sockets_before = open_socket_count()
    async with FakeServer([Expect(m.SSLRequest), WaitForClose()]) as server:
        error = await connect_error(
            **server.connect_kwargs(ssl_mode="prefer"), interrupt=server.bytes_seen.wait()
        )
        assert "ssl negotiation interrupted" in str(error)
        assert error.postgres_error_code == CONNECTION_FAILURE
    assert open_socket_count() == sockets_before


async def test_interrupt_that_never_fires_does_not_disturb_the_connection(
    server_kwargs: dict[str, Any],
) -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    conn = await pg.connect(**server_kwargs, interrupt=never)
    try:
        assert await fetch_value(conn, "SELECT 1") == "1"
    finally:
        await conn.close()
    assert not never.done()


# ------------------------------------------------------------------------------ auth
@pytest.mark.parametrize("user", ["postgres", "trust_user"])
async def test_trust_auth_ignores_a_password(pg_server: PostgresServer, user: str) -> None:
    for password in (None, "nonsense"):
        conn = await pg.connect(**pg_server.connect_kwargs(user=user, password=password))
        try:
            rows = await fetch_rows(conn, "SELECT current_user, current_database()")
            assert rows == [(user, "postgres")]
        finally:
            await conn.close()


PASSWORD_USERS = {
    "password_user": "cleartext",
    "md5_user": "md5",
    "scram_user": "scram-sha-256",
}


@pytest.fixture
def no_password_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PGPASSWORD and no .pgpass: a password only comes from the test."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))


@pytest.mark.usefixtures("no_password_sources")
@pytest.mark.parametrize("via", ["tcp", "unix"])
@pytest.mark.parametrize("user", sorted(PASSWORD_USERS))
async def test_password_auth_with_the_right_password(
    pg_server: PostgresServer, user: str, via: Any
) -> None:
    conn = await pg.connect(**pg_server.connect_kwargs(user=user, password=TEST_PASSWORD, via=via))
    try:
        assert await fetch_value(conn, "SELECT current_user") == user
        assert isinstance(status_of(conn), pg.Open)
    finally:
        await conn.close()


@pytest.mark.usefixtures("no_password_sources")
@pytest.mark.parametrize("user", sorted(PASSWORD_USERS))
async def test_password_auth_with_a_wrong_password(pg_server: PostgresServer, user: str) -> None:
    error = await connect_error(**pg_server.connect_kwargs(user=user, password="wrong-password"))
    assert error.postgres_error_code == INVALID_PASSWORD
    assert "wrong-password" not in str(error)


@pytest.mark.usefixtures("no_password_sources")
@pytest.mark.parametrize("user", sorted(PASSWORD_USERS))
async def test_password_auth_without_a_password(pg_server: PostgresServer, user: str) -> None:
    sockets_before = open_socket_count()
    error = await connect_error(**pg_server.connect_kwargs(user=user, password=None))
    assert error.postgres_error_code == INVALID_PASSWORD
    kind = PASSWORD_USERS[user]
    assert f"Server requested ({kind}) password, but no password was provided" in str(error)
    assert open_socket_count() == sockets_before


async def test_rejected_role(pg_server: PostgresServer) -> None:
    error = await connect_error(**pg_server.connect_kwargs(user="reject_user"))
    assert error.postgres_error_code == INVALID_AUTHORIZATION


async def test_md5_password_over_the_fake_server() -> None:
    # md5(md5(password + user) + salt), as the protocol documents it.
    salt = b"\x01\x02\x03\x04"
    inner = hashlib.md5(b"secret" + b"alice").hexdigest().encode()
    expected = b"md5" + hashlib.md5(inner + salt).hexdigest().encode()
    script: list[Step] = [
        Expect(m.StartupMessage),
        Send(m.AuthenticationMD5Password(salt)),
        Expect(m.PasswordMessage),
        *login_ok()[1:],
        Expect(m.Terminate),
    ]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs(user="alice", password="secret"))
        await conn.close()
    assert server.received[1] == m.PasswordMessage(expected)


@pytest.mark.parametrize(
    ("request_message", "name"),
    [
        (m.AuthenticationSCMCredential(), "SCMCredential"),
        (m.AuthenticationKerberosV5(), "KerberosV5"),
        (m.AuthenticationSSPI(), "SSPI"),
    ],
)
async def test_unsupported_auth_subtype(request_message: m.BackendMessage, name: str) -> None:
    if name == "SCMCredential":
        # Upstream's bytes exactly.
        assert request_message.encode() == b"R\0\0\0\x08\0\0\0\x06"
    sockets_before = open_socket_count()
    script: list[Step] = [Expect(m.StartupMessage), Send(request_message), WaitForClose()]
    async with FakeServer(script) as server:
        error = await connect_error(**server.connect_kwargs(password="secret"))
        assert f"Server wants unimplemented auth subtype: {name}" in str(error)
        assert error.postgres_error_code == INVALID_AUTHORIZATION
    assert open_socket_count() == sockets_before


async def test_gss_without_a_token() -> None:
    script: list[Step] = [Expect(m.StartupMessage), Send(m.AuthenticationGSS()), WaitForClose()]
    async with FakeServer(script) as server:
        error = await connect_error(**server.connect_kwargs())
        assert "Server requested GSS auth, but no gss_krb_token was provided" in str(error)
        assert error.postgres_error_code == INVALID_PASSWORD


async def test_gss_token_is_sent_as_is() -> None:
    script: list[Step] = [
        Expect(m.StartupMessage),
        Send(m.AuthenticationGSS()),
        Expect(m.GSSResponse),
        *login_ok()[1:],
        Expect(m.Terminate),
    ]
    async with FakeServer(script) as server:
        conn = await pg.connect(**server.connect_kwargs(gss_krb_token=b"blob"))
        await conn.close()
    assert server.received[1] == m.GSSResponse(b"blob")
    assert b"p\0\0\0\x08blob" in server.connections[0].raw


# ------------------------------------------------------------------------- addresses
async def test_tcp_and_unix_sockets(
    pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPORT", str(pg_server.port))
    ways: dict[str, dict[str, Any]] = {
        "tcp tuple": pg_server.connect_kwargs(),
        "tcp host:port": {"server": f"127.0.0.1:{pg_server.port}", "user": "postgres"},
        "socket file": pg_server.connect_kwargs(via="unix"),
        "socket directory and port": {
            "host": str(pg_server.socket_dir),
            "port": pg_server.port,
            "user": "postgres",
        },
        "socket directory, port from PGPORT": {
            "server": str(pg_server.socket_dir),
            "user": "postgres",
        },
    }
    for way, kwargs in ways.items():
        conn = await pg.connect(**kwargs)
        try:
            address = await fetch_value(conn, "SELECT inet_server_addr()::text")
        finally:
            await conn.close()
        assert address == ("127.0.0.1/32" if way.startswith("tcp") else None), way


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        sockets_before = open_socket_count()
        error = await connect_error(server=("127.0.0.1", port), user="postgres", ssl_mode="disable")
        assert open_socket_count() == sockets_before
    assert error.postgres_error_code == CONNECTION_FAILURE
    assert f"127.0.0.1:{port}" in str(error)
    assert "refused" in str(error).lower()


async def test_missing_unix_socket(tmp_path: Path) -> None:
    error = await connect_error(server=str(tmp_path / ".s.PGSQL.5432"), user="postgres")
    assert error.postgres_error_code == CONNECTION_FAILURE
    assert str(tmp_path) in str(error)


# ------------------------------------------------------------------------ timeouts
@pytest.mark.parametrize(
    ("ssl_mode", "first"),
    [("disable", m.StartupMessage), ("prefer", m.SSLRequest)],
)
async def test_connect_timeout_against_a_silent_server(
    ssl_mode: str, first: type[m.FrontendMessage]
) -> None:
    loop = asyncio.get_running_loop()
    sockets_before = open_socket_count()
    async with FakeServer([Expect(first), WaitForClose()]) as server:
        started = loop.time()
        error = await connect_error(**server.connect_kwargs(ssl_mode=ssl_mode, connect_timeout=0.5))
        elapsed = loop.time() - started
    assert error.postgres_error_code == CONNECTION_FAILURE
    assert "timeout" in str(error).lower()
    assert 0.4 <= elapsed < 2.0
    assert open_socket_count() == sockets_before


# ------------------------------------------------------------------------ closing
async def test_graceful_close(server_kwargs: dict[str, Any]) -> None:
    conn = await pg.connect(**server_kwargs)
    assert isinstance(status_of(conn), pg.Open)
    await conn.close()
    assert status_of(conn) == pg.ClosedGracefully()


async def test_with_connection_closes_at_exit(server_kwargs: dict[str, Any]) -> None:
    async with pg.with_connection(**server_kwargs) as conn:
        assert await fetch_value(conn, "SELECT 1") == "1"
        assert isinstance(status_of(conn), pg.Open)
    assert status_of(conn) == pg.ClosedGracefully()


async def test_with_connection_lets_a_body_exception_through(
    server_kwargs: dict[str, Any],
) -> None:
    seen: list[pg.Connection] = []

    async def run() -> None:
        async with pg.with_connection(**server_kwargs) as conn:
            seen.append(conn)
            raise LookupError("from the body")

    with pytest.raises(LookupError, match="from the body"):
        await run()
    assert status_of(seen[0]) == pg.ClosedGracefully()


async def test_with_connection_passes_connect_errors_through() -> None:
    script: list[Step] = [Expect(m.StartupMessage), Send(m.AuthenticationGSS()), WaitForClose()]

    async def run() -> None:
        async with (
            FakeServer(script) as server,
            pg.with_connection(**server.connect_kwargs()),
        ):
            pytest.fail("the body must not run")

    with pytest.raises(pg.PgasyncError, match="no gss_krb_token"):
        await run()


async def test_with_connection_logs_a_failed_close(caplog: pytest.LogCaptureFixture) -> None:
    # The server never closes after Terminate: close fails, but the body succeeded.
    script = [*login_ok(), Expect(m.Terminate), WaitForClose()]
    async with FakeServer(script) as server:
        with caplog.at_level(logging.WARNING, logger="postgres_async"):
            async with pg.with_connection(**server.connect_kwargs()) as conn:
                pass
    assert isinstance(status_of(conn), pg.Failed)
    assert "close: EOF expected, but instead stuck" in caplog.text


async def test_connection_is_an_async_context_manager(server_kwargs: dict[str, Any]) -> None:
    conn = await pg.connect(**server_kwargs)
    async with conn as same:
        assert same is conn
        assert await fetch_value(conn, "SELECT 2") == "2"
    assert status_of(conn) == pg.ClosedGracefully()


async def test_connection_context_lets_a_body_exception_through(
    server_kwargs: dict[str, Any],
) -> None:
    conn = await pg.connect(**server_kwargs)

    async def run() -> None:
        async with conn:
            raise LookupError("from the body")

    with pytest.raises(LookupError, match="from the body"):
        await run()
    assert status_of(conn) == pg.ClosedGracefully()


# ------------------------------------------------------------------------- defaults
def clear_pg_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PG"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("via", ["tcp", "unix"])
async def test_defaults_from_the_environment(
    pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    clear_pg_environment(monkeypatch)
    host = "127.0.0.1" if via == "tcp" else str(pg_server.socket_dir)
    monkeypatch.setenv("PGHOST", host)
    monkeypatch.setenv("PGPORT", str(pg_server.port))
    monkeypatch.setenv("PGUSER", "md5_user")
    monkeypatch.setenv("PGPASSWORD", TEST_PASSWORD)
    monkeypatch.setenv("PGDATABASE", "template1")
    conn = await pg.connect()
    try:
        rows = await fetch_rows(conn, "SELECT current_user, current_database()")
    finally:
        await conn.close()
    assert rows == [("md5_user", "template1")]


async def test_keyword_arguments_beat_the_environment(
    pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_pg_environment(monkeypatch)
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(pg_server.port))
    monkeypatch.setenv("PGUSER", "reject_user")
    monkeypatch.setenv("PGDATABASE", "template1")
    conn = await pg.connect(user="postgres", database="postgres")
    try:
        rows = await fetch_rows(conn, "SELECT current_user, current_database()")
    finally:
        await conn.close()
    assert rows == [("postgres", "postgres")]
