"""The public Connection: login, the FIFO of operations, status, close, callbacks.

How a connection works
----------------------
* Every operation (query, query_expect_no_data, COPY, simple query) is an
  ``_Operation`` in a FIFO. Its messages are written in one go (Parse, Bind, Describe,
  Execute, Sync) and it owns every server message up to its ReadyForQuery. Because each
  ends with Sync and is read to ReadyForQuery whatever happens, a server error in one
  never leaks into the next.
* Plain statements are pipelined: written behind unfinished ones rather than after
  them. Anything that could start COPY FROM STDIN is written only when the wire is free
  and nothing is written behind it (a COPY would read what follows as data).
* Reading never stops while the connection is open, so notifications, ParameterStatus,
  notices and the server's goodbye (EOF, a FATAL error) are seen while idle too. The
  only pause is pushback: while a user's pushback is pending the socket is not read, so
  TCP flow control holds the server back.
* Received bytes are handled inside ``data_arrived`` with no task switch: all complete
  DataRows in the buffer are decoded as one batch and given to ``handle_row`` in a loop.
* A cancelled caller gets its CancelledError at once; its statement is cancelled with a
  CancelRequest and drained in the background. Nothing more is written before the
  server has closed the cancel connection, so a cancel never reaches a statement sent
  after it; for one already pipelined behind, see ``Connection._send_cancel_for``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import itertools
import logging
import re
import warnings
import weakref
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeAlias, TypeVar

from . import _accel, _copy_binary, _values
from ._transport.stream import (
    CONNECTION_DOES_NOT_EXIST,
    UNABLE_TO_CONNECT,
    Stream,
    describe_address,
    open_stream,
    send_cancel_request,
    set_keepalive,
)
from .auth import (
    ScramAuthenticationError,
    ScramError,
    ScramMechanismError,
    ScramSha256,
    md5_password_message,
    tls_server_end_point,
)
from .config import ConnectConfig, resolve_config
from .errors import PgasyncError, client_error
from .protocol import messages as m
from .protocol.machines import (
    TRANSACTION_STATUS_BY_BYTE,
    AuthRequested,
    Completed,
    CopyInStart,
    CopyOutData,
    CopyOutStart,
    KeyReceived,
    LoginConversation,
    OrdinaryReply,
    QueryConversation,
    QueryEvent,
    QueryPhase,
    Ready,
    RowsStart,
    ServerError,
    SimpleQueryConversation,
    describe_rows,
    known_columns_of,
)
from .protocol.messages import ColumnMetadata, TransactionStatus

logger = logging.getLogger("postgres_async")

PROTOCOL_VIOLATION = "08P01"
CONNECTION_EXCEPTION = "08000"
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"
QUERY_CANCELED = "57014"
INVALID_SQL_STATEMENT_NAME = "26000"
FEATURE_NOT_SUPPORTED = "0A000"
CLOSE_TIMEOUT = 1.0
# Rows decoded per batch at most; bounds the latency of one data_received call.
ROW_BATCH = 4096

_NOTICE = ord("N")
_PARAMETER_STATUS = ord("S")
_NOTIFICATION = ord("A")
_ASYNC_TYPES = frozenset((_NOTICE, _PARAMETER_STATUS, _NOTIFICATION))


# ------------------------------------------------------------------------ public values
@dataclass(frozen=True, slots=True)
class Open:
    pass


@dataclass(frozen=True, slots=True)
class Closing:
    pass


@dataclass(frozen=True, slots=True)
class Failed:
    error: PgasyncError
    resources_released: bool


@dataclass(frozen=True, slots=True)
class ClosedGracefully:
    pass


Status: TypeAlias = Open | Closing | Failed | ClosedGracefully
_LIVE = (Open, Closing)  # the states in which operations may still be written


@dataclass(frozen=True, slots=True)
class CommandComplete:
    """The server's completion tag: ``"INSERT 0 5"`` gives ``("INSERT", 5)``."""

    tag: str
    rows: int | None

    @classmethod
    def parse(cls, raw: str) -> CommandComplete:
        if not raw:
            return cls("", None)  # the empty query
        head, sep, last = raw.rpartition(" ")
        if not sep or not last.isdigit():
            return cls(raw, None)
        count = int(last)
        # INSERT reports "INSERT <oid> <rows>"; the oid is always 0 nowadays.
        tag, sep2, maybe_oid = head.rpartition(" ")
        if sep2 and maybe_oid.isdigit():
            return cls(tag, count)
        return cls(head, count)


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Data(Generic[T]):
    chunk: T


@dataclass(frozen=True, slots=True)
class Wait:
    awaitable: Awaitable[Any]


@dataclass(frozen=True, slots=True)
class Abort:
    reason: str


@dataclass(frozen=True, slots=True)
class Finished:
    pass


FeedResult: TypeAlias = Data[T] | Wait | Abort | Finished
Feed: TypeAlias = (
    Callable[[], FeedResult[T] | Awaitable[FeedResult[T]]] | Iterable[T] | AsyncIterable[T]
)
HandleRow: TypeAlias = Callable[[tuple[str, ...], tuple[str | None, ...]], None]
HandleColumns: TypeAlias = Callable[[tuple[ColumnMetadata, ...]], None]
Pushback: TypeAlias = Callable[[], Awaitable[None] | None]
NotificationCallback: TypeAlias = Callable[[int, str], None]


def _previously_failed(error: PgasyncError) -> PgasyncError:
    return client_error(
        CONNECTION_DOES_NOT_EXIST,
        "query issued against previously-failed connection",
        original_error=error,
    )


# ------------------------------------------------------------------------- operations
class _Mode:
    QUERY = 0
    EXPECT_NO_DATA = 1
    COPY_IN = 2
    COPY_OUT = 3
    SIMPLE = 4


@dataclass(frozen=True, slots=True)
class SimpleQueryResult:
    """What a simple-protocol string did: one CommandComplete per statement, and the
    warnings for what was refused (COPY TO STDOUT output, which is drained)."""

    commands: tuple[CommandComplete, ...]
    warnings: tuple[str, ...]


class _Statement:
    """A statement of the statement cache, prepared on the server under ``name``."""

    __slots__ = ("known_columns", "name", "ready", "result_fixed", "rows_start")

    def __init__(self, name: bytes, sql: str) -> None:
        self.name = name
        # Its ParseComplete has arrived: later queries may bind it without a Parse.
        self.ready = False
        # Once a Describe of it has been answered (known_columns, scan_reply's argument,
        # is then no longer -1), later queries send none and take its columns (None: it
        # returns no rows) from here. Only for a statement the server
        # plans: a schema change cannot make that stale unseen, as the server then
        # refuses to bind it (0A000). A utility statement's columns are worked out
        # anew at each run (EXECUTE and FETCH depend on what they name), so those are
        # always described.
        self.result_fixed = _result_is_fixed(sql)
        self.rows_start: RowsStart | None = None
        self.known_columns = -1

    def learn(self, rows_start: RowsStart | None) -> None:
        """A Describe of it was answered with ``rows_start`` (None: NoData)."""
        if self.result_fixed:
            self.rows_start = rows_start
            self.known_columns = known_columns_of(rows_start)


# Operations completed by an early read since a caller last waited for the loop (all
# connections of the process together; see Connection._early_read_allowed).
_EARLY_STREAK_LIMIT = 32
_EARLY_HOLD = 64
# Rows of a statement exposed to a stray cancel of ours wait until it completes (see
# Connection._deliver_rows); past this many they go to the caller, so that a huge result
# cannot pile up in memory. A stray cancel landing later then surfaces as 57014.
_HELD_ROWS_LIMIT = 100_000
_early_streak = 0


class _Operation:
    """One extended-query exchange, from its first message to its ReadyForQuery.

    Rarely used attributes are class-level defaults, so building one per query (tens of
    thousands a second) sets only the few that every operation needs.
    """

    handle_row: HandleRow | None = None
    handle_columns: HandleColumns | None = None
    handle_data: Callable[[bytes], Awaitable[None] | None] | None = None
    pushback: Pushback | None = None
    column_names: tuple[str, ...] = ()
    command: CommandComplete | None = None
    commands: list[CommandComplete]
    warnings: list[str]
    error: PgasyncError | None = None
    user_exception: BaseException | None = None
    pending_rows: collections.deque[tuple[str | None, ...]] | None = None
    pushback_task: asyncio.Future[Any] | None = None
    rows_seen = 0
    sent = False
    cancel_requested = False
    cancel_sent = False
    finished = False
    copy_feed: Any = None
    copy_feeder: asyncio.Task[None] | None = None
    copy_in_finished = False
    copy_stop: asyncio.Future[None] | None = None
    # Pipelined behind an operation we sent a CancelRequest for: the cancel may land
    # on this one instead, which is then repeated (see Connection._send_cancel_for).
    exposed_to_cancel = False
    held_rows: list[tuple[str | None, ...]] | None = None
    retry = False
    # Failed by our stray cancel and queued to be sent again (see Connection._requeue);
    # only read for operations still waiting, so it is never reset.
    requeued = False
    columns_delivered = False
    tx_before: TransactionStatus = TransactionStatus.IDLE
    # Statement cache: the statement this operation binds (None: the unnamed one),
    # whether its Parse is in this operation, and the statements it Closes first.
    statement: _Statement | None = None
    creates_statement = False
    closes: tuple[bytes, ...] = ()

    def __init__(
        self,
        mode: int,
        sql: str,
        values: tuple[object, ...],
        wire: bytes,
        future: asyncio.Future[Any],
        parse: bool = True,
        closes: int = 0,
        described: _Statement | None = None,
    ) -> None:
        self.mode = mode
        self.sql = sql
        self.values = values
        self.wire = wire
        self.future = future
        self.conversation: QueryConversation | SimpleQueryConversation
        if mode == _Mode.SIMPLE:
            self.conversation = SimpleQueryConversation()
            self.commands = []
            self.warnings = []
        else:
            self.conversation = conversation = QueryConversation(parse, closes)
            if described is not None:  # it was sent no Describe: see _Statement
                conversation.skip_describe(described.rows_start)
        self.pipelinable = False  # set by Connection._prepare

    @property
    def parameters(self) -> tuple[str | None, ...]:
        """The parameters' text forms, for error messages: made only when one is."""
        return tuple(_values.to_text(value, "parameter") for value in self.values)

    def set_error(self, error: PgasyncError) -> None:
        """The first error of an operation is its result; later ones are consequences."""
        if self.error is None:
            error.tag_query(self.sql, self.parameters)
            self.error = error

    @property
    def callbacks_live(self) -> bool:
        return self.user_exception is None and not self.cancel_requested


# ------------------------------------------------------------------------- connection
class Connection:
    """One logged-in PostgreSQL session. Create it with ``await connect(...)``."""

    def __init__(self, stream: Stream, config: ConnectConfig, login: LoginConversation) -> None:
        self._stream = stream
        self._buffer = stream.buffer
        self._config = config
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._status: Status = Open()
        # Not yet written / written and owed replies (head first). Operations are
        # pipelined: written before the ones ahead have finished, when it is safe.
        self._waiting: collections.deque[_Operation] = collections.deque()
        self._inflight: collections.deque[_Operation] = collections.deque()
        self._unsent: list[bytes] = []
        self._flush_scheduled = False
        self._paused = False
        self._cancel_in_flight: asyncio.Task[None] | None = None
        self._released = asyncio.Event()
        self._terminate_sent = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._listeners: dict[str, list[NotificationCallback]] = {}
        self._parse_cache: dict[str, tuple[bytes, bool]] = {}
        # The statement cache (off unless statement_cache_size > 0): SQL -> statement,
        # least recently used first; names of statements to Close with the next query
        # that uses the cache; a counter making each statement name new.
        self._statement_cache_size = config.statement_cache_size
        self._statements: dict[str, _Statement] = {}
        self._closes_owed: list[bytes] = []
        self._statements_named = 0
        self._tx_status = TransactionStatus.IDLE
        self._early_reads_held = 0
        self.runtime_parameters: dict[str, str] = {}
        key = login.backend_key
        self.backend_pid: int | None = key[0] if key else None
        self._secret: int | None = key[1] if key else None

    def __repr__(self) -> str:
        return (
            f"<postgres_async.Connection {describe_address(self._config)} "
            f"user={self._config.user!r} pid={self.backend_pid} {type(self._status).__name__}>"
        )

    def __del__(self, _warn: Any = warnings.warn) -> None:
        # Only the transport can leak; say so like asyncio does for unclosed transports.
        stream = getattr(self, "_stream", None)
        if stream is None or stream.transport is None or stream.transport.is_closing():
            return
        _warn(f"unclosed connection {self!r}", ResourceWarning, source=self, stacklevel=1)
        with contextlib.suppress(Exception):
            stream.abort()

    # ------------------------------------------------------------------------ status
    @property
    def status(self) -> Status:
        return self._status

    @property
    def server_version(self) -> int | None:
        """libpq's number: 15.4 -> 150004, 9.6.3 -> 90603; None if unknown."""
        return parse_server_version(self.runtime_parameters.get("server_version", ""))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await _close_after_body(self, exc is None)

    def _fail(self, error: PgasyncError) -> None:
        """The first failure wins; every pending operation learns of it."""
        if isinstance(self._status, Failed | ClosedGracefully):
            return
        self._status = Failed(error, resources_released=False)
        self._paused = False
        self._unsent.clear()
        inflight = self._inflight
        if inflight:
            head = inflight.popleft()
            self._drop_pushback(head)
            self._stop_copy_feeder(head)
            if head.error is None:
                head.set_error(error)
            self._settle(head)
        while inflight:
            op = inflight.popleft()
            op.set_error(
                client_error(
                    CONNECTION_DOES_NOT_EXIST,
                    "connection failed before the query's turn came",
                    original_error=error,
                )
            )
            self._settle(op)
        while self._waiting:
            op = self._waiting.popleft()
            op.set_error(_previously_failed(error))
            self._settle(op)
        self._stream.abort()
        if self._stream.closed.done():
            self._mark_released()

    def _mark_released(self) -> None:
        status = self._status
        if isinstance(status, Failed) and not status.resources_released:
            self._status = Failed(status.error, resources_released=True)
        self._listeners.clear()
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._released.set()

    # ------------------------------------------------------------- stream listener
    def connection_lost(self, exc: BaseException | None) -> None:
        self._pump()  # whatever whole messages arrived before the end still count
        status = self._status
        if isinstance(status, Closing) and self._terminate_sent and not self._buffer:
            self._status = ClosedGracefully()
            self._mark_released()
            return
        if not isinstance(status, Failed | ClosedGracefully):
            active = self._inflight[0] if self._inflight else None
            fatal = None
            if active is not None and active.error is not None and active.error.fields:
                fatal = active.error  # e.g. FATAL 57P01 from pg_terminate_backend
            left = len(self._buffer)
            if fatal is not None:
                error = fatal
            elif left:
                error = client_error(
                    CONNECTION_DOES_NOT_EXIST, f"Unexpected EOF (unconsumed_bytes {left})"
                )
            else:
                detail = f": {exc}" if exc is not None else ""
                error = client_error(
                    CONNECTION_DOES_NOT_EXIST, f"Unexpected EOF (no unconsumed messages){detail}"
                )
            self._fail(error)
        self._mark_released()

    def _pump(self) -> None:
        """Consume every whole message in the buffer, unless pushback holds us."""
        if self._paused or type(self._status) is Failed:
            return
        buffer = self._buffer
        inflight = self._inflight
        try:
            while not self._paused:
                op = inflight[0] if inflight else None
                if op is not None:
                    phase = op.conversation.phase
                    if phase is QueryPhase.ROWS:
                        rows = buffer.take_data_rows(len(op.column_names), ROW_BATCH)
                        if rows:
                            self._deliver_rows(op, rows)
                            continue
                    elif phase is QueryPhase.PARSING or phase is QueryPhase.BINDING:
                        if op.pushback is None:
                            reply = op.conversation.take_ordinary_reply(buffer, ROW_BATCH)
                            if reply is not None:
                                self._ordinary_reply(op, reply)
                                continue
                        if op.conversation.take_parse_bind_complete(buffer):
                            continue
                frame = buffer.next_frame()
                if frame is None:
                    return
                type_code, payload = frame
                if type_code in _ASYNC_TYPES:
                    self._asynchronous_message(type_code, payload)
                    continue
                if op is None:
                    self._unsolicited(m.decode_backend(type_code, payload))
                    return
                event = op.conversation.handle_frame(type_code, payload)
                if event is not None:
                    self._on_event(op, event)
        except PgasyncError as error:
            if self._terminate_sent and not self._inflight:
                # After Terminate only EOF may come; say that, whatever the bytes were.
                error = client_error(
                    CONNECTION_EXCEPTION,
                    f"close: EOF expected, but got {buffer.unconsumed()[:129]!r}",
                    original_error=error,
                )
            self._fail(error)

    data_arrived = _pump  # the StreamListener hook: one call less per reply

    def _unsolicited(self, message: m.BackendMessage) -> None:
        if self._terminate_sent:
            self._fail(
                client_error(
                    CONNECTION_EXCEPTION,
                    f"close: EOF expected, but got a {message.NAME} message",
                )
            )
        elif isinstance(message, m.ErrorResponse):
            error = PgasyncError.from_fields(
                message.fields,
                phase="ErrorResponse received asynchronously, assuming connection is dead",
            )
            self._fail(error)
        else:
            self._fail(
                client_error(
                    PROTOCOL_VIOLATION,
                    "Unsolicited message from server outside of query conversation: "
                    f"{message.NAME}",
                )
            )

    def _asynchronous_message(self, type_code: int, payload: bytes) -> None:
        if type_code == _PARAMETER_STATUS:
            status = m.ParameterStatus.decode(payload)
            self.runtime_parameters[status.name] = status.value
        elif type_code == _NOTIFICATION:
            note = m.NotificationResponse.decode(payload)
            callbacks = self._listeners.get(note.channel)
            if not callbacks:
                logger.error(
                    "Postgres NotificationResponse on channel that no callbacks are "
                    "listening to (channel %s)",
                    note.channel,
                )
                return
            for callback in tuple(callbacks):
                try:
                    callback(note.pid, note.payload)
                except Exception:
                    logger.exception("notification callback for channel %s raised", note.channel)
        else:
            notice = m.NoticeResponse.decode(payload)
            logger.info("Postgres NoticeResponse: %s", _format_fields(notice.fields))

    # --------------------------------------------------------------- operation flow
    def _on_event(self, op: _Operation, event: QueryEvent) -> None:
        kind = type(event)
        # The events of every query first, by identity: this runs several times a query.
        if kind is Ready:
            self._tx_status = event.status  # type: ignore[union-attr]
            self._finish(op)
            return
        if kind is Completed:
            self._completed(op, event.tag)  # type: ignore[union-attr]
            return
        if isinstance(event, RowsStart):
            op.column_names = event.names
            if (
                op.mode in _DELIVERS_ROWS
                and op.handle_columns is not None
                and op.callbacks_live
                and not op.columns_delivered
            ):
                # Once per statement, even when a stray cancel makes us run it again;
                # a simple query has one description per result set, each delivered.
                op.columns_delivered = op.mode == _Mode.QUERY
                try:
                    op.handle_columns(event.columns)
                except Exception as exc:
                    op.user_exception = exc
        elif isinstance(event, CopyInStart):
            self._copy_in_started(op)
        elif isinstance(event, CopyOutStart):
            if op.mode == _Mode.SIMPLE:
                op.warnings.append(
                    "Command ignored: COPY TO STDOUT is not appropriate for simple_query"
                )
            elif op.mode != _Mode.COPY_OUT:
                if op.mode == _Mode.EXPECT_NO_DATA:
                    text = "query attempted COPY OUT"
                else:
                    text = "COPY TO STDOUT is not appropriate for query"
                op.set_error(client_error("0A000", text))
        elif isinstance(event, CopyOutData):
            # Other modes drain it: the statement's side effects stand, its output not.
            if op.mode == _Mode.COPY_OUT and op.callbacks_live:
                self._deliver_copy_data(op, event.data)
        elif isinstance(event, ServerError):
            if op.exposed_to_cancel and _hit_by_our_cancel(op, event):
                op.retry = True  # our stray cancel: run it again, as if untouched
                op.held_rows = None
                return
            self._release_held_rows(op)
            if op.statement is not None and self._stale_statement(op, event):
                return
            error = PgasyncError.from_fields(event.fields, phase=event.phase)
            op.set_error(error)
            if op.conversation.phase is QueryPhase.AWAIT_READY and op.copy_feeder is not None:
                # The server now discards everything up to a Sync: stop feeding, send it.
                self._stop_copy_feeder(op)
                if not op.copy_in_finished:
                    op.copy_in_finished = True
                    self._write(m.Sync().encode())

    def _ordinary_reply(self, op: _Operation, reply: OrdinaryReply) -> None:
        """A whole reply taken in one step: the same effects as its messages one by one."""
        columns, rows, tag, status = reply
        if columns is not None:
            if op.handle_columns is None:
                op.column_names = columns.names
            else:
                self._on_event(op, columns)
            if rows:
                self._deliver_rows(op, rows)
        self._completed(op, tag)
        self._tx_status = status
        self._finish(op)

    def _completed(self, op: _Operation, tag: str) -> None:
        if op.exposed_to_cancel:
            self._release_held_rows(op)
        command = _COMMAND_TAGS.get(tag) or _command_complete(tag)
        op.command = command
        mode = op.mode
        if mode == _Mode.QUERY:
            return
        if mode == _Mode.SIMPLE:
            op.commands.append(command)
        elif mode in (_Mode.EXPECT_NO_DATA, _Mode.COPY_OUT) and op.rows_seen:
            op.set_error(client_error("21000", "query unexpectedly produced rows"))
        elif mode == _Mode.COPY_IN and not op.copy_in_finished:
            op.set_error(client_error("55000", "Query did not initiate copy-in mode"))

    def _copy_in_started(self, op: _Operation) -> None:
        if op.mode == _Mode.SIMPLE:
            # The simple protocol has no Sync to send: CopyFail alone ends the COPY.
            reason = "Command ignored: COPY FROM STDIN is not appropriate for simple_query"
            op.conversation.copy_in_ended()
            self._write(m.CopyFail(reason).encode())
            return
        if op.mode != _Mode.COPY_IN or op.cancel_requested:
            if op.mode in (_Mode.EXPECT_NO_DATA, _Mode.COPY_OUT):
                reason = "query attempted COPY IN"
            elif op.mode == _Mode.COPY_IN:
                reason = "operation cancelled"
            else:
                reason = "COPY FROM STDIN is not appropriate for query"
            op.set_error(client_error("0A000", reason))
            op.copy_in_finished = True
            op.conversation.copy_in_ended()
            self._write(m.CopyFail(reason).encode() + m.Sync().encode())
            return
        op.copy_stop = self._loop.create_future()
        op.copy_feeder = self._loop.create_task(self._feed_copy(op))

    def _deliver_rows(self, op: _Operation, rows: list[tuple[str | None, ...]]) -> None:
        if op.exposed_to_cancel and op.mode == _Mode.QUERY and op.callbacks_live:
            # A stray cancel of ours may still fail this statement after some rows, and
            # it is then run again: until it completes, its rows wait here, so none
            # reaches the caller twice (or from a run that then failed).
            held = op.held_rows
            if held is None:
                op.held_rows = held = []
            held.extend(rows)
            if len(held) <= _HELD_ROWS_LIMIT:
                return
            op.exposed_to_cancel = False
            op.held_rows = None
            rows = held
        op.rows_seen += len(rows)
        # callbacks_live, inlined: this runs for every batch.
        if op.mode not in _DELIVERS_ROWS or op.user_exception or op.cancel_requested:
            return
        handle_row = op.handle_row
        assert handle_row is not None
        names = op.column_names
        pushback = op.pushback
        if pushback is None:
            try:
                for row in rows:
                    handle_row(names, row)
            except Exception as exc:
                op.user_exception = exc
            return
        queue = collections.deque(rows)
        self._run_rows_with_pushback(op, queue)

    def _run_rows_with_pushback(
        self, op: _Operation, queue: collections.deque[tuple[str | None, ...]]
    ) -> None:
        """Rows one at a time, awaiting pushback after each; pause reading while it waits."""
        handle_row = op.handle_row
        pushback = op.pushback
        assert handle_row is not None
        assert pushback is not None
        names = op.column_names
        while queue:
            if not op.callbacks_live:
                queue.clear()
                break
            row = queue.popleft()
            try:
                handle_row(names, row)
                waiting = pushback()
            except Exception as exc:
                op.user_exception = exc
                break
            if waiting is None:
                continue
            if isinstance(waiting, asyncio.Future) and waiting.done():
                continue
            if not inspect.isawaitable(waiting):
                continue
            future = asyncio.ensure_future(waiting)
            if future.done():
                continue
            op.pending_rows = queue
            self._pause_until(op, future, owned=future is not waiting)
            return
        op.pending_rows = None

    def _deliver_copy_data(self, op: _Operation, data: bytes) -> None:
        handle_data = op.handle_data
        assert handle_data is not None
        try:
            waiting = handle_data(data)
        except Exception as exc:
            op.user_exception = exc
            return
        if waiting is None or not inspect.isawaitable(waiting):
            return
        future = asyncio.ensure_future(waiting)
        if not future.done():
            self._pause_until(op, future, owned=future is not waiting)

    def _pause_until(self, op: _Operation, future: asyncio.Future[Any], owned: bool) -> None:
        """Stop reading until ``future`` (a pushback) completes. ``owned``: we wrapped
        the caller's coroutine in this task, so it is ours to cancel if the caller goes."""
        op.pushback_task = future if owned else None
        self._paused = True
        self._stream.pause_reading()
        future.add_done_callback(lambda f: self._pushback_done(op, f))

    def _pushback_done(self, op: _Operation, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None and op.callbacks_live:
            op.user_exception = future.exception()
        if not self._paused or not self._inflight or self._inflight[0] is not op:
            return
        queue = op.pending_rows
        self._paused = False
        if queue:
            self._run_rows_with_pushback(op, queue)
            if self._paused:
                return
        self._stream.resume_reading()
        self._pump()

    def _release_held_rows(self, op: _Operation) -> None:
        """``op`` can no longer be undone (it completed, or failed otherwise than by
        our cancel): the rows it held back go to the caller."""
        op.exposed_to_cancel = False
        held = op.held_rows
        if held is not None:
            op.held_rows = None
            self._deliver_rows(op, held)

    def _finish(self, op: _Operation) -> None:
        self._inflight.popleft()
        if op.copy_feeder is not None:
            self._stop_copy_feeder(op)
        if op.creates_statement:
            self._parse_settled(op)
        statement = op.statement
        if statement is not None and statement.known_columns == -1:
            conversation = op.conversation
            if isinstance(conversation, QueryConversation) and conversation.described:
                statement.learn(conversation.rows_start)
        if op.retry:
            self._requeue(op)
        else:
            self._settle(op)
        if self._inflight:
            head = self._inflight[0]
            head.tx_before = self._tx_status
            if head.cancel_requested:
                self._send_cancel_for(head)
        if self._waiting or type(self._status) is not Open:
            self._send_next()  # otherwise it has nothing to do

    def _requeue(self, op: _Operation) -> None:
        """Send ``op`` again before all those not yet written, but after any sent again
        before it: one cancel can fail two neighbours, which must keep their order."""
        op.retry = False
        op.exposed_to_cancel = False
        op.sent = False
        op.conversation = QueryConversation()
        if op.statement is not None:
            # Again with the unnamed statement, as if the cache were off: the cached
            # one is gone, or this operation's own Parse of it may already have run.
            op.statement = None
            op.creates_statement = False
            op.closes = ()
            parse = m.encode_parse(op.sql)
            op.wire = self._encode_query(parse, b"", op.values)[1]
        waiting = self._waiting
        position = 0
        while position < len(waiting) and waiting[position].requeued:
            position += 1
        op.requeued = True
        waiting.insert(position, op)

    # ------------------------------------------------------------ statement cache
    def _parse_settled(self, op: _Operation) -> None:
        """``op`` Parsed a statement for the cache: keep it if the Parse succeeded."""
        statement = op.statement
        conversation = op.conversation
        assert statement is not None
        assert isinstance(conversation, QueryConversation)
        if not conversation.parse_owed:
            statement.ready = True
        elif self._statements.get(op.sql) is statement:
            del self._statements[op.sql]  # it does not exist on the server

    def _stale_statement(self, op: _Operation, event: ServerError) -> bool:
        """Whether ``event`` says the cached statement ``op`` bound is unusable; then it
        is forgotten, and ``op`` retried (True) if that is invisible to the caller.

        The server no longer has it (26000: DEALLOCATE or DISCARD ALL ran), or a schema
        change altered its result type (0A000 from RevalidateCachedQuery). Both fail at
        Bind, before anything ran; outside a transaction block that rolled back only
        this operation, so it is sent again with the unnamed statement. Inside a block
        the transaction has failed, so the caller gets the error; likewise when later
        operations are pipelined behind it, which would overtake a retry.
        """
        conversation = op.conversation
        assert isinstance(conversation, QueryConversation)
        if conversation.failed_in is not QueryPhase.BINDING or op.creates_statement:
            return False  # the statement's own error (e.g. of an EXECUTE), not the Bind's
        fields = event.fields
        code = fields.get("C")
        if code == INVALID_SQL_STATEMENT_NAME:
            # The server has lost statements we relied on: start the cache afresh.
            self._closes_owed.extend(s.name for s in self._statements.values())
            self._statements.clear()
        elif code == FEATURE_NOT_SUPPORTED and fields.get("R") == "RevalidateCachedQuery":
            if self._statements.get(op.sql) is op.statement:
                del self._statements[op.sql]
                assert op.statement is not None
                self._closes_owed.append(op.statement.name)
        else:
            return False
        if (
            op.tx_before is TransactionStatus.IDLE
            and op.rows_seen == 0
            and len(self._inflight) == 1
            and not op.cancel_requested
        ):
            op.retry = True
            return True
        return False

    def _settle(self, op: _Operation) -> None:
        op.finished = True
        future = op.future
        if future.done():
            return
        if op.user_exception is not None:
            future.set_exception(op.user_exception)
        elif op.error is not None:
            future.set_exception(op.error)
        elif op.mode == _Mode.SIMPLE:
            future.set_result(SimpleQueryResult(tuple(op.commands), tuple(op.warnings)))
        else:
            future.set_result(op.command or CommandComplete("", None))

    def _write(self, data: bytes) -> None:
        if self._unsent:
            self._unsent.append(data)
            data = b"".join(self._unsent)
            self._unsent.clear()
        try:
            self._stream.write(data)
        except PgasyncError as error:
            self._fail(error)

    def _write_soon(self, data: bytes) -> None:
        """Pipelined operations queued in one loop iteration leave in one write."""
        self._unsent.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._unsent and isinstance(self._status, Open | Closing):
            self._write(b"")

    def _send_next(self) -> None:
        """Write waiting operations while the wire is free for them.

        An operation is written behind unfinished ones only if both are plain queries
        that cannot start COPY FROM STDIN (which would swallow what follows as copy
        data), and the last one has no cancel pending and is not exposed to a stray
        cancel: if that cancel fails it, it is sent again, and must not be overtaken.
        """
        inflight = self._inflight
        waiting = self._waiting
        if not waiting:
            if not inflight and type(self._status) is Closing and not self._terminate_sent:
                # The server answers Terminate by closing; connection_lost completes it.
                self._terminate_sent = True
                self._write(m.Terminate().encode())
            return
        if type(self._status) not in _LIVE:
            return
        cancel = self._cancel_in_flight
        if cancel is not None and not cancel.done():
            return
        while waiting:
            op = waiting[0]
            if inflight:
                last = inflight[-1]
                if (
                    not (last.pipelinable and op.pipelinable)
                    or last.cancel_requested
                    or last.exposed_to_cancel
                ):
                    return
                waiting.popleft()
                op.sent = True
                inflight.append(op)
                self._write_soon(op.wire)
            else:
                waiting.popleft()
                op.sent = True
                op.tx_before = self._tx_status
                inflight.append(op)
                self._write(op.wire)

    @staticmethod
    def _drop_pushback(op: _Operation) -> None:
        op.pending_rows = None
        task = op.pushback_task
        op.pushback_task = None
        if task is not None and not task.done():
            task.cancel()

    def _cancel_done(self, task: asyncio.Task[None]) -> None:
        if self._cancel_in_flight is task:
            self._cancel_in_flight = None
        self._send_next()

    def _send_cancel_for(self, op: _Operation) -> None:
        """Send a CancelRequest for ``op`` if it is the one the server is running.

        A CancelRequest stops whatever the backend runs when it lands. With pipelined
        operations behind ``op``, ``op`` may finish first and the cancel hit a later one
        (even two: the server signals the backend twice, and each signal can land). That
        one then fails with 57014 "user request", perhaps after some rows, which it held
        back (see _deliver_rows); it started outside any transaction block, so the error
        rolled it back whole and it is simply sent again. Inside a transaction block, or
        behind an ``op`` that opens one, a stray cancel could not be undone, so there
        ``op`` is drained instead of cancelled.
        """
        inflight = self._inflight
        if op.cancel_sent or not inflight or inflight[0] is not op:
            return
        if self._secret is None or self.backend_pid is None:
            return
        if len(inflight) > 1:
            if op.tx_before is not TransactionStatus.IDLE or _opens_block(op.sql):
                return
            for later in inflight:
                if later is not op:
                    later.exposed_to_cancel = True
        op.cancel_sent = True
        self._start_cancel_request()

    def _start_cancel_request(self) -> None:
        assert self._secret is not None
        assert self.backend_pid is not None
        task = self._loop.create_task(
            send_cancel_request(self._config, self.backend_pid, self._secret)
        )
        self._cancel_in_flight = task
        task.add_done_callback(self._cancel_done)

    def _stop_copy_feeder(self, op: _Operation) -> None:
        """No more CopyData for ``op``: the feeder may be inside the caller's awaitable
        (an async generator, a Wait), so it is cancelled, not just told."""
        if op.copy_stop is not None and not op.copy_stop.done():
            op.copy_stop.set_result(None)
        feeder = op.copy_feeder
        if feeder is not None and not feeder.done() and feeder is not asyncio.current_task():
            feeder.cancel()

    async def _run(self, op: _Operation) -> Any:
        self._submit(op)
        try:
            return await op.future
        except asyncio.CancelledError:
            self._abandon(op)
            raise

    def _submit(self, op: _Operation) -> None:
        """Queue ``op`` (or write it at once when the wire is free); raises if the
        connection cannot take it. The caller then awaits ``op.future`` as ``_run``."""
        status = self._status
        if type(status) is not Open:
            if isinstance(status, Failed):
                error = _previously_failed(status.error)
            else:
                error = client_error(
                    CONNECTION_DOES_NOT_EXIST, "query issued against connection closed by user"
                )
            error.tag_query(op.sql, op.parameters)
            raise error
        if self._inflight or self._waiting or self._cancel_in_flight is not None:
            self._early_reads_held = _EARLY_HOLD  # see _early_read_allowed
            self._waiting.append(op)
            self._send_next()
        else:
            # The wire is free (the usual case): what _send_next would do, directly.
            op.sent = True
            op.tx_before = self._tx_status
            self._inflight.append(op)
            self._write(op.wire)
            self._read_reply_early(op)

    def _read_reply_early(self, op: _Operation) -> None:
        """Take ``op``'s reply now if the socket already has it (see Stream.read_early),
        so that awaiting it needs no trip through the event loop."""
        global _early_streak
        if self._early_read_allowed() and self._stream.read_early() and op.future.done():
            _early_streak += 1
            return
        _early_streak = 0

    def _early_read_allowed(self) -> bool:
        """Whether the operation just written may look for its reply at once.

        An operation completed that way returns to its caller without yielding. After
        _EARLY_STREAK_LIMIT of those in a row (on any connection) the next one is left
        to the loop, so a task running queries back to back still lets other tasks,
        timers and timeouts run. An operation that had to queue behind another holds
        early reads off for the next _EARLY_HOLD operations written at once: tasks
        sharing the connection are better served by pipelining than by one task's
        early reads, which would run its queries back to back.
        """
        global _early_streak
        if self._early_reads_held:
            self._early_reads_held -= 1
            return False
        if _early_streak >= _EARLY_STREAK_LIMIT:
            _early_streak = 0
            return False
        return True

    def _abandon(self, op: _Operation) -> None:
        """The caller was cancelled: forget the operation, or cancel it on the server."""
        if not op.sent:
            with contextlib.suppress(ValueError):
                self._waiting.remove(op)
            op.future.cancel()
            # Never written: what it would have done to the statement cache is undone.
            self._closes_owed.extend(op.closes)
            if op.creates_statement and self._statements.get(op.sql) is op.statement:
                del self._statements[op.sql]
            return
        if op.finished or op.cancel_requested:
            return
        op.cancel_requested = True
        self._stop_copy_feeder(op)
        if op.copy_feeder is not None and not op.copy_in_finished:
            op.copy_in_finished = True
            op.conversation.copy_in_ended()
            self._write(m.CopyFail("operation cancelled").encode() + m.Sync().encode())
            return  # CopyFail ends it; a CancelRequest could hit a later statement
        self._send_cancel_for(op)
        if self._paused and self._inflight and self._inflight[0] is op:
            # Pushback holds the socket; the caller is gone, so nobody will release it.
            self._drop_pushback(op)
            self._paused = False
            self._stream.resume_reading()
            self._loop.call_soon(self._pump)

    # ------------------------------------------------------------------- public API
    async def query(
        self,
        sql: str,
        parameters: Sequence[object] | None = None,
        *,
        handle_row: HandleRow,
        handle_columns: HandleColumns | None = None,
        pushback: Pushback | None = None,
    ) -> CommandComplete:
        """Run one statement, giving each row to ``handle_row(column_names, values)``."""
        op = None
        if (
            pushback is None
            and not self._inflight
            and not self._waiting
            and self._cancel_in_flight is None
            and type(self._status) is Open
        ):
            done = self._query_at_once(sql, parameters, handle_row, handle_columns)
            if isinstance(done, CommandComplete):
                return done
            op = done
        if op is None:
            op = self._prepare(_Mode.QUERY, sql, parameters)
            op.handle_row = handle_row
            op.handle_columns = handle_columns
            op.pushback = pushback
            self._submit(op)
        # _run inlined: one coroutine less per query.
        try:
            result: CommandComplete = await op.future
        except asyncio.CancelledError:
            self._abandon(op)
            raise
        return result

    def _query_at_once(
        self,
        sql: str,
        parameters: Sequence[object] | None,
        handle_row: HandleRow,
        handle_columns: HandleColumns | None,
    ) -> CommandComplete | _Operation | None:
        """``query`` on an idle connection, for a statement already Parsed into the
        cache (or, without the cache, one whose Parse was built before): write it, and
        if its whole ordinary reply is already in the socket, deliver it here and return
        the result, with no _Operation, no future and no trip through the loop. If the
        reply is not all there, the operation is built and left in flight (returned, to
        be awaited); None: nothing was sent, ``query`` takes its usual way.

        The effects are those of ``_ordinary_reply`` for a QUERY operation: the columns,
        then the rows (the first exception of a callback is kept, and later callbacks
        skipped), the transaction status, then the result or that exception.
        """
        global _early_streak
        statement = None
        known_columns = -1  # a Describe is sent (see reply.scan_reply)
        if self._statement_cache_size:
            statement = self._statements.get(sql)
            if statement is None or not statement.ready or self._closes_owed:
                return None
            known_columns = statement.known_columns
            values, wire = self._encode_query(
                b"", statement.name, parameters, None if known_columns == -1 else _EXECUTE_SYNC
            )
            statements = self._statements
            del statements[sql]  # most recently used last
            statements[sql] = statement
        else:
            cached = self._parse_cache.get(sql)
            if cached is None or not cached[1]:
                return None  # a first use, or a statement that may start a COPY
            values, wire = self._encode_query(cached[0], b"", parameters)
        self._write(wire)
        data = None
        if type(self._status) is Open and self._early_read_allowed():
            data = self._stream.take_early()
        buffer = self._buffer
        if data is not None:
            buffer.feed(data)
            found = buffer.take_ordinary_reply(ROW_BATCH, statement is None, known_columns)
            if found is not None:
                _early_streak += 1
                description, rows, tag, tx_byte = found
                if known_columns != -1:
                    assert statement is not None
                    columns = statement.rows_start
                else:
                    columns = None if description is None else describe_rows(description)
                    if statement is not None:
                        statement.learn(columns)
                return self._deliver_at_once(
                    columns, rows, tag, tx_byte, handle_row, handle_columns
                )
        op = _Operation(
            _Mode.QUERY,
            sql,
            values,
            wire,
            self._loop.create_future(),
            statement is None,
            0,
            statement if known_columns != -1 else None,
        )
        op.pipelinable = True
        op.statement = statement
        op.handle_row = handle_row
        op.handle_columns = handle_columns
        op.sent = True
        op.tx_before = self._tx_status
        status = self._status
        if type(status) is Failed:
            op.set_error(status.error)  # the write failed: as _fail would have told it
            self._settle(op)
            return op
        self._inflight.append(op)
        if data is None:
            _early_streak = 0
            return op
        self._pump()  # not the ordinary reply (or not all of it): message by message
        _early_streak = _early_streak + 1 if op.future.done() else 0
        return op

    def _deliver_at_once(
        self,
        columns: RowsStart | None,
        rows: list[tuple[str | None, ...]],
        tag: str,
        status: int,
        handle_row: HandleRow,
        handle_columns: HandleColumns | None,
    ) -> CommandComplete:
        """The ordinary reply (see ``ReceiveBuffer.take_ordinary_reply``) of a query
        that never needed an _Operation (see ``_query_at_once``): its columns (None:
        NoData), rows, command tag and transaction status byte."""
        self._tx_status = TRANSACTION_STATUS_BY_BYTE[status]
        problem: Exception | None = None
        if columns is not None:
            if handle_columns is not None:
                try:
                    handle_columns(columns.columns)
                except Exception as exc:
                    problem = exc
            if rows and problem is None:
                names = columns.names
                try:
                    for row in rows:
                        handle_row(names, row)
                except Exception as exc:
                    problem = exc
        command = _COMMAND_TAGS.get(tag) or _command_complete(tag)
        if self._buffer:
            self._pump()  # what came after the reply: a notification, say
        if problem is not None:
            raise problem
        return command

    async def query_expect_no_data(
        self, sql: str, parameters: Sequence[object] | None = None
    ) -> CommandComplete:
        """Run a statement that must not produce rows (``""`` is a cheap heartbeat)."""
        result: CommandComplete = await self._run(
            self._prepare(_Mode.EXPECT_NO_DATA, sql, parameters)
        )
        return result

    async def copy_in_raw(
        self,
        sql: str,
        parameters: Sequence[object] | None = None,
        *,
        feed_data: Feed[str | bytes],
    ) -> CommandComplete:
        """Run ``COPY ... FROM STDIN`` and send what ``feed_data`` yields as its data."""
        op = self._prepare(_Mode.COPY_IN, sql, parameters)
        op.copy_feed = (feed_data, _raw_batch, False, _NO_FRAMING)
        result: CommandComplete = await self._run(op)
        return result

    async def copy_in_rows(
        self,
        table_name: str,
        column_names: Sequence[str],
        *,
        feed_data: Feed[Sequence[object]],
        schema_name: str | None = None,
        format: str = "text",
    ) -> CommandComplete:
        """COPY rows (sequences of values) into a table; names are quoted here.

        ``format="text"`` (the default) sends every value in its text form, whatever the
        column's type. ``format="binary"`` first looks up the columns' types (one query;
        a missing table or column raises PgasyncError 42P01 / 42703, a type the binary
        format does not support here raises TypeError, all before the COPY starts), then
        sends each value in its type's binary form, taking Python types strictly: see
        ``postgres_async._copy_binary``. A value that does not fit its column raises
        TypeError/ValueError naming the row and column; the COPY is then abandoned (no
        row is committed) and the connection stays usable. The lookup and the COPY are
        two turns in the FIFO: a call made on this connection meanwhile may run between
        them.
        """
        if format not in ("text", "binary"):
            raise ValueError(f"format must be 'text' or 'binary', not {format!r}")
        if isinstance(column_names, str):
            raise TypeError("column_names must be a sequence of names, not one str")
        names = list(column_names)
        target = _values.quote_identifier(table_name)
        if schema_name is not None:
            target = _values.quote_identifier(schema_name) + "." + target
        columns = ", ".join(_values.quote_identifier(c) for c in names)
        copy_feed: tuple[Any, ...]
        if format == "text":
            sql = f"COPY {target} ({columns}) FROM STDIN (FORMAT text)"
            copy_feed = (feed_data, _accel.format_copy_rows, True, _NO_FRAMING)
        else:
            encoder = _copy_binary.BatchEncoder(
                await self._copy_binary_columns(target, names), _accel.copy_binary_rows
            )
            sql = f"COPY {target} ({columns}) FROM STDIN (FORMAT binary)"
            copy_feed = (feed_data, encoder, True, _BINARY_FRAMING)
        op = self._prepare(_Mode.COPY_IN, sql, None)
        op.copy_feed = copy_feed
        result: CommandComplete = await self._run(op)
        return result

    async def _copy_binary_columns(
        self, target: str, names: list[str]
    ) -> list[_copy_binary.Column]:
        """The encoders for ``names`` of ``target`` (quoted), from the catalog. Through
        ``query``, so it takes its turn in the FIFO like any statement."""
        found: list[tuple[str | None, ...]] = []

        def keep(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
            found.append(values)

        await self.query(_copy_binary.COLUMN_TYPES_SQL, [target], handle_row=keep)
        return _copy_binary.columns_for(names, found, target, self.server_version)

    async def copy_out(
        self,
        sql: str,
        parameters: Sequence[object] | None = None,
        *,
        handle_data: Callable[[bytes], Awaitable[None] | None],
    ) -> CommandComplete:
        """Run ``COPY ... TO STDOUT``; each CopyData payload goes to ``handle_data``,
        whose awaitable result (if any) is awaited before more is read (pushback)."""
        op = self._prepare(_Mode.COPY_OUT, sql, parameters)
        op.handle_data = handle_data
        result: CommandComplete = await self._run(op)
        return result

    async def simple_query(
        self,
        sql: str,
        *,
        handle_row: HandleRow | None = None,
        handle_columns: HandleColumns | None = None,
        pushback: Pushback | None = None,
    ) -> SimpleQueryResult:
        """The simple query protocol: several statements in one string, run as one
        implicit transaction, no parameters. COPY FROM STDIN is refused (the server's
        57014 error is raised); COPY TO STDOUT output is drained and reported as a
        warning."""
        if not isinstance(sql, str):
            raise TypeError(f"sql must be str, not {type(sql).__name__}")
        wire = m.Query(sql).encode()
        op = _Operation(_Mode.SIMPLE, sql, (), wire, self._loop.create_future())
        op.handle_row = handle_row if handle_row is not None else _ignore_row
        op.handle_columns = handle_columns
        op.pushback = pushback
        result: SimpleQueryResult = await self._run(op)
        return result

    async def listen_to_notifications(self, channel: str, f: NotificationCallback) -> None:
        """``LISTEN`` on ``channel`` and call ``f(pid, payload)`` for each notification."""
        quoted = _values.quote_identifier(channel)
        self._listeners.setdefault(channel, []).append(f)
        await self.query_expect_no_data(f"LISTEN {quoted}")

    async def cancel(self) -> None:
        """Best effort: ask the server to cancel whatever this session is running."""
        if self._secret is None or self.backend_pid is None:
            raise client_error(CONNECTION_DOES_NOT_EXIST, "No backend key found")
        await send_cancel_request(self._config, self.backend_pid, self._secret)

    async def close(self, try_cancel_statement_before_close: bool = False) -> None:
        """Terminate gracefully; raises the failure if there was one. Idempotent."""
        if isinstance(self._status, Open):
            self._status = Closing()
            while self._waiting:
                op = self._waiting.popleft()
                op.set_error(
                    client_error(
                        CONNECTION_DOES_NOT_EXIST, "query issued against connection closed by user"
                    )
                )
                self._settle(op)
            if (
                try_cancel_statement_before_close
                and self._inflight
                and self._secret is not None
                and self.backend_pid is not None
            ):
                self._start_cancel_request()
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._close_timed_out)
            self._send_next()
        try:
            await self.close_finished()
        finally:
            # A CancelRequest still on its way is part of closing: nothing of this
            # connection outlives close(), and close() stays bounded.
            cancel = self._cancel_in_flight
            if cancel is not None and not cancel.done():
                await asyncio.wait((cancel,), timeout=CLOSE_TIMEOUT)
                if not cancel.done():
                    cancel.cancel()
                    await asyncio.wait((cancel,))

    def _close_timed_out(self) -> None:
        if isinstance(self._status, Closing):
            self._fail(client_error(CONNECTION_EXCEPTION, "close: EOF expected, but instead stuck"))

    async def close_finished(self) -> None:
        """Until the connection is gone: None after a graceful close, else raises."""
        await self._released.wait()
        status = self._status
        if isinstance(status, Failed):
            raise status.error

    # ------------------------------------------------------------------------ build
    def _prepare(self, mode: int, sql: str, parameters: Sequence[object] | None) -> _Operation:
        caching = self._statement_cache_size and mode <= _Mode.EXPECT_NO_DATA
        if caching:
            statement = self._statements.get(sql)
            if statement is not None and statement.ready:
                return self._prepare_cached(mode, sql, parameters, statement, False)
        cached = self._parse_cache.get(sql)
        if cached is None:
            if not isinstance(sql, str):
                raise TypeError(f"sql must be str, not {type(sql).__name__}")
            # Only statements that cannot enter COPY FROM STDIN may share the wire: a
            # COPY would read whatever follows it as data.
            cached = (m.encode_parse(sql), "COPY" not in sql.upper())
            if len(self._parse_cache) >= _PARSE_CACHE_SIZE:
                self._parse_cache.clear()
            self._parse_cache[sql] = cached
        parse, plain = cached
        pipelinable = plain and mode <= _Mode.EXPECT_NO_DATA
        # A statement in the cache but not ready is being Parsed by an earlier query
        # still in flight: this one takes the unnamed statement.
        if caching and plain and sql not in self._statements:
            name = f"__postgres_async_{self._statements_named + 1}".encode()
            return self._prepare_cached(mode, sql, parameters, _Statement(name, sql), True)
        values, wire = self._encode_query(parse, b"", parameters)
        op = _Operation(mode, sql, values, wire, self._loop.create_future())
        op.pipelinable = pipelinable
        return op

    def _prepare_cached(
        self,
        mode: int,
        sql: str,
        parameters: Sequence[object] | None,
        statement: _Statement,
        creates: bool,
    ) -> _Operation:
        """An operation binding a statement of the cache, Parsing it first if new (and
        then Closing the least recently used one if the cache is full). Statements are
        added and evicted only once the operation's bytes are built without error."""
        statements = self._statements
        evicted = None
        closes = self._closes_owed
        if creates:
            if len(statements) >= self._statement_cache_size:
                evicted = next(iter(statements))
                closes = [*closes, statements[evicted].name]
        else:
            del statements[sql]  # most recently used last
            statements[sql] = statement
        head = b""
        if closes:
            head = b"".join(m.Close("S", name.decode()).encode() for name in closes)
        if creates:
            head += m.encode_parse(sql, statement.name.decode())
        described = statement.known_columns != -1
        values, wire = self._encode_query(
            head, statement.name, parameters, _EXECUTE_SYNC if described else None
        )
        op = _Operation(
            mode,
            sql,
            values,
            wire,
            self._loop.create_future(),
            creates,
            len(closes),
            statement if described else None,
        )
        if evicted is not None:
            del statements[evicted]
        if creates:
            statements[sql] = statement
            self._statements_named += 1
            op.creates_statement = True
        op.pipelinable = True
        op.statement = statement
        if closes:
            op.closes = tuple(closes)
            self._closes_owed = []
        return op

    @staticmethod
    def _encode_query(
        head: bytes,
        statement: bytes,
        parameters: Sequence[object] | None,
        tail: bytes | None = None,
    ) -> tuple[tuple[object, ...], bytes]:
        """(the values kept for error messages, the bytes of ``head`` + Bind (to the
        named ``statement``, or the unnamed one for b"") + ``tail``: Describe (None; a
        statement described already needs none) + Execute + Sync)."""
        if tail is None:
            tail = _DESCRIBE_EXECUTE_SYNC
        if not parameters:
            if statement:
                bind = m.encode_bind_text([], statement=statement.decode())
                return (), head + bind + tail
            return (), head + _BIND_NO_PARAMETERS_DESCRIBE_EXECUTE_SYNC
        if _accel.encode_query is not None:
            wire = _accel.encode_query(head, statement, parameters, tail)
            if wire is not None:
                return tuple(parameters), wire  # a list or tuple, or encode_query says None
        # Every type, and every error message, is the reference's.
        values, wire_params = _values.encode_parameters(parameters)
        if len(wire_params) > m.MAX_PARAMETERS:
            raise ValueError(
                f"{len(wire_params)} parameters given; the protocol allows at most "
                f"{m.MAX_PARAMETERS}"
            )
        bind = m.encode_bind_text(wire_params, statement=statement.decode())
        return values, head + bind + tail

    # ---------------------------------------------------------------------- COPY IN
    async def _feed_copy(self, op: _Operation) -> None:
        """Pull from feed_data and write CopyData until Finished/Abort or told to stop."""
        feed, encode_batch, rows, (header, trailer) = op.copy_feed
        stop = op.copy_stop
        assert stop is not None
        writer = _CopyWriter(self, encode_batch, stop, rows, header, trailer)
        end: bytes
        try:
            end = await writer.run(feed)
        except Exception as exc:
            if stop.done():
                return
            op.user_exception = exc
            # The server logs the reason: say which side failed, never the value.
            end = m.CopyFail(writer.failure).encode()
        if stop.done() or op.copy_in_finished:
            return
        op.copy_in_finished = True
        op.conversation.copy_in_ended()
        self._write(end + _SYNC)


class _CopyWriter:
    """Batches what feed_data yields into CopyData messages.

    Items are encoded a batch at a time (one call to the batch encoder, compiled when
    available), sent when the batch is big, when the feeder waits, or when it has been
    held for a while; after each send the writer waits while the transport's buffer is
    full, so memory stays bounded however fast the feeder is.

    ``header`` goes in front of the first data sent and ``trailer`` after the last, each
    exactly once, and only when the copy ends with CopyDone (CopyFail needs neither).
    """

    __slots__ = (
        "_batch",
        "_conn",
        "_encode",
        "_header",
        "_loop",
        "_rows",
        "_sent_at",
        "_size",
        "_stop",
        "_trailer",
        "failure",
    )

    MAX_ITEMS = 1024
    MAX_BYTES = 256 * 1024
    MAX_HOLD = 0.05  # seconds an item may wait for its batch to fill
    ROWS_PER_BATCH = 4096  # rows taken at once from a plain iterable

    def __init__(
        self,
        conn: Connection,
        encode: Callable[[list[Any]], bytes],
        stop: asyncio.Future[None],
        rows: bool,
        header: bytes = b"",
        trailer: bytes = b"",
    ) -> None:
        self._rows = rows
        self.failure = _FEED_FAILED  # the CopyFail reason if run() raises
        self._header = header
        self._trailer = trailer
        self._conn = conn
        self._encode = encode
        self._stop = stop
        self._batch: list[Any] = []
        self._size = 0
        self._loop = conn._loop
        self._sent_at = self._loop.time()

    def _add(self, item: object) -> bool:
        """Queue one item; True when the batch should be sent now."""
        self._batch.append(item)
        if isinstance(item, str | bytes | bytearray | memoryview):
            self._size += len(item)
        return (
            len(self._batch) >= self.MAX_ITEMS
            or self._size >= self.MAX_BYTES
            or self._loop.time() - self._sent_at > self.MAX_HOLD
        )

    async def _send(self) -> None:
        if self._batch:
            self.failure = "COPY data could not be encoded"
            data = self._encode(self._batch)
            self.failure = _FEED_FAILED
            self._batch.clear()
            self._size = 0
            if not self._stop.done():
                if self._header:
                    data = self._header + data
                    self._header = b""
                self._conn._write(_copy_data_frame(data))
        self._sent_at = self._loop.time()
        stream = self._conn._stream
        if stream.write_blocked:
            await _wait_either(stream.drain(), self._stop)
        else:
            await asyncio.sleep(0)  # a feeder that never waits must not starve the loop

    async def run(self, feed: Any) -> bytes:
        """Feed everything; returns the message that ends the copy (CopyDone/CopyFail)."""
        stop = self._stop
        if callable(feed):
            while not stop.done():
                result = feed()
                if isinstance(result, asyncio.Future):
                    result = await asyncio.shield(result)  # theirs: never cancel it
                elif inspect.isawaitable(result):
                    result = await result
                if isinstance(result, Data):
                    if self._add(result.chunk):
                        await self._send()
                elif isinstance(result, Wait):
                    await self._send()  # what is ready goes out before we wait
                    await _wait_either(result.awaitable, stop)
                elif isinstance(result, Finished):
                    break
                elif isinstance(result, Abort):
                    await self._send()
                    return m.CopyFail(result.reason).encode()
                else:
                    raise TypeError(
                        "feed_data must return Data, Wait, Abort or Finished, not "
                        f"{type(result).__name__}"
                    )
        elif isinstance(feed, AsyncIterable):
            async for item in feed:
                if stop.done():
                    break
                if self._add(item):
                    await self._send()
        elif isinstance(feed, Iterable) and not isinstance(feed, str | bytes):
            if self._rows:
                # Rows from a plain iterable: whole slices straight to the batch
                # encoder, with no Python work per row here.
                iterator = iter(feed)
                while not stop.done():
                    self._batch = list(itertools.islice(iterator, self.ROWS_PER_BATCH))
                    if not self._batch:
                        break
                    await self._send()
            else:
                for item in feed:
                    if stop.done():
                        break
                    if self._add(item):
                        await self._send()
        else:
            raise TypeError("feed_data must be a callable, an iterable or an async iterable")
        if not stop.done():
            await self._send()
        if self._header or self._trailer:
            # With no row at all the header is still owed: the format needs both.
            return _copy_data_frame(self._header + self._trailer) + _COPY_DONE
        return _COPY_DONE


async def _wait_either(awaitable: Awaitable[Any], stop: asyncio.Future[None]) -> None:
    """Await ``awaitable`` unless ``stop`` completes first. A task we made from the
    caller's coroutine is ours to cancel; the caller's own futures are never touched."""
    future = asyncio.ensure_future(awaitable)
    owned = future is not awaitable
    try:
        if not future.done():
            await asyncio.wait((future, stop), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        if owned:
            future.cancel()
        raise
    if not future.done():
        if owned:
            future.cancel()
        return
    if future.cancelled():
        raise RuntimeError("an awaitable given to COPY IN (Wait) was cancelled")
    future.result()


def _command_complete(tag: str) -> CommandComplete:
    """The result for a CommandComplete tag, remembered: most tags recur."""
    command = CommandComplete.parse(tag)
    if len(_COMMAND_TAGS) < 4096:
        _COMMAND_TAGS[tag] = command
    return command


def _opens_block(sql: str) -> bool:
    """Whether ``sql`` (one statement, as the extended protocol takes) is BEGIN or
    START TRANSACTION, after any leading comments."""
    return _statement_text(sql)[:5].upper() in ("BEGIN", "START")


def _result_is_fixed(sql: str) -> bool:
    """Whether ``sql`` is a statement the server plans (not a utility statement), whose
    result columns a prepared statement keeps or refuses to bind. Only a sure yes
    counts: anything unrecognised is taken for a utility statement."""
    word = _FIRST_WORD.match(_statement_text(sql))
    return word is not None and word[1].upper() in _PLANNED_KEYWORDS


def _statement_text(sql: str) -> str:
    """``sql`` from its first keyword: leading whitespace and comments skipped."""
    text = sql.lstrip()
    while text.startswith(("--", "/*")):
        comment_line = text.startswith("--")
        text = text.partition("\n")[2] if comment_line else _skip_block_comment(text)
        text = text.lstrip()
    return text


# The statements the server plans (a WITH may lead any of the others); SELECT INTO is
# a utility statement in disguise, but it never returns rows, so its answer is fixed too.
_PLANNED_KEYWORDS = frozenset(
    ("SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE", "MERGE")
)
# A parenthesised SELECT starts with "(".
_FIRST_WORD = re.compile(r"[(\s]*([A-Za-z]+)")


def _skip_block_comment(text: str) -> str:
    """``text`` after the block comment it starts with (they nest in PostgreSQL)."""
    depth = 0
    i = 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair == "/*":
            depth += 1
            i += 2
        elif pair == "*/":
            depth -= 1
            i += 2
            if depth == 0:
                return text[i:]
        else:
            i += 1
    return ""


def _hit_by_our_cancel(op: _Operation, event: ServerError) -> bool:
    """Whether ``event`` is a stray CancelRequest of ours that can be undone by
    running ``op`` again: it failed with query_canceled at user request before any row
    reached the caller, having started outside a transaction block (so the error rolled
    it back). Rows of an operation exposed to that are held back until it completes."""
    return (
        event.fields.get("C") == QUERY_CANCELED
        and "user request" in event.fields.get("M", "")
        and op.tx_before is TransactionStatus.IDLE
        and op.rows_seen == 0
        and op.mode in (_Mode.QUERY, _Mode.EXPECT_NO_DATA)
    )


def _ignore_row(_names: tuple[str, ...], _values: tuple[str | None, ...]) -> None:
    pass


def _raw_chunk(chunk: object) -> bytes:
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"copy_in_raw chunks must be str or bytes, not {type(chunk).__name__}")


def _raw_batch(chunks: list[Any]) -> bytes:
    return b"".join([_raw_chunk(chunk) for chunk in chunks])


def _copy_data_frame(data: bytes) -> bytes:
    return b"d" + (len(data) + 4).to_bytes(4, "big") + data


# Parsed completion tags ("SELECT 1", "INSERT 0 1", ...) recur; parse each once.
_COMMAND_TAGS: dict[str, CommandComplete] = {}
_DELIVERS_ROWS = frozenset((_Mode.QUERY, _Mode.SIMPLE))
_SYNC = m.Sync().encode()
_EXECUTE_SYNC = m.Execute().encode() + _SYNC
_DESCRIBE_EXECUTE_SYNC = m.Describe("P").encode() + _EXECUTE_SYNC
_BIND_NO_PARAMETERS_DESCRIBE_EXECUTE_SYNC = m.encode_bind_text([]) + _DESCRIBE_EXECUTE_SYNC
# Encoded Parse messages by SQL text: the same statements come back again and again.
_PARSE_CACHE_SIZE = 256
_COPY_DONE = m.FrontendCopyDone().encode()
_FEED_FAILED = "feed_data callback raised"
# What goes before the first row and after the last: (header, trailer).
_NO_FRAMING = (b"", b"")
_BINARY_FRAMING = (_copy_binary.HEADER, _copy_binary.TRAILER)


def _format_fields(fields: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in fields.items() if k not in "FLR")


def parse_server_version(text: str) -> int | None:
    """As libpq: a.b.c -> a*10000+b*100+c; a.b -> a*10000+b (a >= 10) or a*10000+b*100."""
    head = text.split(" ", 1)[0]
    digits: list[int] = []
    for part in head.split(".")[:3]:
        number = ""
        for char in part:
            if not char.isdigit():
                break
            number += char
        if not number:
            break
        digits.append(int(number))
        if len(number) != len(part):
            break
    if not digits:
        return None
    if len(digits) >= 3:
        return digits[0] * 10000 + digits[1] * 100 + digits[2]
    if len(digits) == 2:
        if digits[0] >= 10:
            return digits[0] * 10000 + digits[1]
        return digits[0] * 10000 + digits[1] * 100
    return digits[0] * 10000


async def _close_after_body(conn: Connection, body_succeeded: bool) -> None:
    """with_connection's ending: a failed close after a good body is logged, not raised."""
    try:
        await conn.close()
    except PgasyncError as error:
        if body_succeeded:
            logger.warning("closing the connection failed: %s", error)


# ------------------------------------------------------------------------------ login
async def connect(
    dsn: str | None = None,
    *,
    server: str | tuple[str, int] | None = None,
    host: str | None = None,
    port: int | str | None = None,
    user: str | None = None,
    password: str | None = None,
    gss_krb_token: bytes | None = None,
    database: str | None = None,
    interrupt: Awaitable[Any] | None = None,
    ssl_mode: str | None = None,
    connect_timeout: float | None = None,
    application_name: str | None = None,
    server_settings: Mapping[str, str] | None = None,
    max_message_length: int | None = None,
    statement_cache_size: int | None = None,
    early_reads: bool | None = None,
    **more: Any,
) -> Connection:
    """Open a connection and log in.

    Keyword arguments beat the DSN, which beats the PG* environment variables, which
    beat libpq's defaults. On failure raises ``PgasyncError`` and leaves nothing open.

    ``statement_cache_size`` (default 0, off) keeps up to that many statements prepared
    on the server, so that a repeated SQL text is Bound without being Parsed again (see
    the README's "Statement cache"). ``early_reads`` (default True) takes a reply that is
    already in the socket right after its request, without a trip through the event
    loop (see the README's "Early reads"); False leaves every reply to the loop.
    """
    config = resolve_config(
        dsn,
        server=server,
        host=host,
        port=port,
        user=user,
        password=password,
        gss_krb_token=gss_krb_token,
        database=database,
        ssl_mode=ssl_mode,
        connect_timeout=connect_timeout,
        application_name=application_name,
        server_settings=server_settings,
        max_message_length=max_message_length,
        statement_cache_size=statement_cache_size,
        early_reads=early_reads,
        **more,
    )
    phase = ["connecting"]
    attempt = asyncio.ensure_future(_connect(config, phase))
    waiters: set[asyncio.Future[Any]] = {attempt}
    interrupt_future: asyncio.Future[Any] | None = None
    if interrupt is not None:
        interrupt_future = asyncio.ensure_future(interrupt)
        waiters.add(interrupt_future)
    try:
        async with asyncio.timeout(config.connect_timeout):
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        await _abandon_attempt(attempt)
        raise client_error(
            UNABLE_TO_CONNECT,
            f"timeout expired while {_PHASE_TEXT[phase[0]]} ({describe_address(config)})",
        ) from None
    except BaseException:
        await _abandon_attempt(attempt)
        raise
    finally:
        if interrupt_future is not None and inspect.iscoroutine(interrupt):
            interrupt_future.cancel()
    if attempt in done:
        return attempt.result()
    await _abandon_attempt(attempt)
    text = {
        "connecting": f"connection attempt aborted ({describe_address(config)})",
        "ssl": "ssl negotiation interrupted",
        "login": "login interrupted",
    }[phase[0]]
    raise client_error(UNABLE_TO_CONNECT, text)


_PHASE_TEXT = {
    "connecting": "connecting",
    "ssl": "negotiating SSL",
    "login": "logging in",
}


async def _abandon_attempt(attempt: asyncio.Future[Connection]) -> None:
    attempt.cancel()
    with contextlib.suppress(BaseException):
        conn = await attempt
        # It finished just before the cancel landed: do not leak it.
        conn._stream.abort()


async def _connect(config: ConnectConfig, phase: list[str]) -> Connection:
    stream = await open_stream(config, phase)
    try:
        phase[0] = "login"
        set_keepalive(stream)
        login = LoginConversation()
        parameters: dict[str, str] = {}
        stream.write(m.StartupMessage(config.startup_parameters()).encode())
        await _login(stream, config, login, parameters)
        conn = Connection(stream, config, login)
        conn.runtime_parameters.update(parameters)
        # Weakly: an open socket must not keep a forgotten Connection alive, or its
        # ResourceWarning (and the socket's release) would never come.
        stream.listener = _WeakListener(conn)
        if config.early_reads:
            stream.enable_early_reads()
        if stream.eof:
            conn.connection_lost(stream.lost_exc)
        else:
            conn._pump()
        return conn
    except BaseException:
        stream.abort()
        raise


class _WeakListener:
    """Forwards stream events to a Connection without keeping it alive."""

    __slots__ = ("_ref",)

    def __init__(self, conn: Connection) -> None:
        self._ref = weakref.ref(conn)

    def data_arrived(self) -> None:
        conn = self._ref()
        if conn is not None:
            conn.data_arrived()

    def connection_lost(self, exc: BaseException | None) -> None:
        conn = self._ref()
        if conn is not None:
            conn.connection_lost(exc)


async def _next_message(stream: Stream) -> m.BackendMessage:
    while True:
        frame = stream.buffer.next_frame()
        if frame is not None:
            return m.decode_backend(*frame)
        if stream.eof:
            left = len(stream.buffer)
            if left:
                raise client_error(
                    CONNECTION_DOES_NOT_EXIST, f"Unexpected EOF (unconsumed_bytes {left})"
                )
            detail = f": {stream.lost_exc}" if stream.lost_exc else ""
            raise client_error(
                CONNECTION_DOES_NOT_EXIST, f"Unexpected EOF (no unconsumed messages){detail}"
            )
        await stream.wait_for_data()


async def _login(
    stream: Stream, config: ConnectConfig, login: LoginConversation, parameters: dict[str, str]
) -> None:
    scram: ScramSha256 | None = None
    while True:
        message = await _next_message(stream)
        if isinstance(message, m.ParameterStatus):
            parameters[message.name] = message.value
            continue
        if isinstance(message, m.NoticeResponse):
            logger.info("Postgres NoticeResponse: %s", _format_fields(message.fields))
            continue
        if isinstance(message, m.NotificationResponse):
            continue
        event = login.handle(message)
        if isinstance(event, Ready):
            return
        if isinstance(event, ServerError):
            raise PgasyncError.from_fields(event.fields)
        if isinstance(event, KeyReceived):
            continue
        assert isinstance(event, AuthRequested)
        scram = await _answer_auth(stream, config, event.request, scram)


async def _answer_auth(
    stream: Stream,
    config: ConnectConfig,
    request: m.AuthenticationRequest,
    scram: ScramSha256 | None,
) -> ScramSha256 | None:
    password = config.password
    if isinstance(request, m.AuthenticationOk):
        if scram is not None and not scram.server_verified:
            # Without SASLFinal the server never proved it knows the password: anyone
            # in the middle could have said "Ok".
            raise client_error(
                PROTOCOL_VIOLATION,
                "server sent AuthenticationOk before completing the SCRAM exchange",
            )
        return scram
    if isinstance(request, m.AuthenticationCleartextPassword | m.AuthenticationMD5Password):
        kind = "md5" if isinstance(request, m.AuthenticationMD5Password) else "cleartext"
        if password is None:
            raise client_error(
                INVALID_PASSWORD,
                f"Server requested ({kind}) password, but no password was provided",
            )
        if isinstance(request, m.AuthenticationMD5Password):
            secret = md5_password_message(config.user, password, request.salt)
        else:
            secret = password.encode("utf-8")
        stream.write(m.PasswordMessage(secret).encode())
        return scram
    if isinstance(request, m.AuthenticationGSS):
        if config.gss_krb_token is None:
            raise client_error(
                INVALID_PASSWORD, "Server requested GSS auth, but no gss_krb_token was provided"
            )
        stream.write(m.GSSResponse(config.gss_krb_token).encode())
        return scram
    try:
        if isinstance(request, m.AuthenticationSASL):
            if password is None:
                raise client_error(
                    INVALID_PASSWORD,
                    "Server requested (scram-sha-256) password, but no password was provided",
                )
            scram = ScramSha256(config.user, password, request.mechanisms, _channel_binding(stream))
            stream.write(m.SASLInitialResponse(scram.mechanism, scram.client_first()).encode())
            return scram
        if isinstance(request, m.AuthenticationSASLContinue) and scram is not None:
            if scram.needs_slow_hash(request.data):
                # PBKDF2 with a big iteration count: keep the event loop free.
                final = await asyncio.to_thread(scram.client_final, request.data)
            else:
                final = scram.client_final(request.data)
            stream.write(m.SASLResponse(final).encode())
            return scram
        if isinstance(request, m.AuthenticationSASLFinal) and scram is not None:
            scram.verify_server_final(request.data)
            return scram
    except ScramMechanismError as exc:
        raise client_error(INVALID_AUTHORIZATION, f"SCRAM authentication failed: {exc}") from None
    except ScramAuthenticationError as exc:
        raise client_error(INVALID_PASSWORD, f"SCRAM authentication failed: {exc}") from None
    except ScramError as exc:
        raise client_error(PROTOCOL_VIOLATION, f"SCRAM authentication failed: {exc}") from None
    name = m.AUTH_NAMES.get(request.CODE, str(request.CODE))
    if isinstance(request, m.AuthenticationSASLContinue | m.AuthenticationSASLFinal):
        raise client_error(
            PROTOCOL_VIOLATION, f"Authentication{name} arrived without a SASL exchange"
        )
    raise client_error(INVALID_AUTHORIZATION, f"Server wants unimplemented auth subtype: {name}")


def _channel_binding(stream: Stream) -> tuple[str, bytes] | None:
    """tls-server-end-point data for SCRAM-SHA-256-PLUS when the session is TLS."""
    transport = stream.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    certificate = ssl_object.getpeercert(binary_form=True)
    if not certificate:
        return None
    return ("tls-server-end-point", tls_server_end_point(certificate))


@contextlib.asynccontextmanager
async def with_connection(
    dsn: str | None = None, *, interrupt: Awaitable[Any] | None = None, **kwargs: Any
) -> AsyncIterator[Connection]:
    """Connect, yield the connection, close it at the end."""
    conn = await connect(dsn, interrupt=interrupt, **kwargs)
    ok = False
    try:
        yield conn
        ok = True
    finally:
        await _close_after_body(conn, ok)
