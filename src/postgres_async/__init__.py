"""postgres_async: an asyncio PostgreSQL client that speaks the wire protocol itself.

Example::

    import postgres_async as pg

    async with pg.with_connection(server="localhost:5432", user="me") as conn:
        await conn.query("SELECT $1::int", [1], handle_row=print)

The connection names are loaded on first use, so ``import postgres_async.protocol``
(the sans-I/O core) does not pull in asyncio, socket or ssl.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors, protocol
from .errors import PgasyncError, PostgresField
from .protocol.messages import ColumnMetadata

if TYPE_CHECKING:
    from .connection import (
        Abort,
        ClosedGracefully,
        Closing,
        CommandComplete,
        Connection,
        Data,
        Failed,
        Finished,
        Open,
        SimpleQueryResult,
        Status,
        Wait,
        connect,
        with_connection,
    )

__version__ = "0.1.0"

_FROM_CONNECTION = frozenset(
    {
        "Abort",
        "ClosedGracefully",
        "Closing",
        "CommandComplete",
        "Connection",
        "Data",
        "Failed",
        "Finished",
        "Open",
        "SimpleQueryResult",
        "Status",
        "Wait",
        "connect",
        "with_connection",
    }
)


def __getattr__(name: str) -> Any:
    if name in _FROM_CONNECTION:
        value = getattr(importlib.import_module(".connection", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Abort",
    "ClosedGracefully",
    "Closing",
    "ColumnMetadata",
    "CommandComplete",
    "Connection",
    "Data",
    "Failed",
    "Finished",
    "Open",
    "PgasyncError",
    "PostgresField",
    "SimpleQueryResult",
    "Status",
    "Wait",
    "__version__",
    "connect",
    "errors",
    "protocol",
    "with_connection",
]
