"""What each OSB request about a service binding means: a kubeconfig for the environment's cluster, issued
at once (`kubeconfigs.mint`) with the lifetime asked for, kept encrypted so the same bind again gets it
back; unbinding revokes it in the cluster. At most `MAX_LIVE` unexpired bindings per instance; expired
ones are removed from the cluster and forgotten at the instance's next bind."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from rrm.server.broker import service as osb
from rrm.server.broker.models import SUCCEEDED, BrokerError
from rrm.server.environment_broker import kubeconfigs
from rrm.server.environment_broker.backend import PlatformRecords, Request, found, request_hash
from rrm.server.provisioning.stages import subject_of
from rrm.store import environment_broker as store
from rrm.store.tables import EnvironmentBinding, EnvironmentRow

log = logging.getLogger("rrm.server.environment_broker")
EXPIRATION = "expiration_seconds"
MIN_SECONDS, MAX_SECONDS, DEFAULT_SECONDS = 600, 7200, 600
MAX_LIVE = 10


def sealed_name(binding: EnvironmentBinding) -> str:
    return f"environment-binding/{binding.environment_id}/{binding.binding_id}"


def bind(
    request: Request, instance_id: str, binding_id: str, body: Any, accepts_incomplete: bool
) -> osb.Answer:
    osb.check_id("instance_id", instance_id)
    osb.check_id("binding_id", binding_id)
    body = osb.body_object(body)
    service_id = osb.string_field(body, "service_id", required=True)
    plan_id = osb.string_field(body, "plan_id", required=True)
    parameters = osb.object_field(body, "parameters") or {}
    context, resource = osb.object_field(body, "context") or {}, osb.object_field(body, "bind_resource") or {}
    osb.string_field(body, "app_guid", required=False)
    seconds = expiration(parameters)
    hit = found(request, instance_id)
    if hit is None:
        raise BrokerError(422, f"service instance {instance_id!r} does not exist")
    ordered, environment = hit
    if (service_id, plan_id) != (ordered.service_id, ordered.plan_id):
        raise BrokerError(400, "service_id and plan_id are not those of the service instance")
    plan = request.catalog.find(ordered.service_id, ordered.plan_id)
    if plan is None or not plan.bindable:
        raise BrokerError(
            400, f"plan {environment.plan!r} is not bindable: its backend issues no kubeconfigs"
        )
    digest = request_hash(service_id, plan_id, parameters, context, resource)
    existing = store.binding(request.records.session, environment.id, binding_id)
    if existing is not None:
        if existing.request_hash != digest:
            raise BrokerError(409, f"service binding {binding_id!r} already exists with other attributes")
        return 200, answer(request.records, existing)
    return 201, answer(request.records, issue(request.records, environment, binding_id, digest, seconds))


def expiration(parameters: dict[str, Any]) -> int:
    value = parameters.get(EXPIRATION, DEFAULT_SECONDS)
    unknown = sorted(set(parameters) - {EXPIRATION})
    if unknown:
        raise BrokerError(400, f"parameters.{unknown[0]}: unknown parameter (known: {EXPIRATION})")
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SECONDS <= value <= MAX_SECONDS:
        raise BrokerError(
            400,
            f"parameters.{EXPIRATION} must be a whole number of seconds from {MIN_SECONDS} to {MAX_SECONDS}",
        )
    return value


def issue(
    records: PlatformRecords, environment: EnvironmentRow, binding_id: str, digest: str, seconds: int
) -> EnvironmentBinding:
    if environment.state != SUCCEEDED:
        raise BrokerError(422, f"the instance is {environment.state}: bind once it is provisioned and active")
    for expired in store.expired_bindings(records.session, environment.id, records.now):
        revoke(records, environment, expired, strict=False)  # its ServiceAccount lingers otherwise
    if store.live_bindings(records.session, environment.id, records.now) >= MAX_LIVE:
        raise BrokerError(400, f"the instance has {MAX_LIVE} live bindings already: unbind one first")
    cluster = subject_of(records.state, environment).cluster_kubeconfig
    if not cluster:
        raise BrokerError(422, "the instance's cluster has no kubeconfig to issue one from")
    name = kubeconfigs.service_account_name(environment.id, binding_id)
    try:
        kubeconfig, expires = kubeconfigs.mint(cluster, name, seconds)
    except kubeconfigs.KubeconfigError as exc:
        raise BrokerError(422, str(exc)) from None
    binding = EnvironmentBinding(
        environment_id=environment.id, binding_id=binding_id, service_account=name, request_hash=digest,
        sealed=b"", expires_at=expires, created_at=records.now,
    )  # fmt: skip
    binding.sealed = records.state.box.seal(sealed_name(binding), {"kubeconfig": kubeconfig})
    records.session.add(binding)
    return binding


def answer(records: PlatformRecords, binding: EnvironmentBinding) -> dict[str, Any]:
    kubeconfig = records.state.box.open(sealed_name(binding), binding.sealed)["kubeconfig"]
    return {"credentials": {"kubeconfig": kubeconfig}, "metadata": {"expires_at": _iso(binding.expires_at)}}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def fetch_binding(request: Request, instance_id: str, binding_id: str) -> osb.Answer:
    binding = _binding(request, instance_id, binding_id)
    if binding is None:
        raise BrokerError(404, f"service binding {binding_id!r} does not exist")
    return 200, answer(request.records, binding)


def binding_last_operation(
    request: Request, instance_id: str, binding_id: str, operation: str | None
) -> osb.Answer:
    """Bindings are synchronous: one that exists has succeeded."""
    if _binding(request, instance_id, binding_id) is None:
        raise BrokerError(404, f"service binding {binding_id!r} does not exist")
    return 200, osb.last_operation_answer(SUCCEEDED, "bound")


def unbind(request: Request, instance_id: str, binding_id: str, removal: osb.Removal) -> osb.Answer:
    hit = found(request, instance_id)
    binding = _binding(request, instance_id, binding_id)
    if hit is None or binding is None:
        raise BrokerError(410, f"service binding {binding_id!r} does not exist")
    removal.check_plan(hit[0].service_id, hit[0].plan_id, "this binding")
    revoke(request.records, hit[1], binding, strict=True)
    return 200, {}


def _binding(request: Request, instance_id: str, binding_id: str) -> EnvironmentBinding | None:
    if (
        not (osb.valid_id(binding_id) and osb.valid_id(instance_id))
        or request.records.brokered(instance_id) is None
    ):
        return None
    return store.binding(request.records.session, instance_id, binding_id)


def revoke(
    records: PlatformRecords, environment: EnvironmentRow, binding: EnvironmentBinding, strict: bool
) -> None:
    """Delete the binding's ServiceAccount, then the record. `strict`: a cluster that cannot be reached
    refuses the unbind (422, the platform retries); otherwise (deprovisioning, suspending, whose cluster
    goes anyway) it is logged and the record goes."""
    cluster = subject_of(records.state, environment).cluster_kubeconfig
    if cluster and environment.state != "suspended":
        try:
            kubeconfigs.revoke(cluster, binding.service_account)
        except kubeconfigs.KubeconfigError as exc:
            if strict:
                raise BrokerError(422, str(exc)) from None
            log.warning("binding %s of %s: %s", binding.binding_id, environment.name, exc)
    records.session.delete(binding)


def revoke_all(records: PlatformRecords, environment: EnvironmentRow) -> None:
    for binding in store.bindings_of(records.session, environment.id):
        revoke(records, environment, binding, strict=False)
