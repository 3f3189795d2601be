"""TLS negotiation: the SSLRequest answer, the handshake, ssl_mode against live servers.

Port of upstream ``test/test_ssl.ml`` (spec 3.6). Upstream ran its fake server on a
unix socket; this client follows libpq and never uses TLS over a unix socket, so the
fake server here listens on TCP 127.0.0.1 (one test checks the unix-socket rule itself).
"""

from __future__ import annotations

from typing import Any

import pytest
import trustme

import postgres_async as pg
from postgres_async.protocol import messages as m
from postgres_async.testing import PostgresServer
from support import connect_error, fetch_value, open_socket_count, status_of
from support.fake_server import (
    Expect,
    FakeServer,
    ReadAny,
    Send,
    StartTLS,
    Step,
    WaitForClose,
    login_ok,
    make_tls,
)

CONNECTION_FAILURE = "08001"
PROTOCOL_VIOLATION = "08P01"
REQUIRE_REFUSED = "Server indicated it cannot use SSL connections, but ssl_mode is set to Require"
NOT_UNDERSTOOD = "does not understand the SSLRequest message"
SSL_MODES_THAT_ASK = ["prefer", "require"]


async def connect_and_close(server: FakeServer, **kwargs: Any) -> None:
    conn = await pg.connect(**server.connect_kwargs(**kwargs))
    assert isinstance(status_of(conn), pg.Open)
    await conn.close()
    assert status_of(conn) == pg.ClosedGracefully()


# ------------------------------------------------------------------ fake server: TCP
@pytest.mark.parametrize("ssl_mode", SSL_MODES_THAT_ASK)
async def test_s_without_a_tls_handshake_is_an_error_not_an_exception(ssl_mode: str) -> None:
    # The server says S, then answers the ClientHello with plaintext protocol bytes.
    script: list[Step] = [
        Expect(m.SSLRequest),
        Send(b"S"),
        ReadAny(),
        Send(m.AuthenticationOk(), m.ReadyForQuery(m.TransactionStatus.IDLE)),
        WaitForClose(),
    ]
    sockets_before = open_socket_count()
    async with FakeServer(script) as server:
        error = await connect_error(**server.connect_kwargs(ssl_mode=ssl_mode))
    assert error.postgres_error_code == CONNECTION_FAILURE
    assert open_socket_count() == sockets_before


@pytest.mark.parametrize("ssl_mode", SSL_MODES_THAT_ASK)
async def test_s_then_hang_up_during_the_handshake(ssl_mode: str) -> None:
    script: list[Step] = [Expect(m.SSLRequest), Send(b"S"), ReadAny()]  # then close
    async with FakeServer(script) as server:
        error = await connect_error(**server.connect_kwargs(ssl_mode=ssl_mode))
    assert error.postgres_error_code == CONNECTION_FAILURE


async def test_prefer_and_n_continues_in_plaintext() -> None:
    script: list[Step] = [
        Expect(m.SSLRequest),
        Send(b"N"),
        *login_ok(),
        Expect(m.Terminate),
    ]
    async with FakeServer(script) as server:
        await connect_and_close(server, ssl_mode="prefer")
    # The server read the StartupMessage in the clear on the same socket.
    assert [type(x) for x in server.received] == [m.SSLRequest, m.StartupMessage, m.Terminate]
    assert len(server.connections) == 1


@pytest.mark.parametrize("ssl_mode", SSL_MODES_THAT_ASK)
async def test_e_is_not_understood(ssl_mode: str) -> None:
    sockets_before = open_socket_count()
    async with FakeServer([Expect(m.SSLRequest), Send(b"E")]) as server:
        error = await connect_error(**server.connect_kwargs(ssl_mode=ssl_mode))
    assert NOT_UNDERSTOOD in str(error)
    assert "response_char E" in str(error)
    assert error.postgres_error_code == CONNECTION_FAILURE
    assert open_socket_count() == sockets_before


async def test_require_and_n_fails() -> None:
    sockets_before = open_socket_count()
    async with FakeServer([Expect(m.SSLRequest), Send(b"N"), WaitForClose()]) as server:
        error = await connect_error(**server.connect_kwargs(ssl_mode="require"))
    assert REQUIRE_REFUSED in str(error)
    assert error.postgres_error_code == CONNECTION_FAILURE
    assert open_socket_count() == sockets_before


@pytest.mark.parametrize("ssl_mode", SSL_MODES_THAT_ASK)
async def test_eof_instead_of_an_answer(ssl_mode: str) -> None:
    async with FakeServer([Expect(m.SSLRequest)]) as server:  # then close
        error = await connect_error(**server.connect_kwargs(ssl_mode=ssl_mode))
    assert error.postgres_error_code == CONNECTION_FAILURE


@pytest.mark.parametrize("ssl_mode", SSL_MODES_THAT_ASK)
async def test_tls_fake_server_logs_in_and_closes(ssl_mode: str) -> None:
    tls = make_tls()
    script: list[Step] = [
        Expect(m.SSLRequest),
        Send(b"S"),
        StartTLS(tls.server_context),
        *login_ok(),
        Expect(m.Terminate),
    ]
    async with FakeServer(script) as server:
        await connect_and_close(server, ssl_mode=ssl_mode)
    # Read after StartTLS, so they came encrypted: a plaintext client would have failed
    # the handshake.
    assert [type(x) for x in server.received] == [m.SSLRequest, m.StartupMessage, m.Terminate]


async def test_disable_sends_the_startup_message_first() -> None:
    async with FakeServer([*login_ok(), Expect(m.Terminate)]) as server:
        await connect_and_close(server, ssl_mode="disable")
    first = server.received[0]
    assert isinstance(first, m.StartupMessage)
    assert bytes(server.connections[0].raw).startswith(first.encode())


@pytest.mark.parametrize("ssl_mode", SSL_MODES_THAT_ASK)
async def test_plaintext_after_s_before_the_handshake_is_refused(ssl_mode: str) -> None:
    # CVE-2021-23222: bytes a man in the middle slipped in before the TLS handshake.
    injected = m.AuthenticationOk().encode() + m.ReadyForQuery(m.TransactionStatus.IDLE).encode()
    script: list[Step] = [Expect(m.SSLRequest), Send(b"S" + injected), WaitForClose()]
    sockets_before = open_socket_count()
    async with FakeServer(script) as server:
        error = await connect_error(**server.connect_kwargs(ssl_mode=ssl_mode))
    assert error.postgres_error_code == PROTOCOL_VIOLATION
    assert open_socket_count() == sockets_before


# ------------------------------------------------------------ fake server: unix socket
@pytest.mark.parametrize("ssl_mode", ["require", "prefer", "verify-full"])
async def test_unix_socket_never_asks_for_tls(ssl_mode: str) -> None:
    async with FakeServer([*login_ok(), Expect(m.Terminate)], unix=True) as server:
        await connect_and_close(server, ssl_mode=ssl_mode)
    assert isinstance(server.received[0], m.StartupMessage)


# ------------------------------------------------------------------------ live servers
async def ssl_in_use(conn: pg.Connection) -> str | None:
    return await fetch_value(conn, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


@pytest.mark.parametrize(
    ("ssl_mode", "encrypted"), [("disable", "false"), ("prefer", "true"), ("require", "true")]
)
async def test_live_ssl_server(
    pg_ssl_server: PostgresServer, ssl_mode: str, encrypted: str
) -> None:
    conn = await pg.connect(**pg_ssl_server.connect_kwargs(ssl_mode=ssl_mode))
    try:
        assert await ssl_in_use(conn) == encrypted
    finally:
        await conn.close()
    assert status_of(conn) == pg.ClosedGracefully()


async def test_live_ssl_server_verify_full_with_its_ca(pg_ssl_server: PostgresServer) -> None:
    kwargs = pg_ssl_server.connect_kwargs(
        ssl_mode="verify-full", sslrootcert=str(pg_ssl_server.ca_cert_path)
    )
    conn = await pg.connect(**kwargs)
    try:
        assert await ssl_in_use(conn) == "true"
    finally:
        await conn.close()


@pytest.mark.parametrize("ssl_mode", ["verify-ca", "verify-full"])
async def test_live_ssl_server_with_another_ca_fails(
    pg_ssl_server: PostgresServer, tmp_path: Any, ssl_mode: str
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(trustme.CA().cert_pem.bytes())
    error = await connect_error(
        **pg_ssl_server.connect_kwargs(ssl_mode=ssl_mode, sslrootcert=str(other_ca))
    )
    assert error.postgres_error_code == CONNECTION_FAILURE


@pytest.mark.parametrize("ssl_mode", ["disable", "prefer"])
async def test_live_plain_server_without_requiring_ssl(
    pg_server: PostgresServer, ssl_mode: str
) -> None:
    conn = await pg.connect(**pg_server.connect_kwargs(ssl_mode=ssl_mode))
    try:
        assert await fetch_value(conn, "SELECT 1") == "1"
    finally:
        await conn.close()


async def test_live_plain_server_with_require(pg_server: PostgresServer) -> None:
    error = await connect_error(**pg_server.connect_kwargs(ssl_mode="require"))
    assert REQUIRE_REFUSED in str(error)
    assert error.postgres_error_code == CONNECTION_FAILURE
