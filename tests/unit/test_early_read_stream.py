"""``Stream.read_early`` on a loopback TCP pair, under asyncio and uvloop: what it does
with data, the end of the stream, a reset, a paused or closed transport.

No PostgreSQL here: these are the socket's own events, which a server cannot be asked
to produce on cue (a reset in particular).
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop

from postgres_async._transport import stream as stream_module
from postgres_async._transport.stream import Stream

Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner.run


class Listener:
    def __init__(self) -> None:
        self.arrivals = 0
        self.lost: list[BaseException | None] = []

    def data_arrived(self) -> None:
        self.arrivals += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


@asynccontextmanager
async def stream_pair() -> AsyncIterator[tuple[Stream, socket.socket, Listener]]:
    """A Stream with early reads on, connected to a plain socket we hold (the peer)."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        loop = asyncio.get_running_loop()
        _, stream = await loop.create_connection(lambda: Stream(1 << 20), *server.getsockname())
        peer, _ = server.accept()
    finally:
        server.close()
    listener = Listener()
    stream.listener = listener
    stream.enable_early_reads()
    try:
        yield stream, peer, listener
    finally:
        peer.close()
        stream.abort()
        await asyncio.wait_for(asyncio.shield(stream.closed), 5)


def wait_readable(stream: Stream) -> None:
    assert stream.transport is not None
    fd = stream.transport.get_extra_info("socket").fileno()
    assert select.select([fd], [], [], 5.0)[0], "the peer's bytes never arrived"


def reset(peer: socket.socket) -> None:
    """Close ``peer`` with RST rather than FIN (linger 0)."""
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()


def test_data_already_there_is_taken_at_once(run: Run) -> None:
    async def body() -> None:
        async with stream_pair() as (stream, peer, listener):
            peer.sendall(b"Z\x00\x00\x00\x05I")
            wait_readable(stream)
            assert stream.read_early() is True
            assert listener.arrivals == 1
            assert stream.buffer.next_frame() == (ord("Z"), b"I")
            assert stream.read_early() is False  # nothing there: a miss
            # The hit earned 1, the miss cost EARLY_MISS_COST: that many requests less
            # one go without a read, even with data waiting (the transport delivers it).
            peer.sendall(b"Z\x00\x00\x00\x05T")
            wait_readable(stream)
            for _ in range(stream_module.EARLY_MISS_COST - 1):
                assert stream.read_early() is False
            assert listener.arrivals == 1
            assert stream.read_early() is True
            assert stream.buffer.next_frame() == (ord("Z"), b"T")

    run(body())


def test_end_of_stream_is_left_to_the_transport(run: Run) -> None:
    async def body() -> None:
        async with stream_pair() as (stream, peer, listener):
            peer.shutdown(socket.SHUT_WR)
            wait_readable(stream)
            assert stream.read_early() is False
            await asyncio.wait_for(asyncio.shield(stream.closed), 5)
            assert stream.eof
            assert listener.lost == [None]

    run(body())


def test_a_reset_read_early_is_what_the_connection_is_lost_with(run: Run) -> None:
    async def body() -> None:
        async with stream_pair() as (stream, peer, listener):
            reset(peer)
            wait_readable(stream)
            assert stream.read_early() is False
            await asyncio.wait_for(asyncio.shield(stream.closed), 5)
            assert len(listener.lost) == 1
            assert isinstance(listener.lost[0], ConnectionResetError)

    run(body())


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors of every early read; each finds nothing."""
    made: list[int] = []

    def spy(fd: int, size: int) -> bytes:
        made.append(fd)
        raise BlockingIOError

    monkeypatch.setattr(stream_module, "_read", spy)
    return made


def test_no_read_while_paused_or_after_close(run: Run, calls: list[int]) -> None:
    async def body() -> None:
        async with stream_pair() as (stream, _peer, _listener):
            stream.pause_reading()
            assert stream.read_early() is False
            assert calls == []
            stream.resume_reading()
            assert stream.read_early() is False
            assert len(calls) == 1
            stream._early_credit = 0  # as if the miss were long repaid
            stream.close()
            # The descriptor may already be another socket's: never read it again.
            assert stream.read_early() is False
            assert len(calls) == 1

    run(body())


def test_no_read_once_the_transport_closes_by_itself(run: Run, calls: list[int]) -> None:
    async def body() -> None:
        async with stream_pair() as (stream, _peer, _listener):
            assert stream.transport is not None
            # As after a write error: the transport closes before the Stream hears of
            # it, and uvloop has already closed the descriptor.
            stream.transport.abort()
            assert stream.read_early() is False
            assert calls == []

    run(body())


def test_a_miss_after_recent_hits_yields_the_cpu_and_looks_again(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        async with stream_pair() as (stream, peer, listener):
            yields: list[int] = []

            def server_runs_meanwhile() -> None:
                # What a server sharing the CPU does while the client yields: answer.
                yields.append(1)
                peer.sendall(b"Z\x00\x00\x00\x05I")
                wait_readable(stream)

            monkeypatch.setattr(stream_module, "_yield_cpu", server_runs_meanwhile)
            stream._early_credit = 1  # a recent read found its reply
            assert stream.read_early() is True
            assert yields == [1]
            assert listener.arrivals == 1
            assert stream.buffer.next_frame() == (ord("Z"), b"I")
            assert stream._early_credit == 2

    run(body())


@pytest.fixture
def yields(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per time the stream gives the CPU away (which it then does not)."""
    made: list[int] = []
    monkeypatch.setattr(stream_module, "_yield_cpu", lambda: made.append(1))
    return made


def test_a_miss_that_yielded_in_vain_costs_as_any_miss(run: Run, yields: list[int]) -> None:
    async def body() -> None:
        async with stream_pair() as (stream, _peer, listener):
            stream._early_credit = 1
            assert stream.read_early() is False
            assert yields == [1]
            assert stream._early_credit == 1 - stream_module.EARLY_MISS_COST
            assert listener.arrivals == 0

    run(body())


def test_no_yield_without_credit(run: Run, yields: list[int]) -> None:
    """Where replies are not there at once (a server elsewhere), misses keep the credit
    at zero or below: the client never gives the CPU away for them."""

    async def body() -> None:
        async with stream_pair() as (stream, _peer, _listener):
            for _ in range(3 * (stream_module.EARLY_MISS_COST + 1)):
                assert stream.read_early() is False
                assert stream._early_credit <= 0
            assert yields == []

    run(body())


def test_an_error_on_the_look_after_yielding_is_kept(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        async with stream_pair() as (stream, peer, listener):

            def peer_resets() -> None:
                reset(peer)
                wait_readable(stream)

            monkeypatch.setattr(stream_module, "_yield_cpu", peer_resets)
            stream._early_credit = 1
            assert stream.read_early() is False
            await asyncio.wait_for(asyncio.shield(stream.closed), 5)
            assert len(listener.lost) == 1
            assert isinstance(listener.lost[0], ConnectionResetError)

    run(body())
