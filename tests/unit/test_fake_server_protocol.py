"""Tests of the scripted fake server itself (tests/support/fake_server.py).

The client here is raw asyncio streams plus the protocol layer's encoders, so these
tests check the fake server without depending on the behaviour of the client it is
meant to test.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from postgres_async.protocol import messages as m
from postgres_async.protocol.buffer import ReceiveBuffer
from support.fake_server import (
    Call,
    Expect,
    ExpectBytes,
    FakeServer,
    FakeServerError,
    HalfClose,
    ReadAny,
    Reset,
    Send,
    ServerConnection,
    ShutdownRead,
    Sleep,
    StartTLS,
    Step,
    WaitForClose,
    expect_query,
    login_ok,
    make_tls,
)

STARTUP = m.StartupMessage({"user": "postgres", "database": "postgres"})
IDLE = m.ReadyForQuery(m.TransactionStatus.IDLE)


@asynccontextmanager
async def client(
    server: FakeServer,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    if server.unix:
        reader, writer = await asyncio.open_unix_connection(server.socket_path)
    else:
        reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def read_messages(reader: asyncio.StreamReader, count: int) -> list[m.BackendMessage]:
    """Read and decode ``count`` backend messages."""
    buffer = ReceiveBuffer()
    found: list[m.BackendMessage] = []
    while len(found) < count:
        frame = buffer.next_frame()
        if frame is not None:
            found.append(m.decode_backend(*frame))
            continue
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, f"EOF after {found!r}"
        buffer.feed(data)
    return found


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)


# ----------------------------------------------------------------------- basic flow
async def test_login_ok_script_records_and_answers() -> None:
    async with (
        FakeServer([*login_ok(pid=77, secret=-5), Expect(m.Terminate)]) as server,
        client(server) as (reader, writer),
    ):
        writer.write(STARTUP.encode())
        messages = await read_messages(reader, 4)
        assert messages == [
            m.AuthenticationOk(),
            m.BackendKeyData(77, -5),
            m.ParameterStatus("server_version", "16.0 (fake)"),
            IDLE,
        ]
        writer.write(m.Terminate().encode())
        assert await read_to_eof(reader) == b""  # the script's end closes
        await server.finished()
    assert server.received == [STARTUP, m.Terminate()]
    assert bytes(server.connections[0].raw) == STARTUP.encode() + m.Terminate().encode()
    assert server.bytes_seen.is_set()


async def test_expect_query_reads_an_extended_query_exchange() -> None:
    wire = b"".join(
        (
            m.Parse("SELECT 1").encode(),
            m.Bind(()).encode(),
            m.Describe("P").encode(),
            m.Execute().encode(),
            m.Sync().encode(),
        )
    )
    async with (
        FakeServer([*login_ok(), *expect_query(), Send(IDLE)]) as server,
        client(server) as (reader, writer),
    ):
        writer.write(STARTUP.encode())
        await read_messages(reader, 4)
        writer.write(wire)
        assert await read_messages(reader, 1) == [IDLE]
    assert server.received[1:] == [
        m.Parse("SELECT 1"),
        m.Bind(()),
        m.Describe("P"),
        m.Execute(),
        m.Sync(),
    ]


async def test_p_messages_are_decoded_as_the_expected_class() -> None:
    script = [Expect(m.StartupMessage), Expect(m.GSSResponse), Expect(m.PasswordMessage)]
    async with FakeServer(script) as server, client(server) as (_, writer):
        writer.write(STARTUP.encode())
        writer.write(m.GSSResponse(b"blob").encode())
        writer.write(m.PasswordMessage(b"secret").encode())
        await server.finished()
    assert server.received[1:] == [m.GSSResponse(b"blob"), m.PasswordMessage(b"secret")]


async def test_send_raw_bytes_and_read_raw_bytes() -> None:
    script: list[Step] = [ExpectBytes(3), ReadAny(), Send(b"x\0\0\0\x04", IDLE)]
    async with FakeServer(script) as server, client(server) as (reader, writer):
        writer.write(b"abc")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"defg")
        assert await read_to_eof(reader) == b"x\0\0\0\x04" + IDLE.encode()
    assert server.received == [b"abc", b"defg"]


async def test_check_can_reject_a_message() -> None:
    def user_is_alice(message: m.StartupMessage) -> bool:
        return message.parameters["user"] == "alice"

    async def run() -> None:
        async with (
            FakeServer([Expect(m.StartupMessage, check=user_is_alice)]) as server,
            client(server) as (_, writer),
        ):
            writer.write(STARTUP.encode())
            await server.finished()

    with pytest.raises(FakeServerError, match="check rejected"):
        await run()


async def test_call_step_runs_a_function() -> None:
    seen: list[int] = []

    async def note(conn: ServerConnection) -> None:
        seen.append(conn.index)

    async with FakeServer([Call(note), Send(IDLE)]) as server, client(server) as (reader, _):
        assert await read_messages(reader, 1) == [IDLE]
    assert seen == [0]


async def test_connect_kwargs_default_to_no_ssl() -> None:
    async with FakeServer([], must_connect=False) as server:
        assert server.connect_kwargs() == {
            "server": ("127.0.0.1", server.port),
            "user": "postgres",
            "database": "postgres",
            "ssl_mode": "disable",
        }
        assert server.connect_kwargs(ssl_mode="require", user="u")["ssl_mode"] == "require"


# ------------------------------------------------------------------------- failures
async def test_unexpected_message_fails_and_closes_the_connection() -> None:
    server = FakeServer([Expect(m.StartupMessage), Expect(m.Terminate)])

    async def run() -> None:
        async with server, client(server) as (reader, writer):
            writer.write(STARTUP.encode() + m.Sync().encode())
            assert await read_to_eof(reader) == b""
            with pytest.raises(FakeServerError, match=r"expected Terminate .*Sync"):
                await server.finished()

    with pytest.raises(FakeServerError) as info:
        await run()
    assert "step 1" in str(info.value)
    assert server.received == [STARTUP, b"S\0\0\0\x04"]


async def test_wrong_startup_phase_packet_fails() -> None:
    async def run() -> None:
        async with (
            FakeServer([Expect(m.StartupMessage)]) as server,
            client(server) as (_, writer),
        ):
            writer.write(m.SSLRequest().encode())
            await server.finished()

    with pytest.raises(FakeServerError, match="expected StartupMessage, got SSLRequest"):
        await run()


async def test_a_step_that_takes_too_long_fails() -> None:
    async def run() -> None:
        async with (
            FakeServer([Expect(m.StartupMessage, timeout=0.1)]) as server,
            client(server),
        ):
            await server.finished()

    with pytest.raises(FakeServerError, match=r"timed out after 0\.1 s"):
        await run()


async def test_client_closing_early_fails_an_expect() -> None:
    async def run() -> None:
        async with (
            FakeServer([Expect(m.StartupMessage)]) as server,
            client(server) as (_, writer),
        ):
            writer.write(STARTUP.encode()[:6])
            writer.close()
            await server.finished()

    with pytest.raises(FakeServerError, match="client closed the connection"):
        await run()


async def test_body_exception_propagates_with_the_failure_as_a_note() -> None:
    async def run() -> None:
        async with (
            FakeServer([Expect(m.Terminate, timeout=0.05)]) as server,
            client(server),
        ):
            await asyncio.sleep(0.2)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError) as info:
        await run()
    assert "timed out" in "".join(getattr(info.value, "__notes__", []))


async def test_missing_client_is_a_failure_unless_optional() -> None:
    async def run(must_connect: bool) -> None:
        async with FakeServer([Send(IDLE)], must_connect=must_connect, exit_timeout=0.1):
            pass

    with pytest.raises(FakeServerError, match="no client connected"):
        await run(must_connect=True)
    await run(must_connect=False)


async def test_extra_connection_is_refused_and_reported() -> None:
    async def run() -> None:
        async with FakeServer([Send(IDLE)]) as server:
            async with client(server) as (reader, _):
                await read_messages(reader, 1)
            async with client(server) as (reader, _):
                assert await read_to_eof(reader) == b""

    with pytest.raises(FakeServerError, match="unexpected connection"):
        await run()


async def test_script_still_running_at_exit_is_reported_and_stopped() -> None:
    script: list[Step] = [Send(IDLE), Sleep(30)]

    async def run() -> None:
        async with (
            FakeServer(script, exit_timeout=0.2) as server,
            client(server) as (reader, _),
        ):
            await read_messages(reader, 1)

    with pytest.raises(FakeServerError, match=r"still running .* step 1 Sleep"):
        await run()


async def test_scripts_serve_connections_in_order() -> None:
    first: list[Step] = [Expect(m.StartupMessage), Send(b"1")]
    second = [Expect(m.CancelRequest)]
    async with FakeServer(first, second) as server:
        async with client(server) as (reader, writer):
            writer.write(STARTUP.encode())
            assert await read_to_eof(reader) == b"1"
        async with client(server) as (reader, writer):
            writer.write(m.CancelRequest(1, 2).encode())
            assert await read_to_eof(reader) == b""
        await server.finished()
    assert server.received == [STARTUP, m.CancelRequest(1, 2)]
    assert [c.index for c in server.connections] == [0, 1]


# ------------------------------------------------------------------- socket control
async def test_half_close_sends_eof_and_keeps_reading() -> None:
    async with (
        FakeServer([Send(b"bye"), HalfClose(), WaitForClose()]) as server,
        client(server) as (reader, writer),
    ):
        assert await read_to_eof(reader) == b"bye"
        writer.write(b"still here")
        await writer.drain()
        writer.close()
        await server.finished()
    assert server.received == [b"still here"]


async def test_reset_gives_the_client_a_connection_reset() -> None:
    async with (
        FakeServer([ExpectBytes(1), Reset()]) as server,
        client(server) as (reader, writer),
    ):
        writer.write(b"x")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)


async def write_until_it_fails(writer: asyncio.StreamWriter) -> None:
    for _ in range(100):
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.01)


async def test_shutdown_read_breaks_the_clients_writes_on_a_unix_socket() -> None:
    async with (
        FakeServer([ShutdownRead(), Send(b"!"), Sleep(0.2)], unix=True) as server,
        client(server) as (reader, writer),
    ):
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"!"
        # asyncio reports the EPIPE as a lost connection.
        with pytest.raises(ConnectionError):
            await write_until_it_fails(writer)


async def test_wait_for_close_records_and_accepts_a_reset() -> None:
    async with FakeServer([WaitForClose()]) as server:
        async with client(server) as (_, writer):
            writer.write(b"last words")
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            await asyncio.sleep(0.05)
        await server.finished()
    assert server.received == [b"last words"]


async def test_unix_server_lives_in_a_private_directory() -> None:
    async with FakeServer([Send(IDLE)], unix=True, unix_port=6543) as server:
        assert server.socket_path == os.path.join(server.socket_dir, ".s.PGSQL.6543")
        assert server.connect_kwargs()["server"] == server.socket_path
        async with client(server) as (reader, _):
            assert await read_messages(reader, 1) == [IDLE]
    assert not path_exists(server.socket_dir)


def path_exists(path: str) -> bool:
    return os.path.exists(path)


async def test_exit_closes_connections_the_client_left_open() -> None:
    server = FakeServer([WaitForClose(timeout=30)], exit_timeout=0.1)
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def run() -> None:
        async with server:
            opened.append(await asyncio.open_connection(server.host, server.port))
            await server.client_connected.wait()

    with pytest.raises(FakeServerError, match=r"still running after 0\.1 s"):
        await run()
    reader, writer = opened[0]
    try:
        assert await read_to_eof(reader) == b""
    finally:
        writer.close()


async def test_finished_reports_a_script_that_does_not_end_in_time() -> None:
    async def run() -> None:
        async with FakeServer([WaitForClose(timeout=30)]) as server, client(server):
            await server.client_connected.wait()
            with pytest.raises(FakeServerError, match=r"still running after 0\.05 s"):
                await server.finished(within=0.05)

    with pytest.raises(FakeServerError, match="still running"):
        await run()


async def test_start_tls_upgrades_the_connection() -> None:
    tls = make_tls()
    client_context = ssl.create_default_context(cadata=tls.ca_pem.decode())
    script: list[Step] = [
        Expect(m.SSLRequest),
        Send(b"S"),
        StartTLS(tls.server_context),
        *login_ok(),
        WaitForClose(),
    ]
    async with FakeServer(script) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(m.SSLRequest().encode())
            assert await reader.readexactly(1) == b"S"
            await writer.start_tls(client_context, server_hostname="127.0.0.1")
            writer.write(STARTUP.encode())
            assert (await read_messages(reader, 4))[-1] == IDLE
            assert writer.get_extra_info("ssl_object") is not None
        finally:
            writer.close()
            await writer.wait_closed()
    assert server.received[:2] == [m.SSLRequest(), STARTUP]
