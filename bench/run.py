"""The side-by-side benchmark of issue 4: ``python bench/run.py`` (``make bench``).

Starts a private PostgreSQL server (``postgres_async.testing.PostgresServer``), pins it
to CPU 0, and measures postgres_async, asyncpg, psycopg 3 (async) and the C reference
(libpq through ``pgbench`` and ``psql \\copy``) on six workloads, with the default
asyncio loop and with uvloop. Every measurement runs in a fresh process
(``bench/clients.py`` for the Python clients), pinned to CPU 0 for latency workloads
(1, 4, 5, 6: server and client share a CPU, so the figure is the client's own cost
rather than cross-CPU wake-ups) and to CPU 1 for bulk workloads (2, 3) and for 5o,
workload 5 again where a round trip is a real wait, which pipelining spares. Clients are
interleaved: each round runs every client once, in an order that rotates per round.

Writes ``bench/results/latest.md`` (tables, ratios, targets, machine), ``latest.png``
(ratios to asyncpg) and ``latest.json`` (every measurement). ``--quick`` is a smoke run
with small sizes and one round, written to ``bench/results/quick.*``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import clients  # noqa: E402
import report  # noqa: E402

from postgres_async.testing import (  # noqa: E402
    Installation,
    PostgresServer,
    PostgresServerError,
    find_installations,
)

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_CPU = 0
LATENCY_CPU = 0
BULK_CPU = 1

#: Settings for the benchmark server on top of the harness defaults (fsync, full-page
#: writes and synchronous_commit off, logging collector off).
SERVER_CONF = {
    "shared_buffers": "256MB",
    "jit": "off",
    "autovacuum": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "1h",
    "work_mem": "64MB",
}

Json = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Bench:
    """One table of the report: a workload at one size."""

    key: str
    title: str
    workload: str  # a key of clients.WORKLOADS
    n: int
    tasks: int
    cpu: int
    c_reference: str | None  # "pgbench", "psql" or None
    higher_is_better: bool = True

    @property
    def kind(self) -> str:
        return "latency" if self.cpu == LATENCY_CPU else "bulk"


def make_benches(quick: bool) -> list[Bench]:
    select_n, tasks, per_task = (2_000, 10, 200) if quick else (20_000, 10, 2_000)
    rows_big, rows_small = (100_000, 10_000) if quick else (1_000_000, 100_000)
    copy_rows = 100_000 if quick else 1_000_000
    notifications = 200 if quick else 2_000
    return [
        Bench(
            "1",
            f"(1) {select_n:,} sequential SELECT $1::int on one connection",
            "select",
            select_n,
            1,
            LATENCY_CPU,
            "pgbench",
        ),
        Bench(
            "2",
            f"(2) one query streaming {rows_big:,} rows x 5 columns to a per-row callback",
            "stream",
            rows_big,
            1,
            BULK_CPU,
            "psql",
        ),
        Bench(
            "2s",
            f"(2, small) the same query streaming {rows_small:,} rows",
            "stream",
            rows_small,
            1,
            BULK_CPU,
            "psql",
        ),
        Bench(
            "3",
            f"(3) COPY IN of {copy_rows:,} rows x 3 columns (int, text, text)",
            "copy",
            copy_rows,
            1,
            BULK_CPU,
            "psql",
        ),
        Bench(
            "4",
            f"(4) {tasks} connections x {per_task:,} concurrent SELECT $1::int",
            "multi",
            per_task,
            tasks,
            LATENCY_CPU,
            "pgbench",
        ),
        Bench(
            "5",
            f"(5) {tasks} tasks sharing one connection, {per_task:,} SELECT $1::int each",
            "shared",
            per_task,
            tasks,
            LATENCY_CPU,
            None,
        ),
        Bench(
            "5o",
            f"(5, other CPU) the same with the client on CPU {BULK_CPU}: a real round trip",
            "shared",
            per_task,
            tasks,
            BULK_CPU,
            None,
        ),
        Bench(
            "6",
            f"(6) NOTIFY to callback latency over {notifications:,} notifications",
            "notify",
            notifications,
            1,
            LATENCY_CPU,
            None,
            higher_is_better=False,
        ),
    ]


# ------------------------------------------------------------------------- processes


def child_env() -> dict[str, str]:
    """The environment of psql/pgbench: no PG* variable may redirect them elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


@dataclasses.dataclass
class ChildResult:
    returncode: int
    output: str
    seconds: float
    maxrss_kb: int


def run_child(argv: Sequence[str], timeout: float) -> ChildResult:
    """Run a C tool, returning its combined output, wall time and its own peak RSS.

    ``os.wait4`` reaps exactly this child and gives its resource usage (getrusage's
    RUSAGE_CHILDREN would give the largest of all children so far)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env(),
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    reaped = False
    try:
        assert proc.stdout is not None
        output = proc.stdout.read().decode(errors="replace")
        _pid, status, usage = os.wait4(proc.pid, 0)
        reaped = True
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        timer.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
        if not reaped:
            proc.kill()
            proc.wait()
    return ChildResult(proc.returncode, output, seconds, usage.ru_maxrss)


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv]


def pin_server(server: PostgresServer, cpu: int) -> dict[int, list[int]]:
    """Pin the postmaster and every process it has forked so far to ``cpu``.

    Backends forked later inherit the postmaster's affinity. Returns pid -> affinity as
    read back afterwards."""
    postmaster = server.pid
    if postmaster is None:
        raise RuntimeError("the server is not running")
    pinned_pids: dict[int, list[int]] = {}
    for pid in [postmaster, *children_of(postmaster)]:
        done = subprocess.run(
            ["taskset", "-a", "-p", "-c", str(cpu), str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        try:
            affinity = sorted(os.sched_getaffinity(pid))
        except ProcessLookupError:
            continue  # a short-lived child (e.g. a backend that just ended)
        if done.returncode != 0 or affinity != [cpu]:
            raise RuntimeError(f"could not pin PostgreSQL process {pid} to CPU {cpu}")
        pinned_pids[pid] = affinity
    return pinned_pids


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # The command name is in parentheses and may contain spaces: split after it.
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                found.append(int(entry.name))
    return sorted(found)


# ---------------------------------------------------------------------------- server


def choose_installation(version: int | None) -> Installation:
    """``--pg-version`` if given; else the newest Debian-packaged installation
    (/usr/lib/postgresql/N/bin, whose pgbench and psql are the distribution's), else the
    newest found."""
    installations = find_installations()
    if not installations:
        raise SystemExit("no PostgreSQL installation found (see postgres_async.testing)")
    if version is not None:
        for installation in installations:
            if installation.version == version:
                return installation
        found = ", ".join(str(i.version) for i in installations)
        raise SystemExit(f"no PostgreSQL {version} installation; found {found}")
    by_version = sorted(installations, key=lambda i: i.version, reverse=True)
    for installation in by_version:
        if installation.bindir.is_relative_to(DEBIAN_ROOT) and all(
            (installation.bindir / tool).is_file() for tool in ("pgbench", "psql")
        ):
            return installation
    return by_version[0]


def c_tool(installation: Installation, name: str) -> str:
    path = installation.tool(name)
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found next to PostgreSQL nor on PATH")
    return found


def prepare_data(server: PostgresServer, stream_rows: int, benches: list[Bench]) -> bool:
    """The streamed table (5 columns, built once) and the unlogged COPY target.

    Returns whether the streamed table could be loaded into shared buffers."""
    prewarmed = False
    if any(b.workload == "stream" for b in benches):
        server.run_sql(
            f"""
            CREATE TABLE {clients.STREAM_TABLE} (
                id int, name text, label text, amount numeric, created timestamptz
            );
            INSERT INTO {clients.STREAM_TABLE}
            SELECT i, 'name-' || i, md5(i::text), (i * 1.25)::numeric(14, 2),
                   timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second'
            FROM generate_series(1, {stream_rows}) AS i;
            VACUUM ANALYZE {clients.STREAM_TABLE};
            """
        )
        # Into shared buffers, so that every scan is a buffer hit rather than a copy out
        # of the page cache (a large table's seq scan would otherwise use a small ring).
        with contextlib.suppress(PostgresServerError):
            server.run_sql(
                "CREATE EXTENSION IF NOT EXISTS pg_prewarm;"
                f"SELECT pg_prewarm('{clients.STREAM_TABLE}');"
            )
            prewarmed = True
    if any(b.workload == "copy" for b in benches):
        columns = ", ".join(
            f"{c} {t}" for c, t in zip(clients.COPY_COLUMNS, ("int", "text", "text"), strict=True)
        )
        server.run_sql(f"CREATE UNLOGGED TABLE {clients.COPY_TABLE} ({columns})")
    return prewarmed


def write_tsv(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as tsv:
        for row in clients.copy_rows(n):
            tsv.write("\t".join(str(value) for value in row) + "\n")


# ----------------------------------------------------------------------- measurement


class Runner:
    def __init__(
        self,
        server: PostgresServer,
        installation: Installation,
        workdir: Path,
        timeout: float,
        warmup: int,
    ) -> None:
        self.server = server
        self.workdir = workdir
        self.timeout = timeout
        self.warmup = warmup
        self.pgbench = c_tool(installation, "pgbench")
        self.psql = c_tool(installation, "psql")
        self.pgbench_script = workdir / "select.sql"
        self.pgbench_script.write_text("\\set x random(1, 1000000)\nSELECT :x::int;\n")
        self.tsv: dict[int, Path] = {}
        self.psql_connect_seconds = 0.0

    def conn_args(self) -> list[str]:
        return ["-h", self.server.host, "-p", str(self.server.port), "-U", "postgres"]

    def measure(self, bench: Bench, client: str, loop: str) -> Json:
        if bench.workload == "copy":
            # Outside the measurement: every client copies into an empty table.
            self.server.run_sql(f"TRUNCATE {clients.COPY_TABLE}")
        try:
            if client.startswith("pgbench"):
                return self.measure_pgbench(bench, "extended" if "+" in client else "prepared")
            if client == "psql":
                return self.measure_psql(bench)
            return self.measure_python(bench, client, loop)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    def measure_python(self, bench: Bench, client: str, loop: str) -> Json:
        argv = [
            sys.executable,
            str(BENCH_DIR / "clients.py"),
            f"--client={client}",
            f"--workload={bench.workload}",
            f"--loop={loop}",
            f"--cpu={bench.cpu}",
            f"--host={self.server.host}",
            f"--port={self.server.port}",
            f"--n={bench.n}",
            f"--tasks={bench.tasks}",
            f"--warmup={self.warmup if bench.workload != 'notify' else self.warmup // 10}",
        ]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {self.timeout:.0f} s"}
        lines = proc.stdout.strip().splitlines()
        try:
            result: Json = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            tail = proc.stderr.strip().splitlines()[-3:]
            return {"error": f"exit {proc.returncode}, no result: {' | '.join(tail)}"}
        if proc.returncode != 0 and "error" not in result:
            result["error"] = f"exit status {proc.returncode}"
        if "error" in result:
            result["stderr_tail"] = proc.stderr.strip().splitlines()[-12:]
        return result

    def measure_pgbench(self, bench: Bench, query_mode: str) -> Json:
        argv = pinned(
            bench.cpu,
            [
                self.pgbench,
                "-n",
                "-f",
                str(self.pgbench_script),
                "-M",
                query_mode,
                "-c",
                str(bench.tasks),
                "-j",
                "1",
                "-t",
                str(bench.n),
                *self.conn_args(),
                "postgres",
            ],
        )
        child = run_child(argv, self.timeout)
        match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", child.output)
        if child.returncode != 0 or match is None:
            return {"error": f"pgbench exit {child.returncode}: {child.output[-500:]}"}
        return {
            "value": float(match.group(1)),
            "unit": "queries/s",
            "queries": bench.n * bench.tasks,
            "maxrss_kb": child.maxrss_kb,
            "cpu_affinity": [bench.cpu],
        }

    def psql_command(self, cpu: int, command: str) -> list[str]:
        return pinned(cpu, [self.psql, "-X", *self.conn_args(), "-d", "postgres", "-c", command])

    def calibrate_psql(self, cpu: int, runs: int = 7) -> float:
        """Median wall time of a psql that connects and runs nothing (subtracted)."""
        times = []
        for _ in range(runs):
            child = run_child(self.psql_command(cpu, ""), self.timeout)
            if child.returncode != 0:
                raise RuntimeError(f"psql could not connect: {child.output}")
            times.append(child.seconds)
        self.psql_connect_seconds = statistics.median(times)
        return self.psql_connect_seconds

    def measure_psql(self, bench: Bench) -> Json:
        if bench.workload == "stream":
            command = f"\\copy ({clients.stream_sql(bench.n)}) TO '/dev/null'"
        elif bench.workload == "copy":
            tsv = self.tsv.get(bench.n)
            if tsv is None:
                tsv = self.tsv[bench.n] = self.workdir / f"copy-{bench.n}.tsv"
                write_tsv(tsv, bench.n)
            columns = ", ".join(clients.COPY_COLUMNS)
            command = f"\\copy {clients.COPY_TABLE} ({columns}) FROM '{tsv}'"
        else:
            raise ValueError(f"psql has no {bench.workload} workload")
        child = run_child(self.psql_command(bench.cpu, command), self.timeout)
        if child.returncode != 0 or child.output.strip() != f"COPY {bench.n}":
            return {"error": f"psql exit {child.returncode}: {child.output[-500:]}"}
        seconds = child.seconds - self.psql_connect_seconds
        return {
            "value": bench.n / seconds,
            "unit": "rows/s",
            "seconds": seconds,
            "wall_seconds": child.seconds,
            "connect_seconds": self.psql_connect_seconds,
            "rows": bench.n,
            "maxrss_kb": child.maxrss_kb,
            "cpu_affinity": [bench.cpu],
        }


def clients_for(bench: Bench, only: list[str] | None) -> list[str]:
    names = list(clients.CLIENTS[bench.workload])
    if "postgres_async+binary" in names and not clients.postgres_async_has_binary_copy():
        names.remove("postgres_async+binary")
    if bench.c_reference is not None:
        names.append(bench.c_reference)
    if bench.workload == "select":
        # libpq with the unnamed statement, as postgres_async sends without its cache:
        # what the server's parse and plan of every query leave to any client.
        names.append("pgbench+extended")
    if only:
        names = [n for n in names if any(o == n or o == n.split("+")[0] for o in only)]
    return names


def rotate(items: list[str], by: int) -> list[str]:
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


def run_all(
    runner: Runner,
    benches: list[Bench],
    loops: list[str],
    rounds: int,
    only: list[str] | None,
) -> dict[str, dict[str, dict[str, list[Json]]]]:
    """results[bench key][loop][client] = one dict per round."""
    results: dict[str, dict[str, dict[str, list[Json]]]] = {}
    for bench in benches:
        names = clients_for(bench, only)
        if "psql" in names:
            runner.calibrate_psql(bench.cpu)
        for loop in loops:
            per_client: dict[str, list[Json]] = {name: [] for name in names}
            results.setdefault(bench.key, {})[loop] = per_client
            for round_number in range(rounds):
                order = rotate(names, round_number)
                for position, client in enumerate(order):
                    started = time.monotonic()
                    load = os.getloadavg()[0]
                    result = runner.measure(bench, client, loop)
                    result["loadavg_1min"] = load
                    result["round"] = round_number
                    result["position"] = position
                    per_client[client].append(result)
                    log_measurement(bench, loop, round_number, client, result, started)
    return results


def log_measurement(
    bench: Bench, loop: str, round_number: int, client: str, result: Json, started: float
) -> None:
    took = time.monotonic() - started
    if "error" in result:
        shown = f"ERROR {result['error']}"
    else:
        shown = f"{result['value']:,.1f} {result['unit']}"
        if "maxrss_kb" in result and bench.workload == "stream":
            shown += f", peak RSS {result['maxrss_kb'] / 1024:.1f} MB"
        if "p99_us" in result:
            shown += f", p99 {result['p99_us']:.1f} us"
    print(
        f"[{bench.key} {loop} r{round_number}] {client:<22} {shown}  ({took:.1f} s)",
        flush=True,
    )


# ------------------------------------------------------------------------ machine info


def cpu_busy(seconds: float = 1.0) -> float:
    """The fraction of all CPUs' time spent busy over ``seconds`` (from /proc/stat):
    sampled while the benchmark itself is idle, it shows what else runs on the machine."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    total_before, idle_before = sample()
    time.sleep(seconds)
    total_after, idle_after = sample()
    total = total_after - total_before
    return 0.0 if total <= 0 else 1.0 - (idle_after - idle_before) / total


def machine_info(server: PostgresServer, runner: Runner) -> Json:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    info: Json = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "postgresql": server.run_sql("SELECT version()").strip(),
        "postgresql_bindir": str(server.installation.bindir),
        "pgbench": _first_line([runner.pgbench, "--version"]),
        "psql": _first_line([runner.psql, "--version"]),
        "git": _git_description(),
        "server_conf": SERVER_CONF,
        "postgres_async_impl_env": os.environ.get("POSTGRES_ASYNC_IMPL", "(unset: auto)"),
    }
    return info


def library_versions(results: dict[str, dict[str, dict[str, list[Json]]]]) -> Json:
    """Installed versions, plus what the workers reported (implementation, libpq)."""
    libraries: Json = {}
    for name in ("postgres_async", "asyncpg", "psycopg", "psycopg-binary", "uvloop"):
        try:
            libraries[name] = {"version": importlib.metadata.version(name)}
        except importlib.metadata.PackageNotFoundError:
            libraries[name] = {"version": "not installed"}
    for per_loop in results.values():
        for per_client in per_loop.values():
            for client, runs in per_client.items():
                for run in runs:
                    reported = run.get("library")
                    if isinstance(reported, dict) and reported:
                        entry = libraries.setdefault(client.split("+")[0], {})
                        entry.update({k: v for k, v in reported.items() if k != "version"})
    return libraries


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def _git_description() -> str:
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if dirty:
        changed = len(dirty.splitlines())
        return f"{head} (+ {changed} uncommitted change(s) under src/)"
    return head


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="postgres_async vs asyncpg vs psycopg vs libpq")
    parser.add_argument("--pg-version", type=int, default=None, help="PostgreSQL major version")
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round")
    parser.add_argument(
        "--workloads",
        default="1,2,2s,3,4,5,5o,6",
        help="comma-separated keys: 1, 2, 2s (2 at the small size), 3, 4, 5, "
        "5o (5 with the client on the other CPU), 6",
    )
    parser.add_argument(
        "--clients",
        default="",
        help="comma-separated names to keep (e.g. postgres_async,asyncpg,psql); default all",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="path prefix of the .md/.png/.json (default bench/results/latest, or quick)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per measurement, s")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="PATH",
        help="measure nothing: rewrite the .md and .png of --output from a saved .json",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the machine to be idle (other processes using "
        "under 15%% of the CPUs); on a shared machine other work skews every figure",
    )
    args = parser.parse_args(argv)
    args.loops = [loop.strip() for loop in args.loops.split(",") if loop.strip()]
    for loop in args.loops:
        if loop not in ("asyncio", "uvloop"):
            parser.error(f"unknown loop {loop!r}")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.output is None:
        args.output = BENCH_DIR / "results" / ("quick" if args.quick else "latest")
    return args


def wait_for_idle(limit: float, threshold: float = 0.15) -> None:
    deadline = time.monotonic() + limit
    while True:
        busy = cpu_busy(3.0)
        if busy < threshold:
            print(f"machine idle enough: CPUs {busy:.0%} busy", flush=True)
            return
        if time.monotonic() > deadline:
            print(f"still {busy:.0%} busy after {limit:.0f} s; starting anyway", flush=True)
            return
        print(f"waiting for the machine to be idle: CPUs {busy:.0%} busy", flush=True)
        time.sleep(10.0)


def write_report(
    output: Path,
    benches: list[Bench],
    results: dict[str, dict[str, dict[str, list[Json]]]],
    meta: Json,
) -> None:
    summary = report.summarise(benches, results)
    md_path = output.with_suffix(".md")
    md_path.write_text(report.markdown(benches, summary, meta, chart_name=output.name + ".png"))
    report.chart(output.with_suffix(".png"), benches, summary, meta)
    print(f"wrote {md_path}, {output.with_suffix('.png')}", flush=True)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # Unwind through the with-blocks: the server is stopped and temp files removed.
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def benchmark_server(installation: Installation) -> Iterator[PostgresServer]:
    with PostgresServer(installation, extra_conf=SERVER_CONF) as server:
        yield server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        document = json.loads(args.from_json.read_text())
        saved = [Bench(**fields) for fields in document["benches"]]
        write_report(args.output, saved, document["results"], document["meta"])
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("the benchmark pins server and bulk clients to CPUs 0 and 1")
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    all_benches = make_benches(args.quick)
    unknown = set(wanted) - {b.key for b in all_benches}
    if unknown:
        raise SystemExit(f"unknown workloads: {', '.join(sorted(unknown))}")
    benches = [b for b in all_benches if b.key in wanted]
    only = [c.strip() for c in args.clients.split(",") if c.strip()] or None
    installation = choose_installation(args.pg_version)
    print(f"PostgreSQL {installation.version_string} from {installation.bindir}", flush=True)
    started = time.monotonic()
    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle)
    busy_before = cpu_busy()
    with (
        tempfile.TemporaryDirectory(prefix="pgasync-bench-") as tmp,
        benchmark_server(installation) as server,
    ):
        stream_rows = max((b.n for b in benches if b.workload == "stream"), default=0)
        prewarmed = prepare_data(server, stream_rows, benches)
        affinity = pin_server(server, SERVER_CPU)
        runner = Runner(server, installation, Path(tmp), args.timeout, warmup=200)
        print(
            f"server pid {server.pid} and {len(affinity) - 1} children pinned to CPU "
            f"{SERVER_CPU}; port {server.port}",
            flush=True,
        )
        results = run_all(runner, benches, args.loops, args.rounds, only)
        meta = machine_info(server, runner)
        meta["server_affinity"] = {str(pid): cpus for pid, cpus in affinity.items()}
    meta["libraries"] = library_versions(results)
    meta["stream_table_prewarmed"] = prewarmed
    meta["cpu_busy_before"] = busy_before
    meta["cpu_busy_after"] = cpu_busy()
    loads = [
        float(run["loadavg_1min"])
        for per_loop in results.values()
        for per_client in per_loop.values()
        for runs in per_client.values()
        for run in runs
    ]
    meta["loadavg_1min"] = {
        "min": min(loads, default=0.0),
        "median": statistics.median(loads) if loads else 0.0,
        "max": max(loads, default=0.0),
    }
    meta["rounds"] = args.rounds
    meta["quick"] = args.quick
    meta["loops"] = args.loops
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["pinning"] = {
        "server": SERVER_CPU,
        "latency_clients": LATENCY_CPU,
        "bulk_clients": BULK_CPU,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "benches": [dataclasses.asdict(b) for b in benches],
        "results": results,
    }
    json_path = args.output.with_suffix(".json")
    json_path.write_text(json.dumps(document, indent=1) + "\n")
    write_report(args.output, benches, results, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
