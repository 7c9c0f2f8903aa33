"""The provisioning engine on a real SQLite store, with a recording backend standing in for the
infrastructure: every transition persisted, a restarted engine resumes without repeating a finished stage,
a deadline stored before a restart still holds, a delete cancels a provisioning and cleans up."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from rrm.core.operations import DEPROVISION, PROVISION
from rrm.server.provisioning import stages as stages_module
from rrm.server.provisioning.backends.base import (
    AgentInstall,
    ClusterProgress,
    ClusterRequest,
    RetryLater,
)
from rrm.server.provisioning.catalog import Catalog
from rrm.server.provisioning.engine import Engine
from rrm.server.provisioning.plans import Plan
from rrm.server.provisioning.routes import new_operation
from rrm.server.provisioning.stages import CLUSTER_KUBECONFIG, POLL_SECONDS, next_look, unseal
from rrm.server.state import ServerState, utcnow
from rrm.store import provisioning as store
from rrm.store import repositories as repo
from rrm.store.tables import EnvironmentRow, OperationStageRow, RuntimeStatus


class RecordingBackend:
    """Counts every call; `ready_after` looks at the cluster before it is ready; `fail_next` raises."""

    name = "fake"
    creates_clusters = True
    mints_kubeconfigs = False

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.ready_after = 0
        self.gone = True
        self.transient: dict[str, int] = {}
        self.installed: list[AgentInstall] = []

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self.transient.get(name, 0) > 0:
            self.transient[name] -= 1
            raise RetryLater(f"{name}: 503 Service Unavailable")

    def create_cluster(self, request: ClusterRequest) -> None:
        self._call("create_cluster")

    def cluster_progress(self, request: ClusterRequest) -> ClusterProgress:
        self._call("cluster_progress")
        if self.calls["cluster_progress"] > self.ready_after:
            return ClusterProgress(done=True, description="Succeeded")
        return ClusterProgress(done=False, description="Processing", percent=40)

    def kubeconfig(self, request: ClusterRequest) -> str:
        self._call("kubeconfig")
        return "apiVersion: v1\nkind: Config\n"

    def install_agent(self, request: ClusterRequest, kubeconfig: str, install: AgentInstall) -> None:
        self._call("install_agent")
        self.installed.append(install)

    def remove_agent(self, request: ClusterRequest, kubeconfig: str) -> None:
        self._call("remove_agent")

    def delete_cluster(self, request: ClusterRequest) -> None:
        self._call("delete_cluster")

    def deletion_progress(self, request: ClusterRequest) -> ClusterProgress:
        self._call("deletion_progress")
        return ClusterProgress(done=self.gone, description="gone" if self.gone else "Deleting")


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend()


def engine_for(state: ServerState, backend: RecordingBackend, **deadlines: float) -> Engine:
    catalog = Catalog()
    catalog.add_backend(backend)
    catalog.add_plan(
        Plan(name="fake", backend="fake", deadlines=deadlines, expected={"wait_for_cluster": 1800})
    )
    return Engine(state, catalog)


def request_environment(state: ServerState, engine: Engine, name: str) -> str:
    now = utcnow()
    with state.db.write() as session:
        row = EnvironmentRow(
            id=str(uuid.uuid4()), name=name, plan="fake", region=None, labels={"team": "a"}, parameters={},
            sealed=None, global_account="ga-1", subaccount="sa-1", state="provisioning", runtime_id=None,
            data={}, created_at=now, updated_at=now, archived_at=None,
        )  # fmt: skip
        session.add(row)
        session.flush()
        operation, stages = new_operation(engine, row, PROVISION, {}, now)
        store.add_operation(session, operation, stages)
        return operation.id


def delete_environment(state: ServerState, engine: Engine, name: str) -> str:
    with state.db.write() as session:
        row = store.active_environment(session, name)
        assert row is not None
        operation, stages = new_operation(engine, row, DEPROVISION, {}, utcnow())
        store.add_operation(session, operation, stages)
        return operation.id


def stage_states(state: ServerState, operation_id: str) -> dict[str, tuple[str, int]]:
    with state.db.read() as session:
        return {s.name: (s.state, s.attempts) for s in store.stages(session, operation_id)}


def operation(state: ServerState, operation_id: str) -> Any:
    with state.db.read() as session:
        row = store.operation(session, operation_id)
        session.expunge_all()
    return row


def connect(state: ServerState, name: str) -> None:
    """What the agent's first status report stores."""
    with state.db.write() as session:
        runtime = repo.runtime_by_name(session, name)
        assert runtime is not None
        session.add(
            RuntimeStatus(
                runtime_id=runtime.id, applied_hash=None, report={}, agent_version="test",
                heartbeat_interval=60.0, last_seen=utcnow(), reported_at=utcnow(),
            )
        )  # fmt: skip


def make_due(state: ServerState, operation_id: str) -> None:
    """Move the operation's next poll or retry to now (no waiting in a unit test)."""
    with state.db.write() as session:
        for row in session.query(OperationStageRow).filter_by(operation_id=operation_id):
            row.next_attempt_at = None
        stored = store.operation(session, operation_id)
        assert stored is not None
        stored.next_run_at = None


def drive(engine: Engine, operation_id: str, steps: int, due: bool = True) -> None:
    """Run `steps` attempts, each made due first unless `due` is False."""
    for _ in range(steps):
        if due:
            make_due(engine.state, operation_id)
        engine.step(operation_id)


def test_provisioning_runs_every_stage_once_and_labels_the_runtime(
    state: ServerState, backend: RecordingBackend
) -> None:
    engine = engine_for(state, backend)
    op = request_environment(state, engine, "env-a")
    drive(engine, op, 1)  # one step: each stage due at once runs after the one before it
    assert stage_states(state, op)["install_agent"] == ("succeeded", 1)
    assert stage_states(state, op)["wait_for_connection"] == ("waiting", 1)
    connect(state, "env-a")
    drive(engine, op, 1)
    assert operation(state, op).state == "succeeded"
    assert set(stage_states(state, op).values()) == {("succeeded", 1), ("succeeded", 2)}
    with state.db.read() as session:
        runtime = repo.runtime_by_name(session, "env-a")
        assert runtime is not None
        assert runtime.labels == {
            "team": "a", "rrm.io/environment": "env-a", "rrm.io/plan": "fake",
            "rrm.io/global-account": "ga-1", "rrm.io/subaccount": "sa-1",
        }  # fmt: skip
        assert store.active_environment(session, "env-a").state == "succeeded"  # type: ignore[union-attr]
    assert backend.installed[0].pairing_token.startswith("rrmpt_")


def test_what_a_stage_fetched_is_stored_in_the_commit_that_records_its_outcome(
    state: ServerState, backend: RecordingBackend
) -> None:
    engine = engine_for(state, backend)
    op = request_environment(state, engine, "env-k")
    commits = Counter[str]()
    write = engine.writes.write

    def counted(work: Any) -> Any:
        commits["writes"] += 1
        return write(work)

    engine.writes.write = counted  # type: ignore[method-assign]
    drive(engine, op, 1)
    assert stage_states(state, op)["wait_for_connection"] == ("waiting", 1)
    # each of the seven stages' outcomes (with the next one's start; validate's own start with its
    # outcome), the runtime registered and the pairing token issued (each before its outcome); the
    # kubeconfig with its outcome
    assert commits["writes"] == 9
    with state.db.read() as session:
        row = store.active_environment(session, "env-k")
        assert row is not None
        assert unseal(state, row)[CLUSTER_KUBECONFIG] == "apiVersion: v1\nkind: Config\n"


def test_a_new_engine_resumes_at_the_current_stage_and_repeats_no_finished_one(
    state: ServerState, backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages_module, "FIRST_LOOK_SECONDS", 10.0)  # the next look stays ahead of a slow test
    backend.ready_after = 3
    op = request_environment(state, engine_for(state, backend), "env-b")
    drive(engine_for(state, backend), op, 1)  # validate, register, create, one look at the cluster
    assert stage_states(state, op)["wait_for_cluster"] == ("waiting", 1)
    successor = engine_for(state, backend)  # a new leader: nothing in memory
    assert op not in successor.due_operations(10), "the stored poll interval holds for the successor"
    make_due(state, op)
    assert op in successor.due_operations(10)
    drive(successor, op, 3)  # two more looks, then the fourth finds it ready and the rest follows
    connect(state, "env-b")
    drive(successor, op, 1)
    assert operation(state, op).state == "succeeded"
    assert backend.calls["create_cluster"] == 1 and backend.calls["install_agent"] == 1
    assert stage_states(state, op)["wait_for_cluster"] == ("succeeded", 4)


def test_a_cluster_wait_looks_again_within_a_second_at_first_and_every_poll_once_it_waited_long(
    state: ServerState, backend: RecordingBackend
) -> None:
    backend.ready_after = 10**6  # the cluster never comes
    engine = engine_for(state, backend)
    op = request_environment(state, engine, "env-p")
    drive(engine, op, 1)  # every stage up to the first look at the cluster
    assert stage_states(state, op)["wait_for_cluster"] == ("waiting", 1)
    assert next_wait(state, op) == 1.0
    with state.db.write() as session:  # five minutes of waiting pass
        stage = session.query(OperationStageRow).filter_by(operation_id=op, name="wait_for_cluster").one()
        assert stage.started_at is not None
        stage.started_at -= timedelta(seconds=300)
    drive(engine, op, 1)
    assert next_wait(state, op) == POLL_SECONDS["wait_for_cluster"]


def next_wait(state: ServerState, operation_id: str) -> float:
    """Seconds from the operation's last attempt to its next run, as stored."""
    row = operation(state, operation_id)
    return float((row.next_run_at - row.updated_at).total_seconds())


def test_a_cluster_wait_looks_again_after_half_the_time_waited_between_a_second_and_the_poll() -> None:
    assert next_look("wait_for_cluster", 0.0) == 1.0
    assert next_look("wait_for_cluster", 5.0) == 2.5
    assert next_look("wait_for_deletion", 3.0) == 1.5
    assert next_look("wait_for_cluster", 60.0) == POLL_SECONDS["wait_for_cluster"] == 10.0


def test_a_transient_error_is_retried_later_and_recorded(
    state: ServerState, backend: RecordingBackend
) -> None:
    backend.transient["create_cluster"] = 1
    engine = engine_for(state, backend)
    op = request_environment(state, engine, "env-c")
    drive(engine, op, 1)
    assert stage_states(state, op)["create_cluster"] == ("retrying", 1)
    row = operation(state, op)
    assert row.last_error == "create_cluster: 503 Service Unavailable"
    assert row.next_run_at is not None and row.next_run_at > utcnow()
    assert op not in engine.due_operations(10), "a retry waits for its backoff"
    drive(engine, op, 1)
    assert stage_states(state, op)["create_cluster"] == ("succeeded", 2)


def test_a_stored_deadline_holds_for_the_next_engine(state: ServerState, backend: RecordingBackend) -> None:
    backend.ready_after = 10**6  # the cluster never comes
    op = request_environment(state, engine_for(state, backend, wait_for_cluster=3600), "env-d")
    drive(engine_for(state, backend), op, 4)
    with state.db.write() as session:  # an hour passes while no leader runs
        stage = session.query(OperationStageRow).filter_by(operation_id=op, name="wait_for_cluster").one()
        assert stage.deadline_at is not None
        stage.deadline_at -= timedelta(seconds=3601)
    successor = engine_for(state, backend, wait_for_cluster=3600)
    looks = backend.calls["cluster_progress"]
    drive(successor, op, 1, due=False)
    row = operation(state, op)
    assert row.state == "failed"
    assert row.last_error == (
        "stage wait_for_cluster failed: wait_for_cluster did not finish within its deadline of 60 min; "
        "last: waiting for the cluster: 0 of ~30 min (Processing 40%)"
    )
    assert "left behind: the runtime, the cluster" in row.description
    assert backend.calls["cluster_progress"] == looks, "an expired stage is not attempted again"


def test_a_delete_cancels_a_provisioning_between_attempts_and_cleans_up(
    state: ServerState, backend: RecordingBackend
) -> None:
    backend.ready_after = 10**6
    engine = engine_for(state, backend)
    op = request_environment(state, engine, "env-e")
    drive(engine, op, 4)
    deprovisioning = delete_environment(state, engine, "env-e")
    assert engine.due_operations(10) == [op], "one operation per environment: the older one first"
    drive(engine, op, 1)
    assert operation(state, op).state == "canceled"
    assert stage_states(state, op)["wait_for_cluster"][0] == "canceled"
    drive(engine, deprovisioning, 6)
    assert operation(state, deprovisioning).state == "succeeded"
    assert backend.calls["delete_cluster"] == 1
    with state.db.read() as session:
        assert repo.runtime_by_name(session, "env-e") is None
        assert store.active_environment(session, "env-e") is None
        archived = store.latest_environment(session, "env-e")
        assert archived is not None and archived.state == "deprovisioned" and archived.archived_at is not None


def test_a_best_effort_stage_that_cannot_finish_is_left_behind_said_and_swept_later(
    state: ServerState, backend: RecordingBackend
) -> None:
    engine = engine_for(state, backend, remove_agent=5)
    op = request_environment(state, engine, "env-f")
    drive(engine, op, 6)
    deprovisioning = delete_environment(state, engine, "env-f")
    drive(engine, op, 1)
    backend.transient["remove_agent"] = 10**6
    drive(engine, deprovisioning, 1)
    with state.db.write() as session:
        stage = (
            session.query(OperationStageRow).filter_by(operation_id=deprovisioning, name="remove_agent").one()
        )
        stage.deadline_at = utcnow() - timedelta(seconds=1)
    drive(engine, deprovisioning, 6)
    row = operation(state, deprovisioning)
    assert row.state == "succeeded"
    assert row.left_behind == [
        "remove_agent: remove_agent did not finish within its deadline of 5 s; "
        "last: remove_agent: 503 Service Unavailable"
    ]
    with state.db.read() as session:
        assert store.latest_environment(session, "env-f").state == "deprovision incomplete"  # type: ignore[union-attr]
    engine.sweep()
    assert operation(state, deprovisioning).left_behind, "still failing: still left behind"
    backend.transient["remove_agent"] = 0
    engine.sweep()
    assert operation(state, deprovisioning).left_behind == []
    assert stage_states(state, deprovisioning)["remove_agent"][0] == "succeeded"
    with state.db.read() as session:
        assert store.latest_environment(session, "env-f").state == "deprovisioned"  # type: ignore[union-attr]


def test_an_operation_whose_plan_was_removed_fails_saying_so(
    state: ServerState, backend: RecordingBackend
) -> None:
    op = request_environment(state, engine_for(state, backend), "env-g")
    without_plan = Engine(state, Catalog(backends={"fake": backend}))
    without_plan.step(op)
    row = operation(state, op)
    assert row.state == "failed"
    assert row.last_error == "stage validate failed: plan fake is no longer configured"
    assert backend.calls == Counter()


def test_each_stage_of_a_step_is_stored_as_started_before_its_backend_call_and_said_in_events(
    state: ServerState, backend: RecordingBackend
) -> None:
    engine = engine_for(state, backend)
    op = request_environment(state, engine, "env-h")
    seen: dict[str, tuple[str, int]] = {}

    def create_cluster(request: ClusterRequest) -> None:  # what a kill -9 during the call would leave
        seen.update(stage_states(state, op))
        backend.calls["create_cluster"] += 1

    backend.create_cluster = create_cluster  # type: ignore[method-assign]
    drive(engine, op, 1)
    assert seen["register_runtime"] == ("succeeded", 1)
    assert seen["create_cluster"] == ("running", 1), "started and stored before the call"
    with state.db.read() as session:
        said = [
            (e.type, e.message.split(": ")[1]) for e in repo.recent_events(session, "environment/env-h", 50)
        ]
    stages = ["validate", "register_runtime", "create_cluster", "wait_for_cluster", "fetch_kubeconfig"]
    stages += ["install_agent"]
    expected = [(kind, f"{s} {state_}") for s in stages for kind, state_ in
                (("StageStarted", "running"), ("StageSucceeded", "succeeded"))]  # fmt: skip
    assert said == [*expected, ("StageStarted", "wait_for_connection running"),
                    ("StageWaiting", "wait_for_connection waiting")]  # fmt: skip


def test_the_running_engine_drives_an_operation_from_memory_between_reads(
    state: ServerState, backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's own loop: the request is read at once (wake), the waits it recorded are kept in memory,
    and the operation succeeds once its agent connects. The report is stored as another process would
    store it (nothing here is told), so the stage's own poll, made short here, finds it."""
    monkeypatch.setitem(POLL_SECONDS, "wait_for_connection", 2.0)
    engine = engine_for(state, backend)
    engine.tick = 0.05
    reads = Counter[str]()
    read_unfinished = engine._read_unfinished

    def counted() -> Any:
        reads["scans"] += 1
        return read_unfinished()

    engine._read_unfinished = counted  # type: ignore[method-assign]

    class Leading:
        held = True

    async def scenario() -> str:
        runner = asyncio.create_task(engine.run(Leading()))  # type: ignore[arg-type]
        try:
            op = request_environment(state, engine, "env-i")
            engine.wake()
            await until(lambda: stage_states(state, op)["wait_for_connection"][0] == "waiting")
            reads.clear()
            connect(state, "env-i")
            await until(lambda: operation(state, op).state == "succeeded", seconds=10)
            looks = stage_states(state, op)["wait_for_connection"][1]
            assert 2 <= looks <= 3, "looked again at the stored poll interval (2 s), not at every tick"
            assert reads["scans"] <= 3, "read again at the rescan interval, not at each of ~40 ticks"
            return op
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    asyncio.run(scenario())


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
