"""The reads behind both the admin API and the dashboard, one function per view on a caller's session, so
the two always show the same thing. Values of secrets are never read here: only names and keys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from rrm.core.resources import secret_refs
from rrm.core.selectors import Selector
from rrm.server.state import ServerState, utcnow
from rrm.server.views import component_view, event_view, runtime_conditions, runtime_detail, runtime_view
from rrm.store import repositories as repo
from rrm.store.tables import Runtime, RuntimeStatus

T = TypeVar("T")
RUNTIME_EVENTS = 20


async def read(state: ServerState, work: Callable[[Session], T]) -> T:
    """Run `work` in one read transaction off the event loop."""

    def run() -> T:
        with state.db.read() as session:
            return work(session)

    return await asyncio.to_thread(run)


def runtime_views(state: ServerState, session: Session, rows: Sequence[Runtime]) -> list[dict[str, Any]]:
    return _views(state, session, rows, repo.statuses_for(session, [row.id for row in rows]))


def _views(
    state: ServerState, session: Session, rows: Sequence[Runtime], statuses: Mapping[str, RuntimeStatus]
) -> list[dict[str, Any]]:
    now = utcnow()
    transitions = repo.condition_transitions(session, [row.id for row in rows])
    views = []
    for row in rows:
        status = statuses.get(row.id)
        conditions = runtime_conditions(state.fleet, row.id, status, now, state.settings.heartbeat_grace)
        views.append(runtime_view(state.fleet, row, status, conditions, transitions.get(row.id, {})))
    return views


def runtimes(state: ServerState, session: Session, selector: Selector | None) -> list[dict[str, Any]]:
    rows = [r for r in repo.all_runtimes(session) if selector is None or selector.matches(r.labels)]
    return runtime_views(state, session, rows)


def runtime(state: ServerState, session: Session, name: str) -> dict[str, Any] | None:
    """The runtime's view, what its agent last reported, and its recent events; None when unknown. The
    view and the report come from the one status row read."""
    row = repo.runtime_by_name(session, name)
    if row is None:
        return None
    statuses = repo.statuses_for(session, [row.id])
    view = _views(state, session, [row], statuses)[0]
    detail = runtime_detail(view, state.fleet, statuses.get(row.id))
    detail["events"] = [
        {"id": e.id, "time": e.time.isoformat(), "type": e.type, "message": e.message}
        for e in repo.recent_events(session, f"runtime/{name}", RUNTIME_EVENTS)
    ]
    return detail


def ready_runtime_ids(state: ServerState, session: Session) -> set[str]:
    now = utcnow()
    statuses = repo.statuses(session)
    ready = set()
    for runtime_id in state.fleet.runtimes:
        conditions = runtime_conditions(
            state.fleet, runtime_id, statuses.get(runtime_id), now, state.settings.heartbeat_grace
        )
        if conditions[2].status == "True":
            ready.add(runtime_id)
    return ready


def components(state: ServerState, session: Session) -> list[dict[str, Any]]:
    ready = ready_runtime_ids(state, session)
    rows = {c.name: c for c in repo.all_components(session)}
    views = []
    for name in sorted(state.fleet.components):
        view = component_view(state.fleet, name, ready)
        view.pop("runtimes")
        view["updated_at"] = rows[name].updated_at.isoformat() if name in rows else None
        views.append(view)
    return views


def component(state: ServerState, session: Session, name: str) -> dict[str, Any] | None:
    """The component's view with its manifest (secretKeyRefs, never values) and its runtimes."""
    if name not in state.fleet.components:
        return None
    view = component_view(state.fleet, name, ready_runtime_ids(state, session))
    row = repo.component(session, name)
    view["updated_at"] = row.updated_at.isoformat() if row else None
    view["manifest"] = state.fleet.components[name].manifest
    return view


def component_history(session: Session, name: str) -> list[dict[str, Any]]:
    """Every revision, newest first; empty for a name that never existed."""
    return [
        {
            "revision": r.revision,
            "created_at": r.created_at.isoformat(),
            "action": r.action,
            "manifest": r.manifest,
        }
        for r in repo.component_history(session, name)
    ]


def secrets(session: Session) -> list[dict[str, Any]]:
    """Names, keys and users of the secrets; the ciphertext is not even loaded into the answer."""
    users: dict[str, list[str]] = {}
    for c in repo.all_components(session):
        for secret in secret_refs(c.manifest):
            users.setdefault(secret, []).append(c.name)
    return [
        {
            "name": s.name,
            "keys": s.keys,
            "revision": s.revision,
            "used_by": sorted(users.get(s.name, [])),
            "updated_at": s.updated_at.isoformat(),
        }
        for s in repo.all_secrets(session)
    ]


def events(session: Session, after: int, limit: int, subject: str | None = None) -> list[dict[str, Any]]:
    return [event_view(e) for e in repo.events_after(session, after, limit, subject)]
