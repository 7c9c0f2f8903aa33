"""The operation engine: singleton work on the leader that drives every unfinished operation, one stage
attempt at a time. A stage's first attempt is stored as started before its backend call (that fixes its
deadline), and every attempt's outcome after it, in one transaction with the start of the next stage when
that one is due at once: a step runs the stages that follow each other without waiting, one transaction
per attempt, until one waits, retries, fails or the operation ends.

What runs when is stored (`operations.next_run_at`, the stages' deadlines and next attempts) and read from
the database when this engine starts, every `RESCAN_INTERVAL` and whenever an operation is stored in this
process; between those reads the engine keeps each operation's next run in memory as it records it. A new
leader, after a kill -9 of the old one, finds every unfinished operation due within a pass and resumes it at
its current stage with the deadlines and retry windows that stage already had. An operation waiting for its
agent (`AGENT_WAITS`) runs again as soon as the agent's first report is committed (`agents_reported`: told by
this process's status writer, and by the leader's housekeeping for reports other processes stored), not at
the stage's poll, which is left for reports that came before this engine first looked at the operation.
One operation per environment runs at a time (the oldest unfinished one); a provisioning or update that a
delete overtook is canceled between two attempts. Backend calls block, so attempts run on the engine's own
thread pool, at most `concurrency` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.orm import Session

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
from rrm.server.provisioning.group_commit import GroupCommit
from rrm.server.provisioning.plans import Plan
from rrm.server.provisioning.stages import (
    AGENT_WAITS,
    STARTED_WITH_OUTCOME,
    Attempt,
    left_by,
    run_stage,
    subject_of,
)
from rrm.server.state import ServerState, utcnow
from rrm.store import provisioning as store
from rrm.store import repositories as repo
from rrm.store.leadership import Leadership
from rrm.store.tables import EnvironmentRow, OperationRow

log = logging.getLogger("rrm.server.provisioning")
METRICS_INTERVAL = 5.0
SUPERVISE_INTERVAL = 2.0
SWEEP_INTERVAL = 600.0  # how often cleanup a deprovisioning left behind is tried again
RESCAN_INTERVAL = 2.0  # how often the unfinished operations are read again (those stored by other processes)
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
        # environment id → (its oldest unfinished operation, when that runs next), as last read or recorded
        self._first: dict[str, tuple[str, datetime | None]] = {}
        # what `_pick` looks at instead of every environment (a pass runs after every attempt): the
        # environments found due, in the order they were (a dict as an ordered set), and a heap of the
        # others' next runs; both may hold entries `_first` has since changed, checked against it when met
        self._due: dict[str, None] = {}
        self._timers: list[tuple[datetime, str]] = []
        self._waiting: set[str] = set()  # environments with more than one unfinished operation
        self._noted: set[str] = set()  # environments whose operation `wake` was told of during a read
        # runtime id → environment id: operations in a stage that ends when the runtime's agent reports
        # (AGENT_WAITS), registered by the attempt's thread before it looks, so no first report is missed
        self._listening: dict[str, str] = {}
        self._listening_lock = threading.Lock()
        self._woken: set[str] = set()  # environments whose operation is due at once: its agent reported
        self._rescan = True
        self._scanned_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rrm-provisioning")
        self.writes = GroupCommit(state.db)  # the attempts' records and the stages' writes
        self._wake = asyncio.Event()
        self._last_metrics = 0.0
        self._last_supervised = 0.0
        self._last_swept = 0.0
        self.sweep_interval = SWEEP_INTERVAL
        state.status_writer.on_first_reports = self.agents_reported

    def wake(self, operation_id: str | None = None, environment_id: str | None = None) -> None:
        """An operation was stored: look now rather than at the next tick. Told which (a new environment's
        first), the engine keeps it in memory; else it reads the unfinished operations again."""
        if operation_id is None or environment_id is None or environment_id in self._first:
            self._rescan = True
        else:
            self._keep(environment_id, operation_id, None)
            self._noted.add(environment_id)
        self._wake.set()

    def agents_reported(self, runtime_ids: list[str]) -> None:
        """These runtimes' agents reported (their first report this process received, committed, or one
        another process wrote, which the leader's housekeeping reads within a second): an operation waiting
        for one of them runs now, not at its next look. On the event loop."""
        with self._listening_lock:
            woken = {self._listening.pop(r) for r in runtime_ids if r in self._listening}
        if woken:
            self._woken.update(woken)
            self._wake.set()

    def _listen(self, job: Job) -> None:
        """From the attempt's thread, before its stage looks: a report committed after the look wakes it."""
        if job.environment.runtime_id is not None:
            with self._listening_lock:
                self._listening[job.environment.runtime_id] = job.environment.id

    def _stop_listening(self, job: Job) -> None:
        """After a step, unless the operation waits in the stage it listened for."""
        runtime_id, operation = job.environment.runtime_id, job.operation
        if runtime_id is None or (
            job.stage.name in AGENT_WAITS
            and operation.state not in FINISHED_OPERATION_STATES
            and operation.next_run_at is not None
        ):
            return
        with self._listening_lock:
            if self._listening.get(runtime_id) == job.environment.id:
                del self._listening[runtime_id]

    async def run(self, leadership: Leadership) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    if leadership.held:
                        await self._pass(loop)
                    else:
                        self._rescan = True  # a leader again reads what the one before it stored
                except Exception:
                    log.exception("provisioning pass failed")
                self._wake.clear()
                # not wait_for: on Python 3.11 it drops a cancellation that meets a wake-up, and the
                # server's shutdown then waits for this task forever
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.tick):
                        await self._wake.wait()
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
        now = loop.time()
        if self._rescan or now - self._scanned_at >= RESCAN_INTERVAL:
            self._rescan, self._scanned_at = False, now
            self._noted.clear()
            first, self._waiting = await loop.run_in_executor(self._pool, self._read_unfinished)
            for environment_id in self._noted:  # stored after the read began
                if environment_id not in first and environment_id in self._first:
                    first[environment_id] = self._first[environment_id]
            self._keep_all(first)
            self._woken.intersection_update(first)  # those whose operation ended meanwhile
        for operation_id, environment_id in self._pick(self.concurrency - len(self._running), utcnow()):
            self._running.add(operation_id)
            self._woken.discard(environment_id)
            task = asyncio.create_task(self._attempt(loop, operation_id, environment_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if now - self._last_metrics >= METRICS_INTERVAL:
            self._last_metrics = now
            await loop.run_in_executor(self._pool, self.publish_metrics)
        if now - self._last_supervised >= SUPERVISE_INTERVAL:
            self._last_supervised = now
            await loop.run_in_executor(self._pool, self.supervise)
        if now - self._last_swept >= self.sweep_interval:
            self._last_swept = now
            await loop.run_in_executor(self._pool, self.sweep)

    async def _attempt(self, loop: asyncio.AbstractEventLoop, operation_id: str, environment_id: str) -> None:
        after: OperationRow | None = None
        try:
            after = await loop.run_in_executor(self._pool, self.step, operation_id)
        except Exception:
            log.exception("operation %s: attempt failed", operation_id)
            after = None
            self._rescan = True  # what was stored is not known here: read it again
        finally:
            self._running.discard(operation_id)
            self._note(operation_id, environment_id, after)
            self.state.fleet.nudge()
            self._wake.set()

    def _note(self, operation_id: str, environment_id: str, after: OperationRow | None) -> None:
        """Keep what the step recorded: when the operation runs next, or that it ended (then the
        environment's next operation, if it has one, is read at once)."""
        if after is not None and after.state not in FINISHED_OPERATION_STATES:
            self._keep(environment_id, operation_id, after.next_run_at)
            return
        if self._first.get(environment_id, (None,))[0] == operation_id:
            del self._first[environment_id]
        if environment_id in self._waiting:
            self._rescan = True

    def due_operations(self, limit: int) -> list[str]:
        """The oldest unfinished operation of each environment, when due (or overtaken by a delete), read
        from the database."""
        first, self._waiting = self._read_unfinished()
        self._keep_all(first)
        return [operation_id for operation_id, _ in self._pick(limit, utcnow())]

    def _keep(self, environment_id: str, operation_id: str, next_run_at: datetime | None) -> None:
        """The environment's first unfinished operation and when it runs next (None: now)."""
        self._first[environment_id] = (operation_id, next_run_at)
        if next_run_at is None:
            self._due[environment_id] = None
        else:
            heapq.heappush(self._timers, (next_run_at, environment_id))

    def _keep_all(self, first: dict[str, tuple[str, datetime | None]]) -> None:
        """What a read found, instead of everything kept so far."""
        self._first = first
        self._due = {e: None for e, (_, next_run_at) in first.items() if next_run_at is None}
        self._timers = [(n, e) for e, (_, n) in first.items() if n is not None]
        heapq.heapify(self._timers)

    def _read_unfinished(self) -> tuple[dict[str, tuple[str, datetime | None]], set[str]]:
        """The oldest unfinished operation of each environment and when it runs next; the environments
        with more than one."""
        with self.state.db.read() as session:
            unfinished = store.unfinished_operations(session)
        first: dict[str, tuple[str, datetime | None]] = {}
        waiting: set[str] = set()
        for operation_id, environment_id, next_run_at in unfinished:
            if environment_id in first:
                waiting.add(environment_id)
            else:
                first[environment_id] = (operation_id, next_run_at)
        return first, waiting

    def _pick(self, limit: int, now: datetime) -> list[tuple[str, str]]:
        """(operation, environment) of the operations due now and not running, at most `limit`: those of
        environments a delete or an agent's report made due, then the others in the order they came due.
        O(what is due), not O(every environment): a pass runs after every attempt."""
        while self._timers and self._timers[0][0] <= now:
            at, environment_id = heapq.heappop(self._timers)
            if self._first.get(environment_id, ("", None))[1] == at:
                self._due[environment_id] = None
        picked: list[tuple[str, str]] = []
        for environment_id in [*self._waiting, *self._woken, *self._due]:
            if len(picked) >= limit:
                break
            kept = self._first.get(environment_id)
            urgent = environment_id in self._waiting or environment_id in self._woken
            if kept is None or not (urgent or kept[1] is None or kept[1] <= now):
                self._due.pop(environment_id, None)  # ended, or runs later now: its timer says when
                continue
            if kept[0] in self._running or (kept[0], environment_id) in picked:
                continue
            picked.append((kept[0], environment_id))
            self._due.pop(environment_id, None)
        return picked

    def step(self, operation_id: str) -> OperationRow | None:
        """Attempts of the operation's current stage and of each following stage due at once, until one
        waits, retries or fails, or the decision that the operation ended; the operation as stored after
        (None when there was nothing to do)."""
        job = self._load(operation_id)
        if job is None:
            return None
        job = self._advance(job)
        self._stop_listening(job)
        return job.operation

    def _advance(self, job: Job) -> Job:
        now = utcnow()
        if current_stage(job.stages) is None:
            # every stage ended but the operation did not (they are stored together): close it, run nothing
            return self._record(job, job.stages, now)
        if job.overtaken and job.operation.type != DEPROVISION:
            reason = "canceled: the environment is being deleted"
            return self._record(job, cancel_rest(job.stages, now), now, reason)
        plan = self.catalog.plans.get(job.environment.plan)
        if plan is None:
            unknown = give_up(job.stage, f"plan {job.environment.plan} is no longer configured", now)
            return self._record(job, _with(job.stages, job.position, unknown), now)
        started_here = False  # whether the current stage's start was stored by this step
        while True:
            if job.stage.state == STAGE_PENDING and job.stage.name not in STARTED_WITH_OUTCOME:
                job, started_here = self._start(job, utcnow()), True
            else:
                job, started_here = self._attempt_stage(job, plan, started_here), True
            operation = job.operation
            if operation.state in FINISHED_OPERATION_STATES or operation.next_run_at is not None:
                return job
            if job.overtaken and operation.type != DEPROVISION:
                return job  # due at once: the next step cancels it

    def _start(self, job: Job, now: datetime) -> Job:
        """A stage's first attempt stored before its backend call: its start and deadline are fixed."""
        ended = expire(job.stage, now) or self._past_global_deadline(job, now)
        if ended is not None:
            return self._record(job, _with(job.stages, job.position, ended), now)
        return self._record(job, _with(job.stages, job.position, start_attempt(job.stage, now)), now)

    def _attempt_stage(self, job: Job, plan: Plan, started_here: bool) -> Job:
        """One attempt of the current stage, stored with its outcome; when the next stage is due at once its
        start is stored in the same transaction. A stage this step did not start (waiting, retrying, or
        left running by a crash) counts the attempt here."""
        now = utcnow()
        stage = job.stage
        ended = expire(stage, now) or self._past_global_deadline(job, now)
        if ended is not None:
            return self._record(job, _with(job.stages, job.position, ended), now)
        started = stage if started_here and stage.state == RUNNING else start_attempt(stage, now)
        if stage.name in AGENT_WAITS:
            self._listen(job)
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
            writes=self.writes,
            with_outcome=[],
        )
        try:
            outcome = run_stage(attempt)
        except Exception as exc:  # a bug or an unexpected library error: retried like a transient one
            log.exception("operation %s: stage %s raised", job.operation.id, started.name)
            outcome = Retry(f"{type(exc).__name__}: {exc}")
        finished_at = utcnow()
        finished = finish_attempt(started, outcome, finished_at, random.random())
        stages = _with(job.stages, job.position, finished)
        following = current_stage(stages)
        if (
            following is not None
            and following != job.position
            and stages[following].state == STAGE_PENDING
            and not (job.overtaken and job.operation.type != DEPROVISION)
        ):
            stages = _with(stages, following, start_attempt(stages[following], finished_at))
        return self._record(job, stages, finished_at, stage_writes=attempt.with_outcome or [])

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

    def _record(
        self,
        job: Job,
        stages: list[Stage],
        now: datetime,
        reason: str | None = None,
        stage_writes: Sequence[Callable[[Session], None]] = (),
    ) -> Job:
        """Store what the attempt's stage did (`stage_writes`), the stages as they are now, the operation's
        and environment's state with them, and one event per stage that changed state, in one transaction;
        the job as stored (the environment as the stages left it, and whether a delete has overtaken the
        operation meanwhile)."""
        changed = [(i, s) for i, s in enumerate(stages) if s != job.stages[i]]
        operation = job.operation  # as stored: only the engine changes an unfinished operation

        def work(session: Session) -> tuple[EnvironmentRow, bool]:
            for stage_write in stage_writes:
                stage_write(session)
            store.save_stages(session, operation.id, changed)
            environment = store.environment(session, job.environment.id)
            assert environment is not None
            _update_operation(operation, environment, stages, now, reason)
            store.save_operation(session, operation)
            events = [
                _stage_event(job, environment.name, old, new) for old, new in _transitions(job, changed)
            ]
            if operation.state in FINISHED_OPERATION_STATES:
                events.append(_operation_event(operation, environment.name))
            repo.record_events(session, [e for e in events if e is not None], now)
            if operation.state in FINISHED_OPERATION_STATES or operation.type == DEPROVISION:
                return environment, job.overtaken
            return environment, store.deprovisioning_pending(session, environment.id)

        environment, overtaken = self.writes.write(work)
        for _, stage in changed:
            if stage.finished and stage.started_at is not None and stage.finished_at is not None:
                seconds = (stage.finished_at - stage.started_at).total_seconds()
                OPERATION_STAGE_SECONDS.labels(job.environment.plan, stage.name).observe(seconds)
        at = current_stage(stages)
        return Job(operation, environment, stages, len(stages) - 1 if at is None else at, overtaken)

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
    """(before, after) of each stage whose state or attempts changed; a stage started and ended in one
    record (STARTED_WITH_OUTCOME) passes through its start, so its events read as any other stage's."""
    found = []
    for i, s in changed:
        old = job.stages[i]
        if s.state == old.state and s.attempts == old.attempts:
            continue
        if old.state == STAGE_PENDING and s.state != RUNNING and s.started_at is not None:
            started = start_attempt(old, s.started_at)
            found += [(old, started), (started, s)]
        else:
            found.append((old, s))
    return found


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
