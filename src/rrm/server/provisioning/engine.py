"""The operation engine: singleton work on the leader that drives every unfinished operation, one stage
attempt at a time, persisting each transition before and after the backend call.

What runs when is read from the database on every pass (`operations.next_run_at`, the stages' deadlines and
next attempts), never kept only in memory: a new leader, after a kill -9 of the old one, finds every
unfinished operation due within a pass and resumes it at its current stage with the deadlines and retry
windows that stage already had. One operation per environment runs at a time (the oldest unfinished one); a
provisioning or update that a delete overtook is canceled between two attempts. Backend calls block, so
attempts run on the engine's own thread pool, at most `concurrency` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime

from rrm.core.operations import (
    CANCELED,
    DEPROVISION,
    FAILED,
    FINISHED_OPERATION_STATES,
    IN_PROGRESS,
    INCOMPLETE,
    PROVISION,
    RESUME,
    RETRYING,
    RUNNING,
    STAGE_PENDING,
    SUCCEEDED,
    SUSPEND,
    WAITING,
    Done,
    Outcome,
    Retry,
    Stage,
    cancel_rest,
    current_stage,
    expire,
    failure_summary,
    finish_attempt,
    format_duration,
    give_up,
    left_behind,
    operation_state,
    start_attempt,
)
from rrm.server.metrics import OPERATION_STAGE_SECONDS, OPERATIONS
from rrm.server.provisioning.catalog import Catalog
from rrm.server.provisioning.stages import Attempt, left_by, run_stage, subject_of
from rrm.server.state import ServerState, utcnow
from rrm.store import provisioning as store
from rrm.store import repositories as repo
from rrm.store.leadership import Leadership
from rrm.store.tables import EnvironmentRow, OperationRow

log = logging.getLogger("rrm.server.provisioning")
METRICS_INTERVAL = 5.0
SUPERVISE_INTERVAL = 2.0
SWEEP_INTERVAL = 600.0  # how often cleanup a deprovisioning left behind is tried again
# environment state after an operation ends: (type, operation state) → state
ENVIRONMENT_AFTER = {
    (PROVISION, SUCCEEDED): "succeeded",
    (PROVISION, FAILED): "failed",
    ("update", SUCCEEDED): "succeeded",
    ("update", FAILED): "update failed",
    (DEPROVISION, SUCCEEDED): "deprovisioned",
    (DEPROVISION, FAILED): "deprovision failed",
    (SUSPEND, SUCCEEDED): "suspended",
    (SUSPEND, FAILED): "suspend failed",
    (RESUME, SUCCEEDED): "succeeded",
    (RESUME, FAILED): "failed",
}
EVENT_OF_STAGE = {
    RUNNING: "StageStarted",
    RETRYING: "StageRetrying",
    WAITING: "StageWaiting",
    SUCCEEDED: "StageSucceeded",
    FAILED: "StageFailed",
    INCOMPLETE: "StageIncomplete",
    CANCELED: "StageCanceled",
}


@dataclass(frozen=True)
class Job:
    """An operation at its current stage, as read before an attempt."""

    operation: OperationRow
    environment: EnvironmentRow
    stages: list[Stage]
    position: int
    overtaken: bool  # a delete asked for a deprovisioning since this operation started

    @property
    def stage(self) -> Stage:
        return self.stages[self.position]


class Engine:
    def __init__(
        self, state: ServerState, catalog: Catalog, concurrency: int = 16, tick: float = 0.5
    ) -> None:
        self.state = state
        self.catalog = catalog
        self.tick = tick
        self.concurrency = concurrency
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rrm-provisioning")
        self._wake = asyncio.Event()
        self._last_metrics = 0.0
        self._last_supervised = 0.0
        self._last_swept = 0.0
        self.sweep_interval = SWEEP_INTERVAL

    def wake(self) -> None:
        """A new operation was stored: look now rather than at the next tick."""
        self._wake.set()

    async def run(self, leadership: Leadership) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    if leadership.held:
                        await self._pass(loop)
                except Exception:
                    log.exception("provisioning pass failed")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.tick)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        for backend in self.catalog.backends.values():
            stop = getattr(backend, "shutdown", None)
            if stop is not None:
                stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _pass(self, loop: asyncio.AbstractEventLoop) -> None:
        free = self.concurrency - len(self._running)
        due = await loop.run_in_executor(self._pool, self.due_operations, free)
        for operation_id in due:
            self._running.add(operation_id)
            task = asyncio.create_task(self._attempt(loop, operation_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        now = loop.time()
        if now - self._last_metrics >= METRICS_INTERVAL:
            self._last_metrics = now
            await loop.run_in_executor(self._pool, self.publish_metrics)
        if now - self._last_supervised >= SUPERVISE_INTERVAL:
            self._last_supervised = now
            await loop.run_in_executor(self._pool, self.supervise)
        if now - self._last_swept >= self.sweep_interval:
            self._last_swept = now
            await loop.run_in_executor(self._pool, self.sweep)

    async def _attempt(self, loop: asyncio.AbstractEventLoop, operation_id: str) -> None:
        try:
            await loop.run_in_executor(self._pool, self.step, operation_id)
        except Exception:
            log.exception("operation %s: attempt failed", operation_id)
        finally:
            self._running.discard(operation_id)
            self.state.fleet.nudge()
            self._wake.set()

    def due_operations(self, limit: int) -> list[str]:
        """The oldest unfinished operation of each environment, when due (or overtaken by a delete)."""
        now = utcnow()
        with self.state.db.read() as session:
            unfinished = store.unfinished_operations(session)
        first: dict[str, tuple[str, datetime | None]] = {}
        waiting: set[str] = set()
        for operation_id, environment_id, next_run_at in unfinished:
            if environment_id in first:
                waiting.add(environment_id)
            else:
                first[environment_id] = (operation_id, next_run_at)
        due = [
            operation_id
            for environment_id, (operation_id, next_run_at) in first.items()
            if operation_id not in self._running
            and (next_run_at is None or next_run_at <= now or environment_id in waiting)
        ]
        return due[: max(0, limit)]

    def step(self, operation_id: str) -> None:
        """One attempt of the operation's current stage, or the decision that it ended."""
        job = self._load(operation_id)
        if job is None:
            return
        now = utcnow()
        if current_stage(job.stages) is None:
            # every stage ended but the operation did not (they are stored together): close it, run nothing
            self._record(job, job.stages, now)
            return
        if job.overtaken and job.operation.type != DEPROVISION:
            self._record(job, cancel_rest(job.stages, now), now, "canceled: the environment is being deleted")
            return
        plan = self.catalog.plans.get(job.environment.plan)
        if plan is None:
            unknown = give_up(job.stage, f"plan {job.environment.plan} is no longer configured", now)
            self._record(job, _with(job.stages, job.position, unknown), now)
            return
        ended = expire(job.stage, now) or self._past_global_deadline(job, now)
        if ended is not None:
            self._record(job, _with(job.stages, job.position, ended), now)
            return
        started = start_attempt(job.stage, now)
        self._record(job, _with(job.stages, job.position, started), now)
        attempt = Attempt(
            state=self.state,
            catalog=self.catalog,
            plan=plan,
            backend=self.catalog.backends[plan.backend],
            subject=subject_of(self.state, job.environment),
            operation_id=job.operation.id,
            request=dict(job.operation.request),
            stage=started,
            now=now,
        )
        try:
            outcome = run_stage(attempt)
        except Exception as exc:  # a bug or an unexpected library error: retried like a transient one
            log.exception("operation %s: stage %s raised", operation_id, started.name)
            outcome = Retry(f"{type(exc).__name__}: {exc}")
        finished = finish_attempt(started, outcome, utcnow(), random.random())
        self._record(job, _with(job.stages, job.position, finished), utcnow())

    def _past_global_deadline(self, job: Job, now: datetime) -> Stage | None:
        if now < job.operation.deadline_at:
            return None
        total = format_duration((job.operation.deadline_at - job.operation.created_at).total_seconds())
        return give_up(job.stage, f"the operation did not finish within its deadline of {total}", now)

    def _load(self, operation_id: str) -> Job | None:
        with self.state.db.read() as session:
            operation = store.operation(session, operation_id)
            if operation is None or operation.state in FINISHED_OPERATION_STATES:
                return None
            environment = store.environment(session, operation.environment_id)
            assert environment is not None
            stages = store.stages(session, operation_id)
            position = current_stage(stages)
            overtaken = store.pending_deprovisioning(session, environment.id)
            session.expunge_all()
        if position is None:
            position = len(stages) - 1
        return Job(
            operation, environment, stages, position, overtaken is not None and overtaken.id != operation_id
        )

    def _record(self, job: Job, stages: list[Stage], now: datetime, reason: str | None = None) -> None:
        """Store the stages as they are now, the operation's and environment's state with them, and one
        event per stage that changed state."""
        changed = [(i, s) for i, s in enumerate(stages) if s != job.stages[i]]
        with self.state.db.write() as session:
            for position, stage in changed:
                store.save_stage(session, job.operation.id, position, stage)
            operation = store.operation(session, job.operation.id)
            environment = store.environment(session, job.environment.id)
            assert operation is not None and environment is not None
            _update_operation(operation, environment, stages, now, reason)
            events = [
                _stage_event(job, environment.name, old, new) for old, new in _transitions(job, changed)
            ]
            if operation.state in FINISHED_OPERATION_STATES:
                events.append(_operation_event(operation, environment.name))
            repo.record_events(session, [e for e in events if e is not None], now)
        for _, stage in changed:
            if stage.finished and stage.started_at is not None and stage.finished_at is not None:
                seconds = (stage.finished_at - stage.started_at).total_seconds()
                OPERATION_STAGE_SECONDS.labels(job.environment.plan, stage.name).observe(seconds)
        job.stages[:] = stages

    def sweep(self) -> None:
        """Try again what finished deprovisionings left behind (their `incomplete` stages), one attempt
        each; what succeeds is recorded and, once nothing is left, the environment is `deprovisioned`."""
        with self.state.db.read() as session:
            rows = store.incomplete_deprovisionings(session)
            session.expunge_all()
        for row in rows:
            try:
                self.sweep_operation(row)
            except Exception:
                log.exception("sweeping operation %s failed", row.id)

    def sweep_operation(self, row: OperationRow) -> None:
        with self.state.db.read() as session:
            environment = store.environment(session, row.environment_id)
            stages = store.stages(session, row.id)
            session.expunge_all()
        assert environment is not None
        plan = self.catalog.plans.get(environment.plan)
        if plan is None:
            return
        for position, stage in enumerate(stages):
            if stage.state != INCOMPLETE:
                continue
            now = utcnow()
            attempt = Attempt(
                self.state, self.catalog, plan, self.catalog.backends[plan.backend],
                subject_of(self.state, environment), row.id, dict(row.request), stage, now,
            )  # fmt: skip
            outcome = run_stage(attempt)
            self._record_sweep(row, environment.name, position, stage, outcome, now)

    def _record_sweep(
        self, row: OperationRow, name: str, position: int, stage: Stage, outcome: Outcome, now: datetime
    ) -> None:
        done = isinstance(outcome, Done)
        error = None if done else getattr(outcome, "error", None) or getattr(outcome, "description", "")
        swept = replace(stage, attempts=stage.attempts + 1, state=SUCCEEDED if done else INCOMPLETE)
        swept = replace(swept, last_error=stage.last_error if done else f"{stage.name}: {error}")
        with self.state.db.write() as session:
            store.save_stage(session, row.id, position, swept)
            operation = store.operation(session, row.id)
            environment = store.environment(session, row.environment_id)
            assert operation is not None and environment is not None
            stages = store.stages(session, row.id)
            operation.left_behind, operation.updated_at = left_behind(stages), now
            if not operation.left_behind and environment.state == "deprovision incomplete":
                environment.state, environment.updated_at = "deprovisioned", now
            kind = "CleanupSucceeded" if done else "CleanupIncomplete"
            message = f"{row.type} {row.id}: {stage.name} " + ("done" if done else f"still failing: {error}")
            repo.record_event(session, kind, f"environment/{name}", message, now)

    def publish_metrics(self) -> None:
        with self.state.db.read() as session:
            counts = store.operation_counts(session)
        OPERATIONS.clear()
        for (type_, state), count in counts.items():
            OPERATIONS.labels(type_, state).set(count)

    def supervise(self) -> None:
        """Backends with processes of their own (local) keep them running."""
        for backend in self.catalog.backends.values():
            supervise = getattr(backend, "supervise", None)
            if supervise is not None:
                try:
                    supervise()
                except Exception:
                    log.exception("supervising the %s backend failed", backend.name)


def _with(stages: list[Stage], position: int, stage: Stage) -> list[Stage]:
    return [stage if i == position else s for i, s in enumerate(stages)]


def _transitions(job: Job, changed: list[tuple[int, Stage]]) -> list[tuple[Stage, Stage]]:
    return [
        (job.stages[i], s)
        for i, s in changed
        if s.state != job.stages[i].state or s.attempts != job.stages[i].attempts
    ]


def _stage_event(job: Job, name: str, old: Stage, new: Stage) -> tuple[str, str, str] | None:
    if (new.state == RUNNING and old.state != STAGE_PENDING) or (new.state == WAITING and new.attempts > 1):
        return None  # another look at something progressing, another try: the description says it
    detail = new.last_error if new.state in (FAILED, INCOMPLETE, RETRYING) else new.description
    attempt = f", attempt {new.attempts}" if new.attempts > 1 else ""
    message = f"{job.operation.type} {job.operation.id}: {new.name} {new.state}{attempt}" + (
        f": {detail}" if detail else ""
    )
    return EVENT_OF_STAGE.get(new.state, "StageChanged"), f"environment/{name}", message


def _operation_event(operation: OperationRow, name: str) -> tuple[str, str, str]:
    kind = {"succeeded": "Succeeded", "failed": "Failed", "canceled": "Canceled"}[operation.state]
    return (
        f"Operation{kind}",
        f"environment/{name}",
        f"{operation.type} {operation.id}: {operation.description}",
    )


def _update_operation(
    operation: OperationRow,
    environment: EnvironmentRow,
    stages: list[Stage],
    now: datetime,
    reason: str | None,
) -> None:
    state = operation_state(stages)
    operation.state, operation.updated_at = state, now
    operation.left_behind = left_behind(stages)
    position = current_stage(stages)
    if position is not None and state not in FINISHED_OPERATION_STATES:
        stage = stages[position]
        operation.next_run_at = stage.next_attempt_at
        operation.description = stage.description or f"{stage.name}: {stage.state}"
        operation.last_error = stage.last_error
        if operation.state == IN_PROGRESS and environment.state not in (
            "provisioning",
            "deprovisioning",
            "updating",
            "suspending",
            "resuming",
        ):
            environment.state, environment.updated_at = _running_state(operation.type), now
        return
    operation.finished_at, operation.next_run_at = now, None
    operation.last_error = failure_summary(stages)
    if state == FAILED and operation.type == PROVISION:
        operation.left_behind = [*operation.left_behind, *left_by(stages)]
    operation.description = _final_description(state, operation, reason, stages[-1].description)
    after = ENVIRONMENT_AFTER.get((operation.type, state))
    if after == "deprovisioned" and operation.left_behind:
        after = "deprovision incomplete"
    if after is not None:
        environment.state, environment.updated_at = after, now


def _final_description(state: str, operation: OperationRow, reason: str | None, last: str) -> str:
    if reason:
        return reason
    if state == FAILED:
        left = f"; left behind: {', '.join(operation.left_behind)}" if operation.left_behind else ""
        return f"{operation.last_error}{left}"
    if operation.left_behind:
        return f"succeeded, but could not clean up: {'; '.join(operation.left_behind)} (retried by the sweep)"
    return f"{state}: {last}" if last and state == SUCCEEDED else state


def _running_state(operation_type: str) -> str:
    running = {
        PROVISION: "provisioning",
        DEPROVISION: "deprovisioning",
        SUSPEND: "suspending",
        RESUME: "resuming",
    }
    return running.get(operation_type, "updating")
