"""The state machines of one conversation each: login, and an extended-protocol query.

This file owns which server message may follow which. A machine is fed one decoded
message at a time and answers with an event (or None for a step with nothing to act
on); a message that cannot come next raises ``ProtocolViolation``, after which the
connection is dead. The machines never write: what to send in answer to an event
(a password, CopyFail, Sync) is the driver's decision.

Asynchronous messages (NoticeResponse, ParameterStatus, NotificationResponse) may arrive
at any point and are dealt with by the driver before a message reaches a machine.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._wire import protocol_violation
from .buffer import ReceiveBuffer
from .messages import (
    AuthenticationRequest,
    BackendKeyData,
    BackendMessage,
    BindComplete,
    CloseComplete,
    ColumnMetadata,
    CommandComplete,
    CopyBothResponse,
    CopyData,
    CopyDone,
    CopyInResponse,
    CopyOutResponse,
    EmptyQueryResponse,
    ErrorResponse,
    NoData,
    ParseComplete,
    ReadyForQuery,
    RowDescription,
    TransactionStatus,
    decode_backend,
)
from .reply import command_tag

_PARSE_COMPLETE = ord("1")
_BIND_COMPLETE = ord("2")
_NO_DATA = ord("n")
_COMMAND_COMPLETE = ord("C")
_READY = ord("Z")
_ROW_DESCRIPTION = ord("T")
_BIND_COMPLETE_MESSAGE = b"2\0\0\0\x04"
_PARSE_BIND_COMPLETE = b"1\0\0\0\x04" + _BIND_COMPLETE_MESSAGE
_READY_STATUS = {s.value.encode("ascii"): s for s in TransactionStatus}
TRANSACTION_STATUS_BY_BYTE = {ord(s.value): s for s in TransactionStatus}


# ------------------------------------------------------------------------------ events
@dataclass(frozen=True, slots=True)
class RowsStart:
    columns: tuple[ColumnMetadata, ...]
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Completed:
    """The statement finished: the CommandComplete tag ("" for the empty query)."""

    tag: str


@dataclass(frozen=True, slots=True)
class CopyInStart:
    overall_format: int
    column_formats: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CopyOutStart:
    overall_format: int
    column_formats: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CopyOutData:
    data: bytes


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ErrorResponse; ``phase`` is the tag naming where in the exchange it came."""

    fields: Mapping[str, str]
    phase: str | None


@dataclass(frozen=True, slots=True)
class Ready:
    status: TransactionStatus


@dataclass(frozen=True, slots=True)
class AuthRequested:
    request: AuthenticationRequest


@dataclass(frozen=True, slots=True)
class KeyReceived:
    pid: int
    secret: int = field(repr=False)


QueryEvent = RowsStart | Completed | CopyInStart | CopyOutStart | CopyOutData | ServerError | Ready
LoginEvent = AuthRequested | KeyReceived | ServerError | Ready


def _unexpected(message: BackendMessage, state: str) -> Exception:
    return protocol_violation(f"Unexpected message type {message.NAME} in state {state!r}")


# ------------------------------------------------------------------------------- login
class LoginConversation:
    """From StartupMessage to the first ReadyForQuery."""

    __slots__ = ("backend_key", "done", "failed")

    def __init__(self) -> None:
        self.backend_key: tuple[int, int] | None = None
        self.done = False
        self.failed = False

    def handle(self, message: BackendMessage) -> LoginEvent:
        if self.done or self.failed:
            raise _unexpected(message, "logged in")
        if isinstance(message, AuthenticationRequest):
            return AuthRequested(message)
        if isinstance(message, BackendKeyData):
            if self.backend_key is not None:
                raise protocol_violation("duplicate BackendKeyData messages")
            self.backend_key = (message.pid, message.secret)
            return KeyReceived(message.pid, message.secret)
        if isinstance(message, ErrorResponse):
            self.failed = True
            return ServerError(message.fields, None)
        if isinstance(message, ReadyForQuery):
            if message.status is not TransactionStatus.IDLE:
                raise protocol_violation(
                    f"Unexpected initial transaction status {message.status.value!r}"
                )
            self.done = True
            return Ready(message.status)
        raise _unexpected(message, "logging in")


# ------------------------------------------------------------------------------- query
# Decoded RowDescriptions by payload: a statement run again describes itself again with
# the very same bytes, and the decoded form is immutable, so one copy serves all.
_ROW_DESCRIPTIONS: dict[bytes, RowsStart] = {}
_ROW_DESCRIPTIONS_MAX = 512


def describe_rows(payload: bytes) -> RowsStart:
    """A RowDescription payload, decoded once per distinct payload."""
    event = _ROW_DESCRIPTIONS.get(payload)
    if event is None:
        columns = RowDescription.decode(payload).columns
        event = RowsStart(columns, tuple(c.name for c in columns))
        if len(_ROW_DESCRIPTIONS) >= _ROW_DESCRIPTIONS_MAX:
            _ROW_DESCRIPTIONS.clear()
        _ROW_DESCRIPTIONS[payload] = event
    return event


# A whole query reply taken in one step: (its columns or None for NoData, rows,
# completion tag, transaction status). A plain tuple: one is built per query.
OrdinaryReply = tuple[RowsStart | None, list[tuple[str | None, ...]], str, TransactionStatus]


def known_columns_of(rows_start: RowsStart | None) -> int:
    """``reply.scan_reply``'s ``known_columns`` for a statement described as
    ``rows_start`` (None: NoData)."""
    return -2 if rows_start is None else len(rows_start.columns)


class QueryPhase(enum.Enum):
    CLOSING = "Closing statements"
    PARSING = "Parsing"
    BINDING = "Binding"
    DESCRIBING = "Describing"
    EXECUTING = "Executing"
    ROWS = "reading DataRows"
    COPY_IN = "copying in"
    COPY_IN_ENDED = "copy in ended"
    COPY_OUT = "copying out"
    COPY_OUT_ENDED = "copy out ended"
    AWAIT_READY = "waiting for ReadyForQuery"
    DONE = "done"


PHASE_TAG_DURING_ROWS = "Error during query execution (despite parsing ok)"
PHASE_TAG_AFTER_COMPLETE = "Error waiting for ReadyForQuery (after query execution finished)"


class QueryConversation:
    """Parse, Bind, Describe (portal), Execute, Sync: the replies, in order.

    With a statement cache the exchange may start with ``closes`` Close (statement)
    messages, and a query binding a statement prepared earlier sends no Parse
    (``parse=False``): the replies then start with CloseComplete, or at BindComplete.
    Nor does one binding a statement already described (see ``skip_describe``): no
    RowDescription or NoData then comes, and what it would have said is known.

    DataRows are not fed here: while ``phase`` is ROWS the driver decodes them in
    batches straight from the buffer (see ``ReceiveBuffer.take_data_rows``) and feeds
    only what is not a DataRow.
    """

    __slots__ = (
        "closes_owed",
        "columns",
        "described",
        "error_seen",
        "failed_in",
        "known_columns",
        "parse_owed",
        "phase",
        "rows_start",
    )

    def __init__(self, parse: bool = True, closes: int = 0) -> None:
        # ParseComplete still to come: it stays True if the Parse failed.
        self.parse_owed = parse
        self.closes_owed = closes
        if closes:
            self.phase = QueryPhase.CLOSING
        else:
            self.phase = QueryPhase.PARSING if parse else QueryPhase.BINDING
        self.columns: tuple[ColumnMetadata, ...] | None = None
        # scan_reply's argument: -1 while the exchange has a Describe (portal). Once its
        # answer is here (or, without one, from the start) ``described`` is True and
        # ``rows_start`` is what it said: the columns, or None for NoData.
        self.known_columns = -1
        self.described = False
        self.rows_start: RowsStart | None = None
        self.error_seen = False
        # The phase the server's error arrived in (None: no error).
        self.failed_in: QueryPhase | None = None

    def skip_describe(self, rows_start: RowsStart | None) -> None:
        """No Describe was sent: the statement is known to give ``rows_start`` (None:
        no rows). At BindComplete the exchange goes on as if that had been the answer,
        so callers see the same events (and error phases) as with a Describe."""
        self.known_columns = known_columns_of(rows_start)
        self.described = True
        self.rows_start = rows_start

    def _bound(self) -> RowsStart | None:
        """BindComplete arrived."""
        if self.known_columns == -1:
            self.phase = QueryPhase.DESCRIBING
            return None
        rows_start = self.rows_start
        if rows_start is None:
            self.phase = QueryPhase.EXECUTING
            return None
        self.columns = rows_start.columns
        self.phase = QueryPhase.ROWS
        return rows_start

    @property
    def at_start(self) -> bool:
        """Nothing but CloseCompletes consumed yet: the ordinary reply may follow."""
        phase = self.phase
        return phase is QueryPhase.PARSING or (phase is QueryPhase.BINDING and not self.parse_owed)

    def copy_in_ended(self) -> None:
        """The client sent CopyDone or CopyFail (and a Sync)."""
        if self.phase is QueryPhase.COPY_IN:
            self.phase = QueryPhase.COPY_IN_ENDED

    def take_parse_bind_complete(self, buffer: ReceiveBuffer) -> bool:
        """At the start, consume (ParseComplete +) BindComplete in one step if already
        buffered (they always arrive together with what follows)."""
        if not self.at_start or self.known_columns != -1:
            return False  # without a Describe, BindComplete may start the rows: an event
        if buffer.skip(_PARSE_BIND_COMPLETE if self.parse_owed else _BIND_COMPLETE_MESSAGE):
            self.parse_owed = False
            self.phase = QueryPhase.DESCRIBING
            return True
        return False

    def take_ordinary_reply(self, buffer: ReceiveBuffer, row_limit: int) -> OrdinaryReply | None:
        """At the start, the whole reply in one step when it is the ordinary kind
        (no error, notice or COPY; see ``ReceiveBuffer.take_ordinary_reply``)."""
        phase = self.phase  # at_start, inlined: this runs for every query
        if not (
            phase is QueryPhase.PARSING or (phase is QueryPhase.BINDING and not self.parse_owed)
        ):
            return None
        if self.known_columns == -1:
            found = buffer.take_ordinary_reply(row_limit, self.parse_owed)
            if found is None:
                return None
            description, rows, tag, status = found
            columns = None
            if description is not None:
                columns = describe_rows(description)
                self.columns = columns.columns
            self.rows_start = columns
            self.described = True
        else:
            found = buffer.take_ordinary_reply(row_limit, self.parse_owed, self.known_columns)
            if found is None:
                return None
            _, rows, tag, status = found
            columns = self.rows_start
            if columns is not None:
                self.columns = columns.columns
        self.parse_owed = False
        self.phase = QueryPhase.DONE
        return columns, rows, tag, TRANSACTION_STATUS_BY_BYTE[status]

    def handle_frame(self, type_code: int, payload: bytes) -> QueryEvent | None:
        """``handle`` for a raw frame, with the replies every query gets taken without
        building message objects (the per-query cost that matters at 50k queries/s).
        Anything unusual goes through the full decoder and ``handle``."""
        phase = self.phase
        if type_code == _PARSE_COMPLETE:
            if phase is QueryPhase.PARSING:
                self.parse_owed = False
                self.phase = QueryPhase.BINDING
                return None
        elif type_code == _BIND_COMPLETE:
            if phase is QueryPhase.BINDING:
                return self._bound()
        elif type_code == _COMMAND_COMPLETE:
            if phase is QueryPhase.ROWS or phase is QueryPhase.EXECUTING:
                tag = command_tag(payload)
                if tag is not None:
                    self.phase = QueryPhase.AWAIT_READY
                    return Completed(tag)
        elif type_code == _READY:
            if phase is QueryPhase.AWAIT_READY:
                status = _READY_STATUS.get(payload)
                if status is not None:
                    self.phase = QueryPhase.DONE
                    return Ready(status)
        elif type_code == _NO_DATA and phase is QueryPhase.DESCRIBING:
            self.phase = QueryPhase.EXECUTING
            self.described = True
            return None
        elif type_code == _ROW_DESCRIPTION and phase is QueryPhase.DESCRIBING:
            event = describe_rows(payload)
            self.columns = event.columns
            self.phase = QueryPhase.ROWS
            self.rows_start = event
            self.described = True
            return event
        return self.handle(decode_backend(type_code, payload))

    def handle(self, message: BackendMessage) -> QueryEvent | None:
        phase = self.phase
        if isinstance(message, ErrorResponse):
            return self._error(message)
        if isinstance(message, ReadyForQuery):
            # Only legal once the exchange is over or after an error; anything else
            # means the server skipped replies we are owed.
            if phase is QueryPhase.AWAIT_READY:
                self.phase = QueryPhase.DONE
                return Ready(message.status)
            raise _unexpected(message, phase.value)
        if phase is QueryPhase.CLOSING and isinstance(message, CloseComplete):
            self.closes_owed -= 1
            if not self.closes_owed:
                self.phase = QueryPhase.PARSING if self.parse_owed else QueryPhase.BINDING
            return None
        if phase is QueryPhase.PARSING and isinstance(message, ParseComplete):
            self.parse_owed = False
            self.phase = QueryPhase.BINDING
            return None
        if phase is QueryPhase.BINDING and isinstance(message, BindComplete):
            return self._bound()
        if phase is QueryPhase.DESCRIBING:
            if isinstance(message, RowDescription):
                self.columns = message.columns
                self.phase = QueryPhase.ROWS
                event = RowsStart(message.columns, tuple(c.name for c in message.columns))
                self.rows_start = event
                self.described = True
                return event
            if isinstance(message, NoData):
                self.phase = QueryPhase.EXECUTING
                self.described = True
                return None
        if phase is QueryPhase.EXECUTING:
            if isinstance(message, CommandComplete):
                self.phase = QueryPhase.AWAIT_READY
                return Completed(message.tag)
            if isinstance(message, EmptyQueryResponse):
                self.phase = QueryPhase.AWAIT_READY
                return Completed("")
            if isinstance(message, CopyInResponse):
                self.phase = QueryPhase.COPY_IN
                return CopyInStart(message.overall_format, message.column_formats)
            if isinstance(message, CopyOutResponse):
                self.phase = QueryPhase.COPY_OUT
                return CopyOutStart(message.overall_format, message.column_formats)
            if isinstance(message, CopyBothResponse):
                raise protocol_violation("CopyBothResponse: replication was not requested")
        if phase is QueryPhase.ROWS and isinstance(message, CommandComplete):
            self.phase = QueryPhase.AWAIT_READY
            return Completed(message.tag)
        if phase is QueryPhase.COPY_OUT:
            if isinstance(message, CopyData):
                return CopyOutData(message.data)
            if isinstance(message, CopyDone):
                self.phase = QueryPhase.COPY_OUT_ENDED
                return None
            if isinstance(message, CommandComplete):
                raise protocol_violation("CommandComplete before CopyDone?")
        if phase is QueryPhase.COPY_OUT_ENDED:
            if isinstance(message, CommandComplete):
                self.phase = QueryPhase.AWAIT_READY
                return Completed(message.tag)
            if isinstance(message, CopyData):
                raise protocol_violation("CopyData message after CopyDone?")
        if phase is QueryPhase.COPY_IN and isinstance(message, CommandComplete):
            raise protocol_violation("CommandComplete response before we sent CopyDone?")
        if phase is QueryPhase.COPY_IN_ENDED and isinstance(message, CommandComplete):
            self.phase = QueryPhase.AWAIT_READY
            return Completed(message.tag)
        raise _unexpected(message, phase.value)

    def _error(self, message: ErrorResponse) -> ServerError:
        phase = self.phase
        if phase is QueryPhase.AWAIT_READY and self.error_seen:
            raise _unexpected(message, phase.value)
        if phase is QueryPhase.DONE:
            raise _unexpected(message, phase.value)
        self.error_seen = True
        self.failed_in = phase
        self.phase = QueryPhase.AWAIT_READY
        if phase in (
            QueryPhase.CLOSING,
            QueryPhase.PARSING,
            QueryPhase.BINDING,
            QueryPhase.DESCRIBING,
            QueryPhase.EXECUTING,
        ):
            tag: str | None = f"Postgres Server Error (state={phase.value})"
        elif phase is QueryPhase.ROWS:
            tag = PHASE_TAG_DURING_ROWS
        elif phase is QueryPhase.AWAIT_READY:
            tag = PHASE_TAG_AFTER_COMPLETE
        else:
            tag = None  # COPY errors carry no phase tag
        return ServerError(message.fields, tag)


# ------------------------------------------------------------------------ simple query
SIMPLE_QUERY_ERROR_TAG = "Postgres Server Error"


class SimpleQueryConversation:
    """A ``Query`` message: any number of result sets, then one ReadyForQuery.

    Shares ``phase`` values with QueryConversation so the driver's batch path for
    DataRows (phase ROWS) works for both.
    """

    __slots__ = ("columns", "error_seen", "phase")

    def __init__(self) -> None:
        self.phase = QueryPhase.EXECUTING
        self.columns: tuple[ColumnMetadata, ...] | None = None
        self.error_seen = False

    def copy_in_ended(self) -> None:
        if self.phase is QueryPhase.COPY_IN:
            self.phase = QueryPhase.EXECUTING

    def take_parse_bind_complete(self, buffer: ReceiveBuffer) -> bool:
        return False  # the simple protocol has no Parse or Bind

    def take_ordinary_reply(self, buffer: ReceiveBuffer, row_limit: int) -> OrdinaryReply | None:
        return None

    def handle_frame(self, type_code: int, payload: bytes) -> QueryEvent | None:
        """``handle`` for a raw frame; the replies every statement gets without
        building message objects, as ``QueryConversation.handle_frame`` does."""
        phase = self.phase
        if type_code == _COMMAND_COMPLETE:
            if phase is QueryPhase.EXECUTING or phase is QueryPhase.ROWS:
                tag = command_tag(payload)
                if tag is not None:
                    self.phase = QueryPhase.EXECUTING
                    return Completed(tag)
        elif type_code == _READY and phase is QueryPhase.EXECUTING:
            status = _READY_STATUS.get(payload)
            if status is not None:
                self.phase = QueryPhase.DONE
                return Ready(status)
        return self.handle(decode_backend(type_code, payload))

    def handle(self, message: BackendMessage) -> QueryEvent | None:
        phase = self.phase
        if isinstance(message, ErrorResponse):
            if phase is QueryPhase.DONE:
                raise _unexpected(message, phase.value)
            self.error_seen = True
            # After an error the server skips the rest of the string; a COPY IN it
            # was in has ended with it.
            self.phase = QueryPhase.EXECUTING
            return ServerError(message.fields, SIMPLE_QUERY_ERROR_TAG)
        if phase is QueryPhase.EXECUTING:
            if isinstance(message, ReadyForQuery):
                self.phase = QueryPhase.DONE
                return Ready(message.status)
            if isinstance(message, RowDescription):
                self.columns = message.columns
                self.phase = QueryPhase.ROWS
                return RowsStart(message.columns, tuple(c.name for c in message.columns))
            if isinstance(message, CommandComplete):
                return Completed(message.tag)
            if isinstance(message, EmptyQueryResponse):
                return None
            if isinstance(message, CopyInResponse):
                self.phase = QueryPhase.COPY_IN
                return CopyInStart(message.overall_format, message.column_formats)
            if isinstance(message, CopyOutResponse):
                self.phase = QueryPhase.COPY_OUT
                return CopyOutStart(message.overall_format, message.column_formats)
        if phase is QueryPhase.ROWS and isinstance(message, CommandComplete):
            self.phase = QueryPhase.EXECUTING
            return Completed(message.tag)
        if phase is QueryPhase.COPY_OUT:
            if isinstance(message, CopyData):
                return CopyOutData(message.data)
            if isinstance(message, CopyDone):
                self.phase = QueryPhase.COPY_OUT_ENDED
                return None
        if phase is QueryPhase.COPY_OUT_ENDED and isinstance(message, CommandComplete):
            self.phase = QueryPhase.EXECUTING
            return Completed(message.tag)
        raise _unexpected(message, phase.value)
