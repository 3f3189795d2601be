"""conn.copy_out against real servers.

A port of upstream's test_copy_out.ml (which used ``Private.iter_copy_out``), through
``conn.copy_out(sql, handle_data=...)``: ``handle_data`` gets each CopyData payload, and
an awaitable it returns is awaited before more is read (pushback).

Upstream's example_datatypes table had an ``hstore`` column. hstore is an extension, so
using it means ``CREATE EXTENSION`` in the database every other test shares (and an
embedded server may not ship it); it is left out, and every other column is kept. The
table is temporary, so tests stay independent.
"""

from __future__ import annotations

import asyncio
import struct
import uuid

import pytest
import pytest_asyncio

import postgres_async as pg
from support import (
    Boom,
    assert_usable,
    fetch_rows,
    open_gates_and_end,
    poll_for_client_write,
    with_connection_fixture,
)

BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
BINARY_HEADER = BINARY_SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # flags, ext
BINARY_TRAILER = b"\xff\xff"

EXAMPLE_UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
EXAMPLE_DDL = """
CREATE TEMPORARY TABLE example_datatypes (
    t_null text,
    t_bit bit,
    t_varbit bit varying,
    t_char char,
    t_int2 int2,
    t_int4 int4,
    t_int8 int8,
    t_float4 float4,
    t_float8 float8,
    t_uuid uuid,
    t_numeric numeric,
    t_int_array int[],
    t_cidr cidr,
    t_macaddr macaddr,
    t_jsonb jsonb,
    t_text text,
    t_bytea bytea,
    t_varchar varchar(20)
)"""
EXAMPLE_INSERT = f"""
INSERT INTO example_datatypes VALUES (
    NULL,
    B'1',
    B'{"10" * 32}1',
    'x',
    32767,
    2147483647,
    9223372036854775807,
    2.7182817,
    3.14159265358979,
    '{EXAMPLE_UUID}',
    123.45,
    '{{1,2,3}}',
    '192.168.100.128/25',
    '08:00:2b:01:02:03',
    '{{"a": [1, 2, {{"b": null}}]}}',
    E'tab\\there',
    '\\x00DEADBEEF00',
    'varchar'
)"""

EXAMPLE_TEXT_LINE = (
    "\\N\t1\t"
    + "10" * 32
    + "1\tx\t32767\t2147483647\t9223372036854775807\t2.7182817\t3.14159265358979\t"
    + EXAMPLE_UUID
    + "\t123.45\t{1,2,3}\t192.168.100.128/25\t08:00:2b:01:02:03\t"
    + '{"a": [1, 2, {"b": null}]}\ttab\\there\t\\\\x00deadbeef00\tvarchar\n'
).encode()

EXAMPLE_BINARY_FIELDS: list[bytes | None] = [
    None,
    struct.pack("!i", 1) + b"\x80",  # bit: bit count, then the bits
    struct.pack("!i", 65) + b"\xaa" * 8 + b"\x80",
    b"x",
    struct.pack("!h", 32767),
    struct.pack("!i", 2147483647),
    struct.pack("!q", 9223372036854775807),
    struct.pack("!f", 2.7182817),
    struct.pack("!d", 3.14159265358979),
    uuid.UUID(EXAMPLE_UUID).bytes,
    # numeric: ndigits 2, weight 0, sign +, dscale 2, base-10000 digits 123 and 4500
    struct.pack("!hhHhhh", 2, 0, 0, 2, 123, 4500),
    # int4[]: 1 dimension, no NULLs, element oid 23, 3 elements from index 1
    struct.pack("!iiiii", 1, 0, 23, 3, 1) + b"".join(struct.pack("!ii", 4, n) for n in (1, 2, 3)),
    bytes([2, 25, 1, 4, 192, 168, 100, 128]),  # cidr: AF_INET, /25, is_cidr, 4 bytes
    bytes([0x08, 0x00, 0x2B, 0x01, 0x02, 0x03]),
    b'\x01{"a": [1, 2, {"b": null}]}',  # jsonb: version 1, then the text
    b"tab\there",
    b"\x00\xde\xad\xbe\xef\x00",
    b"varchar",
]


# ------------------------------------------------------------------------------ helpers
async def copy_out_all(conn: pg.Connection, sql: str) -> tuple[pg.CommandComplete, list[bytes]]:
    chunks: list[bytes] = []

    def handle_data(data: bytes) -> None:
        assert isinstance(data, bytes)
        chunks.append(data)

    result = await conn.copy_out(sql, handle_data=handle_data)
    return result, chunks


def parse_binary_copy(data: bytes) -> list[list[bytes | None]]:
    """The tuples of a whole binary COPY stream (header, tuples, trailer)."""
    assert data.startswith(BINARY_SIGNATURE)
    _flags, extension_length = struct.unpack_from("!ii", data, len(BINARY_SIGNATURE))
    pos = len(BINARY_SIGNATURE) + 8 + extension_length
    tuples: list[list[bytes | None]] = []
    while True:
        (count,) = struct.unpack_from("!h", data, pos)
        pos += 2
        if count == -1:
            break
        fields: list[bytes | None] = []
        for _ in range(count):
            (length,) = struct.unpack_from("!i", data, pos)
            pos += 4
            if length == -1:
                fields.append(None)
            else:
                fields.append(data[pos : pos + length])
                pos += length
        tuples.append(fields)
    assert pos == len(data), "bytes after the trailer"
    return tuples


# Connections made by pg.with_connection (support.with_connection_fixture).
conn = with_connection_fixture()
other_conn = with_connection_fixture()


@pytest_asyncio.fixture
async def example_conn(conn: pg.Connection) -> pg.Connection:
    """``conn`` with the temporary example_datatypes table holding one row."""
    await conn.simple_query(f"BEGIN; {EXAMPLE_DDL}; {EXAMPLE_INSERT}; COMMIT")
    assert await fetch_rows(conn, "SELECT count(*) FROM example_datatypes") == [("1",)]
    return conn


# ------------------------------------------------------------------------------ empty
async def test_copy_out_empty_row_text(conn: pg.Connection) -> None:
    result, chunks = await copy_out_all(conn, "COPY (SELECT) TO STDOUT")
    assert result == pg.CommandComplete("COPY", 1)
    assert chunks == [b"\n"]


async def test_copy_out_empty_row_binary(conn: pg.Connection) -> None:
    result, chunks = await copy_out_all(conn, "COPY (SELECT) TO STDOUT (FORMAT binary)")
    assert result == pg.CommandComplete("COPY", 1)
    # The 19-byte header and the tuple (field count 0) in one message, then the trailer.
    assert chunks == [BINARY_HEADER + b"\x00\x00", BINARY_TRAILER]
    assert len(chunks[0]) == 21
    assert parse_binary_copy(b"".join(chunks)) == [[]]


# ---------------------------------------------------------------------------- example
async def test_copy_out_example_text(example_conn: pg.Connection) -> None:
    result, chunks = await copy_out_all(example_conn, "COPY example_datatypes TO STDOUT")
    assert result == pg.CommandComplete("COPY", 1)
    assert chunks == [EXAMPLE_TEXT_LINE]


async def test_copy_out_example_binary(example_conn: pg.Connection) -> None:
    result, chunks = await copy_out_all(
        example_conn, "COPY example_datatypes TO STDOUT (FORMAT binary)"
    )
    assert result == pg.CommandComplete("COPY", 1)
    assert len(chunks) == 2
    assert chunks[0].startswith(BINARY_HEADER + struct.pack("!h", len(EXAMPLE_BINARY_FIELDS)))
    assert chunks[1] == BINARY_TRAILER
    assert parse_binary_copy(b"".join(chunks)) == [EXAMPLE_BINARY_FIELDS]


async def test_copy_out_round_trip_text_and_binary(example_conn: pg.Connection) -> None:
    conn = example_conn
    result, text_chunks = await copy_out_all(conn, "COPY example_datatypes TO STDOUT")
    assert result == pg.CommandComplete("COPY", 1)
    copied = await conn.copy_in_raw("COPY example_datatypes FROM STDIN", feed_data=text_chunks)
    assert copied == pg.CommandComplete("COPY", 1)

    result, binary_chunks = await copy_out_all(
        conn, "COPY example_datatypes TO STDOUT (FORMAT binary)"
    )
    assert result == pg.CommandComplete("COPY", 2)
    copied = await conn.copy_in_raw(
        "COPY example_datatypes FROM STDIN (FORMAT binary)", feed_data=binary_chunks
    )
    assert copied == pg.CommandComplete("COPY", 2)

    assert await fetch_rows(conn, "SELECT count(*) FROM example_datatypes") == [("4",)]
    assert await fetch_rows(
        conn, "SELECT count(*) FROM (SELECT DISTINCT * FROM example_datatypes) AS d"
    ) == [("1",)]
    # And the four copies still read back as the original row.
    _, again = await copy_out_all(conn, "COPY example_datatypes TO STDOUT")
    assert again == [EXAMPLE_TEXT_LINE] * 4


# --------------------------------------------------------------------------- pushback
async def test_copy_out_pushback_pauses_delivery(conn: pg.Connection) -> None:
    loop = asyncio.get_running_loop()
    total = 2000
    got: list[bytes] = []
    gates: dict[int, asyncio.Future[None]] = {}
    overlapping: list[int] = []

    def handle_data(data: bytes) -> asyncio.Future[None] | None:
        if any(not gate.done() for gate in gates.values()):
            overlapping.append(len(got))
        got.append(data)
        if len(got) in (1, 700, 1400):
            gate: asyncio.Future[None] = loop.create_future()
            gates[len(got)] = gate
            return gate
        return None

    task = asyncio.create_task(
        conn.copy_out(
            f"COPY (SELECT g FROM generate_series(1, {total}) AS g) TO STDOUT",
            handle_data=handle_data,
        )
    )
    try:
        for position in (1, 700, 1400):
            for _ in range(200):
                if position in gates:
                    break
                await asyncio.sleep(0.005)
            assert position in gates, f"message {position} never arrived"
            await asyncio.sleep(0.1)
            # While the gate is pending nothing more is delivered and the copy goes on.
            assert len(got) == position
            assert not task.done()
            gates[position].set_result(None)
        result = await asyncio.wait_for(task, 10)
    finally:
        await open_gates_and_end(task, *gates.values())
    assert result == pg.CommandComplete("COPY", total)
    assert got == [f"{i}\n".encode() for i in range(1, total + 1)]
    assert overlapping == []
    await assert_usable(conn)


async def test_copy_out_pushback_holds_the_server_back(
    conn: pg.Connection, other_conn: pg.Connection
) -> None:
    """While handle_data's future is pending the socket is not read: the server blocks
    writing (wait event ClientWrite) instead of the client buffering the whole copy."""
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    got = 0

    def handle_data(_data: bytes) -> asyncio.Future[None] | None:
        nonlocal got
        got += 1
        return gate if got == 1 else None

    rows = 20000  # about 20 MB: more than the socket buffers hold
    task = asyncio.create_task(
        conn.copy_out(
            f"COPY (SELECT g, repeat('a', 1000) FROM generate_series(1, {rows}) AS g) TO STDOUT",
            handle_data=handle_data,
        )
    )
    try:
        state = await poll_for_client_write(other_conn, conn.backend_pid)
        assert state == [("active", "ClientWrite")]
        assert got == 1
        assert not task.done()
        gate.set_result(None)
        result = await asyncio.wait_for(task, 30)
    finally:
        await open_gates_and_end(task, gate)
    assert result == pg.CommandComplete("COPY", rows)
    assert got == rows
    await assert_usable(conn)


# ----------------------------------------------------------------------------- misuse
def _no_data(data: bytes) -> None:
    raise AssertionError(f"handle_data must not be called, got {data!r}")


async def test_copy_out_of_a_select(conn: pg.Connection) -> None:
    sql = "SELECT generate_series(1, 3)"
    with pytest.raises(pg.PgasyncError, match="query unexpectedly produced rows") as info:
        await conn.copy_out(sql, handle_data=_no_data)
    assert info.value.query == sql
    await assert_usable(conn)


async def test_copy_out_of_copy_from_stdin(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("CREATE TEMPORARY TABLE x (y integer)")
    sql = "COPY x FROM STDIN"
    with pytest.raises(pg.PgasyncError, match="query attempted COPY IN") as info:
        await conn.copy_out(sql, handle_data=_no_data)
    assert info.value.query == sql
    assert await fetch_rows(conn, "SELECT count(*) FROM x") == [("0",)]
    await assert_usable(conn)


async def test_copy_out_of_a_statement_without_copy(conn: pg.Connection) -> None:
    """As upstream's iter_copy_out: no COPY at all is fine, the CommandComplete comes back."""
    result = await conn.copy_out(
        "CREATE TEMPORARY TABLE not_copied (y integer)", handle_data=_no_data
    )
    assert result == pg.CommandComplete("CREATE TABLE", None)
    assert await fetch_rows(conn, "SELECT count(*) FROM not_copied") == [("0",)]


async def test_copy_out_server_error_mid_stream(conn: pg.Connection) -> None:
    _, chunks = await copy_out_all(conn, "COPY (SELECT 1) TO STDOUT")
    assert chunks == [b"1\n"]
    chunks = []
    with pytest.raises(pg.errors.DivisionByZero) as info:
        await conn.copy_out(
            "COPY (SELECT 6 / (3 - g) FROM generate_series(1, 5) AS g) TO STDOUT",
            handle_data=chunks.append,
        )
    assert info.value.postgres_error_code == "22012"
    assert chunks == [b"3\n", b"6\n"]
    await assert_usable(conn)


async def test_copy_out_handle_data_raising(conn: pg.Connection) -> None:
    error = Boom("handle_data broke")
    calls = 0

    def handle_data(_data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise error

    with pytest.raises(Boom) as info:
        await conn.copy_out(
            "COPY (SELECT generate_series(1, 1000)) TO STDOUT", handle_data=handle_data
        )
    assert info.value is error
    assert calls == 3  # no callback after the one that raised
    await assert_usable(conn)


async def test_copy_out_pushback_failing(conn: pg.Connection) -> None:
    """A future returned by handle_data that fails ends the copy with its exception."""
    loop = asyncio.get_running_loop()
    error = Boom("pushback broke")
    calls = 0

    def handle_data(_data: bytes) -> asyncio.Future[None] | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            future: asyncio.Future[None] = loop.create_future()
            loop.call_later(0.01, future.set_exception, error)
            return future
        return None

    with pytest.raises(Boom) as info:
        await conn.copy_out(
            "COPY (SELECT generate_series(1, 1000)) TO STDOUT", handle_data=handle_data
        )
    assert info.value is error
    assert calls == 2
    await assert_usable(conn)
