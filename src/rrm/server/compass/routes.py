"""Admin API of Compass: applications, scenarios and their assignment, label definitions, and the broker
credentials of runtimes. Applications, label definitions and scenario assignments are created with
`POST /api/v1/apply`; everything here reads the fleet's memory, which every write catches up first."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from rrm.core.scenarios import DEFAULT_SCENARIO
from rrm.core.selectors import SelectorError, parse_selector
from rrm.server.api.common import BoundedRoute, found_or_404, reader, write, writer
from rrm.server.apply import Conflict, Problem
from rrm.server.auth import token_hash
from rrm.server.compass import views
from rrm.server.compass.labels import (
    SCENARIOS_KEY,
    check_runtime_scenarios,
    scenario_name_error,
    scenarios_schema,
)
from rrm.server.compass.registry import RegisteredApplication
from rrm.server.fleet import RuntimeEntry
from rrm.server.queries import read
from rrm.server.state import ServerState, server_state, utcnow
from rrm.store import compass as store
from rrm.store import repositories as repo

BROKER_PASSWORD_PREFIX = "rrmbp_"
BROKER_PATH = "/broker"

router = APIRouter(
    prefix="/api/v1", tags=["compass"], dependencies=[Depends(reader)], route_class=BoundedRoute
)


def _runtime_named(state: ServerState, name: str) -> RuntimeEntry:
    return found_or_404(views.runtime_named(state.fleet, name), f"runtime {name!r} not found")


# applications -----------------------------------------------------------------------------------------


@router.get("/applications")
async def list_applications(runtime: str | None = None, state: ServerState = Depends(server_state)) -> Any:
    """Every application, or those the runtime sees (sharing one of its scenarios)."""
    if runtime is not None:
        return views.runtime_applications(state.fleet, _runtime_named(state, runtime))
    return views.application_list(state.fleet)


def _application(state: ServerState, name: str) -> RegisteredApplication:
    return found_or_404(state.fleet.registry.applications.get(name), f"application {name!r} not found")


@router.get("/applications/{name}")
async def get_application(name: str, state: ServerState = Depends(server_state)) -> Any:
    app = _application(state, name)
    runtimes = views.seen_by(state.fleet).get(name, [])
    return {**views.application_view(app), "runtimes": runtimes, "manifest": app.manifest}


@router.delete("/applications/{name}", status_code=204, dependencies=[Depends(writer)])
async def delete_application(name: str, state: ServerState = Depends(server_state)) -> Response:
    return await _delete(
        state,
        lambda s: store.application(s, name) is not None,
        lambda s, now: store.delete_application(s, name, now),
        missing=f"application {name!r} not found",
        event=("ApplicationDeleted", f"application/{name}"),
    )


async def _delete(
    state: ServerState,
    exists: Callable[[Session], bool],
    delete: Callable[[Session, datetime], None],
    *,
    missing: str,
    event: tuple[str, str],
    in_use: Callable[[Session], str | None] = lambda session: None,
) -> Response:
    """Delete what `exists` finds, recording the (type, subject) event; 404 saying what is missing, 409
    with why when `in_use` says it must stay."""

    def work(session: Session) -> None:
        if not exists(session):
            raise HTTPException(404, missing)
        if (why := in_use(session)) is not None:
            raise Conflict(why)
        now = utcnow()
        delete(session, now)
        repo.record_event(session, *event, "deleted", now)

    await write(state, work)
    return Response(status_code=204)


# scenarios --------------------------------------------------------------------------------------------


class NewScenario(BaseModel):
    name: str


class Assignment(BaseModel):
    selector: str


class ScenarioChange(BaseModel):
    add: list[str] = []
    remove: list[str] = []


@router.get("/scenarios")
async def list_scenarios(state: ServerState = Depends(server_state)) -> Any:
    return views.scenario_views(state.fleet, await read(state, store.scenario_names))


@router.post("/scenarios", status_code=201, dependencies=[Depends(writer)])
async def create_scenario(body: NewScenario, state: ServerState = Depends(server_state)) -> Any:
    if (error := scenario_name_error(body.name)) is not None:
        raise HTTPException(422, [Problem(None, "Scenario", body.name, "name", error).as_dict()])

    def work(session: Session) -> None:
        if body.name in store.scenario_names(session):
            raise Conflict(f"scenario {body.name!r} already exists")
        now = utcnow()
        store.add_scenario(session, body.name, now)
        repo.record_event(session, "ScenarioCreated", f"scenario/{body.name}", "created", now)

    await write(state, work)
    return {"name": body.name}


@router.delete("/scenarios/{name}", status_code=204, dependencies=[Depends(writer)])
async def delete_scenario(name: str, state: ServerState = Depends(server_state)) -> Response:
    return await _delete(
        state,
        lambda s: name in store.scenario_names(s),
        lambda s, now: store.delete_scenario(s, name),
        missing=f"scenario {name!r} not found",
        event=("ScenarioDeleted", f"scenario/{name}"),
        in_use=lambda s: _scenario_in_use(s, name),
    )


def _scenario_in_use(session: Session, name: str) -> str | None:
    """Why the scenario must stay: built in, or what still uses it."""
    if name == DEFAULT_SCENARIO:
        return f"{DEFAULT_SCENARIO} is built in: new applications and runtimes are in it"
    users = [f"application {a.name}" for a in store.all_applications(session) if name in a.scenarios]
    users += [
        f"runtime {r.name}"
        for r in repo.all_runtimes(session)
        if name in store.runtime_scenarios(session, r.id)
    ]
    if store.assignment(session, name) is not None:
        users.append("its automatic assignment (rrm delete scenarioassignment)")
    return f"scenario {name!r} is in use by {', '.join(users)}" if users else None


@router.put("/scenarios/{name}/assignment", dependencies=[Depends(writer)])
async def assign_scenario(name: str, body: Assignment, state: ServerState = Depends(server_state)) -> Any:
    """Runtimes whose labels match the selector are in the scenario (and leave it when they stop matching)."""
    try:
        parse_selector(body.selector)
    except SelectorError as exc:
        raise HTTPException(
            422, [Problem(None, "ScenarioAssignment", name, "selector", str(exc)).as_dict()]
        ) from exc

    def work(session: Session) -> None:
        if name not in store.scenario_names(session):
            raise HTTPException(404, f"scenario {name!r} not found")
        now = utcnow()
        store.set_assignment(session, name, body.selector, now)
        repo.record_event(
            session, "ScenarioAssignmentUpdated", f"scenario/{name}", f"selector {body.selector!r}", now
        )

    await write(state, work)
    return {"scenario": name, "selector": body.selector}


@router.delete("/scenarios/{name}/assignment", status_code=204, dependencies=[Depends(writer)])
async def unassign_scenario(name: str, state: ServerState = Depends(server_state)) -> Response:
    return await _delete(
        state,
        lambda s: store.assignment(s, name) is not None,
        lambda s, now: store.delete_assignment(s, name, now),
        missing=f"scenario {name!r} has no automatic assignment",
        event=("ScenarioAssignmentDeleted", f"scenario/{name}"),
    )


@router.get("/runtimes/{name}/scenarios")
async def runtime_scenarios(name: str, state: ServerState = Depends(server_state)) -> Any:
    """The scenarios the runtime was put in, and those it is in (with automatic assignments)."""
    return views.runtime_scenarios_view(state.fleet, _runtime_named(state, name))


@router.patch("/runtimes/{name}/scenarios", dependencies=[Depends(writer)])
async def change_runtime_scenarios(
    name: str, body: ScenarioChange, state: ServerState = Depends(server_state)
) -> Any:
    def work(session: Session) -> None:
        row = found_or_404(repo.runtime_by_name(session, name), f"runtime {name!r} not found")
        current = store.runtime_scenarios(session, row.id)
        wanted = sorted({*current, *body.add} - set(body.remove))
        check_runtime_scenarios(session, name, wanted)
        if wanted != current:
            now = utcnow()
            store.set_runtime_scenarios(session, row.id, wanted, now)
            repo.record_event(
                session, "RuntimeScenarios", f"runtime/{name}", ", ".join(wanted) or "none", now
            )

    await write(state, work)
    return views.runtime_scenarios_view(state.fleet, _runtime_named(state, name))


# label definitions ------------------------------------------------------------------------------------


@router.get("/labeldefinitions")
async def list_label_definitions(state: ServerState = Depends(server_state)) -> Any:
    def work(session: Session) -> list[dict[str, Any]]:
        builtin = {
            "key": SCENARIOS_KEY,
            "schema": scenarios_schema(store.scenario_names(session)),
            "builtin": True,
        }
        defined = [
            {"key": k, "schema": s, "builtin": False} for k, s in store.label_definitions(session).items()
        ]
        return sorted([builtin, *defined], key=lambda d: str(d["key"]))

    return await read(state, work)


@router.delete("/labeldefinitions/{key:path}", status_code=204, dependencies=[Depends(writer)])
async def delete_label_definition(key: str, state: ServerState = Depends(server_state)) -> Response:
    def work(session: Session) -> None:
        if key == SCENARIOS_KEY:
            raise Conflict("the scenarios label definition is built in")
        if not store.delete_label_definition(session, key):
            raise HTTPException(404, f"label definition {key!r} not found")
        repo.record_event(
            session, "LabelDefinitionDeleted", f"labeldefinition/{key}"[:128], "deleted", utcnow()
        )

    await write(state, work)
    return Response(status_code=204)


# broker credentials -----------------------------------------------------------------------------------


class BrokerCredentialsRequest(BaseModel):
    rotate: bool = False


@router.post("/runtimes/{name}/broker-credentials", status_code=201, dependencies=[Depends(writer)])
async def broker_credentials(
    name: str, body: BrokerCredentialsRequest, request: Request, state: ServerState = Depends(server_state)
) -> Any:
    """HTTP Basic credentials for the runtime's calls to the System Broker, shown this once (only the
    password's sha256 is kept). Existing ones are replaced only with `rotate`."""
    password = BROKER_PASSWORD_PREFIX + secrets.token_urlsafe(32)

    def work(session: Session) -> None:
        row = found_or_404(repo.runtime_by_name(session, name), f"runtime {name!r} not found")
        exists = store.has_broker_credential(session, row.id)
        if exists and not body.rotate:
            raise Conflict(f"runtime {name!r} already has broker credentials; rotate them to get new ones")
        now = utcnow()
        store.set_broker_credential(session, row.id, row.name, token_hash(password), now)
        what = "rotated" if exists else "issued"
        repo.record_event(session, f"BrokerCredentials{what.capitalize()}", f"runtime/{name}", what, now)

    await write(state, work)
    return {
        "username": name,
        "password": password,
        "broker_url": str(request.base_url).rstrip("/") + BROKER_PATH,
    }


@router.delete("/runtimes/{name}/broker-credentials", status_code=204, dependencies=[Depends(writer)])
async def revoke_broker_credentials(name: str, state: ServerState = Depends(server_state)) -> Response:
    def work(session: Session) -> None:
        row = repo.runtime_by_name(session, name)
        if row is None or not store.has_broker_credential(session, row.id):
            raise HTTPException(404, f"runtime {name!r} has no broker credentials")
        now = utcnow()
        store.delete_broker_credential(session, row.id)
        repo.record_event(session, "BrokerCredentialsRevoked", f"runtime/{name}", "revoked", now)

    await write(state, work)
    return Response(status_code=204)
