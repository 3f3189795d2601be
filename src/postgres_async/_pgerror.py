"""PgasyncError and PostgresField: the error type, its fields, its one-line rendering.

Owns how an error is shown (query window, parameter limits, phase tag, server fields)
and the process-wide reporting limits. The generated SQLSTATE subclasses live in
_sqlstate.py; both are public through postgres_async.errors. This module is separate
from errors.py so that _sqlstate can subclass PgasyncError without an import cycle that
breaks depending on which module is imported first.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class PostgresField(enum.Enum):
    """ErrorResponse / NoticeResponse field types; the value is the wire type byte."""

    SEVERITY = "S"
    SEVERITY_NON_LOCALISED = "V"
    CODE = "C"
    MESSAGE = "M"
    DETAIL = "D"
    HINT = "H"
    POSITION = "P"
    INTERNAL_POSITION = "p"
    INTERNAL_QUERY = "q"
    WHERE = "W"
    SCHEMA = "s"
    TABLE = "t"
    COLUMN = "c"
    DATA_TYPE = "d"
    CONSTRAINT = "n"
    FILE = "F"
    LINE = "L"
    ROUTINE = "R"


# Module-level, like upstream's: limits are a display policy of the whole process.
_query_length = 2048
_parameter_length = 128
_parameters = 16


def set_error_reporting_limits(
    *, query_length: int = 2048, parameter_length: int = 128, parameters: int = 16
) -> None:
    """Set how much of a query and its parameters str(err) shows, for every error.

    A query longer than query_length is shown as a window of query_length // 2 characters
    on each side of the error position; a parameter longer than parameter_length is cut
    to that many characters; beyond `parameters` parameters only the first
    `parameters - 1` are shown. A limit left out goes back to its default, as upstream's.
    """
    for name, value in (
        ("query_length", query_length),
        ("parameter_length", parameter_length),
        ("parameters", parameters),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    global _query_length, _parameter_length, _parameters
    _query_length, _parameter_length, _parameters = query_length, parameter_length, parameters


# Everything str.splitlines() splits on.
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _escape_break(match: re.Match[str]) -> str:
    # \uXXXX is both a Python and a JSON escape, so a shown query still decodes as JSON.
    char = match[0]
    return {"\n": "\\n", "\r": "\\r"}.get(char) or f"\\u{ord(char):04x}"


def _one_line(text: str) -> str:
    # str(err) is one line; server texts (PL/pgSQL DETAIL, RAISE messages) may not be.
    return _LINE_BREAKS.sub(_escape_break, text)


def _error_index(position: str | None) -> int:
    """0-based character index of the "P" field (1-based characters); 0 when unusable."""
    if position is None or not position.isascii() or not position.isdigit():
        return 0
    return max(int(position) - 1, 0)


def shrink_query(sql: str, position: str | None, limit: int) -> str:
    """The query if it fits in `limit` chars, else a window around the error position.

    The window keeps limit // 2 characters before the error character and limit // 2 from
    it, marked with "... " / " ..." where text was cut: at most limit + 8 characters.
    """
    if len(sql) <= limit:
        return sql
    half = limit // 2
    index = min(_error_index(position), len(sql))
    start = max(index - half, 0)
    end = min(index + half, len(sql))
    head = "... " if start > 0 else ""
    tail = " ..." if end < len(sql) else ""
    return f"{head}{sql[start:end]}{tail}"


def _show_parameter(value: object, limit: int) -> str:
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return repr(value[:limit]) + "..."
    return repr(value)


def show_parameters(parameters: Sequence[object], max_count: int, max_length: int) -> str:
    """A tuple-like "(...)" of the parameters, at most max_count entries long."""
    count = len(parameters)
    shown = parameters if count <= max_count else parameters[: max(max_count - 1, 0)]
    items = [_show_parameter(p, max_length) for p in shown]
    if len(items) == 1 and count == 1:
        return f"({items[0]},)"
    if count > len(shown):
        # The true count: upstream subtracts the limit, one fewer than it leaves out.
        items.append(f"remaining {count - len(shown)} parameter(s) omitted")
    return "(" + ", ".join(items) + ")"


def _restore(cls: type[PgasyncError], message: str, state: dict[str, Any]) -> PgasyncError:
    # Bypasses __init__ so that subclasses with other constructors unpickle too.
    err = cls.__new__(cls, message)
    err.__dict__.update(state)
    return err


class PgasyncError(Exception):
    """Every error postgres_async raises: a server ErrorResponse or a client-side failure.

    `fields` maps ErrorResponse field type characters ("C", "M", "S", ...) to values and is
    empty for client errors. `phase` says where in a query's life a server error arrived
    ("Postgres Server Error (state=Parsing)", ...). `query` and `parameters` are set by
    tag_query for display. Subclasses (postgres_async.errors) carry a `sqlstate` used as
    the code when none is given.
    """

    sqlstate: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        fields: Mapping[str, str] | None = None,
        original_error: PgasyncError | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self._code = code if code is not None else self.sqlstate
        self.fields: dict[str, str] = dict(fields) if fields else {}
        self.original_error = original_error
        self.phase: str | None = None
        self.query: str | None = None
        self.parameters: tuple[str | None, ...] | None = None

    @property
    def postgres_error_code(self) -> str | None:
        """The server's SQLSTATE ("C" field), else the client-assigned code, else None."""
        code = self.fields.get("C")
        return code if code is not None else self._code

    def postgres_field(self, field: PostgresField) -> str | None:
        return self.fields.get(field.value)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str], *, phase: str | None = None) -> PgasyncError:
        """The error for a server ErrorResponse, as the class of its "C" code (whatever
        class this is called on)."""
        code = fields.get("C")
        err_cls = error_class_for(code) if code is not None else PgasyncError
        err = err_cls(fields.get("M", ""), fields=fields)
        err.phase = phase
        return err

    def tag_query(self, sql: str, parameters: Sequence[str | None] | None) -> None:
        """Record the query this error belongs to; str() shows it within the limits."""
        self.query = sql
        self.parameters = tuple(parameters) if parameters else None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.query is not None:
            query = shrink_query(self.query, self.fields.get("P"), _query_length)
            # JSON quoting escapes quotes and most line breaks, _one_line the rest (U+2028),
            # and the result still decodes as JSON to the shown text.
            part = "query " + _one_line(json.dumps(query, ensure_ascii=False))
            if self.parameters:
                part += " parameters " + show_parameters(
                    self.parameters, _parameters, _parameter_length
                )
            parts.append(part)
        if self.phase:
            parts.append(_one_line(self.phase))
        parts.append(self._describe())
        text = ": ".join(parts)
        if self.original_error is not None:
            text += f"; original error: {_one_line(str(self.original_error))}"
        return text

    def _describe(self) -> str:
        code = self.postgres_error_code
        message = _one_line(self.message)
        if not self.fields:
            return f"{message} (SQLSTATE {_one_line(code)})" if code else message
        # Severity is kept even when it is "ERROR" (upstream drops it): one shape for all.
        severity = self.fields.get("S") or self.fields.get("V")
        head = _one_line(" ".join(x for x in (severity, code) if x))
        text = f"{head}: {message}" if head else message
        detail = self.fields.get("D")
        if detail:
            text += f"; DETAIL: {_one_line(detail)}"
        hint = self.fields.get("H")
        if hint:
            text += f"; HINT: {_one_line(hint)}"
        return text

    def __repr__(self) -> str:
        code = self.postgres_error_code
        suffix = f", code={code!r}" if code is not None else ""
        return f"{type(self).__name__}({self.message!r}{suffix})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.message, self.__dict__))


def error_class_for(code: str) -> type[PgasyncError]:
    """The class for a SQLSTATE: exact, else its class's XX000 base, else PgasyncError."""
    classes = _sqlstate.SQLSTATE_CLASSES
    found = classes.get(code)
    if found is None and len(code) == 5:
        found = classes.get(code[:2] + "000")
    return found if found is not None else PgasyncError


def client_error(
    code: str, message: str, *, original_error: PgasyncError | None = None
) -> PgasyncError:
    """A client-side error with a client-assigned SQLSTATE, as that code's class."""
    return error_class_for(code)(message, code=code, original_error=original_error)


# Last, because _sqlstate subclasses PgasyncError: importing either module first works.
from . import _sqlstate  # noqa: E402
