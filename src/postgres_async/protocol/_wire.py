"""Primitive readers and writers for protocol 3.0 payloads.

Every read is bounds-checked against what is left of the payload; running short or
meeting bytes that cannot be what the field claims raises ``ProtocolViolation``
(SQLSTATE 08P01) naming the message, never ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import struct

from ..errors import PgasyncError, client_error

_INT16 = struct.Struct("!h")
_UINT16 = struct.Struct("!H")
_INT32 = struct.Struct("!i")
_UINT32 = struct.Struct("!I")

PROTOCOL_VIOLATION = "08P01"


def protocol_violation(message: str) -> PgasyncError:
    """The error every malformed or unexpected server message becomes."""
    return client_error(PROTOCOL_VIOLATION, message)


class PayloadReader:
    """Reads fields from one message payload, checking every length."""

    __slots__ = ("_data", "_end", "_message", "_pos")

    def __init__(self, data: bytes, message: str) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data)
        self._message = message

    def _short(self, wanted: int) -> PgasyncError:
        left = self._end - self._pos
        return protocol_violation(
            f"Failed to parse {self._message}: needed {wanted} more bytes, {left} left"
        )

    def int8(self) -> int:
        if self._pos + 1 > self._end:
            raise self._short(1)
        value = self._data[self._pos]
        self._pos += 1
        return value

    def int16(self) -> int:
        if self._pos + 2 > self._end:
            raise self._short(2)
        (value,) = _INT16.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(value)

    def uint16(self) -> int:
        if self._pos + 2 > self._end:
            raise self._short(2)
        (value,) = _UINT16.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(value)

    def int32(self) -> int:
        if self._pos + 4 > self._end:
            raise self._short(4)
        (value,) = _INT32.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(value)

    def uint32(self) -> int:
        if self._pos + 4 > self._end:
            raise self._short(4)
        (value,) = _UINT32.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(value)

    def raw(self, count: int) -> bytes:
        if count < 0 or self._pos + count > self._end:
            raise self._short(count)
        value = self._data[self._pos : self._pos + count]
        self._pos += count
        return bytes(value)

    def rest(self) -> bytes:
        value = self._data[self._pos : self._end]
        self._pos = self._end
        return bytes(value)

    def cstring_bytes(self) -> bytes:
        nul = self._data.find(b"\0", self._pos, self._end)
        if nul < 0:
            raise protocol_violation(
                f"Failed to parse {self._message}: string without a NUL terminator"
            )
        value = self._data[self._pos : nul]
        self._pos = nul + 1
        return bytes(value)

    def cstring(self, errors: str = "strict") -> str:
        raw = self.cstring_bytes()
        try:
            return raw.decode("utf-8", errors)
        except UnicodeDecodeError:
            raise protocol_violation(
                f"Failed to parse {self._message}: invalid UTF-8 in a string field"
            ) from None

    def at_end(self) -> bool:
        return self._pos >= self._end

    def expect_end(self) -> None:
        if self._pos != self._end:
            raise protocol_violation(
                f"Failed to parse {self._message}: {self._end - self._pos} unexpected "
                "trailing bytes"
            )


def check_text(value: str, what: str) -> bytes:
    """UTF-8 of a string bound for a NUL-terminated field; NUL is refused up front."""
    if "\0" in value:
        raise ValueError(f"{what} must not contain a NUL character")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not encodable as UTF-8 (lone surrogate?)") from None


def cstr(value: str, what: str) -> bytes:
    return check_text(value, what) + b"\0"


def _unpackable(value: object, kind: str) -> Exception:
    # struct.error is neither ValueError nor TypeError: say which one it is.
    if not isinstance(value, int):
        return TypeError(f"{kind} field needs an int, not {type(value).__name__}")
    return ValueError(f"{value} is out of range for an {kind} protocol field")


def pack_int16(value: int) -> bytes:
    try:
        return _INT16.pack(value)
    except struct.error:
        raise _unpackable(value, "int16") from None


def pack_uint16(value: int) -> bytes:
    try:
        return _UINT16.pack(value)
    except struct.error:
        raise _unpackable(value, "uint16") from None


def pack_int32(value: int) -> bytes:
    try:
        return _INT32.pack(value)
    except struct.error:
        raise _unpackable(value, "int32") from None


def pack_uint32(value: int) -> bytes:
    try:
        return _UINT32.pack(value)
    except struct.error:
        raise _unpackable(value, "uint32") from None


def frame(type_code: bytes, payload: bytes) -> bytes:
    """A typed message: type byte, int32 length counting itself, payload."""
    return type_code + pack_int32(len(payload) + 4) + payload


def untyped_frame(payload: bytes) -> bytes:
    """StartupMessage, SSLRequest, CancelRequest: no type byte."""
    return pack_int32(len(payload) + 4) + payload
