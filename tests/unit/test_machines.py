"""LoginConversation and QueryConversation: which server message may follow which.

Happy paths give the events the driver acts on; errors carry upstream's phase tags;
every message out of order is a protocol violation (08P01) naming the message and the
state, as in upstream's ``test_server_failure`` (3.9 items 2 and 3).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postgres_async.errors import PgasyncError
from postgres_async.protocol import (
    AuthenticationCleartextPassword,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    AuthRequested,
    BackendKeyData,
    BackendMessage,
    BindComplete,
    CloseComplete,
    ColumnMetadata,
    CommandComplete,
    Completed,
    CopyBothResponse,
    CopyData,
    CopyDone,
    CopyInResponse,
    CopyInStart,
    CopyOutData,
    CopyOutResponse,
    CopyOutStart,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    FunctionCallResponse,
    KeyReceived,
    LoginConversation,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    ParseComplete,
    PortalSuspended,
    QueryConversation,
    QueryPhase,
    Ready,
    ReadyForQuery,
    RowDescription,
    RowsStart,
    ServerError,
    SimpleQueryConversation,
    TransactionStatus,
    decode_backend,
)
from postgres_async.protocol.machines import PHASE_TAG_AFTER_COMPLETE, PHASE_TAG_DURING_ROWS

IDLE = ReadyForQuery(TransactionStatus.IDLE)
IN_TX = ReadyForQuery(TransactionStatus.IN_TRANSACTION)
FAILED_TX = ReadyForQuery(TransactionStatus.IN_FAILED_TRANSACTION)
PC = ParseComplete()
BC = BindComplete()
COLUMNS = (ColumnMetadata("A", 25), ColumnMetadata("B", 23))
T = RowDescription(COLUMNS)
T0 = RowDescription(())
ND = NoData()
ERROR_FIELDS = {"S": "ERROR", "V": "ERROR", "C": "42601", "M": "syntax error"}
ERR = ErrorResponse(ERROR_FIELDS)


def feed(machine: QueryConversation, messages: Sequence[BackendMessage]) -> list[object]:
    return [machine.handle(m) for m in messages]


def phase(q: QueryConversation) -> QueryPhase:
    # A function, so that mypy does not keep an earlier narrowing across handle() calls.
    return q.phase


def is_rows_start(event: object, columns: tuple[ColumnMetadata, ...]) -> bool:
    return isinstance(event, RowsStart) and event.columns == columns


def assert_violation(exc: BaseException, *fragments: str) -> None:
    assert isinstance(exc, PgasyncError)
    assert exc.postgres_error_code == "08P01", repr(exc)
    for fragment in fragments:
        assert fragment in str(exc), str(exc)


# ------------------------------------------------------------------ query: happy paths


def test_select_with_rows() -> None:
    q = QueryConversation()
    assert phase(q) is QueryPhase.PARSING
    assert q.handle(PC) is None
    assert phase(q) is QueryPhase.BINDING
    assert q.handle(BC) is None
    assert phase(q) is QueryPhase.DESCRIBING
    assert is_rows_start(q.handle(T), COLUMNS)
    assert phase(q) is QueryPhase.ROWS
    assert q.columns == COLUMNS
    # DataRows go through ReceiveBuffer.take_data_rows, not the machine.
    assert q.handle(CommandComplete("SELECT 2")) == Completed("SELECT 2")
    assert phase(q) is QueryPhase.AWAIT_READY
    assert q.handle(IDLE) == Ready(TransactionStatus.IDLE)
    assert phase(q) is QueryPhase.DONE
    assert not q.error_seen


def test_select_with_zero_columns() -> None:
    # Upstream 3.9 item 3: `T\0\0\0\x06\0\0` then C and Z.
    q = QueryConversation()
    events = feed(q, [PC, BC, T0, CommandComplete("_"), IDLE])
    assert events[:2] == [None, None]
    assert is_rows_start(events[2], ())
    assert events[3:] == [Completed("_"), Ready(TransactionStatus.IDLE)]


def test_statement_without_rows() -> None:
    q = QueryConversation()
    events = feed(q, [PC, BC, ND])
    assert events == [None, None, None]
    assert phase(q) is QueryPhase.EXECUTING
    assert q.columns is None
    assert q.handle(CommandComplete("INSERT 0 1")) == Completed("INSERT 0 1")
    assert q.handle(IN_TX) == Ready(TransactionStatus.IN_TRANSACTION)


def test_empty_query() -> None:
    # Upstream 3.9 item 3: 1, 2, n, I, Z is Ok.
    q = QueryConversation()
    events = feed(q, [PC, BC, ND, EmptyQueryResponse(), IDLE])
    assert events == [None, None, None, Completed(""), Ready(TransactionStatus.IDLE)]


@pytest.mark.parametrize("status", list(TransactionStatus))
def test_ready_status_is_passed_on(status: TransactionStatus) -> None:
    q = QueryConversation()
    feed(q, [PC, BC, ND, CommandComplete("BEGIN")])
    assert q.handle(ReadyForQuery(status)) == Ready(status)


def test_copy_in() -> None:
    q = QueryConversation()
    feed(q, [PC, BC, ND])
    assert q.handle(CopyInResponse(0, (0, 0))) == CopyInStart(0, (0, 0))
    assert phase(q) is QueryPhase.COPY_IN
    q.copy_in_ended()
    assert phase(q) is QueryPhase.COPY_IN_ENDED
    q.copy_in_ended()  # idempotent
    assert phase(q) is QueryPhase.COPY_IN_ENDED
    assert q.handle(CommandComplete("COPY 2")) == Completed("COPY 2")
    assert q.handle(IDLE) == Ready(TransactionStatus.IDLE)


def test_copy_in_ended_outside_copy_is_a_no_op() -> None:
    q = QueryConversation()
    q.copy_in_ended()
    assert phase(q) is QueryPhase.PARSING
    feed(q, [PC, BC, T])
    q.copy_in_ended()
    assert phase(q) is QueryPhase.ROWS


def test_copy_out() -> None:
    q = QueryConversation()
    feed(q, [PC, BC, ND])
    assert q.handle(CopyOutResponse(1, (1,))) == CopyOutStart(1, (1,))
    assert phase(q) is QueryPhase.COPY_OUT
    assert q.handle(CopyData(b"1\ta\n")) == CopyOutData(b"1\ta\n")
    assert q.handle(CopyData(b"")) == CopyOutData(b"")
    assert q.handle(CopyDone()) is None
    assert phase(q) is QueryPhase.COPY_OUT_ENDED
    assert q.handle(CommandComplete("COPY 1")) == Completed("COPY 1")
    assert q.handle(IDLE) == Ready(TransactionStatus.IDLE)


def test_copy_out_with_no_data() -> None:
    q = QueryConversation()
    events = feed(q, [PC, BC, ND, CopyOutResponse(0, ()), CopyDone(), CommandComplete("COPY 0")])
    assert events == [None, None, None, CopyOutStart(0, ()), None, Completed("COPY 0")]


# ------------------------------------------------------------------- query: errors


# --------------------------------------------- query: statement cache (closes, no Parse)


def test_bound_statement_starts_at_bind_complete() -> None:
    q = QueryConversation(parse=False)
    assert phase(q) is QueryPhase.BINDING
    assert not q.parse_owed
    events = feed(q, [BC, T, CommandComplete("SELECT 0"), IDLE])
    assert events[0] is None
    assert is_rows_start(events[1], COLUMNS)
    assert events[2:] == [Completed("SELECT 0"), Ready(TransactionStatus.IDLE)]


def test_closes_come_first_then_parse() -> None:
    q = QueryConversation(parse=True, closes=2)
    assert phase(q) is QueryPhase.CLOSING
    assert feed(q, [CloseComplete(), CloseComplete()]) == [None, None]
    assert phase(q) is QueryPhase.PARSING
    assert q.parse_owed
    assert feed(q, [PC, BC, ND, CommandComplete("INSERT 0 1"), IDLE])[-1] == Ready(
        TransactionStatus.IDLE
    )
    assert not q.parse_owed


def test_closes_before_a_bound_statement() -> None:
    q = QueryConversation(parse=False, closes=1)
    assert q.handle(CloseComplete()) is None
    assert phase(q) is QueryPhase.BINDING
    assert q.handle(BC) is None
    assert phase(q) is QueryPhase.DESCRIBING


def _known(rows: RowsStart | None, parse: bool = False) -> QueryConversation:
    q = QueryConversation(parse=parse)
    q.skip_describe(rows)
    return q


KNOWN_ROWS = RowsStart(COLUMNS, ("A", "B"))


def test_a_described_statement_starts_its_rows_at_bind_complete() -> None:
    # No Describe was sent: BindComplete says what its RowDescription would have.
    q = _known(KNOWN_ROWS)
    assert q.described
    assert q.known_columns == 2
    events = feed(q, [BC, CommandComplete("SELECT 0"), IDLE])
    assert events[0] is KNOWN_ROWS
    assert q.columns == COLUMNS
    assert events[1:] == [Completed("SELECT 0"), Ready(TransactionStatus.IDLE)]


def test_a_described_statement_of_no_rows_goes_on_to_execute() -> None:
    q = _known(None, parse=True)
    assert q.known_columns == -2
    assert feed(q, [PC, BC]) == [None, None]
    assert phase(q) is QueryPhase.EXECUTING
    assert feed(q, [CommandComplete("INSERT 0 1"), IDLE])[-1] == Ready(TransactionStatus.IDLE)


def test_a_described_statement_of_no_columns_has_rows() -> None:
    q = _known(RowsStart((), ()))
    assert q.known_columns == 0
    assert q.handle_frame(BC.encode()[0], b"") == RowsStart((), ())
    assert phase(q) is QueryPhase.ROWS


@pytest.mark.parametrize(
    ("rows", "before", "tag"),
    [
        (KNOWN_ROWS, [], "Postgres Server Error (state=Binding)"),
        (KNOWN_ROWS, [BC], PHASE_TAG_DURING_ROWS),
        (None, [BC], "Postgres Server Error (state=Executing)"),
    ],
)
def test_errors_of_a_described_statement_carry_the_tags_of_a_describe(
    rows: RowsStart | None, before: list[BackendMessage], tag: str
) -> None:
    # The same tags as after the RowDescription or NoData a Describe would have had.
    q = _known(rows)
    feed(q, before)
    assert q.handle(ERR) == ServerError(ERROR_FIELDS, tag)


@pytest.mark.parametrize("rows", [KNOWN_ROWS, None])
@pytest.mark.parametrize("answer", [T, ND])
def test_a_describe_answer_nobody_asked_for_is_a_violation(
    rows: RowsStart | None, answer: BackendMessage
) -> None:
    encoded = answer.encode()
    by_message, by_frame = _known(rows), _known(rows)
    by_message.handle(BC)
    by_frame.handle(BC)
    with pytest.raises(PgasyncError) as info:
        by_message.handle(answer)
    assert_violation(info.value, answer.NAME)
    with pytest.raises(PgasyncError) as info:
        by_frame.handle_frame(encoded[0], encoded[5:])
    assert_violation(info.value, answer.NAME)


def test_a_describe_answer_is_kept() -> None:
    q = QueryConversation(parse=False)
    assert not q.described
    assert q.known_columns == -1
    feed(q, [BC, T])
    assert q.described
    assert q.rows_start is not None
    assert q.rows_start.columns == COLUMNS
    q = QueryConversation(parse=False)
    feed(q, [BC, ND])
    assert q.described
    assert q.rows_start is None


@pytest.mark.parametrize(
    ("parse", "closes", "messages", "unexpected"),
    [
        (False, 0, [PC], "ParseComplete"),  # nothing was Parsed
        (True, 0, [CloseComplete()], "CloseComplete"),  # nothing was Closed
        (True, 1, [CloseComplete(), CloseComplete()], "CloseComplete"),  # one too many
        (True, 1, [PC], "ParseComplete"),  # the Close's reply is missing
        (False, 1, [BC], "BindComplete"),
        (True, 0, [BC], "BindComplete"),  # the Parse's reply is missing
    ],
)
def test_cached_shapes_out_of_order(
    parse: bool, closes: int, messages: list[BackendMessage], unexpected: str
) -> None:
    q = QueryConversation(parse=parse, closes=closes)
    with pytest.raises(PgasyncError) as info:
        feed(q, messages)
    assert_violation(info.value, unexpected)


def test_a_failed_parse_stays_owed() -> None:
    q = QueryConversation(parse=True, closes=1)
    feed(q, [CloseComplete()])
    event = q.handle(ERR)
    assert event == ServerError(ERROR_FIELDS, "Postgres Server Error (state=Parsing)")
    assert q.parse_owed  # the driver forgets the statement: it does not exist
    q.handle(IDLE)


def test_a_failed_bind_of_a_bound_statement_is_tagged_binding() -> None:
    q = QueryConversation(parse=False)
    assert q.handle(ERR) == ServerError(ERROR_FIELDS, "Postgres Server Error (state=Binding)")


def test_an_error_while_closing_is_tagged() -> None:
    q = QueryConversation(closes=1)
    assert q.handle(ERR) == ServerError(
        ERROR_FIELDS, "Postgres Server Error (state=Closing statements)"
    )


@pytest.mark.parametrize(
    ("before", "state"),
    [
        ([], "Parsing"),
        ([PC], "Binding"),
        ([PC, BC], "Describing"),
        ([PC, BC, ND], "Executing"),
    ],
)
def test_error_phase_tags_before_rows(before: list[BackendMessage], state: str) -> None:
    q = QueryConversation()
    feed(q, before)
    event = q.handle(ERR)
    assert event == ServerError(ERROR_FIELDS, f"Postgres Server Error (state={state})")
    assert q.error_seen
    assert phase(q) is QueryPhase.AWAIT_READY
    assert q.handle(FAILED_TX) == Ready(TransactionStatus.IN_FAILED_TRANSACTION)
    assert phase(q) is QueryPhase.DONE


def test_error_while_reading_rows() -> None:
    q = QueryConversation()
    feed(q, [PC, BC, T])
    event = q.handle(ERR)
    assert event == ServerError(ERROR_FIELDS, "Error during query execution (despite parsing ok)")
    assert PHASE_TAG_DURING_ROWS == "Error during query execution (despite parsing ok)"
    assert q.handle(IDLE) == Ready(TransactionStatus.IDLE)


def test_error_after_command_complete() -> None:
    q = QueryConversation()
    feed(q, [PC, BC, ND, CommandComplete("COMMIT")])
    event = q.handle(ERR)
    tag = "Error waiting for ReadyForQuery (after query execution finished)"
    assert event == ServerError(ERROR_FIELDS, tag)
    assert tag == PHASE_TAG_AFTER_COMPLETE
    assert q.handle(IDLE) == Ready(TransactionStatus.IDLE)


@pytest.mark.parametrize(
    "before",
    [
        [PC, BC, ND, CopyInResponse(0, ())],
        [PC, BC, ND, CopyOutResponse(0, ())],
        [PC, BC, ND, CopyOutResponse(0, ()), CopyData(b"x"), CopyDone()],
    ],
)
def test_copy_errors_carry_no_phase_tag(before: list[BackendMessage]) -> None:
    q = QueryConversation()
    feed(q, before)
    assert q.handle(ERR) == ServerError(ERROR_FIELDS, None)
    assert q.handle(IDLE) == Ready(TransactionStatus.IDLE)


def test_copy_in_error_after_copy_done_sent() -> None:
    q = QueryConversation()
    feed(q, [PC, BC, ND, CopyInResponse(0, ())])
    q.copy_in_ended()
    assert q.handle(ERR) == ServerError(ERROR_FIELDS, None)
    assert q.handle(IDLE) == Ready(TransactionStatus.IDLE)


def test_server_error_becomes_a_tagged_pgasync_error() -> None:
    q = QueryConversation()
    feed(q, [PC])
    event = q.handle(ERR)
    assert isinstance(event, ServerError)
    err = PgasyncError.from_fields(event.fields, phase=event.phase)
    assert err.postgres_error_code == "42601"
    assert str(err).startswith("Postgres Server Error (state=Binding): ")


def test_fatal_error_during_rows_is_reported() -> None:
    # Upstream 3.9 item 1(a): pg_terminate_backend during a query: FATAL 57P01.
    fields = {"S": "FATAL", "C": "57P01", "M": "terminating connection"}
    q = QueryConversation()
    feed(q, [PC, BC, T])
    assert q.handle(ErrorResponse(fields)) == ServerError(fields, PHASE_TAG_DURING_ROWS)


@pytest.mark.parametrize(
    "after_error",
    [ERR, PC, BC, ND, T, CommandComplete("SELECT 1"), CopyData(b""), EmptyQueryResponse()],
)
def test_only_ready_for_query_may_follow_an_error(after_error: BackendMessage) -> None:
    q = QueryConversation()
    feed(q, [PC, ERR])
    with pytest.raises(PgasyncError) as info:
        q.handle(after_error)
    assert_violation(info.value, after_error.NAME, "'waiting for ReadyForQuery'")


@pytest.mark.parametrize("late", [IDLE, ERR, PC, CommandComplete("x"), CopyDone()])
def test_nothing_follows_ready_for_query(late: BackendMessage) -> None:
    q = QueryConversation()
    feed(q, [PC, BC, ND, CommandComplete("x"), IDLE])
    with pytest.raises(PgasyncError) as info:
        q.handle(late)
    assert_violation(info.value, late.NAME, "state 'done'")


# ------------------------------------------------------------- query: out of order

OUT_OF_ORDER: list[tuple[list[BackendMessage], BackendMessage, tuple[str, ...]]] = [
    # Upstream 3.9 item 3: 1 + `s` in state Binding; 1,2,T + `s` in "reading DataRows".
    ([PC], PortalSuspended(), ("PortalSuspended", "state 'Binding'")),
    ([PC, BC, T0], PortalSuspended(), ("PortalSuspended", "state 'reading DataRows'")),
    ([PC, BC, T], PortalSuspended(), ("PortalSuspended", "state 'reading DataRows'")),
    ([], PortalSuspended(), ("PortalSuspended", "state 'Parsing'")),
    ([], BC, ("BindComplete", "'Parsing'")),
    ([], IDLE, ("ReadyForQuery", "'Parsing'")),
    ([], CommandComplete("x"), ("CommandComplete", "'Parsing'")),
    ([], T, ("RowDescription", "'Parsing'")),
    ([], CloseComplete(), ("CloseComplete", "'Parsing'")),
    ([PC], PC, ("ParseComplete", "'Binding'")),
    ([PC], ND, ("NoData", "'Binding'")),
    ([PC], IDLE, ("ReadyForQuery", "'Binding'")),
    ([PC, BC], CommandComplete("x"), ("CommandComplete", "'Describing'")),
    ([PC, BC], DataRow(()), ("DataRow", "'Describing'")),
    ([PC, BC], ParameterDescription(()), ("ParameterDescription", "'Describing'")),
    ([PC, BC], EmptyQueryResponse(), ("EmptyQueryResponse", "'Describing'")),
    ([PC, BC], CopyInResponse(0, ()), ("CopyInResponse", "'Describing'")),
    ([PC, BC], IDLE, ("ReadyForQuery", "'Describing'")),
    ([PC, BC, ND], T, ("RowDescription", "'Executing'")),
    ([PC, BC, ND], DataRow(()), ("DataRow", "'Executing'")),
    ([PC, BC, ND], ND, ("NoData", "'Executing'")),
    ([PC, BC, ND], PortalSuspended(), ("PortalSuspended", "'Executing'")),
    ([PC, BC, ND], IDLE, ("ReadyForQuery", "'Executing'")),
    ([PC, BC, ND], CopyData(b"x"), ("CopyData", "'Executing'")),
    ([PC, BC, ND], CopyBothResponse(0, ()), ("CopyBothResponse", "replication")),
    ([PC, BC, T], IDLE, ("ReadyForQuery", "'reading DataRows'")),
    ([PC, BC, T], DataRow((b"a", b"b")), ("DataRow", "'reading DataRows'")),
    ([PC, BC, T], EmptyQueryResponse(), ("EmptyQueryResponse", "'reading DataRows'")),
    ([PC, BC, T], T, ("RowDescription", "'reading DataRows'")),
    ([PC, BC, T], CopyOutResponse(0, ()), ("CopyOutResponse", "'reading DataRows'")),
    ([PC, BC, ND, CommandComplete("x")], CommandComplete("y"), ("CommandComplete", "waiting")),
    ([PC, BC, ND, CommandComplete("x")], PC, ("ParseComplete", "'waiting for ReadyForQuery'")),
    ([PC, BC, ND, EmptyQueryResponse()], EmptyQueryResponse(), ("EmptyQueryResponse",)),
    # COPY: upstream's own wording for the impossible orders.
    ([PC, BC, ND, CopyOutResponse(0, ())], CommandComplete("COPY 0"), ("before CopyDone",)),
    ([PC, BC, ND, CopyOutResponse(0, ()), CopyDone()], CopyData(b"x"), ("after CopyDone",)),
    ([PC, BC, ND, CopyInResponse(0, ())], CommandComplete("COPY 0"), ("before we sent CopyDone",)),
    ([PC, BC, ND, CopyInResponse(0, ())], CopyData(b"x"), ("CopyData", "'copying in'")),
    ([PC, BC, ND, CopyInResponse(0, ())], IDLE, ("ReadyForQuery", "'copying in'")),
    ([PC, BC, ND, CopyOutResponse(0, ())], IDLE, ("ReadyForQuery", "'copying out'")),
    ([PC, BC, ND, CopyOutResponse(0, ())], ND, ("NoData", "'copying out'")),
    ([PC, BC, ND, CopyOutResponse(0, ()), CopyDone()], CopyDone(), ("CopyDone", "copy out ended")),
    ([PC, BC, ND, CopyOutResponse(0, ()), CopyDone()], IDLE, ("ReadyForQuery", "copy out ended")),
    # Login-only and asynchronous messages never reach a query machine.
    ([], AuthenticationOk(), ("AuthenticationRequest", "'Parsing'")),
    ([PC, BC, T], BackendKeyData(1, 2), ("BackendKeyData", "'reading DataRows'")),
    ([PC], NoticeResponse({"M": "x"}), ("NoticeResponse", "'Binding'")),
    ([PC], ParameterStatus("a", "b"), ("ParameterStatus", "'Binding'")),
    ([PC], NotificationResponse(1, "c", "p"), ("NotificationResponse", "'Binding'")),
    ([PC, BC, ND], FunctionCallResponse(None), ("FunctionCallResponse", "'Executing'")),
    ([PC], NegotiateProtocolVersion(0, ()), ("NegotiateProtocolVersion", "'Binding'")),
]


@pytest.mark.parametrize(
    ("before", "message", "fragments"),
    OUT_OF_ORDER,
    ids=[f"{len(b)}-{m.NAME}" for b, m, _ in OUT_OF_ORDER],
)
def test_query_out_of_order_is_a_violation(
    before: list[BackendMessage], message: BackendMessage, fragments: tuple[str, ...]
) -> None:
    q = QueryConversation()
    feed(q, before)
    with pytest.raises(PgasyncError) as info:
        q.handle(message)
    assert_violation(info.value, *fragments)


def test_violation_message_shape() -> None:
    q = QueryConversation()
    q.handle(PC)
    with pytest.raises(PgasyncError) as info:
        q.handle(PortalSuspended())
    assert info.value.message == "Unexpected message type PortalSuspended in state 'Binding'"


# ---------------------------------------------------------------------------- login


def test_login_trust() -> None:
    # Upstream 3.9 item 2: `R\0\0\0\x08\0\0\0\0` + `Z\0\0\0\x05I` is Ok.
    login = LoginConversation()
    assert login.handle(AuthenticationOk()) == AuthRequested(AuthenticationOk())
    assert login.handle(IDLE) == Ready(TransactionStatus.IDLE)
    assert login.done
    assert not login.failed
    assert login.backend_key is None


def test_login_md5_with_key() -> None:
    login = LoginConversation()
    md5 = AuthenticationMD5Password(b"salt")
    assert login.handle(md5) == AuthRequested(md5)
    assert login.handle(AuthenticationOk()) == AuthRequested(AuthenticationOk())
    assert login.handle(BackendKeyData(1234, 4444)) == KeyReceived(1234, 4444)
    assert login.backend_key == (1234, 4444)
    assert login.handle(IDLE) == Ready(TransactionStatus.IDLE)
    assert login.done


def test_login_sasl() -> None:
    login = LoginConversation()
    steps = [
        AuthenticationSASL(("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")),
        AuthenticationSASLContinue(b"r=abc,s=c2FsdA==,i=4096"),
        AuthenticationSASLFinal(b"v=c2ln"),
        AuthenticationOk(),
    ]
    for step in steps:
        event = login.handle(step)
        assert event == AuthRequested(step)
        assert isinstance(event, AuthRequested)
        assert event.request is step
    assert login.handle(BackendKeyData(9999, 2147483647)) == KeyReceived(9999, 2147483647)
    assert login.backend_key == (9999, 2147483647)
    assert login.handle(IDLE) == Ready(TransactionStatus.IDLE)


def test_login_error() -> None:
    fields = {"S": "FATAL", "C": "28P01", "M": "password authentication failed"}
    login = LoginConversation()
    login.handle(AuthenticationCleartextPassword())
    assert login.handle(ErrorResponse(fields)) == ServerError(fields, None)
    assert login.failed
    assert not login.done
    with pytest.raises(PgasyncError) as info:
        login.handle(IDLE)
    assert_violation(info.value, "ReadyForQuery")


def test_duplicate_backend_key_data() -> None:
    login = LoginConversation()
    login.handle(AuthenticationOk())
    login.handle(BackendKeyData(1, 2))
    with pytest.raises(PgasyncError) as info:
        login.handle(BackendKeyData(1, 2))
    assert_violation(info.value, "duplicate BackendKeyData")
    assert login.backend_key == (1, 2)


@pytest.mark.parametrize(
    "status", [TransactionStatus.IN_TRANSACTION, TransactionStatus.IN_FAILED_TRANSACTION]
)
def test_login_ready_must_be_idle(status: TransactionStatus) -> None:
    login = LoginConversation()
    login.handle(AuthenticationOk())
    with pytest.raises(PgasyncError) as info:
        login.handle(ReadyForQuery(status))
    assert_violation(info.value, "initial transaction status", repr(status.value))
    assert not login.done


@pytest.mark.parametrize(
    "message",
    [
        PortalSuspended(),  # upstream 3.9 item 2: `s\0\0\0\x04` during login
        PC,
        BC,
        ND,
        T,
        DataRow(()),
        CommandComplete("x"),
        EmptyQueryResponse(),
        CopyInResponse(0, ()),
        CopyData(b""),
        NegotiateProtocolVersion(0, ("_pq_.x",)),
        NoticeResponse({"M": "x"}),
    ],
)
def test_login_unexpected_message(message: BackendMessage) -> None:
    login = LoginConversation()
    login.handle(AuthenticationOk())
    with pytest.raises(PgasyncError) as info:
        login.handle(message)
    assert_violation(info.value, f"Unexpected message type {message.NAME} in state 'logging in'")


@pytest.mark.parametrize("late", [IDLE, AuthenticationOk(), BackendKeyData(3, 4), ERR])
def test_nothing_follows_login(late: BackendMessage) -> None:
    login = LoginConversation()
    login.handle(AuthenticationOk())
    login.handle(IDLE)
    with pytest.raises(PgasyncError) as info:
        login.handle(late)
    assert_violation(info.value, late.NAME)


# --------------------------------------------------------- any order: events or 08P01

ANY_MESSAGE = st.sampled_from(
    [
        PC,
        BC,
        ND,
        T,
        T0,
        ERR,
        IDLE,
        IN_TX,
        FAILED_TX,
        CommandComplete("SELECT 1"),
        EmptyQueryResponse(),
        PortalSuspended(),
        CopyInResponse(0, ()),
        CopyOutResponse(0, ()),
        CopyBothResponse(0, ()),
        CopyData(b"x"),
        CopyDone(),
        DataRow(()),
        AuthenticationOk(),
        AuthenticationMD5Password(b"salt"),
        BackendKeyData(1, 2),
        NoticeResponse({"M": "x"}),
    ]
)


@settings(max_examples=300)
@given(st.lists(ANY_MESSAGE, max_size=12), st.integers(min_value=0, max_value=12))
def test_query_machine_any_order(messages: list[BackendMessage], copy_end_at: int) -> None:
    q = QueryConversation()
    events: list[object] = []
    codes: list[str | None] = []
    for i, message in enumerate(messages):
        if i == copy_end_at:
            q.copy_in_ended()
        try:
            events.append(q.handle(message))
        except PgasyncError as exc:
            codes.append(exc.postgres_error_code)
            break
    assert codes in ([], ["08P01"])
    readies = [e for e in events if isinstance(e, Ready)]
    # Ready comes at most once, last, and only after a completion or an error.
    assert len(readies) <= 1
    if readies:
        assert events[-1] is readies[0]
        assert phase(q) is QueryPhase.DONE
        assert any(isinstance(e, Completed | ServerError) for e in events)
    assert sum(isinstance(e, ServerError) for e in events) <= 1


@settings(max_examples=300)
@given(st.lists(ANY_MESSAGE, max_size=8))
def test_login_machine_any_order(messages: list[BackendMessage]) -> None:
    login = LoginConversation()
    events: list[object] = []
    codes: list[str | None] = []
    for message in messages:
        try:
            events.append(login.handle(message))
        except PgasyncError as exc:
            codes.append(exc.postgres_error_code)
            break
    assert codes in ([], ["08P01"])
    assert sum(isinstance(e, KeyReceived) for e in events) <= 1
    assert sum(isinstance(e, Ready | ServerError) for e in events) <= 1
    if events and isinstance(events[-1], Ready):
        assert events[-1].status is TransactionStatus.IDLE
        assert login.done


# ------------------------------------------- raw-frame fast path agrees with handle()

# Frames as ReceiveBuffer delivers them (it enforces the exact length of 1, 2, n, Z...):
# valid messages, and damaged payloads for the types a fast path may special-case.
FRAMES: list[tuple[int, bytes]] = [
    (m.encode()[0], m.encode()[5:])
    for m in (
        PC,
        BC,
        ND,
        T,
        T0,
        ERR,
        IDLE,
        IN_TX,
        FAILED_TX,
        CommandComplete("SELECT 1"),
        CommandComplete(""),
        EmptyQueryResponse(),
        PortalSuspended(),
        CopyInResponse(0, ()),
        CopyOutResponse(0, ()),
        CopyData(b"x"),
        CopyDone(),
        DataRow(()),
    )
] + [
    (ord("C"), b"SELECT 1"),  # no terminator
    (ord("C"), b"a\0b\0"),  # trailing bytes
    (ord("C"), b"\xff\0"),  # invalid UTF-8
    (ord("Z"), b"X"),  # unknown status
    (ord("T"), b"\x0f\xff"),  # claims 4095 columns
    (ord("T"), b"\0\x01A\0" + b"\0" * 16 + b"\0\x02"),  # format 2
]


@settings(max_examples=400)
@given(st.lists(st.sampled_from(FRAMES), max_size=10), st.integers(0, 10))
def test_handle_frame_agrees_with_handle(frames: list[tuple[int, bytes]], copy_end_at: int) -> None:
    fast_machine = QueryConversation()
    handle_frame = getattr(fast_machine, "handle_frame", None)
    if handle_frame is None:
        pytest.skip("QueryConversation has no handle_frame fast path")
    slow_machine = QueryConversation()
    for i, (type_code, payload) in enumerate(frames):
        if i == copy_end_at:
            fast_machine.copy_in_ended()
            slow_machine.copy_in_ended()
        fast: object
        slow: object
        try:
            fast = handle_frame(type_code, payload)
        except PgasyncError as exc:
            fast = ("violation", exc.postgres_error_code)
        try:
            slow = slow_machine.handle(decode_backend(type_code, payload))
        except PgasyncError as exc:
            slow = ("violation", exc.postgres_error_code)
        assert fast == slow, (chr(type_code), payload)
        assert fast_machine.phase is slow_machine.phase
        assert fast_machine.columns == slow_machine.columns
        assert fast_machine.error_seen == slow_machine.error_seen
        if isinstance(slow, tuple):
            assert slow == ("violation", "08P01")
            break


# ------------------------------------------- frames vs messages: the same, both machines
def _event_or_error(step: Callable[[], object]) -> tuple[str, object]:
    try:
        return "event", step()
    except PgasyncError as error:
        return "error", (error.postgres_error_code, str(error))


# Raw frames, well-formed or not, of the types handle_frame takes without decoding.
_FRAMES = [
    (ord("C"), b"SELECT 1\0"),
    (ord("C"), b"\0"),
    (ord("C"), b""),
    (ord("C"), b"no terminator"),
    (ord("C"), b"two\0nuls\0"),
    (ord("C"), b"bad \xff utf8\0"),
    (ord("Z"), b"I"),
    (ord("Z"), b"T"),
    (ord("Z"), b"E"),
    (ord("Z"), b"X"),
    (ord("Z"), b"II"),
    (ord("T"), RowDescription(COLUMNS).encode()[5:]),
    (ord("n"), b""),
    (ord("1"), b""),
    (ord("2"), b""),
]


def _handle_decoded(machine: Any, type_code: int, payload: bytes) -> object:
    return machine.handle(decode_backend(type_code, payload))


def _same_machines(make: Callable[[], Any], frames: list[tuple[int, bytes]]) -> None:
    by_frame, by_message = make(), make()
    for type_code, payload in frames:
        framed = _event_or_error(functools.partial(by_frame.handle_frame, type_code, payload))
        decoded = _event_or_error(
            functools.partial(_handle_decoded, by_message, type_code, payload)
        )
        assert framed == decoded, (type_code, payload)
        assert by_frame.phase is by_message.phase
        if framed[0] == "error":
            return


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.sampled_from(_FRAMES), max_size=6))
def test_handle_frame_is_handle_of_the_decoded_message(frames: list[tuple[int, bytes]]) -> None:
    _same_machines(SimpleQueryConversation, frames)
    _same_machines(QueryConversation, frames)
    _same_machines(lambda: QueryConversation(parse=False), frames)
    _same_machines(lambda: _known(KNOWN_ROWS), frames)
    _same_machines(lambda: _known(None, parse=True), frames)
