"""The asyncio side of a connection: socket, TLS, flow control, the cancel side channel.

``Stream`` is an ``asyncio.Protocol`` that feeds a ``ReceiveBuffer``. During login the
connection pulls from it (``await stream.wait_for_data()``); afterwards a listener gets
a call after every chunk and consumes whole messages itself, with no task switch per
chunk. Reading can be paused (pushback), and writers can wait until the transport's
write buffer has drained (COPY IN), which is what keeps memory bounded both ways.

Early reads: right after a request is written, the reply is often already in the
socket (a server on the same CPU runs as soon as the request wakes it). ``read_early``
takes it then, sparing the poll and the loop iteration that would otherwise deliver it.
Where replies usually are there, it yields the CPU once to the server before giving up;
where they are not, it learns to stop trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from ..config import ConnectConfig, TcpAddress, UnixAddress
from ..errors import client_error
from ..protocol.buffer import ReceiveBuffer
from ..protocol.messages import CancelRequest, SSLRequest

logger = logging.getLogger("postgres_async")

UNABLE_TO_CONNECT = "08001"
CONNECTION_DOES_NOT_EXIST = "08003"
SSL_NOT_UNDERSTOOD = (
    "Postgres Server indicated it does not understand the SSLRequest message. This may "
    "mean that the server is running a very outdated version of postgres, or some other "
    "problem may be occurring. You can try to run with ssl_mode = Disable to skip the "
    "SSLRequest and use plain TCP."
)
SSL_REQUIRED_BUT_REFUSED = (
    "Server indicated it cannot use SSL connections, but ssl_mode is set to Require"
)
# Past this many unsent bytes, writers that can wait (COPY IN) do wait.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
# One early read takes at most this much; the rest comes through the transport. Kept
# under glibc's mmap threshold, so the read buffer is a cheap heap allocation.
EARLY_READ_SIZE = 64 * 1024
# Early-read credit: a read that finds data earns 1 (up to the cap), one that finds
# nothing costs EARLY_MISS_COST. Below zero, requests go without a read (each earning 1
# back): where replies are never that early (a server on another host) only one request
# in EARLY_MISS_COST + 1 pays for a read that finds nothing, about a microsecond against
# a round trip of tens. Reads go on while more than about two in three find data, which
# is where, measured on the benchmark, they stop paying for themselves.
EARLY_CREDIT_CAP = 16
EARLY_MISS_COST = 2
# Module globals, so that tests can put spies here.
_read = os.read
_yield_cpu: Callable[[], None] | None = getattr(os, "sched_yield", None)


class StreamListener(Protocol):
    def data_arrived(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...


class Stream(asyncio.Protocol):
    """One server connection's transport plus its receive buffer."""

    def __init__(self, max_message_length: int) -> None:
        self.buffer = ReceiveBuffer(max_message_length)
        self.transport: asyncio.Transport | None = None
        self.listener: StreamListener | None = None
        self.eof = False
        self.lost_exc: BaseException | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        # The socket's descriptor while early reads are on, else -1.
        self._early_fd = -1
        self._early_credit = 0
        # An error an early read took from the socket, reported when the transport
        # then sees only the end of the stream.
        self._early_error: OSError | None = None

    # ------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    def data_received(self, data: bytes) -> None:
        self.buffer.feed(data)
        if self.listener is not None:
            self.listener.data_arrived()
        else:
            self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close the transport: PostgreSQL never half-closes on purpose

    def connection_lost(self, exc: Exception | None) -> None:
        self._early_fd = -1
        if exc is None:
            exc = self._early_error
        self.eof = True
        self.lost_exc = exc
        self._wake_reader()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)
        if self.listener is not None:
            self.listener.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---------------------------------------------------------------------- helpers
    def _wake_reader(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_for_data(self) -> None:
        """Until more bytes (or EOF) arrive. Only for the pull mode used in login."""
        if self.eof:
            return
        self._data_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._data_waiter
        finally:
            self._data_waiter = None

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise client_error(CONNECTION_DOES_NOT_EXIST, "connection is closed: cannot write")
        transport.write(data)

    @property
    def write_blocked(self) -> bool:
        return self._write_paused

    async def drain(self) -> None:
        """Until the transport's write buffer is below its low-water mark."""
        while self._write_paused and not self.closed.done():
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def enable_early_reads(self) -> None:
        """Let ``read_early`` read the socket: only a plain socket on a POSIX system,
        whose transport delivers every read at once (TLS transports hold decrypted data
        of their own, and a proactor loop has reads outstanding)."""
        transport = self.transport
        if transport is None or os.name != "posix" or transport.is_closing():
            return
        if transport.get_extra_info("sslcontext") is not None:
            return
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        self._early_fd = sock.fileno()

    def read_early(self) -> bool:
        """Take what the socket already holds, without waiting; True if anything came.

        What is read goes through ``data_received`` exactly as the transport's own
        reads do, so the order of bytes and everything that follows is the same.
        """
        data = self.take_early()
        if data is None:
            return False
        self.data_received(data)
        return True

    def take_early(self) -> bytes | None:
        """What the socket already holds, or None; the caller must feed it to
        ``buffer`` before anything else reads (see ``read_early``)."""
        fd = self._early_fd
        if fd < 0 or self._read_paused:
            return None
        assert self.transport is not None
        if self.transport.is_closing():
            # uvloop closes the descriptor before connection_lost is called, and the
            # number may already name another socket.
            self._early_fd = -1
            return None
        credit = self._early_credit
        if credit < 0:
            self._early_credit = credit + 1
            return None
        try:
            data: bytes | None = _read(fd, EARLY_READ_SIZE)
        except BlockingIOError:
            data = None
        except OSError as exc:
            self._early_read_failed(exc)
            return None
        if data is None and credit > 0 and _yield_cpu is not None:
            # Recent replies were there at once, so the server most likely shares this
            # CPU and the request has just made it runnable: let it run, then look again.
            # Where replies come from elsewhere, misses keep the credit at zero or below
            # and this never happens.
            _yield_cpu()
            try:
                data = _read(fd, EARLY_READ_SIZE)
            except BlockingIOError:
                pass
            except OSError as exc:
                self._early_read_failed(exc)
                return None
        if data is None:
            self._early_credit = credit - EARLY_MISS_COST
            return None
        if not data:
            self._early_fd = -1  # EOF: the transport reads it again and reports it
            return None
        if credit < EARLY_CREDIT_CAP:
            self._early_credit = credit + 1
        return data

    def _early_read_failed(self, exc: OSError) -> None:
        # The transport will see the end of the stream; this says why.
        self._early_error = exc
        self._early_fd = -1

    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def abort(self) -> None:
        self._early_fd = -1
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self._early_fd = -1
        if self.transport is not None:
            self.transport.close()


def _ssl_context(config: ConnectConfig) -> ssl.SSLContext:
    mode = config.ssl_mode
    if mode in ("verify-ca", "verify-full"):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        root = config.sslrootcert or os.path.expanduser("~/.postgresql/root.crt")
        if root != "system":
            ctx.load_verify_locations(cafile=root)
        ctx.check_hostname = mode == "verify-full"
    else:
        # libpq's require/prefer encrypt without verifying who answers.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if config.sslcert:
        ctx.load_cert_chain(config.sslcert, config.sslkey)
    return ctx


def describe_address(config: ConnectConfig) -> str:
    address = config.address
    if isinstance(address, UnixAddress):
        return address.path
    return f"{address.host}:{address.port}"


async def _open_socket(
    config: ConnectConfig, factory: Callable[[], Stream]
) -> tuple[asyncio.Transport, Stream]:
    loop = asyncio.get_running_loop()
    address = config.address
    try:
        if isinstance(address, UnixAddress):
            transport, stream = await loop.create_unix_connection(factory, address.path)
        else:
            transport, stream = await loop.create_connection(factory, address.host, address.port)
    except OSError as exc:
        # asyncio rewrites strerror ("Connect call failed ..."); the OS's words say why.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise client_error(
            UNABLE_TO_CONNECT,
            f"could not connect to server at {describe_address(config)}: {reason}",
        ) from None
    return transport, stream


async def open_stream(config: ConnectConfig, phase: list[str]) -> Stream:
    """Connect and negotiate TLS as ``config.ssl_mode`` asks. ``phase[0]`` tracks where
    the attempt is, so an interrupt or timeout can say what it cut short."""
    phase[0] = "connecting"
    max_length = config.max_message_length
    transport, stream = await _open_socket(config, lambda: Stream(max_length))
    try:
        address = config.address
        # As libpq: TLS is for TCP; a unix socket is already private to this host.
        if config.ssl_mode not in ("disable", "allow") and isinstance(address, TcpAddress):
            phase[0] = "ssl"
            await _negotiate_ssl(config, stream, address)
    except BaseException:
        transport.abort()
        raise
    return stream


async def _negotiate_ssl(config: ConnectConfig, stream: Stream, address: TcpAddress) -> None:
    stream.write(SSLRequest().encode())
    while len(stream.buffer) < 1 and not stream.eof:
        await stream.wait_for_data()
    if len(stream.buffer) < 1:
        raise client_error(UNABLE_TO_CONNECT, "Reader closed before ssl negotiation response")
    answer = stream.buffer.take_raw(1)
    if answer == b"N":
        if config.ssl_mode in ("require", "verify-ca", "verify-full"):
            raise client_error(UNABLE_TO_CONNECT, SSL_REQUIRED_BUT_REFUSED)
        return
    if answer != b"S":
        raise client_error(
            UNABLE_TO_CONNECT, f"{SSL_NOT_UNDERSTOOD} (response_char {answer.decode('latin-1')})"
        )
    if len(stream.buffer):
        # Bytes after 'S' but before the handshake were not encrypted: someone in the
        # middle may have injected them (CVE-2021-23222).
        raise client_error(
            "08P01", "server sent unencrypted data after its SSL response; refusing it"
        )
    loop = asyncio.get_running_loop()
    assert stream.transport is not None
    try:
        ctx = _ssl_context(config)
        hostname = address.host if config.ssl_mode == "verify-full" else None
        tls_transport = await loop.start_tls(
            stream.transport, stream, ctx, server_hostname=hostname
        )
    except (ssl.SSLError, ssl.CertificateError, OSError, ConnectionError) as exc:
        raise client_error(UNABLE_TO_CONNECT, f"SSL negotiation failed: {exc}") from None
    if tls_transport is None:
        raise client_error(UNABLE_TO_CONNECT, "SSL negotiation failed: connection closed")
    stream.transport = tls_transport


async def send_cancel_request(
    config: ConnectConfig, pid: int, secret: int, bound: float = 5.0
) -> None:
    """Best effort: a CancelRequest on a fresh plain connection, then wait for the
    server to hang up, which is when the signal has reached the backend. Returning
    before that could let the cancel hit the next statement instead (libpq waits too).
    """
    loop = asyncio.get_running_loop()
    address = config.address
    stream: Stream | None = None
    try:
        async with asyncio.timeout(bound):
            if isinstance(address, UnixAddress):
                _, stream = await loop.create_unix_connection(lambda: Stream(1024), address.path)
            else:
                _, stream = await loop.create_connection(
                    lambda: Stream(1024), address.host, address.port
                )
            stream.write(CancelRequest(pid, secret).encode())
            await stream.closed
    except (OSError, TimeoutError) as exc:
        logger.warning("cancel request to %s failed: %s", describe_address(config), exc)
    finally:
        if stream is not None:
            stream.abort()


def set_keepalive(stream: Stream) -> None:
    transport = stream.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
