"""What each OSB request about a service instance means for an environment.

The instance id is the environment's id; its name is `parameters.name`, else the instance id. The OSB
`context` makes the tenant (`globalaccount_id`, `subaccount_id`) and the default administrator
(`user_id`). Provisioning, updates, suspending (`context.active=false`), resuming and deprovisioning are
operations of the provisioning engine, so they are asynchronous (202 and the operation's id;
`accepts_incomplete=true` is required) and `last_operation` reads the engine's state and description.
Bindings are synchronous: a kubeconfig with a token that expires (`kubeconfigs`).
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from pydantic import ValidationError

from rrm.core.names import dns1123_label_error
from rrm.core.operations import PROVISION, RESUME, SUSPEND
from rrm.server.apply import Conflict, InvalidInput
from rrm.server.broker import service as osb
from rrm.server.broker.models import SUCCEEDED, BrokerError
from rrm.server.environment_broker import bindings
from rrm.server.environment_broker.backend import Found, PlatformRecords, Request, found, request_hash
from rrm.server.environment_broker.catalog import NAME_PARAMETER, REGION_PARAMETER, TRIAL_PLAN, is_trial
from rrm.server.provisioning.plans import Plan as ProvisioningPlan
from rrm.server.provisioning.routes import (
    CreateEnvironment,
    Tenant,
    check_request,
    new_operation,
    start_deprovisioning,
    start_provisioning,
    start_update,
)
from rrm.store import environment_broker as store
from rrm.store import provisioning as provisioning_store
from rrm.store import repositories as repo
from rrm.store.tables import BrokeredEnvironment, EnvironmentRow, OperationRow

MAX_INSTANCE_ID = 36  # the environment's id column: a GUID
OSB_STATE = {"pending": "in progress", "in progress": "in progress", SUCCEEDED: SUCCEEDED}
SUSPENDED = "suspended"


def async_required(accepts_incomplete: bool, what: str) -> None:
    if not accepts_incomplete:
        raise BrokerError(
            422,
            f"{what} is an operation of the provisioning engine: pass accepts_incomplete=true",
            "AsyncRequired",
        )


def running_operation(records: PlatformRecords, environment_id: str) -> OperationRow | None:
    operations = provisioning_store.operations_of(records.session, [environment_id])[environment_id]
    return next((o for o in operations if o.state in ("pending", "in progress")), None)


# provisioning -----------------------------------------------------------------------------------------


def provision(request: Request, instance_id: str, body: Any, accepts_incomplete: bool) -> osb.Answer:
    osb.check_id("instance_id", instance_id)
    body = osb.body_object(body)
    service_id = osb.string_field(body, "service_id", required=True) or ""
    plan_id = osb.string_field(body, "plan_id", required=True) or ""
    organization = osb.string_field(body, "organization_guid", required=True)
    space = osb.string_field(body, "space_guid", required=True)
    context, parameters = osb.object_field(body, "context") or {}, osb.object_field(body, "parameters") or {}
    osb.object_field(body, "maintenance_info")
    plan = request.catalog.find(service_id, plan_id)
    if plan is None:
        raise BrokerError(400, "service_id and plan_id must name rrm-runtime and one of its plans")
    digest = request_hash(service_id, plan_id, organization, space, context, parameters)
    existing = request.records.brokered(instance_id)
    if existing is not None:
        return provisioned_again(request.records, existing, digest)
    if request.records.taken(instance_id):
        raise BrokerError(409, f"service instance {instance_id!r} already exists with other attributes")
    async_required(accepts_incomplete, "provisioning an environment")
    if len(instance_id) > MAX_INSTANCE_ID:
        raise BrokerError(400, f"instance_id must be at most {MAX_INSTANCE_ID} characters (a GUID)")
    environment = creation(request.records, instance_id, plan.name, context, parameters)
    row, operation = start(request.records, instance_id, environment, context)
    ordered = BrokeredEnvironment(
        environment_id=row.id, platform=request.records.platform, service_id=service_id, plan_id=plan_id,
        request_hash=digest, context=context, created_at=request.records.now, expired_at=None,
    )  # fmt: skip
    request.records.session.add(ordered)
    return 202, {"operation": operation.id}


def provisioned_again(records: PlatformRecords, existing: Found, digest: str) -> osb.Answer:
    """The same PUT again: the provisioning while it runs (or failed, to be read), 200 once it succeeded."""
    ordered, environment = existing
    if ordered.request_hash != digest:
        raise BrokerError(409, f"service instance {environment.id!r} already exists with other attributes")
    if environment.archived_at is not None:
        raise BrokerError(
            409, f"service instance {environment.id!r} was deprovisioned; use a new instance id"
        )
    operations = provisioning_store.operations_of(records.session, [environment.id])[environment.id]
    provisioning = [o for o in operations if o.type == PROVISION][-1]
    if provisioning.state == SUCCEEDED:
        return 200, {}
    return 202, {"operation": provisioning.id}


def creation(
    records: PlatformRecords, instance_id: str, plan: str, context: dict[str, Any], parameters: dict[str, Any]
) -> CreateEnvironment:
    """The environment request an OSB provision makes: name and region out of the parameters, the tenant
    from the context, the user as default administrator where the plan has administrators."""
    properties = plan_properties(records, plan)
    name = environment_name(instance_id, parameters, NAME_PARAMETER in properties)
    rest = {k: v for k, v in parameters.items() if k not in own_parameters(properties)}
    user = context.get("user_id")
    if isinstance(user, str) and "administrators" in properties:
        rest.setdefault("administrators", [user])
    try:
        tenant = Tenant.model_validate(
            {"globalAccount": context.get("globalaccount_id"), "subaccount": context.get("subaccount_id")}
        )
        return CreateEnvironment(
            name=name, plan=plan, region=parameters.get(REGION_PARAMETER), parameters=rest, tenant=tenant
        )
    except ValidationError as exc:
        fields = {"globalAccount": "context.globalaccount_id", "subaccount": "context.subaccount_id"}
        problems = [
            f"{fields.get(str(e['loc'][-1]), 'parameters.' + str(e['loc'][-1]))}: {e['msg']}"
            for e in exc.errors()
        ]
        raise BrokerError(400, "; ".join(problems)) from None


def plan_properties(records: PlatformRecords, plan: str) -> dict[str, Any]:
    found_plan = records.engine.catalog.plans.get(plan)
    return dict(found_plan.schema.get("properties", {})) if found_plan is not None else {}


def own_parameters(properties: dict[str, Any]) -> set[str]:
    """The broker's parameters that are not the plan's: `region` always, `name` unless the plan has one (the
    Gardener plans' display name, as KEB's `name`)."""
    return {REGION_PARAMETER} | (set() if NAME_PARAMETER in properties else {NAME_PARAMETER})


def environment_name(instance_id: str, parameters: dict[str, Any], plan_has_name: bool) -> str:
    """`parameters.name`, else the instance id in lower case; a plan with a `name` of its own (a display
    name that need not be a DNS-1123 label) falls back to the instance id when it is not one."""
    name = parameters.get(NAME_PARAMETER)
    if isinstance(name, str) and dns1123_label_error(name) is None:
        return name
    if name is not None and not plan_has_name:
        problem = dns1123_label_error(name) if isinstance(name, str) else "must be a string"
        raise BrokerError(400, f"parameters.name {problem}: an environment's name is a DNS-1123 label")
    fallback = instance_id.lower()
    if (problem := dns1123_label_error(fallback)) is not None:
        raise BrokerError(400, f"parameters.name is needed: the instance id {problem} as a name")
    return fallback


def start(
    records: PlatformRecords, instance_id: str, environment: CreateEnvironment, context: dict[str, Any]
) -> tuple[EnvironmentRow, OperationRow]:
    plan = checked(records, environment)
    if is_trial(plan.name):
        one_trial(records, environment.tenant.global_account)
    user = context.get("user_id")
    data: dict[str, Any] = {
        "platform": records.platform,
        "administrators": [user] if isinstance(user, str) else [],
    }
    if records.region:
        data["platformRegion"] = records.region  # the HAP rules' PR
    try:
        return start_provisioning(
            records.session, records.state, records.engine, plan, environment, instance_id, data
        )
    except Conflict as exc:
        raise BrokerError(409, str(exc)) from None


def checked(records: PlatformRecords, environment: CreateEnvironment) -> ProvisioningPlan:
    """The plan, or 400 naming every field `check_request` refused."""
    try:
        return check_request(records.engine, environment)
    except HTTPException as exc:
        detail = exc.detail if isinstance(exc.detail, list) else [{"field": "", "message": str(exc.detail)}]
        raise BrokerError(400, "; ".join(f"{p['field']}: {p['message']}" for p in detail)) from None


def one_trial(records: PlatformRecords, global_account: str | None) -> None:
    if not global_account:
        raise BrokerError(400, f"context.globalaccount_id is required for the {TRIAL_PLAN} plan")
    if store.trials_of(records.session, global_account, [TRIAL_PLAN]) > 0:
        raise BrokerError(
            400,
            f"global account {global_account!r} already has a {TRIAL_PLAN} environment: "
            "one per global account",
        )


# reading ----------------------------------------------------------------------------------------------


def fetch_instance(request: Request, instance_id: str) -> osb.Answer:
    hit = found(request, instance_id)
    if hit is None or hit[1].state in ("provisioning", "failed"):
        raise BrokerError(404, f"service instance {instance_id!r} does not exist or is not provisioned")
    ordered, environment = hit
    parameters = {**environment.parameters, NAME_PARAMETER: environment.name}
    if environment.region:
        parameters[REGION_PARAMETER] = environment.region
    return 200, {"service_id": ordered.service_id, "plan_id": ordered.plan_id, "parameters": parameters}


def instance_last_operation(request: Request, instance_id: str, operation: str | None) -> osb.Answer:
    """The engine's state and description of the operation (the last one when none is named); a deleted
    environment answers from its archive, as KEB does."""
    hit = found(request, instance_id, archived=True)
    if hit is None:
        raise BrokerError(404, f"service instance {instance_id!r} does not exist")
    operations = provisioning_store.operations_of(request.records.session, [instance_id])[instance_id]
    chosen = next((o for o in operations if o.id == operation), None) if operation else operations[-1]
    if chosen is None:
        raise BrokerError(400, f"operation {operation!r} is not an operation of this instance")
    return 200, osb.last_operation_answer(OSB_STATE.get(chosen.state, "failed"), chosen.description)


# changing ---------------------------------------------------------------------------------------------


def update(request: Request, instance_id: str, body: Any, accepts_incomplete: bool) -> osb.Answer:
    """Parameters the plan marks updatable; `context.active` false suspends, true resumes."""
    osb.check_id("instance_id", instance_id)
    body = osb.body_object(body)
    service_id = osb.string_field(body, "service_id", required=True)
    plan_id = osb.string_field(body, "plan_id", required=False)
    parameters, context = osb.object_field(body, "parameters") or {}, osb.object_field(body, "context") or {}
    osb.object_field(body, "previous_values")
    osb.object_field(body, "maintenance_info")
    active = context.get("active")
    if active is not None and not isinstance(active, bool):
        raise BrokerError(400, "context.active must be true or false")
    hit = found(request, instance_id)
    if hit is None:
        raise BrokerError(422, f"service instance {instance_id!r} does not exist")
    ordered, environment = hit
    if service_id != ordered.service_id:
        raise BrokerError(400, "service_id is not the service offering of this instance")
    if plan_id is not None and plan_id != ordered.plan_id:
        raise BrokerError(422, "plans cannot be changed: provision a new instance", update_repeatable=False)
    if running_operation(request.records, environment.id) is not None:
        raise BrokerError(422, "another operation of this instance is under way", "ConcurrencyError")
    changes = changed_parameters(request.records, environment, parameters)
    operation = suspend_or_resume(request, hit, active, changes, accepts_incomplete)
    if operation is None and changes:
        if environment.state == SUSPENDED:
            raise BrokerError(422, "the instance is suspended: resume it (context.active=true) first")
        async_required(accepts_incomplete, "updating an environment")
        operation = updated(request.records, environment, changes)
    return (200, {}) if operation is None else (202, {"operation": operation.id})


def changed_parameters(
    records: PlatformRecords, environment: EnvironmentRow, parameters: dict[str, Any]
) -> dict[str, Any]:
    """The plan's parameters to change; the broker's own (`name`, `region`) may be repeated, not changed."""
    fixed = {NAME_PARAMETER: environment.name, REGION_PARAMETER: environment.region}
    own = own_parameters(plan_properties(records, environment.plan))
    for key in own:
        if key in parameters and parameters[key] != fixed[key]:
            raise BrokerError(400, f"parameters.{key} cannot be changed (it is {fixed[key]!r})")
    return {k: v for k, v in parameters.items() if k not in own}


def suspend_or_resume(
    request: Request, hit: Found, active: bool | None, changes: dict[str, Any], accepts_incomplete: bool
) -> OperationRow | None:
    ordered, environment = hit
    suspended = environment.state == SUSPENDED
    if active is None or active != suspended:
        return None
    if changes:
        raise BrokerError(400, "change parameters and context.active in separate requests")
    if active and ordered.expired_at is not None:
        raise BrokerError(400, f"the trial expired at {ordered.expired_at.isoformat()} and cannot be resumed")
    async_required(accepts_incomplete, "suspending or resuming an environment")
    if not active:
        bindings.revoke_all(request.records, environment)
    return start_operation(request.records, environment, RESUME if active else SUSPEND)


def start_operation(records: PlatformRecords, environment: EnvironmentRow, type_: str) -> OperationRow:
    operation, stages = new_operation(records.engine, environment, type_, {}, records.now)
    provisioning_store.add_operation(records.session, operation, stages)
    message = f"operation {operation.id}, asked by platform {records.platform}"
    repo.record_event(
        records.session,
        f"Environment{type_.capitalize()}Requested",
        f"environment/{environment.name}",
        message,
        records.now,
    )
    return operation


def updated(records: PlatformRecords, environment: EnvironmentRow, changes: dict[str, Any]) -> OperationRow:
    try:
        return start_update(records.session, records.state, records.engine, environment, changes, None)
    except InvalidInput as exc:
        raise BrokerError(400, str(exc)) from None
    except Conflict as exc:
        raise BrokerError(422, str(exc), "ConcurrencyError") from None


def deprovision(request: Request, instance_id: str, removal: osb.Removal) -> osb.Answer:
    """Revokes the bindings and starts the deprovisioning (a running one is answered again)."""
    hit = found(request, instance_id)
    if hit is None:
        raise BrokerError(410, f"service instance {instance_id!r} does not exist")
    ordered, environment = hit
    removal.check_plan(ordered.service_id, ordered.plan_id, "this instance")
    async_required(removal.accepts_incomplete, "deprovisioning an environment")
    bindings.revoke_all(request.records, environment)
    operation = start_deprovisioning(request.records.session, request.records.engine, environment)
    return 202, {"operation": operation.id}
