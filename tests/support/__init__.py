"""Test support code shared by the suites (importable as ``support`` under pytest).

``support.fake_server`` is a scripted fake PostgreSQL server for what a real server will
not do; the helpers here are small conveniences for tests that talk to a real one.
"""

from __future__ import annotations

from postgres_async import Connection


async def fetch_rows(
    conn: Connection, sql: str, parameters: list[object] | None = None
) -> list[tuple[str | None, ...]]:
    """Run ``sql`` and return its rows as tuples of text values (None for NULL)."""
    rows: list[tuple[str | None, ...]] = []

    def handle_row(_names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
        rows.append(values)

    await conn.query(sql, parameters, handle_row=handle_row)
    return rows


async def fetch_value(
    conn: Connection, sql: str, parameters: list[object] | None = None
) -> str | None:
    """The single value of a one-row, one-column result."""
    rows = await fetch_rows(conn, sql, parameters)
    assert len(rows) == 1, f"expected one row from {sql!r}, got {rows!r}"
    assert len(rows[0]) == 1, f"expected one column from {sql!r}, got {rows!r}"
    return rows[0][0]
