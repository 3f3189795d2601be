"""The sans-I/O core: protocol 3.0 messages, the receive buffer and the state machines.

Bytes in, events out. Nothing here imports asyncio, socket or ssl (a test checks), so
the same code serves the client, the test servers and anyone building their own.
"""

from .buffer import DEFAULT_MAX_MESSAGE_LENGTH, ReceiveBuffer
from .machines import (
    AuthRequested,
    Completed,
    CopyInStart,
    CopyOutData,
    CopyOutStart,
    KeyReceived,
    LoginConversation,
    QueryConversation,
    QueryPhase,
    Ready,
    RowsStart,
    ServerError,
    SimpleQueryConversation,
)
from .messages import *  # noqa: F403
from .messages import __all__ as _messages_all

__all__ = [
    "DEFAULT_MAX_MESSAGE_LENGTH",
    "AuthRequested",
    "Completed",
    "CopyInStart",
    "CopyOutData",
    "CopyOutStart",
    "KeyReceived",
    "LoginConversation",
    "QueryConversation",
    "QueryPhase",
    "Ready",
    "ReceiveBuffer",
    "RowsStart",
    "ServerError",
    "SimpleQueryConversation",
    *_messages_all,
]
