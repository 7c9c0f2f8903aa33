"""Which heartbeats send their report: one that says something new, or when the director has not heard from
the agent otherwise (a long-poll answered, a watch frame), or a refresh; never a word-for-word repeat while
the control plane hears from the agent anyway. Contact as the client notes it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from rrm.agent.cache import DesiredStateCache
from rrm.agent.client import DirectorClient, DirectorClock, DirectorError, DirectorUnavailable
from rrm.agent.loop import Agent
from rrm.agent.status import REFRESH_HEARTBEATS, HeartbeatReports
from rrm.agent.targets.selfhosted import SelfHostedTarget
from rrm.core.hashing import state_hash
from rrm.wire import watch
from rrm.wire.protocol import DesiredState, LoadedComponent, SidecarReport, StatusReport, dumps

INTERVAL = 60.0
REPORT = StatusReport(applied_hash="h1", heartbeat_interval=INTERVAL)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def acknowledged_at(clock: ManualClock) -> HeartbeatReports:
    reports = HeartbeatReports(INTERVAL, clock)
    reports.acknowledged(REPORT)
    return reports


def test_the_first_report_is_due() -> None:
    clock = ManualClock()
    assert HeartbeatReports(INTERVAL, clock).due(REPORT, heard_at=clock.now)


def test_a_repeat_is_not_due_while_the_director_heard_from_the_agent_within_the_interval() -> None:
    clock = ManualClock()
    reports = acknowledged_at(clock)
    clock.now += INTERVAL
    assert not reports.due(REPORT, heard_at=clock.now - INTERVAL)
    assert not reports.due(StatusReport(applied_hash="h1", heartbeat_interval=INTERVAL), clock.now - 1)


def test_a_repeat_is_due_when_the_director_has_not_heard_from_the_agent_within_the_interval() -> None:
    clock = ManualClock()
    reports = acknowledged_at(clock)
    clock.now += INTERVAL
    assert reports.due(REPORT, heard_at=clock.now - 1.5 * INTERVAL - 0.01)
    assert reports.due(REPORT, heard_at=-math.inf), "never heard from"


def test_the_contact_interval_the_report_promises_bounds_the_silence_not_the_heartbeat() -> None:
    """On a watch stream with 30 s keep-alives the report promises contact every 30 s, and the control
    plane counts the runtime disconnected after three of them: 46 s without a frame is already news, a
    keep-alive a little late (31 s) is not."""
    clock = ManualClock()
    reports = acknowledged_at(clock)
    promised = StatusReport(applied_hash="h1", heartbeat_interval=INTERVAL / 2)
    reports.acknowledged(promised)
    clock.now += INTERVAL
    assert reports.due(promised, heard_at=clock.now - 46)
    assert not reports.due(promised, heard_at=clock.now - 31)


@pytest.mark.parametrize("phase", [0.01, 0.25, 0.5, 0.75, 0.99, 1.0])
def test_checked_once_per_contact_interval_a_silent_channel_is_reported_before_the_third(
    phase: float,
) -> None:
    """The heartbeat looks once per contact interval C, whatever its phase against the last contact: the
    first report of a silent channel goes out by 2.5 C, before the control plane's limit of 3 C."""
    contact = 30.0
    clock = ManualClock()
    reports = HeartbeatReports(INTERVAL, clock)
    report = StatusReport(applied_hash="h1", heartbeat_interval=contact)
    reports.acknowledged(report)
    last_contact = clock.now
    tick = last_contact + phase * contact
    while not reports.due(report, heard_at=last_contact):
        tick += contact
        clock.now = tick
    assert clock.now - last_contact <= 2.5 * contact


def test_a_report_that_differs_from_the_acknowledged_one_is_due() -> None:
    clock = ManualClock()
    reports = acknowledged_at(clock)
    clock.now += 1
    changed = StatusReport(
        applied_hash="h1", heartbeat_interval=INTERVAL, sidecar=SidecarReport(reachable=False, error="gone")
    )
    assert reports.due(changed, heard_at=clock.now)


def test_after_a_failed_send_the_same_report_is_due_again() -> None:
    clock = ManualClock()
    reports = acknowledged_at(clock)
    reports.failed()
    clock.now += INTERVAL
    assert reports.due(REPORT, heard_at=clock.now)


def test_a_repeat_is_due_once_the_refresh_interval_passed_since_the_last_acknowledged_report() -> None:
    clock = ManualClock()
    reports = acknowledged_at(clock)
    clock.now += REFRESH_HEARTBEATS * INTERVAL - 1
    assert not reports.due(REPORT, heard_at=clock.now)
    clock.now += 1
    assert reports.due(REPORT, heard_at=clock.now)
    reports.acknowledged(REPORT)
    clock.now += INTERVAL
    assert not reports.due(REPORT, heard_at=clock.now)


# --- the agent's heartbeat ------------------------------------------------------------------------------


COMPONENT = {
    "apiVersion": "dapr.io/v1alpha1",
    "kind": "Component",
    "metadata": {"name": "a"},
    "spec": {"type": "state.in-memory", "version": "v1"},
}
STATE = DesiredState(hash=state_hash([COMPONENT], []), components=[COMPONENT])
LOADED = [LoadedComponent(name="a", type="state.in-memory", version="v1")]


class Director:
    """Hears from the agent as `heard_at` says; fails the sends numbered in `failing` (1: the first)."""

    def __init__(self) -> None:
        self.clock = DirectorClock()
        self.heard_at = -math.inf
        self.reports: list[StatusReport] = []
        self.failing: set[int] = set()
        self.sends = 0

    async def fetch_desired(self, etag: str | None, wait: float) -> DesiredState | None:
        return STATE

    async def report_status(self, report: StatusReport) -> None:
        self.sends += 1
        if self.sends in self.failing:
            raise DirectorUnavailable("no director reachable")
        self.reports.append(report)


class Sidecar(SelfHostedTarget):
    """daprd, listing component `a` while `loaded`; counts the questions."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path / "resources", tmp_path / "state")
        self.loaded = True
        self.asked = 0

    async def sidecar_report(self) -> SidecarReport:
        self.asked += 1
        return SidecarReport(reachable=True, app_id="app", components=LOADED if self.loaded else [])


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def run_heartbeat(
    tmp_path: Path,
    director: Director,
    check: Callable[[Agent, Sidecar], Awaitable[None]],
    interval: float = 0.1,
) -> None:
    """Apply STATE, then run the agent's heartbeat while the director hears from the agent all the time
    (as it does from the frames of its watch stream), until `check` returns."""
    target = Sidecar(tmp_path)
    target.prepare()
    client: DirectorClient = director  # type: ignore[assignment]
    agent = Agent(client, target, DesiredStateCache(tmp_path / "state"), heartbeat_interval=interval)
    agent.heartbeats = HeartbeatReports(interval, refresh=math.inf)  # no refresh within the test

    async def heard_all_the_time() -> None:
        while True:
            director.heard_at = time.monotonic()
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        await agent.sync_once()
        tasks = [
            asyncio.ensure_future(agent.heartbeat_forever()),
            asyncio.ensure_future(heard_all_the_time()),
        ]
        try:
            await check(agent, target)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def loaded(report: StatusReport) -> bool | None:
    return report.resources[0].loaded if report.resources else None


def test_an_idle_agent_the_director_hears_from_looks_at_the_sidecar_every_heartbeat_and_reports_news_only(
    tmp_path: Path,
) -> None:
    director = Director()

    async def check(agent: Agent, sidecar: Sidecar) -> None:
        # the apply's report, then the one its follow of the sidecar sends once it ends (0.5 s on)
        await until(lambda: len(director.reports) >= 2)
        assert all(loaded(r) is True for r in director.reports)
        sent, asked = len(director.reports), sidecar.asked
        await until(lambda: sidecar.asked >= asked + 5)  # five heartbeats, each a look at the sidecar
        assert len(director.reports) == sent, "a heartbeat repeated a report the director acknowledged"
        sidecar.loaded = False  # daprd restarted without the component
        await until(lambda: loaded(director.reports[-1]) is False)

    run_heartbeat(tmp_path, director, check)
    assert director.reports[-1].resources[0].message


def test_a_report_whose_send_failed_goes_out_on_the_next_heartbeat(tmp_path: Path) -> None:
    """The second report (the follow's, the same as the apply's) fails: the director may hold it or not,
    so a heartbeat sends it again, though the director hears from the agent and the first one was the same."""
    director = Director()
    director.failing = {2}

    async def check(agent: Agent, sidecar: Sidecar) -> None:
        await until(lambda: len(director.reports) >= 2)

    run_heartbeat(tmp_path, director, check)
    assert director.sends == 3 and director.reports[0] == director.reports[1]


def test_the_heartbeat_looks_once_per_contact_interval_when_the_channel_promises_it_sooner(
    tmp_path: Path,
) -> None:
    """A heartbeat of 60 s on a channel that brings contact every 0.1 s (a long-poll's wait): the report
    promises contact every 0.1 s, so the heartbeat looks (and would report a silence) that often."""
    target = Sidecar(tmp_path)
    target.prepare()
    client: DirectorClient = Director()  # type: ignore[assignment]
    agent = Agent(
        client, target, DesiredStateCache(tmp_path / "state"), heartbeat_interval=60.0, wait_seconds=0.1
    )

    async def scenario() -> None:
        await agent.sync_once()
        beating = asyncio.ensure_future(agent.heartbeat_forever())
        try:
            await until(lambda: target.asked >= 5, timeout=5.0)
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)

    asyncio.run(scenario())
    assert client.reports and client.reports[-1].heartbeat_interval == 0.1  # type: ignore[attr-defined]


def test_the_status_message_says_that_this_host_s_clock_is_off(tmp_path: Path) -> None:
    director = Director()
    director.clock.offset = 120.0

    async def check(agent: Agent, sidecar: Sidecar) -> None:
        await until(lambda: len(director.reports) >= 1)

    run_heartbeat(tmp_path, director, check)
    assert "clock is about 120 s behind" in director.reports[0].message


# --- contact, as the client notes it --------------------------------------------------------------------


def bearer(renew: bool = False, now: float | None = None) -> str:
    return "jwt"


def heard_after(
    handler: Callable[[httpx.Request], httpx.Response], read: Callable[[DirectorClient], Awaitable[object]]
) -> float:
    """`heard_at` of a client that made one call (`read`) to a director answering with `handler`; an error
    of the call is ignored."""
    client = DirectorClient(["http://a"], bearer=bearer, transport=httpx.MockTransport(handler))

    async def scenario() -> float:
        try:
            with contextlib.suppress(DirectorError):
                await read(client)
            return client.heard_at
        finally:
            await client.close()

    return asyncio.run(scenario())


def long_poll(client: DirectorClient) -> Awaitable[object]:
    return client.fetch_desired(STATE.hash, 0)


async def watch_stream(client: DirectorClient) -> None:
    async for _ in client.watch_desired(None, 5.0):
        pass


def streamed(*frames: bytes) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": watch.MEDIA_TYPE}, content=b"".join(frames))

    return handler


@pytest.mark.parametrize("status", [200, 304])
def test_an_answered_long_poll_is_contact(status: int) -> None:
    body = dumps(STATE) if status == 200 else b""
    before = time.monotonic()
    assert heard_after(lambda _: httpx.Response(status, content=body), long_poll) >= before


def test_a_long_poll_is_contact_as_of_its_request_as_the_control_plane_counts_it() -> None:
    """The control plane touches the runtime when the long-poll arrives, not when it answers (up to its
    wait later): the agent's note is no newer than the request, or it would undercount the silence."""
    arrived: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        arrived.append(time.monotonic())
        return httpx.Response(304)

    assert heard_after(answer, long_poll) <= arrived[0]


@pytest.mark.parametrize("status", [401, 503])
def test_a_refused_or_failed_long_poll_is_not_contact(status: int) -> None:
    assert heard_after(lambda _: httpx.Response(status, json={"detail": "no"}), long_poll) == -math.inf


def test_a_watch_frame_is_contact_and_the_opening_alone_is_not() -> None:
    opening = watch.open_frame(15.0, 300.0, 1.0)
    assert heard_after(streamed(opening), watch_stream) == -math.inf
    before = time.monotonic()
    assert heard_after(streamed(opening, watch.KEEP_ALIVE_FRAME), watch_stream) >= before
