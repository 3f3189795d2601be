"""The one place where the optional compiled accelerator is bound.

``POSTGRES_ASYNC_IMPL=python`` forces the pure-Python reference, ``c`` demands the
compiled module (an ImportError if it was not built), and anything else (the default)
takes the compiled one when present. The pure-Python functions are the specification:
the compiled ones must return the same values and the same problems for any input
(tests/unit/test_accel_differential.py, tests/unit/test_reply_scan.py). ``scan_reply``
and ``encode_query`` are the exceptions: they exist only compiled (None otherwise),
their references being ``protocol.reply.scan_reply`` and ``encode_query_python``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Sequence

from . import _copy_binary, _values
from .protocol import buffer as _py_buffer
from .protocol.messages import encode_bind_text

ParseDataRows = Callable[
    [bytearray, int, int, int, int], tuple[list[tuple[str | None, ...]], int, str | None]
]
FormatCopyRows = Callable[[Iterable[Sequence[object]]], bytes]
# (data, pos, max_length, row_limit, parsed, known_columns) -> (pos after the reply,
# RowDescription payload or None, rows, tag, status byte) or None; see protocol/reply.py.
ScanReply = Callable[
    [bytearray, int, int, int, bool, int],
    tuple[int, bytes | None, list[tuple[str | None, ...]], str, int] | None,
]

# (what goes before the Bind, statement name, parameters, tail) -> the whole query's
# bytes, or None for "take the Python path" (a parameter type or value only the
# reference handles or rejects).
EncodeQuery = Callable[[bytes, bytes, Sequence[object] | None, bytes], bytes | None]


def encode_query_python(
    head: bytes, statement: bytes, parameters: Sequence[object] | None, tail: bytes
) -> bytes:
    """The reference for ``encode_query``: what the compiled one returns when not None."""
    wire_parameters = _values.encode_parameters(parameters)[1]
    return head + encode_bind_text(wire_parameters, statement=statement.decode()) + tail


def format_copy_rows_python(rows: Iterable[Sequence[object]]) -> bytes:
    """The reference: the rows in COPY text format, encoded as UTF-8, in one bytes."""
    return b"".join(_values.copy_text_line(row).encode() for row in rows)


_requested = os.environ.get("POSTGRES_ASYNC_IMPL", "auto").strip().lower()

# COPY binary rows: the reference is _copy_binary.encode_rows.
copy_binary_rows: _copy_binary.RowsEncoder = _copy_binary.encode_rows

parse_data_rows: ParseDataRows = _py_buffer.parse_data_rows
format_copy_rows: FormatCopyRows = format_copy_rows_python
# A whole ordinary reply in one call: only worth it compiled. The pure-Python client keeps
# reading messages one by one; protocol.reply.scan_reply is the reference the compiled
# function is tested against, not a fallback.
scan_reply: ScanReply | None = None
# Likewise: in Python the per-parameter path in Connection._prepare is as fast.
encode_query: EncodeQuery | None = None
IMPLEMENTATION = "python"

if _requested != "python":
    try:
        # importlib rather than `from . import`: with no stub for the compiled module and a
        # module __getattr__ in the package, mypy would mistype the name.
        _speedups = importlib.import_module("postgres_async._speedups")
    except ImportError:
        if _requested == "c":
            raise ImportError(
                "POSTGRES_ASYNC_IMPL=c but the compiled module postgres_async._speedups is "
                "not available (was the package built without a C compiler?)"
            ) from None
    else:
        _c_format_copy_rows = _speedups.format_copy_rows
        _to_text = _values.to_text

        def format_copy_rows_c(rows: Iterable[Sequence[object]]) -> bytes:
            # str, None and int are done in C; any other value goes through to_text.
            data: bytes = _c_format_copy_rows(rows, _to_text)
            return data

        parse_data_rows = _speedups.parse_data_rows
        format_copy_rows = format_copy_rows_c
        copy_binary_rows = _speedups.copy_binary_rows
        scan_reply = _speedups.scan_reply
        encode_query = _speedups.encode_query
        IMPLEMENTATION = "c"
