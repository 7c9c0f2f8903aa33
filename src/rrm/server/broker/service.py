"""The Open Service Broker API v2.17 operations, once for every backend: which status code and body each
request gets (spec.md of the OSB reference), over the records of one caller.

Provisioning completes synchronously (201) when the plan is ready. When it is not — the System Broker's
plans are ready once the runtime's agent reports the application's binding applied — it can only complete
asynchronously: 202 and an operation to poll with `accepts_incomplete=true`, 422 `AsyncRequired` without.
A binding requested while its instance is still being provisioned follows the same rule and completes
with the instance. Updates, deprovisioning and unbinding are always synchronous.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rrm.server.broker.models import (
    FAILED,
    IN_PROGRESS,
    SUCCEEDED,
    Binding,
    BrokerError,
    BrokerRecords,
    Catalog,
    Instance,
    Plan,
)

MAX_ID_LENGTH = 255
PROVISION_TIMEOUT = 600.0  # seconds an instance may wait for its plan to become ready
RETRY_AFTER = "2"

Answer = tuple[int, dict[str, Any]]
Records = TypeVar("Records")


@dataclass
class BrokerRequest(Generic[Records]):
    """What every operation gets: the caller's records and catalog, and the time."""

    records: Records
    catalog: Catalog
    now: float


Request = BrokerRequest[BrokerRecords]


@dataclass(frozen=True)
class Removal:
    """The query of a deprovision or unbind, whose ids the router checked: the service and plan the
    platform says the instance has (both required), and whether it accepts an asynchronous answer."""

    service_id: str
    plan_id: str
    accepts_incomplete: bool = False

    def check_plan(self, service_id: str, plan_id: str, of: str) -> None:
        if (self.service_id, self.plan_id) != (service_id, plan_id):
            raise BrokerError(400, f"service_id and plan_id are not those of {of}")


# request checks ---------------------------------------------------------------------------------------


def valid_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and not any(ord(c) < 32 or ord(c) == 127 for c in value)


def check_id(kind: str, value: str) -> None:
    """For requests that create or delete; lookups treat an id that cannot exist as unknown."""
    if not valid_id(value):
        raise BrokerError(400, f"{kind} must be 1 to {MAX_ID_LENGTH} printable characters")


def body_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise BrokerError(400, "the request body must be a JSON object")
    return body


def string_field(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BrokerError(400, f"{name} is required")
        return None
    if not isinstance(value, str) or not value:
        raise BrokerError(400, f"{name} must be a non-empty string")
    return value


def object_field(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise BrokerError(400, f"{name} must be an object")
    return dict(value)


def _maintenance_version(body: Mapping[str, Any]) -> str | None:
    info = object_field(body, "maintenance_info")
    if info is None:
        return None
    version = info.get("version")
    if not isinstance(version, str) or not version:
        raise BrokerError(400, "maintenance_info.version must be a non-empty string")
    return version


def _check_maintenance(requested: str | None, plan: Plan) -> None:
    if requested is not None and requested != plan.maintenance_version:
        raise BrokerError(
            422,
            f"maintenance_info.version {requested!r} does not match the plan's "
            f"({plan.maintenance_version or 'none'}); fetch the catalog again",
            "MaintenanceInfoConflict",
        )


def _new_operation(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(8)}"


# progress ---------------------------------------------------------------------------------------------


def refresh_instance(request: Request, instance: Instance) -> Instance:
    """Move an instance in progress on: succeeded once its plan is ready, failed when it cannot be."""
    if instance.state != IN_PROGRESS:
        return instance
    plan = request.catalog.find(instance.service_id, instance.plan_id)
    if plan is None:
        instance.state, instance.description = (
            FAILED,
            "the service or plan is no longer offered to this platform",
        )
    elif request.records.plan_ready(plan):
        instance.state, instance.description = SUCCEEDED, "provisioned"
    elif request.now - instance.started_at > PROVISION_TIMEOUT:
        instance.state = FAILED
        instance.description = (
            f"not ready within {PROVISION_TIMEOUT:.0f} s: {plan.readiness or 'plan'} was not applied"
        )
    else:
        return instance
    request.records.save_instance(instance)
    return instance


def refresh_binding(request: Request, binding: Binding) -> Binding:
    """A binding in progress completes with its instance."""
    if binding.state != IN_PROGRESS:
        return binding
    instance = request.records.instance(binding.instance_id)
    state = refresh_instance(request, instance).state if instance else FAILED
    if state == IN_PROGRESS:
        return binding
    binding.state = state
    binding.description = "bound" if state == SUCCEEDED else "the service instance failed"
    request.records.save_binding(binding)
    return binding


def _existing_instance(request: Request, instance_id: str) -> Instance | None:
    instance = request.records.instance(instance_id) if valid_id(instance_id) else None
    return refresh_instance(request, instance) if instance else None


def _existing_binding(request: Request, instance_id: str, binding_id: str) -> Binding | None:
    if not (valid_id(instance_id) and valid_id(binding_id)):
        return None
    binding = request.records.binding(instance_id, binding_id)
    return refresh_binding(request, binding) if binding else None


# service instances ------------------------------------------------------------------------------------


def provision(request: Request, instance_id: str, body: Any, accepts_incomplete: bool) -> Answer:
    check_id("instance_id", instance_id)
    body = body_object(body)
    wanted = Instance(
        id=instance_id,
        service_id=string_field(body, "service_id", required=True) or "",
        plan_id=string_field(body, "plan_id", required=True) or "",
        organization_guid=string_field(body, "organization_guid", required=True) or "",
        space_guid=string_field(body, "space_guid", required=True) or "",
        context=object_field(body, "context") or {},
        parameters=object_field(body, "parameters") or {},
        maintenance_version=_maintenance_version(body),
        started_at=request.now,
    )
    plan = request.catalog.find(wanted.service_id, wanted.plan_id)
    if plan is None:
        raise BrokerError(
            400, "service_id and plan_id must name a service offering and one of its plans in the catalog"
        )
    _check_maintenance(wanted.maintenance_version, plan)

    existing = _existing_instance(request, instance_id)
    if existing is not None and existing.state != FAILED:
        if existing.identity() != wanted.identity():
            raise BrokerError(409, f"service instance {instance_id!r} already exists with other attributes")
        if existing.state == IN_PROGRESS:
            return 202, {"operation": existing.operation}
        return 200, {}
    if request.records.plan_ready(plan):
        wanted.description = "provisioned"
        request.records.save_instance(wanted)
        return 201, {}
    if not accepts_incomplete:
        raise BrokerError(
            422,
            f"this plan completes asynchronously until {plan.readiness or 'it'} is applied on the platform: "
            "pass accepts_incomplete=true",
            "AsyncRequired",
        )
    wanted.state, wanted.operation = IN_PROGRESS, _new_operation("provision")
    wanted.description = f"waiting for {plan.readiness or 'the plan'} to be applied"
    request.records.save_instance(wanted)
    return 202, {"operation": wanted.operation}


def fetch_instance(request: Request, instance_id: str) -> Answer:
    instance = _existing_instance(request, instance_id)
    if instance is None or instance.state == IN_PROGRESS:
        raise BrokerError(
            404, f"service instance {instance_id!r} does not exist or is still being provisioned"
        )
    answer: dict[str, Any] = {
        "service_id": instance.service_id,
        "plan_id": instance.plan_id,
        "parameters": instance.parameters,
    }
    if instance.maintenance_version is not None:
        answer["maintenance_info"] = {"version": instance.maintenance_version}
    return 200, answer


def update(request: Request, instance_id: str, body: Any, accepts_incomplete: bool = False) -> Answer:
    """Parameters and context may change; the plan may not (no plan is `plan_updateable`). Synchronous,
    whatever `accepts_incomplete` says (as for deprovisioning and unbinding)."""
    check_id("instance_id", instance_id)
    body = body_object(body)
    service_id = string_field(body, "service_id", required=True)
    plan_id = string_field(body, "plan_id", required=False)
    parameters, context = object_field(body, "parameters"), object_field(body, "context")
    object_field(body, "previous_values")
    version = _maintenance_version(body)
    instance = _existing_instance(request, instance_id)
    if instance is None:
        raise BrokerError(422, f"service instance {instance_id!r} does not exist")
    if instance.state == IN_PROGRESS:
        raise BrokerError(422, "the service instance is still being provisioned", "ConcurrencyError")
    if service_id != instance.service_id:
        raise BrokerError(400, "service_id is not the service offering of this instance")
    if plan_id is not None and plan_id != instance.plan_id:
        raise BrokerError(
            422, "plans cannot be changed: provision a new instance instead", update_repeatable=False
        )
    plan = request.catalog.find(instance.service_id, instance.plan_id)
    if version is not None:
        if plan is None:
            raise BrokerError(422, "the plan of this instance is no longer offered", update_repeatable=False)
        _check_maintenance(version, plan)
        instance.maintenance_version = version
    if parameters is not None:
        instance.parameters = parameters
    if context is not None:
        instance.context = context
    request.records.save_instance(instance)
    return 200, {}


def deprovision(request: Request, instance_id: str, removal: Removal) -> Answer:
    """Removes the instance and its bindings; during provisioning this halts it."""
    instance = request.records.instance(instance_id)
    if instance is None:
        raise BrokerError(410, f"service instance {instance_id!r} does not exist")
    removal.check_plan(instance.service_id, instance.plan_id, "this instance")
    request.records.delete_instance(instance_id)
    return 200, {}


def instance_last_operation(request: Request, instance_id: str, operation: str | None) -> Answer:
    instance = _existing_instance(request, instance_id)
    if instance is None:
        raise BrokerError(404, f"service instance {instance_id!r} does not exist")
    if operation is not None and operation != instance.operation:
        raise BrokerError(400, f"operation {operation!r} is not the last operation of this instance")
    return 200, last_operation_answer(instance.state, instance.description)


def last_operation_answer(state: str, description: str) -> dict[str, Any]:
    answer = {"state": state}
    if description:
        answer["description"] = description
    return answer


# service bindings -------------------------------------------------------------------------------------


def bind(request: Request, instance_id: str, binding_id: str, body: Any, accepts_incomplete: bool) -> Answer:
    check_id("instance_id", instance_id)
    check_id("binding_id", binding_id)
    body = body_object(body)
    wanted = Binding(
        instance_id=instance_id,
        id=binding_id,
        service_id=string_field(body, "service_id", required=True) or "",
        plan_id=string_field(body, "plan_id", required=True) or "",
        context=object_field(body, "context") or {},
        bind_resource=object_field(body, "bind_resource") or {},
        parameters=object_field(body, "parameters") or {},
    )
    app_guid = string_field(body, "app_guid", required=False)
    if app_guid is not None and "app_guid" not in wanted.bind_resource:
        wanted.bind_resource["app_guid"] = app_guid
    if body.get("predecessor_binding_id") is not None:
        raise BrokerError(400, "binding rotation is not supported: no plan is binding_rotatable")
    instance = _existing_instance(request, instance_id)
    if instance is None:
        raise BrokerError(422, f"service instance {instance_id!r} does not exist")
    if (wanted.service_id, wanted.plan_id) != (instance.service_id, instance.plan_id):
        raise BrokerError(400, "service_id and plan_id are not those of the service instance")
    if instance.state == FAILED:
        raise BrokerError(422, f"service instance {instance_id!r} failed: {instance.description}")
    plan = request.catalog.find(instance.service_id, instance.plan_id)
    if plan is None:
        raise BrokerError(422, "the service or plan of this instance is no longer offered to this platform")
    if not plan.bindable:
        raise BrokerError(400, f"plan {plan.name!r} is not bindable")

    existing = request.records.binding(instance_id, binding_id)
    if existing is not None:
        existing = refresh_binding(request, existing)
        if existing.state != FAILED:
            if existing.identity() != wanted.identity():
                raise BrokerError(409, f"service binding {binding_id!r} already exists with other attributes")
            if existing.state == IN_PROGRESS:
                return 202, {"operation": existing.operation}
            return 200, _binding_answer(plan)
    if instance.state == IN_PROGRESS:
        if not accepts_incomplete:
            raise BrokerError(
                422,
                "the service instance is still being provisioned, so binding completes asynchronously: "
                "pass accepts_incomplete=true",
                "AsyncRequired",
            )
        wanted.state, wanted.operation = IN_PROGRESS, _new_operation("bind")
        wanted.description = "waiting for the service instance"
        request.records.save_binding(wanted)
        return 202, {"operation": wanted.operation}
    wanted.description = "bound"
    request.records.save_binding(wanted)
    return 201, _binding_answer(plan)


def _binding_answer(plan: Plan | None) -> dict[str, Any]:
    """Credentials come from the plan as it is now (rotated application credentials show at once)."""
    answer: dict[str, Any] = {}
    if plan is not None and plan.credentials is not None:
        answer["credentials"] = dict(plan.credentials)
    if plan is not None and plan.endpoints:
        answer["endpoints"] = [dict(e) for e in plan.endpoints]
    return answer


def fetch_binding(request: Request, instance_id: str, binding_id: str) -> Answer:
    binding = _existing_binding(request, instance_id, binding_id)
    if binding is None or binding.state != SUCCEEDED:
        raise BrokerError(404, f"service binding {binding_id!r} does not exist or is not bound yet")
    answer = _binding_answer(request.catalog.find(binding.service_id, binding.plan_id))
    answer["parameters"] = binding.parameters
    return 200, answer


def unbind(request: Request, instance_id: str, binding_id: str, removal: Removal) -> Answer:
    binding = request.records.binding(instance_id, binding_id)
    if binding is None:
        raise BrokerError(410, f"service binding {binding_id!r} does not exist")
    removal.check_plan(binding.service_id, binding.plan_id, "this binding")
    request.records.delete_binding(instance_id, binding_id)
    return 200, {}


def binding_last_operation(
    request: Request, instance_id: str, binding_id: str, operation: str | None
) -> Answer:
    binding = _existing_binding(request, instance_id, binding_id)
    if binding is None:
        raise BrokerError(404, f"service binding {binding_id!r} does not exist")
    if operation is not None and operation != binding.operation:
        raise BrokerError(400, f"operation {operation!r} is not the last operation of this binding")
    return 200, last_operation_answer(binding.state, binding.description)
