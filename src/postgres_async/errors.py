"""PgasyncError, PostgresField and the SQLSTATE subclasses (STUB: being completed).

Interface other modules rely on (keep these signatures):

    PgasyncError(message, *, code=None, fields=None, original_error=None)
    err.postgres_error_code -> str | None
    err.postgres_field(PostgresField.X) -> str | None
    PgasyncError.from_fields(fields: dict[str, str], *, phase: str | None = None) -> PgasyncError
        (server ErrorResponse; returns the SQLSTATE subclass)
    client_error(code: str, message: str) -> PgasyncError    (the SQLSTATE subclass)
    err.tag_query(sql: str, parameters: Sequence[str | None] | None) -> None
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence


class PostgresField(enum.Enum):
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


class PgasyncError(Exception):
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
        self._code = code
        self.fields: dict[str, str] = dict(fields or {})
        self.original_error = original_error
        self.phase: str | None = None
        self.query: str | None = None
        self.parameters: tuple[str | None, ...] | None = None

    @property
    def postgres_error_code(self) -> str | None:
        return self.fields.get("C", self._code)

    def postgres_field(self, field: PostgresField) -> str | None:
        return self.fields.get(field.value)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str], *, phase: str | None = None) -> PgasyncError:
        err = PgasyncError(fields.get("M", ""), fields=fields)
        err.phase = phase
        return err

    def tag_query(self, sql: str, parameters: Sequence[str | None] | None) -> None:
        self.query = sql
        self.parameters = tuple(parameters) if parameters else None

    def __str__(self) -> str:
        return self.message


def client_error(code: str, message: str) -> PgasyncError:
    return PgasyncError(message, code=code)
