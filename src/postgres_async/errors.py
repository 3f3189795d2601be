"""The public error API: PgasyncError, PostgresField and one subclass per SQLSTATE.

    PgasyncError(message, *, code=None, fields=None, original_error=None)
    err.postgres_error_code -> str | None
    err.postgres_field(PostgresField.X) -> str | None
    err.message, err.fields, err.original_error, err.phase, err.query, err.parameters
    PgasyncError.from_fields(fields, *, phase=None) -> PgasyncError
        (a server ErrorResponse, as the subclass for its SQLSTATE)
    client_error(code, message, *, original_error=None) -> PgasyncError
        (a client-assigned SQLSTATE: 08001, 08003, 08000, 08P01, 28P01, 28000, 57014, ...)
    err.tag_query(sql, parameters) -> None
    error_class_for(code) -> type[PgasyncError]
    set_error_reporting_limits(*, query_length=2048, parameter_length=128, parameters=16)

str(err) is one line (newlines in texts are shown as \\n):

    [query "<sql>"[ parameters (<p1>, ...)]: ][<phase>: ]<severity> <code>: <message>
        [; DETAIL: <detail>][; HINT: <hint>][; original error: <str(original_error)>]

for a server error, and `[query ...: ][<phase>: ]<message> (SQLSTATE <code>)[; original
error: ...]` for a client one. A server error, for example (on one line):

    query "SELECT $1::int" parameters ('a',): Postgres Server Error (state=Binding):
    ERROR 22P02: invalid input syntax for type integer: "a"

The query is JSON-quoted, parameters are repr()s. Unlike upstream the
severity is shown even when it is ERROR, so every server error has the same shape. Long
queries, long parameters and many parameters are cut as set_error_reporting_limits
describes: a cut parameter is the repr of its start followed by `...`, the omitted
parameters are counted as `remaining K parameter(s) omitted`. The SQLSTATE classes
(UniqueViolation, IntegrityConstraintViolation, ...) and their naming rules are generated
into _sqlstate.py by tools/gen_errcodes.py.
"""

from __future__ import annotations

from . import _sqlstate
from ._pgerror import (
    PgasyncError,
    PostgresField,
    client_error,
    error_class_for,
    set_error_reporting_limits,
)
from ._sqlstate import *  # noqa: F403

__all__ = [
    "PgasyncError",
    "PostgresField",
    "client_error",
    "error_class_for",
    "set_error_reporting_limits",
]
__all__ += _sqlstate.__all__

# Tracebacks, reprs of classes and pickles name the public module, not the private ones.
for _cls in (PgasyncError, PostgresField, *_sqlstate.SQLSTATE_CLASSES.values()):
    _cls.__module__ = __name__
del _cls
