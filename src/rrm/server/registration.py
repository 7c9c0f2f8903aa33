"""Registering a runtime, defined once: the admin API and the provisioning engine both store a new runtime
this way (the row, its scenarios, the change the fleet catches up with, the event)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from rrm.store import compass as compass_store
from rrm.store import repositories as repo
from rrm.store.tables import Runtime


def add_runtime(
    session: Session,
    name: str,
    kind: str,
    labels: dict[str, str],
    scenarios: list[str],
    now: datetime,
    detail: str,
) -> Runtime:
    """Store a new runtime in the caller's transaction; `detail` ends the RuntimeRegistered event."""
    row = Runtime(id=str(uuid.uuid4()), name=name, kind=kind, labels=labels, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    compass_store.set_runtime_scenarios(session, row.id, scenarios, now)
    repo.record_change(session, repo.ENTITY_RUNTIME, row.id, now)
    repo.record_event(session, "RuntimeRegistered", f"runtime/{name}", f"kind {kind}, {detail}", now)
    return row
