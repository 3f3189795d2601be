"""Helpers for tests comparing the compiled accelerator with its Python reference."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

Outcome = tuple[str, object]


def outcome(func: Callable[..., object], *args: object) -> Outcome:
    """The value, or (exception type, args): args hold the message and, for a
    UnicodeEncodeError, the whole input and the positions too."""
    try:
        return ("value", func(*args))
    except Exception as exc:
        return ("raised", (type(exc), exc.args))


def leaked_bytes(func: Callable[..., object], *args: object, rounds: int = 3000) -> int:
    """Bytes still allocated after ``rounds`` more calls (tracemalloc sees C allocations)."""
    for _ in range(200):
        outcome(func, *args)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(rounds):
            outcome(func, *args)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
