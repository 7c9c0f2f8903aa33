"""`/api/v1/environments` and `/api/v1/plans`: request, list, show, update and delete environments.

A request is checked against its plan before anything is stored (422 naming the field); what is stored is
the environment and its operation with every stage planned, so the answer (202, the environment's and the
operation's ids) comes at once and the engine does the rest. Secret parameters are sealed and never shown.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from rrm.core.labels import validate_labels
from rrm.core.names import dns1123_label_error
from rrm.core.operations import DEPROVISION, PROVISION, UPDATE, Stage, global_deadline
from rrm.server.api.common import BoundedRoute, found_or_404, read_found, reader, write, writer
from rrm.server.apply import Conflict, InvalidInput, Problem
from rrm.server.provisioning import account_routes
from rrm.server.provisioning.engine import Engine
from rrm.server.provisioning.plans import (
    Plan,
    parameter_problems,
    region_problem,
    split_secret,
    with_defaults,
)
from rrm.server.provisioning.stages import (
    CLUSTER_KUBECONFIG,
    LABEL_PREFIX,
    planned_stages,
    sealed_name,
    unseal,
)
from rrm.server.provisioning.views import environment_detail, environment_view
from rrm.server.queries import read
from rrm.server.state import ServerState, server_state, utcnow
from rrm.store import provisioning as store
from rrm.store import repositories as repo
from rrm.store.tables import EnvironmentRow, OperationRow

MAX_PAGE_SIZE = 100
router = APIRouter(
    prefix="/api/v1", tags=["environments"], dependencies=[Depends(reader)], route_class=BoundedRoute
)


class Tenant(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    global_account: str | None = Field(None, alias="globalAccount", min_length=1, max_length=255)
    subaccount: str | None = Field(None, min_length=1, max_length=255)


class CreateEnvironment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    plan: str
    region: str | None = None
    labels: dict[str, str] = {}
    parameters: dict[str, Any] = {}
    tenant: Tenant = Field(default_factory=lambda: Tenant.model_validate({}))


class UpdateEnvironment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: dict[str, str] | None = None
    parameters: dict[str, Any] = {}


def engine_of(state: ServerState) -> Engine:
    if state.provisioning is None:
        raise HTTPException(503, "provisioning is not running on this control plane")
    engine: Engine = state.provisioning
    return engine


def _refuse(problems: list[tuple[str, str]], name: str) -> None:
    if problems:
        raise HTTPException(422, [Problem(None, "Environment", name, f, m).as_dict() for f, m in problems])


def _label_problems(labels: dict[str, str]) -> list[tuple[str, str]]:
    reserved = [
        (f"labels.{k}", f"the prefix {LABEL_PREFIX} is reserved for rrm")
        for k in labels
        if k.startswith(LABEL_PREFIX)
    ]
    return [
        (f"labels.{f}" if not f.startswith("labels") else f, m) for f, m in validate_labels(labels)
    ] + reserved


def check_request(engine: Engine, body: CreateEnvironment) -> Plan:
    """The plan of a valid request; 422 naming each field that is not."""
    problems: list[tuple[str, str]] = []
    if (error := dns1123_label_error(body.name)) is not None:
        problems.append(("name", error))
    plan = engine.catalog.plans.get(body.plan)
    if plan is None:
        problems.append(("plan", f"unknown plan; plans: {', '.join(sorted(engine.catalog.plans))}"))
        _refuse(problems, body.name)
    assert plan is not None
    if (refusal := engine.catalog.refusals.get(plan.backend)) is not None:
        problems.append(("plan", refusal))
    if (error := region_problem(plan, body.region)) is not None:
        problems.append(("region", error))
    if plan.account_pool is not None and not body.tenant.global_account:
        problems.append(
            ("tenant.globalAccount", f"required: plan {plan.name} claims an account per global account")
        )
    problems += _label_problems(body.labels)
    problems += parameter_problems(plan, with_defaults(plan, body.parameters))
    _refuse(problems, body.name)
    return plan


def new_operation(
    engine: Engine, environment: EnvironmentRow, type_: str, request: dict[str, Any], now: datetime
) -> tuple[OperationRow, list[Stage]]:
    plan = engine.catalog.plans[environment.plan]
    stages = planned_stages(type_, plan, engine.catalog.backends[plan.backend])
    return OperationRow(
        id=str(uuid.uuid4()),
        environment_id=environment.id,
        type=type_,
        state="pending",
        request=request,
        description="waiting for the engine",
        last_error=None,
        left_behind=[],
        created_at=now,
        updated_at=now,
        deadline_at=global_deadline(now, stages, plan.operation_deadline),
        next_run_at=None,
        finished_at=None,
    ), stages


@router.get("/plans")
async def list_plans(state: ServerState = Depends(server_state)) -> list[dict[str, Any]]:
    engine = engine_of(state)
    return [
        {**p.view(), "unavailable": engine.catalog.refusals.get(p.backend)}
        for p in engine.catalog.plans.values()
    ]


@router.post("/environments", status_code=202, dependencies=[Depends(writer)])
async def create_environment(
    body: CreateEnvironment, state: ServerState = Depends(server_state)
) -> dict[str, Any]:
    engine = engine_of(state)
    plan = check_request(engine, body)

    def work(session: Session) -> tuple[str, str]:
        row, operation = start_provisioning(session, state, engine, plan, body)
        return row.id, operation.id

    environment_id, operation_id = await write(state, work)
    engine.wake(operation_id, environment_id)
    return {"id": environment_id, "name": body.name, "operation": operation_id, "state": "provisioning"}


def start_provisioning(
    session: Session,
    state: ServerState,
    engine: Engine,
    plan: Plan,
    body: CreateEnvironment,
    environment_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[EnvironmentRow, OperationRow]:
    """Store a checked request (`check_request`) as an environment and its provisioning operation; Conflict
    when the name is taken. The Environment Broker passes the OSB instance id as `environment_id`."""
    if store.active_environment(session, body.name) is not None:
        raise Conflict(f"environment {body.name!r} already exists")
    if repo.runtime_by_name(session, body.name) is not None:
        raise Conflict(f"a runtime named {body.name!r} exists already; an environment creates its own")
    clear, secret = split_secret(plan, with_defaults(plan, body.parameters))
    default_region = plan.regions[0] if plan.regions else None
    now = utcnow()
    row = EnvironmentRow(
        id=environment_id or str(uuid.uuid4()), name=body.name, plan=plan.name,
        region=body.region or default_region, labels=body.labels, parameters=clear, sealed=None,
        global_account=body.tenant.global_account, subaccount=body.tenant.subaccount, state="provisioning",
        runtime_id=None, data=data or {}, created_at=now, updated_at=now, archived_at=None,
    )  # fmt: skip
    if secret:
        row.sealed = state.box.seal(sealed_name(row.id), secret)
    session.add(row)
    session.flush()
    operation, stages = new_operation(engine, row, PROVISION, {}, now)
    store.add_operation(session, operation, stages)
    repo.record_event(
        session,
        "EnvironmentRequested",
        f"environment/{row.name}",
        f"plan {plan.name}, operation {operation.id}",
        now,
    )
    return row, operation


@router.get("/environments")
async def list_environments(
    all: bool = False,
    global_account: str | None = Query(None, alias="globalAccount"),
    subaccount: str | None = None,
    state_filter: str | None = Query(None, alias="state"),
    plan: str | None = None,
    page: int = Query(1, ge=1),
    page_size: int = Query(50, ge=1, le=MAX_PAGE_SIZE, alias="pageSize"),
    state: ServerState = Depends(server_state),
) -> dict[str, Any]:
    where = store.EnvironmentFilter(all, global_account, subaccount, state_filter, plan)

    def work(session: Session) -> dict[str, Any]:
        rows, total = store.environments(session, where, (page - 1) * page_size, page_size)
        operations = store.operations_of(session, [r.id for r in rows])
        items = [environment_view(state, row, operations[row.id]) for row in rows]
        return {"items": items, "total": total, "page": page, "pageSize": page_size}

    return await read(state, work)


@router.get("/environments/{name}")
async def get_environment(name: str, state: ServerState = Depends(server_state)) -> dict[str, Any]:
    def work(session: Session) -> dict[str, Any] | None:
        row = store.latest_environment(session, name)
        return None if row is None else environment_detail(state, session, row)

    return await read_found(state, work, f"environment {name!r} not found")


def _active_or_404(session: Session, name: str) -> EnvironmentRow:
    return found_or_404(store.active_environment(session, name), f"environment {name!r} not found")


@router.patch("/environments/{name}", status_code=202, dependencies=[Depends(writer)])
async def update_environment(
    name: str, body: UpdateEnvironment, state: ServerState = Depends(server_state)
) -> dict[str, Any]:
    engine = engine_of(state)
    _refuse(_label_problems(body.labels or {}), name)

    def work(session: Session) -> str:
        row = _active_or_404(session, name)
        return start_update(session, state, engine, row, body.parameters, body.labels).id

    operation_id = await write(state, work)
    engine.wake()
    return {"name": name, "operation": operation_id}


def start_update(
    session: Session,
    state: ServerState,
    engine: Engine,
    row: EnvironmentRow,
    parameters: dict[str, Any],
    labels: dict[str, str] | None,
) -> OperationRow:
    """Store changed parameters (only those the plan marks updatable) and labels and the update operation
    that applies them; InvalidInput naming each field refused, Conflict while the environment is deleted."""
    name = row.name
    if store.pending_deprovisioning(session, row.id) is not None:
        raise Conflict(f"environment {name!r} is being deleted")
    plan = engine.catalog.plans[row.plan]
    fixed = sorted(k for k in parameters if k not in plan.updatable)
    updatable = ", ".join(sorted(plan.updatable)) or "none"
    problems = [
        (f"parameters.{k}", f"cannot be changed on plan {plan.name} (updatable: {updatable})") for k in fixed
    ]
    merged = {**row.parameters, **unseal(state, row), **parameters}
    merged.pop(CLUSTER_KUBECONFIG, None)
    problems += parameter_problems(plan, merged)
    if problems:
        raise InvalidInput([Problem(None, "Environment", name, f, m) for f, m in problems])
    now = utcnow()
    clear, secret = split_secret(plan, merged)
    kept = {k: v for k, v in unseal(state, row).items() if k not in plan.secret}
    row.parameters, row.updated_at = clear, now
    if secret or kept:
        row.sealed = state.box.seal(sealed_name(row.id), {**kept, **secret})
    if labels is not None:
        row.labels = labels
    request = {"parameters": sorted(parameters), "labels": labels is not None}
    operation, stages = new_operation(engine, row, UPDATE, request, now)
    store.add_operation(session, operation, stages)
    repo.record_event(
        session, "EnvironmentUpdateRequested", f"environment/{name}", f"operation {operation.id}", now
    )
    return operation


@router.delete("/environments/{name}", status_code=202, dependencies=[Depends(writer)])
async def delete_environment(name: str, state: ServerState = Depends(server_state)) -> dict[str, Any]:
    """Starts a deprovisioning (a running provisioning is canceled at its next stage boundary); asked again
    while one runs, answers that one."""
    engine = engine_of(state)

    def work(session: Session) -> str:
        return start_deprovisioning(session, engine, _active_or_404(session, name)).id

    operation_id = await write(state, work)
    engine.wake()
    return {"name": name, "operation": operation_id, "state": "deprovisioning"}


def start_deprovisioning(session: Session, engine: Engine, row: EnvironmentRow) -> OperationRow:
    """Store a deprovisioning of the environment, or answer the one already under way."""
    running = store.pending_deprovisioning(session, row.id)
    if running is not None:
        return running
    now = utcnow()
    operation, stages = new_operation(engine, row, DEPROVISION, {}, now)
    store.add_operation(session, operation, stages)
    row.state, row.updated_at = "deprovisioning", now
    repo.record_event(
        session, "EnvironmentDeleteRequested", f"environment/{row.name}", f"operation {operation.id}", now
    )
    return operation


router.include_router(account_routes.router)
