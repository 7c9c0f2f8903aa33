"""What the smoke test modules share: the size they run at, and what a well-formed latency looks like."""

from __future__ import annotations

from typing import Any

SMOKE_SIZE = 20
PERCENTILES = ("p50", "p90", "p99", "max")


def well_formed(latency: dict[str, Any], count: int = SMOKE_SIZE) -> None:
    assert latency["count"] >= count
    values = [latency[p] for p in PERCENTILES]
    assert all(isinstance(v, float) and v >= 0 for v in values), latency
    assert values == sorted(values), latency
