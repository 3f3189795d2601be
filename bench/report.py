"""Summaries, the Markdown report and the chart of ``bench/run.py``'s measurements."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import Bench

Json = dict[str, Any]

#: What each client name does, for the notes under the tables.
CLIENT_NOTES = {
    "postgres_async": "postgres_async: `conn.query(sql, params, handle_row=f)` (values as str), "
    "`copy_in_rows` (text COPY) with a list of tuples, concurrent calls on one connection "
    "(FIFO, pipelined), `listen_to_notifications`",
    "postgres_async+binary": 'postgres_async+binary: `copy_in_rows(..., format="binary")`',
    "postgres_async+lock": "postgres_async+lock: the 10 tasks serialised by an asyncio.Lock, "
    "i.e. the same connection without pipelining",
    "postgres_async+cache": "postgres_async+cache: the same calls on a connection opened with "
    "`statement_cache_size=100` (each distinct SQL is Parsed once into a named statement, "
    "then only bound: what asyncpg does by default); without it every query Parses the "
    "unnamed statement, as API.md specifies",
    "postgres_async+cache+lock": "postgres_async+cache+lock: postgres_async+lock with the "
    "statement cache",
    "postgres_async+simple": "postgres_async+simple: workload 6 with the sender's NOTIFY "
    "sent by `simple_query` (one Query message, as asyncpg's `execute` without arguments "
    "sends it) instead of `query_expect_no_data` (Parse, Bind, Describe, Execute, Sync)",
    "asyncpg": "asyncpg: `fetchval` (prepared statement cache), `copy_records_to_table` "
    "(binary COPY), `add_listener`",
    "asyncpg+cursor": "asyncpg+cursor: `async for r in conn.cursor(sql)` inside a transaction "
    "(default prefetch 50)",
    "asyncpg+fetch": "asyncpg+fetch: `await conn.fetch(sql)`, then the callback per row "
    "(all rows held at once)",
    "asyncpg+lock": "asyncpg+lock / psycopg+lock: asyncpg and psycopg do not allow "
    "concurrent operations on one connection, so the tasks take an asyncio.Lock per query",
    "psycopg": "psycopg: `AsyncConnection` (autocommit), `execute` + `fetchone` (auto-prepared "
    "after 5 runs), `cursor.copy()` + `write_row` (text COPY)",
    "psycopg+stream": "psycopg+stream: `cursor.stream(sql)` (single-row mode)",
    "psycopg+notifies": "psycopg+notifies: a task iterating `conn.notifies()` (psycopg "
    "delivers notifications only while the connection is being read)",
    "pgbench": "pgbench: libpq, script `\\set x random(1, 1000000)` / `SELECT :x::int`, "
    "`-M prepared -j 1 -t N` with `-c 1` (workload 1) or `-c 10` (workload 4); its tps "
    "without initial connection time",
    "pgbench+extended": "pgbench+extended: the same with `-M extended` (workload 1): "
    "libpq binding the unnamed statement, Parsed again for every query, as "
    "postgres_async does without its statement cache",
    "psql": "psql: libpq, `\\copy (SELECT ...) TO '/dev/null'` (workload 2, text COPY OUT) "
    "or `\\copy bench_copy FROM 'file.tsv'` (workload 3); wall time of the process minus the "
    "median wall time of a psql that only connects",
    "wire": "wire: not a client but the floor for (1), in bench/clients.py: the same "
    "five messages per query as postgres_async, one future per reply, no state machine, "
    "checks or decoding beyond the one value; what Python, asyncio and the kernel cost "
    "by themselves",
    "wire+prepared": "wire+prepared: the same floor binding a statement prepared and "
    "described at connect (Bind, Execute, Sync per query, as postgres_async+cache sends)",
}


@dataclasses.dataclass
class Stats:
    ok: int
    errors: list[str]
    unit: str = ""
    median: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    peak_rss_mb: float | None = None
    rss_before_mb: float | None = None
    p99_us: float | None = None


@dataclasses.dataclass
class Table:
    bench: Bench
    loop: str
    clients: dict[str, Stats]
    asyncpg_ref: str | None
    c_ref: str | None

    def ratio(self, client: str, reference: str | None) -> float | None:
        """How many times better than ``reference`` (> 1 is better, for latency too)."""
        if reference is None or reference not in self.clients or client not in self.clients:
            return None
        mine, theirs = self.clients[client], self.clients[reference]
        if not mine.ok or not theirs.ok:
            return None
        if self.bench.higher_is_better:
            return mine.median / theirs.median
        return theirs.median / mine.median


Summary = dict[str, dict[str, Table]]


def summarise(
    benches: list[Bench], results: dict[str, dict[str, dict[str, list[Json]]]]
) -> Summary:
    summary: Summary = {}
    for bench in benches:
        for loop, per_client in results.get(bench.key, {}).items():
            stats = {name: _stats(runs) for name, runs in per_client.items()}
            asyncpg_names = [n for n in stats if n.split("+")[0] == "asyncpg" and stats[n].ok]
            pick = max if bench.higher_is_better else min
            asyncpg_ref = pick(asyncpg_names, key=lambda n: stats[n].median, default=None)
            c_ref = bench.c_reference if bench.c_reference in stats else None
            summary.setdefault(bench.key, {})[loop] = Table(bench, loop, stats, asyncpg_ref, c_ref)
    return summary


def _stats(runs: list[Json]) -> Stats:
    good = [r for r in runs if "error" not in r]
    errors = [str(r["error"]) for r in runs if "error" in r]
    stats = Stats(ok=len(good), errors=errors)
    if not good:
        return stats
    values = [float(r["value"]) for r in good]
    stats.unit = str(good[0]["unit"])
    stats.median = statistics.median(values)
    stats.low = min(values)
    stats.high = max(values)
    if all("maxrss_kb" in r for r in good):
        stats.peak_rss_mb = statistics.median(r["maxrss_kb"] for r in good) / 1024
    if all("rss_before_kb" in r for r in good):
        stats.rss_before_mb = statistics.median(r["rss_before_kb"] for r in good) / 1024
    if all("p99_us" in r for r in good):
        stats.p99_us = statistics.median(float(r["p99_us"]) for r in good)
    return stats


# ----------------------------------------------------------------------------- Markdown


def _num(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown(benches: list[Bench], summary: Summary, meta: Json, chart_name: str) -> str:
    out: list[str] = []
    add = out.append
    add("# postgres_async benchmark")
    add("")
    add(
        f"Generated by `bench/run.py` ({'`--quick`, ' if meta.get('quick') else ''}"
        f"{meta['rounds']} round(s), loops: {', '.join(meta['loops'])}) on {meta['date']} "
        f"in {meta['seconds']:.0f} s. Every figure is the median over the rounds, with the "
        "minimum and maximum; clients were interleaved (each round runs every client once, "
        "in an order rotating per round), each measurement in a fresh process."
    )
    add("")
    add(
        "Ratios are *times better than* the reference (> 1 is better): throughput divided "
        "by the reference's, or for latency the reference's divided by the client's. The "
        "asyncpg reference is the fastest asyncpg variant of that table (named in the "
        "heading); the C reference is libpq through pgbench or psql."
    )
    add("")
    load = meta["loadavg_1min"]
    if load["median"] > 2.0 or max(meta["cpu_busy_before"], meta["cpu_busy_after"]) > 0.3:
        add(
            f"**Caution:** other work was running on this {meta['cpus']}-CPU machine during "
            f"the run (1-minute load average {load['min']:.1f} to {load['max']:.1f}, median "
            f"{load['median']:.1f}, of which the benchmark itself is about 1-2; CPUs "
            f"{meta['cpu_busy_after']:.0%} busy right after it). Absolute figures are lower "
            "and noisier than on an idle machine. The interleaved rounds spread the "
            "disturbance over all clients, so the ratios hold up better than the absolute "
            "figures, but they are noisy too: read them with the min/max columns."
        )
        add("")
    add(f"![ratios to asyncpg]({chart_name})")
    add("")
    targets = _targets(summary)
    if targets:
        add("## Targets of issue 4")
        add("")
        add("| target | loop | measured | needed | met |")
        add("|---|---|---:|---:|:---:|")
        for name, loop, measured, needed, met in targets:
            add(f"| {name} | {loop} | {measured} | {needed} | {met} |")
        add("")
    add("## Results")
    for bench in benches:
        for loop, table in summary.get(bench.key, {}).items():
            add("")
            add(f"### {bench.title}: {loop}")
            add("")
            add(_table_md(table))
    add("")
    add("## Clients")
    add("")
    shown = {name for tables in summary.values() for t in tables.values() for name in t.clients}
    for name, note in CLIENT_NOTES.items():
        if name in shown:
            add(f"- {note}")
    add("")
    add(_method_md(meta))
    add("")
    add(_machine_md(meta))
    add("")
    return "\n".join(out)


def _table_md(table: Table) -> str:
    bench = table.bench
    unit = next((s.unit for s in table.clients.values() if s.ok), "")
    stream = bench.workload == "stream"
    notify = bench.workload == "notify"
    ref_name = table.asyncpg_ref or "none"
    head = ["client", f"median {unit}", "min", "max", f"x asyncpg ({ref_name})"]
    if table.c_ref:
        head.append(f"x C ({table.c_ref})")
    if stream:
        head += ["peak RSS MB", "RSS before query MB"]
    if notify:
        head.append("p99 us (median)")
    rows = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, stats in table.clients.items():
        if not stats.ok:
            cells = [f"**{name}**", "failed: " + "; ".join(sorted(set(stats.errors)))[:300]]
            cells += [""] * (len(head) - 2)
            rows.append("| " + " | ".join(cells) + " |")
            continue
        label = f"**{name}**" if name.startswith("postgres_async") else name
        if stats.errors:
            label += f" ({len(stats.errors)} failed)"
        cells = [
            label,
            _num(stats.median),
            _num(stats.low),
            _num(stats.high),
            _ratio(table.ratio(name, table.asyncpg_ref)),
        ]
        if table.c_ref:
            cells.append(_ratio(table.ratio(name, table.c_ref)))
        if stream:
            cells.append("-" if stats.peak_rss_mb is None else f"{stats.peak_rss_mb:.1f}")
            cells.append("-" if stats.rss_before_mb is None else f"{stats.rss_before_mb:.1f}")
        if notify:
            cells.append("-" if stats.p99_us is None else _num(stats.p99_us))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _targets(summary: Summary) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []

    def check(name: str, loop: str, value: float | None, needed: float, fmt: str = "x") -> None:
        if value is None:
            rows.append((name, loop, "not measured", f">= {needed:.2f}{fmt}", "no"))
        else:
            met = "yes" if value >= needed else "**no**"
            rows.append((name, loop, f"{value:.2f}{fmt}", f">= {needed:.2f}{fmt}", met))

    def table(key: str, loop: str) -> Table | None:
        return summary.get(key, {}).get(loop)

    # The statement cache is opt-in (API.md: the unnamed statement by default), so the
    # workloads it changes are judged both ways.
    cached = "postgres_async+cache"
    for loop in ("uvloop", "asyncio"):
        for key, label in (
            ("1", "(1) vs asyncpg"),
            ("2", "(2) vs asyncpg"),
            ("4", "(4) vs asyncpg"),
            ("5", "(5) vs asyncpg"),
        ):
            t = table(key, loop)
            if t is None:
                continue
            needed = 1.2 if loop == "uvloop" and key in ("1", "4", "5") else 1.0
            check(label, loop, t.ratio("postgres_async", t.asyncpg_ref), needed)
            if cached in t.clients:
                check(f"{label}, statement cache", loop, t.ratio(cached, t.asyncpg_ref), needed)
    for loop in ("uvloop", "asyncio"):
        t = table("3", loop)
        if t is not None:
            check("(3) text COPY vs psql \\copy", loop, t.ratio("postgres_async", "psql"), 0.9)
            binary = t.ratio("postgres_async+binary", "asyncpg")
            check("(3) binary COPY vs asyncpg copy_records_to_table", loop, binary, 1.0)
        big, small = table("2", loop), table("2s", loop)
        if big is not None and small is not None:
            b = big.clients.get("postgres_async")
            s = small.clients.get("postgres_async")
            if b and s and b.peak_rss_mb and s.peak_rss_mb:
                grow = b.peak_rss_mb / s.peak_rss_mb
                met = "yes" if grow <= 1.1 else "**no**"
                rows.append(
                    (
                        f"(2) peak RSS {big.bench.n:,} rows / {small.bench.n:,} rows",
                        loop,
                        f"{b.peak_rss_mb:.1f} / {s.peak_rss_mb:.1f} MB = {grow:.2f}",
                        "<= 1.10",
                        met,
                    )
                )
        t = table("1", loop)
        if t is not None:
            check("(1) vs pgbench", loop, t.ratio("postgres_async", "pgbench"), 1 / 1.5)
            if cached in t.clients:
                check("(1) vs pgbench, statement cache", loop, t.ratio(cached, "pgbench"), 1 / 1.5)
        # Pipelining spares round trips. With the client on the server's CPU a round trip
        # costs only CPU time, so both placements are reported.
        for key, where in (("5", ""), ("5o", ", client on the other CPU")):
            t = table(key, loop)
            if t is None:
                continue
            check(
                f"(5) pipelining vs the same connection locked{where}",
                loop,
                t.ratio("postgres_async", "postgres_async+lock"),
                3.0,
            )
            if cached in t.clients:
                check(
                    f"(5) pipelining vs locked, statement cache{where}",
                    loop,
                    t.ratio(cached, f"{cached}+lock"),
                    3.0,
                )
    return rows


def _method_md(meta: Json) -> str:
    pin = meta["pinning"]
    conf = ", ".join(f"{k}={v}" for k, v in meta["server_conf"].items())
    lines = [
        "## Method",
        "",
        f"- Server: a private `PostgresServer` (postgres_async.testing) with {conf}, on top "
        "of the harness defaults (fsync, synchronous_commit, full_page_writes off). Clients "
        "connect over TCP to 127.0.0.1.",
        f"- Pinning: the postmaster and its children on CPU {pin['server']} (`taskset -a -p` "
        "before any connection; backends inherit it). Latency workloads (1, 4, 5, 6) run the "
        f"client on CPU {pin['latency_clients']} too, so the figures are the client's own "
        "cost rather than cross-CPU wake-ups; bulk workloads (2, 3) and 5o (workload 5 "
        "where a round trip is a real wait, as to a server elsewhere) run the client on CPU "
        f"{pin['bulk_clients']}. Python clients pin themselves "
        "(`os.sched_setaffinity`), pgbench and psql run under `taskset -c`.",
        "- Each Python measurement is a fresh `python bench/clients.py` process: connect, "
        "warm up (200 queries for 1, 4, 5; 20 notifications for 6; a 1,000-row query for "
        "2), then time the workload. Peak RSS is that process's `ru_maxrss` (for psql, "
        "`os.wait4`'s).",
        "- (2) streams `SELECT id, name, label, amount, created FROM bench_rows LIMIT n` "
        "(int, text, text, numeric, timestamptz; the table is built before the measurements"
        + (
            ", and loaded into shared buffers with pg_prewarm"
            if meta.get("stream_table_prewarmed")
            else ""
        )
        + "); the callback counts the row and "
        "keeps nothing. postgres_async hands the values over as str, asyncpg and psycopg "
        "convert them to Python types.",
        "- (3) copies rows `(i, 'name-i', 'label ... of the benchmark row')` built as a list "
        "of tuples before timing into an UNLOGGED table truncated before each measurement; "
        "psql reads the same rows from a TSV file written beforehand.",
        "- (6) sends `NOTIFY bench_channel, 'i'` from a second connection, one at a time, "
        "waiting for the listener's callback before the next; latency from just before "
        "sending to the callback.",
    ]
    return "\n".join(lines)


def _machine_md(meta: Json) -> str:
    libs = meta.get("libraries", {})
    lines = [
        "## Machine",
        "",
        f"- CPU: {meta['cpu_model']}, {meta['cpus']} CPUs",
        f"- Kernel: {meta['kernel']}",
        f"- Python: {meta['python']}",
        f"- PostgreSQL: {meta['postgresql']} ({meta['postgresql_bindir']})",
        f"- C reference: {meta['pgbench']}; {meta['psql']}",
    ]
    for name, info in sorted(libs.items()):
        details = ", ".join(f"{k} {v}" for k, v in info.items())
        lines.append(f"- {name}: {details}")
    lines.append(
        f"- postgres_async checkout: {meta['git']}; "
        f"POSTGRES_ASYNC_IMPL={meta['postgres_async_impl_env']}"
    )
    load = meta["loadavg_1min"]
    lines.append(
        f"- Other load: all CPUs {meta['cpu_busy_before']:.0%} busy in the second before "
        f"the run and {meta['cpu_busy_after']:.0%} after it (the benchmark idle); 1-minute "
        f"load average at the start of each measurement {load['min']:.2f} to "
        f"{load['max']:.2f} (median {load['median']:.2f}; the benchmark itself accounts "
        "for about 1-2 of it). Other work on a 2-CPU machine lowers every client's figures."
    )
    lines.append(f"- Date: {meta['date']}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------- chart


def chart(path: Path, benches: list[Bench], summary: Summary, meta: Json) -> None:
    """Bar chart of every client's ratio to asyncpg, one panel per event loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loops: list[str] = list(meta["loops"])
    fig, axes = plt.subplots(len(loops), 1, figsize=(13, 4.6 * len(loops)), squeeze=False)
    palette = {
        "postgres_async": "#1f5fbf",
        "postgres_async+binary": "#6b9be0",
        "postgres_async+lock": "#a9c4ec",
        "postgres_async+cache": "#0b3d8c",
        "postgres_async+cache+lock": "#7fa3d9",
        "postgres_async+simple": "#0b3d8c",
        "asyncpg+cursor": "#3a9a3a",
        "asyncpg+fetch": "#3a9a3a",
        "psycopg": "#e08a1e",
        "psycopg+stream": "#e08a1e",
        "psycopg+lock": "#e08a1e",
        "psycopg+notifies": "#e08a1e",
        "pgbench": "#777777",
        "pgbench+extended": "#999999",
        "psql": "#777777",
        "wire": "#bbbbbb",
        "wire+prepared": "#bbbbbb",
    }
    for ax, loop in zip(axes[:, 0], loops, strict=True):
        xticks: list[float] = []
        xlabels: list[str] = []
        x = 0.0
        for bench in benches:
            table = summary.get(bench.key, {}).get(loop)
            if table is None:
                continue
            names = [n for n in table.clients if n != table.asyncpg_ref]
            start = x
            for name in names:
                ratio = table.ratio(name, table.asyncpg_ref)
                color = palette.get(name, "#999999")
                height = ratio if ratio is not None else 0.0
                ax.bar(x, height, width=0.8, color=color, edgecolor="black", linewidth=0.4)
                text = f"{ratio:.2f}" if ratio is not None else "n/a"
                ax.text(x, height, text, ha="center", va="bottom", fontsize=7)
                ax.text(
                    x,
                    -0.02,
                    name.replace("postgres_async", "pa"),
                    rotation=90,
                    ha="center",
                    va="top",
                    fontsize=7,
                    transform=ax.get_xaxis_transform(),
                )
                x += 1.0
            xticks.append((start + x - 1.0) / 2)
            xlabels.append(f"({bench.key}) {bench.workload}\nvs {table.asyncpg_ref}")
            x += 1.0
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks(xticks)
        ax.set_xticklabels(xlabels, fontsize=8)
        ax.tick_params(axis="x", pad=80, length=0)
        ax.set_ylabel("x asyncpg (higher is better)")
        ax.set_title(f"Ratio to asyncpg, {loop} loop (median of {meta['rounds']} rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
