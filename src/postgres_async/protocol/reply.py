"""The whole reply to an ordinary extended-protocol query, recognised in one call.

Almost every query gets the same reply: ParseComplete, BindComplete, RowDescription
(or NoData), some DataRows, CommandComplete, ReadyForQuery (without the RowDescription
or NoData when the client knew the statement's result already and sent no Describe).
``scan_reply`` takes all of it at once when all of it is already buffered and every
message is well-formed; anything else (a message not all here yet, an error, a notice,
a parameter status, a notification, COPY, an empty query, any malformation) is "not the
ordinary case" and answered with None, so that the caller reads the messages one by one
as before, where problems are reported properly.

It accepts only what that message-by-message path accepts, with the same results: so
besides the shape of each message, every length is held to ``max_length`` as
``ReceiveBuffer.next_frame`` does, and the RowDescription is one that
``RowDescription.decode`` accepts (format codes 0 or 1).

This module is the specification, written to be read; the compiled twin
``postgres_async._speedups.scan_reply`` (bound in ``_accel``) must give identical
results for any input, which tests/unit/test_reply_scan.py checks.
"""

from __future__ import annotations

import struct

__all__ = ["COMMAND_COMPLETE_LIMIT", "Reply", "command_tag", "scan_reply"]

_INT16 = struct.Struct("!h")
_UINT16 = struct.Struct("!H")
_INT32 = struct.Struct("!i")

_PARSE_COMPLETE = ord("1")
_BIND_COMPLETE = ord("2")
_NO_DATA = ord("n")
_ROW_DESCRIPTION = ord("T")
_DATA_ROW = ord("D")
_COMMAND_COMPLETE = ord("C")
_READY_FOR_QUERY = ord("Z")
_TRANSACTION_STATUSES = b"ITE"

#: The greatest length field of a CommandComplete (``buffer.SHORT_MESSAGE_LIMIT``: no
#: honest message of a short type is longer).
COMMAND_COMPLETE_LIMIT = 30000
# What follows a column's name in a RowDescription: table OID (4), column number (2),
# type OID (4), type size (2), type modifier (4), format code (2).
_FIELD_TAIL = 18

#: (position just after the ReadyForQuery, RowDescription payload or None for NoData,
#: rows, command tag, transaction status byte)
Reply = tuple[int, bytes | None, list[tuple[str | None, ...]], str, int]


def scan_reply(
    data: bytes | bytearray,
    pos: int,
    max_length: int,
    row_limit: int,
    parsed: bool = True,
    known_columns: int = -1,
) -> Reply | None:
    """The ordinary reply that starts at ``data[pos]``, if all of it is there, else None.

    The reply is ParseComplete (only if ``parsed``: a query binding a statement
    prepared earlier sends no Parse), BindComplete, then NoData or a RowDescription
    followed by at most ``row_limit`` DataRows, then CommandComplete and ReadyForQuery,
    each message whole and well-formed, nothing else in between.

    ``known_columns`` other than -1 says no Describe was sent, because the caller
    already knows the statement's result: -2 for no rows (CommandComplete follows
    BindComplete), n >= 0 for rows of n columns (at most ``row_limit`` DataRows of
    exactly n columns follow BindComplete). There is then no NoData or RowDescription,
    and the description returned is None.

    Never raises for any bytes; a negative ``pos``, or ``known_columns`` below -2, is a
    ValueError.
    """
    if pos < 0:
        raise ValueError("scan_reply: pos must not be negative")
    if known_columns < -2:
        raise ValueError("scan_reply: known_columns must be -2, -1 or a column count")

    if parsed:
        message = _message(data, pos, max_length)
        if message is None or message[0] != _PARSE_COMPLETE or message[1] != message[2]:
            return None
        pos = message[2]
    message = _message(data, pos, max_length)
    if message is None or message[0] != _BIND_COMPLETE or message[1] != message[2]:
        return None

    message = _message(data, message[2], max_length)
    description: bytes | None = None
    column_count: int | None = None  # None: no DataRow may follow
    if known_columns == -1:
        # Described: NoData or a RowDescription says what follows.
        if message is None:
            return None
        kind, start, end = message
        if kind == _NO_DATA:
            if start != end:
                return None
        elif kind == _ROW_DESCRIPTION:
            description = bytes(data[start:end])
            column_count = _column_count(description)
            if column_count is None:
                return None
        else:
            return None
        message = _message(data, end, max_length)
    elif known_columns >= 0:
        column_count = known_columns
    rows: list[tuple[str | None, ...]] = []
    if column_count is not None:
        while message is not None and message[0] == _DATA_ROW:
            row = _data_row(data, message[1], message[2], column_count)
            if row is None:
                return None
            rows.append(row)
            message = _message(data, message[2], max_length)
    if len(rows) > row_limit:
        return None

    if message is None or message[0] != _COMMAND_COMPLETE:
        return None
    kind, start, end = message
    # The length field (payload + 4) is at least 5: the tag's NUL is always there.
    if not 5 <= end - start + 4 <= COMMAND_COMPLETE_LIMIT:
        return None
    tag = command_tag(bytes(data[start:end]))
    if tag is None:
        return None

    message = _message(data, end, max_length)
    if message is None or message[0] != _READY_FOR_QUERY or message[2] - message[1] != 1:
        return None
    status = data[message[1]]
    if status not in _TRANSACTION_STATUSES:
        return None
    return message[2], description, rows, tag, status


def _message(data: bytes | bytearray, pos: int, max_length: int) -> tuple[int, int, int] | None:
    """(type byte, payload start, payload end) of the whole message at ``data[pos]``.

    None if its header or any of its payload is not there yet, or its length field is
    below 4 (the length counts itself) or too long for ``max_length`` (which counts the
    type byte as well).
    """
    if len(data) - pos < 5:
        return None
    (length,) = _INT32.unpack_from(data, pos + 1)
    if length < 4 or length + 1 > max_length:
        return None
    end = pos + 1 + length
    if end > len(data):
        return None
    return data[pos], pos + 5, end


def _column_count(payload: bytes) -> int | None:
    """The number of columns of a well-formed RowDescription payload, else None."""
    if len(payload) < 2:
        return None
    (count,) = _UINT16.unpack_from(payload, 0)
    p = 2
    for _ in range(count):
        nul = payload.find(b"\0", p)
        if nul < 0:
            return None
        try:
            payload[p:nul].decode()
        except UnicodeDecodeError:
            return None
        p = nul + 1 + _FIELD_TAIL
        if p > len(payload):
            return None
        (format_code,) = _INT16.unpack_from(payload, p - 2)
        if format_code not in (0, 1):
            return None
    if p != len(payload):
        return None
    return int(count)


def _data_row(
    data: bytes | bytearray, start: int, end: int, column_count: int
) -> tuple[str | None, ...] | None:
    """The values of the well-formed DataRow payload ``data[start:end]``, else None."""
    if end - start < 2:
        return None
    (count,) = _UINT16.unpack_from(data, start)
    if count != column_count:
        return None
    p = start + 2
    values: list[str | None] = []
    for _ in range(count):
        if end - p < 4:
            return None
        (size,) = _INT32.unpack_from(data, p)
        p += 4
        if size == -1:
            values.append(None)
            continue
        if size < 0 or size > end - p:
            return None
        try:
            values.append(data[p : p + size].decode())
        except UnicodeDecodeError:
            return None
        p += size
    if p != end:
        return None
    return tuple(values)


def command_tag(payload: bytes) -> str | None:
    """The tag of a CommandComplete payload: UTF-8 with one NUL, at its end; None for
    anything else (the full decoder then reports what is wrong)."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        return None
    try:
        return payload[:-1].decode()
    except UnicodeDecodeError:
        return None
