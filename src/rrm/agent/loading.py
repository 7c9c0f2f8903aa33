"""Whether the sidecar has loaded what was applied, and since when each component is as reported.

A written file is not a loaded component: daprd notices the change on a timer and then initialises the
component, which takes its own time, and it may refuse it; a rewritten component stays listed, as the old
instance, until daprd closes it, and a removed one until daprd notices its file is gone. After every apply
the loop follows the sidecar (`LoadWatch.observe` on each answer of `/v1.0/metadata`, asked on the schedule
of `LoadWatch.next_poll`) until it lists every applied component with the applied type and version and
none of the removed ones, or until the load deadline passes; the components still missing then count as
failed, and the removed ones still listed are reported as not unloaded. Between applies every heartbeat
observes the sidecar too, so a component it dropped (a restart) is noticed and followed again.

Where no single sidecar's list tells (Kubernetes: many sidecars, seen through their metrics), the target
answers a `SidecarsView` instead: its own judgement of each component, including those a sidecar refused
(failed at once, in daprd's words) and those no sidecar in reach can tell about (`loaded` unknown).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias

from rrm.wire.protocol import DesiredState, ResourceResult, SidecarReport, replace

NOT_LISTED = "the sidecar does not list it in /v1.0/metadata"
NOT_UNLOADED = "removed, but the sidecar still lists it in /v1.0/metadata after the load deadline"
WAITING = "written; waiting for the sidecar to load it"
RELOADING = "rewritten; waiting for the sidecar to reload it"
# daprd's metadata names no revision: a rewritten component still listed may be the old instance. It counts
# as reloaded once the sidecar was seen without it (daprd closes the old one before it initialises the new
# one), or once it is still listed this long after the write (daprd notices a change within about 200 ms).
RELOAD_NOTICE_SECONDS = 1.0
# The sidecar is asked this long after an apply (daprd notices a change after about 200 ms and then
# initialises it: a question sooner finds nothing new), and every LAST_POLL_SECONDS after that. After
# anything newly loaded or unloaded it is asked again AFTER_PROGRESS_SECONDS later (daprd initialises one
# component after the other), the gap doubling while nothing changes, up to LAST_POLL_SECONDS. That cap keeps
# the promise "Ready within 1 s of the sidecar loading it": a load is seen at most 0.5 s late, leaving the
# rest for the report. Each question costs the agent about as much CPU as the apply's own work.
FIRST_POLL_SECONDS = 0.5
AFTER_PROGRESS_SECONDS = 0.1
LAST_POLL_SECONDS = 0.5
# When only rewritten components are awaited (and those loaded already), no listing can tell before
# RELOAD_NOTICE_SECONDS that they were reloaded (unless daprd is caught without them): the first question
# waits until then, and this much more, so that timers that fire a little early do not make it ask too soon.
RELOAD_MARGIN_SECONDS = 0.05


@dataclass(frozen=True)
class Expected:
    """What the sidecar must list for a component: the applied type and version; `scopes` limit the app
    ids that load it (empty: every app)."""

    type: str
    version: str
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SidecarsView:
    """A target's judgement of the expected components over all the sidecars in scope, by name."""

    report: SidecarReport | None  # what the status report carries as the sidecar's view
    missing: Mapping[str, str]  # not loaded (yet), with why
    refused: Mapping[str, str] = field(default_factory=dict)  # a sidecar reported its init failed
    unknown: Mapping[str, str] = field(default_factory=dict)  # no sidecar in reach can tell


SidecarAnswer: TypeAlias = SidecarReport | SidecarsView | None


def wire_report(answer: SidecarAnswer) -> SidecarReport | None:
    """The sidecar report a status report carries for an answer."""
    return answer.report if isinstance(answer, SidecarsView) else answer


def expected_components(state: DesiredState, applied: Iterable[str]) -> dict[str, Expected]:
    """The components of `state` among `applied` (those written without error), by name."""
    names = set(applied)
    expected = {}
    for manifest in state.components:
        name = str((manifest.get("metadata") or {}).get("name", ""))
        if name in names:
            spec = manifest.get("spec") or {}
            scopes = tuple(str(s) for s in manifest.get("scopes") or [])
            expected[name] = Expected(str(spec.get("type", "")), str(spec.get("version", "")), scopes)
    return expected


def not_loaded(expected: Mapping[str, Expected], sidecar: SidecarReport) -> dict[str, str]:
    """The expected components a reachable sidecar does not list as applied, with why; components scoped
    to other app ids are not expected of it."""
    listed = {c.name: c for c in sidecar.components}
    missing = {}
    for name, want in expected.items():
        if not for_this_app(want, sidecar):
            continue
        found = listed.get(name)
        if found is None:
            missing[name] = NOT_LISTED
        elif (found.type, found.version) != (want.type, want.version):
            missing[name] = (
                f"the sidecar lists it as {found.type} {found.version}, not {want.type} {want.version}"
            )
    return missing


def for_this_app(want: Expected, sidecar: SidecarReport) -> bool:
    return not want.scopes or sidecar.app_id is None or sidecar.app_id in want.scopes


class LoadWatch:
    """The load state of the components of the last apply. Used from the event loop only."""

    def __init__(self, deadline_seconds: float, clock: Callable[[], float] = time.time) -> None:
        """`clock` tells the time for `since` (epoch seconds): the directors' time where it is known."""
        self.deadline_seconds = deadline_seconds
        self.clock = clock
        self.expected: dict[str, Expected] = {}
        self.missing: dict[str, str] = {}  # name → why it is not loaded (yet)
        self.reloading: set[str] = set()  # rewritten, and not yet seen closed or listed long enough
        self.lingering: set[str] = set()  # removed, and not yet seen unlisted by the sidecar
        self.overdue = False  # the deadline passed with components missing (failed) or lingering
        self.started = 0.0
        self.sidecar: SidecarReport | None = None
        self.view: SidecarsView | None = None
        self.refused: dict[str, str] = {}  # name → the sidecar's words (a `SidecarsView` tells)
        self.unknown: dict[str, str] = {}  # name → why no sidecar in reach can tell
        self._since: dict[str, tuple[tuple[str, bool | None], datetime]] = {}
        self._loaded_before: set[str] = set()  # loaded as now expected when the apply began
        self._poll_gap = FIRST_POLL_SECONDS

    def begin(
        self,
        expected: Mapping[str, Expected],
        now: float,
        rewritten: Iterable[str] = (),
        removed: Iterable[str] = (),
    ) -> None:
        """A new apply: every expected component counts as missing until the sidecar lists it, one that was
        `rewritten` until the listing can no longer be its old instance, and one `removed` (or removed by an
        earlier apply and still listed) as lingering until the sidecar no longer lists it."""
        self._loaded_before = {
            name
            for name, want in self.expected.items()
            if name not in self.missing and expected.get(name) == want
        }
        self.expected = dict(expected)
        self.missing = {name: NOT_LISTED for name in expected}
        self.reloading = set(rewritten) & set(expected)
        self.lingering = (self.lingering | set(removed)) - set(expected)
        self.refused, self.unknown = {}, {}
        self.rearm(now)

    def rearm(self, now: float) -> None:
        self.started, self.overdue = now, False
        self._poll_gap = FIRST_POLL_SECONDS

    @property
    def answered(self) -> bool:
        """Whether the last answer came from a sidecar (or a target's view of sidecars), so there is one."""
        return self.sidecar is not None or self.view is not None

    @property
    def following(self) -> bool:
        return bool(self.missing or self.lingering) and not self.overdue

    def remaining(self, now: float) -> float:
        return self.started + self.deadline_seconds - now

    def next_poll(self, now: float) -> float:
        """Seconds until the sidecar is to be asked again (never past the deadline); the gap after this one
        doubles, up to LAST_POLL_SECONDS, unless an answer shows progress first. While only rewritten
        components are awaited (besides those loaded as they are when the apply began, which the same answer
        confirms), not before their listing can tell (RELOAD_NOTICE_SECONDS after the apply): one question
        then settles a rewrite that daprd reloaded in time."""
        gap = self._poll_gap
        self._poll_gap = min(gap * 2, LAST_POLL_SECONDS)
        if (
            self.reloading
            and not self.lingering
            and self.missing.keys() <= self.reloading | self._loaded_before
        ):
            gap = max(gap, self.started + RELOAD_NOTICE_SECONDS + RELOAD_MARGIN_SECONDS - now)
        return max(0.0, min(gap, self.remaining(now)))

    def observe(self, answer: SidecarAnswer, now: float) -> tuple[bool, bool]:
        """Take in an answer of the sidecar: (whether anything was newly loaded or unloaded, whether a loaded
        component was dropped: its deadline starts again). Past the deadline, what is still missing or
        lingering is overdue."""
        self.sidecar = wire_report(answer)
        self.view = answer if isinstance(answer, SidecarsView) else None
        missing: dict[str, str] | None = None
        if self.view is not None:
            missing = self._judged_by_view(self.view)
        elif self.sidecar is not None and self.sidecar.reachable:
            missing = not_loaded(self.expected, self.sidecar)
            self.reloading -= set(missing)  # seen closed (or not as applied): its next listing is the new one
            if now - self.started >= RELOAD_NOTICE_SECONDS:
                self.reloading.clear()
            missing.update((name, RELOADING) for name in self.reloading)
        progressed = self._unlisted()
        dropped = False
        if missing is not None:
            progressed = progressed or any(name not in missing for name in self.missing)
            dropped = any(name not in self.missing for name in missing)
            self.missing = missing
        if dropped:
            self.rearm(now)
        elif progressed:
            self._poll_gap = AFTER_PROGRESS_SECONDS
        if (self.missing or self.lingering) and not self.overdue and self.remaining(now) <= 0:
            self.overdue = True
        return progressed, dropped

    def _unlisted(self) -> bool:
        """Drop the lingering components the sidecar no longer lists; whether there were any. Without a
        sidecar, or with a target's view (which judges only the components it placed), nothing tells of
        removed ones: they are let go."""
        if self.view is not None or self.sidecar is None:
            gone = set(self.lingering)
        elif self.sidecar is not None and self.sidecar.reachable:
            gone = self.lingering - {c.name for c in self.sidecar.components}
        else:
            return False
        self.lingering -= gone
        return bool(gone)

    def _judged_by_view(self, view: SidecarsView) -> dict[str, str]:
        """The view's missing components; refused and unknown ones are kept aside, no longer followed."""
        self.reloading.clear()
        self.refused = {n: why for n, why in view.refused.items() if n in self.expected}
        self.unknown = {n: why for n, why in view.unknown.items() if n in self.expected}
        return {n: why for n, why in view.missing.items() if n in self.expected}

    def results(self, resources: Iterable[ResourceResult]) -> list[ResourceResult]:
        """`resources` (the apply's results) with whether the sidecar loaded each, overdue ones failed, the
        removed ones the sidecar still lists past the deadline, and since when each has been in its state."""
        visible = self.sidecar is not None or self.view is not None
        judged = [self._judged(r, visible) for r in resources]
        if self.overdue and self.sidecar is not None and self.sidecar.reachable:
            judged += self._not_unloaded({r.name for r in judged})
        self._since = {r.name: self._since[r.name] for r in judged if r.name in self._since}
        return [self._stamped(r) for r in judged]

    def _judged(self, result: ResourceResult, visible: bool) -> ResourceResult:
        want = self.expected.get(result.name)
        if result.kind != "Component" or result.state != "applied" or want is None or not visible:
            return result
        if result.name in self.refused:
            return replace(result, state="failed", loaded=False, message=self.refused[result.name])
        if result.name in self.unknown:
            return replace(result, loaded=None, message=self.unknown[result.name])
        if self.sidecar is not None and not for_this_app(want, self.sidecar):
            message = f"scoped to {', '.join(want.scopes)}; this sidecar is {self.sidecar.app_id}"
            return replace(result, loaded=None, message=message)
        if result.name not in self.missing:
            return replace(result, loaded=True)
        why = self.missing[result.name]
        if why == NOT_LISTED and not self.overdue:
            why = WAITING
        if self.sidecar is not None and not self.sidecar.reachable:
            why = f"{why} (sidecar unreachable: {self.sidecar.error})"
        if not self.overdue:
            return replace(result, loaded=False, message=why)
        overdue = f"not loaded within the load deadline ({self.deadline_seconds:g} s): {why}"
        return replace(result, state="failed", loaded=False, message=overdue)

    def _not_unloaded(self, reported: set[str]) -> list[ResourceResult]:
        """A failed result for each removed component the sidecar still lists past the deadline: the
        control plane shows it (`Ready=False`, `NotUnloaded`) instead of taking the sidecar's list as true."""
        message = f"{NOT_UNLOADED} ({self.deadline_seconds:g} s)"
        return [
            ResourceResult(name=name, state="failed", loaded=True, message=message)
            for name in sorted(self.lingering - reported)
        ]

    def _stamped(self, result: ResourceResult) -> ResourceResult:
        key = (result.state, result.loaded)
        known = self._since.get(result.name)
        if known is None or known[0] != key:
            known = self._since[result.name] = (key, datetime.fromtimestamp(self.clock(), UTC))
        return replace(result, since=known[1])
