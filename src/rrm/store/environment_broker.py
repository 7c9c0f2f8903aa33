"""The Environment Broker's durable state: platforms' credentials, which platform ordered which environment
(and with what request), and the kubeconfig bindings issued for them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from rrm.store.tables import BrokeredEnvironment, EnvironmentBinding, EnvironmentRow, PlatformCredential


def platform(session: Session, name: str) -> PlatformCredential | None:
    return session.get(PlatformCredential, name)


def set_platform(session: Session, name: str, password_hash: str, region: str | None, now: datetime) -> None:
    session.execute(delete(PlatformCredential).where(PlatformCredential.name == name))
    session.add(PlatformCredential(name=name, password_hash=password_hash, region=region, created_at=now))


def brokered(session: Session, environment_id: str) -> BrokeredEnvironment | None:
    return session.get(BrokeredEnvironment, environment_id)


def trials_of(session: Session, global_account: str, trial_plans: Sequence[str]) -> int:
    """Environments of a trial plan this global account ordered that are not deleted (an expired one
    still counts: its lifetime is used up)."""
    query = select(func.count()).where(
        EnvironmentRow.global_account == global_account,
        EnvironmentRow.plan.in_(trial_plans),
        EnvironmentRow.archived_at.is_(None),
    )
    return session.scalar(query) or 0


def unexpired_trials(session: Session, trial_plans: Sequence[str], before: datetime) -> Sequence[str]:
    """Environment ids of trial plans created before `before`, not deleted and not expired yet."""
    query = (
        select(EnvironmentRow.id)
        .join(BrokeredEnvironment, BrokeredEnvironment.environment_id == EnvironmentRow.id)
        .where(
            EnvironmentRow.plan.in_(trial_plans),
            EnvironmentRow.archived_at.is_(None),
            EnvironmentRow.created_at < before,
            BrokeredEnvironment.expired_at.is_(None),
        )
    )
    return session.scalars(query).all()


def binding(session: Session, environment_id: str, binding_id: str) -> EnvironmentBinding | None:
    return session.get(EnvironmentBinding, (environment_id, binding_id))


def expired_bindings(session: Session, environment_id: str, now: datetime) -> Sequence[EnvironmentBinding]:
    query = select(EnvironmentBinding).where(
        EnvironmentBinding.environment_id == environment_id, EnvironmentBinding.expires_at <= now
    )
    return session.scalars(query).all()


def live_bindings(session: Session, environment_id: str, now: datetime) -> int:
    query = select(func.count()).where(
        EnvironmentBinding.environment_id == environment_id, EnvironmentBinding.expires_at > now
    )
    return session.scalar(query) or 0


def bindings_of(session: Session, environment_id: str) -> Sequence[EnvironmentBinding]:
    query = select(EnvironmentBinding).where(EnvironmentBinding.environment_id == environment_id)
    return session.scalars(query).all()
