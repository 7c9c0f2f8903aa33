"""Admin API of progressive rollouts: read them, steer them, and the rollout policies."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Response
from sqlalchemy.orm import Session

from rrm.core.rollouts import NotAllowed, policy_name_of
from rrm.server.api.common import BoundedRoute, found_or_404, read_found, reader, write, writer
from rrm.server.apply import Conflict
from rrm.server.metrics import ADMIN_WRITES
from rrm.server.queries import read
from rrm.server.rollouts import views
from rrm.server.rollouts.lifecycle import CannotRollBack, RolloutNotFound, control
from rrm.server.state import ServerState, server_state, utcnow
from rrm.store import repositories as repo
from rrm.store import rollouts as rollout_repo

router = APIRouter(
    prefix="/api/v1", tags=["rollouts"], dependencies=[Depends(reader)], route_class=BoundedRoute
)


@router.get("/rollouts")
async def list_rollouts(state: ServerState = Depends(server_state)) -> list[dict[str, Any]]:
    """The newest rollout of every component that had one."""
    grace = state.settings.heartbeat_grace
    return await read(state, lambda s: views.rollout_list(s, state.fleet, utcnow(), grace))


async def _detail(state: ServerState, component: str) -> dict[str, Any]:
    grace = state.settings.heartbeat_grace
    return await read_found(
        state,
        lambda s: views.rollout_detail(s, state.fleet, component, utcnow(), grace),
        f"component {component!r} has no rollout",
    )


@router.get("/rollouts/{component}")
async def get_rollout(component: str, state: ServerState = Depends(server_state)) -> dict[str, Any]:
    """The component's current (else latest) rollout: its waves, each runtime's state, its failures."""
    return await _detail(state, component)


@router.post("/rollouts/{component}/{action}", dependencies=[Depends(writer)])
async def steer_rollout(
    component: str,
    action: Literal["pause", "resume", "abort", "promote"],
    state: ServerState = Depends(server_state),
) -> dict[str, Any]:
    def work(session: Session) -> None:
        try:
            control(session, component, action, utcnow())
        except RolloutNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except (NotAllowed, CannotRollBack) as exc:
            raise Conflict(str(exc)) from exc

    await write(state, work)
    ADMIN_WRITES.labels("rollout", action).inc()
    return await _detail(state, component)


@router.get("/rollout-policies")
async def list_policies(state: ServerState = Depends(server_state)) -> list[dict[str, Any]]:
    return await read(state, lambda s: views.policy_views(s, rollout_repo.all_policies(s)))


@router.delete("/rollout-policies/{name}", status_code=204, dependencies=[Depends(writer)])
async def delete_policy(name: str, state: ServerState = Depends(server_state)) -> Response:
    def work(session: Session) -> None:
        row = found_or_404(rollout_repo.policy(session, name), f"rollout policy {name!r} not found")
        users = sorted(c.name for c in repo.all_components(session) if policy_name_of(c.manifest) == name)
        if users:
            raise Conflict(f"rollout policy {name!r} is still named by component(s): {', '.join(users)}")
        now = utcnow()
        rollout_repo.delete_policy(session, row)
        repo.record_event(session, "RolloutPolicyDeleted", f"rolloutpolicy/{name}", "deleted", now)

    await write(state, work)
    ADMIN_WRITES.labels("rolloutpolicy", "deleted").inc()
    return Response(status_code=204)
