"""A scripted fake PostgreSQL server, for what a real server will not do.

A real server is the better test wherever it can show the behaviour; this one is for
malformed, hostile or badly timed bytes: a nonsense length, a half-closed socket, an
``S`` answer to SSLRequest followed by plaintext, a server that never answers.

A *script* is a list of steps, run in order against one client connection::

    script = [
        *login_ok(pid=9999),                  # expect StartupMessage, send the login
        *expect_query(),                      # Parse, Bind, Describe, Execute, Sync
        Send(b"x\\0\\0\\0\\x04"),                # anything: message objects or raw bytes
        WaitForClose(),                       # until the client hangs up
    ]
    async with FakeServer(script) as server:  # TCP on 127.0.0.1 (unix=True: a socket file)
        with pytest.raises(pg.PgasyncError):
            conn = await pg.connect(**server.connect_kwargs())
            await conn.query_expect_no_data("SELECT 1")
        assert isinstance(server.received[0], m.StartupMessage)

Steps: :class:`Expect` (one frontend message of a given class: the startup-phase packets
by ``decode_untyped``, the typed ones by ``decode_frontend``), :class:`ExpectBytes`,
:class:`ReadAny`, :class:`Send`, :class:`Sleep`, :class:`HalfClose` (``SHUT_WR``),
:class:`ShutdownRead` (``SHUT_RD``), :class:`Reset` (RST), :class:`StartTLS`,
:class:`WaitForClose` and :class:`Call` (run a function). When a script ends the server
closes the connection (FIN), as PostgreSQL does after Terminate.

Every step but :class:`Sleep` has a time bound (``step_timeout`` unless the step gives
its own). A step that fails (an unexpected message, a timeout, the client gone) ends the
script, closes the connection and is recorded; ``await server.finished()`` and leaving
the ``async with`` block raise :class:`FakeServerError` describing it. If the block is
left by an exception, that exception propagates with the script failures added as a
note. Leaving the block always closes the listening socket and every connection.

One script serves one client connection; give several for several connections in order
(e.g. a login and then the CancelRequest of ``conn.cancel()``). A connection beyond the
scripts is refused and recorded as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import struct
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeAlias

import trustme

from postgres_async.errors import PgasyncError
from postgres_async.protocol import messages as m

__all__ = [
    "Call",
    "Expect",
    "ExpectBytes",
    "FakeServer",
    "FakeServerError",
    "FakeTLS",
    "HalfClose",
    "ReadAny",
    "Reset",
    "Send",
    "ServerConnection",
    "ShutdownRead",
    "Sleep",
    "StartTLS",
    "Step",
    "WaitForClose",
    "expect_query",
    "login_ok",
    "make_tls",
]

DEFAULT_STEP_TIMEOUT = 5.0
DEFAULT_EXIT_TIMEOUT = 10.0
# The largest frontend message a script will read; more is a failure, not a read.
MAX_FRONTEND_MESSAGE = 1 << 20
_INT32 = struct.Struct("!i")
_CLOSE_TIMEOUT = 1.0
_ACCEPT_GRACE_ITERATIONS = 5


class FakeServerError(AssertionError):
    """A script did not run as written (raised by ``finished()`` and at exit)."""


class ScriptFailure(Exception):
    """Internal: the current step cannot succeed."""


# ----------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Expect:
    """Read one frontend message and check that it is a ``kind``.

    Startup-phase classes (``StartupMessage``, ``SSLRequest``, ``GSSENCRequest``,
    ``CancelRequest``: ``TYPE == b""``) are read as an untyped packet; others as a typed
    message whose type byte must be ``kind.TYPE``. ``p`` messages are decoded as ``kind``
    (their meaning depends on the auth exchange). ``check`` may inspect the decoded
    message; returning False or raising AssertionError fails the step.
    """

    kind: type[m.FrontendMessage]
    check: Callable[[Any], object] | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class ExpectBytes:
    """Read exactly ``count`` raw bytes (recorded as ``bytes``)."""

    count: int
    timeout: float | None = None


@dataclass(frozen=True)
class ReadAny:
    """Read whatever arrives next (at least one byte; recorded as ``bytes``)."""

    timeout: float | None = None


class Send:
    """Write backend message objects and/or raw bytes, concatenated, in one write."""

    __slots__ = ("data", "timeout")

    def __init__(self, *parts: m.BackendMessage | bytes, timeout: float | None = None) -> None:
        self.data = b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)
        self.timeout = timeout

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 64 else self.data[:64] + b"..."
        return f"Send({shown!r})"


@dataclass(frozen=True)
class Sleep:
    """Do nothing for ``seconds`` (not bounded by the step timeout)."""

    seconds: float


@dataclass(frozen=True)
class HalfClose:
    """Flush, then ``shutdown(SHUT_WR)``: the client reads EOF, the server can still read."""

    timeout: float | None = None


@dataclass(frozen=True)
class ShutdownRead:
    """``shutdown(SHUT_RD)``. On a unix socket the client's next write fails (EPIPE)."""

    timeout: float | None = None


@dataclass(frozen=True)
class Reset:
    """``SO_LINGER`` 0, then close: the client gets a TCP RST. Ends the connection."""

    timeout: float | None = None


@dataclass(frozen=True)
class StartTLS:
    """Do the server side of a TLS handshake; later steps read and write through TLS."""

    context: ssl.SSLContext
    timeout: float | None = None


@dataclass(frozen=True)
class WaitForClose:
    """Read (and record) until the client closes or resets the connection."""

    timeout: float | None = None


@dataclass(frozen=True)
class Call:
    """Run ``function(connection)`` (awaited if it returns an awaitable)."""

    function: Callable[[ServerConnection], Awaitable[None] | None]
    timeout: float | None = None


Step: TypeAlias = (
    Expect
    | ExpectBytes
    | ReadAny
    | Send
    | Sleep
    | HalfClose
    | ShutdownRead
    | Reset
    | StartTLS
    | WaitForClose
    | Call
)


# ---------------------------------------------------------------------- script helpers
def login_ok(
    *,
    pid: int = 4242,
    secret: int = 0x5EC2E7,
    server_version: str = "16.0 (fake)",
    parameters: Mapping[str, str] | None = None,
    check: Callable[[Any], object] | None = None,
) -> list[Step]:
    """Expect a StartupMessage; answer AuthenticationOk, BackendKeyData,
    ParameterStatus(server_version and ``parameters``) and ReadyForQuery(I)."""
    status = {"server_version": server_version, **(parameters or {})}
    return [
        Expect(m.StartupMessage, check=check),
        Send(
            m.AuthenticationOk(),
            m.BackendKeyData(pid, secret),
            *(m.ParameterStatus(name, value) for name, value in status.items()),
            m.ReadyForQuery(m.TransactionStatus.IDLE),
        ),
    ]


def expect_query() -> list[Step]:
    """The client's half of one extended-protocol query: Parse, Bind, Describe, Execute,
    Sync (the client writes them together)."""
    return [Expect(m.Parse), Expect(m.Bind), Expect(m.Describe), Expect(m.Execute), Expect(m.Sync)]


@dataclass(frozen=True)
class FakeTLS:
    """A throw-away CA and a server certificate for 127.0.0.1 and localhost."""

    server_context: ssl.SSLContext
    ca_pem: bytes

    def write_ca(self, directory: str | os.PathLike[str]) -> str:
        """Write the CA certificate to ``directory`` and return the file's path."""
        path = Path(directory) / "fake-ca.pem"
        path.write_bytes(self.ca_pem)
        return str(path)


def make_tls(hostnames: Sequence[str] = ("127.0.0.1", "localhost")) -> FakeTLS:
    ca = trustme.CA()
    cert = ca.issue_cert(*hostnames)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return FakeTLS(context, bytes(ca.cert_pem.bytes()))


# ------------------------------------------------------------------------ connections
@dataclass(eq=False)
class ServerConnection:
    """One accepted client connection and what the script saw on it."""

    index: int
    reader: asyncio.StreamReader = field(repr=False)
    writer: asyncio.StreamWriter = field(repr=False)
    #: Every decoded message (Expect) and raw chunk (ExpectBytes, ReadAny, WaitForClose).
    received: list[m.FrontendMessage | bytes] = field(default_factory=list)
    #: Every byte read, in order (after TLS decryption once StartTLS ran).
    raw: bytearray = field(default_factory=bytearray, repr=False)
    step: int = 0
    failure: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def socket(self) -> Any:
        return self.writer.get_extra_info("socket")


class FakeServer:
    """Serve ``scripts`` (one per client connection, in order) on loopback TCP or a unix
    socket; see the module docstring."""

    def __init__(
        self,
        *scripts: Sequence[Step],
        unix: bool = False,
        unix_port: int = 5432,
        host: str = "127.0.0.1",
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
        exit_timeout: float = DEFAULT_EXIT_TIMEOUT,
        must_connect: bool = True,
    ) -> None:
        if not scripts:
            raise ValueError("FakeServer needs at least one script")
        self.scripts: list[list[Step]] = [list(s) for s in scripts]
        self.unix = unix
        self.unix_port = unix_port
        self.host = host
        self.step_timeout = step_timeout
        self.exit_timeout = exit_timeout
        #: When False, a script whose client never connected is not a failure.
        self.must_connect = must_connect
        self.connections: list[ServerConnection] = []
        #: Set once a client has connected.
        self.client_connected = asyncio.Event()
        #: Set once a step has read at least one byte from a client.
        self.bytes_seen = asyncio.Event()
        self._failures: list[str] = []
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Condition()
        self._tmpdir: str | None = None
        self._port: int | None = None
        self._closed = False

    # ------------------------------------------------------------------- addresses
    @property
    def port(self) -> int:
        """The TCP port (for a unix server: the port its socket file name encodes)."""
        if self.unix:
            return self.unix_port
        if self._port is None:
            raise RuntimeError("the fake server has not been started")
        return self._port

    @property
    def socket_dir(self) -> str:
        if self._tmpdir is None:
            raise RuntimeError("not a started unix-socket fake server")
        return self._tmpdir

    @property
    def socket_path(self) -> str:
        return os.path.join(self.socket_dir, f".s.PGSQL.{self.unix_port}")

    @property
    def server_address(self) -> tuple[str, int] | str:
        """What ``connect(server=...)`` takes: ``(host, port)`` or the socket file."""
        return self.socket_path if self.unix else (self.host, self.port)

    def connect_kwargs(self, **extra: Any) -> dict[str, Any]:
        """``postgres_async.connect`` arguments for this server (``ssl_mode="disable"``
        unless ``extra`` says otherwise)."""
        kwargs: dict[str, Any] = {
            "server": self.server_address,
            "user": "postgres",
            "database": "postgres",
            "ssl_mode": "disable",
        }
        kwargs.update(extra)
        return kwargs

    # ---------------------------------------------------------------------- results
    @property
    def received(self) -> list[m.FrontendMessage | bytes]:
        """Everything every connection's steps read, connection by connection."""
        return [item for conn in self.connections for item in conn.received]

    @property
    def failures(self) -> list[str]:
        return list(self._failures)

    async def finished(self, within: float | None = None) -> None:
        """Wait until every script has run to its end; raise FakeServerError if one failed
        (or if that takes longer than ``within`` seconds, default ``exit_timeout``)."""
        await self._wait_for_scripts(self.exit_timeout if within is None else within, True)
        self._raise_failures()

    # -------------------------------------------------------------------- lifecycle
    async def start(self) -> Self:
        if self._server is not None:
            return self
        if self.unix:
            self._tmpdir = tempfile.mkdtemp(prefix="pgfake-", dir="/tmp")
            self._server = await asyncio.start_unix_server(self._accept, path=self.socket_path)
        else:
            self._server = await asyncio.start_server(self._accept, self.host, 0)
            self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                await self._wait_for_scripts(self.exit_timeout, self.must_connect)
        finally:
            await self.aclose()
        if not self._failures:
            return
        report = self._report()
        if exc is not None:
            exc.add_note(report)
            return
        raise FakeServerError(report)

    async def aclose(self) -> None:
        """Stop listening, end every script and close every connection."""
        server, self._server = self._server, None
        self._closed = True
        if server is not None:
            server.close()
            # A connection the kernel accepted just before the close is still being set
            # up by asyncio; let it arrive so that it is closed too (_accept refuses it).
            for _ in range(_ACCEPT_GRACE_ITERATIONS):
                await asyncio.sleep(0)
        for task in self._tasks:
            task.cancel()
        for conn in self.connections:
            conn.writer.transport.abort()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in self.connections:
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
        if server is not None:
            await server.wait_closed()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # --------------------------------------------------------------------- internals
    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(len(self.connections), reader, writer)
        self.connections.append(conn)
        if self._closed:
            conn.done.set()
            writer.transport.abort()
            return
        self.client_connected.set()
        self._tasks.append(asyncio.get_running_loop().create_task(self._serve(conn)))

    async def _serve(self, conn: ServerConnection) -> None:
        try:
            if conn.index >= len(self.scripts):
                self._fail(conn, f"unexpected connection: only {len(self.scripts)} script(s)")
                conn.writer.transport.abort()
                return
            script = self.scripts[conn.index]
            for number, step in enumerate(script):
                conn.step = number
                try:
                    await self._run_step(conn, step)
                except TimeoutError:
                    timeout = getattr(step, "timeout", None) or self.step_timeout
                    self._fail(conn, f"step {number} {step!r} timed out after {timeout} s")
                    break
                except ScriptFailure as failure:
                    self._fail(conn, f"step {number} {step!r}: {failure}")
                    break
                except (OSError, EOFError, ssl.SSLError) as exc:
                    self._fail(conn, f"step {number} {step!r}: {type(exc).__name__}: {exc}")
                    break
            else:
                conn.step = len(script)
            await self._close(conn)
        finally:
            conn.done.set()
            async with self._changed:
                self._changed.notify_all()

    async def _close(self, conn: ServerConnection) -> None:
        writer = conn.writer
        if writer.transport.is_closing():
            return
        writer.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await writer.wait_closed()
        except (TimeoutError, OSError, ssl.SSLError):
            writer.transport.abort()

    def _fail(self, conn: ServerConnection, text: str) -> None:
        if conn.failure is None:
            conn.failure = text
        self._failures.append(f"connection {conn.index}: {text}")

    async def _wait_for_scripts(self, seconds: float, require_all: bool) -> None:
        def settled() -> bool:
            if require_all and len(self.connections) < len(self.scripts):
                return False
            return all(conn.done.is_set() for conn in self.connections)

        try:
            async with asyncio.timeout(seconds), self._changed:
                await self._changed.wait_for(settled)
        except TimeoutError:
            for conn in self.connections:
                if not conn.done.is_set():
                    steps = self.scripts[conn.index] if conn.index < len(self.scripts) else []
                    where = repr(steps[conn.step]) if conn.step < len(steps) else "the end"
                    self._fail(
                        conn, f"script still running after {seconds} s, at step {conn.step} {where}"
                    )
        if require_all:
            for index in range(len(self.connections), len(self.scripts)):
                self._failures.append(f"script {index}: no client connected to run it")

    def _raise_failures(self) -> None:
        if self._failures:
            raise FakeServerError(self._report())

    def _report(self) -> str:
        lines = ["fake PostgreSQL server script failed:"]
        lines += [f"  {text}" for text in self._failures]
        for conn in self.connections:
            lines.append(f"  connection {conn.index} received: {conn.received!r}")
            raw = bytes(conn.raw)
            shown = raw if len(raw) <= 200 else raw[:200] + b"..."
            lines.append(f"  connection {conn.index} raw bytes: {shown!r}")
        return "\n".join(lines)

    # ---------------------------------------------------------------------- steps
    async def _run_step(self, conn: ServerConnection, step: Step) -> None:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return
        timeout = step.timeout if step.timeout is not None else self.step_timeout
        async with asyncio.timeout(timeout):
            if isinstance(step, Expect):
                await self._expect(conn, step)
            elif isinstance(step, ExpectBytes):
                conn.received.append(await self._read_exactly(conn, step.count, "raw bytes"))
            elif isinstance(step, ReadAny):
                data = await conn.reader.read(65536)
                if not data:
                    raise ScriptFailure("the client closed the connection")
                self._record(conn, data)
                conn.received.append(data)
            elif isinstance(step, Send):
                conn.writer.write(step.data)
                await conn.writer.drain()
            elif isinstance(step, HalfClose):
                await conn.writer.drain()
                if conn.writer.can_write_eof():
                    conn.writer.write_eof()
                else:
                    conn.socket.shutdown(socket.SHUT_WR)
            elif isinstance(step, ShutdownRead):
                conn.socket.shutdown(socket.SHUT_RD)
            elif isinstance(step, Reset):
                sock = conn.socket
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.writer.transport.abort()
            elif isinstance(step, StartTLS):
                await conn.writer.start_tls(step.context)
            elif isinstance(step, WaitForClose):
                await self._wait_for_close(conn)
            else:
                result = step.function(conn)
                if result is not None:
                    await result

    def _record(self, conn: ServerConnection, data: bytes) -> None:
        conn.raw += data
        if data:
            self.bytes_seen.set()

    async def _read_exactly(self, conn: ServerConnection, count: int, what: str) -> bytes:
        try:
            data = await conn.reader.readexactly(count)
        except asyncio.IncompleteReadError as exc:
            self._record(conn, exc.partial)
            raise ScriptFailure(
                f"the client closed the connection while the server expected {what} "
                f"({len(exc.partial)} of {count} bytes arrived: {exc.partial[:64]!r})"
            ) from None
        self._record(conn, data)
        return data

    async def _expect(self, conn: ServerConnection, step: Expect) -> None:
        kind = step.kind
        what = kind.NAME
        message: m.FrontendMessage
        if kind.TYPE == b"":
            (length,) = _INT32.unpack(await self._read_exactly(conn, 4, what))
            if not 8 <= length <= MAX_FRONTEND_MESSAGE:
                raise ScriptFailure(f"startup-phase packet with nonsense length {length}")
            payload = await self._read_exactly(conn, length - 4, what)
            try:
                message = m.decode_untyped(payload)
            except PgasyncError as exc:
                raise ScriptFailure(f"undecodable startup-phase packet: {exc}") from None
        else:
            header = await self._read_exactly(conn, 5, what)
            type_byte = header[:1]
            (length,) = _INT32.unpack_from(header, 1)
            if not 4 <= length <= MAX_FRONTEND_MESSAGE:
                raise ScriptFailure(f"message {type_byte!r} with nonsense length {length}")
            payload = await self._read_exactly(conn, length - 4, what)
            if type_byte != kind.TYPE:
                conn.received.append(header + payload)
                raise ScriptFailure(
                    f"expected {what} ({kind.TYPE!r}), got type {type_byte!r}: "
                    f"{_describe_frontend(type_byte, payload)}"
                )
            try:
                if type_byte == b"p":
                    message = kind.decode(payload)  # its meaning depends on the auth step
                else:
                    message = m.decode_frontend(type_byte[0], payload)
            except PgasyncError as exc:
                conn.received.append(header + payload)
                raise ScriptFailure(f"undecodable {what}: {exc}") from None
        conn.received.append(message)
        if not isinstance(message, kind):
            raise ScriptFailure(f"expected {what}, got {message!r}")
        if step.check is not None:
            try:
                verdict = step.check(message)
            except AssertionError as exc:
                raise ScriptFailure(f"check failed for {message!r}: {exc}") from None
            if verdict is False:
                raise ScriptFailure(f"check rejected {message!r}")

    async def _wait_for_close(self, conn: ServerConnection) -> None:
        while True:
            try:
                data = await conn.reader.read(65536)
            except (ConnectionError, ssl.SSLError):
                return  # a reset or a TLS connection cut short is a close too
            if not data:
                return
            self._record(conn, data)
            conn.received.append(data)


def _describe_frontend(type_byte: bytes, payload: bytes) -> str:
    with contextlib.suppress(PgasyncError):
        return repr(m.decode_frontend(type_byte[0], payload))
    return repr(type_byte + payload[:64])
