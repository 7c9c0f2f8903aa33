"""Parsing of command-line values that typer cannot check by itself."""

from __future__ import annotations

import typer

from rrm.core.settings import duration_seconds


def parse_duration(text: str) -> int:
    """Seconds from `3600`, `45s`, `30m`, `1h` or `7d`."""
    try:
        return duration_seconds(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def parse_label_changes(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """`k=v` sets, `k-` removes; the domain rule lives in `rrm.core.labels`."""
    from rrm.core.labels import parse_label_args

    try:
        return parse_label_args(args)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def parse_labels(args: list[str]) -> dict[str, str]:
    """Only `k=v`: used where there is nothing to remove yet."""
    set_labels, removals = parse_label_changes(args)
    if removals:
        raise typer.BadParameter(f"{removals[0]}- removes a label; use k=v here")
    return set_labels
