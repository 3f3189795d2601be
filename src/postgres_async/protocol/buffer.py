"""The receive buffer: bytes in, whole frames (or batches of DataRows) out.

A bytearray plus a read offset: consuming a message only moves the offset, and the
consumed prefix is dropped when it outweighs what is left, so the cost is linear in the
bytes read. Every header is checked before waiting for a body: a nonsense length, an
unknown type byte, or a length larger than ``max_message_length`` (or larger than any
honest message of that type could be) is refused at once, so a lying server can never
make the client buffer a gigabyte it announced.
"""

from __future__ import annotations

import struct

from ._wire import protocol_violation
from .messages import BACKEND_TYPE_BYTES

_HEADER = struct.Struct("!ci")
_INT32 = struct.Struct("!i")
_UINT16 = struct.Struct("!H")

DEFAULT_MAX_MESSAGE_LENGTH = 1 << 30

# Types whose honest payload can be long; any other type claiming more than
# SHORT_MESSAGE_LIMIT bytes is a lie (the same rule libpq applies).
_LONG_TYPES = frozenset(b"TDdVENA")
SHORT_MESSAGE_LIMIT = 30000
# Types whose payload has one exact size.
_EXACT_LENGTHS: dict[int, int] = {
    ord("1"): 4,
    ord("2"): 4,
    ord("3"): 4,
    ord("n"): 4,
    ord("I"): 4,
    ord("s"): 4,
    ord("c"): 4,
    ord("Z"): 5,
    ord("K"): 12,
}
_DATA_ROW = ord("D")
# (least, greatest) honest length field per type byte, for the one-lookup check in
# next_frame; anything outside goes to _check_header, which says what is wrong.
_LENGTH_BOUNDS: dict[int, tuple[int, int]] = {
    code: (
        (_EXACT_LENGTHS[code], _EXACT_LENGTHS[code])
        if code in _EXACT_LENGTHS
        else (4, (1 << 31) - 1 if code in _LONG_TYPES else SHORT_MESSAGE_LIMIT)
    )
    for code in BACKEND_TYPE_BYTES
}


class ReceiveBuffer:
    """Accumulates server bytes and frames them into messages."""

    __slots__ = ("_data", "_pos", "max_message_length")

    def __init__(self, max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH) -> None:
        self._data = bytearray()
        self._pos = 0
        self.max_message_length = max_message_length

    def __len__(self) -> int:
        return len(self._data) - self._pos

    def feed(self, chunk: bytes) -> None:
        data = self._data
        pos = self._pos
        if pos:
            if pos == len(data):
                data.clear()
                self._pos = 0
            elif pos > 65536 and pos * 2 > len(data):
                del data[:pos]
                self._pos = 0
        data += chunk

    def take_raw(self, count: int) -> bytes:
        """The next ``count`` bytes, unframed (the SSLRequest reply byte)."""
        value = bytes(self._data[self._pos : self._pos + count])
        self._pos += len(value)
        return value

    def unconsumed(self) -> bytes:
        return bytes(self._data[self._pos :])

    def _check_header(self, type_code: int, length: int) -> None:
        if type_code not in BACKEND_TYPE_BYTES:
            raise protocol_violation(f"Unrecognised message type character {chr(type_code)!r}")
        if length < 4:
            raise protocol_violation(f"Nonsense message length in header: {length}")
        if length + 1 > self.max_message_length:
            raise protocol_violation(f"Message too long: message_length {length + 1}")
        exact = _EXACT_LENGTHS.get(type_code)
        if exact is not None:
            if length != exact:
                raise protocol_violation(
                    f"Message type {chr(type_code)!r} with impossible length {length}"
                )
        elif length > SHORT_MESSAGE_LIMIT and type_code not in _LONG_TYPES:
            raise protocol_violation(
                f"Message type {chr(type_code)!r} claims {length} bytes, more than any such "
                "message can hold"
            )

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next whole message as (type byte, payload), or None if incomplete."""
        data = self._data
        pos = self._pos
        if len(data) - pos < 5:
            return None
        type_code = data[pos]
        (length,) = _INT32.unpack_from(data, pos + 1)
        bounds = _LENGTH_BOUNDS.get(type_code)
        if (
            bounds is None
            or length < bounds[0]
            or length > bounds[1]
            or length >= self.max_message_length
        ):
            self._check_header(type_code, length)  # raises, naming what is wrong
        end = pos + 1 + length
        if end > len(data):
            return None
        self._pos = end
        return type_code, bytes(data[pos + 5 : end])

    def skip(self, expected: bytes) -> bool:
        """Consume ``expected`` if the buffer starts with exactly those bytes."""
        if self._data.startswith(expected, self._pos):
            self._pos += len(expected)
            return True
        return False

    def peek_type(self) -> int | None:
        """The type byte of the next message, if its header has arrived (and is sane)."""
        data = self._data
        pos = self._pos
        if len(data) - pos < 5:
            return None
        type_code = data[pos]
        (length,) = _INT32.unpack_from(data, pos + 1)
        self._check_header(type_code, length)
        return type_code

    def take_data_rows(
        self, column_count: int, limit: int = 1 << 30
    ) -> list[tuple[str | None, ...]]:
        """Decode every complete DataRow at the front of the buffer, up to ``limit``.

        Stops at the first message that is not a whole DataRow. Values are text decoded
        as UTF-8; a row that does not parse exactly is a protocol violation, raised once
        the good rows before it have been handed over.
        """
        rows, self._pos, problem = _accel.parse_data_rows(
            self._data, self._pos, column_count, limit, self.max_message_length
        )
        if problem is not None and not rows:
            raise protocol_violation(problem)
        return rows

    def take_ordinary_reply(
        self, row_limit: int, parsed: bool = True, known_columns: int = -1
    ) -> tuple[bytes | None, list[tuple[str | None, ...]], str, int] | None:
        """A whole ordinary query reply, if the compiled scanner is active and one is
        here: (RowDescription payload or None for NoData, rows, tag, status byte).
        ``parsed``: whether it starts with ParseComplete; ``known_columns``: what no
        Describe was sent to ask (see ``reply.scan_reply``). Consumed only when
        recognised; anything else stays for the message path."""
        scan = _accel.scan_reply
        if scan is None:
            return None
        found = scan(
            self._data, self._pos, self.max_message_length, row_limit, parsed, known_columns
        )
        if found is None:
            return None
        self._pos, description, rows, tag, status = found
        return description, rows, tag, status


def parse_data_rows(
    data: bytearray, pos: int, column_count: int, limit: int, max_length: int
) -> tuple[list[tuple[str | None, ...]], int, str | None]:
    """The reference batch decoder: (rows, position after them, problem or None).

    ``problem`` describes a malformed DataRow found at the returned position. A header
    that is not a DataRow, or a DataRow whose length is implausible or not yet all
    here, ends the batch without a problem: ``next_frame`` judges those. The compiled
    twin in ``_speedups.c`` must give identical results (a differential test checks).
    """
    end = len(data)
    rows: list[tuple[str | None, ...]] = []
    unpack_int32 = _INT32.unpack_from
    while len(rows) < limit and pos + 7 <= end and data[pos] == _DATA_ROW:
        (length,) = unpack_int32(data, pos + 1)
        if length < 6 or length + 1 > max_length:
            break
        msg_end = pos + 1 + length
        if msg_end > end:
            break
        (count,) = _UINT16.unpack_from(data, pos + 5)
        if count != column_count:
            return (
                rows,
                pos,
                "number of columns in DataRow message did not match RowDescription: "
                f"expected {column_count}, got {count}",
            )
        p = pos + 7
        values: list[str | None] = []
        for _ in range(count):
            if p + 4 > msg_end:
                return rows, pos, "Failed to parse DataRow: truncated column"
            (size,) = unpack_int32(data, p)
            p += 4
            if size < 0:
                if size != -1:
                    return rows, pos, f"Failed to parse DataRow: column length {size}"
                values.append(None)
            else:
                if p + size > msg_end:
                    return rows, pos, "Failed to parse DataRow: truncated column"
                try:
                    values.append(data[p : p + size].decode())
                except UnicodeDecodeError:
                    return rows, pos, "Failed to parse DataRow: invalid UTF-8 in a value"
                p += size
        if p != msg_end:
            return rows, pos, "Failed to parse DataRow: trailing bytes"
        rows.append(tuple(values))
        pos = msg_end
    return rows, pos, None


from .. import _accel  # noqa: E402  (the binding imports parse_data_rows from here)
