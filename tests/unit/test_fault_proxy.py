"""The fault proxy's own tests, against a plain TCP target (no PostgreSQL).

Each control is checked from both ends: what the client's socket sees and what the
target's socket sees, with byte counts, and that leaving the proxy closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self

import pytest

from support import socket_fds
from support.fault_proxy import HIGH_WATER, FaultProxy, FaultProxyError

BOUND = 5.0  # seconds any single wait in these tests may take
QUIET = 0.2  # how long "nothing arrives" is watched


# ----------------------------------------------------------------------------- helpers
class Target:
    """A TCP server on 127.0.0.1 that hands each accepted connection to the test."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.writers: list[asyncio.StreamWriter] = []
        self.count = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await close_all(self.writers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.count += 1
        self.writers.append(writer)
        self.accepted.put_nowait((reader, writer))

    async def accept(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(BOUND):
            return await self.accepted.get()


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.transport.abort()
    for writer in writers:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def dial(
    proxy: FaultProxy,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(*proxy.address)
    try:
        yield reader, writer
    finally:
        await close_all([writer])


@contextlib.asynccontextmanager
async def setup(
    *, record: bool = False, lifetime: float = 30.0
) -> AsyncIterator[tuple[Target, FaultProxy]]:
    async with (
        Target() as target,
        FaultProxy("127.0.0.1", target.port, record=record, lifetime=lifetime) as proxy,
    ):
        yield target, proxy


async def read_exactly(reader: asyncio.StreamReader, count: int) -> bytes:
    async with asyncio.timeout(BOUND):
        return await reader.readexactly(count)


async def nothing_arrives(reader: asyncio.StreamReader) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(QUIET):
            await reader.read(1)


async def read_until_reset(reader: asyncio.StreamReader) -> bytes:
    """Everything the peer sent before its reset; fails if it closed without one."""
    got = bytearray()
    async with asyncio.timeout(BOUND):
        try:
            for _ in range(100_000):
                chunk = await reader.read(65536)
                if not chunk:
                    pytest.fail(f"clean EOF after {len(got)} bytes where a reset was expected")
                got += chunk
        except ConnectionResetError:
            return bytes(got)
    pytest.fail("no reset after 100000 reads")


async def poll_until(predicate: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for a condition nothing signals, checking every millisecond."""
    for _ in range(int(BOUND / 0.001)):
        if predicate():
            return
        await asyncio.sleep(0.001)
    pytest.fail(f"not within {BOUND} s: {what}")


class Chunks(asyncio.Protocol):
    """A client that records the size of every read."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.sizes.append(len(data))
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    async def until(self, size: int) -> None:
        await poll_until(lambda: len(self.data) >= size, f"{size} bytes received")


@contextlib.asynccontextmanager
async def dial_chunks(proxy: FaultProxy) -> AsyncIterator[Chunks]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(Chunks, *proxy.address)
    try:
        yield protocol
    finally:
        transport.abort()
        async with asyncio.timeout(BOUND):
            await protocol.lost


# -------------------------------------------------------------------------- forwarding
async def test_forwards_both_ways_counts_and_passes_eof_on() -> None:
    async with setup(record=True) as (target, proxy), dial(proxy) as (reader, writer):
        writer.write(b"hello")
        t_reader, t_writer = await target.accept()
        assert await read_exactly(t_reader, 5) == b"hello"
        t_writer.write(b"world!")
        assert await read_exactly(reader, 6) == b"world!"
        assert (proxy.bytes_up, proxy.bytes_down) == (5, 6)
        link = proxy.connections[0]
        assert (link.bytes_up, link.bytes_down) == (5, 6)
        assert proxy.forwarded("upstream") == b"hello"
        assert proxy.forwarded("downstream") == b"world!"
        # A half-close travels: the target reads EOF and may still answer.
        writer.write_eof()
        async with asyncio.timeout(BOUND):
            assert await t_reader.read() == b""
        t_writer.write(b"late")
        t_writer.close()
        async with asyncio.timeout(BOUND):
            assert await reader.read() == b"late"
        await poll_until(lambda: link.closed, "both sockets closed")
        assert not link.was_reset


async def test_many_connections_are_independent() -> None:
    async with setup() as (target, proxy), dial(proxy) as (_r1, w1), dial(proxy) as (_r2, w2):
        w1.write(b"one")
        w2.write(b"two")
        peers = [await target.accept(), await target.accept()]
        got = sorted([await read_exactly(peers[0][0], 3), await read_exactly(peers[1][0], 3)])
        assert got == [b"one", b"two"]
        assert len(proxy.connections) == 2
        proxy.connections[0].reset()
        assert proxy.connections[0].was_reset
        assert not proxy.connections[1].was_reset


async def test_connect_kwargs_points_at_the_proxy() -> None:
    async with setup() as (_target, proxy):
        base = {"host": "elsewhere", "port": 1, "user": "u", "server": ("10.0.0.1", 5)}
        kwargs = proxy.connect_kwargs(base, ssl_mode="disable")
        assert kwargs == {"user": "u", "server": proxy.address, "ssl_mode": "disable"}
        assert base["server"] == ("10.0.0.1", 5)  # the caller's dict is not changed


# -------------------------------------------------------------------------- black hole
async def test_black_hole_holds_bytes_keeps_sockets_open_and_resume_delivers() -> None:
    async with setup() as (target, proxy), dial(proxy) as (reader, writer):
        writer.write(b"first")
        t_reader, t_writer = await target.accept()
        assert await read_exactly(t_reader, 5) == b"first"
        proxy.black_hole()
        writer.write(b"held-up")
        t_writer.write(b"held-down")
        await nothing_arrives(t_reader)
        await nothing_arrives(reader)
        assert (proxy.bytes_up, proxy.bytes_down) == (5, 0)
        assert not writer.is_closing()
        assert not t_writer.is_closing()
        assert not proxy.connections[0].closed
        proxy.resume()
        assert await read_exactly(t_reader, 7) == b"held-up"
        assert await read_exactly(reader, 9) == b"held-down"


async def test_black_hole_one_direction_only() -> None:
    async with setup() as (target, proxy), dial(proxy) as (reader, writer):
        proxy.black_hole("downstream")
        writer.write(b"up")
        t_reader, t_writer = await target.accept()
        assert await read_exactly(t_reader, 2) == b"up"
        t_writer.write(b"down")
        await nothing_arrives(reader)
        proxy.resume("downstream")
        assert await read_exactly(reader, 4) == b"down"


async def test_black_hole_applies_to_new_connections_unless_told_not_to() -> None:
    async with setup() as (target, proxy), dial(proxy) as (_reader1, writer1):
        writer1.write(b"a")
        t_reader1, _ = await target.accept()
        assert await read_exactly(t_reader1, 1) == b"a"
        proxy.black_hole(new_connections=False)
        async with dial(proxy) as (_reader2, writer2):
            writer2.write(b"b")
            t_reader2, _ = await target.accept()
            assert await read_exactly(t_reader2, 1) == b"b"  # the new one flows
            writer1.write(b"c")
            await nothing_arrives(t_reader1)  # the old one is held
        proxy.black_hole()
        async with dial(proxy) as (_reader3, writer3):
            writer3.write(b"d")
            t_reader3, _ = await target.accept()
            await nothing_arrives(t_reader3)


async def test_black_hole_stops_reading_so_the_sender_blocks() -> None:
    async with setup() as (target, proxy), dial(proxy) as (_reader, writer):
        writer.write(b"x")
        _t_reader, t_writer = await target.accept()
        proxy.black_hole("downstream")
        block = b"y" * (1 << 20)
        for _ in range(16):  # far more than both kernels hold
            t_writer.write(block)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(QUIET):
                await t_writer.drain()
        assert proxy.bytes_down == 0
        assert len(proxy.connections[0].down.pending) == 0


async def test_a_slow_reader_bounds_what_the_proxy_holds() -> None:
    async with setup() as (target, proxy), dial(proxy) as (_reader, writer):
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        writer.write(b"x")
        _t_reader, t_writer = await target.accept()
        block = b"y" * (1 << 20)
        for _ in range(32):  # far more than the proxy and both kernels hold
            t_writer.write(block)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(QUIET * 2):
                await t_writer.drain()
        link = proxy.connections[0]
        assert len(link.down.pending) <= HIGH_WATER + 256 * 1024
        assert link.client.transport is not None
        assert link.client.transport.get_write_buffer_size() <= 2 * 256 * 1024


# ------------------------------------------------------------------------------- reset
async def test_reset_sends_rst_to_both_sides() -> None:
    async with setup() as (target, proxy), dial(proxy) as (reader, writer):
        writer.write(b"ping")
        t_reader, _ = await target.accept()
        assert await read_exactly(t_reader, 4) == b"ping"
        proxy.reset()
        assert await read_until_reset(reader) == b""
        assert await read_until_reset(t_reader) == b""
        assert proxy.connections[0].was_reset


async def test_a_peer_reset_is_passed_on() -> None:
    async with setup() as (target, proxy), dial(proxy) as (_reader, writer):
        writer.write(b"ping")
        t_reader, _ = await target.accept()
        assert await read_exactly(t_reader, 4) == b"ping"
        sock = writer.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        assert await read_until_reset(t_reader) == b""


# ----------------------------------------------------------------- dribble and coalesce
async def test_dribble_writes_one_byte_at_a_time() -> None:
    payload = bytes(range(256)) * 2
    async with setup() as (target, proxy), dial_chunks(proxy) as client:
        assert client.transport is not None
        client.transport.write(b"go")
        t_reader, t_writer = await target.accept()
        assert await read_exactly(t_reader, 2) == b"go"
        proxy.dribble(0.001, "downstream")
        started = time.monotonic()
        t_writer.write(payload)
        await client.until(len(payload))
        assert bytes(client.data) == payload
        assert proxy.writes_down == len(payload)
        # Each byte was its own write and segment; the client read them one by one
        # (a loaded kernel may merge a few, hence not all).
        assert client.sizes.count(1) >= 0.9 * len(client.sizes), client.sizes
        assert len(client.sizes) >= 0.9 * len(payload)
        assert time.monotonic() - started >= len(payload) * 0.001
        assert proxy.bytes_down == len(payload)


async def test_dribble_upstream_with_no_delay_still_delivers_everything() -> None:
    payload = os.urandom(5000)
    async with setup() as (target, proxy), dial(proxy) as (_reader, writer):
        proxy.dribble(0.0, "upstream")
        writer.write(payload)
        t_reader, _ = await target.accept()
        assert await read_exactly(t_reader, len(payload)) == payload


async def test_coalesce_merges_small_writes_into_one() -> None:
    async with setup() as (target, proxy), dial_chunks(proxy) as client:
        assert client.transport is not None
        client.transport.write(b"go")
        t_reader, t_writer = await target.accept()
        assert await read_exactly(t_reader, 2) == b"go"
        proxy.coalesce(0.5, "downstream")
        for i in range(20):
            t_writer.write(b"%02d" % i)
            await t_writer.drain()
            await asyncio.sleep(0.005)
        await client.until(40)
        assert bytes(client.data) == b"".join(b"%02d" % i for i in range(20))
        assert len(client.sizes) <= 2, client.sizes
        assert proxy.writes_down <= 2


# ----------------------------------------------------------------------------- cut_after
@pytest.mark.parametrize("n_bytes", [0, 1, 12345, 200_000])
async def test_cut_after_forwards_exactly_n_bytes_downstream_then_resets(n_bytes: int) -> None:
    payload = os.urandom(300_000)
    async with setup(record=True) as (target, proxy), dial(proxy) as (reader, writer):
        writer.write(b"go")
        t_reader, t_writer = await target.accept()
        assert await read_exactly(t_reader, 2) == b"go"
        proxy.cut_after(n_bytes, "downstream")
        t_writer.write(payload)
        got = await read_until_reset(reader)
        assert got == payload[:n_bytes]
        assert proxy.forwarded("downstream") == got
        assert proxy.bytes_down == n_bytes
        link = proxy.connections[0]
        assert link.was_reset
        assert link.unacknowledged_at_cut == 0
        await read_until_reset(t_reader)


async def test_cut_after_upstream() -> None:
    payload = os.urandom(100_000)
    async with setup() as (target, proxy), dial(proxy) as (reader, writer):
        writer.write(b"go")
        t_reader, _ = await target.accept()
        assert await read_exactly(t_reader, 2) == b"go"
        proxy.cut_after(777, "upstream")
        writer.write(payload)
        assert await read_until_reset(t_reader) == payload[:777]
        await read_until_reset(reader)
        assert proxy.bytes_up == 2 + 777


async def test_resume_cancels_a_pending_cut() -> None:
    async with setup() as (target, proxy), dial(proxy) as (reader, writer):
        writer.write(b"go")
        t_reader, t_writer = await target.accept()
        assert await read_exactly(t_reader, 2) == b"go"
        proxy.cut_after(10, "downstream")
        proxy.resume()
        t_writer.write(b"z" * 100)
        assert await read_exactly(reader, 100) == b"z" * 100


# -------------------------------------------------------------------- listener modes
async def test_refuse_closes_each_connection_at_once() -> None:
    async with setup() as (target, proxy):
        proxy.refuse()
        for _ in range(3):
            async with dial(proxy) as (reader, _writer):
                async with asyncio.timeout(BOUND):
                    with contextlib.suppress(ConnectionResetError):
                        assert await reader.read() == b""
        assert proxy.refused == 3
        assert target.count == 0
        assert not proxy.connections
        proxy.forward()
        async with dial(proxy) as (_reader, writer):
            writer.write(b"ok")
            t_reader, _ = await target.accept()
            assert await read_exactly(t_reader, 2) == b"ok"


@pytest.mark.parametrize("accept", [False, True])
async def test_deaf_never_answers(accept: bool) -> None:
    async with setup() as (target, proxy):
        proxy.deaf(accept=accept)
        async with dial(proxy) as (reader, writer):  # the kernel completes the handshake
            writer.write(b"anyone?")
            await nothing_arrives(reader)
            assert target.count == 0
            assert not proxy.connections


async def test_deaf_backlog_is_served_once_forwarding_again() -> None:
    async with setup() as (target, proxy):
        proxy.deaf()
        async with dial(proxy) as (reader, writer):
            writer.write(b"waited")
            await nothing_arrives(reader)
            proxy.forward()
            t_reader, t_writer = await target.accept()
            assert await read_exactly(t_reader, 6) == b"waited"
            t_writer.write(b"hi")
            assert await read_exactly(reader, 2) == b"hi"


async def test_unreachable_target_resets_the_client() -> None:
    async with Target() as target:
        port = target.port
    async with FaultProxy("127.0.0.1", port) as proxy, dial(proxy) as (reader, _writer):
        await read_until_reset(reader)
        assert proxy.connections[0].was_reset


# ------------------------------------------------------------------------------ bounds
async def test_exit_closes_every_socket() -> None:
    before = socket_fds()
    writers: list[asyncio.StreamWriter] = []
    async with setup() as (target, proxy):
        _r1, w1 = await asyncio.open_connection(*proxy.address)
        w1.write(b"a")
        await target.accept()
        proxy.black_hole()
        _r2, w2 = await asyncio.open_connection(*proxy.address)
        proxy.deaf(accept=True)
        _r3, w3 = await asyncio.open_connection(*proxy.address)
        proxy.deaf()
        _r4, w4 = await asyncio.open_connection(*proxy.address)
        writers = [w1, w2, w3, w4]
        clients = {w.get_extra_info("socket").fileno() for w in writers}
        await poll_until(
            lambda: len(proxy.connections) == 2 and len(proxy.socket_fds()) == 6,
            "two proxied connections and a deaf one",
        )
        # The listener, two proxied pairs and the accepted deaf one.
        assert len(proxy.socket_fds()) == 6
        assert proxy.socket_fds() <= socket_fds() - clients
    assert socket_fds() - before <= clients  # only the test's own client sockets remain
    await close_all(writers)
    assert socket_fds() == before


async def test_lifetime_watchdog_resets_everything_and_fails_the_exit() -> None:
    async def outlive() -> None:
        async with setup(lifetime=0.3) as (target, proxy), dial(proxy) as (reader, writer):
            writer.write(b"a")
            await target.accept()
            proxy.black_hole()
            await read_until_reset(reader)

    with pytest.raises(FaultProxyError, match="outlived its lifetime"):
        await outlive()


async def test_bad_arguments() -> None:
    async with setup(record=False) as (_target, proxy):
        with pytest.raises(ValueError, match="direction"):
            proxy.black_hole("sideways")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="one direction"):
            proxy.cut_after(1, "both")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=">= 0"):
            proxy.dribble(-1)
        with pytest.raises(FaultProxyError, match="no connection"):
            proxy.forwarded("upstream")
        async with dial(proxy) as (_reader, writer):
            writer.write(b"a")
            await _target.accept()
            with pytest.raises(FaultProxyError, match="record=True"):
                proxy.forwarded("upstream")
