"""Python values to PostgreSQL's text input forms, and COPY text-format lines.

Everything here runs before a byte is sent, so bad input raises ``TypeError`` /
``ValueError`` while the connection is untouched.
"""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from collections.abc import Sequence

Parameter = (
    str
    | None
    | int
    | float
    | decimal.Decimal
    | bool
    | datetime.date
    | datetime.time
    | datetime.datetime
    | uuid.UUID
    | bytes
    | bytearray
    | memoryview
)


def to_text(value: object, what: str) -> str | None:
    """The text PostgreSQL accepts as input for ``value``; None stays NULL."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if type(value) is str else str(value)
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return "NaN"
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        # datetime is a date; isoformat() covers all three, with any UTC offset.
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    raise TypeError(
        f"{what}: cannot send a value of type {type(value).__name__}; pass str, None, int, "
        "float, Decimal, bool, date, time, datetime, UUID or bytes"
    )


def encode_parameters(
    parameters: Sequence[object] | None,
) -> tuple[tuple[str | None, ...], list[bytes | None]]:
    """(the text forms, for error messages; the wire bytes)."""
    if not parameters:
        return (), []
    if isinstance(parameters, str | bytes):
        raise TypeError("parameters must be a sequence of values, not a single str/bytes")
    texts: list[str | None] = []
    wire: list[bytes | None] = []
    for index, value in enumerate(parameters, 1):
        # The common types first, without building the error label unless needed.
        kind = type(value)
        if kind is str:
            text: str | None = value  # type: ignore[assignment]
        elif kind is int:
            text = str(value)
        else:
            text = to_text(value, f"parameter ${index}")
        texts.append(text)
        if text is None:
            wire.append(None)
        elif "\0" in text:
            raise ValueError(f"parameter ${index} must not contain a NUL character")
        else:
            try:
                wire.append(text.encode("utf-8"))
            except UnicodeEncodeError:
                raise ValueError(
                    f"parameter ${index} is not encodable as UTF-8 (lone surrogate?)"
                ) from None
    return tuple(texts), wire


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_text_line(row: Sequence[object]) -> str:
    """One row in COPY text format: tab-separated, ``\\N`` for NULL, escapes applied."""
    if isinstance(row, str | bytes):
        raise TypeError("a COPY row must be a sequence of values, not a single str/bytes")
    fields = []
    for index, value in enumerate(row, 1):
        text = to_text(value, f"COPY column {index}")
        if text is None:
            fields.append("\\N")
        else:
            if "\0" in text:
                raise ValueError(f"COPY column {index} must not contain a NUL character")
            fields.append(text.translate(_COPY_ESCAPES))
    return "\t".join(fields) + "\n"


def quote_identifier(name: str) -> str:
    """A double-quoted SQL identifier; the name is taken literally (a dot included)."""
    if "\0" in name:
        raise ValueError("an identifier must not contain a NUL character")
    if not name:
        raise ValueError("an identifier must not be empty")
    return '"' + name.replace('"', '""') + '"'
