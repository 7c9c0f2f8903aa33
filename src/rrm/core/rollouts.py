"""Progressive rollouts of a component's new revision: the policy, the wave plan, which revision each
runtime receives, how a runtime is doing with it, and the controller's step.

Pure: the control plane stores a rollout's state and feeds in what the agents reported; every decision is
taken here, so it can be tested without processes and replayed after a restart from the stored state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from rrm.core.conditions import Observed, connected, loaded, synced
from rrm.core.names import dns1123_label_error
from rrm.core.selectors import Selector, SelectorError, parse_selector, parse_stored_selector

POLICY_API_VERSION = "rrm.io/v1"
POLICY_KIND = "RolloutPolicy"
POLICY_ANNOTATION = "rrm.io/rollout-policy"

PAUSE = "pause"
ROLLBACK = "rollback"
ON_FAILURE = (PAUSE, ROLLBACK)

PROGRESSING = "progressing"
PAUSED = "paused"
SUCCEEDED = "succeeded"
ROLLED_BACK = "rolled-back"
ABORTED = "aborted"
SUPERSEDED = "superseded"
ACTIVE_STATES = (PROGRESSING, PAUSED)

# how one runtime is doing with the rollout
PENDING = "pending"  # its wave has not started
UPDATING = "updating"  # its wave started; not (yet) applied, Ready and loaded
READY = "ready"
FAILED = "failed"
NOT_LOADED = "applied; the sidecar has not loaded it"

REST_GROUP = "rest"
ALL_GROUP = "all"
MAX_NAMES_IN_MESSAGE = 10

SPEC_FIELDS = ("groups", "maxConcurrency", "minSuccessTime", "maxFailures", "progressDeadline", "onFailure")
GROUP_FIELDS = ("name", "selector")
DEFAULT_MAX_CONCURRENCY = "100%"
DEFAULT_MIN_SUCCESS_TIME = "0s"
DEFAULT_MAX_FAILURES = 0
DEFAULT_PROGRESS_DEADLINE = "10m"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PERCENT = re.compile(r"(\d+)%")


# --- the policy ----------------------------------------------------------------------------------------


class PolicyError(ValueError):
    """A RolloutPolicy that cannot be used; `problems` are (field path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems


@dataclass(frozen=True)
class Amount:
    """A count, or a percentage of some total rounded up."""

    value: int
    percent: bool = False

    def of(self, total: int) -> int:
        return math.ceil(total * self.value / 100) if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)

    def spec(self) -> int | str:
        return str(self) if self.percent else self.value


@dataclass(frozen=True)
class Group:
    name: str
    selector: str


@dataclass(frozen=True)
class RolloutPolicy:
    name: str
    groups: tuple[Group, ...] = ()
    max_concurrency: Amount = Amount(100, percent=True)
    min_success_seconds: float = 0.0
    max_failures: Amount = Amount(0)
    progress_deadline_seconds: float = 600.0
    on_failure: str = PAUSE

    def spec(self) -> dict[str, Any]:
        """The normalised `spec`: what is stored, and what `policy_from_spec` reads back."""
        return {
            "groups": [{"name": g.name, "selector": g.selector} for g in self.groups],
            "maxConcurrency": self.max_concurrency.spec(),
            "minSuccessTime": format_duration(self.min_success_seconds),
            "maxFailures": self.max_failures.spec(),
            "progressDeadline": format_duration(self.progress_deadline_seconds),
            "onFailure": self.on_failure,
        }


def parse_duration(value: object) -> float:
    """Seconds (to the millisecond) from a number of seconds or a Go-style duration: `30s`, `5m`, `1m30s`,
    `1.5s`, `250ms`."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1m30s")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = float(value.strip())
    elif isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value.strip()))
    else:
        raise ValueError(f"{value!r} is not a duration such as 30s, 5m or 1m30s")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must not be negative")
    return round(seconds, 3)


def format_duration(seconds: float) -> str:
    """`1h2m3s`, `45s`, `1.5s`, `0s`: the shortest form `parse_duration` reads back exactly."""
    whole, millis = divmod(round(seconds * 1000), 1000)
    parts = []
    for unit, size in (("h", 3600), ("m", 60)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    if millis:
        parts.append(f"{whole}.{millis:03d}".rstrip("0") + "s")
    elif whole or not parts:
        parts.append(f"{whole}s")
    return "".join(parts)


def parse_amount(value: object, *, minimum: int) -> Amount:
    """An integer ≥ `minimum`, or `N%` with N between `minimum` and 100."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return Amount(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_amount(int(text), minimum=minimum)
        match = _PERCENT.fullmatch(text)
        if match:
            percent = int(match.group(1))
            if not minimum <= percent <= 100:
                raise ValueError(f"a percentage must be between {minimum}% and 100%")
            return Amount(percent, percent=True)
    raise ValueError(f"{value!r} is neither a count nor a percentage such as 25%")


def validate_policy(document: Mapping[str, Any], *, stored: bool = False) -> RolloutPolicy:
    """A `rrm.io/v1` `RolloutPolicy` document; raises PolicyError naming every bad field. `stored`: read back
    from the store, its group selectors as `parse_stored_selector` reads them."""
    problems: list[tuple[str, str]] = []
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if (error := dns1123_label_error(name)) is not None:
        problems.append(("metadata.name", error))
    spec = document.get("spec", {})
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise PolicyError([*problems, ("spec", "must be a mapping")])
    for key in spec:
        if key not in SPEC_FIELDS:
            problems.append((f"spec.{key}", f"unknown field; known: {', '.join(SPEC_FIELDS)}"))

    def checked(key: str, default: object, parse: Any) -> Any:
        try:
            return parse(spec.get(key, default))
        except ValueError as exc:
            problems.append((f"spec.{key}", str(exc)))
            return None

    groups = _parse_groups(spec.get("groups"), problems, parse_stored_selector if stored else parse_selector)
    max_concurrency = checked("maxConcurrency", DEFAULT_MAX_CONCURRENCY, lambda v: parse_amount(v, minimum=1))
    min_success = checked("minSuccessTime", DEFAULT_MIN_SUCCESS_TIME, parse_duration)
    max_failures = checked("maxFailures", DEFAULT_MAX_FAILURES, lambda v: parse_amount(v, minimum=0))
    deadline = checked("progressDeadline", DEFAULT_PROGRESS_DEADLINE, parse_duration)
    if deadline == 0:
        problems.append(("spec.progressDeadline", "must be longer than 0s"))
    on_failure = spec.get("onFailure", PAUSE)
    if on_failure not in ON_FAILURE:
        problems.append(("spec.onFailure", f"must be one of {', '.join(ON_FAILURE)}, not {on_failure!r}"))
    if problems:
        raise PolicyError(problems)
    return RolloutPolicy(
        name=str(name),
        groups=groups,
        max_concurrency=max_concurrency,
        min_success_seconds=min_success,
        max_failures=max_failures,
        progress_deadline_seconds=deadline,
        on_failure=str(on_failure),
    )


def _parse_groups(
    value: object, problems: list[tuple[str, str]], parse: Callable[[str], Selector]
) -> tuple[Group, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(("spec.groups", "must be a list of {name, selector}"))
        return ()
    groups: list[Group] = []
    for index, item in enumerate(value):
        path = f"spec.groups[{index}]"
        if not isinstance(item, Mapping):
            problems.append((path, "must be a mapping with a selector"))
            continue
        for key in item:
            if key not in GROUP_FIELDS:
                problems.append((f"{path}.{key}", f"unknown field; known: {', '.join(GROUP_FIELDS)}"))
        selector = item.get("selector")
        if not isinstance(selector, str):
            problems.append((f"{path}.selector", "must be a label selector string such as canary=true"))
            continue
        try:
            parse(selector)
        except SelectorError as exc:
            problems.append((f"{path}.selector", str(exc)))
            continue
        name = item.get("name", f"group-{index + 1}")
        if (error := dns1123_label_error(name)) is not None:
            problems.append((f"{path}.name", error))
        elif name == REST_GROUP:
            problems.append((f"{path}.name", f"{REST_GROUP!r} names the runtimes no group selects"))
        elif any(g.name == name for g in groups):
            problems.append((f"{path}.name", f"group {name!r} appears twice"))
        else:
            groups.append(Group(str(name), selector))
    return tuple(groups)


def policy_from_spec(name: str, spec: Mapping[str, Any]) -> RolloutPolicy:
    """A policy stored earlier (normalised by `RolloutPolicy.spec`)."""
    return validate_policy({"metadata": {"name": name}, "spec": spec}, stored=True)


def policy_name_of(manifest: Mapping[str, Any]) -> str | None:
    """The policy a component names, or None; a non-string annotation is returned as "" (invalid)."""
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    if POLICY_ANNOTATION not in annotations:
        return None
    value = annotations[POLICY_ANNOTATION]
    return value if isinstance(value, str) else ""


# --- planning ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A runtime the rollout concerns."""

    id: str
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Wave:
    group: str
    runtimes: tuple[str, ...]  # runtime ids


def select_targets(
    runtimes: Iterable[Target], selectors: Iterable[str | None], also: Iterable[str] = ()
) -> list[Target]:
    """Runtimes matched by any of the selectors (the revisions involved) or listed in `also`, by name."""
    compiled: list[Selector] = [parse_stored_selector(s) for s in selectors if s is not None]
    extra = set(also)
    return sorted(
        (r for r in runtimes if r.id in extra or any(s.matches(r.labels) for s in compiled)),
        key=lambda r: r.name,
    )


def plan_waves(targets: Sequence[Target], policy: RolloutPolicy) -> tuple[Wave, ...]:
    """Targets by name into the policy's groups (first match wins; the rest form a last group), each group
    cut into waves of `maxConcurrency`, a percentage being of the targets not yet in an earlier wave."""
    compiled = [parse_stored_selector(g.selector) for g in policy.groups]
    members: list[list[str]] = [[] for _ in range(len(compiled) + 1)]
    for target in sorted(targets, key=lambda t: t.name):
        index = next((i for i, s in enumerate(compiled) if s.matches(target.labels)), len(compiled))
        members[index].append(target.id)
    names = [g.name for g in policy.groups] + [REST_GROUP if policy.groups else ALL_GROUP]
    waves: list[Wave] = []
    remaining = len(targets)
    for name, ids in zip(names, members, strict=True):
        position = 0
        while position < len(ids):
            size = min(len(ids) - position, max(1, policy.max_concurrency.of(remaining)))
            waves.append(Wave(name, tuple(ids[position : position + size])))
            position += size
            remaining -= size
    return tuple(waves)


# --- which revision each runtime receives --------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """What a rollout hands out: `to_revision` once a runtime's wave started, else what it is pinned to
    (the revision a superseded rollout was giving it), else `from_revision`. None means no component."""

    from_revision: int | None
    to_revision: int
    started: frozenset[str]
    pinned: Mapping[str, int | None] = field(default_factory=dict)

    def revision_for(self, runtime_id: str) -> int | None:
        if runtime_id in self.started:
            return self.to_revision
        if runtime_id in self.pinned:
            return self.pinned[runtime_id]
        return self.from_revision

    def revisions(self) -> set[int]:
        """Every revision this assignment may hand out."""
        found = {self.to_revision, *(r for r in self.pinned.values() if r is not None)}
        if self.from_revision is not None:
            found.add(self.from_revision)
        return found


def started_runtimes(waves: Sequence[Wave], started: int) -> frozenset[str]:
    return frozenset(r for wave in waves[:started] for r in wave.runtimes)


# --- how one runtime is doing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    state: str  # UPDATING | READY | FAILED
    message: str


def runtime_health(
    observed: Observed | None,
    desired_hash: str | None,
    component: str,
    delivered: bool,
    now: datetime,
    grace: float,
) -> Health:
    """Ready for the rollout: Connected, Synced with a desired state that holds the rollout's choice for it,
    the component applied, and loaded where the agent sees the sidecar. Failed: the agent applied that
    state and reports the component failed. Anything else is still updating."""
    online = connected(observed, now, grace)
    if online.status != "True" or observed is None:
        return Health(UPDATING, f"offline: {online.message}")
    sync = synced(observed, desired_hash or "")
    if sync.status != "True":
        return Health(UPDATING, f"not applied yet: {sync.message}")
    if not delivered:
        return Health(READY, "applied; the component is not placed on this runtime")
    result = next(
        (
            r
            for r in observed.report.get("resources", [])
            if r.get("name") == component and r.get("kind", "Component") == "Component"
        ),
        None,
    )
    if result is None:
        return Health(UPDATING, "the agent reported no result for the component")
    sidecar = observed.report.get("sidecar")
    is_loaded = loaded(result, sidecar, component)
    if result.get("state") == "failed":
        why = str(result.get("message") or "the agent reports the component failed")
        return Health(FAILED, f"{NOT_LOADED}: {why}" if is_loaded is False else why)
    if result.get("state") != "applied":
        return Health(UPDATING, f"the component is {result.get('state')}")
    if sidecar and not sidecar.get("reachable"):
        return Health(UPDATING, f"sidecar unreachable: {sidecar.get('error') or 'no answer'}")
    if is_loaded is False:
        return Health(UPDATING, NOT_LOADED)
    return Health(READY, "applied and loaded by the sidecar" if is_loaded else "applied")


# --- the controller ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """The part of a rollout the controller and the operator change."""

    state: str
    wave_starts: tuple[datetime, ...] = ()  # when each started wave started; its length = waves started
    deadline_from: datetime | None = None  # the current wave's start, or the last resume
    ready_since: datetime | None = None  # since when every runtime of the current wave is Ready (bake)
    failures: Mapping[str, str] = field(default_factory=dict)  # runtime id → why it counts as failed
    message: str = ""

    @property
    def started(self) -> int:
        return len(self.wave_starts)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True)
class Event:
    type: str
    message: str


@dataclass(frozen=True)
class Step:
    progress: Progress
    events: tuple[Event, ...] = ()


class NotAllowed(Exception):
    """An operator action that does not apply to the rollout's state."""


def start(waves: Sequence[Wave], now: datetime, names: Mapping[str, str] | None = None) -> Step:
    """A new rollout with its first wave started; with nothing to update it has succeeded already."""
    if not waves:
        return Step(Progress(SUCCEEDED, message="no runtime to update"))
    progress = Progress(PROGRESSING, wave_starts=(now,), deadline_from=now)
    return Step(progress, (_wave_started(waves, 0, names or {}),))


def step(
    waves: Sequence[Wave],
    policy: RolloutPolicy,
    progress: Progress,
    health: Mapping[str, Health],
    now: datetime,
    names: Mapping[str, str] | None = None,
) -> Step:
    """One controller pass over a progressing rollout.

    `health` holds the runtimes of the started waves that still exist. Failures (a runtime reporting the
    component failed; a runtime of the current wave not Ready at its deadline) are recorded once each and
    count over the whole rollout. Beyond `maxFailures` (a percentage of all targets) the rollout pauses or
    rolls back. Else, once every runtime of the current wave that has not failed has been Ready for
    `minSuccessTime`, the next wave starts, or after the last one the rollout has succeeded.
    """
    if progress.state != PROGRESSING or not progress.wave_starts:
        return Step(progress)
    names = names or {}
    failures, events = _new_failures(waves, policy, progress, health, now, names)
    allowed = policy.max_failures.of(sum(len(w.runtimes) for w in waves))
    if len(failures) > allowed:
        why = f"{len(failures)} runtime(s) failed, more than maxFailures {policy.max_failures} ({allowed})"
        if policy.on_failure == ROLLBACK:
            done = replace(progress, state=ROLLED_BACK, failures=failures, ready_since=None, message=why)
            return Step(done, (*events, Event("RolloutRolledBack", f"{why}: rolling back")))
        paused = replace(progress, state=PAUSED, failures=failures, ready_since=None, message=why)
        return Step(paused, (*events, Event("RolloutPaused", f"{why}: paused")))
    return _advance(waves, policy, replace(progress, failures=failures), health, now, names, events)


def _new_failures(
    waves: Sequence[Wave],
    policy: RolloutPolicy,
    progress: Progress,
    health: Mapping[str, Health],
    now: datetime,
    names: Mapping[str, str],
) -> tuple[dict[str, str], list[Event]]:
    """The rollout's failures with those seen in this pass added, and an event for each new one."""
    events: list[Event] = []
    failures = dict(progress.failures)
    for wave in waves[: progress.started]:
        for runtime_id in wave.runtimes:
            seen = health.get(runtime_id)
            if seen is not None and seen.state == FAILED and runtime_id not in failures:
                failures[runtime_id] = seen.message
                events.append(_runtime_failed(runtime_id, seen.message, names))
    deadline = timedelta(seconds=policy.progress_deadline_seconds)
    if progress.deadline_from is not None and now >= progress.deadline_from + deadline:
        for runtime_id in waves[progress.started - 1].runtimes:
            seen = health.get(runtime_id)
            if seen is None or seen.state == READY or runtime_id in failures:
                continue
            message = (
                f"not Ready within the progress deadline "
                f"({format_duration(policy.progress_deadline_seconds)}): {seen.message}"
            )
            failures[runtime_id] = message
            events.append(_runtime_failed(runtime_id, message, names))
    return failures, events


def _advance(
    waves: Sequence[Wave],
    policy: RolloutPolicy,
    progress: Progress,
    health: Mapping[str, Health],
    now: datetime,
    names: Mapping[str, str],
    events: list[Event],
) -> Step:
    """Within maxFailures: bake the current wave once it is Ready, then start the next or succeed."""
    failures = progress.failures
    index = progress.started - 1
    current = waves[index]
    waiting = [r for r in current.runtimes if r in health and r not in failures and health[r].state != READY]
    label = _wave_label(waves, index)
    if waiting:
        if progress.ready_since is not None:
            events.append(
                Event("RolloutWaveNotReady", f"{label}: {_names(waiting, names)} not Ready; bake restarts")
            )
        return Step(replace(progress, ready_since=None), tuple(events))
    ready_since = progress.ready_since
    if ready_since is None:
        ready_since = now
        bake = format_duration(policy.min_success_seconds)
        events.append(Event("RolloutWaveReady", f"{label}: every runtime Ready; baking for {bake}"))
    progress = replace(progress, ready_since=ready_since)
    if (now - ready_since).total_seconds() < policy.min_success_seconds:
        return Step(progress, tuple(events))
    if progress.started == len(waves):
        done = replace(progress, state=SUCCEEDED, message=f"all {len(waves)} wave(s) Ready and baked")
        return Step(done, (*events, Event("RolloutSucceeded", done.message)))
    progress = replace(
        progress, wave_starts=(*progress.wave_starts, now), deadline_from=now, ready_since=None
    )
    return Step(progress, (*events, _wave_started(waves, progress.started - 1, names)))


def pause(progress: Progress) -> Step:
    if progress.state != PROGRESSING:
        raise NotAllowed(f"only a progressing rollout can be paused; this one is {progress.state}")
    message = "paused by an operator"
    return Step(replace(progress, state=PAUSED, message=message), (Event("RolloutPaused", message),))


def resume(progress: Progress, now: datetime) -> Step:
    """Back to progressing: the recorded failures are cleared (an operator looked at them) and the current
    wave's deadline counts from now; a runtime still failing fails again."""
    if progress.state != PAUSED:
        raise NotAllowed(f"only a paused rollout can be resumed; this one is {progress.state}")
    resumed = replace(
        progress, state=PROGRESSING, failures={}, deadline_from=now, ready_since=None, message=""
    )
    return Step(resumed, (Event("RolloutResumed", "resumed by an operator"),))


def promote(progress: Progress) -> Step:
    """Skip the remaining bake and waves: every runtime gets the new revision now."""
    if not progress.active:
        raise NotAllowed(f"only an active rollout can be promoted; this one is {progress.state}")
    message = "promoted by an operator: every runtime gets the new revision now"
    return Step(replace(progress, state=SUCCEEDED, message=message), (Event("RolloutPromoted", message),))


def abort(progress: Progress) -> Step:
    """Like an automatic rollback, on an operator's word (Argo Rollouts' abort)."""
    if not progress.active:
        raise NotAllowed(f"only an active rollout can be aborted; this one is {progress.state}")
    message = "aborted by an operator: rolling back"
    return Step(replace(progress, state=ABORTED, message=message), (Event("RolloutAborted", message),))


def supersede(progress: Progress, message: str) -> Step:
    return Step(replace(progress, state=SUPERSEDED, message=message), (Event("RolloutSuperseded", message),))


def _wave_label(waves: Sequence[Wave], index: int) -> str:
    return f"wave {index + 1}/{len(waves)} ({waves[index].group})"


def _wave_started(waves: Sequence[Wave], index: int, names: Mapping[str, str]) -> Event:
    wave = waves[index]
    return Event("RolloutWaveStarted", f"{_wave_label(waves, index)}: {_names(wave.runtimes, names)}")


def _runtime_failed(runtime_id: str, message: str, names: Mapping[str, str]) -> Event:
    return Event("RolloutRuntimeFailed", f"{names.get(runtime_id, runtime_id)}: {message}")


def _names(runtime_ids: Sequence[str], names: Mapping[str, str]) -> str:
    shown = [names.get(r, r) for r in runtime_ids[:MAX_NAMES_IN_MESSAGE]]
    more = len(runtime_ids) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
