"""Connection fixtures shared by the integration tests.

Each is a connection of its own to the session's server (``server_kwargs``), closed at
the end by ``support.close_quietly``: a connection the test left failed on purpose may
fail to close, but a failure to close an open one fails the test. A module that wants
``pg.with_connection``'s ending instead assigns ``support.with_connection_fixture()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

import postgres_async as pg
from support import close_quietly


@contextlib.asynccontextmanager
async def _connection(server_kwargs: dict[str, Any]) -> AsyncIterator[pg.Connection]:
    connection = await pg.connect(**server_kwargs)
    try:
        yield connection
    finally:
        await close_quietly(connection)


@pytest_asyncio.fixture
async def conn(server_kwargs: dict[str, Any]) -> AsyncIterator[pg.Connection]:
    """The connection under test."""
    async with _connection(server_kwargs) as connection:
        yield connection


@pytest_asyncio.fixture
async def other_conn(server_kwargs: dict[str, Any]) -> AsyncIterator[pg.Connection]:
    """A second connection, for what ``conn`` cannot do itself (notify it, kill it)."""
    async with _connection(server_kwargs) as connection:
        yield connection


@pytest_asyncio.fixture
async def observer(server_kwargs: dict[str, Any]) -> AsyncIterator[pg.Connection]:
    """A second connection, to look at ``conn`` from the server's side."""
    async with _connection(server_kwargs) as connection:
        yield connection
