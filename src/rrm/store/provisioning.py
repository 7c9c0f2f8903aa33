"""Environments, their operations and the operations' stages: the provisioning engine's durable state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Select, Table, and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from rrm.core.operations import FINISHED_OPERATION_STATES, Stage
from rrm.store.tables import EnvironmentRow, OperationRow, OperationStageRow

STAGE_FIELDS = (
    "state", "best_effort", "deadline_seconds", "attempts", "started_at", "deadline_at", "next_attempt_at",
    "finished_at", "last_error", "description",
)  # fmt: skip

OPERATION_FIELDS = (
    "state", "updated_at", "left_behind", "next_run_at", "description", "last_error", "finished_at",
)  # fmt: skip
Row = TypeVar("Row")
_stages = cast(Table, OperationStageRow.__table__)
# the engine's writes, built once: plain statements, no unit of work (it records every attempt)
_SAVE_STAGE = (
    update(_stages)
    .where(
        and_(_stages.c.operation_id == bindparam("_operation"), _stages.c.position == bindparam("_position"))
    )
    .values({name: bindparam(name) for name in STAGE_FIELDS})
)
_operations = cast(Table, OperationRow.__table__)
_SAVE_OPERATION = (
    update(_operations)
    .where(_operations.c.id == bindparam("_id"))
    .values({name: bindparam(name) for name in OPERATION_FIELDS})
)

# not finished: one comparison per state, not `NOT IN` with an expanding parameter, whose SQL is rendered
# again at every execution (the engine's reads run with every step and record)
_UNFINISHED = and_(*(_operations.c.state != state for state in FINISHED_OPERATION_STATES))
_DEPROVISIONING_PENDING = (
    select(_operations.c.id)
    .where(
        _operations.c.environment_id == bindparam("environment_id"),
        _operations.c.type == "deprovision",
        _UNFINISHED,
    )
    .limit(1)
)


@dataclass(frozen=True)
class EnvironmentFilter:
    include_archived: bool = False
    global_account: str | None = None
    subaccount: str | None = None
    state: str | None = None
    plan: str | None = None


def active_environment(session: Session, name: str) -> EnvironmentRow | None:
    """The environment of that name that is not archived (an archived one keeps its name in history)."""
    query = select(EnvironmentRow).where(EnvironmentRow.name == name, EnvironmentRow.archived_at.is_(None))
    return session.scalars(query).first()


def latest_environment(session: Session, name: str) -> EnvironmentRow | None:
    """The active environment of that name, else the one archived last."""
    query = select(EnvironmentRow).where(EnvironmentRow.name == name)
    rows = session.scalars(query.order_by(EnvironmentRow.created_at.desc())).all()
    return next((r for r in rows if r.archived_at is None), rows[0] if rows else None)


def environment(session: Session, environment_id: str) -> EnvironmentRow | None:
    return session.get(EnvironmentRow, environment_id)


def environments(
    session: Session, where: EnvironmentFilter, offset: int, limit: int
) -> tuple[Sequence[EnvironmentRow], int]:
    """One page of environments by name, and how many match in all."""
    query = select(EnvironmentRow)
    if not where.include_archived:
        query = query.where(EnvironmentRow.archived_at.is_(None))
    for column, value in (
        (EnvironmentRow.global_account, where.global_account),
        (EnvironmentRow.subaccount, where.subaccount),
        (EnvironmentRow.state, where.state),
        (EnvironmentRow.plan, where.plan),
    ):
        if value is not None:
            query = query.where(column == value)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = query.order_by(EnvironmentRow.name, EnvironmentRow.created_at).offset(offset).limit(limit)
    return session.scalars(page).all(), total


def operations_of(session: Session, environment_ids: Sequence[str]) -> dict[str, list[OperationRow]]:
    """Each environment's operations, oldest first."""
    query = select(OperationRow).where(OperationRow.environment_id.in_(environment_ids))
    ordered = query.order_by(OperationRow.created_at, OperationRow.id)
    return _grouped(session, ordered, environment_ids, lambda row: row.environment_id)


def operation(session: Session, operation_id: str) -> OperationRow | None:
    return session.get(OperationRow, operation_id)


def unfinished_operations(session: Session) -> list[tuple[str, str, datetime | None]]:
    """(id, environment id, next run) of the operations the engine still has to drive, oldest first: plain
    rows, no objects, as the engine asks after every attempt."""
    query = select(OperationRow.id, OperationRow.environment_id, OperationRow.next_run_at).where(_UNFINISHED)
    rows = session.execute(query.order_by(OperationRow.created_at, OperationRow.id))
    return [(id_, environment_id, next_run_at) for id_, environment_id, next_run_at in rows]


def operation_counts(session: Session) -> dict[tuple[str, str], int]:
    """(type, state) → number of operations, for the metrics."""
    query = select(OperationRow.type, OperationRow.state, func.count()).group_by(
        OperationRow.type, OperationRow.state
    )
    return {(type_, state): count for type_, state, count in session.execute(query)}


def stage_rows(session: Session, operation_ids: Sequence[str]) -> dict[str, list[OperationStageRow]]:
    query = select(OperationStageRow).where(OperationStageRow.operation_id.in_(operation_ids))
    ordered = query.order_by(OperationStageRow.operation_id, OperationStageRow.position)
    return _grouped(session, ordered, operation_ids, lambda row: row.operation_id)


def _grouped(
    session: Session, query: Select[Row], ids: Sequence[str], owner: Callable[[Row], str]
) -> dict[str, list[Row]]:
    """The rows of `query`, in its order, under their `owner`'s id; an id without rows has an empty list."""
    result: dict[str, list[Row]] = {i: [] for i in ids}
    for row in session.scalars(query):
        result[owner(row)].append(row)
    return result


def stages(session: Session, operation_id: str) -> list[Stage]:
    """One operation's stages in order (`==`, not a one-element `IN`, whose SQL is rendered again at
    every execution: the engine reads them before every step)."""
    query = select(OperationStageRow).where(OperationStageRow.operation_id == operation_id)
    return [stage_of(row) for row in session.scalars(query.order_by(OperationStageRow.position))]


def stage_of(row: OperationStageRow) -> Stage:
    return Stage(name=row.name, **{name: getattr(row, name) for name in STAGE_FIELDS})


def add_operation(session: Session, row: OperationRow, planned: Sequence[Stage]) -> None:
    session.add(row)
    session.flush()
    for position, stage in enumerate(planned):
        values: dict[str, Any] = {name: getattr(stage, name) for name in STAGE_FIELDS}
        session.add(OperationStageRow(operation_id=row.id, position=position, name=stage.name, **values))


def save_stage(session: Session, operation_id: str, position: int, stage: Stage) -> None:
    row = session.get(OperationStageRow, (operation_id, position))
    assert row is not None, f"operation {operation_id} has no stage {position}"
    for name in STAGE_FIELDS:
        setattr(row, name, getattr(stage, name))


def save_stages(session: Session, operation_id: str, changed: Sequence[tuple[int, Stage]]) -> None:
    """The stages at these positions as they are now, in one statement."""
    if changed:
        rows = [
            {
                "_operation": operation_id,
                "_position": position,
                **{n: getattr(stage, n) for n in STAGE_FIELDS},
            }
            for position, stage in changed
        ]
        session.connection().execute(_SAVE_STAGE, rows)


def save_operation(session: Session, row: OperationRow) -> None:
    """The engine's fields of an operation it holds (only the engine changes an unfinished operation)."""
    values = {name: getattr(row, name) for name in OPERATION_FIELDS}
    session.connection().execute(_SAVE_OPERATION, {"_id": row.id, **values})


def deprovisioning_pending(session: Session, environment_id: str) -> bool:
    """Whether a delete asked for the environment's deprovisioning and it has not finished (a plain
    statement: the engine asks with every record it makes)."""
    found = session.connection().execute(_DEPROVISIONING_PENDING, {"environment_id": environment_id})
    return found.first() is not None


def pending_deprovisioning(session: Session, environment_id: str) -> OperationRow | None:
    """The environment's deprovisioning that has not finished, if a delete asked for one."""
    query = select(OperationRow).where(
        OperationRow.environment_id == environment_id, OperationRow.type == "deprovision", _UNFINISHED
    )
    return session.scalars(query).first()


def incomplete_deprovisionings(session: Session) -> list[OperationRow]:
    """Finished deprovisionings that left something behind: the sweep's work."""
    query = select(OperationRow).where(
        OperationRow.type == "deprovision", OperationRow.state.in_(FINISHED_OPERATION_STATES)
    )
    return [row for row in session.scalars(query) if row.left_behind]
