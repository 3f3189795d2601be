"""The only package that touches asyncio transports, sockets and ssl."""

from .stream import Stream, open_stream, send_cancel_request

__all__ = ["Stream", "open_stream", "send_cancel_request"]
