"""resolve_config: DSN parsing, precedence, server= forms, the password file, validation,
and that no secret shows in repr() or error messages."""

from __future__ import annotations

import ast
import dataclasses
import getpass
import logging
import os
import pathlib
import urllib.parse
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import postgres_async.config as config_module
from postgres_async.config import (
    DEFAULT_MAX_MESSAGE_LENGTH,
    ConnectConfig,
    TcpAddress,
    UnixAddress,
    resolve_config,
)

DEFAULT_DIR = "/var/run/postgresql"


@pytest.fixture(autouse=True)
def _fixed_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "osuser")
    # The default socket directory is the first of the candidates that exists: pin it.
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: p == DEFAULT_DIR or real_isdir(p))


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def resolve(
    dsn: str | None = None, *, env: Mapping[str, str] | None = None, **kwargs: Any
) -> ConnectConfig:
    """resolve_config with an empty environment and no password file by default."""
    kwargs.setdefault("passfile_home", "/nonexistent-home")
    return resolve_config(dsn, environ=env or {}, **kwargs)


def summary(cfg: ConnectConfig) -> dict[str, object]:
    return {
        "address": cfg.address,
        "user": cfg.user,
        "password": cfg.password,
        "database": cfg.database,
        "ssl_mode": cfg.ssl_mode,
        "connect_timeout": cfg.connect_timeout,
        "application_name": cfg.application_name,
        "server_settings": dict(cfg.server_settings),
        "max_message_length": cfg.max_message_length,
        "statement_cache_size": cfg.statement_cache_size,
        "early_reads": cfg.early_reads,
    }


DEFAULTS: dict[str, object] = {
    "address": UnixAddress(f"{DEFAULT_DIR}/.s.PGSQL.5432", 5432),
    "user": "osuser",
    "password": None,
    "database": "osuser",
    "ssl_mode": "prefer",
    "connect_timeout": None,
    "application_name": None,
    "server_settings": {},
    "max_message_length": 2**30,
    "statement_cache_size": 0,
    "early_reads": True,
}


def expect(**changes: object) -> dict[str, object]:
    return {**DEFAULTS, **changes}


# --------------------------------------------------------------------------- purity


def test_config_imports_no_io_module() -> None:
    tree = ast.parse(pathlib.Path(config_module.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in {"asyncio", "socket", "ssl"}


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    cfg = resolve()
    assert summary(cfg) == DEFAULTS
    assert cfg.gss_krb_token is None
    assert (cfg.sslrootcert, cfg.sslcert, cfg.sslkey, cfg.sslcrl) == (None,) * 4
    assert DEFAULT_MAX_MESSAGE_LENGTH == 2**30


def test_default_socket_dir_falls_back_to_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    real_isdir = os.path.isdir
    monkeypatch.setattr(
        os.path, "isdir", lambda p: p not in config_module.DEFAULT_SOCKET_DIRS and real_isdir(p)
    )
    assert resolve().address == UnixAddress("/tmp/.s.PGSQL.5432", 5432)


def test_os_user_lookup_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")

    monkeypatch.setattr(getpass, "getuser", fail)
    with pytest.raises(ValueError, match="user name"):
        resolve()
    assert resolve(user="alice").database == "alice"
    assert resolve(env={"PGUSER": "bob"}).user == "bob"


# --------------------------------------------------------------------------- DSN parsing

DSN_CASES: list[tuple[str, dict[str, object]]] = [
    ("", DEFAULTS),
    ("   \t\n", DEFAULTS),
    ("postgresql://", DEFAULTS),
    ("postgres://", DEFAULTS),
    (
        "postgresql://alice:s3cret@db.example.com:6543/sales?sslmode=require&application_name=app",
        expect(
            address=TcpAddress("db.example.com", 6543),
            user="alice",
            password="s3cret",
            database="sales",
            ssl_mode="require",
            application_name="app",
        ),
    ),
    ("postgres://db.example.com", expect(address=TcpAddress("db.example.com", 5432))),
    ("postgresql:///mydb", expect(database="mydb")),
    ("postgresql://:6000", expect(address=UnixAddress(f"{DEFAULT_DIR}/.s.PGSQL.6000", 6000))),
    ("postgresql://[::1]:5433/db", expect(address=TcpAddress("::1", 5433), database="db")),
    ("postgresql://[::1]/db", expect(address=TcpAddress("::1", 5432), database="db")),
    ("postgresql://[fe80::1%25eth0]", expect(address=TcpAddress("fe80::1%eth0", 5432))),
    ("postgresql://127.0.0.1", expect(address=TcpAddress("127.0.0.1", 5432))),
    (
        "postgresql://%2Fvar%2Frun%2Fpostgresql/db",
        expect(address=UnixAddress(f"{DEFAULT_DIR}/.s.PGSQL.5432", 5432), database="db"),
    ),
    (
        "postgresql://%2Fsrv%2Fpg:6000/db",
        expect(address=UnixAddress("/srv/pg/.s.PGSQL.6000", 6000), database="db"),
    ),
    (
        "postgresql:///db?host=/tmp&port=5433",
        expect(address=UnixAddress("/tmp/.s.PGSQL.5433", 5433), database="db"),
    ),
    (
        "postgresql://user%40corp:p%40ss%3Aw0rd%2F@host/db%20name",
        expect(
            address=TcpAddress("host", 5432),
            user="user@corp",
            password="p@ss:w0rd/",
            database="db name",
        ),
    ),
    (
        "postgresql://user@host",
        expect(address=TcpAddress("host", 5432), user="user", database="user"),
    ),
    (
        "postgresql://user:@host",
        expect(address=TcpAddress("host", 5432), user="user", database="user"),
    ),
    (
        "postgresql://h/d?ssl=true",
        expect(address=TcpAddress("h", 5432), database="d", ssl_mode="require"),
    ),
    (
        "postgresql://h?connect_timeout=10",
        expect(address=TcpAddress("h", 5432), connect_timeout=10.0),
    ),
    ("postgresql://h?connect_timeout=0", expect(address=TcpAddress("h", 5432))),
    (
        "postgresql://h/d?options=-c%20search_path%3Dfoo&application_name=a+b",
        expect(
            address=TcpAddress("h", 5432),
            database="d",
            server_settings={"search_path": "foo"},
            application_name="a+b",  # libpq does not turn '+' into a space
        ),
    ),
    (
        "postgresql://h?max_message_length=4096",
        expect(address=TcpAddress("h", 5432), max_message_length=4096),
    ),
    ("postgresql://h?&&", expect(address=TcpAddress("h", 5432))),  # empty parameters
    (
        "host=localhost port=5433 user=bob password=secret dbname=test",
        expect(
            address=TcpAddress("localhost", 5433), user="bob", password="secret", database="test"
        ),
    ),
    ("host = localhost\tport =5433  ", expect(address=TcpAddress("localhost", 5433))),
    ("host=/tmp", expect(address=UnixAddress("/tmp/.s.PGSQL.5432", 5432))),
    ("host=/tmp/ port=7", expect(address=UnixAddress("/tmp/.s.PGSQL.7", 7))),
    ("hostaddr=127.0.0.1", expect(address=TcpAddress("127.0.0.1", 5432))),
    ("hostaddr=::1 port=1", expect(address=TcpAddress("::1", 1))),
    (
        r"password='it\'s a \\ test' application_name='my app'",
        expect(password="it's a \\ test", application_name="my app"),
    ),
    (r"password=back\slash\ space", expect(password="backslash space")),
    ("application_name=''", DEFAULTS),
    ("application_name='x'dbname=glued", expect(application_name="x", database="glued")),
    ("dbname=a dbname=b", expect(database="b")),  # the last one wins, as in libpq
    # libpq skips spaces after '=', so the next word becomes the value.
    ("user= dbname=x", expect(user="dbname=x", database="dbname=x")),
    (
        # Two layers of escaping: the DSN quoting, then the options' own backslash.
        r"options='-c search_path=foo -cstatement_timeout=5s --lock-timeout=1s -c a.b=x\\ y'",
        expect(
            server_settings={
                "search_path": "foo",
                "statement_timeout": "5s",
                "lock_timeout": "1s",
                "a.b": "x y",
            }
        ),
    ),
    ("sslmode=verify-full sslrootcert=/ca.pem", expect(ssl_mode="verify-full")),
    ("gssencmode=disable target_session_attrs=any", DEFAULTS),
    ("gssencmode=prefer", DEFAULTS),
    ("connect_timeout=2.5", expect(connect_timeout=2.5)),
    ("max_message_length=1024", expect(max_message_length=1024)),
    ("max_message_length=2147483647", expect(max_message_length=2**31 - 1)),
    ("statement_cache_size=0", DEFAULTS),
    ("statement_cache_size=100", expect(statement_cache_size=100)),
    ("statement_cache_size=' 1000000 '", expect(statement_cache_size=1_000_000)),
    ("early_reads=off", expect(early_reads=False)),
    ("early_reads=FALSE", expect(early_reads=False)),
    ("early_reads=0", expect(early_reads=False)),
    ("early_reads=no", expect(early_reads=False)),
    ("early_reads=on", DEFAULTS),
    ("early_reads=' yes '", DEFAULTS),
    ("postgresql:///mydb?early_reads=false", expect(database="mydb", early_reads=False)),
]


@pytest.mark.parametrize(("dsn", "expected"), DSN_CASES)
def test_dsn(dsn: str, expected: dict[str, object]) -> None:
    assert summary(resolve(dsn)) == expected


def test_dsn_ssl_files_are_kept() -> None:
    cfg = resolve("sslrootcert=/r.pem sslcert=/c.pem sslkey=/k.pem sslcrl=/l.pem")
    assert (cfg.sslrootcert, cfg.sslcert, cfg.sslkey, cfg.sslcrl) == (
        "/r.pem",
        "/c.pem",
        "/k.pem",
        "/l.pem",
    )


BAD_DSNS: list[tuple[str, str]] = [
    ("postgresql://h1:1,h2:2/db", "multiple hosts are not supported yet"),
    ("postgresql://h1,h2/db", "multiple hosts are not supported yet"),
    ("host=a,b", "multiple hosts are not supported yet"),
    ("port=1,2", "multiple hosts are not supported yet"),
    ("postgresql://h/db?unknown=1", "invalid connection option 'unknown'"),
    ("foo=bar", "invalid connection option 'foo'"),
    ("postgresql://h/db?ssl=false", "ssl parameter"),
    ("postgresql://h/db?sslmode", 'missing "="'),
    ("postgresql://[::1/db", r"missing '\]'"),
    ("postgresql://[]/db", "empty IPv6"),
    ("postgresql://[::1]x/db", "unexpected character"),
    ("postgresql://h:abc/db", "invalid port 'abc'"),
    ("postgresql://h:0", "invalid port 0"),
    ("postgresql://h:65536", "invalid port"),
    ("postgresql://h/%zz", "percent-encoding in the database name"),
    ("postgresql://h/%ff", "UTF-8 in the database name"),
    ("postgresql://h/db%00x", "%00"),
    ("mydb", 'missing "="'),
    ("host", 'missing "="'),
    ("=value", "empty keyword"),
    ("password='unterminated", "unterminated quoted string"),
    ("password='ends in backslash\\", "unterminated quoted string"),
    ("sslmode=bogus", "invalid ssl_mode 'bogus' \\(from the DSN\\)"),
    ("sslmode=Require", "invalid ssl_mode"),
    ("hostaddr=db.example.com", "invalid hostaddr"),
    ("gssencmode=require", "gssencmode 'require'.*not supported"),
    ("target_session_attrs=read-write", "target_session_attrs 'read-write'.*not supported"),
    ("connect_timeout=-1", "invalid connect_timeout"),
    ("connect_timeout=abc", "invalid connect_timeout"),
    ("connect_timeout=inf", "invalid connect_timeout"),
    ("connect_timeout=nan", "invalid connect_timeout"),
    ("max_message_length=1023", "invalid max_message_length"),
    ("max_message_length=2147483648", "invalid max_message_length"),
    ("max_message_length=lots", "invalid max_message_length"),
    ("early_reads=maybe", "invalid early_reads 'maybe' \\(from the DSN\\)"),
    ("early_reads=2", "invalid early_reads '2'"),
    ("statement_cache_size=-1", "invalid statement_cache_size"),
    ("statement_cache_size=1000001", "invalid statement_cache_size"),
    ("statement_cache_size=many", "invalid statement_cache_size '?many'? \\(from the DSN\\)"),
    ("options='-B 100'", "unsupported word '-B'"),
    ("options='-c'", "must be followed"),
    ("options='-c novalue'", "expected name=value"),
    ("options='-c =x'", "expected name=value"),
    ("options='-c user=x'", "set user with user="),
    ("options='-c client_encoding=LATIN1'", "client_encoding must be UTF8"),
]


@pytest.mark.parametrize(("dsn", "match"), BAD_DSNS)
def test_bad_dsn(dsn: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve(dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        "password=hunter2 foo=bar",
        "password=hunter2 stray",
        "password='hunter2",
        "user=u password=hunter2 sslmode=nope",
        "postgresql://u:hunter2@h/db?nope=1",
        "postgresql://u:hunter2%zz@h/db",
        "postgresql://u:hunter2%00@h/db",
        "postgresql://u:hunter2%ff@h/db",
        "postgresql://u:hunter2@h1,h2/db",
        "postgresql://u:hunter2@h:port/db",
    ],
)
def test_dsn_errors_never_show_the_password(dsn: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        resolve(dsn)
    assert "hunter2" not in str(info.value)
    assert dsn not in str(info.value)
    assert info.value.__context__ is None
    assert info.value.__cause__ is None


# --------------------------------------------------------------------------- precedence

ENV = {
    "PGHOST": "envhost",
    "PGPORT": "6000",
    "PGUSER": "envuser",
    "PGPASSWORD": "envpw",
    "PGDATABASE": "envdb",
    "PGSSLMODE": "disable",
    "PGCONNECT_TIMEOUT": "7",
    "PGAPPNAME": "envapp",
    "PGOPTIONS": "-c search_path=env",
    "POSTGRES_ASYNC_OVERRIDE_MAX_MESSAGE_LENGTH": "4096",
}
FROM_ENV = expect(
    address=TcpAddress("envhost", 6000),
    user="envuser",
    password="envpw",
    database="envdb",
    ssl_mode="disable",
    connect_timeout=7.0,
    application_name="envapp",
    server_settings={"search_path": "env"},
    max_message_length=4096,
)
DSN_ALL = (
    "host=dsnhost port=6001 user=dsnuser password=dsnpw dbname=dsndb sslmode=require "
    "connect_timeout=8 application_name=dsnapp options='-c search_path=dsn' "
    "max_message_length=8192"
)
FROM_DSN = expect(
    address=TcpAddress("dsnhost", 6001),
    user="dsnuser",
    password="dsnpw",
    database="dsndb",
    ssl_mode="require",
    connect_timeout=8.0,
    application_name="dsnapp",
    server_settings={"search_path": "dsn"},
    max_message_length=8192,
)
KWARGS: dict[str, Any] = {
    "host": "kwhost",
    "port": 6002,
    "user": "kwuser",
    "password": "kwpw",
    "database": "kwdb",
    "ssl_mode": "verify-full",
    "connect_timeout": 9,
    "application_name": "kwapp",
    "options": "-c search_path=kw",
    "max_message_length": 16384,
}
FROM_KWARGS = expect(
    address=TcpAddress("kwhost", 6002),
    user="kwuser",
    password="kwpw",
    database="kwdb",
    ssl_mode="verify-full",
    connect_timeout=9.0,
    application_name="kwapp",
    server_settings={"search_path": "kw"},
    max_message_length=16384,
)


def test_environment_beats_defaults() -> None:
    assert summary(resolve(env=ENV)) == FROM_ENV


def test_dsn_beats_environment() -> None:
    assert summary(resolve(DSN_ALL, env=ENV)) == FROM_DSN
    partial = summary(resolve("host=dsnhost user=dsnuser", env=ENV))
    assert partial == {**FROM_ENV, "address": TcpAddress("dsnhost", 6000), "user": "dsnuser"}


def test_keyword_arguments_beat_dsn_and_environment() -> None:
    assert summary(resolve(DSN_ALL, env=ENV, **KWARGS)) == FROM_KWARGS
    partial = summary(resolve(DSN_ALL, env=ENV, port="7000", user="kwuser"))
    assert partial == {**FROM_DSN, "address": TcpAddress("dsnhost", 7000), "user": "kwuser"}


def test_empty_values_count_as_not_given() -> None:
    cfg = resolve("user='' dbname=''", env={"PGUSER": "", "PGDATABASE": "envdb"}, host="")
    assert cfg.user == "osuser"
    assert cfg.database == "envdb"
    assert cfg.address == DEFAULTS["address"]


def test_empty_env_password_reads_no_password() -> None:
    assert resolve(env={"PGPASSWORD": ""}).password is None


def test_max_message_length_env_override() -> None:
    env = {"POSTGRES_ASYNC_OVERRIDE_MAX_MESSAGE_LENGTH": "2048"}
    assert resolve(env=env).max_message_length == 2048
    assert resolve("max_message_length=4096", env=env).max_message_length == 4096
    assert resolve(env=env, max_message_length=8192).max_message_length == 8192
    for bad in ("abc", "100", "-5", str(2**31)):
        with pytest.raises(ValueError, match="invalid max_message_length"):
            resolve(env={"POSTGRES_ASYNC_OVERRIDE_MAX_MESSAGE_LENGTH": bad})
    with pytest.raises(ValueError, match="invalid max_message_length"):
        resolve(max_message_length=1023)
    with pytest.raises(TypeError):
        resolve(max_message_length=True)


def test_server_settings_merge_over_options() -> None:
    cfg = resolve(
        "options='-c a=dsn -c b=dsn'",
        env={"PGOPTIONS": "-c c=env"},
        server_settings={"b": "kw", "d": "kw"},
    )
    # The DSN's options hide PGOPTIONS whole; server_settings override per name.
    assert dict(cfg.server_settings) == {"a": "dsn", "b": "kw", "d": "kw"}


@pytest.mark.parametrize(
    ("dsn", "env", "kwargs", "expected"),
    [
        (None, {}, {"server_settings": {"application_name": "s"}}, "s"),
        (None, {"PGAPPNAME": "env"}, {"server_settings": {"application_name": "s"}}, "s"),
        ("application_name=dsn", {}, {"server_settings": {"application_name": "s"}}, "s"),
        (None, {}, {"application_name": "kw", "server_settings": {"application_name": "s"}}, "kw"),
        ("options='-c application_name=o'", {}, {}, "o"),
        ("options='-c application_name=o'", {"PGAPPNAME": "env"}, {}, "o"),
        ("options='-c application_name=o' application_name=dsn", {}, {}, "dsn"),
        (None, {"PGOPTIONS": "-c application_name=o", "PGAPPNAME": "env"}, {}, "env"),
        ("options='-c application_name=o'", {}, {"application_name": "kw"}, "kw"),
    ],
)
def test_application_name_is_sent_once(
    dsn: str | None, env: dict[str, str], kwargs: dict[str, Any], expected: str
) -> None:
    cfg = resolve(dsn, env=env, **kwargs)
    assert cfg.application_name == expected
    assert "application_name" not in cfg.server_settings
    assert list(cfg.startup_parameters()).count("application_name") == 1


def test_more_keyword_arguments() -> None:
    cfg = resolve(
        "sslrootcert=/dsn.pem sslkey=/dsn.key",
        sslrootcert="/kw.pem",
        sslcert=pathlib.Path("/kw.crt"),
        sslcrl="/kw.crl",
        dbname="alias_db",
        sslmode="require",
        gssencmode="disable",
        target_session_attrs="any",
    )
    assert (cfg.sslrootcert, cfg.sslcert, cfg.sslkey, cfg.sslcrl) == (
        "/kw.pem",
        "/kw.crt",
        "/dsn.key",
        "/kw.crl",
    )
    assert (cfg.database, cfg.ssl_mode) == ("alias_db", "require")
    assert resolve(hostaddr="10.0.0.1").address == TcpAddress("10.0.0.1", 5432)
    assert dict(resolve(options="-c x=1").server_settings) == {"x": "1"}


def test_hostaddr_versus_host_follows_precedence() -> None:
    assert resolve("host=h hostaddr=10.0.0.1").address == TcpAddress("h", 5432)
    assert resolve("host=h", hostaddr="10.0.0.1").address == TcpAddress("10.0.0.1", 5432)
    assert resolve("hostaddr=10.0.0.1", host="h").address == TcpAddress("h", 5432)


def test_unknown_or_conflicting_keyword_arguments_raise_type_error() -> None:
    with pytest.raises(TypeError, match="'sslpassword'"):
        resolve(sslpassword="x")
    with pytest.raises(TypeError, match="'bogus'"):
        resolve(bogus="x")
    with pytest.raises(TypeError, match="database"):
        resolve(database="a", dbname="b")
    with pytest.raises(TypeError, match="ssl_mode"):
        resolve(ssl_mode="disable", sslmode="require")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"port": "abc"}, ValueError, "invalid port 'abc' \\(from keyword argument 'port'\\)"),
        ({"port": 70000}, ValueError, "invalid port 70000"),
        ({"port": True}, TypeError, "bool"),
        ({"port": 1.5}, TypeError, "port"),
        ({"user": 5}, TypeError, "keyword argument 'user' must be a str"),
        ({"password": b"x"}, TypeError, "password must be a str"),
        ({"ssl_mode": "nope"}, ValueError, "keyword argument 'ssl_mode'"),
        ({"connect_timeout": -1}, ValueError, "invalid connect_timeout"),
        ({"connect_timeout": float("inf")}, ValueError, "invalid connect_timeout"),
        ({"connect_timeout": True}, TypeError, "bool"),
        ({"connect_timeout": "3"}, None, None),
        ({"server_settings": {"a": 1}}, TypeError, "server_settings"),
        ({"server_settings": [("a", "b")]}, TypeError, "server_settings"),
        ({"server_settings": {"database": "x"}}, ValueError, "set database with"),
        ({"server_settings": {"": "x"}}, ValueError, "must not be empty"),
        ({"gss_krb_token": "text"}, TypeError, "gss_krb_token"),
    ],
)
def test_keyword_argument_validation(
    kwargs: dict[str, Any], error: type[Exception] | None, match: str | None
) -> None:
    if error is None:
        resolve(**kwargs)
        return
    with pytest.raises(error, match=match):
        resolve(**kwargs)


def test_connect_timeout_zero_means_none() -> None:
    assert resolve(connect_timeout=0).connect_timeout is None
    assert resolve(env={"PGCONNECT_TIMEOUT": "0"}).connect_timeout is None
    assert resolve(connect_timeout=0.5).connect_timeout == 0.5


def test_client_encoding_utf8_is_accepted_and_sent_once() -> None:
    cfg = resolve(server_settings={"client_encoding": "utf-8", "search_path": "x"})
    assert cfg.startup_parameters() == {
        "user": "osuser",
        "database": "osuser",
        "client_encoding": "UTF8",
        "search_path": "x",
    }
    with pytest.raises(ValueError, match="UTF8"):
        resolve(server_settings={"client_encoding": "SQL_ASCII"})


# --------------------------------------------------------------------------- server=


@pytest.mark.parametrize(
    ("server", "env", "expected"),
    [
        ("db.example.com:6000", {}, TcpAddress("db.example.com", 6000)),
        ("db.example.com", {}, TcpAddress("db.example.com", 5432)),
        ("db.example.com", {"PGPORT": "7000"}, TcpAddress("db.example.com", 7000)),
        (("db.example.com", 7001), {}, TcpAddress("db.example.com", 7001)),
        (("/srv/pg", 7002), {}, UnixAddress("/srv/pg/.s.PGSQL.7002", 7002)),
        ("[::1]:5433", {}, TcpAddress("::1", 5433)),
        ("[::1]", {}, TcpAddress("::1", 5432)),
        ("::1", {}, TcpAddress("::1", 5432)),
        ("127.0.0.1:1", {}, TcpAddress("127.0.0.1", 1)),
        ("/tmp/.s.PGSQL.6000", {"PGPORT": "1"}, UnixAddress("/tmp/.s.PGSQL.6000", 6000)),
        ("/.s.PGSQL.6000", {}, UnixAddress("/.s.PGSQL.6000", 6000)),
        ("/tmp", {}, UnixAddress("/tmp/.s.PGSQL.5432", 5432)),
        ("/tmp", {"PGPORT": "7000"}, UnixAddress("/tmp/.s.PGSQL.7000", 7000)),
        (pathlib.Path("/srv/pg/.s.PGSQL.5"), {}, UnixAddress("/srv/pg/.s.PGSQL.5", 5)),
    ],
)
def test_server_forms(server: Any, env: dict[str, str], expected: object) -> None:
    assert resolve(server=server, env=env).address == expected


def test_server_directory_on_disk(tmp_path: pathlib.Path) -> None:
    cfg = resolve(server=str(tmp_path), env={"PGPORT": "6543"})
    assert cfg.address == UnixAddress(str(tmp_path / ".s.PGSQL.6543"), 6543)


def test_server_beats_dsn_host_and_takes_its_port() -> None:
    cfg = resolve("host=dsnhost port=1111", server="srv")
    assert cfg.address == TcpAddress("srv", 1111)
    cfg = resolve("host=dsnhost port=1111", server="srv:2222")
    assert cfg.address == TcpAddress("srv", 2222)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"server": "h", "host": "h2"}, ValueError, "conflicts"),
        ({"server": "h", "port": 5432}, ValueError, "conflicts"),
        ({"server": "h", "hostaddr": "10.0.0.1"}, ValueError, "conflicts"),
        ({"server": "/tmp/.s.PGSQL.abc"}, ValueError, "invalid port 'abc'"),
        ({"server": "h:abc"}, ValueError, "invalid port"),
        ({"server": "h:"}, ValueError, "invalid port"),
        ({"server": ":5432"}, ValueError, "empty host"),
        ({"server": ""}, ValueError, "empty"),
        ({"server": "[::1"}, ValueError, r"missing '\]'"),
        ({"server": "[::1]5432"}, ValueError, "expected ':port'"),
        ({"server": "[]:1"}, ValueError, "empty address"),
        ({"server": ("h",)}, TypeError, "tuple"),
        ({"server": ("h", "x")}, ValueError, "invalid port"),
        ({"server": 5432}, TypeError, "server must be"),
    ],
)
def test_bad_server(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        resolve(**kwargs)


# --------------------------------------------------------------------------- NUL and secrets


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user": "a\x00b"}, "user"),
        ({"database": "a\x00b"}, "database"),
        ({"password": "hunter2\x00"}, "password"),
        ({"application_name": "a\x00"}, "application_name"),
        ({"server_settings": {"a\x00": "b"}}, "server_settings key"),
        ({"server_settings": {"search_path": "a\x00"}}, "server_settings\\['search_path'\\]"),
        ({"host": "a\x00b"}, "host"),
        ({"sslrootcert": "/a\x00"}, "sslrootcert"),
    ],
)
def test_nul_characters_are_rejected(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} must not contain NUL") as info:
        resolve(**kwargs)
    assert "hunter2" not in str(info.value)


def test_nul_from_environment_and_dsn_is_rejected() -> None:
    with pytest.raises(ValueError, match="user must not contain NUL"):
        resolve(env={"PGUSER": "a\x00"})
    with pytest.raises(ValueError, match="password must not contain NUL"):
        resolve("password='x\x00y'")
    with pytest.raises(ValueError, match="database must not contain NUL"):
        resolve(env={"PGUSER": "u"}, dbname="d\x00")


def test_repr_and_str_hide_password_and_token() -> None:
    cfg = resolve(password="hunter2", gss_krb_token=b"t0k3n-bytes", user="alice")
    for text in (repr(cfg), str(cfg), f"{cfg}", f"{cfg!r}"):
        assert "hunter2" not in text
        assert "t0k3n" not in text
        assert "alice" in text
    assert cfg.password == "hunter2"
    assert cfg.gss_krb_token == b"t0k3n-bytes"


def test_config_is_frozen_hashable_and_its_settings_immutable() -> None:
    cfg = resolve(server_settings={"a": "b"})
    with pytest.raises(AttributeError):
        cfg.user = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.server_settings["a"] = "c"  # type: ignore[index]
    assert hash(cfg) == hash(resolve(server_settings={"a": "b"}))
    assert cfg == resolve(server_settings={"a": "b"})


def test_startup_parameters_order() -> None:
    cfg = resolve(
        user="alice",
        database="db",
        application_name="app",
        server_settings={"search_path": "s", "TimeZone": "UTC"},
    )
    assert list(cfg.startup_parameters().items()) == [
        ("user", "alice"),
        ("database", "db"),
        ("client_encoding", "UTF8"),
        ("application_name", "app"),
        ("search_path", "s"),
        ("TimeZone", "UTC"),
    ]
    assert list(resolve(user="u").startup_parameters()) == ["user", "database", "client_encoding"]


def test_connect_config_validates_when_built_directly() -> None:
    address = TcpAddress("h", 1)
    base: dict[str, Any] = {
        "address": address,
        "user": "u",
        "password": None,
        "gss_krb_token": None,
        "database": "d",
    }
    ok = ConnectConfig(**base)
    assert ok.ssl_mode == "prefer"
    assert ok.max_message_length == 2**30
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ssl_mode": "bogus"}, "ssl_mode"),
        ({"max_message_length": 10}, "max_message_length"),
        ({"connect_timeout": 0.0}, "connect_timeout"),
        ({"password": "p\x00"}, "password"),
    ]
    for changes, match in cases:
        with pytest.raises(ValueError, match=match):
            ConnectConfig(**{**base, **changes})
    with pytest.raises(ValueError, match="user"):
        ConnectConfig(**{**base, "user": ""})


# --------------------------------------------------------------------------- password file


def write_passfile(path: pathlib.Path, text: str, mode: int = 0o600) -> pathlib.Path:
    path.write_text(text)
    path.chmod(mode)
    return path


PGPASS = """\
# a comment:line:*:*:commentpw
db.example.com:5432:sales:alice:exact
db.example.com:5432:sales:alice:shadowed
db.example.com:*:*:bob:anyport

other:5432:*:*:other\\:pw\\\\x:ignored
\\:\\:1:5432:*:carol:ipv6
localhost:5432:*:dave:socket
/srv/pg:5432:*:dave:customdir
short:5432:db
*:*:*:erin:wild
"""

PGPASS_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("exact", {"host": "db.example.com", "user": "alice", "database": "sales"}, "exact"),
    ("other db", {"host": "db.example.com", "user": "alice", "database": "x"}, None),
    (
        "other port",
        {"host": "db.example.com", "port": 1, "user": "alice", "database": "sales"},
        None,
    ),
    ("any port", {"host": "db.example.com", "port": 9, "user": "bob"}, "anyport"),
    ("escapes in password", {"host": "other", "user": "x"}, "other:pw\\x"),
    ("escaped colons in host", {"host": "::1", "user": "carol"}, "ipv6"),
    ("default socket dir is localhost", {"user": "dave"}, "socket"),
    ("explicit default socket dir", {"host": DEFAULT_DIR, "user": "dave"}, "socket"),
    ("tcp localhost", {"host": "localhost", "user": "dave"}, "socket"),
    ("other socket dir", {"host": "/srv/pg", "user": "dave"}, "customdir"),
    ("other socket dir, other port", {"host": "/srv/pg", "port": 1, "user": "dave"}, None),
    ("too few fields", {"host": "short", "database": "db", "user": "u"}, None),
    ("wildcards", {"host": "anything", "port": 1, "user": "erin"}, "wild"),
    ("no match", {"host": "nothing", "user": "zed"}, None),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"), PGPASS_CASES, ids=[c[0] for c in PGPASS_CASES]
)
def test_pgpass_matching(
    home: pathlib.Path, name: str, kwargs: dict[str, Any], expected: str | None
) -> None:
    write_passfile(home / ".pgpass", PGPASS)
    assert resolve(passfile_home=home, **kwargs).password == expected


def test_pgpass_crlf_and_trailing_fields(home: pathlib.Path) -> None:
    write_passfile(home / ".pgpass", "h:5432:*:u:pw:extra\r\nh:5432:*:v:pw2\r\n")
    assert resolve(passfile_home=home, host="h", user="u").password == "pw"
    assert resolve(passfile_home=home, host="h", user="v").password == "pw2"


def test_pgpass_ignored_when_group_or_world_accessible(
    home: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_passfile(home / ".pgpass", "*:*:*:*:filepw\n", mode=0o644)
    with caplog.at_level(logging.WARNING, logger="postgres_async"):
        assert resolve(passfile_home=home).password is None
    assert "group or world access" in caplog.text
    assert str(path) in caplog.text
    assert "filepw" not in caplog.text
    path.chmod(0o640)
    assert resolve(passfile_home=home).password is None
    path.chmod(0o400)
    assert resolve(passfile_home=home).password == "filepw"


def test_pgpass_not_a_plain_file(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="postgres_async"):
        assert resolve(passfile=str(tmp_path)).password is None
    assert "not a plain file" in caplog.text


def test_pgpass_fifo_does_not_hang(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert resolve(passfile=str(fifo)).password is None


def test_pgpass_missing_is_silent(home: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="postgres_async"):
        assert resolve(passfile_home=home).password is None
        assert resolve(passfile=str(home / "nope")).password is None
        assert resolve(passfile="/bad\x00path").password is None
    assert caplog.text == ""


def test_pgpass_skips_undecodable_lines(home: pathlib.Path) -> None:
    (home / ".pgpass").write_bytes(b"*:*:*:*:\xff\xfe\n*:*:*:*:good\n")
    (home / ".pgpass").chmod(0o600)
    assert resolve(passfile_home=home).password == "good"


def test_password_sources_beat_the_password_file(
    home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    write_passfile(home / ".pgpass", "*:*:*:*:homefile\n")
    other = write_passfile(tmp_path / "other", "*:*:*:*:otherfile\n")
    assert resolve(passfile_home=home).password == "homefile"
    assert resolve(passfile_home=home, env={"PGPASSFILE": str(other)}).password == "otherfile"
    assert resolve(f"passfile={other}", passfile_home=home).password == "otherfile"
    assert resolve(passfile_home=home, passfile=other).password == "otherfile"
    assert resolve(passfile_home=home, env={"PGPASSWORD": "envpw"}).password == "envpw"
    assert resolve("password=dsnpw", passfile_home=home).password == "dsnpw"
    assert resolve(passfile_home=home, password="kwpw").password == "kwpw"


def test_pgpass_home_from_environment(home: pathlib.Path) -> None:
    write_passfile(home / ".pgpass", "*:*:*:*:viahome\n")
    cfg = resolve_config(environ={"HOME": str(home)})
    assert cfg.password == "viahome"


def test_pgpass_matches_resolved_user_and_database(home: pathlib.Path) -> None:
    write_passfile(home / ".pgpass", "localhost:5432:osuser:osuser:defaults\n")
    assert resolve(passfile_home=home).password == "defaults"


# --------------------------------------------------------------------------- properties


_VALUE = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@settings(max_examples=200, deadline=None)
@given(password=_VALUE.filter(bool), app=_VALUE.filter(bool))
def test_keyword_value_quoting_round_trips(password: str, app: str) -> None:
    cfg = resolve(f"password={_quote(password)}  application_name = {_quote(app)}")
    assert cfg.password == password
    assert cfg.application_name == app


@settings(max_examples=200, deadline=None)
@given(user=_VALUE.filter(bool), password=_VALUE.filter(bool), database=_VALUE.filter(bool))
def test_uri_percent_encoding_round_trips(user: str, password: str, database: str) -> None:
    def enc(text: str) -> str:
        return urllib.parse.quote(text, safe="")

    cfg = resolve(f"postgresql://{enc(user)}:{enc(password)}@h/{enc(database)}")
    assert (cfg.user, cfg.password, cfg.database) == (user, password, database)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(["", "postgresql://", "postgres://u:SECRETPW@", "password=SECRETPW "]),
    tail=st.text(max_size=60),
)
def test_arbitrary_dsn_raises_only_value_error_without_the_password(prefix: str, tail: str) -> None:
    message = ""
    try:
        resolve(prefix + tail)
    except ValueError as exc:
        message = str(exc)
    assert "SECRETPW" not in message


def test_statement_cache_size_keyword() -> None:
    assert resolve(statement_cache_size=5).statement_cache_size == 5
    assert resolve("statement_cache_size=7", statement_cache_size=3).statement_cache_size == 3
    assert resolve("statement_cache_size=7").statement_cache_size == 7
    with pytest.raises(TypeError, match="statement_cache_size' must be an int, not bool"):
        resolve(statement_cache_size=True)
    with pytest.raises(TypeError, match="must be an int, not float"):
        resolve(statement_cache_size=1.0)
    with pytest.raises(ValueError, match=r"invalid statement_cache_size -3 \(from keyword"):
        resolve(statement_cache_size=-3)
    # Nor can a ConnectConfig be built around the checks.
    config = resolve()
    bad_sizes: list[Any] = [-1, 1_000_001, True, "5"]
    for bad in bad_sizes:
        with pytest.raises(ValueError, match="invalid statement_cache_size"):
            dataclasses.replace(config, statement_cache_size=bad)


def test_early_reads_keyword() -> None:
    assert resolve(early_reads=False).early_reads is False
    assert resolve("early_reads=off", early_reads=True).early_reads is True
    assert resolve("early_reads=off").early_reads is False
    with pytest.raises(TypeError, match="early_reads' must be a bool, not int"):
        resolve(early_reads=1)
    with pytest.raises(ValueError, match="invalid early_reads 'sometimes' \\(from keyword"):
        resolve(early_reads="sometimes")
    config = resolve()
    not_a_bool: Any = 1
    with pytest.raises(ValueError, match="invalid early_reads 1: it must be a bool"):
        dataclasses.replace(config, early_reads=not_a_bool)
