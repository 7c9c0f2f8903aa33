"""Drift: what changed on the target since the agent last left it, named by path and never by value."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from rrm.core.diff import diff
from rrm.wire.protocol import DriftRecord

MAX_PATHS = 20


def changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted paths whose values differ; a list counts as one value. Never the values: they may be secret."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        paths: list[str] = []
        for key in sorted({*before, *after}, key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in before or key not in after:
                paths.append(path)
            else:
                paths.extend(changed_paths(before[key], after[key], path))
        return paths
    return [] if before == after else [prefix or "."]


def drift_records(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[DriftRecord]:
    """`expected` is what the agent observed right after applying, `actual` what it observes now."""
    moved = diff(expected, actual)
    now = datetime.now(UTC)
    kinds: list[tuple[Mapping[str, Any], Literal["modified", "deleted", "created"]]] = [
        (moved.update, "modified"),
        (moved.create, "deleted"),
        (moved.delete, "created"),
    ]
    return [
        DriftRecord(
            resource=key,
            change=change,
            detected_at=now,
            fields=changed_paths(expected[key], actual[key])[:MAX_PATHS] if change == "modified" else [],
        )
        for group, change in kinds
        for key in group
    ]
