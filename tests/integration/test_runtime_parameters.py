"""conn.runtime_parameters and conn.server_version against real servers.

A port of upstream's test_runtime_parameters.ml. Upstream logged in with a hand-made
StartupMessage (``login_and_get_raw``) and compared the whole map with a PostgreSQL
12.10 server's; here the values are checked against what the server itself reports
(``SHOW``), since the servers under test differ in version and settings. The startup
parameters go through ``connect``'s ``server_settings``, ``application_name`` and
``options``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

import postgres_async as pg
from support import fetch_rows


async def show(conn: pg.Connection, name: str) -> str | None:
    [(value,)] = await fetch_rows(conn, f"SHOW {name}")
    return value


@pytest_asyncio.fixture
async def conn(server_kwargs: dict[str, Any]) -> AsyncIterator[pg.Connection]:
    async with pg.with_connection(**server_kwargs, application_name="runtime-params") as c:
        yield c


async def test_get_runtime_parameters(conn: pg.Connection) -> None:
    params = conn.runtime_parameters
    for name in (
        "server_version",
        "server_encoding",
        "client_encoding",
        "DateStyle",
        "IntervalStyle",
        "TimeZone",
        "integer_datetimes",
        "standard_conforming_strings",
        "application_name",
        "is_superuser",
        "session_authorization",
    ):
        assert name in params, f"{name} missing from {params}"
    assert params["client_encoding"] == "UTF8"  # the StartupMessage asks for it
    assert params["integer_datetimes"] == "on"
    assert params["standard_conforming_strings"] == "on"
    assert params["application_name"] == "runtime-params"
    assert params["is_superuser"] == "on"
    assert params["session_authorization"] == "postgres"
    # Every reported value is the server's current one.
    for name in ("server_version", "DateStyle", "IntervalStyle", "TimeZone", "server_encoding"):
        assert params[name] == await show(conn, name), name
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())


async def test_server_version_matches_server_version_num(conn: pg.Connection) -> None:
    number = await show(conn, "server_version_num")
    assert number is not None
    assert conn.server_version == int(number)
    assert isinstance(conn.server_version, int)
    major = int(conn.runtime_parameters["server_version"].split(".")[0])
    assert conn.server_version // 10000 == major


async def test_server_settings_are_reflected(server_kwargs: dict[str, Any]) -> None:
    async with pg.with_connection(
        **server_kwargs,
        server_settings={"TimeZone": "UTC", "application_name": "simple_app"},
    ) as conn:
        params = conn.runtime_parameters
        assert params["TimeZone"] == "UTC"
        assert params["application_name"] == "simple_app"
        assert await show(conn, "TimeZone") == "UTC"
        assert await show(conn, "application_name") == "simple_app"
        [(offset,)] = await fetch_rows(conn, "SELECT extract(timezone FROM now())::int")
        assert offset == "0"


async def test_options_escaping(server_kwargs: dict[str, Any]) -> None:
    """upstream "set options": libpq-style backslash escapes in ``options``."""
    expected = "My \\very complicated   a\\p\\p name'"
    options = r"--application_name=My\ \\very\ complicated\ \ \ a\\p\\p\ name'"
    async with pg.with_connection(**server_kwargs, options=options) as conn:
        assert conn.runtime_parameters["application_name"] == expected
        assert await show(conn, "application_name") == expected


async def test_set_updates_runtime_parameters_live(conn: pg.Connection) -> None:
    await conn.query_expect_no_data("SET application_name = 'x'")
    # ParameterStatus arrives before ReadyForQuery: no waiting needed.
    assert conn.runtime_parameters["application_name"] == "x"
    await conn.query_expect_no_data("SET TimeZone = 'America/New_York'")
    assert conn.runtime_parameters["TimeZone"] == "America/New_York"
    await conn.simple_query("SET DateStyle = 'German'; SET application_name = 'y z'")
    assert conn.runtime_parameters["DateStyle"] == "German, DMY"
    assert conn.runtime_parameters["application_name"] == "y z"
    # A SET undone by ROLLBACK is reported back to the old value.
    await conn.simple_query("BEGIN; SET application_name = 'rolled back'")
    assert conn.runtime_parameters["application_name"] == "rolled back"
    await conn.query_expect_no_data("ROLLBACK")
    assert conn.runtime_parameters["application_name"] == "y z"
    assert await show(conn, "application_name") == "y z"
    await conn.query_expect_no_data("RESET ALL")
    assert conn.runtime_parameters["application_name"] == "runtime-params"
    assert conn.runtime_parameters["DateStyle"] == await show(conn, "DateStyle")
