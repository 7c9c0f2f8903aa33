"""An operation waiting for its agent (wait_for_connection) runs again when the agent's first report is
committed, told by the status writer, rather than at the stage's poll: with the poll an hour long here, the
operation still succeeds as soon as its agent reports, and a report committed while the engine looks is
not missed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from fleet_fixtures import Store
from test_provisioning_engine import (
    RecordingBackend,
    connect,
    engine_for,
    operation,
    request_environment,
    stage_states,
    until,
)

from rrm.core.operations import Outcome
from rrm.server.provisioning.catalog import Catalog
from rrm.server.provisioning.engine import Engine
from rrm.server.provisioning.stages import POLL_SECONDS, STAGES, Attempt
from rrm.server.state import ServerState, utcnow
from rrm.server.status_writer import StatusWriter
from rrm.store import repositories as repo
from rrm.wire.protocol import StatusReport, dumps

HOUR = 3600.0


class Leading:
    held = True


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend()


@contextlib.asynccontextmanager
async def running(state: ServerState, engine: Engine) -> AsyncIterator[None]:
    """The engine's loop and the status writer's, as the server runs them."""
    engine.tick = 0.05
    tasks = [asyncio.create_task(engine.run(Leading())), asyncio.create_task(state.status_writer.run())]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def runtime_id(state: ServerState, name: str) -> str:
    with state.db.read() as session:
        runtime = repo.runtime_by_name(session, name)
        assert runtime is not None
        return runtime.id


def test_the_status_writer_tells_of_each_runtimes_first_report_once_it_is_committed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    runtimes = [store.runtime(f"rt-{i}") for i in range(2)]
    writer = StatusWriter(store.db, interval=0)
    told: list[list[str]] = []

    def first_reports(runtime_ids: list[str]) -> None:
        with store.db.read() as session:
            assert set(repo.statuses_for(session, runtime_ids)) == set(runtime_ids), "told before commit"
        told.append(sorted(runtime_ids))

    writer.on_first_reports = first_reports
    report = StatusReport(heartbeat_interval=15.0)

    async def scenario() -> None:
        runner = asyncio.create_task(writer.run())
        try:
            for _ in range(3):  # the first reports, then two rounds of heartbeats
                sent = (writer.submit(r, r, report, dumps(report)) for r in runtimes)
                await asyncio.wait_for(asyncio.gather(*sent), timeout=60)
        finally:
            runner.cancel()

    asyncio.run(scenario())
    assert [r for batch in told for r in batch] == sorted(runtimes), "each runtime once, heartbeats not"


def test_a_waiting_operation_runs_when_its_agent_first_reports_not_at_its_poll(
    state: ServerState, backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(POLL_SECONDS, "wait_for_connection", HOUR)
    engine = engine_for(state, backend)

    async def scenario() -> None:
        async with running(state, engine):
            op = request_environment(state, engine, "env-w")
            engine.wake()
            await until(lambda: stage_states(state, op)["wait_for_connection"] == ("waiting", 1))
            next_run_at = operation(state, op).next_run_at
            assert next_run_at > utcnow() + timedelta(minutes=10), "its next look: the deadline, 15 min"
            report = StatusReport(heartbeat_interval=15.0)
            await state.status_writer.submit(runtime_id(state, "env-w"), "env-w", report, dumps(report))
            await until(lambda: operation(state, op).state == "succeeded")
            assert stage_states(state, op)["wait_for_connection"] == ("succeeded", 2)

    asyncio.run(scenario())


def test_a_report_committed_while_the_engine_looks_is_not_missed(
    state: ServerState, backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report lands after the stage read the agent's status (and found none) but before the engine
    recorded the wait: the engine is told then, and the operation runs again at once."""
    monkeypatch.setitem(POLL_SECONDS, "wait_for_connection", HOUR)
    engine = engine_for(state, backend)
    look = STAGES["wait_for_connection"]
    told = 0

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def look_then_report(attempt: Attempt) -> Outcome:
            nonlocal told
            outcome = look(attempt)
            if told == 0:
                told += 1
                connect(state, "env-r")  # committed, then the status writer tells the engine on its loop
                rid = runtime_id(state, "env-r")
                asyncio.run_coroutine_threadsafe(_tell(engine, rid), loop).result(timeout=60)
            return outcome

        monkeypatch.setitem(STAGES, "wait_for_connection", look_then_report)
        async with running(state, engine):
            op = request_environment(state, engine, "env-r")
            engine.wake()
            await until(lambda: operation(state, op).state == "succeeded")
            assert stage_states(state, op)["wait_for_connection"] == ("succeeded", 2)

    asyncio.run(scenario())
    assert told == 1


async def _tell(engine: Engine, runtime_id: str) -> None:
    engine.agents_reported([runtime_id])


def test_pick_takes_what_came_due_in_order_and_skips_what_moved_or_ended(state: ServerState) -> None:
    """`_pick` looks at what is due, not at every environment: an operation whose run was moved later
    is not picked at its old time, one that ended is not picked, and the due ones come in the order they
    came due, at most `limit` of them."""
    engine = Engine(state, Catalog())
    now = utcnow()
    engine._keep("env-later", "op-later", now + timedelta(seconds=30))
    engine._keep("env-a", "op-a", None)
    engine._keep("env-moved", "op-moved", now - timedelta(seconds=1))
    engine._keep("env-moved", "op-moved", now + timedelta(seconds=60))  # recorded again: runs later now
    engine._keep("env-b", "op-b", now - timedelta(seconds=2))
    engine._keep("env-ended", "op-ended", None)
    del engine._first["env-ended"]  # as `_note` forgets an operation that ended
    assert engine._pick(1, now) == [("op-a", "env-a")]
    assert engine._pick(16, now) == [("op-b", "env-b")]
    assert engine._pick(16, now) == []
    assert engine._pick(16, now + timedelta(seconds=31)) == [("op-later", "env-later")]
    assert engine._pick(16, now + timedelta(seconds=61)) == [("op-moved", "env-moved")]
