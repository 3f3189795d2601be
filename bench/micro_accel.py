"""Micro-benchmark of the accelerated hot paths, pure Python against the C extension.

    python bench/micro_accel.py [--rows 1000000] [--batch 1000] [--rounds 5]

* ``parse_data_rows``: a pre-built buffer of DataRow messages with the five text columns
  of the streaming workload (int, text, text, numeric, timestamptz as the server sends
  them), decoded ``--batch`` rows per call as ``ReceiveBuffer.take_data_rows`` does with
  each chunk off the socket; the rows are dropped as a callback that keeps nothing would.
* ``format_copy_rows``: the COPY IN workload's rows (int, text, text), formatted
  ``--batch`` rows per call into one bytes, as ``copy_in_rows`` sends them.

Prints the best of ``--rounds`` in rows/s for each implementation, and the ratio.
No server is involved: this measures the client's CPU cost alone.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import importlib
import platform
import struct
import sys
import time
from collections.abc import Callable
from types import ModuleType

from postgres_async import _accel, _values
from postgres_async.protocol import buffer as py_buffer

ParseFn = Callable[
    [bytearray, int, int, int, int], tuple[list[tuple[str | None, ...]], int, str | None]
]


def stream_row(i: int) -> list[bytes]:
    created = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=i)
    return [
        str(i).encode(),
        f"name-{i}".encode(),
        f"{i * 2654435761 % 2**128:032x}".encode(),  # md5-like
        f"{i * 1.25:.2f}".encode(),
        created.strftime("%Y-%m-%d %H:%M:%S+00").encode(),
    ]


def data_rows_buffer(n: int) -> bytearray:
    pack_i32 = struct.Struct("!i").pack
    parts = []
    for i in range(n):
        values = stream_row(i)
        body = struct.pack("!H", len(values)) + b"".join(pack_i32(len(v)) + v for v in values)
        parts.append(b"D" + pack_i32(len(body) + 4) + body)
    return bytearray(b"".join(parts))


def copy_rows(n: int) -> list[tuple[int, str, str]]:
    """The same rows as bench/clients.py's COPY workload."""
    return [(i, f"name-{i}", f"label {i * 7919 % 100003} of the benchmark row") for i in range(n)]


def time_parse(parse: ParseFn, data: bytearray, n: int, batch: int) -> float:
    start = time.perf_counter()
    pos = 0
    seen = 0
    max_length = py_buffer.DEFAULT_MAX_MESSAGE_LENGTH
    while True:
        rows, pos, problem = parse(data, pos, 5, batch, max_length)
        if problem is not None:
            raise AssertionError(problem)
        if not rows:
            break
        seen += len(rows)
    elapsed = time.perf_counter() - start
    if seen != n or pos != len(data):
        raise AssertionError(f"decoded {seen} rows up to {pos}, expected {n} up to {len(data)}")
    return elapsed


def time_format(
    format_rows: Callable[[list[tuple[int, str, str]]], bytes],
    rows: list[tuple[int, str, str]],
    batch: int,
) -> float:
    start = time.perf_counter()
    size = 0
    for first in range(0, len(rows), batch):
        size += len(format_rows(rows[first : first + batch]))
    elapsed = time.perf_counter() - start
    if size <= 0:
        raise AssertionError("nothing formatted")
    return elapsed


def best(measure: Callable[[], float], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        times.append(measure())
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="rows per call")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    speedups: ModuleType | None
    try:
        speedups = importlib.import_module("postgres_async._speedups")
    except ImportError:
        speedups = None
        print("postgres_async._speedups is not built: pure Python only", file=sys.stderr)

    print(
        f"CPython {platform.python_version()} on {platform.machine()}, {args.rows:,} rows, "
        f"{args.batch} rows per call, best of {args.rounds}"
    )
    data = data_rows_buffer(args.rows)
    rows = copy_rows(args.rows)

    parsers: dict[str, ParseFn] = {"python": py_buffer.parse_data_rows}
    formatters: dict[str, Callable[[list[tuple[int, str, str]]], bytes]] = {
        "python": _accel.format_copy_rows_python
    }
    if speedups is not None:
        c_format = speedups.format_copy_rows

        def format_c(batch: list[tuple[int, str, str]]) -> bytes:
            # What _accel.format_copy_rows does when the extension is bound.
            return c_format(batch, _values.to_text)  # type: ignore[no-any-return]

        parsers["c"] = speedups.parse_data_rows
        formatters["c"] = format_c
        # Both give the same answer before either is timed.
        sample = data[: len(data) // max(1, args.rows // 1000)]
        assert parsers["c"](sample, 0, 5, 1 << 30, 1 << 30) == parsers["python"](
            sample, 0, 5, 1 << 30, 1 << 30
        )
        assert formatters["c"](rows[:1000]) == formatters["python"](rows[:1000])

    results: dict[tuple[str, str], float] = {}
    for impl, parse in parsers.items():
        elapsed = best(
            functools.partial(time_parse, parse, data, args.rows, args.batch), args.rounds
        )
        results["parse_data_rows (5 text columns)", impl] = args.rows / elapsed
    for impl, format_rows in formatters.items():
        elapsed = best(functools.partial(time_format, format_rows, rows, args.batch), args.rounds)
        results["format_copy_rows (int, text, text)", impl] = args.rows / elapsed

    print(f"{'function':38} {'impl':7} {'rows/s':>14} {'vs python':>10}")
    for (name, impl), rate in results.items():
        ratio = rate / results[name, "python"]
        print(f"{name:38} {impl:7} {rate:14,.0f} {ratio:9.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
