"""The one place where the optional compiled accelerator is bound.

``POSTGRES_ASYNC_IMPL=python`` forces the pure-Python reference, ``c`` demands the
compiled module (an ImportError if it was not built), and anything else (the default)
takes the compiled one when present. The pure-Python functions are the specification:
the compiled ones must return the same values and the same problems for any input.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .protocol import buffer as _py_buffer

ParseDataRows = Callable[
    [bytearray, int, int, int, int], tuple[list[tuple[str | None, ...]], int, str | None]
]

_requested = os.environ.get("POSTGRES_ASYNC_IMPL", "auto").strip().lower()

parse_data_rows: ParseDataRows = _py_buffer.parse_data_rows
IMPLEMENTATION = "python"

if _requested != "python":
    try:
        from . import _speedups  # type: ignore[attr-defined]
    except ImportError:
        if _requested == "c":
            raise ImportError(
                "POSTGRES_ASYNC_IMPL=c but the compiled module postgres_async._speedups is "
                "not available (was the package built without a C compiler?)"
            ) from None
    else:
        parse_data_rows = _speedups.parse_data_rows
        IMPLEMENTATION = "c"
