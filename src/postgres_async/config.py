"""Connection settings: turn what the user gave into one validated `ConnectConfig`.

This module owns libpq's rules for where settings come from and what they mean:
keyword arguments beat the DSN (a `postgresql://` URI or a `key=value` string), the DSN
beats the PG* environment variables, those beat libpq's defaults; the password comes
from the password file (`~/.pgpass`) when nothing else gave one. Every value is
checked here (including NUL characters, which the wire protocol cannot carry), so a
bad setting fails before any network activity. It also owns the StartupMessage
parameters.

Pure: it reads the environment mapping and the password file, never the network.

Only one host is supported: a comma-separated host or port list raises ValueError
("multiple hosts are not supported yet") rather than silently using the first one.
`hostaddr` is treated like `host` (the one given at the higher precedence level wins;
at the same level `host` does), since there is a single address to connect to.
"""

from __future__ import annotations

import getpass
import ipaddress
import logging
import math
import os
import re
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

__all__ = [
    "DEFAULT_MAX_MESSAGE_LENGTH",
    "DEFAULT_PORT",
    "MAX_MESSAGE_LENGTH_ENV",
    "SSL_MODES",
    "ConnectConfig",
    "SslMode",
    "TcpAddress",
    "UnixAddress",
    "resolve_config",
]

_logger = logging.getLogger("postgres_async")

SslMode: TypeAlias = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
SSL_MODES: Final[tuple[SslMode, ...]] = (
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
)

DEFAULT_PORT: Final = 5432
DEFAULT_SSL_MODE: Final[SslMode] = "prefer"
DEFAULT_MAX_MESSAGE_LENGTH: Final = 2**30
MIN_MAX_MESSAGE_LENGTH: Final = 1024
# The protocol's length field is a signed 32-bit integer.
MAX_MAX_MESSAGE_LENGTH: Final = 2**31 - 1
MAX_MESSAGE_LENGTH_ENV: Final = "POSTGRES_ASYNC_OVERRIDE_MAX_MESSAGE_LENGTH"
# A bound against typos (each cached statement holds server memory), not a tuning limit.
MAX_STATEMENT_CACHE_SIZE: Final = 1_000_000
# Debian's libpq looks in /var/run/postgresql; upstream builds use /tmp.
DEFAULT_SOCKET_DIRS: Final = ("/var/run/postgresql", "/tmp")
SOCKET_FILE_PREFIX: Final = ".s.PGSQL."

# The libpq keywords accepted in a DSN and as extra keyword arguments.
_DSN_KEYS: Final = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "user",
        "password",
        "dbname",
        "sslmode",
        "connect_timeout",
        "application_name",
        "options",
        "passfile",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "gssencmode",
        "target_session_attrs",
        "max_message_length",
        "statement_cache_size",
        "early_reads",
    }
)
# Keywords that `**more` may carry: the ones without a named parameter, plus the libpq
# spellings of `database` and `ssl_mode`.
_EXTRA_KWARGS: Final = frozenset(
    {
        "hostaddr",
        "dbname",
        "sslmode",
        "options",
        "passfile",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "gssencmode",
        "target_session_attrs",
    }
)
_ENV_VARS: Final = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "passfile": "PGPASSFILE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "gssencmode": "PGGSSENCMODE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "max_message_length": MAX_MESSAGE_LENGTH_ENV,
}
# libpq's isspace() in the C locale, not str.isspace() (which knows Unicode spaces).
_SPACE: Final = frozenset(" \t\n\r\f\v")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class TcpAddress:
    """A TCP server: a host name or IP address (IPv6 without brackets) and a port."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A unix-domain socket: the full socket file path and the port it encodes."""

    path: str
    port: int


@dataclass(frozen=True, slots=True)
class ConnectConfig:
    """Everything needed to open and start a connection, validated.

    The password and the GSS token never appear in `repr()`/`str()`.
    """

    address: TcpAddress | UnixAddress
    user: str
    password: str | None = field(repr=False)
    gss_krb_token: bytes | None = field(repr=False)
    database: str
    ssl_mode: SslMode = DEFAULT_SSL_MODE
    connect_timeout: float | None = None
    application_name: str | None = None
    # Excluded from the hash: a mapping is not hashable.
    server_settings: Mapping[str, str] = field(default_factory=dict, hash=False)
    max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH
    # Statements kept prepared on the server per connection (0: the unnamed statement
    # for every query, as API.md specifies by default).
    statement_cache_size: int = 0
    # Whether a reply already in the socket is taken right after its request (see
    # the README's "Early reads").
    early_reads: bool = True
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslcrl: str | None = None

    def __post_init__(self) -> None:
        # Checked here, not only in resolve_config, so that no ConnectConfig (however
        # built) can carry a value the StartupMessage cannot represent.
        if self.ssl_mode not in SSL_MODES:
            raise ValueError(f"invalid ssl_mode {self.ssl_mode!r}; expected one of {SSL_MODES}")
        if not (
            MIN_MAX_MESSAGE_LENGTH <= self.max_message_length <= MAX_MAX_MESSAGE_LENGTH
        ) or isinstance(self.max_message_length, bool):
            raise ValueError(
                f"invalid max_message_length {self.max_message_length!r}: it must lie in "
                f"[{MIN_MAX_MESSAGE_LENGTH}, {MAX_MAX_MESSAGE_LENGTH}]"
            )
        if (
            not isinstance(self.statement_cache_size, int)
            or isinstance(self.statement_cache_size, bool)
            or not 0 <= self.statement_cache_size <= MAX_STATEMENT_CACHE_SIZE
        ):
            raise ValueError(
                f"invalid statement_cache_size {self.statement_cache_size!r}: it must be an "
                f"int in [0, {MAX_STATEMENT_CACHE_SIZE}]"
            )
        if not isinstance(self.early_reads, bool):
            raise ValueError(f"invalid early_reads {self.early_reads!r}: it must be a bool")
        if self.connect_timeout is not None and not (
            math.isfinite(self.connect_timeout) and self.connect_timeout > 0
        ):
            raise ValueError(
                f"invalid connect_timeout {self.connect_timeout!r}: "
                "it must be a positive number of seconds or None"
            )
        if not self.user:
            raise ValueError("user must not be empty")
        if not self.database:
            raise ValueError("database must not be empty")
        _check_no_nul("user", self.user)
        _check_no_nul("database", self.database)
        _check_no_nul("password", self.password)
        _check_no_nul("application_name", self.application_name)
        for name in ("sslrootcert", "sslcert", "sslkey", "sslcrl"):
            _check_no_nul(name, getattr(self, name))
        if isinstance(self.address, TcpAddress):
            _check_no_nul("host", self.address.host)
        else:
            _check_no_nul("host", self.address.path)
        settings = dict(self.server_settings)
        for key, value in settings.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("server_settings keys and values must be str")
            if not key:
                raise ValueError("server_settings keys must not be empty")
            _check_no_nul("server_settings key", key)
            _check_no_nul(f"server_settings[{key!r}]", value)
        object.__setattr__(self, "server_settings", MappingProxyType(settings))

    def startup_parameters(self) -> dict[str, str]:
        """The StartupMessage parameters, in the order they are sent."""
        params = {"user": self.user, "database": self.database, "client_encoding": "UTF8"}
        if self.application_name is not None:
            params["application_name"] = self.application_name
        params.update(self.server_settings)
        return params


def _check_no_nul(what: str, value: str | None) -> None:
    # The wire protocol terminates strings with NUL; one inside a value would cut it
    # short or smuggle another parameter in. The value itself is never echoed.
    if value is not None and "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")


# --------------------------------------------------------------------------- DSN parsing


def _parse_dsn(dsn: str) -> dict[str, str]:
    if dsn.startswith(("postgresql://", "postgres://")):
        return _parse_uri(dsn)
    return _parse_keyword_value(dsn)


def _check_dsn_key(key: str) -> None:
    if key not in _DSN_KEYS:
        raise ValueError(f"invalid connection option {key[:64]!r}")


def _parse_keyword_value(dsn: str) -> dict[str, str]:
    """Parse a libpq `key=value ...` string (values optionally in single quotes)."""
    out: dict[str, str] = {}
    i, n = 0, len(dsn)
    while True:
        while i < n and dsn[i] in _SPACE:
            i += 1
        if i >= n:
            return out
        start = i
        while i < n and dsn[i] not in _SPACE and dsn[i] != "=":
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i] in _SPACE:
            i += 1
        if i >= n or dsn[i] != "=":
            # The stray word is not echoed: it may be part of a password.
            raise ValueError(
                f'missing "=" after a keyword in the connection string (offset {start})'
            )
        if not key:
            raise ValueError(f"empty keyword in the connection string (offset {start})")
        _check_dsn_key(key)
        i += 1
        while i < n and dsn[i] in _SPACE:
            i += 1
        chars: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string in the connection string")
                c = dsn[i]
                if c == "\\":
                    i += 1
                    if i >= n:
                        raise ValueError("unterminated quoted string in the connection string")
                    chars.append(dsn[i])
                elif c == "'":
                    i += 1
                    break
                else:
                    chars.append(c)
                i += 1
        else:
            while i < n and dsn[i] not in _SPACE:
                if dsn[i] == "\\":
                    # libpq drops a trailing lone backslash.
                    i += 1
                    if i < n:
                        chars.append(dsn[i])
                else:
                    chars.append(dsn[i])
                i += 1
        out[key] = "".join(chars)


def _percent_decode(text: str, what: str) -> str:
    # urllib's unquote passes malformed escapes through; libpq rejects them, and so do
    # we. `what` names the URI part; the text is never echoed (it may be a password).
    if _BAD_PERCENT.search(text):
        raise ValueError(f"invalid percent-encoding in the {what} of the connection URI")
    raw = urllib.parse.unquote_to_bytes(text)
    if b"\x00" in raw:
        raise ValueError(f"forbidden %00 in the {what} of the connection URI")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Raised outside the handler: the UnicodeDecodeError holds the bytes (maybe the
    # password) and must not ride along as __context__.
    raise ValueError(f"invalid UTF-8 in the {what} of the connection URI")


def _parse_uri(dsn: str) -> dict[str, str]:
    """Parse `postgresql://[user[:password]@][host][:port][/dbname][?key=value&...]`."""
    out: dict[str, str] = {}
    rest = dsn[dsn.index("://") + 3 :]
    n = len(rest)

    # Like libpq, credentials end at the first '@' that comes before any '/'.
    i = 0
    while i < n and rest[i] not in "@/":
        i += 1
    if i < n and rest[i] == "@":
        user, sep, password = rest[:i].partition(":")
        if user:
            out["user"] = _percent_decode(user, "user name")
        if sep and password:
            out["password"] = _percent_decode(password, "password")
        rest = rest[i + 1 :]
        n = len(rest)

    hosts: list[str] = []
    ports: list[str] = []
    pos = 0
    while True:
        if rest.startswith("[", pos):
            end = rest.find("]", pos)
            if end < 0:
                raise ValueError("missing ']' after an IPv6 address in the connection URI")
            host = _percent_decode(rest[pos + 1 : end], "host")
            if not host:
                raise ValueError("empty IPv6 address in the connection URI")
            pos = end + 1
            if pos < n and rest[pos] not in ":/?,":
                raise ValueError("unexpected character after an IPv6 address in the connection URI")
        else:
            end = pos
            while end < n and rest[end] not in ":/?,":
                end += 1
            host = _percent_decode(rest[pos:end], "host")
            pos = end
        port = ""
        if pos < n and rest[pos] == ":":
            end = pos + 1
            while end < n and rest[end] not in "/?,":
                end += 1
            port = _percent_decode(rest[pos + 1 : end], "port")
            pos = end
        hosts.append(host)
        ports.append(port)
        if pos < n and rest[pos] == ",":
            pos += 1
            continue
        break
    if len(hosts) > 1:
        raise ValueError("multiple hosts are not supported yet")
    if hosts[0]:
        out["host"] = hosts[0]
    if ports[0]:
        out["port"] = ports[0]

    rest = rest[pos:]
    path, _, query = rest.partition("?")
    if path:
        # Only '/', '?' or nothing can follow the host part.
        database = _percent_decode(path[1:], "database name")
        if database:
            out["dbname"] = database
    for item in query.split("&") if query else ():
        if not item:
            continue
        raw_key, sep, raw_value = item.partition("=")
        if not sep:
            raise ValueError('missing "=" in a query parameter of the connection URI')
        key = _percent_decode(raw_key, "query parameter name")
        value = _percent_decode(raw_value, f"{key[:64]!r} parameter")
        if key == "ssl":
            # libpq's JDBC compatibility: ssl=true means sslmode=require.
            if value != "true":
                raise ValueError(f"invalid value for the ssl parameter: {value[:64]!r}")
            key, value = "sslmode", "require"
        _check_dsn_key(key)
        out[key] = value
    return out


def _parse_options(options: str, source: str) -> dict[str, str]:
    """Turn libpq `options` (`-c name=value`, `-cname=value`, `--name=value`) into
    server settings. A backslash escapes the next character (e.g. a space)."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    i = 0
    while i < len(options):
        c = options[i]
        if c in _SPACE:
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            in_word = True
            if c == "\\" and i + 1 < len(options):
                i += 1
                c = options[i]
            current.append(c)
        i += 1
    if in_word:
        words.append("".join(current))

    settings: dict[str, str] = {}
    it = iter(words)
    for word in it:
        if word == "-c":
            setting = next(it, None)
            if setting is None:
                raise ValueError(f"options (from {source}): '-c' must be followed by name=value")
        elif word.startswith("--"):
            setting = word[2:]
            name, sep, value = setting.partition("=")
            # The server's long-option form spells underscores as dashes.
            setting = name.replace("-", "_") + sep + value
        elif word.startswith("-c"):
            setting = word[2:]
        else:
            raise ValueError(
                f"options (from {source}): unsupported word {word[:64]!r}; "
                "only '-c name=value' settings are supported"
            )
        name, sep, value = setting.partition("=")
        if not sep or not name:
            raise ValueError(f"options (from {source}): expected name=value, got {setting[:64]!r}")
        settings[name] = value
    return settings


# --------------------------------------------------------------------------- precedence

_KW, _DSN, _ENV = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Value:
    value: object
    level: int
    source: str


class _Sources:
    """The three levels of settings; `get` returns the highest-precedence one.

    Empty strings count as not given at every level (libpq ignores empty keyword
    arguments and treats an empty host, port, user, ... as unset).
    """

    def __init__(
        self,
        kw: dict[str, object],
        kw_labels: dict[str, str],
        dsn: dict[str, str],
        env: Mapping[str, str],
    ):
        self._levels: list[tuple[int, dict[str, object], dict[str, str]]] = [
            (_KW, kw, {k: kw_labels.get(k, f"keyword argument {k!r}") for k in kw}),
            (_DSN, dict(dsn), {k: "the DSN" for k in dsn}),
        ]
        env_values: dict[str, object] = {}
        env_names: dict[str, str] = {}
        for key, var in _ENV_VARS.items():
            if var in env:
                env_values[key] = env[var]
                env_names[key] = f"environment variable {var}"
        self._levels.append((_ENV, env_values, env_names))

    def get(self, key: str) -> _Value | None:
        for level, values, names in self._levels:
            value = values.get(key)
            if value is not None and value != "":
                return _Value(value, level, names[key])
        return None

    def get_str(self, key: str) -> tuple[str, str] | None:
        found = self.get(key)
        if found is None:
            return None
        return _as_str(found.value, found.source), found.source


def _as_str(value: object, source: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str):
            return path
    raise TypeError(f"{source} must be a str, not {type(value).__name__}")


def _parse_port(value: object, source: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{source} must be an int or str, not bool")
    if isinstance(value, int):
        port = value
    elif isinstance(value, str):
        if "," in value:
            raise ValueError("multiple hosts are not supported yet")
        if not (value.isascii() and value.isdigit()) or len(value) > 5:
            raise ValueError(f"invalid port {value[:64]!r} (from {source})")
        port = int(value)
    else:
        raise TypeError(f"{source} must be an int or str, not {type(value).__name__}")
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid port {port} (from {source}): it must lie in [1, 65535]")
    return port


def _parse_timeout(value: object, source: str) -> float | None:
    if isinstance(value, bool):
        raise TypeError(f"{source} must be a number of seconds, not bool")
    if isinstance(value, int | float):
        timeout = float(value)
    elif isinstance(value, str):
        try:
            timeout = float(value.strip())
        except ValueError:
            raise ValueError(f"invalid connect_timeout {value[:64]!r} (from {source})") from None
    else:
        raise TypeError(f"{source} must be a number of seconds, not {type(value).__name__}")
    if timeout == 0:
        return None  # libpq: zero means wait forever
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(
            f"invalid connect_timeout {value!r} (from {source}): "
            "it must be a positive number of seconds, or 0 for none"
        )
    return timeout


def _parse_bounded_int(value: object, source: str, name: str, low: int, high: int) -> int:
    """An int setting given as an int or a decimal string, within [low, high]."""
    if isinstance(value, bool):
        raise TypeError(f"{source} must be an int, not bool")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 12:
            raise ValueError(f"invalid {name} {value[:64]!r} (from {source})")
        number = int(text)
    else:
        raise TypeError(f"{source} must be an int, not {type(value).__name__}")
    if not low <= number <= high:
        raise ValueError(f"invalid {name} {number} (from {source}): it must lie in [{low}, {high}]")
    return number


_BOOL_WORDS: Final = {
    "on": True,
    "true": True,
    "yes": True,
    "1": True,
    "off": False,
    "false": False,
    "no": False,
    "0": False,
}


def _parse_bool(value: object, source: str, name: str) -> bool:
    """A boolean setting given as a bool or as one of PostgreSQL's boolean words."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = _BOOL_WORDS.get(value.strip().lower())
        if word is None:
            raise ValueError(
                f"invalid {name} {value[:64]!r} (from {source}): expected on/off, "
                "true/false, yes/no or 1/0"
            )
        return word
    raise TypeError(f"{source} must be a bool, not {type(value).__name__}")


def _parse_server(server: object) -> tuple[str, int | None]:
    """`server=` as (host or socket directory, port or None)."""
    if isinstance(server, tuple):
        if len(server) != 2 or not isinstance(server[0], str):
            raise TypeError("server tuple must be (host: str, port: int)")
        return server[0], _parse_port(server[1], "server port")
    if isinstance(server, os.PathLike):
        server = _as_str(server, "server")
    if not isinstance(server, str):
        raise TypeError(
            "server must be 'host:port', 'host', (host, port) or a unix socket path, "
            f"not {type(server).__name__}"
        )
    if not server:
        raise ValueError("server must not be empty")
    if server.startswith("/"):
        directory, base = os.path.split(server)
        if base.startswith(SOCKET_FILE_PREFIX):
            suffix = base[len(SOCKET_FILE_PREFIX) :]
            return directory or "/", _parse_port(suffix, f"server socket file {server!r}")
        return server, None
    if server.startswith("["):
        end = server.find("]")
        if end < 0:
            raise ValueError(f"invalid server {server!r}: missing ']'")
        host, rest = server[1:end], server[end + 1 :]
        if not host:
            raise ValueError(f"invalid server {server!r}: empty address")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"invalid server {server!r}: expected ':port' after ']'")
        return host, _parse_port(rest[1:], "server port")
    if server.count(":") > 1:
        return server, None  # a bare IPv6 address
    host, sep, port = server.partition(":")
    if not host:
        raise ValueError(f"invalid server {server!r}: empty host")
    return host, _parse_port(port, "server port") if sep else None


def _default_socket_dir() -> str:
    for directory in DEFAULT_SOCKET_DIRS:
        if os.path.isdir(directory):
            return directory
    return DEFAULT_SOCKET_DIRS[-1]


def _os_user_name() -> str | None:
    try:
        return getpass.getuser() or None
    except (KeyError, OSError, ImportError):
        # No passwd entry for our uid (common in containers) and no LOGNAME/USER.
        return None


# --------------------------------------------------------------------------- password file


def _pgpass_fields(line: str) -> list[str]:
    """Split a password file line on unescaped ':' and undo `\\` escapes."""
    fields: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            i += 1
            current.append(line[i])
        elif c == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    fields.append("".join(current))
    return fields


def _pgpass_field_matches(line: str, start: int, value: str) -> int | None:
    """Match one field of `line` from `start`; return where the next field starts.

    A field matches when it is exactly `*` or equals `value` after unescaping.
    """
    if line.startswith("*:", start):
        return start + 2
    i = start
    j = 0
    while i < len(line) and line[i] != ":":
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            i += 1
            c = line[i]
        if j >= len(value) or value[j] != c:
            return None
        i += 1
        j += 1
    if i >= len(line) or j != len(value):
        return None
    return i + 1


def _pgpass_lookup(path: str, host: str, port: int, database: str, user: str) -> str | None:
    """The password from the first matching line of a libpq password file, if any.

    Missing or unreadable files are ignored silently; a file that is not a regular
    file, or that the group or others can access, is ignored with a warning (libpq).
    """
    try:
        # O_NONBLOCK: a FIFO in place of the file must not hang us in open().
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            _logger.warning("password file %r is not a plain file; ignoring it", path)
            return None
        if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            _logger.warning(
                "password file %r has group or world access; permissions should be "
                "u=rw (0600) or less; ignoring it",
                path,
            )
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    wanted = (host, str(port), database, user)
    for raw_line in data.split(b"\n"):
        try:
            line = raw_line.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            continue  # cannot match a str setting; never logged (it holds a password)
        if not line or line.startswith("#"):
            continue
        pos: int | None = 0
        for value in wanted:
            assert pos is not None
            pos = _pgpass_field_matches(line, pos, value)
            if pos is None:
                break
        if pos is None:
            continue
        # The password runs to the next unescaped ':' (libpq ignores anything after it).
        password = _pgpass_fields(line[pos:])[0]
        return password or None
    return None


# --------------------------------------------------------------------------- resolution


def _resolve_address(sources: _Sources) -> tuple[TcpAddress | UnixAddress, str]:
    """The address, and the host name the password file is matched against."""
    host_value = sources.get("host")
    hostaddr_value = sources.get("hostaddr")
    if hostaddr_value is not None:
        addr = _as_str(hostaddr_value.value, hostaddr_value.source)
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ValueError(
                f"invalid hostaddr {addr[:64]!r} (from {hostaddr_value.source}): "
                "it must be a numeric IP address"
            ) from None
        if host_value is None or hostaddr_value.level < host_value.level:
            host_value = hostaddr_value
    if host_value is None:
        host = _default_socket_dir()
    else:
        host = _as_str(host_value.value, host_value.source)
        if "," in host:
            raise ValueError("multiple hosts are not supported yet")
    port_value = sources.get("port")
    port = DEFAULT_PORT if port_value is None else _parse_port(port_value.value, port_value.source)
    if not host.startswith("/"):
        return TcpAddress(host, port), host
    path = os.path.join(host, f"{SOCKET_FILE_PREFIX}{port}")
    # libpq matches "localhost" in the password file for its default socket
    # directory only; any other directory is matched by its path.
    default_dir = host_value is None or host.rstrip("/") in DEFAULT_SOCKET_DIRS
    return UnixAddress(path, port), "localhost" if default_dir else host


def _resolve_password(
    sources: _Sources,
    env: Mapping[str, str],
    passfile_home: str | os.PathLike[str] | None,
    host: str,
    port: int,
    database: str,
    user: str,
) -> str | None:
    found = sources.get("password")
    if found is not None:
        if not isinstance(found.value, str):
            raise TypeError("password must be a str")
        return found.value
    passfile_found = sources.get_str("passfile")
    if passfile_found is not None:
        passfile = passfile_found[0]
    else:
        if passfile_home is not None:
            home = os.fspath(passfile_home)
        else:
            home = env.get("HOME") or os.path.expanduser("~")
        passfile = os.path.join(home, ".pgpass")
    return _pgpass_lookup(passfile, host, port, database, user)


def _resolve_settings(
    sources: _Sources, server_settings: Mapping[str, str] | None
) -> tuple[dict[str, str], str | None]:
    """The run-time parameters and the application name.

    `options` (-c name=value) comes from the highest level that has it; the
    server_settings keyword argument goes on top, name by name.
    """
    settings: dict[str, str] = {}
    settings_level: dict[str, int] = {}
    options_found = sources.get("options")
    if options_found is not None:
        options_str = _as_str(options_found.value, options_found.source)
        for name, value in _parse_options(options_str, options_found.source).items():
            settings[name] = value
            settings_level[name] = options_found.level
    if server_settings is not None:
        if not isinstance(server_settings, Mapping):
            raise TypeError("server_settings must be a mapping of str to str")
        for name, value in server_settings.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("server_settings keys and values must be str")
            settings[name] = value
            settings_level[name] = _KW
    for reserved in ("user", "database"):
        if reserved in settings:
            raise ValueError(f"set {reserved} with {reserved}=, not in server_settings/options")
    if "client_encoding" in settings:
        encoding = settings.pop("client_encoding")
        if encoding.replace("-", "").replace("_", "").lower() not in ("utf8", "unicode"):
            raise ValueError("client_encoding must be UTF8: every text value is decoded as UTF-8")

    app_found = sources.get("application_name")
    app_name = None if app_found is None else _as_str(app_found.value, app_found.source)
    if "application_name" in settings:
        # It is sent once; the value from the higher precedence level wins, and at the
        # same level the application_name setting beats the one inside settings.
        from_settings = settings.pop("application_name")
        if app_found is None or settings_level["application_name"] < app_found.level:
            app_name = from_settings
    return settings, app_name


def resolve_config(
    dsn: str | None = None,
    *,
    server: str | os.PathLike[str] | tuple[str, int] | None = None,
    host: str | None = None,
    port: int | str | None = None,
    user: str | None = None,
    password: str | None = None,
    gss_krb_token: bytes | None = None,
    database: str | None = None,
    ssl_mode: str | None = None,
    connect_timeout: float | None = None,
    application_name: str | None = None,
    server_settings: Mapping[str, str] | None = None,
    max_message_length: int | None = None,
    statement_cache_size: int | None = None,
    early_reads: bool | None = None,
    environ: Mapping[str, str] | None = None,
    passfile_home: str | os.PathLike[str] | None = None,
    **more: str | os.PathLike[str],
) -> ConnectConfig:
    """Resolve connection settings with libpq's precedence and defaults.

    `environ` replaces `os.environ` and `passfile_home` the home directory (where
    `.pgpass` is looked for), both for tests. `**more` takes the other libpq keywords
    (`hostaddr`, `options`, `passfile`, `sslrootcert`, `sslcert`, `sslkey`, `sslcrl`,
    `gssencmode`, `target_session_attrs`; `dbname` and `sslmode` as aliases of
    `database` and `ssl_mode`).

    Raises ValueError for invalid settings and TypeError for unknown keyword
    arguments or values of the wrong type. No message contains the password.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ

    kw: dict[str, object] = {
        "host": host,
        "port": port,
        "user": user,
        "password": password,
        "dbname": database,
        "sslmode": ssl_mode,
        "connect_timeout": connect_timeout,
        "application_name": application_name,
        "max_message_length": max_message_length,
        "statement_cache_size": statement_cache_size,
        "early_reads": early_reads,
    }
    # Error messages name the argument as the caller spelled it.
    kw_labels = {
        "dbname": "keyword argument 'database'",
        "sslmode": "keyword argument 'ssl_mode'",
    }
    for key, value in more.items():
        if key not in _EXTRA_KWARGS:
            raise TypeError(f"resolve_config() got an unexpected keyword argument {key!r}")
        alias = {"dbname": "database", "sslmode": "ssl_mode"}.get(key)
        if alias is not None and kw[key] is not None:
            raise TypeError(f"got both {alias}= and its libpq spelling {key}=")
        kw[key] = value
        kw_labels[key] = f"keyword argument {key!r}"
    if password is not None and not isinstance(password, str):
        raise TypeError(f"password must be a str, not {type(password).__name__}")

    if server is not None:
        if host is not None or port is not None or "hostaddr" in more:
            raise ValueError("server= conflicts with host=/port=/hostaddr=; give only one")
        server_host, server_port = _parse_server(server)
        kw["host"] = server_host
        kw["port"] = server_port
        kw_labels["host"] = kw_labels["port"] = "server="

    sources = _Sources(kw, kw_labels, _parse_dsn(dsn) if dsn else {}, env)

    address, pgpass_host = _resolve_address(sources)

    # Identity.
    user_found = sources.get_str("user")
    if user_found is not None:
        user_str = user_found[0]
    else:
        os_user = _os_user_name()
        if os_user is None:
            raise ValueError(
                "could not determine the operating system user name; give user= or PGUSER"
            )
        user_str = os_user
    database_found = sources.get_str("dbname")
    database_str = database_found[0] if database_found is not None else user_str
    # Checked before the password file is read: a NUL would only fail later anyway.
    _check_no_nul("user", user_str)
    _check_no_nul("database", database_str)

    password_str = _resolve_password(
        sources, env, passfile_home, pgpass_host, address.port, database_str, user_str
    )

    gss_token: bytes | None = None
    if gss_krb_token is not None:
        if not isinstance(gss_krb_token, bytes | bytearray | memoryview):
            raise TypeError("gss_krb_token must be bytes")
        gss_token = bytes(gss_krb_token)

    # TLS and timeouts.
    ssl_found = sources.get_str("sslmode")
    ssl_str = DEFAULT_SSL_MODE if ssl_found is None else ssl_found[0]
    if ssl_str not in SSL_MODES:
        source = ssl_found[1] if ssl_found is not None else "default"
        raise ValueError(
            f"invalid ssl_mode {ssl_str[:64]!r} (from {source}); expected one of {SSL_MODES}"
        )
    timeout_found = sources.get("connect_timeout")
    timeout = (
        None if timeout_found is None else _parse_timeout(timeout_found.value, timeout_found.source)
    )
    length_found = sources.get("max_message_length")
    length = (
        DEFAULT_MAX_MESSAGE_LENGTH
        if length_found is None
        else _parse_bounded_int(
            length_found.value,
            length_found.source,
            "max_message_length",
            MIN_MAX_MESSAGE_LENGTH,
            MAX_MAX_MESSAGE_LENGTH,
        )
    )

    cache_found = sources.get("statement_cache_size")
    cache_size = (
        0
        if cache_found is None
        else _parse_bounded_int(
            cache_found.value,
            cache_found.source,
            "statement_cache_size",
            0,
            MAX_STATEMENT_CACHE_SIZE,
        )
    )

    early_found = sources.get("early_reads")
    early = (
        True
        if early_found is None
        else _parse_bool(early_found.value, early_found.source, "early_reads")
    )

    gssenc = sources.get_str("gssencmode")
    if gssenc is not None and gssenc[0] not in ("disable", "prefer"):
        raise ValueError(
            f"gssencmode {gssenc[0][:64]!r} (from {gssenc[1]}) is not supported; "
            "GSSAPI encryption is not implemented (use 'disable' or 'prefer')"
        )
    attrs = sources.get_str("target_session_attrs")
    if attrs is not None and attrs[0] != "any":
        raise ValueError(
            f"target_session_attrs {attrs[0][:64]!r} (from {attrs[1]}) is not supported; "
            "only 'any' is"
        )

    settings, app_name = _resolve_settings(sources, server_settings)

    ssl_files: dict[str, str | None] = {}
    for name in ("sslrootcert", "sslcert", "sslkey", "sslcrl"):
        found = sources.get_str(name)
        ssl_files[name] = None if found is None else found[0]

    return ConnectConfig(
        address=address,
        user=user_str,
        password=password_str,
        gss_krb_token=gss_token,
        database=database_str,
        ssl_mode=ssl_str,
        connect_timeout=timeout,
        application_name=app_name,
        server_settings=settings,
        max_message_length=length,
        statement_cache_size=cache_size,
        early_reads=early,
        sslrootcert=ssl_files["sslrootcert"],
        sslcert=ssl_files["sslcert"],
        sslkey=ssl_files["sslkey"],
        sslcrl=ssl_files["sslcrl"],
    )
