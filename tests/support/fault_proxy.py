"""A TCP fault proxy on loopback, between a client and a real server.

It forwards bytes faithfully until told to misbehave::

    async with FaultProxy(*pg_server_address) as proxy:     # listens on 127.0.0.1:<free>
        conn = await pg.connect(**proxy.connect_kwargs(server_kwargs))
        proxy.black_hole()                  # both directions: forward nothing, keep sockets
        ...
        proxy.resume()                      # plain forwarding again; held bytes go out

Directions are ``"upstream"`` (client to server), ``"downstream"`` (server to client) and
``"both"``. Every control is synchronous, may be called at any time, and applies to every
connection open now and, unless ``new_connections=False``, to those accepted later:

* ``black_hole(direction)``: stop reading the source socket and hold what was read; the
  sockets stay open (a black hole that heals loses nothing, like TCP across an outage).
* ``resume(direction)``: plain forwarding; clears black hole, dribble, coalesce and cut.
* ``dribble(delay, direction)``: forward in 1-byte writes (TCP_NODELAY), ``delay`` s apart.
* ``coalesce(delay, direction)``: hold data for ``delay`` s after it arrives and write what
  accumulated in one write.
* ``cut_after(n_bytes, direction)``: forward exactly ``n_bytes`` more bytes that way (each
  connection counts its own), wait until the receiving kernel has acknowledged them, then
  reset both sides. ``n_bytes=0`` cuts at once.
* ``reset()``: RST (``SO_LINGER`` 0) both sides of every open connection.

Listener modes: ``forward()`` (the default), ``refuse()`` (accept and close each
connection at once), ``deaf()`` (never accept: connections wait in the listen backlog)
and ``deaf(accept=True)`` (accept, never read or answer).

Bytes forwarded and the writes that carried them are counted (``bytes_up``,
``bytes_down``, ``writes_up``, ``writes_down``, and per connection in ``connections``);
with ``record=True`` each connection also keeps the forwarded bytes
(``ProxyConnection.forwarded(direction)``), e.g. to parse what the client was given.

Bounds: every wait is bounded by the proxy's ``lifetime`` (a watchdog resets everything
and makes the exit raise), connections by ``max_connections``, held bytes per direction
by a high-water mark (reading pauses above it), recorded bytes by ``record_limit``.
Leaving the ``async with`` block closes the listener and every socket and awaits every
task; failures of the proxy itself (not of the traffic) are raised there as
:class:`FaultProxyError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import socket
import struct
import termios
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

__all__ = ["Direction", "FaultProxy", "FaultProxyError", "OneWay", "ProxyConnection"]

Direction: TypeAlias = Literal["upstream", "downstream", "both"]
OneWay: TypeAlias = Literal["upstream", "downstream"]
_Mode: TypeAlias = Literal["forward", "refuse", "deaf", "deaf-accept"]

DEFAULT_LIFETIME = 60.0
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_RECORD_LIMIT = 64 << 20
# Bytes held per direction before the source stops being read.
HIGH_WATER = 1 << 20
CONNECT_TIMEOUT = 5.0
# How long a cut waits for the receiver's kernel to acknowledge the last bytes.
CUT_DRAIN_TIMEOUT = 2.0
_CUT_POLL = 0.001
# Passes of one direction's forwarding loop (a write or a wake-up each) before the proxy
# gives up on it as runaway: a 1-byte dribble of 50 MB would be absurd in a test.
MAX_PASSES = 50_000_000
_CLOSE_TIMEOUT = 2.0
_ACCEPTS_PER_WAKEUP = 16
_LINGER_ZERO = struct.pack("ii", 1, 0)
_INT = struct.Struct("i")


class FaultProxyError(AssertionError):
    """The proxy itself failed (not the traffic it carried), or outlived its lifetime."""


@dataclasses.dataclass
class _Policy:
    """How one direction of one connection forwards."""

    black_hole: bool = False
    dribble: float | None = None
    coalesce: float | None = None
    cut: int | None = None  # bytes still to forward before cutting

    def copy(self) -> _Policy:
        return dataclasses.replace(self)


def _directions(direction: Direction) -> tuple[OneWay, ...]:
    if direction == "both":
        return ("upstream", "downstream")
    if direction == "upstream":
        return ("upstream",)
    if direction == "downstream":
        return ("downstream",)
    raise ValueError(f"direction must be 'upstream', 'downstream' or 'both', not {direction!r}")


def _unacknowledged(transport: asyncio.Transport) -> int:
    """Bytes written to the socket that the peer's kernel has not acknowledged (Linux
    SIOCOUTQ) plus what the transport still buffers; 0 once the socket is gone."""
    pending = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is None or sock.fileno() < 0:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(_INT.size))
    except OSError:
        return pending
    queued: int = _INT.unpack(raw)[0]
    return pending + queued


def _reset_transport(transport: asyncio.Transport | None) -> None:
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


def _reset_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    sock.close()


class _End(asyncio.Protocol):
    """One socket of a proxied pair; what it receives goes into its outgoing pipe."""

    def __init__(self, link: ProxyConnection, side: Literal["client", "server"]) -> None:
        self.link = link
        self.side = side
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.link._end_made(self)

    def data_received(self, data: bytes) -> None:
        self.link._received(self, data)

    def eof_received(self) -> bool:
        self.link._eof(self)
        return True  # keep the other half open until the EOF has been passed on

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.link._lost(self, exc)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.link._wake_all()

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()


class _Pipe:
    """One direction of one connection: a holding buffer and the task that empties it."""

    def __init__(
        self,
        link: ProxyConnection,
        direction: OneWay,
        source: _End,
        dest: _End,
        policy: _Policy,
    ) -> None:
        self.link = link
        self.direction = direction
        self.source = source
        self.dest = dest
        self.policy = policy
        self.pending = bytearray()
        self.eof = False
        self.finished = False
        self.forwarded_count = 0
        self.write_count = 0
        self.record: bytearray | None = bytearray() if link._proxy.record else None
        self.record_truncated = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"fault-proxy #{self.link.index} {self.direction}"
        )

    def poke(self) -> None:
        self.wake.set()
        self.update_reading()

    def update_reading(self) -> None:
        """Read the source only while forwarding and not holding too much."""
        transport = self.source.transport
        if transport is None or transport.is_closing():
            return
        want = (
            not self.policy.black_hole
            and not self.eof
            and len(self.pending) < HIGH_WATER
            and not self.dest.write_paused
            and self.policy.cut != 0
        )
        if want and not transport.is_reading():
            transport.resume_reading()
        elif not want and transport.is_reading():
            transport.pause_reading()

    def _can_write(self) -> bool:
        if self.link.closing or not self.dest.open:
            return False
        if self.policy.cut == 0:
            return True  # the cut itself
        if self.policy.black_hole or self.dest.write_paused:
            return False
        return bool(self.pending) or self.eof

    async def _run(self) -> None:
        proxy = self.link._proxy
        try:
            await self._forward()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the proxy, not a network event
            proxy._record_error(f"pipe {self.direction} of connection #{self.link.index}", exc)
            self.link.reset()

    async def _forward(self) -> None:
        # One pass per write (or per wake-up while nothing can be written); the count is
        # capped here and the time by the proxy's lifetime watchdog.
        for _ in range(MAX_PASSES):
            if not self._can_write():
                if self.link.closing:
                    return
                self.wake.clear()
                await self.wake.wait()
                continue
            policy = self.policy
            if policy.cut == 0:
                await self.link._cut(self.dest)
                return
            if not self.pending:  # EOF with everything passed on
                assert self.dest.transport is not None
                if self.dest.transport.can_write_eof():
                    self.dest.transport.write_eof()
                self.finished = True
                self.link._pipe_finished()
                return
            if policy.coalesce is not None:
                await asyncio.sleep(policy.coalesce)  # let more arrive, then all at once
                if not self._can_write() or policy.coalesce is None or policy.cut == 0:
                    continue
                size = len(self.pending)
            elif policy.dribble is not None:
                size = 1
            else:
                size = len(self.pending)
            if policy.cut is not None:
                size = min(size, policy.cut)
            if size == 0:
                continue
            self._write(bytes(self.pending[:size]))
            del self.pending[:size]
            if policy.cut is not None:
                policy.cut -= size
            self.update_reading()
            if policy.dribble is not None and policy.cut != 0:
                await asyncio.sleep(policy.dribble)
        raise OverflowError(f"more than {MAX_PASSES} passes forwarding one direction")

    def _write(self, data: bytes) -> None:
        assert self.dest.transport is not None
        self.dest.transport.write(data)
        self.forwarded_count += len(data)
        self.write_count += 1
        self.link._proxy._count(self.direction, len(data))
        record = self.record
        if record is not None and not self.record_truncated:
            if len(record) + len(data) > self.link._proxy.record_limit:
                self.record_truncated = True
            else:
                record += data


class ProxyConnection:
    """One client connection through the proxy (information for tests; read-only)."""

    def __init__(self, proxy: FaultProxy, index: int) -> None:
        self._proxy = proxy
        self.index = index
        self.client = _End(self, "client")
        self.server = _End(self, "server")
        self.closing = False
        #: True once the proxy reset it (reset(), cut_after or a peer's reset passed on).
        self.was_reset = False
        #: Forwarded bytes the receiver had not acknowledged when a cut reset it (they
        #: were lost); 0 when the cut came after the receiver had taken everything.
        self.unacknowledged_at_cut = 0
        self.up = _Pipe(self, "upstream", self.client, self.server, proxy._policy("upstream"))
        self.down = _Pipe(self, "downstream", self.server, self.client, proxy._policy("downstream"))

    def __repr__(self) -> str:
        state = "reset" if self.was_reset else "closing" if self.closing else "open"
        return f"<ProxyConnection #{self.index} {state} up={self.bytes_up} down={self.bytes_down}>"

    @property
    def bytes_up(self) -> int:
        return self.up.forwarded_count

    @property
    def bytes_down(self) -> int:
        return self.down.forwarded_count

    @property
    def closed(self) -> bool:
        """Both sockets are closed."""
        return self.client.lost.done() and self.server.lost.done()

    def forwarded(self, direction: OneWay) -> bytes:
        """Every byte forwarded that way so far (the proxy needs ``record=True``)."""
        pipe = self._pipe(direction)
        if pipe.record is None:
            raise FaultProxyError("the proxy was created without record=True")
        if pipe.record_truncated:
            raise FaultProxyError(f"more than record_limit bytes went {direction}")
        return bytes(pipe.record)

    def _pipe(self, direction: OneWay) -> _Pipe:
        if direction == "upstream":
            return self.up
        if direction == "downstream":
            return self.down
        raise ValueError(f"direction must be 'upstream' or 'downstream', not {direction!r}")

    def _pipes(self) -> tuple[_Pipe, _Pipe]:
        return (self.up, self.down)

    # ------------------------------------------------------------------ events
    def _end_made(self, end: _End) -> None:
        for pipe in self._pipes():
            if pipe.source is end:
                pipe.update_reading()

    def _received(self, end: _End, data: bytes) -> None:
        pipe = self.up if end is self.client else self.down
        if self.closing:
            return
        pipe.pending += data
        pipe.poke()

    def _eof(self, end: _End) -> None:
        pipe = self.up if end is self.client else self.down
        pipe.eof = True
        pipe.poke()

    def _lost(self, end: _End, exc: Exception | None) -> None:
        if self.closing:
            return
        other = self.server if end is self.client else self.client
        if exc is not None:
            # The peer reset (or the socket failed): pass the reset on.
            self.reset()
            return
        self.closing = True
        if other.transport is not None and not other.transport.is_closing():
            other.transport.close()  # flushes what was written, then FIN
        self._wake_all()

    def _pipe_finished(self) -> None:
        if self.up.finished and self.down.finished and not self.closing:
            self.closing = True
            for end in (self.client, self.server):
                if end.transport is not None:
                    end.transport.close()
            self._wake_all()

    def _wake_all(self) -> None:
        for pipe in self._pipes():
            pipe.poke()

    # ----------------------------------------------------------------- actions
    def start(self) -> None:
        for pipe in self._pipes():
            pipe.start()
            pipe.update_reading()

    def reset(self) -> None:
        """RST both sides now."""
        if self.was_reset:
            return
        self.was_reset = True
        self.closing = True
        for end in (self.client, self.server):
            _reset_transport(end.transport)
        for pipe in self._pipes():
            pipe.pending.clear()
            pipe.wake.set()

    async def _cut(self, dest: _End) -> None:
        """Wait (bounded) until ``dest``'s peer has acknowledged every forwarded byte,
        so the count of forwarded bytes is what it received, then reset both sides."""
        transport = dest.transport
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CUT_DRAIN_TIMEOUT
        if transport is not None:
            # The kernel does not signal acknowledgements: poll, bounded in count and time.
            for _ in range(int(CUT_DRAIN_TIMEOUT / _CUT_POLL)):
                if not _unacknowledged(transport) or transport.is_closing():
                    break
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(_CUT_POLL)
            self.unacknowledged_at_cut = _unacknowledged(transport)
        self.reset()

    def _socket_fds(self) -> set[int]:
        fds: set[int] = set()
        for end in (self.client, self.server):
            if end.transport is not None and not end.lost.done():
                sock = end.transport.get_extra_info("socket")
                if sock is not None and sock.fileno() >= 0:
                    fds.add(sock.fileno())
        return fds

    async def _close(self) -> None:
        self.closing = True
        for end in (self.client, self.server):
            if end.transport is not None and not end.transport.is_closing():
                end.transport.abort()
        tasks = [p.task for p in self._pipes() if p.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ends = [e.lost for e in (self.client, self.server) if e.transport is not None]
        if ends:
            await asyncio.wait(ends, timeout=_CLOSE_TIMEOUT)


class FaultProxy:
    """A misbehaving TCP proxy on 127.0.0.1 in front of ``target_host:target_port``.

    Use as an async context manager in the test's event loop.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        record: bool = False,
        record_limit: int = DEFAULT_RECORD_LIMIT,
        lifetime: float = DEFAULT_LIFETIME,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        backlog: int = 8,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.record = record
        self.record_limit = record_limit
        self.lifetime = lifetime
        self.max_connections = max_connections
        self.backlog = backlog
        self.host = "127.0.0.1"
        self.connections: list[ProxyConnection] = []
        #: Client connections accepted in ``refuse`` mode and closed at once.
        self.refused = 0
        self.bytes_up = 0
        self.bytes_down = 0
        #: Socket writes the proxy made each way (a dribble makes one per byte).
        self.writes_up = 0
        self.writes_down = 0
        self.errors: list[str] = []
        self._port: int | None = None
        self._mode: _Mode = "forward"
        self._defaults: dict[OneWay, _Policy] = {"upstream": _Policy(), "downstream": _Policy()}
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._deaf_sockets: list[socket.socket] = []
        self._openers: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._expired = False
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<FaultProxy {self.host}:{self._port} -> {self.target_host}:{self.target_port} "
            f"{self._mode} connections={len(self.connections)}>"
        )

    # -------------------------------------------------------------- addresses
    @property
    def port(self) -> int:
        if self._port is None:
            raise FaultProxyError("the proxy is not running")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def connect_kwargs(self, base: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """``base`` (keyword arguments for ``postgres_async.connect``) pointed at the proxy."""
        kwargs = dict(base or {})
        kwargs.pop("host", None)
        kwargs.pop("port", None)
        kwargs["server"] = self.address
        kwargs.update(extra)
        return kwargs

    # --------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Self:
        if self._loop is not None:
            raise FaultProxyError("a FaultProxy can be entered once")
        loop = asyncio.get_running_loop()
        self._loop = loop
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, 0))
            listener.listen(self.backlog)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._watchdog = loop.call_later(self.lifetime, self._expire)
        self._set_accepting(True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        problems = list(self.errors)
        if self._expired:
            problems.append(f"the proxy outlived its lifetime of {self.lifetime} s")
        if not problems:
            return
        text = "fault proxy failures:\n" + "\n".join(problems)
        if exc is None:
            raise FaultProxyError(text)
        exc.add_note(text)

    async def aclose(self) -> None:
        """Close the listener and every socket; await every task. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._set_accepting(False)
        if self._listener is not None:
            self._listener.close()
        for task in self._openers:
            task.cancel()
        for task in list(self._openers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for link in self.connections:
            await link._close()
        for sock in self._deaf_sockets:
            sock.close()
        self._deaf_sockets.clear()

    def _expire(self) -> None:
        self._expired = True
        self._set_accepting(False)
        for link in self.connections:
            link.reset()

    def _record_error(self, where: str, exc: BaseException) -> None:
        self.errors.append(f"{where}: {exc!r}")

    def _count(self, direction: OneWay, size: int) -> None:
        if direction == "upstream":
            self.bytes_up += size
            self.writes_up += 1
        else:
            self.bytes_down += size
            self.writes_down += 1

    # --------------------------------------------------------------- listener
    def _set_accepting(self, on: bool) -> None:
        loop = self._loop
        listener = self._listener
        if loop is None or listener is None:
            return
        if on and not self._accepting and not self._closed and not self._expired:
            loop.add_reader(listener.fileno(), self._on_acceptable)
            self._accepting = True
        elif not on and self._accepting:
            loop.remove_reader(listener.fileno())
            self._accepting = False

    def _on_acceptable(self) -> None:
        listener = self._listener
        assert listener is not None
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                sock, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._record_error("accept", exc)
                return
            self._accepted(sock)

    def _accepted(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        mode = self._mode
        if mode == "refuse":
            self.refused += 1
            sock.close()
        elif mode == "deaf-accept":
            self._deaf_sockets.append(sock)
        elif len(self.connections) >= self.max_connections:
            self._record_error("accept", OverflowError("more than max_connections connections"))
            _reset_socket(sock)
        else:
            link = ProxyConnection(self, len(self.connections))
            self.connections.append(link)
            assert self._loop is not None
            task = self._loop.create_task(
                self._open(link, sock), name=f"fault-proxy #{link.index} connect"
            )
            self._openers.add(task)
            task.add_done_callback(self._openers.discard)

    async def _open(self, link: ProxyConnection, client_sock: socket.socket) -> None:
        """Connect to the target, then start forwarding; the client is reset if the
        target cannot be reached."""
        loop = asyncio.get_running_loop()
        handed_over = False
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await loop.create_connection(
                        lambda: link.server, self.target_host, self.target_port
                    )
            except (OSError, TimeoutError):
                link.was_reset = True
                link.closing = True
                return
            if link.closing:  # reset while connecting
                _reset_transport(link.server.transport)
                return
            await loop.connect_accepted_socket(lambda: link.client, client_sock)
            handed_over = True
            link.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._record_error(f"opening connection #{link.index}", exc)
            link.reset()
        finally:
            if not handed_over:
                _reset_socket(client_sock)

    # ------------------------------------------------------------------- modes
    def forward(self) -> None:
        """Accept and forward connections (the default)."""
        self._mode = "forward"
        self._set_accepting(True)

    def refuse(self) -> None:
        """Accept each new connection and close it at once."""
        self._mode = "refuse"
        self._set_accepting(True)

    def deaf(self, accept: bool = False) -> None:
        """Never answer new connections: leave them in the listen backlog, or with
        ``accept=True`` accept them and never read. Open connections are untouched."""
        self._mode = "deaf-accept" if accept else "deaf"
        self._set_accepting(accept)

    # ---------------------------------------------------------------- controls
    def _policy(self, direction: OneWay) -> _Policy:
        return self._defaults[direction].copy()

    def _apply(self, direction: Direction, new_connections: bool, **changes: Any) -> None:
        for one_way in _directions(direction):
            targets: list[_Policy] = [link._pipe(one_way).policy for link in self.connections]
            if new_connections:
                targets.append(self._defaults[one_way])
            for policy in targets:
                for name, value in changes.items():
                    setattr(policy, name, value)
        for link in self.connections:
            link._wake_all()

    def black_hole(self, direction: Direction = "both", *, new_connections: bool = True) -> None:
        """Stop forwarding (hold what was read, stop reading); keep the sockets open."""
        self._apply(direction, new_connections, black_hole=True)

    def resume(self, direction: Direction = "both", *, new_connections: bool = True) -> None:
        """Plain forwarding again (held bytes go out); clears every other control."""
        self._apply(
            direction, new_connections, black_hole=False, dribble=None, coalesce=None, cut=None
        )

    def dribble(
        self, delay: float = 0.0, direction: Direction = "both", *, new_connections: bool = True
    ) -> None:
        """Forward one byte per write, ``delay`` seconds apart."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self._apply(direction, new_connections, dribble=delay, coalesce=None)

    def coalesce(
        self, delay: float = 0.05, direction: Direction = "both", *, new_connections: bool = True
    ) -> None:
        """Hold data ``delay`` seconds after it arrives, then write all held in one go."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self._apply(direction, new_connections, coalesce=delay, dribble=None)

    def cut_after(self, n_bytes: int, direction: OneWay, *, new_connections: bool = True) -> None:
        """Forward exactly ``n_bytes`` more bytes in ``direction``, then reset both sides."""
        if n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")
        if direction not in ("upstream", "downstream"):
            raise ValueError("cut_after needs one direction: 'upstream' or 'downstream'")
        self._apply(direction, new_connections, cut=n_bytes)

    def reset(self) -> None:
        """RST both sides of every open connection (new ones are not affected)."""
        for link in self.connections:
            link.reset()

    # ------------------------------------------------------------------ queries
    def socket_fds(self) -> set[int]:
        """File descriptors of the sockets the proxy holds open now (listener included),
        so a test can tell its own leftover sockets from the proxy's."""
        fds: set[int] = set()
        if self._listener is not None and self._listener.fileno() >= 0:
            fds.add(self._listener.fileno())
        for link in self.connections:
            fds |= link._socket_fds()
        fds |= {sock.fileno() for sock in self._deaf_sockets if sock.fileno() >= 0}
        return fds

    def forwarded(self, direction: OneWay, connection: int = -1) -> bytes:
        """The bytes one connection (default: the last) forwarded (``record=True``)."""
        if not self.connections:
            raise FaultProxyError("no connection went through the proxy")
        return self.connections[connection].forwarded(direction)
