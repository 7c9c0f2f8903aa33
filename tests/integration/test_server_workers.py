"""`rrm server --workers 2` as real processes, on SQLite and on PostgreSQL: every change reaches an agent
whichever worker took the write and whichever holds the agent's long-poll, conditions and events are
recorded once (by the one leader), metrics add up the workers, a worker killed with -9 is replaced and
SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from .databases import database_for
from .harness import (
    AgentProcess,
    ServerProcess,
    apply,
    components_on_disk,
    condition_true,
    holds_for,
    http_binding,
    metadata_value,
    register,
    runtime,
    synced,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def two_workers(tmp_path: Path, backend: str) -> Iterator[ServerProcess]:
    with database_for(backend) as database_url:
        server = ServerProcess(
            tmp_path / "data",
            tmp_path / "server.log",
            database_url=database_url,
            workers=2,
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()


def workers_of(server: ServerProcess) -> set[int]:
    """The supervisor's child processes."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    return {int(pid) for pid in children}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def has_url(agent: AgentProcess, url: str) -> bool:
    return bool(metadata_value(components_on_disk(agent.resources_path).get("wk-web", {}), "url") == url)


def test_changes_through_any_worker_reach_the_agent_and_the_leader_records_once(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    assert len(workers_of(two_workers)) == 2
    token = register(two_workers.admin, "wk-agent", labels={"t-wk": "one"})
    agent = AgentProcess(
        "wk-agent",
        two_workers.url,
        tmp_path / "agent" / "state",
        tmp_path / "agent" / "res",
        tmp_path / "a.log",
    )
    agent.start(token)
    try:
        for version in range(6):  # each apply on a new connection: the kernel picks the worker
            url = f"http://v{version}.invalid/"
            with httpx.Client(
                base_url=two_workers.url, headers={"Authorization": f"Bearer {two_workers.admin_token}"}
            ) as fresh:
                apply(fresh, [http_binding("wk-web", "t-wk=one", url)])
            wait_until(
                partial(has_url, agent, url),
                message=f"the agent never got {url}: see {agent.log_path} and {two_workers.log_path}",
            )
        wait_until(
            lambda: (
                synced(runtime(two_workers.admin, "wk-agent"))
                and condition_true(runtime(two_workers.admin, "wk-agent"), "Connected")
            ),
            message=lambda: f"not Connected and Synced: {runtime(two_workers.admin, 'wk-agent')}",
        )
        metrics = two_workers.admin.get("/metrics").text
        assert "rrm_leader 1.0" in metrics
        reports = [line for line in metrics.splitlines() if line.startswith("rrm_status_reports_total ")]
        assert reports and float(reports[0].split()[1]) >= 1, metrics  # summed over the workers
        wait_until(
            lambda: len(transitions(two_workers)) >= 1,
            message=lambda: f"the leader recorded no condition transition:\n{two_workers.tail()}",
        )
        holds_for(  # two leaders would each record a transition: the same one twice in a row
            lambda: no_repeats(transitions(two_workers)),
            3.0,
            lambda: f"a transition was recorded more than once: {transitions(two_workers)}",
        )
    finally:
        agent.stop()


def transitions(server: ServerProcess) -> list[str]:
    """The leader's condition events of the agent's runtime, oldest first (ConnectedTrue, SyncedFalse, …)."""
    events = server.admin.get("/api/v1/events", params={"subject": "runtime/wk-agent", "limit": 1000}).json()
    kinds = ("Connected", "Synced", "Ready")
    return [e["type"] for e in sorted(events, key=lambda e: e["id"]) if e["type"].startswith(kinds)]


def no_repeats(types: list[str]) -> bool:
    """Each condition's events alternate True and False: none is recorded twice in a row."""
    last: dict[str, str] = {}
    for kind in types:
        condition = kind.removesuffix("True").removesuffix("False")
        if last.get(condition) == kind:
            return False
        last[condition] = kind
    return True


def test_a_killed_worker_is_replaced_and_sigterm_stops_every_worker(two_workers: ServerProcess) -> None:
    first = workers_of(two_workers)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(workers_of(two_workers)) == 2 and victim not in workers_of(two_workers),
        message=lambda: f"worker {victim} was not replaced:\n{two_workers.tail()}",
    )
    replacement = (workers_of(two_workers) - first).pop()
    wait_until(
        lambda: all(httpx.get(f"{two_workers.url}/readyz", timeout=5).status_code == 200 for _ in range(4)),
        message=lambda: f"not ready after the replacement:\n{two_workers.tail()}",
    )
    survivors = workers_of(two_workers)
    assert replacement in survivors
    assert two_workers.stop() == 0
    wait_until(
        lambda: not any(alive(pid) for pid in survivors),
        message=lambda: f"workers outlived the supervisor's SIGTERM:\n{two_workers.tail()}",
    )
