"""The System Broker's backend: callers are runtimes (HTTP Basic credentials from `rrm runtime
broker-credentials`), the catalog is the applications the runtime sees — applications as service
offerings, bundles as plans — and instances and bindings are rows of that runtime in the database.

A plan is ready for a runtime once its agent reports the bundle's `app-<application>-<bundle>` binding
applied: then workloads can call the application through their sidecar, which is what an instance means.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from rrm.core.scenarios import Bundle, binding_name, binding_secret_data
from rrm.server.auth import matches_hash
from rrm.server.broker import service
from rrm.server.broker.models import (
    Binding,
    BrokerRecords,
    Catalog,
    Instance,
    Offering,
    Plan,
    binding_from,
    instance_from,
)
from rrm.server.broker.routes import BrokerBackend
from rrm.server.compass.registry import RegisteredApplication
from rrm.server.state import ServerState
from rrm.store import compass as store
from rrm.store import repositories as repo


class RegistryBackend(BrokerBackend[BrokerRecords]):
    realm = "rrm system broker"

    def __init__(self, state: ServerState) -> None:
        self._state = state

    def authenticate(self, username: str, password: str) -> str | None:
        with self._state.db.read() as session:
            row = store.broker_credential(session, username)
            return row.runtime_id if row is not None and matches_hash(password, row.password_hash) else None

    def catalog(self, caller: str) -> Catalog:
        fleet = self._state.fleet
        entry = fleet.runtimes.get(caller)
        if entry is None:
            return Catalog()
        return registry_catalog(
            fleet.registry.visible(fleet.registry.scenarios_of(caller, dict(entry.labels)))
        )

    def transact(self, caller: str, work: Callable[[BrokerRecords], service.Answer]) -> service.Answer:
        with self._state.db.write() as session:
            return work(_Records(session, caller))


class _Records:
    """One runtime's instances and bindings; ids of other runtimes are simply not there."""

    def __init__(self, session: Session, runtime_id: str) -> None:
        self._session = session
        self._runtime = runtime_id
        self._now = datetime.now(UTC)

    def instance(self, instance_id: str) -> Instance | None:
        record = store.broker_instance(self._session, self._runtime, instance_id)
        return instance_from(record) if record else None

    def save_instance(self, instance: Instance) -> None:
        store.save_broker_instance(self._session, self._runtime, instance.id, instance.record(), self._now)

    def delete_instance(self, instance_id: str) -> None:
        store.delete_broker_instance(self._session, self._runtime, instance_id)

    def binding(self, instance_id: str, binding_id: str) -> Binding | None:
        record = store.broker_binding(self._session, self._runtime, instance_id, binding_id)
        return binding_from(record) if record else None

    def save_binding(self, binding: Binding) -> None:
        store.save_broker_binding(
            self._session, self._runtime, binding.instance_id, binding.id, binding.record(), self._now
        )

    def delete_binding(self, instance_id: str, binding_id: str) -> None:
        store.delete_broker_binding(self._session, self._runtime, instance_id, binding_id)

    def plan_ready(self, plan: Plan) -> bool:
        """The runtime's agent reported the plan's binding applied."""
        status = repo.status_of(self._session, self._runtime)
        resources = status.report.get("resources", []) if status else []
        return any(r.get("name") == plan.readiness and r.get("state") == "applied" for r in resources)


# catalog ----------------------------------------------------------------------------------------------


def registry_catalog(applications: Iterable[RegisteredApplication]) -> Catalog:
    """Applications with at least one bundle, as service offerings; their ids never change."""
    offerings = []
    for app in applications:
        spec = app.manifest["spec"]
        descriptions = {b["name"]: b.get("description") for b in spec.get("bundles") or []}
        plans = tuple(_plan(app, bundle, descriptions.get(bundle.name)) for bundle in app.application.bundles)
        if not plans:
            continue
        provider = spec.get("provider") or ""
        description = spec.get("description") or f"the application {app.name}" + (
            f" of {provider}" if provider else ""
        )
        document = {
            "id": app.uid,
            "name": app.name,
            "description": description,
            "bindable": True,
            "instances_retrievable": True,
            "bindings_retrievable": True,
            "plan_updateable": False,
            "tags": ["rrm", "application"],
            "metadata": {
                "displayName": app.name,
                "providerDisplayName": provider,
                "labels": dict(app.labels),
            },
        }
        offerings.append(Offering(app.uid, document, plans))
    return Catalog(tuple(offerings))


def _plan(app: RegisteredApplication, bundle: Bundle, description: str | None) -> Plan:
    plan_id = str(uuid.uuid5(uuid.UUID(app.uid), bundle.name))
    binding = binding_name(app.name, bundle.name)
    document = {
        "id": plan_id,
        "name": bundle.name,
        "description": description or f"bundle {bundle.name} of {app.name}",
        "free": True,
        "bindable": True,
        "maximum_polling_duration": int(service.PROVISION_TIMEOUT),
        "metadata": {"binding": binding, "url": bundle.url},
    }
    return Plan(
        id=plan_id,
        name=bundle.name,
        document=document,
        credentials={"url": bundle.url, "binding": binding, "auth": bundle_auth(bundle)},
        endpoints=_endpoints(bundle.url),
        readiness=binding,
    )


def bundle_auth(bundle: Bundle) -> dict[str, Any]:
    """The bundle's credentials as a bind returns them, with the header value bindings.http would send."""
    credentials = bundle.credentials
    auth: dict[str, Any] = {"type": credentials.type, **credentials.values}
    data = binding_secret_data(credentials)
    if credentials.type in ("basic", "header") and data is not None:
        auth.setdefault("header", "Authorization")
        auth["headerValue"] = data["token"]
    return auth


def _endpoints(url: str) -> tuple[Mapping[str, Any], ...]:
    parts = urlsplit(url)
    if not parts.hostname:
        return ()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return ({"host": parts.hostname, "ports": [str(port)], "protocol": "tcp"},)
