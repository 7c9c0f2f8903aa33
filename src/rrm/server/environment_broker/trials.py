"""Trials expire, as KEB's expiry job does: an environment of the `trial` plan ordered through the broker is
suspended once `--trial-lifetime` (default 14 days) has passed since it was requested, and marked expired
so it can never be resumed. Singleton work on the leader; an environment with an operation under way is
looked at again on the next pass."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.orm import Session

from rrm.core.operations import SUCCEEDED, SUSPEND, format_duration
from rrm.server.environment_broker.catalog import TRIAL_PLAN
from rrm.server.provisioning.routes import new_operation
from rrm.server.state import ServerState, utcnow
from rrm.store import environment_broker as store
from rrm.store import provisioning as provisioning_store
from rrm.store import repositories as repo
from rrm.store.leadership import Leadership

log = logging.getLogger("rrm.server.environment_broker")
INTERVAL = 5.0  # seconds between passes: a trial is suspended within seconds of its lifetime


async def run_trial_expiry(state: ServerState, leadership: Leadership, interval: float = INTERVAL) -> None:
    while True:
        try:
            if leadership.held:  # the housekeeping loop acquires it
                await asyncio.to_thread(expire_trials, state)
        except Exception:
            log.exception("trial expiry pass failed")
        await asyncio.sleep(interval)


def expire_trials(state: ServerState) -> list[str]:
    """Suspend and mark every trial past its lifetime; the names of those expired now."""
    lifetime = timedelta(seconds=state.settings.trial_lifetime_seconds)
    with state.db.write() as session:
        now = utcnow()
        due = store.unexpired_trials(session, [TRIAL_PLAN], now - lifetime)
        return [name for environment_id in due if (name := _expire(state, session, environment_id))]


def _expire(state: ServerState, session: Session, environment_id: str) -> str | None:
    engine, now = state.provisioning, utcnow()
    environment = provisioning_store.environment(session, environment_id)
    ordered = store.brokered(session, environment_id)
    assert engine is not None and environment is not None and ordered is not None
    operations = provisioning_store.operations_of(session, [environment_id])[environment_id]
    if any(o.state in ("pending", "in progress") for o in operations):
        return None
    ordered.expired_at = now
    message = f"the trial's lifetime of {lifetime_text(state)} is over"
    if environment.state == SUCCEEDED:
        operation, stages = new_operation(engine, environment, SUSPEND, {"expired": True}, now)
        provisioning_store.add_operation(session, operation, stages)
        message += f": suspended by operation {operation.id}; it cannot be resumed"
    repo.record_event(session, "TrialExpired", f"environment/{environment.name}", message, now)
    return environment.name


def lifetime_text(state: ServerState) -> str:
    return format_duration(state.settings.trial_lifetime_seconds)
