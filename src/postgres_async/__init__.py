"""postgres_async: an asyncio PostgreSQL client that speaks the wire protocol itself.

import postgres_async as pg
async with pg.with_connection(server="localhost:5432", user="me") as conn:
    await conn.query("SELECT $1::int", [1], handle_row=print)
"""

from . import errors, protocol
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
from .errors import PgasyncError, PostgresField
from .protocol.messages import ColumnMetadata

__version__ = "0.1.0"

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
