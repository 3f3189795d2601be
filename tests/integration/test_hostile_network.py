"""Hostile networks: a real server behind the fault proxy (``support.fault_proxy``).

Every scenario ends in a clear error (a ``PgasyncError`` with its SQLSTATE), the promised
connection status, no data lost and no hang: each wait has a time bound, and the
suite's strictness fixture fails a test that leaves a task, a loop error or an open
socket (ResourceWarning) behind.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest

import postgres_async as pg
from postgres_async.errors import PgasyncError
from postgres_async.protocol import ReceiveBuffer
from postgres_async.testing import PostgresServer
from support import STEP_BOUND, Row, connected, fetch_rows, ignore_row, socket_fds, status_of
from support.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(30)  # a backstop; every test bounds its own waits

BOUND = STEP_BOUND  # no single step of a scenario may take longer
CONNECTION_GONE = ("08003", "08006")
_DATA_ROW = ord("D")

# A few hundred rows of multi-byte UTF-8 (2, 3 and 4 byte sequences), some NULLs, and a
# multi-byte parameter, so a 1-byte dribble splits characters, lengths and headers.
UTF8_SQL = (
    "SELECT g, $1::text || repeat('ä€😀', g % 7) || g::text AS s, "
    "CASE WHEN g % 10 = 0 THEN NULL ELSE 'ß' END AS n "
    "FROM generate_series(1, 300) g"
)
UTF8_PARAMETER = "ünïcødé 💾"


# ------------------------------------------------------------------------------ helpers
def target(kwargs: dict[str, Any]) -> tuple[str, int]:
    host, port = kwargs["server"]
    return str(host), int(port)


def client_sockets(proxy: FaultProxy) -> set[int]:
    """Sockets open in this process that are not the proxy's."""
    return socket_fds() - proxy.socket_fds()


def count_data_rows(stream: bytes) -> int:
    """Complete DataRow messages in a server-to-client byte stream (no SSL reply byte)."""
    buffer = ReceiveBuffer()
    buffer.feed(stream)
    rows = 0
    for _ in range(len(stream)):  # at most one message per byte
        frame = buffer.next_frame()
        if frame is None:
            break
        if frame[0] == _DATA_ROW:
            rows += 1
    return rows


def assert_gone(error: BaseException) -> None:
    assert isinstance(error, PgasyncError)
    assert error.postgres_error_code in CONNECTION_GONE, error


async def assert_failed_clearly(conn: pg.Connection) -> PgasyncError:
    """Status Failed with a PgasyncError; close_finished raises it promptly; a new query
    is refused as on a previously-failed connection."""
    status = conn.status
    assert isinstance(status, pg.Failed), status
    assert isinstance(status.error, PgasyncError)
    with pytest.raises(PgasyncError) as closed:
        async with asyncio.timeout(2.0):
            await conn.close_finished()
    assert closed.value is status.error
    with pytest.raises(PgasyncError, match="previously-failed") as again:
        await conn.query_expect_no_data("SELECT 1")
    assert again.value.postgres_error_code == "08003"
    return status.error


async def wait_until_running(observer: pg.Connection, pid: int | None, sql: str) -> None:
    """Until backend ``pid`` is running ``sql`` (polled: no event says so)."""
    assert pid is not None
    check = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query = $2"
    )
    for _ in range(int(BOUND / 0.01)):
        if await fetch_rows(observer, check, [pid, sql]) == [("1",)]:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"backend {pid} did not start running {sql!r} within {BOUND} s")


async def wait_for_cancel_connection(proxy: FaultProxy) -> None:
    """Until the CancelRequest's own connection went through the proxy and the server
    closed it (which it does once the signal is on its way)."""
    for _ in range(int(BOUND / 0.01)):
        if len(proxy.connections) >= 2 and proxy.connections[1].closed:
            break
        await asyncio.sleep(0.01)
    assert len(proxy.connections) == 2
    assert proxy.connections[1].bytes_up == 16  # exactly one CancelRequest
    assert proxy.connections[1].bytes_down == 0


async def run_utf8_query(conn: pg.Connection) -> tuple[tuple[str, ...], list[Row], Any]:
    names: set[tuple[str, ...]] = set()
    rows: list[Row] = []

    def handle_row(column_names: tuple[str, ...], values: Row) -> None:
        names.add(column_names)
        rows.append(values)

    command = await conn.query(UTF8_SQL, [UTF8_PARAMETER], handle_row=handle_row)
    assert len(names) == 1
    return names.pop(), rows, command


# ---------------------------------------------------------------------------- black hole
async def test_black_hole_during_query_times_out_and_the_connection_recovers(
    server_kwargs: dict[str, Any],
) -> None:
    async with (
        FaultProxy(*target(server_kwargs)) as proxy,
        connected(**server_kwargs) as observer,
        connected(**proxy.connect_kwargs(server_kwargs)) as conn,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def sleep_with_timeout() -> None:
            async with asyncio.timeout(1.0):
                await conn.query("SELECT pg_sleep(60)", handle_row=ignore_row)

        task = asyncio.create_task(sleep_with_timeout())
        await wait_until_running(observer, conn.backend_pid, "SELECT pg_sleep(60)")
        # The session goes dark mid-query; connections opened later (the
        # CancelRequest's) pass through to the real server.
        proxy.black_hole(new_connections=False)
        with pytest.raises(TimeoutError):
            await task
        assert loop.time() - started < 1.5
        await wait_for_cancel_connection(proxy)
        assert conn.status == pg.Open()
        # The network heals: the held 57014 arrives, the cancelled statement is drained,
        # and the next query works (it would wait 60 s if the cancel had been lost).
        proxy.resume()
        async with asyncio.timeout(BOUND):
            assert await fetch_rows(conn, "SELECT 2") == [("2",)]
        assert conn.status == pg.Open()


async def test_black_hole_before_the_query_arrives_cancel_finds_nothing_then_recovers(
    server_kwargs: dict[str, Any],
) -> None:
    """The statement is held before the server sees it, so the CancelRequest finds an
    idle backend and does nothing; once the network heals the statement runs to its end,
    its result is drained, and the connection goes on."""
    async with (
        FaultProxy(*target(server_kwargs)) as proxy,
        connected(**proxy.connect_kwargs(server_kwargs)) as conn,
    ):
        proxy.black_hole(new_connections=False)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await conn.query("SELECT pg_sleep(1)", handle_row=ignore_row)
        assert loop.time() - started < 1.0
        await wait_for_cancel_connection(proxy)
        proxy.resume()
        async with asyncio.timeout(BOUND):
            assert await fetch_rows(conn, "SELECT 2") == [("2",)]
        assert loop.time() - started >= 1.0  # it did wait for the held statement
        assert conn.status == pg.Open()


async def test_black_hole_that_never_heals_makes_close_fail_within_its_bound(
    server_kwargs: dict[str, Any],
) -> None:
    async with FaultProxy(*target(server_kwargs)) as proxy:
        conn = await pg.connect(**proxy.connect_kwargs(server_kwargs))
        proxy.black_hole()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await conn.query_expect_no_data("SELECT 1")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await conn.close()
        assert loop.time() - started < 3.0
        assert info.value.postgres_error_code == "08000"
        status = conn.status
        assert isinstance(status, pg.Failed)
        assert status.resources_released


@pytest.mark.parametrize(
    ("ssl_mode", "phase"),
    [
        ("prefer", "timeout expired while negotiating SSL"),
        ("disable", "timeout expired while logging in"),
    ],
)
async def test_black_hole_during_login_fails_with_08001_within_connect_timeout(
    server_kwargs: dict[str, Any], ssl_mode: str, phase: str
) -> None:
    async with FaultProxy(*target(server_kwargs)) as proxy:
        proxy.black_hole()
        before = client_sockets(proxy)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PgasyncError, match=phase) as info:
            async with asyncio.timeout(BOUND):
                await pg.connect(
                    **proxy.connect_kwargs(server_kwargs, connect_timeout=1, ssl_mode=ssl_mode)
                )
        elapsed = loop.time() - started
        assert 0.9 <= elapsed < 2.0, elapsed
        assert info.value.postgres_error_code == "08001"
        assert len(proxy.connections) == 1  # it did reach the proxy, which said nothing
        await asyncio.sleep(0)  # let the aborted transport close its socket
        assert client_sockets(proxy) == before


@pytest.mark.parametrize("ssl_mode", ["disable", "prefer"])
async def test_deaf_listener_fails_with_08001_within_connect_timeout(
    server_kwargs: dict[str, Any], ssl_mode: str
) -> None:
    async with FaultProxy(*target(server_kwargs)) as proxy:
        proxy.deaf()
        before = client_sockets(proxy)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(BOUND):
                await pg.connect(
                    **proxy.connect_kwargs(server_kwargs, connect_timeout=0.5, ssl_mode=ssl_mode)
                )
        assert 0.4 <= loop.time() - started < 1.0
        assert info.value.postgres_error_code == "08001"
        await asyncio.sleep(0)
        assert client_sockets(proxy) == before


@pytest.mark.parametrize(
    ("ssl_mode", "expected"),
    [
        # The proxy hangs up on the StartupMessage: EOF while logging in.
        ("disable", "Unexpected EOF"),
        # The proxy hangs up on the SSLRequest.
        ("prefer", "Reader closed before ssl negotiation response"),
    ],
)
async def test_refused_connection_fails_at_once_with_a_clear_error(
    server_kwargs: dict[str, Any], ssl_mode: str, expected: str
) -> None:
    async with FaultProxy(*target(server_kwargs)) as proxy:
        proxy.refuse()
        before = client_sockets(proxy)
        with pytest.raises(PgasyncError, match=expected) as info:
            async with asyncio.timeout(1.0):
                await pg.connect(**proxy.connect_kwargs(server_kwargs, ssl_mode=ssl_mode))
        # 08001 (could not connect) or 08003 (connection does not exist): both say the
        # connection is gone, though the client picks a different one per phase.
        assert info.value.postgres_error_code in ("08001", "08003")
        assert proxy.refused == 1
        await asyncio.sleep(0)
        assert client_sockets(proxy) == before


# ---------------------------------------------------------------------- reset mid-stream
@pytest.mark.parametrize("with_pushback", [False, True], ids=["no_pushback", "pushback"])
@pytest.mark.parametrize("cut_at", [300_000, 1_000_003])
async def test_reset_after_k_of_n_rows_delivers_exactly_the_k_rows_that_arrived(
    server_kwargs: dict[str, Any], cut_at: int, with_pushback: bool
) -> None:
    """With pushback, reading pauses every 1000 rows, so the reset often lands while the
    client is not reading; the rows already in its kernel must still all be handled."""
    n = 100_000
    async with FaultProxy(*target(server_kwargs), record=True) as proxy:
        kwargs = proxy.connect_kwargs(server_kwargs, ssl_mode="disable")
        async with connected(**kwargs) as conn:
            # The whole result is about 1.6 MB: the cut comes mid-stream.
            proxy.cut_after(cut_at, "downstream")
            seen = 0
            last: Row = ()

            def handle_row(_names: tuple[str, ...], values: Row) -> None:
                nonlocal seen, last
                seen += 1
                last = values

            def pushback() -> Awaitable[None] | None:
                return asyncio.sleep(0.001) if seen % 1000 == 0 else None

            with pytest.raises(PgasyncError) as info:
                async with asyncio.timeout(BOUND):
                    await conn.query(
                        "SELECT g FROM generate_series(1, $1::int) g",
                        [n],
                        handle_row=handle_row,
                        pushback=pushback if with_pushback else None,
                    )
            link = proxy.connections[0]
            assert link.was_reset
            assert link.unacknowledged_at_cut == 0  # the client's kernel had every byte
            k = count_data_rows(proxy.forwarded("downstream"))
            assert 0 < k < n
            assert seen == k
            assert last == (str(k),)
            assert_gone(info.value)
            error = await assert_failed_clearly(conn)
            assert error is info.value


# ------------------------------------------------------------------------- cut COPY IN
async def test_cut_during_a_large_copy_in_commits_nothing(
    pg_server: PostgresServer, server_kwargs: dict[str, Any]
) -> None:
    table = f"hostile_copy_{uuid.uuid4().hex}"
    line = ("x" * 100 + "\n").encode()
    chunk = line * 640  # 64 KiB
    fed = 0

    def chunks() -> Iterator[bytes]:
        nonlocal fed
        for _ in range(1024):  # at most 64 MiB: far past the cut
            fed += len(chunk)
            yield chunk

    async with connected(**server_kwargs) as direct:
        await direct.query_expect_no_data(f"CREATE TABLE {table} (t text)")
        try:
            async with (
                FaultProxy(*target(server_kwargs)) as proxy,
                connected(**proxy.connect_kwargs(server_kwargs)) as conn,
            ):
                proxy.cut_after(3 << 20, "upstream")
                with pytest.raises(PgasyncError) as info:
                    async with asyncio.timeout(BOUND):
                        await conn.copy_in_raw(f"COPY {table} FROM STDIN", feed_data=chunks())
                assert_gone(info.value)
                assert proxy.connections[0].was_reset
                assert 3 << 20 <= fed < 64 << 20
                await assert_failed_clearly(conn)
            assert await fetch_rows(direct, f"SELECT count(*) FROM {table}") == [("0",)]
        finally:
            async with asyncio.timeout(BOUND):
                await direct.query_expect_no_data(f"DROP TABLE {table}")


# ------------------------------------------------------------------------ notifications
@pytest.mark.parametrize("how", ["cut", "reset"])
async def test_cut_while_only_listening_makes_close_finished_raise_promptly(
    server_kwargs: dict[str, Any], how: str
) -> None:
    channel = f"hostile_{uuid.uuid4().hex[:12]}"
    heard: list[str] = []
    got = asyncio.Event()

    def on_notification(_pid: int, payload: str) -> None:
        heard.append(payload)
        got.set()

    async with (
        FaultProxy(*target(server_kwargs)) as proxy,
        connected(**server_kwargs) as direct,
        connected(**proxy.connect_kwargs(server_kwargs)) as conn,
    ):
        await conn.listen_to_notifications(channel, on_notification)
        await direct.query_expect_no_data(f"NOTIFY {channel}, 'before'")
        async with asyncio.timeout(BOUND):
            await got.wait()
        assert heard == ["before"]
        if how == "cut":
            proxy.cut_after(0, "downstream")
        else:
            proxy.reset()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PgasyncError) as info:
            async with asyncio.timeout(2.0):
                await conn.close_finished()
        assert loop.time() - started < 2.0
        assert_gone(info.value)
        await assert_failed_clearly(conn)


# -------------------------------------------------------------- dribble and coalesce
@pytest.mark.parametrize("ssl_mode", ["disable", "prefer"])
@pytest.mark.parametrize("delivery", ["dribble", "coalesce"])
async def test_dribbled_and_coalesced_delivery_give_identical_results(
    server_kwargs: dict[str, Any], delivery: str, ssl_mode: str
) -> None:
    async with connected(**server_kwargs, ssl_mode=ssl_mode) as direct:
        expected = await run_utf8_query(direct)
    assert len(expected[1]) == 300
    async with FaultProxy(*target(server_kwargs), record=True) as proxy:
        # From the first byte: the SSLRequest reply ("N" from this server), the login and
        # the final Terminate/EOF are dribbled or coalesced too.
        if delivery == "dribble":
            proxy.dribble(0.0)
        else:
            proxy.coalesce(0.02)
        conn = await pg.connect(**proxy.connect_kwargs(server_kwargs, ssl_mode=ssl_mode))
        try:
            async with asyncio.timeout(BOUND):
                assert await run_utf8_query(conn) == expected
                assert await fetch_rows(conn, "SELECT $1::text", [UTF8_PARAMETER]) == [
                    (UTF8_PARAMETER,)
                ]
            assert conn.status == pg.Open()
        finally:
            async with asyncio.timeout(BOUND):
                await conn.close()
        assert status_of(conn) == pg.ClosedGracefully()
        downstream = proxy.forwarded("downstream")
        assert downstream.startswith(b"N") == (ssl_mode == "prefer")
        assert proxy.bytes_down > 10_000
        if delivery == "dribble":
            assert (proxy.writes_up, proxy.writes_down) == (proxy.bytes_up, proxy.bytes_down)
        else:
            assert proxy.writes_down < 20  # a handful of merged writes


@pytest.mark.parametrize("delivery", ["dribble", "coalesce"])
async def test_tls_through_a_dribbling_or_coalescing_proxy_gives_identical_results(
    pg_ssl_server: PostgresServer, delivery: str
) -> None:
    kwargs = pg_ssl_server.connect_kwargs(ssl_mode="require")
    async with connected(**kwargs) as direct:
        expected = await run_utf8_query(direct)
    async with FaultProxy(*target(kwargs), record=True) as proxy:
        if delivery == "dribble":
            proxy.dribble(0.0)
        else:
            proxy.coalesce(0.02)
        conn = await pg.connect(**proxy.connect_kwargs(kwargs))
        try:
            async with asyncio.timeout(BOUND):
                assert await run_utf8_query(conn) == expected
                assert await fetch_rows(
                    conn, "SELECT ssl FROM pg_stat_ssl WHERE pid = $1", [conn.backend_pid]
                ) == [("t",)]
        finally:
            async with asyncio.timeout(BOUND):
                await conn.close()
        assert status_of(conn) == pg.ClosedGracefully()
        downstream = proxy.forwarded("downstream")
        assert downstream[:1] == b"S"
        assert ("ä€😀" * 2).encode() not in downstream  # it really was encrypted
        if delivery == "dribble":
            assert proxy.writes_down == proxy.bytes_down
