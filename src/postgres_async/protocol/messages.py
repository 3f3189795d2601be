"""Every message of protocol 3.0, in both directions.

Each message is a frozen dataclass that can ``encode()`` itself to a whole frame and
``decode(payload)`` itself from the bytes after the type byte and length. The client
encodes frontend messages and decodes backend ones; test servers do the reverse, which
is why both directions exist. Decoders trust nothing: a payload that does not parse
exactly raises ``ProtocolViolation`` (08P01).

The hot path (DataRow streams) does not build these objects; see ``buffer.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

from ._wire import (
    PayloadReader,
    cstr,
    frame,
    pack_int16,
    pack_int32,
    pack_uint16,
    pack_uint32,
    protocol_violation,
    untyped_frame,
)

PROTOCOL_VERSION_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103  # 1234 << 16 | 5679
GSSENC_REQUEST_CODE = 80877104  # 1234 << 16 | 5680
CANCEL_REQUEST_CODE = 80877102  # 1234 << 16 | 5678
MAX_PARAMETERS = 65535

NULL_LENGTH = -1

__all__ = [
    "AUTH_NAMES",
    "BACKEND_MESSAGES",
    "BACKEND_TYPE_BYTES",
    "CANCEL_REQUEST_CODE",
    "FRONTEND_MESSAGES",
    "GSSENC_REQUEST_CODE",
    "MAX_PARAMETERS",
    "NULL_LENGTH",
    "PROTOCOL_VERSION_3_0",
    "SSL_REQUEST_CODE",
    "AuthenticationCleartextPassword",
    "AuthenticationGSS",
    "AuthenticationGSSContinue",
    "AuthenticationKerberosV5",
    "AuthenticationMD5Password",
    "AuthenticationOk",
    "AuthenticationRequest",
    "AuthenticationSASL",
    "AuthenticationSASLContinue",
    "AuthenticationSASLFinal",
    "AuthenticationSCMCredential",
    "AuthenticationSSPI",
    "BackendKeyData",
    "BackendMessage",
    "Bind",
    "BindComplete",
    "CancelRequest",
    "Close",
    "CloseComplete",
    "ColumnMetadata",
    "CommandComplete",
    "CopyBothResponse",
    "CopyData",
    "CopyDone",
    "CopyFail",
    "CopyInResponse",
    "CopyOutResponse",
    "DataRow",
    "Describe",
    "EmptyQueryResponse",
    "ErrorResponse",
    "Execute",
    "Flush",
    "FrontendCopyData",
    "FrontendCopyDone",
    "FrontendMessage",
    "FunctionCall",
    "FunctionCallResponse",
    "GSSENCRequest",
    "GSSResponse",
    "NegotiateProtocolVersion",
    "NoData",
    "NoticeResponse",
    "NotificationResponse",
    "ParameterDescription",
    "ParameterStatus",
    "Parse",
    "ParseComplete",
    "PasswordMessage",
    "PortalSuspended",
    "Query",
    "ReadyForQuery",
    "RowDescription",
    "SASLInitialResponse",
    "SASLResponse",
    "SSLRequest",
    "StartupMessage",
    "Sync",
    "Terminate",
    "TransactionStatus",
    "decode_backend",
    "decode_frontend",
    "decode_untyped",
    "encode_bind_text",
    "encode_data_row",
    "encode_parse",
]


class TransactionStatus(enum.Enum):
    IDLE = "I"
    IN_TRANSACTION = "T"
    IN_FAILED_TRANSACTION = "E"


# --------------------------------------------------------------------------------------
# Backend messages (server -> client)
# --------------------------------------------------------------------------------------


class BackendMessage:
    """Base of server-to-client messages."""

    __slots__ = ()
    TYPE: ClassVar[bytes]
    NAME: ClassVar[str]

    def encode(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _EmptyBackend(BackendMessage):
    def encode(self) -> bytes:
        return frame(self.TYPE, b"")

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if payload:
            raise protocol_violation(f"Failed to parse {cls.NAME}: expected an empty payload")
        return cls()


@dataclass(frozen=True, slots=True)
class ParseComplete(_EmptyBackend):
    TYPE = b"1"
    NAME = "ParseComplete"


@dataclass(frozen=True, slots=True)
class BindComplete(_EmptyBackend):
    TYPE = b"2"
    NAME = "BindComplete"


@dataclass(frozen=True, slots=True)
class CloseComplete(_EmptyBackend):
    TYPE = b"3"
    NAME = "CloseComplete"


@dataclass(frozen=True, slots=True)
class NoData(_EmptyBackend):
    TYPE = b"n"
    NAME = "NoData"


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse(_EmptyBackend):
    TYPE = b"I"
    NAME = "EmptyQueryResponse"


@dataclass(frozen=True, slots=True)
class PortalSuspended(_EmptyBackend):
    TYPE = b"s"
    NAME = "PortalSuspended"


@dataclass(frozen=True, slots=True)
class CopyDone(_EmptyBackend):
    """CopyDone is the same bytes in both directions."""

    TYPE = b"c"
    NAME = "CopyDone"


class AuthenticationRequest(BackendMessage):
    """Base of the ``R`` family; ``decode`` picks the subclass by its int32 code."""

    __slots__ = ()
    TYPE = b"R"
    NAME = "AuthenticationRequest"
    CODE: ClassVar[int]

    def _extra(self) -> bytes:
        return b""

    def encode(self) -> bytes:
        return frame(self.TYPE, pack_int32(self.CODE) + self._extra())

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        code = reader.int32()
        sub = _AUTH_BY_CODE.get(code)
        if sub is None:
            raise protocol_violation(
                f"Failed to parse AuthenticationRequest: unrecognised type {code}"
            )
        message = sub._decode_rest(reader)
        return message  # type: ignore[return-value]

    @classmethod
    def _decode_rest(cls, reader: PayloadReader) -> AuthenticationRequest:
        reader.expect_end()
        return cls()


@dataclass(frozen=True, slots=True)
class AuthenticationOk(AuthenticationRequest):
    CODE = 0


@dataclass(frozen=True, slots=True)
class AuthenticationKerberosV5(AuthenticationRequest):
    CODE = 2


@dataclass(frozen=True, slots=True)
class AuthenticationCleartextPassword(AuthenticationRequest):
    CODE = 3


@dataclass(frozen=True, slots=True)
class AuthenticationMD5Password(AuthenticationRequest):
    CODE = 5
    salt: bytes

    def _extra(self) -> bytes:
        return self.salt

    @classmethod
    def _decode_rest(cls, reader: PayloadReader) -> AuthenticationRequest:
        salt = reader.raw(4)
        reader.expect_end()
        return cls(salt)


@dataclass(frozen=True, slots=True)
class AuthenticationSCMCredential(AuthenticationRequest):
    CODE = 6


@dataclass(frozen=True, slots=True)
class AuthenticationGSS(AuthenticationRequest):
    CODE = 7


@dataclass(frozen=True, slots=True)
class AuthenticationGSSContinue(AuthenticationRequest):
    CODE = 8
    data: bytes

    def _extra(self) -> bytes:
        return self.data

    @classmethod
    def _decode_rest(cls, reader: PayloadReader) -> AuthenticationRequest:
        return cls(reader.rest())


@dataclass(frozen=True, slots=True)
class AuthenticationSSPI(AuthenticationRequest):
    CODE = 9


@dataclass(frozen=True, slots=True)
class AuthenticationSASL(AuthenticationRequest):
    CODE = 10
    mechanisms: tuple[str, ...]

    def _extra(self) -> bytes:
        if not all(self.mechanisms):  # an empty name would end the list early
            raise ValueError("SASL mechanism name must not be empty")
        return b"".join(cstr(m, "SASL mechanism") for m in self.mechanisms) + b"\0"

    @classmethod
    def _decode_rest(cls, reader: PayloadReader) -> AuthenticationRequest:
        mechanisms = []
        while True:
            name = reader.cstring()
            if not name:
                break
            mechanisms.append(name)
        reader.expect_end()
        return cls(tuple(mechanisms))


@dataclass(frozen=True, slots=True)
class AuthenticationSASLContinue(AuthenticationRequest):
    CODE = 11
    data: bytes

    def _extra(self) -> bytes:
        return self.data

    @classmethod
    def _decode_rest(cls, reader: PayloadReader) -> AuthenticationRequest:
        return cls(reader.rest())


@dataclass(frozen=True, slots=True)
class AuthenticationSASLFinal(AuthenticationRequest):
    CODE = 12
    data: bytes

    def _extra(self) -> bytes:
        return self.data

    @classmethod
    def _decode_rest(cls, reader: PayloadReader) -> AuthenticationRequest:
        return cls(reader.rest())


_AUTH_BY_CODE: dict[int, type[AuthenticationRequest]] = {
    sub.CODE: sub
    for sub in (
        AuthenticationOk,
        AuthenticationKerberosV5,
        AuthenticationCleartextPassword,
        AuthenticationMD5Password,
        AuthenticationSCMCredential,
        AuthenticationGSS,
        AuthenticationGSSContinue,
        AuthenticationSSPI,
        AuthenticationSASL,
        AuthenticationSASLContinue,
        AuthenticationSASLFinal,
    )
}

AUTH_NAMES: dict[int, str] = {
    code: sub.__name__.removeprefix("Authentication") for code, sub in _AUTH_BY_CODE.items()
}


@dataclass(frozen=True, slots=True)
class BackendKeyData(BackendMessage):
    TYPE = b"K"
    NAME = "BackendKeyData"
    # The pid stays a plain int: poolers such as pgbouncer send arbitrary values.
    pid: int
    secret: int = field(repr=False)  # lets anyone cancel this session's queries

    def encode(self) -> bytes:
        return frame(self.TYPE, pack_int32(self.pid) + pack_int32(self.secret))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        pid = reader.int32()
        secret = reader.int32()
        reader.expect_end()
        return cls(pid, secret)


@dataclass(frozen=True, slots=True)
class CommandComplete(BackendMessage):
    TYPE = b"C"
    NAME = "CommandComplete"
    tag: str

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.tag, "command tag"))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        tag = reader.cstring()
        reader.expect_end()
        return cls(tag)


@dataclass(frozen=True, slots=True)
class CopyData(BackendMessage):
    """CopyData is the same bytes in both directions."""

    TYPE = b"d"
    NAME = "CopyData"
    data: bytes

    def encode(self) -> bytes:
        return frame(self.TYPE, self.data)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(bytes(payload))


@dataclass(frozen=True, slots=True)
class _CopyResponse(BackendMessage):
    overall_format: int
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        body = bytes([self.overall_format]) + pack_uint16(len(self.column_formats))
        body += b"".join(pack_int16(f) for f in self.column_formats)
        return frame(self.TYPE, body)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        overall = reader.int8()
        if overall not in (0, 1):
            raise protocol_violation(f"Failed to parse {cls.NAME}: format {overall}")
        count = reader.uint16()
        formats = tuple(reader.int16() for _ in range(count))
        if any(f not in (0, 1) for f in formats):
            raise protocol_violation(f"Failed to parse {cls.NAME}: bad column format")
        reader.expect_end()
        return cls(overall, formats)


@dataclass(frozen=True, slots=True)
class CopyInResponse(_CopyResponse):
    TYPE = b"G"
    NAME = "CopyInResponse"


@dataclass(frozen=True, slots=True)
class CopyOutResponse(_CopyResponse):
    TYPE = b"H"
    NAME = "CopyOutResponse"


@dataclass(frozen=True, slots=True)
class CopyBothResponse(_CopyResponse):
    TYPE = b"W"
    NAME = "CopyBothResponse"


def _encode_values(values: Sequence[bytes | None]) -> bytes:
    """A uint16 count, then each value as an int32 length (-1 for NULL) and its bytes:
    the layout of DataRow columns, Bind parameters and FunctionCall arguments."""
    parts = [pack_uint16(len(values))]
    for value in values:
        if value is None:
            parts.append(pack_int32(NULL_LENGTH))
        else:
            parts.append(pack_int32(len(value)))
            parts.append(value)
    return b"".join(parts)


def _decode_values(reader: PayloadReader, message: str, noun: str) -> tuple[bytes | None, ...]:
    values: list[bytes | None] = []
    for _ in range(reader.uint16()):
        length = reader.int32()
        if length == NULL_LENGTH:
            values.append(None)
        elif length < 0:
            raise protocol_violation(f"Failed to parse {message}: {noun} length {length}")
        else:
            values.append(reader.raw(length))
    return tuple(values)


def encode_data_row(values: Sequence[bytes | None]) -> bytes:
    return frame(b"D", _encode_values(values))


@dataclass(frozen=True, slots=True)
class DataRow(BackendMessage):
    """One row with raw column values (None is NULL); text decoding is the caller's."""

    TYPE = b"D"
    NAME = "DataRow"
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        return encode_data_row(self.values)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        values = _decode_values(reader, cls.NAME, "column")
        reader.expect_end()
        return cls(values)


def _encode_fields(fields: Mapping[str, str]) -> bytes:
    parts = []
    for key, value in fields.items():
        # The field type is one byte; decoding maps it with chr(), so 1..255 are valid.
        if len(key) != 1 or not "\0" < key <= "\xff":
            raise ValueError(f"error field type must be one non-NUL byte, not {key!r}")
        parts.append(key.encode("latin-1") + cstr(value, "error field"))
    return b"".join(parts) + b"\0"


def _decode_fields(payload: bytes, name: str) -> dict[str, str]:
    reader = PayloadReader(payload, name)
    fields: dict[str, str] = {}
    while True:
        kind = reader.int8()
        if kind == 0:
            break
        # Error texts may arrive before client_encoding applies (login, FATAL at startup)
        # or be damaged; a readable error beats a second error about the first.
        fields[chr(kind)] = reader.cstring(errors="replace")
    reader.expect_end()
    return fields


@dataclass(frozen=True, slots=True)
class ErrorResponse(BackendMessage):
    TYPE = b"E"
    NAME = "ErrorResponse"
    fields: Mapping[str, str]

    def encode(self) -> bytes:
        return frame(self.TYPE, _encode_fields(self.fields))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(_decode_fields(payload, cls.NAME))


@dataclass(frozen=True, slots=True)
class NoticeResponse(BackendMessage):
    TYPE = b"N"
    NAME = "NoticeResponse"
    fields: Mapping[str, str]

    def encode(self) -> bytes:
        return frame(self.TYPE, _encode_fields(self.fields))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(_decode_fields(payload, cls.NAME))


@dataclass(frozen=True, slots=True)
class FunctionCallResponse(BackendMessage):
    TYPE = b"V"
    NAME = "FunctionCallResponse"
    value: bytes | None

    def encode(self) -> bytes:
        if self.value is None:
            return frame(self.TYPE, pack_int32(NULL_LENGTH))
        return frame(self.TYPE, pack_int32(len(self.value)) + self.value)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        length = reader.int32()
        value = None if length == NULL_LENGTH else reader.raw(length)
        reader.expect_end()
        return cls(value)


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion(BackendMessage):
    TYPE = b"v"
    NAME = "NegotiateProtocolVersion"
    newest_minor: int
    unrecognised_options: tuple[str, ...]

    def encode(self) -> bytes:
        body = pack_int32(self.newest_minor) + pack_int32(len(self.unrecognised_options))
        body += b"".join(cstr(o, "option") for o in self.unrecognised_options)
        return frame(self.TYPE, body)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        minor = reader.int32()
        count = reader.int32()
        if count < 0:
            raise protocol_violation("Failed to parse NegotiateProtocolVersion: negative count")
        options = []
        for _ in range(count):
            options.append(reader.cstring())
        reader.expect_end()
        return cls(minor, tuple(options))


@dataclass(frozen=True, slots=True)
class NotificationResponse(BackendMessage):
    TYPE = b"A"
    NAME = "NotificationResponse"
    pid: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        body = pack_int32(self.pid) + cstr(self.channel, "channel")
        return frame(self.TYPE, body + cstr(self.payload, "payload"))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        # Every notification comes through here: the well-formed case without a
        # PayloadReader, anything else through it (it names what is wrong).
        first_nul = payload.find(0, 4)
        if first_nul >= 0 and payload.find(0, first_nul + 1) == len(payload) - 1:
            try:
                return cls(
                    int.from_bytes(payload[:4], "big", signed=True),
                    payload[4:first_nul].decode(),
                    payload[first_nul + 1 : -1].decode(),
                )
            except UnicodeDecodeError:
                pass
        reader = PayloadReader(payload, cls.NAME)
        pid = reader.int32()
        channel = reader.cstring()
        text = reader.cstring()
        reader.expect_end()
        return cls(pid, channel, text)


@dataclass(frozen=True, slots=True)
class ParameterDescription(BackendMessage):
    TYPE = b"t"
    NAME = "ParameterDescription"
    type_oids: tuple[int, ...]

    def encode(self) -> bytes:
        body = pack_uint16(len(self.type_oids)) + b"".join(pack_uint32(o) for o in self.type_oids)
        return frame(self.TYPE, body)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        count = reader.uint16()
        oids = tuple(reader.uint32() for _ in range(count))
        reader.expect_end()
        return cls(oids)


@dataclass(frozen=True, slots=True)
class ParameterStatus(BackendMessage):
    TYPE = b"S"
    NAME = "ParameterStatus"
    name: str
    value: str

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.name, "name") + cstr(self.value, "value"))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        name = reader.cstring()
        value = reader.cstring()
        reader.expect_end()
        return cls(name, value)


@dataclass(frozen=True, slots=True)
class ReadyForQuery(BackendMessage):
    TYPE = b"Z"
    NAME = "ReadyForQuery"
    status: TransactionStatus

    def encode(self) -> bytes:
        return frame(self.TYPE, self.status.value.encode("ascii"))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) != 1:
            raise protocol_violation("Failed to parse ReadyForQuery: expected 1 byte")
        try:
            status = TransactionStatus(chr(payload[0]))
        except ValueError:
            raise protocol_violation(
                f"Failed to parse ReadyForQuery: unknown transaction status {payload[:1]!r}"
            ) from None
        return cls(status)


@dataclass(frozen=True, slots=True)
class ColumnMetadata:
    """One field of a RowDescription (the public ``pg.ColumnMetadata``)."""

    name: str
    pg_type_oid: int
    table_oid: int = 0
    column_number: int = 0
    type_size: int = -1
    type_modifier: int = -1
    format: int = 0


@dataclass(frozen=True, slots=True)
class RowDescription(BackendMessage):
    TYPE = b"T"
    NAME = "RowDescription"
    columns: tuple[ColumnMetadata, ...]

    def encode(self) -> bytes:
        parts = [pack_uint16(len(self.columns))]
        for c in self.columns:
            parts.append(cstr(c.name, "column name"))
            parts.append(pack_uint32(c.table_oid) + pack_int16(c.column_number))
            parts.append(pack_uint32(c.pg_type_oid) + pack_int16(c.type_size))
            parts.append(pack_int32(c.type_modifier) + pack_int16(c.format))
        return frame(self.TYPE, b"".join(parts))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        count = reader.uint16()
        columns = []
        for _ in range(count):
            name = reader.cstring()
            table_oid = reader.uint32()
            column_number = reader.int16()
            type_oid = reader.uint32()
            type_size = reader.int16()
            type_modifier = reader.int32()
            fmt = reader.int16()
            if fmt not in (0, 1):
                raise protocol_violation(f"Failed to parse RowDescription: format {fmt}")
            columns.append(
                ColumnMetadata(
                    name, type_oid, table_oid, column_number, type_size, type_modifier, fmt
                )
            )
        reader.expect_end()
        return cls(tuple(columns))


BACKEND_MESSAGES: dict[bytes, type[BackendMessage]] = {
    m.TYPE: m
    for m in (
        AuthenticationRequest,
        BackendKeyData,
        BindComplete,
        CloseComplete,
        CommandComplete,
        CopyData,
        CopyDone,
        CopyInResponse,
        CopyOutResponse,
        CopyBothResponse,
        DataRow,
        EmptyQueryResponse,
        ErrorResponse,
        FunctionCallResponse,
        NegotiateProtocolVersion,
        NoData,
        NoticeResponse,
        NotificationResponse,
        ParameterDescription,
        ParameterStatus,
        ParseComplete,
        PortalSuspended,
        ReadyForQuery,
        RowDescription,
    )
}

# Type bytes as ints, for the framing loop which indexes a bytearray.
BACKEND_TYPE_BYTES: frozenset[int] = frozenset(t[0] for t in BACKEND_MESSAGES)


def decode_backend(type_code: int, payload: bytes) -> BackendMessage:
    """Decode one server message; unknown type bytes are protocol violations."""
    cls = BACKEND_MESSAGES.get(bytes((type_code,)))
    if cls is None:
        raise protocol_violation(f"Unrecognised message type character {chr(type_code)!r}")
    return cls.decode(payload)


# --------------------------------------------------------------------------------------
# Frontend messages (client -> server)
# --------------------------------------------------------------------------------------


class FrontendMessage:
    """Base of client-to-server messages."""

    __slots__ = ()
    TYPE: ClassVar[bytes]  # b"" for the untyped startup-phase messages
    NAME: ClassVar[str]

    def encode(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class StartupMessage(FrontendMessage):
    TYPE = b""
    NAME = "StartupMessage"
    # Order is kept as given (user first); PostgreSQL does not care about order.
    parameters: Mapping[str, str]
    protocol_version: int = PROTOCOL_VERSION_3_0

    def encode(self) -> bytes:
        if "user" not in self.parameters:
            raise ValueError("StartupMessage needs a user")
        parts = [pack_int32(self.protocol_version)]
        for key, value in self.parameters.items():
            if not key:  # an empty name would end the list early
                raise ValueError("startup parameter name must not be empty")
            parts.append(cstr(key, f"startup parameter name {key!r}"))
            parts.append(cstr(value, f"startup parameter {key!r}"))
        parts.append(b"\0")
        return untyped_frame(b"".join(parts))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        version = reader.int32()
        params: dict[str, str] = {}
        while True:
            key = reader.cstring()
            if not key:
                break
            params[key] = reader.cstring()
        reader.expect_end()
        return cls(params, version)


@dataclass(frozen=True, slots=True)
class SSLRequest(FrontendMessage):
    TYPE = b""
    NAME = "SSLRequest"

    def encode(self) -> bytes:
        return untyped_frame(pack_int32(SSL_REQUEST_CODE))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if payload != pack_int32(SSL_REQUEST_CODE):
            raise protocol_violation("Failed to parse SSLRequest")
        return cls()


@dataclass(frozen=True, slots=True)
class GSSENCRequest(FrontendMessage):
    TYPE = b""
    NAME = "GSSENCRequest"

    def encode(self) -> bytes:
        return untyped_frame(pack_int32(GSSENC_REQUEST_CODE))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if payload != pack_int32(GSSENC_REQUEST_CODE):
            raise protocol_violation("Failed to parse GSSENCRequest")
        return cls()


@dataclass(frozen=True, slots=True)
class CancelRequest(FrontendMessage):
    TYPE = b""
    NAME = "CancelRequest"
    pid: int
    secret: int = field(repr=False)  # lets anyone cancel this session's queries

    def encode(self) -> bytes:
        body = pack_int32(CANCEL_REQUEST_CODE) + pack_int32(self.pid) + pack_int32(self.secret)
        return untyped_frame(body)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        if reader.int32() != CANCEL_REQUEST_CODE:
            raise protocol_violation("Failed to parse CancelRequest: wrong code")
        pid = reader.int32()
        secret = reader.int32()
        reader.expect_end()
        return cls(pid, secret)


def decode_untyped(payload: bytes) -> FrontendMessage:
    """What a server reads first: Startup, SSL, GSSENC or Cancel request, by code."""
    reader = PayloadReader(payload, "startup packet")
    code = reader.int32()
    if code == SSL_REQUEST_CODE:
        return SSLRequest.decode(payload)
    if code == GSSENC_REQUEST_CODE:
        return GSSENCRequest.decode(payload)
    if code == CANCEL_REQUEST_CODE:
        return CancelRequest.decode(payload)
    return StartupMessage.decode(payload)


@dataclass(frozen=True, slots=True)
class PasswordMessage(FrontendMessage):
    """``p`` carrying a cleartext or md5 password (NUL-terminated)."""

    TYPE = b"p"
    NAME = "PasswordMessage"
    # repr=False: this holds a secret.
    password: bytes = field(repr=False)

    def encode(self) -> bytes:
        if b"\0" in self.password:
            raise ValueError("password must not contain a NUL character")
        return frame(self.TYPE, self.password + b"\0")

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if not payload.endswith(b"\0") or b"\0" in payload[:-1]:
            raise protocol_violation("Failed to parse PasswordMessage")
        return cls(bytes(payload[:-1]))


@dataclass(frozen=True, slots=True)
class GSSResponse(FrontendMessage):
    """``p`` carrying a raw GSSAPI or SSPI token (no terminator)."""

    TYPE = b"p"
    NAME = "GSSResponse"
    data: bytes = field(repr=False)

    def encode(self) -> bytes:
        return frame(self.TYPE, self.data)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(bytes(payload))


@dataclass(frozen=True, slots=True)
class SASLInitialResponse(FrontendMessage):
    TYPE = b"p"
    NAME = "SASLInitialResponse"
    mechanism: str
    data: bytes | None = field(repr=False)

    def encode(self) -> bytes:
        body = cstr(self.mechanism, "SASL mechanism")
        if self.data is None:
            body += pack_int32(NULL_LENGTH)
        else:
            body += pack_int32(len(self.data)) + self.data
        return frame(self.TYPE, body)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        mechanism = reader.cstring()
        length = reader.int32()
        data = None if length == NULL_LENGTH else reader.raw(length)
        reader.expect_end()
        return cls(mechanism, data)


@dataclass(frozen=True, slots=True)
class SASLResponse(FrontendMessage):
    TYPE = b"p"
    NAME = "SASLResponse"
    data: bytes = field(repr=False)

    def encode(self) -> bytes:
        return frame(self.TYPE, self.data)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(bytes(payload))


def encode_parse(sql: str, name: str = "", param_oids: Sequence[int] = ()) -> bytes:
    body = cstr(name, "statement name") + cstr(sql, "SQL")
    body += pack_uint16(len(param_oids)) + b"".join(pack_uint32(o) for o in param_oids)
    return frame(b"P", body)


@dataclass(frozen=True, slots=True)
class Parse(FrontendMessage):
    TYPE = b"P"
    NAME = "Parse"
    query: str
    statement: str = ""
    param_oids: tuple[int, ...] = ()

    def encode(self) -> bytes:
        return encode_parse(self.query, self.statement, self.param_oids)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        name = reader.cstring()
        query = reader.cstring()
        count = reader.uint16()
        oids = tuple(reader.uint32() for _ in range(count))
        reader.expect_end()
        return cls(query, name, oids)


def encode_bind_text(
    params: Sequence[bytes | None], portal: str = "", statement: str = ""
) -> bytes:
    """Bind with every parameter and every result column in text format."""
    count = len(params)
    if count > MAX_PARAMETERS:
        raise ValueError(f"{count} parameters given; the protocol allows {MAX_PARAMETERS}")
    if portal or statement:
        head = cstr(portal, "portal name") + cstr(statement, "statement name")
    else:
        head = b"\0\0"
    parts = [head + b"\0\0" + pack_uint16(count)]
    append = parts.append
    for value in params:
        if value is None:
            append(b"\xff\xff\xff\xff")
        else:
            append(pack_int32(len(value)))
            append(value)
    append(b"\0\0")
    body = b"".join(parts)
    return b"B" + pack_int32(len(body) + 4) + body


@dataclass(frozen=True, slots=True)
class Bind(FrontendMessage):
    TYPE = b"B"
    NAME = "Bind"
    params: tuple[bytes | None, ...]
    portal: str = ""
    statement: str = ""
    param_formats: tuple[int, ...] = ()
    result_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        if len(self.params) > MAX_PARAMETERS:
            raise ValueError(
                f"{len(self.params)} parameters given; the protocol allows {MAX_PARAMETERS}"
            )
        parts = [cstr(self.portal, "portal name"), cstr(self.statement, "statement name")]
        parts.append(pack_uint16(len(self.param_formats)))
        parts.extend(pack_int16(f) for f in self.param_formats)
        parts.append(_encode_values(self.params))
        parts.append(pack_uint16(len(self.result_formats)))
        parts.extend(pack_int16(f) for f in self.result_formats)
        return frame(self.TYPE, b"".join(parts))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        portal = reader.cstring()
        statement = reader.cstring()
        param_formats = tuple(reader.int16() for _ in range(reader.uint16()))
        params = _decode_values(reader, cls.NAME, "parameter")
        result_formats = tuple(reader.int16() for _ in range(reader.uint16()))
        reader.expect_end()
        return cls(params, portal, statement, param_formats, result_formats)


@dataclass(frozen=True, slots=True)
class _TargetMessage(FrontendMessage):
    """Describe and Close: a kind byte (S statement / P portal) and a name."""

    kind: str  # "S" or "P"
    name: str = ""

    def encode(self) -> bytes:
        if self.kind not in ("S", "P"):
            raise ValueError(f"{self.NAME} kind must be 'S' or 'P'")
        return frame(self.TYPE, self.kind.encode("ascii") + cstr(self.name, "name"))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        kind = chr(reader.int8())
        if kind not in ("S", "P"):
            raise protocol_violation(f"Failed to parse {cls.NAME}: kind {kind!r}")
        name = reader.cstring()
        reader.expect_end()
        return cls(kind, name)


@dataclass(frozen=True, slots=True)
class Describe(_TargetMessage):
    TYPE = b"D"
    NAME = "Describe"


@dataclass(frozen=True, slots=True)
class Close(_TargetMessage):
    TYPE = b"C"
    NAME = "Close"


@dataclass(frozen=True, slots=True)
class Execute(FrontendMessage):
    TYPE = b"E"
    NAME = "Execute"
    portal: str = ""
    max_rows: int = 0  # 0 = no limit

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.portal, "portal name") + pack_int32(self.max_rows))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        portal = reader.cstring()
        max_rows = reader.int32()
        reader.expect_end()
        return cls(portal, max_rows)


@dataclass(frozen=True, slots=True)
class _EmptyFrontend(FrontendMessage):
    def encode(self) -> bytes:
        return frame(self.TYPE, b"")

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if payload:
            raise protocol_violation(f"Failed to parse {cls.NAME}: expected an empty payload")
        return cls()


@dataclass(frozen=True, slots=True)
class Sync(_EmptyFrontend):
    TYPE = b"S"
    NAME = "Sync"


@dataclass(frozen=True, slots=True)
class Flush(_EmptyFrontend):
    TYPE = b"H"
    NAME = "Flush"


@dataclass(frozen=True, slots=True)
class Terminate(_EmptyFrontend):
    TYPE = b"X"
    NAME = "Terminate"


@dataclass(frozen=True, slots=True)
class FrontendCopyDone(_EmptyFrontend):
    TYPE = b"c"
    NAME = "CopyDone"


@dataclass(frozen=True, slots=True)
class FrontendCopyData(FrontendMessage):
    TYPE = b"d"
    NAME = "CopyData"
    data: bytes

    def encode(self) -> bytes:
        return frame(self.TYPE, self.data)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(bytes(payload))


@dataclass(frozen=True, slots=True)
class CopyFail(FrontendMessage):
    TYPE = b"f"
    NAME = "CopyFail"
    reason: str

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.reason, "CopyFail reason"))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        reason = reader.cstring()
        reader.expect_end()
        return cls(reason)


@dataclass(frozen=True, slots=True)
class Query(FrontendMessage):
    TYPE = b"Q"
    NAME = "Query"
    sql: str

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.sql, "SQL"))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        sql = reader.cstring()
        reader.expect_end()
        return cls(sql)


@dataclass(frozen=True, slots=True)
class FunctionCall(FrontendMessage):
    TYPE = b"F"
    NAME = "FunctionCall"
    function_oid: int
    arguments: tuple[bytes | None, ...]
    argument_formats: tuple[int, ...] = ()
    result_format: int = 0

    def encode(self) -> bytes:
        parts = [pack_uint32(self.function_oid), pack_uint16(len(self.argument_formats))]
        parts.extend(pack_int16(f) for f in self.argument_formats)
        parts.append(_encode_values(self.arguments))
        parts.append(pack_int16(self.result_format))
        return frame(self.TYPE, b"".join(parts))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reader = PayloadReader(payload, cls.NAME)
        oid = reader.uint32()
        formats = tuple(reader.int16() for _ in range(reader.uint16()))
        args = _decode_values(reader, cls.NAME, "argument")
        result_format = reader.int16()
        reader.expect_end()
        return cls(oid, args, formats, result_format)


# The typed frontend messages by type byte. ``p`` is ambiguous on the wire (its meaning
# depends on the authentication exchange), so a server decodes it with the class it
# expects; the table maps it to PasswordMessage.
FRONTEND_MESSAGES: dict[bytes, type[FrontendMessage]] = {
    m.TYPE: m
    for m in (
        Bind,
        Close,
        FrontendCopyData,
        FrontendCopyDone,
        CopyFail,
        Describe,
        Execute,
        Flush,
        FunctionCall,
        Parse,
        PasswordMessage,
        Query,
        Sync,
        Terminate,
    )
}


def decode_frontend(type_code: int, payload: bytes) -> FrontendMessage:
    cls = FRONTEND_MESSAGES.get(bytes((type_code,)))
    if cls is None:
        raise protocol_violation(f"Unrecognised frontend message type {chr(type_code)!r}")
    return cls.decode(payload)
