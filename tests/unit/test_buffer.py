"""ReceiveBuffer: framing, header checks before any body arrives, batch DataRow decoding.

The header cases reproduce upstream's ``test_server_failure`` (3.9 item 2) byte for byte;
every refusal must be a PgasyncError with SQLSTATE 08P01.
"""

from __future__ import annotations

import random
import struct

import pytest

from postgres_async.errors import PgasyncError
from postgres_async.protocol import (
    DEFAULT_MAX_MESSAGE_LENGTH,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    BackendKeyData,
    BindComplete,
    ColumnMetadata,
    CommandComplete,
    CopyData,
    DataRow,
    ErrorResponse,
    NoData,
    NotificationResponse,
    ParameterStatus,
    ParseComplete,
    ReadyForQuery,
    ReceiveBuffer,
    RowDescription,
    TransactionStatus,
    decode_backend,
    encode_data_row,
)
from postgres_async.protocol.buffer import SHORT_MESSAGE_LIMIT

Frame = tuple[int, bytes]
Row = tuple[str | None, ...]


def drain(buf: ReceiveBuffer) -> list[Frame]:
    frames = []
    while (item := buf.next_frame()) is not None:
        frames.append(item)
    return frames


def header(type_char: str, length: int) -> bytes:
    return type_char.encode("ascii") + struct.pack("!i", length)


def assert_violation(exc: BaseException, fragment: str) -> None:
    assert isinstance(exc, PgasyncError)
    assert exc.postgres_error_code == "08P01", repr(exc)
    assert fragment in str(exc), str(exc)


def refused(buf: ReceiveBuffer, fragment: str) -> None:
    """next_frame() and peek_type() both refuse what is at the front of ``buf``."""
    with pytest.raises(PgasyncError) as info:
        buf.next_frame()
    assert_violation(info.value, fragment)
    with pytest.raises(PgasyncError) as info:
        buf.peek_type()
    assert_violation(info.value, fragment)


STREAM_MESSAGES = [
    AuthenticationMD5Password(b"salt"),
    AuthenticationSASL(("SCRAM-SHA-256",)),
    AuthenticationOk(),
    ParameterStatus("server_version", "13.6"),
    BackendKeyData(1234, 4444),
    ReadyForQuery(TransactionStatus.IDLE),
    ParseComplete(),
    BindComplete(),
    RowDescription((ColumnMetadata("a", 25), ColumnMetadata("b", 23))),
    DataRow((b"x", None)),
    DataRow((b"", "日本".encode())),
    CopyData(b"z" * 300),
    NotificationResponse(10, "chan", "payload"),
    ErrorResponse({"S": "ERROR", "C": "42P01", "M": "nope"}),
    NoData(),
    CommandComplete("SELECT 2"),
    ReadyForQuery(TransactionStatus.IN_TRANSACTION),
]
STREAM = b"".join(m.encode() for m in STREAM_MESSAGES)


# ---------------------------------------------------------------------------- framing


def test_one_chunk_gives_every_frame() -> None:
    buf = ReceiveBuffer()
    buf.feed(STREAM)
    frames = drain(buf)
    assert [decode_backend(t, p) for t, p in frames] == STREAM_MESSAGES
    assert len(buf) == 0
    assert buf.next_frame() is None
    assert buf.peek_type() is None


def test_byte_by_byte_gives_the_same_frames() -> None:
    whole = ReceiveBuffer()
    whole.feed(STREAM)
    expected = drain(whole)
    buf = ReceiveBuffer()
    frames: list[Frame] = []
    for i in range(len(STREAM)):
        buf.feed(STREAM[i : i + 1])
        frames.extend(drain(buf))
    assert frames == expected
    assert len(buf) == 0


@pytest.mark.parametrize("seed", range(5))
def test_random_chunks_give_the_same_frames(seed: int) -> None:
    rng = random.Random(seed)
    buf = ReceiveBuffer()
    frames: list[Frame] = []
    pos = 0
    while pos < len(STREAM):
        size = rng.randint(0, 40)
        buf.feed(STREAM[pos : pos + size])
        pos += size
        frames.extend(drain(buf))
    assert [decode_backend(t, p) for t, p in frames] == STREAM_MESSAGES


def test_incomplete_message_waits() -> None:
    data = CommandComplete("SELECT 1").encode()
    buf = ReceiveBuffer()
    buf.feed(data[:4])
    assert buf.next_frame() is None
    assert buf.peek_type() is None  # header not whole yet
    buf.feed(data[4:-1])
    assert buf.peek_type() == ord("C")
    assert buf.next_frame() is None
    assert len(buf) == len(data) - 1
    buf.feed(data[-1:])
    assert buf.next_frame() == (ord("C"), b"SELECT 1\0")


def test_peek_does_not_consume() -> None:
    buf = ReceiveBuffer()
    buf.feed(ParseComplete().encode())
    assert buf.peek_type() == ord("1")
    assert buf.peek_type() == ord("1")
    assert buf.next_frame() == (ord("1"), b"")


def test_take_raw_and_unconsumed() -> None:
    # The SSLRequest answer is one unframed byte, possibly followed by more.
    buf = ReceiveBuffer()
    buf.feed(b"S" + ReadyForQuery(TransactionStatus.IDLE).encode())
    assert buf.take_raw(1) == b"S"
    assert buf.unconsumed() == b"Z\0\0\0\x05I"
    assert buf.next_frame() == (ord("Z"), b"I")
    assert buf.take_raw(1) == b""
    assert buf.unconsumed() == b""


def test_compaction_keeps_frames_right_over_many_feeds() -> None:
    rows = [encode_data_row([str(i).encode() * (i % 50), None]) for i in range(5000)]
    stream = b"".join(rows)
    assert len(stream) > 4 * 65536
    rng = random.Random(7)
    buf = ReceiveBuffer()
    got: list[Frame] = []
    peak = 0
    pos = 0
    while pos < len(stream):
        size = rng.choice((1, 3, 17, 500, 4096, 20000))
        buf.feed(stream[pos : pos + size])
        pos += size
        # Consume only some of what is there at times, so the buffer holds a tail.
        for _ in range(rng.randint(0, 200)):
            item = buf.next_frame()
            if item is None:
                break
            got.append(item)
        peak = max(peak, len(buf._data))
    got.extend(drain(buf))
    assert [DataRow.decode(p).values for _, p in got] == [
        (str(i).encode() * (i % 50), None) for i in range(5000)
    ]
    assert len(buf) == 0
    # The consumed prefix is dropped: the storage never holds the whole stream.
    assert peak < len(stream) // 2


def test_compaction_with_take_data_rows() -> None:
    rows = [encode_data_row([f"row {i}".encode(), b"\xc3\xa9"]) for i in range(20000)]
    stream = b"".join(rows)
    buf = ReceiveBuffer()
    got: list[Row] = []
    for start in range(0, len(stream), 999):
        buf.feed(stream[start : start + 999])
        got.extend(buf.take_data_rows(2))
    assert got == [(f"row {i}", "é") for i in range(20000)]
    assert len(buf) == 0
    assert len(buf._data) < len(stream) // 4


# ---------------------------------------------------------------------- header checks


def test_nonsense_length_3() -> None:
    # Upstream 3.9 item 2: `R\0\0\0\x03`.
    buf = ReceiveBuffer()
    buf.feed(b"R\0\0\0\x03")
    refused(buf, "Nonsense message length")


@pytest.mark.parametrize("length", [0, 1, 2, 3, -1, -4, -(2**31)])
@pytest.mark.parametrize("type_char", ["R", "D", "Z", "C", "E"])
def test_nonsense_lengths(type_char: str, length: int) -> None:
    buf = ReceiveBuffer()
    buf.feed(header(type_char, length))
    refused(buf, "Nonsense message length")


def test_unknown_auth_code_is_a_violation_after_framing() -> None:
    # Upstream 3.9 item 2: `R\0\0\0\x08\0\0\0\xFF`.
    buf = ReceiveBuffer()
    buf.feed(b"R\0\0\0\x08\0\0\0\xff")
    type_code, payload = drain(buf)[0]
    with pytest.raises(PgasyncError) as info:
        decode_backend(type_code, payload)
    assert_violation(info.value, "AuthenticationRequest")
    assert_violation(info.value, "unrecognised type 255")


@pytest.mark.parametrize("type_char", ["x", "p", "Q", "\0", "\xff", "P", "B", "X"])
def test_unrecognised_type_character(type_char: str) -> None:
    # Upstream 3.9 item 2: `x\0\0\0\x04`. Frontend-only types are not backend types.
    buf = ReceiveBuffer()
    buf.feed(type_char.encode("latin-1") + b"\0\0\0\x04")
    refused(buf, "Unrecognised message type character")


def test_message_too_long_from_the_header_alone() -> None:
    # Upstream 3.9 item 2: `R\x40\0\0\x04 blah...` with no EOF: refused without waiting
    # for the gigabyte it announces.
    buf = ReceiveBuffer()
    assert buf.max_message_length == DEFAULT_MAX_MESSAGE_LENGTH == 1 << 30
    buf.feed(b"R\x40\0\0\x04")
    refused(buf, "Message too long")
    refused(buf, "message_length 1073741829")
    buf.feed(b" blah blah blah")
    refused(buf, "message_length 1073741829")


def test_data_row_too_long_during_rows() -> None:
    # Upstream 3.9 item 3: 1,2,T + `D\x40\0\0\x04...`.
    buf = ReceiveBuffer()
    buf.feed(b"D\x40\0\0\x04" + b"\0\x01")
    assert buf.take_data_rows(1) == []  # left for next_frame() to report
    refused(buf, "message_length 1073741829")


def test_largest_allowed_length_waits() -> None:
    buf = ReceiveBuffer()
    buf.feed(header("D", (1 << 30) - 1) + b"\0\0")  # message_length exactly 1 GiB
    assert buf.next_frame() is None
    assert buf.peek_type() == ord("D")


@pytest.mark.parametrize("max_length", [1024, 5000, 65536])
def test_max_message_length_respected(max_length: int) -> None:
    fits = header("D", max_length - 1) + b"\0\0"
    buf = ReceiveBuffer(max_message_length=max_length)
    buf.feed(fits)
    assert buf.next_frame() is None  # waits: message_length == max is allowed
    buf = ReceiveBuffer(max_message_length=max_length)
    buf.feed(header("D", max_length))
    refused(buf, f"message_length {max_length + 1}")
    # Also when the whole message has already arrived.
    buf = ReceiveBuffer(max_message_length=max_length)
    buf.feed(CopyData(b"x" * (max_length - 4)).encode())
    refused(buf, "Message too long")
    buf = ReceiveBuffer(max_message_length=max_length)
    buf.feed(CopyData(b"x" * (max_length - 5)).encode())
    assert buf.next_frame() == (ord("d"), b"x" * (max_length - 5))


def test_max_message_length_applies_to_take_data_rows() -> None:
    buf = ReceiveBuffer(max_message_length=1024)
    small = encode_data_row([b"a"])
    big = encode_data_row([b"b" * 2000])
    buf.feed(small + big)
    assert buf.take_data_rows(1) == [("a",)]
    assert buf.take_data_rows(1) == []
    refused(buf, "Message too long")


@pytest.mark.parametrize("type_char", ["S", "C", "R", "t", "G", "H", "W", "v"])
def test_short_type_claiming_too_much_is_refused_from_the_header(type_char: str) -> None:
    buf = ReceiveBuffer()
    buf.feed(header(type_char, SHORT_MESSAGE_LIMIT + 1))
    refused(buf, "more than any such message can hold")
    buf = ReceiveBuffer()
    buf.feed(header(type_char, SHORT_MESSAGE_LIMIT))
    assert buf.next_frame() is None  # at the limit: waits for the body


@pytest.mark.parametrize("type_char", ["T", "D", "d", "V", "E", "N", "A"])
def test_long_types_may_be_long(type_char: str) -> None:
    buf = ReceiveBuffer()
    buf.feed(header(type_char, 10_000_000))
    assert buf.next_frame() is None
    assert buf.peek_type() == ord(type_char)


@pytest.mark.parametrize(
    ("type_char", "exact"),
    [("1", 4), ("2", 4), ("3", 4), ("n", 4), ("I", 4), ("s", 4), ("c", 4), ("Z", 5), ("K", 12)],
)
def test_fixed_size_types_refuse_any_other_length(type_char: str, exact: int) -> None:
    for length in (exact - 1, exact + 1, SHORT_MESSAGE_LIMIT + 1, 1 << 29):
        if length < 4:
            continue
        buf = ReceiveBuffer()
        buf.feed(header(type_char, length))
        refused(buf, "impossible length")
    buf = ReceiveBuffer()
    buf.feed(header(type_char, exact) + b"\0" * (exact - 4))
    assert buf.next_frame() == (ord(type_char), b"\0" * (exact - 4))


def test_ready_for_query_claiming_a_lot() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"Z\0\0\x75\x31")  # 30001
    with pytest.raises(PgasyncError) as info:
        buf.next_frame()
    assert_violation(info.value, "'Z'")


def test_header_after_good_frames_is_checked_when_reached() -> None:
    buf = ReceiveBuffer()
    buf.feed(ParseComplete().encode() + b"x\0\0\0\x04")
    assert buf.next_frame() == (ord("1"), b"")
    refused(buf, "Unrecognised message type character 'x'")


# -------------------------------------------------------------------- take_data_rows


def rows_buffer(*chunks: bytes) -> ReceiveBuffer:
    buf = ReceiveBuffer()
    for chunk in chunks:
        buf.feed(chunk)
    return buf


def test_take_data_rows_values() -> None:
    buf = rows_buffer(
        encode_data_row([b"Col 1", b"Col 2", None, b"Col 4"]),
        encode_data_row([b"", None, "ü€😀".encode(), b"x" * 1000]),
        encode_data_row([None, None, None, None]),
    )
    assert buf.take_data_rows(4) == [
        ("Col 1", "Col 2", None, "Col 4"),
        ("", None, "ü€😀", "x" * 1000),
        (None, None, None, None),
    ]
    assert len(buf) == 0


def test_take_data_rows_zero_columns() -> None:
    buf = rows_buffer(encode_data_row([]) * 3, CommandComplete("SELECT 3").encode())
    assert buf.take_data_rows(0) == [(), (), ()]
    assert buf.next_frame() == (ord("C"), b"SELECT 3\0")


def test_take_data_rows_matches_datarow_decode() -> None:
    values: list[list[bytes | None]] = [
        [b"1", None, "é".encode()],
        [b"", b"", b""],
        [None, b"\t\n", b"0" * 70000],
    ]
    buf = rows_buffer(*(encode_data_row(v) for v in values))
    expected = [tuple(None if x is None else x.decode() for x in v) for v in values]
    assert buf.take_data_rows(3) == expected


def test_take_data_rows_stops_before_other_messages() -> None:
    buf = rows_buffer(
        encode_data_row([b"1"]),
        encode_data_row([b"2"]),
        CommandComplete("SELECT 2").encode(),
        ReadyForQuery(TransactionStatus.IDLE).encode(),
    )
    assert buf.take_data_rows(1) == [("1",), ("2",)]
    assert buf.take_data_rows(1) == []
    assert buf.next_frame() == (ord("C"), b"SELECT 2\0")
    assert buf.take_data_rows(1) == []
    assert buf.next_frame() == (ord("Z"), b"I")


def test_take_data_rows_limit() -> None:
    buf = rows_buffer(*(encode_data_row([str(i).encode()]) for i in range(10)))
    assert buf.take_data_rows(1, limit=3) == [("0",), ("1",), ("2",)]
    assert buf.take_data_rows(1, limit=0) == []
    assert len(buf.take_data_rows(1)) == 7


def test_take_data_rows_partial_row_stays_buffered() -> None:
    first = encode_data_row([b"one", None])
    second = encode_data_row([b"two", b"three"])
    for cut in range(1, len(second)):
        buf = rows_buffer(first, second[:cut])
        assert buf.take_data_rows(2) == [("one", None)]
        assert len(buf) == cut
        assert buf.take_data_rows(2) == []
        buf.feed(second[cut:])
        assert buf.take_data_rows(2) == [("two", "three")]
        assert len(buf) == 0


def test_take_data_rows_empty_buffer() -> None:
    assert ReceiveBuffer().take_data_rows(3) == []


def test_column_count_mismatch() -> None:
    # Upstream 3.9 item 3: a 2-column RowDescription and a 1-column DataRow.
    buf = rows_buffer(encode_data_row([b"a"]))
    with pytest.raises(PgasyncError) as info:
        buf.take_data_rows(2)
    assert_violation(
        info.value, "number of columns in DataRow message did not match RowDescription"
    )


def test_wide_rows_have_an_unsigned_column_count() -> None:
    # The count is a uint16 on the wire, like RowDescription's.
    width = 40000
    buf = rows_buffer(encode_data_row([None] * width), encode_data_row([b"v"] * width))
    rows = buf.take_data_rows(width)
    assert rows == [(None,) * width, ("v",) * width]
    buf = rows_buffer(encode_data_row([None] * width))
    with pytest.raises(PgasyncError) as info:
        buf.take_data_rows(width - 1)
    assert_violation(info.value, f"expected {width - 1}, got {width}")


def test_invalid_utf8_is_a_violation() -> None:
    buf = rows_buffer(encode_data_row([b"ok", b"\xff\xfe"]))
    with pytest.raises(PgasyncError) as info:
        buf.take_data_rows(2)
    assert_violation(info.value, "UTF-8")


BAD_ROWS: list[tuple[bytes, int, str]] = [
    (encode_data_row([b"a"]), 2, "did not match"),
    (encode_data_row([b"\xc3"]), 1, "UTF-8"),
    (b"D" + struct.pack("!ihi", 10, 1, 5), 1, "truncated"),  # value runs past the end
    (b"D" + struct.pack("!ih", 8, 1) + b"\0\0", 1, "truncated"),  # length cut short
    (b"D" + struct.pack("!ihi", 10, 1, -2), 1, "length -2"),
    (b"D" + struct.pack("!ihi", 12, 1, 1) + b"ab", 1, "trailing"),
    (b"D" + struct.pack("!ih", 8, 0) + b"\0\0", 0, "trailing"),
]


@pytest.mark.parametrize(("bad", "columns", "fragment"), BAD_ROWS)
def test_good_rows_first_then_the_bad_one(bad: bytes, columns: int, fragment: str) -> None:
    good = encode_data_row([b"g"] * columns)
    buf = rows_buffer(good, good, bad, good)
    assert buf.take_data_rows(columns) == [("g",) * columns] * 2
    with pytest.raises(PgasyncError) as info:
        buf.take_data_rows(columns)
    assert_violation(info.value, fragment)
    # The bad row is still at the front: asking again gives the same answer.
    with pytest.raises(PgasyncError) as info:
        buf.take_data_rows(columns)
    assert_violation(info.value, fragment)


def test_short_datarow_is_left_to_next_frame() -> None:
    # A DataRow too short to hold its column count: take_data_rows leaves it, and the
    # frame decodes to a violation.
    buf = rows_buffer(encode_data_row([b"a"]), b"D\0\0\0\x05\0")
    assert buf.take_data_rows(1) == [("a",)]
    assert buf.take_data_rows(1) == []
    type_code, payload = drain(buf)[0]
    with pytest.raises(PgasyncError) as info:
        decode_backend(type_code, payload)
    assert_violation(info.value, "DataRow")
