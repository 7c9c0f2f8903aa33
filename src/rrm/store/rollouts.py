"""Queries and writes of rollout policies and rollouts, each on a caller's session.

A write that changes which revision a runtime receives (a rollout started, a wave started, an end) is
followed by the caller with `record_rollout_change`, so every replica's fleet re-renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from rrm.core.rollouts import ACTIVE_STATES
from rrm.store.repositories import ENTITY_ROLLOUT, record_change
from rrm.store.tables import Rollout, RolloutPolicyRow

# policies ---------------------------------------------------------------------------------------------


def policy(session: Session, name: str) -> RolloutPolicyRow | None:
    return session.get(RolloutPolicyRow, name)


def all_policies(session: Session) -> Sequence[RolloutPolicyRow]:
    return session.scalars(select(RolloutPolicyRow).order_by(RolloutPolicyRow.name)).all()


def save_policy(session: Session, name: str, spec: dict[str, Any], now: datetime) -> None:
    row = session.get(RolloutPolicyRow, name)
    if row is None:
        session.add(RolloutPolicyRow(name=name, spec=spec, created_at=now, updated_at=now))
    else:
        row.spec, row.updated_at = spec, now


def delete_policy(session: Session, row: RolloutPolicyRow) -> None:
    session.delete(row)


# rollouts ---------------------------------------------------------------------------------------------


def record_rollout_change(session: Session, component: str, now: datetime) -> None:
    record_change(session, ENTITY_ROLLOUT, component, now)


_ACTIVE_ROLLOUT = (  # built once: every component write asks
    select(Rollout)
    .where(Rollout.component == bindparam("component"), Rollout.state.in_(ACTIVE_STATES))
    .order_by(Rollout.id.desc())
    .limit(1)
)


def active_rollout(session: Session, component: str) -> Rollout | None:
    return session.scalars(_ACTIVE_ROLLOUT, {"component": component}).first()


def active_rollouts(session: Session) -> Sequence[Rollout]:
    query = select(Rollout).where(Rollout.state.in_(ACTIVE_STATES))
    return session.scalars(query.order_by(Rollout.component)).all()


def latest_rollout(session: Session, component: str) -> Rollout | None:
    query = select(Rollout).where(Rollout.component == component).order_by(Rollout.id.desc()).limit(1)
    return session.scalars(query).first()


def latest_rollouts(session: Session) -> Sequence[Rollout]:
    """The newest rollout of every component that ever had one, by component name."""
    newest = select(func.max(Rollout.id)).group_by(Rollout.component)
    query = select(Rollout).where(Rollout.id.in_(newest)).order_by(Rollout.component)
    return session.scalars(query).all()


def rollout_counts(session: Session) -> dict[str, int]:
    """state → number of rollouts in it."""
    query = select(Rollout.state, func.count()).group_by(Rollout.state)
    return {state: int(count) for state, count in session.execute(query).all()}


def add_rollout(session: Session, row: Rollout) -> Rollout:
    session.add(row)
    session.flush()
    return row
