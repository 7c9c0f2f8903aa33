"""The sync loop: cache first without pruning, prune once confirmed, drift put back, 401 keeps all."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import rrm
from rrm.agent import AgentConfig, loop, run_agent
from rrm.agent.cache import DesiredStateCache
from rrm.agent.client import DirectorClient, DirectorClock, StreamOpened, Unauthorized
from rrm.agent.loading import NOT_UNLOADED, WAITING
from rrm.agent.loop import Agent
from rrm.agent.targets.selfhosted import SelfHostedTarget
from rrm.core.hashing import state_hash
from rrm.wire.protocol import DesiredState, LoadedComponent, SidecarReport, StatusReport


def component(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
    }


def make_state(*names: str) -> DesiredState:
    components = [component(n) for n in names]
    return DesiredState(hash=state_hash(components, []), components=components)


class FakeDirector:
    """Answers fetches from a script (a state, None for 304, or an exception); blocks when the script ends."""

    def __init__(self, *answers: DesiredState | Exception | None) -> None:
        self.answers = list(answers)
        self.etags: list[str | None] = []
        self.waits: list[float] = []
        self.reports: list[StatusReport] = []
        self.clock = DirectorClock()
        self.heard_at = -math.inf  # never heard from: every heartbeat reports

    async def fetch_desired(self, etag: str | None, wait: float) -> DesiredState | None:
        self.etags.append(etag)
        self.waits.append(wait)
        if not self.answers:
            await asyncio.Event().wait()
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def watch_desired(
        self, etag: str | None, first_frame_timeout: float
    ) -> AsyncIterator[DesiredState]:
        """A watch stream from the same script: one answer, a state as its one frame, then the stream ends."""
        state = await self.fetch_desired(etag, math.inf)
        if state is not None:
            yield state

    async def report_status(self, report: StatusReport) -> None:
        self.reports.append(report)


def make_agent(tmp_path: Path, director: FakeDirector, heartbeat: float = 15.0) -> Agent:
    target = SelfHostedTarget(tmp_path / "resources", tmp_path / "state")
    target.prepare()
    client: DirectorClient = director  # type: ignore[assignment]
    return Agent(client, target, DesiredStateCache(tmp_path / "state"), heartbeat_interval=heartbeat)


def files(agent: Agent) -> list[str]:
    assert isinstance(agent.target, SelfHostedTarget)
    return sorted(p.name for p in agent.target.resources_path.glob("*.yaml"))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def run_with(agent_work: Awaitable[None], check: Callable[[], Awaitable[None]]) -> None:
    async def scenario() -> None:
        task = asyncio.ensure_future(agent_work)
        try:
            await check()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_cached_state_is_applied_without_pruning_then_pruned_once_confirmed(tmp_path: Path) -> None:
    director = FakeDirector(None, None)
    agent = make_agent(tmp_path, director)
    agent.cache.save(make_state("a"))
    (tmp_path / "resources" / "rrm-stale.yaml").write_text(yaml.safe_dump(component("stale")))

    asyncio.run(agent.start_from_cache())
    assert files(agent) == ["rrm-a.yaml", "rrm-stale.yaml"]
    report = asyncio.run(agent.status_report())
    assert report.applied_hash is None, "a state was reported applied while a file outside it remained"
    assert "1 object(s) of an earlier state are still in place" in report.message

    asyncio.run(agent.sync_once())
    assert files(agent) == ["rrm-a.yaml"]
    assert asyncio.run(agent.status_report()).applied_hash == make_state("a").hash
    asyncio.run(agent.sync_once())
    assert director.waits == [0.0, agent.wait_seconds], "the first request must not wait, later ones do"


def test_fetched_state_is_cached_applied_and_pruned(tmp_path: Path) -> None:
    director = FakeDirector(make_state("a", "b"), make_state("b"))
    agent = make_agent(tmp_path, director)

    asyncio.run(agent.sync_once())
    assert files(agent) == ["rrm-a.yaml", "rrm-b.yaml"]
    asyncio.run(agent.sync_once())

    assert files(agent) == ["rrm-b.yaml"]
    assert director.etags == [None, make_state("a", "b").hash]
    assert agent.cache.load() == make_state("b")
    assert agent.applied_hash == make_state("b").hash


def test_drift_is_put_back_and_recorded(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, FakeDirector(make_state("a", "b"), None))
    asyncio.run(agent.sync_once())
    resources = tmp_path / "resources"
    (resources / "rrm-a.yaml").unlink()
    (resources / "rrm-b.yaml").write_text(yaml.safe_dump({**component("b"), "spec": {"type": "x"}}))
    (resources / "rrm-intruder.yaml").write_text(yaml.safe_dump(component("intruder")))

    asyncio.run(agent.sync_once())

    assert files(agent) == ["rrm-a.yaml", "rrm-b.yaml"]
    assert yaml.safe_load((resources / "rrm-b.yaml").read_text())["spec"]["type"] == "state.in-memory"
    assert sorted((d.resource, d.change) for d in agent.drift) == [
        ("rrm-a.yaml", "deleted"),
        ("rrm-b.yaml", "modified"),
        ("rrm-intruder.yaml", "created"),
    ]


def test_unauthorized_keeps_everything_and_keeps_retrying(tmp_path: Path) -> None:
    director = FakeDirector(make_state("a"), Unauthorized("401 revoked"), Unauthorized("401 revoked"))
    agent = make_agent(tmp_path, director)

    async def check() -> None:
        await until(lambda: len(director.etags) >= 4)

    run_with(agent.sync_forever(), check)
    assert files(agent) == ["rrm-a.yaml"]
    assert agent.cache.load() == make_state("a")


def test_heartbeat_reports_applied_state_at_once_and_on_interval(tmp_path: Path) -> None:
    director = FakeDirector(make_state("a"))
    agent = make_agent(tmp_path, director, heartbeat=0.05)
    asyncio.run(agent.sync_once())

    async def check() -> None:
        await until(lambda: len(director.reports) >= 3)

    run_with(agent.heartbeat_forever(), check)
    report = director.reports[0]
    assert report.applied_hash == make_state("a").hash
    assert [(r.name, r.state) for r in report.resources] == [("a", "applied")]
    assert report.target == "selfhosted"
    assert report.agent_version == rrm.__version__
    assert report.heartbeat_interval == 0.05
    assert report.sidecar is None


class ScriptedSidecar(SelfHostedTarget):
    """A self-hosted target whose daprd lists component `a` from its `loaded_after`-th answer on."""

    def __init__(self, tmp_path: Path, loaded_after: int | None) -> None:
        super().__init__(tmp_path / "resources", tmp_path / "state")
        self.loaded_after = loaded_after
        self.asked = 0

    async def sidecar_report(self) -> SidecarReport:
        self.asked += 1
        listed = self.loaded_after is not None and self.asked >= self.loaded_after
        loaded = [LoadedComponent(name="a", type="state.in-memory", version="v1")] if listed else []
        return SidecarReport(reachable=True, app_id="app", components=loaded)


def follow(tmp_path: Path, loaded_after: int | None, load_deadline: float) -> list[StatusReport]:
    """Apply state `a`, then run the heartbeat (60 s) until a report shows `a` loaded or failed."""
    director = FakeDirector(make_state("a"))
    target = ScriptedSidecar(tmp_path, loaded_after)
    target.prepare()
    client: DirectorClient = director  # type: ignore[assignment]
    agent = Agent(client, target, DesiredStateCache(tmp_path / "state"), load_deadline=load_deadline)

    def settled() -> bool:
        return any(r.loaded is True or r.state == "failed" for rep in director.reports for r in rep.resources)

    async def work() -> None:
        await agent.sync_once()
        await agent.heartbeat_forever()

    run_with(work(), lambda: until(settled))
    return director.reports


def test_the_agent_follows_the_sidecar_and_reports_at_once_when_it_has_loaded(tmp_path: Path) -> None:
    reports = follow(tmp_path, loaded_after=4, load_deadline=60)

    first, last = reports[0].resources[0], reports[-1].resources[0]
    assert (first.state, first.loaded, first.message) == ("applied", False, WAITING)
    assert (last.state, last.loaded) == ("applied", True)
    assert last.since is not None and first.since is not None and last.since > first.since


def test_what_the_sidecar_has_not_loaded_at_the_deadline_is_reported_failed(tmp_path: Path) -> None:
    reports = follow(tmp_path, loaded_after=None, load_deadline=0.5)

    last = reports[-1].resources[0]
    assert (last.state, last.loaded) == ("failed", False)
    assert last.message.startswith("not loaded within the load deadline (0.5 s)")


def test_without_token_or_identity_the_agent_exits_with_2(tmp_path: Path) -> None:
    config = AgentConfig(
        director_urls=["http://127.0.0.1:9"], state_dir=tmp_path / "state", resources_path=tmp_path / "r"
    )
    assert run_agent(config) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"target": "mainframe"},
        {"resources_path": None},
        {"heartbeat_interval": 0},
        {"load_deadline": 0},
        {"director_urls": []},
    ],
)
def test_configuration_errors_exit_with_2(tmp_path: Path, change: dict[str, Any]) -> None:
    config = AgentConfig(
        director_urls=["http://127.0.0.1:9"],
        state_dir=tmp_path / "state",
        resources_path=tmp_path / "r",
        token="t",
    )
    for key, value in change.items():
        setattr(config, key, value)
    assert run_agent(config) == 2


@pytest.mark.parametrize(("wait", "reported"), [(0.0, 20.0), (5.0, 5.0), (60.0, 20.0)])
def test_the_reported_heartbeat_interval_is_how_often_contact_comes(
    tmp_path: Path, wait: float, reported: float
) -> None:
    """On the long-poll, each poll is contact: its wait bounds the interval, a wait of 0 promises nothing."""
    agent = make_agent(tmp_path, FakeDirector(make_state("a")), heartbeat=20.0)
    agent.wait_seconds = wait
    asyncio.run(agent.sync_once())
    assert asyncio.run(agent.status_report()).heartbeat_interval == reported


def test_on_the_watch_stream_the_keep_alive_bounds_the_reported_interval_and_a_longer_one_is_reported_at_once(
    tmp_path: Path,
) -> None:
    """An agent whose long-poll wait is short still reports the stream's keep-alive while it watches: with
    the wait's 5 s the control plane would take it for disconnected between keep-alives 30 s apart."""
    agent = make_agent(tmp_path, FakeDirector(make_state("a")), heartbeat=60.0)
    agent.wait_seconds = 5.0
    asyncio.run(agent.sync_once())
    agent._report_now.clear()

    async def watch_opened(keep_alive: float) -> None:
        agent.client.watch_desired = lambda etag, timeout: _opened(keep_alive)  # type: ignore[method-assign]
        await agent._read_stream(None)

    asyncio.run(watch_opened(30.0))
    assert asyncio.run(agent.status_report()).heartbeat_interval == 30.0
    assert agent._report_now.is_set()  # longer than the 5 s reported before: the control plane learns it now
    agent._report_now.clear()
    asyncio.run(watch_opened(10.0))
    assert asyncio.run(agent.status_report()).heartbeat_interval == 10.0
    assert not agent._report_now.is_set()  # shorter: contact comes sooner than promised, nothing to hurry


async def _opened(keep_alive: float) -> AsyncIterator[StreamOpened]:
    yield StreamOpened(0.0, keep_alive)


class UnloadingSidecar(SelfHostedTarget):
    """A self-hosted target whose daprd lists `a`, and `b` while its file is there and for `lag` more
    answers after it is gone (None: for ever)."""

    def __init__(self, tmp_path: Path, lag: int | None) -> None:
        super().__init__(tmp_path / "resources", tmp_path / "state", dapr_http_port=1)
        self.lag = lag
        self.answers_without_file = 0

    async def sidecar_report(self) -> SidecarReport:
        if (self.resources_path / "rrm-b.yaml").exists():
            self.answers_without_file = 0
        else:
            self.answers_without_file += 1
        listed = ["a"]
        if self.lag is None or self.answers_without_file <= self.lag:
            listed.append("b")
        components = [LoadedComponent(name=n, type="state.in-memory", version="v1") for n in listed]
        return SidecarReport(reachable=True, app_id="app", components=components)


def delete_b(
    tmp_path: Path, lag: int | None, deadline: float, settled: Callable[[StatusReport], bool]
) -> list[StatusReport]:
    """Apply `a` and `b`, then `a` alone, then run the heartbeat (60 s) until a report is `settled`."""
    director = FakeDirector(make_state("a", "b"), make_state("a"))
    target = UnloadingSidecar(tmp_path, lag)
    target.prepare()
    client: DirectorClient = director  # type: ignore[assignment]
    agent = Agent(client, target, DesiredStateCache(tmp_path / "state"), load_deadline=deadline)

    async def work() -> None:
        await agent.sync_once()
        await agent.sync_once()
        await agent.heartbeat_forever()

    run_with(work(), lambda: until(lambda: any(settled(r) for r in director.reports)))
    return director.reports


def listed(report: StatusReport) -> set[str]:
    return {c.name for c in report.sidecar.components} if report.sidecar else set()


def test_after_a_delete_the_agent_follows_the_sidecar_until_it_no_longer_lists_the_component(
    tmp_path: Path,
) -> None:
    reports = delete_b(tmp_path, lag=3, deadline=60, settled=lambda r: listed(r) == {"a"})

    assert "b" in listed(reports[0]), "the report right after the delete shows the sidecar as it was"
    assert [(r.name, r.state, r.loaded) for r in reports[-1].resources] == [("a", "applied", True)]


def test_a_removed_component_the_sidecar_keeps_listing_is_reported_at_the_deadline(tmp_path: Path) -> None:
    def reports_b(report: StatusReport) -> bool:
        return any(r.name == "b" for r in report.resources)

    reports = delete_b(tmp_path, lag=None, deadline=0.5, settled=reports_b)

    b = next(r for r in reports[-1].resources if r.name == "b")
    assert (b.state, b.loaded) == ("failed", True)
    assert b.message == f"{NOT_UNLOADED} (0.5 s)"


class LoadingSidecar(SelfHostedTarget):
    """A self-hosted target whose daprd lists `a` from the first answer after its file was first there on,
    and `b` from the `delay_b`-th (None: never), counting its answers."""

    def __init__(self, tmp_path: Path, delay_b: int | None) -> None:
        super().__init__(tmp_path / "resources", tmp_path / "state", dapr_http_port=1)
        self.delays = {"a": 1, "b": delay_b}
        self.asked = 0
        self.first_seen: dict[str, int] = {}

    async def sidecar_report(self) -> SidecarReport:
        self.asked += 1
        names = sorted(p.name[len("rrm-") : -len(".yaml")] for p in self.resources_path.glob("rrm-*.yaml"))
        listed = []
        for name in names:
            first = self.first_seen.setdefault(name, self.asked)
            delay = self.delays[name]
            if delay is not None and self.asked - first >= delay:
                listed.append(LoadedComponent(name=name, type="state.in-memory", version="v1"))
        return SidecarReport(reachable=True, app_id="app", components=listed)


def add_b(tmp_path: Path, delay_b: int | None) -> tuple[list[StatusReport], LoadingSidecar, int]:
    """`a` applied, loaded and reported, then `a` and `b`; the reports until one on `a, b` came, the
    sidecar, and how often it had been asked before `b` was applied."""
    director = FakeDirector(make_state("a"), make_state("a", "b"))
    target = LoadingSidecar(tmp_path, delay_b)
    target.prepare()
    client: DirectorClient = director  # type: ignore[assignment]
    agent = Agent(client, target, DesiredStateCache(tmp_path / "state"), load_deadline=60)
    asked_before = 0

    def loaded(report: StatusReport) -> bool:
        return report.applied_hash == make_state("a").hash and all(r.loaded for r in report.resources)

    async def work() -> None:
        nonlocal asked_before
        await agent.sync_once()
        heartbeat = asyncio.ensure_future(agent.heartbeat_forever())
        await until(lambda: any(loaded(r) for r in director.reports))
        asked_before = target.asked
        await agent.sync_once()
        await heartbeat

    both = make_state("a", "b").hash
    run_with(work(), lambda: until(lambda: any(r.applied_hash == both for r in director.reports)))
    return director.reports, target, asked_before


def test_an_apply_the_sidecar_loads_within_the_hold_is_reported_once_applied_and_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "REPORT_HOLD_SECONDS", 60.0)  # only the follow's end releases the report
    reports, sidecar, asked_before = add_b(tmp_path, delay_b=1)

    first = next(r for r in reports if r.applied_hash == make_state("a", "b").hash)
    assert [(r.name, r.loaded) for r in first.resources] == [("a", True), ("b", True)]
    assert sidecar.asked - asked_before == 2, "the report asked the sidecar again after the follow's answer"


def test_the_report_of_an_apply_the_sidecar_has_not_loaded_goes_out_after_the_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "REPORT_HOLD_SECONDS", 0.2)
    reports, _, _ = add_b(tmp_path, delay_b=None)

    first = next(r for r in reports if r.applied_hash == make_state("a", "b").hash)
    assert [(r.name, r.loaded, r.message) for r in first.resources] == [
        ("a", True, ""),
        ("b", False, WAITING),
    ]


def test_long_polls_answered_at_once_with_nothing_new_are_spaced_not_back_to_back(tmp_path: Path) -> None:
    """A wait of 0 (polling without holding) got its 304 at once and polled again at once, without end."""
    director = FakeDirector(make_state("a"), *([None] * 1000))
    agent = make_agent(tmp_path, director)
    agent.wait_seconds, agent.delivery = 0.0, "longpoll"

    async def scenario() -> None:
        syncing = asyncio.ensure_future(agent.sync_forever())
        try:
            await asyncio.sleep(2.5 * loop.MIN_POLL_SPACING)  # the property: how many polls in this time
        finally:
            syncing.cancel()
            await asyncio.gather(syncing, return_exceptions=True)

    asyncio.run(scenario())
    assert 2 <= len(director.etags) <= 5, director.etags
