"""`make demo` runs postgres_async.demo; its tour must work against every server."""

from __future__ import annotations

from typing import Any

import pytest

from postgres_async import demo


async def test_demo_tour(server_kwargs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    await demo.tour(server_kwargs)
    out = capsys.readouterr().out
    assert "query: SELECT 100000 rows" in out
    assert "copy in: COPY 50000 rows" in out
    assert "('50000', '0', 'row 9999\\twith a tab')" in out
    assert "notification from pid" in out
    assert "'hello from another session'" in out
    assert "closed: ClosedGracefully()" in out
