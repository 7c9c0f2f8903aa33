"""What a broker offers (catalog, plans and what binding them returns), what it keeps (instances and
bindings, as JSON-able records) and how it says no (OSB error bodies)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

IN_PROGRESS = "in progress"
SUCCEEDED = "succeeded"
FAILED = "failed"


class BrokerError(Exception):
    """An OSB error answer: `{"error": ..., "description": ...}` with the status the spec prescribes."""

    def __init__(self, status: int, description: str, error: str | None = None, **extra: Any) -> None:
        super().__init__(description)
        self.status = status
        self.body: dict[str, Any] = {"description": description, **extra}
        if error is not None:
            self.body["error"] = error


@dataclass(frozen=True)
class Plan:
    """One service plan; `readiness` names what must be in place before an instance of it is usable
    (None: nothing, provisioning completes at once)."""

    id: str
    name: str
    document: Mapping[str, Any]
    credentials: Mapping[str, Any] | None = None
    endpoints: tuple[Mapping[str, Any], ...] = ()
    readiness: str | None = None
    bindable: bool = True

    @property
    def maintenance_version(self) -> str | None:
        info = self.document.get("maintenance_info")
        return info.get("version") if isinstance(info, Mapping) else None


@dataclass(frozen=True)
class Offering:
    id: str
    document: Mapping[str, Any]  # the OSB service offering without its plans
    plans: tuple[Plan, ...]

    def plan(self, plan_id: str) -> Plan | None:
        return next((p for p in self.plans if p.id == plan_id), None)


@dataclass(frozen=True)
class Catalog:
    offerings: tuple[Offering, ...] = ()

    def document(self) -> dict[str, Any]:
        return {
            "services": [{**o.document, "plans": [dict(p.document) for p in o.plans]} for o in self.offerings]
        }

    def offering(self, service_id: str) -> Offering | None:
        return next((o for o in self.offerings if o.id == service_id), None)

    def find(self, service_id: str, plan_id: str) -> Plan | None:
        offering = self.offering(service_id)
        return offering.plan(plan_id) if offering else None


@dataclass(kw_only=True)
class _Ordered:
    """What an instance and a binding share: the offering and plan they were ordered with, what the
    platform sent with the order, and how their last operation stands."""

    service_id: str
    plan_id: str
    context: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    state: str = SUCCEEDED
    operation: str | None = None
    description: str = ""

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class Instance(_Ordered):
    id: str
    organization_guid: str
    space_guid: str
    maintenance_version: str | None = None
    started_at: float = 0.0  # epoch seconds

    def identity(self) -> tuple[Any, ...]:
        """What must be equal for a provision request to be the same one again."""
        return (
            self.service_id,
            self.plan_id,
            self.organization_guid,
            self.space_guid,
            self.context,
            self.parameters,
        )


@dataclass(kw_only=True)
class Binding(_Ordered):
    instance_id: str
    id: str
    bind_resource: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> tuple[Any, ...]:
        return (self.service_id, self.plan_id, self.context, self.bind_resource, self.parameters)


class BrokerRecords(Protocol):
    """The instances and bindings of one caller, inside one transaction."""

    def instance(self, instance_id: str) -> Instance | None: ...
    def save_instance(self, instance: Instance) -> None: ...
    def delete_instance(self, instance_id: str) -> None: ...
    def binding(self, instance_id: str, binding_id: str) -> Binding | None: ...
    def save_binding(self, binding: Binding) -> None: ...
    def delete_binding(self, instance_id: str, binding_id: str) -> None: ...
    def plan_ready(self, plan: Plan) -> bool: ...


def instance_from(record: Mapping[str, Any]) -> Instance:
    return Instance(**record)


def binding_from(record: Mapping[str, Any]) -> Binding:
    return Binding(**record)
