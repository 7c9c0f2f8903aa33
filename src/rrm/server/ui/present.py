"""Pure shaping of the admin API's views for the dashboard's pages: counts, ordering, diffs, countdowns.
No I/O."""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from rrm.core.rollouts import format_duration

CONDITION_TYPES = ("Connected", "Synced", "Ready")
STATUSES = ("True", "False", "Unknown")


def condition(runtime: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    found = next((c for c in runtime.get("conditions") or [] if c.get("type") == type_), None)
    return found or {"type": type_, "status": "Unknown", "reason": "", "message": ""}


@dataclass(frozen=True)
class Attention:
    """A runtime that is not Connected, Synced and Ready, with the first condition that fails."""

    runtime: Mapping[str, Any]
    failing: Mapping[str, Any]
    also: list[str]


@dataclass
class FleetSummary:
    total: int = 0
    by_condition: dict[str, Counter[str]] = field(default_factory=dict)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)  # kind → {"total", "Ready"}
    attention: list[Attention] = field(default_factory=list)
    components: int = 0
    components_not_ready: list[Mapping[str, Any]] = field(default_factory=list)


def fleet_summary(
    runtimes: Sequence[Mapping[str, Any]], components: Sequence[Mapping[str, Any]]
) -> FleetSummary:
    """Counts by condition and by kind; runtimes needing attention, the most severe first (not Connected,
    then not Synced, then not Ready), each with the reason; components not Ready on every runtime."""
    summary = FleetSummary(total=len(runtimes), components=len(components))
    summary.by_condition = {t: Counter() for t in CONDITION_TYPES}
    ranked: list[tuple[int, str, Attention]] = []
    for runtime in runtimes:
        statuses = {t: str(condition(runtime, t).get("status")) for t in CONDITION_TYPES}
        for type_, status in statuses.items():
            summary.by_condition[type_][status] += 1
        kind = summary.by_kind.setdefault(str(runtime.get("kind")), Counter())
        kind["total"] += 1
        kind["Ready"] += statuses["Ready"] == "True"
        failing = [t for t in CONDITION_TYPES if statuses[t] != "True"]
        if failing:
            first = failing[0]
            entry = Attention(runtime, condition(runtime, first), failing[1:])
            ranked.append((CONDITION_TYPES.index(first), str(runtime.get("name")), entry))
    summary.attention = [entry for _, _, entry in sorted(ranked, key=lambda r: (r[0], r[1]))]
    summary.by_kind = dict(sorted(summary.by_kind.items()))
    summary.components_not_ready = [c for c in components if c.get("ready", 0) < c.get("matched", 0)]
    return summary


@dataclass(frozen=True)
class ComponentResult:
    name: str
    type: str
    revision: str
    state: str
    message: str


def component_results(detail: Mapping[str, Any]) -> list[ComponentResult]:
    """Each desired component with the agent's result for it, then results for anything else it reported."""
    results = {(r.get("kind", "Component"), r.get("name")): r for r in detail.get("resources") or []}
    rows = []
    for desired in detail.get("desired_components") or []:
        result = results.pop(("Component", desired["name"]), None)
        revision = str(desired.get("revision", ""))
        if (
            result
            and result.get("revision") is not None
            and result.get("revision") != desired.get("revision")
        ):
            revision = f"{revision} (applied {result['revision']})"
        rows.append(
            ComponentResult(
                desired["name"],
                str(desired.get("type") or ""),
                revision,
                str(result.get("state")) if result else "not reported",
                str((result or {}).get("message") or ""),
            )
        )
    for (kind, name), result in results.items():
        rows.append(
            ComponentResult(
                f"{kind}/{name}", "", "", str(result.get("state")), str(result.get("message") or "")
            )
        )
    return rows


def manifest_yaml(manifest: Mapping[str, Any] | None) -> str:
    if manifest is None:
        return ""
    return yaml.safe_dump(dict(manifest), sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "file", "hunk", "add", "del", "ctx"
    text: str


def revision_diff(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, labels: tuple[str, str]
) -> list[DiffLine]:
    """The unified diff of two revisions' YAML (a deleted revision has no content)."""
    lines = difflib.unified_diff(
        manifest_yaml(old).splitlines(), manifest_yaml(new).splitlines(), *labels, lineterm=""
    )
    return [DiffLine(_diff_kind(line), line) for line in lines]


def _diff_kind(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "ctx")


def _moment(timestamp: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """`12s ago`, `3m ago`, … (the page's script keeps these current)."""
    if not timestamp:
        return "never"
    moment = _moment(timestamp)
    if moment is None:
        return timestamp
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def format_selector(selector: str | None) -> str:
    """No selector places a component nowhere; an empty one places it everywhere."""
    if selector is None:
        return "<none>"
    return selector or "<all>"


def seconds_until(timestamp: str | None, now: datetime | None = None) -> float | None:
    """How long until `timestamp` (0 once it passed); None without one."""
    moment = _moment(timestamp) if timestamp else None
    if moment is None:
        return None
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def countdown(seconds: float | None) -> str:
    """`1m30s`, `12s`: whole seconds, rounded up, so it reads `0s` only when the time is up (the page's
    script counts these down from what the server rendered, so the browser's clock does not matter)."""
    return "-" if seconds is None else format_duration(math.ceil(max(0.0, seconds)))


def took(seconds: float | None) -> str:
    """How long a finished stage took: tenths of a second while that matters, else as countdowns read."""
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 10 else format_duration(round(seconds))


@dataclass(frozen=True)
class WaveProgress:
    """A wave's runtimes by how far they got, for its progress bar (the rest have not started)."""

    total: int
    ready: int
    failed: int
    updating: int


def wave_progress(wave: Mapping[str, Any]) -> WaveProgress:
    states = Counter(str(r.get("state")) for r in wave.get("runtimes") or [])
    return WaveProgress(
        total=int(wave.get("total", 0)),
        ready=int(wave.get("ready", 0)),
        failed=int(wave.get("failed", 0)),
        updating=states["updating"],
    )
