"""Provisioning operations as data: an ordered list of stages, each with its own deadline and retry policy,
and the decisions the engine takes about them (what runs next, when it runs again, when it has failed, how
its progress reads to a person).

Pure: the engine stores every field these functions read (attempts, when a stage started, its deadline, when
it may run again), so a restart of the control plane resumes exactly where the stored state says, with the
same deadlines and retry windows. Times are aware datetimes handed in by the caller; randomness (jitter) is
a number in [0, 1) handed in too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

# operation types
PROVISION = "provision"
DEPROVISION = "deprovision"
UPDATE = "update"
SUSPEND = "suspend"  # the cluster and runtime go, the environment stays (a platform set context.active=false)
RESUME = "resume"  # a suspended environment gets its cluster and runtime again
OPERATION_TYPES = (PROVISION, DEPROVISION, UPDATE, SUSPEND, RESUME)

# operation states
PENDING = "pending"
IN_PROGRESS = "in progress"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELED = "canceled"
FINISHED_OPERATION_STATES = (SUCCEEDED, FAILED, CANCELED)
OPERATION_STATES = (PENDING, IN_PROGRESS, SUCCEEDED, FAILED, CANCELED)

# stage states: a stage is `pending` until its first attempt, `running` while an attempt is under way,
# `waiting` while it polls something that is progressing, `retrying` after a transient error; it ends
# `succeeded`, `failed` (its operation fails), `incomplete` (a best-effort stage gave up; the sweep retries
# it) or `canceled` (its operation was canceled before it ran)
STAGE_PENDING = "pending"
RUNNING = "running"
WAITING = "waiting"
RETRYING = "retrying"
INCOMPLETE = "incomplete"
FINISHED_STAGE_STATES = (SUCCEEDED, FAILED, INCOMPLETE, CANCELED)

RETRY_BASE_SECONDS = 2.0
RETRY_CAP_SECONDS = 60.0


@dataclass(frozen=True)
class Stage:
    """What the engine stored about one stage of one operation."""

    name: str
    state: str = STAGE_PENDING
    best_effort: bool = False  # a failure is recorded and left to the sweep; the operation goes on
    deadline_seconds: float = 600.0
    attempts: int = 0
    started_at: datetime | None = None
    deadline_at: datetime | None = None  # set at the first attempt, never moved by a restart
    next_attempt_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None
    description: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STAGE_STATES


@dataclass(frozen=True)
class Done:
    """The stage did its work."""

    description: str = ""


@dataclass(frozen=True)
class Wait:
    """What the stage waits for is progressing: look again after `after_seconds`, no error."""

    description: str
    after_seconds: float


@dataclass(frozen=True)
class Retry:
    """A transient error: try again with backoff until the stage's deadline."""

    error: str


@dataclass(frozen=True)
class Fail:
    """A permanent error: the stage fails now."""

    error: str


Outcome = Done | Wait | Retry | Fail


def current_stage(stages: list[Stage]) -> int | None:
    """The index of the first stage not finished; None when all are."""
    return next((i for i, stage in enumerate(stages) if not stage.finished), None)


def retry_delay(
    attempts: int, jitter: float, base: float = RETRY_BASE_SECONDS, cap: float = RETRY_CAP_SECONDS
) -> float:
    """Exponential backoff with jitter: between half and all of min(cap, base * 2**(attempts-1)), so many
    operations failing together do not come back in lockstep, and none waits less than half its step."""
    ceiling = min(cap, base * 2.0 ** max(0, min(attempts - 1, 32)))
    return ceiling * (0.5 + 0.5 * jitter)


def start_attempt(stage: Stage, now: datetime) -> Stage:
    """The stage as stored before its backend call: the first attempt fixes its start and deadline."""
    started = stage.started_at or now
    deadline = stage.deadline_at or started + timedelta(seconds=stage.deadline_seconds)
    return replace(
        stage,
        state=RUNNING,
        attempts=stage.attempts + 1,
        started_at=started,
        deadline_at=deadline,
        next_attempt_at=None,
    )


def finish_attempt(stage: Stage, outcome: Outcome, now: datetime, jitter: float) -> Stage:
    """The stage after an attempt's outcome. A wait or retry that would run past the deadline fails it (a
    best-effort stage ends `incomplete`) with a message naming the deadline and the last thing seen."""
    if isinstance(outcome, Done):
        return replace(
            stage,
            state=SUCCEEDED,
            finished_at=now,
            next_attempt_at=None,
            description=outcome.description or stage.description,
        )
    if isinstance(outcome, Fail):
        return give_up(stage, outcome.error, now)
    if isinstance(outcome, Wait):
        following = replace(stage, state=WAITING, description=outcome.description, last_error=None)
        delay = outcome.after_seconds
    else:
        following = replace(stage, state=RETRYING, last_error=outcome.error)
        delay = retry_delay(stage.attempts, jitter)
    assert stage.deadline_at is not None, "finish_attempt needs start_attempt first"
    if now >= stage.deadline_at:
        return give_up(following, deadline_message(following), now)
    return replace(following, next_attempt_at=min(now + timedelta(seconds=delay), stage.deadline_at))


def deadline_message(stage: Stage) -> str:
    """What a stage that ran out of time says: its deadline, and what it last saw."""
    last = stage.last_error or stage.description
    return f"{stage.name} did not finish within its deadline of {format_duration(stage.deadline_seconds)}" + (
        f"; last: {last}" if last else ""
    )


def give_up(stage: Stage, error: str, now: datetime) -> Stage:
    """The stage ends now with `error`: failed, or incomplete when it is best effort."""
    state = INCOMPLETE if stage.best_effort else FAILED
    return replace(stage, state=state, last_error=error, finished_at=now, next_attempt_at=None)


def expire(stage: Stage, now: datetime) -> Stage | None:
    """The stage failed at its stored deadline, if that passed while nobody attempted it (the control plane
    was down, or a leader took over late): it fails as of now, whatever a new attempt might have said."""
    if stage.finished or stage.deadline_at is None or now < stage.deadline_at:
        return None
    return give_up(stage, deadline_message(stage), now)


def cancel_rest(stages: list[Stage], now: datetime) -> list[Stage]:
    """Stages not finished end `canceled`: the operation was canceled between two attempts, where every
    stage may stop (each is idempotent, and the deprovisioning that canceled it cleans up)."""
    return [
        s if s.finished else replace(s, state=CANCELED, finished_at=now, next_attempt_at=None) for s in stages
    ]


def operation_state(stages: list[Stage]) -> str:
    """An operation fails with its first failed stage; it succeeds when every stage finished otherwise."""
    if any(s.state == FAILED for s in stages):
        return FAILED
    if any(s.state == CANCELED for s in stages):
        return CANCELED
    if all(s.finished for s in stages):
        return SUCCEEDED
    return PENDING if all(s.state == STAGE_PENDING for s in stages) else IN_PROGRESS


def left_behind(stages: list[Stage]) -> list[str]:
    """Best-effort stages that gave up: what a deprovisioning could not clean, each with its error."""
    return [f"{s.name}: {s.last_error}" for s in stages if s.state == INCOMPLETE]


def failure_summary(stages: list[Stage]) -> str | None:
    """`stage NAME failed: ERROR` for a failed operation."""
    failed = next((s for s in stages if s.state == FAILED), None)
    return None if failed is None else f"stage {failed.name} failed: {failed.last_error}"


def global_deadline(created_at: datetime, stages: list[Stage], limit_seconds: float | None) -> datetime:
    """The whole operation's deadline: the configured limit, else the sum of its stages' deadlines, so the
    global one never fires while a stage is still within its own."""
    seconds = limit_seconds if limit_seconds is not None else sum(s.deadline_seconds for s in stages)
    return created_at + timedelta(seconds=seconds)


def format_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `2 h 5 min`."""
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"


def progress_description(
    what: str, started_at: datetime, now: datetime, expected_seconds: float | None, detail: str = ""
) -> str:
    """`waiting for the cluster: 12 of ~30 min (Processing 40%)`; past the usual time it says so."""
    elapsed = max(0.0, (now - started_at).total_seconds())
    minutes = int(elapsed // 60)
    suffix = f" ({detail})" if detail else ""
    if expected_seconds is None or expected_seconds < 60:
        return f"{what}: {format_duration(elapsed)}{suffix}"
    expected = round(expected_seconds / 60)
    if elapsed > expected_seconds:
        return f"{what}: {minutes} min, longer than the usual ~{expected} min{suffix}"
    return f"{what}: {minutes} of ~{expected} min{suffix}"


def due(stage: Stage, now: datetime) -> bool:
    """Whether the stage may be attempted now."""
    return not stage.finished and (stage.next_attempt_at is None or stage.next_attempt_at <= now)
