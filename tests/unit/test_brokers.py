"""The OSB operations over in-memory records (asynchronous paths included), the static catalog file's
checks, the static broker's state file and its command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from rrm.cli.app import app
from rrm.server.broker import routes, service
from rrm.server.broker.catalog_file import CatalogError, catalog_problems, load_catalog
from rrm.server.broker.models import (
    FAILED,
    IN_PROGRESS,
    SUCCEEDED,
    Binding,
    BrokerError,
    Catalog,
    Instance,
    Offering,
    Plan,
)
from rrm.server.broker.static import CatalogFileBackend

SERVICE, PLAN = "svc-1", "plan-1"


class Records:
    """In-memory BrokerRecords whose plans become ready when the test says so."""

    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.bindings: dict[tuple[str, str], Binding] = {}
        self.ready = False

    def instance(self, instance_id: str) -> Instance | None:
        return self.instances.get(instance_id)

    def save_instance(self, instance: Instance) -> None:
        self.instances[instance.id] = instance

    def delete_instance(self, instance_id: str) -> None:
        self.instances.pop(instance_id, None)
        self.bindings = {k: v for k, v in self.bindings.items() if k[0] != instance_id}

    def binding(self, instance_id: str, binding_id: str) -> Binding | None:
        return self.bindings.get((instance_id, binding_id))

    def save_binding(self, binding: Binding) -> None:
        self.bindings[(binding.instance_id, binding.id)] = binding

    def delete_binding(self, instance_id: str, binding_id: str) -> None:
        self.bindings.pop((instance_id, binding_id), None)

    def plan_ready(self, plan: Plan) -> bool:
        return self.ready


CATALOG = Catalog(
    (
        Offering(
            SERVICE,
            {"id": SERVICE, "name": "orders", "description": "d", "bindable": True},
            (
                Plan(
                    PLAN,
                    "main",
                    {"id": PLAN, "name": "main", "description": "d"},
                    {"url": "u"},
                    readiness="app-x",
                ),
            ),
        ),
    )
)
PROVISION = {"service_id": SERVICE, "plan_id": PLAN, "organization_guid": "o", "space_guid": "s"}
BIND = {"service_id": SERVICE, "plan_id": PLAN}


def request(records: Records, now: float = 1000.0, catalog: Catalog = CATALOG) -> service.Request:
    return service.Request(records, catalog, now)


def error_of(call: Any) -> BrokerError:
    with pytest.raises(BrokerError) as caught:
        call()
    return caught.value


def test_provisioning_waits_for_the_plan_and_binds_complete_with_the_instance() -> None:
    records = Records()
    refused = error_of(lambda: service.provision(request(records), "i", PROVISION, False))
    assert (refused.status, refused.body["error"]) == (422, "AsyncRequired") and not records.instances
    status, body = service.provision(request(records), "i", PROVISION, True)
    assert status == 202 and body["operation"].startswith("provision-")
    assert service.provision(request(records), "i", PROVISION, True) == (202, body)
    assert error_of(lambda: service.fetch_instance(request(records), "i")).status == 404
    assert (
        service.instance_last_operation(request(records), "i", body["operation"])[1]["state"] == IN_PROGRESS
    )
    assert error_of(lambda: service.update(request(records), "i", {"service_id": SERVICE})).body["error"] == (
        "ConcurrencyError"
    )
    assert (
        error_of(lambda: service.bind(request(records), "i", "b", BIND, False)).body["error"]
        == "AsyncRequired"
    )
    bind_status, bind_body = service.bind(request(records), "i", "b", BIND, True)
    assert bind_status == 202 and "credentials" not in bind_body
    assert error_of(lambda: service.fetch_binding(request(records), "i", "b")).status == 404

    records.ready = True
    assert service.binding_last_operation(request(records), "i", "b", None)[1]["state"] == SUCCEEDED
    assert service.instance_last_operation(request(records), "i", None)[1]["state"] == SUCCEEDED
    assert service.fetch_binding(request(records), "i", "b") == (
        200,
        {"credentials": {"url": "u"}, "parameters": {}},
    )
    assert service.provision(request(records), "i", PROVISION, False) == (200, {})
    records.ready = False
    assert service.instance_last_operation(request(records), "i", None)[1]["state"] == SUCCEEDED, "went back"


def test_provisioning_fails_when_the_plan_never_becomes_ready_or_disappears() -> None:
    records = Records()
    service.provision(request(records), "late", PROVISION, True)
    late = request(records, now=1000.0 + service.PROVISION_TIMEOUT + 1)
    answer = service.instance_last_operation(late, "late", None)[1]
    assert answer["state"] == FAILED and "app-x" in answer["description"]
    assert error_of(lambda: service.bind(request(records), "late", "b", BIND, True)).status == 422
    records.ready = True
    assert service.provision(request(records), "late", PROVISION, False) == (201, {}), (
        "a failed one is replaced"
    )

    service.provision(request(Records()), "x", PROVISION, True)
    records = Records()
    service.provision(request(records), "gone", PROVISION, True)
    gone = service.instance_last_operation(request(records, catalog=Catalog()), "gone", None)[1]
    assert gone["state"] == FAILED


def test_deprovisioning_during_provisioning_halts_it() -> None:
    records = Records()
    service.provision(request(records), "i", PROVISION, True)
    service.bind(request(records), "i", "b", BIND, True)
    assert service.deprovision(request(records), "i", service.Removal(SERVICE, PLAN)) == (200, {})
    assert not records.instances and not records.bindings
    assert error_of(lambda: service.instance_last_operation(request(records), "i", None)).status == 404


@pytest.mark.parametrize(
    ("instance_id", "body", "status"),
    [
        ("", PROVISION, 400),
        ("x" * 256, PROVISION, 400),
        ("tab\tid", PROVISION, 400),
        ("i", {**PROVISION, "space_guid": ""}, 400),
        ("i", {**PROVISION, "parameters": [1]}, 400),
        ("i", {**PROVISION, "context": "cf"}, 400),
        ("i", {**PROVISION, "maintenance_info": {"version": 1}}, 400),
        ("i", {**PROVISION, "service_id": "other"}, 400),
        ("i", "a string", 400),
    ],
)
def test_malformed_provision_requests_are_bad_requests_and_store_nothing(
    instance_id: str, body: Any, status: int
) -> None:
    records = Records()
    records.ready = True
    assert error_of(lambda: service.provision(request(records), instance_id, body, False)).status == status
    assert not records.instances


# the static catalog file ------------------------------------------------------------------------------


def catalog_doc(**service_fields: Any) -> dict[str, Any]:
    plan = {"id": "p-1", "name": "standard", "description": "shared"}
    offering = {"id": "s-1", "name": "logging", "description": "logs", "bindable": True, "plans": [plan]}
    offering.update(service_fields)
    return {"services": [offering], "credentials": {"p-1": {"url": "https://logs.example.com"}}}


def test_a_valid_catalog_serves_its_services_without_the_credentials(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(json.dumps(catalog_doc()))
    catalog = load_catalog(path)
    assert catalog.document() == {"services": catalog_doc()["services"]}
    assert catalog.find("s-1", "p-1") is not None and catalog.find("s-1", "p-1").credentials == {  # type: ignore[union-attr]
        "url": "https://logs.example.com"
    }


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"credentials": {}}, "services: is required"),
        (catalog_doc(plans=[]), "services[0].plans: a service offering needs at least one plan"),
        (catalog_doc(bindable="yes"), "services[0].bindable: 'yes' is not of type 'boolean'"),
        (catalog_doc(name=""), "services[0].name: must be a non-empty string"),
        (catalog_doc(id="p-1"), "services[0].plans[0].id: 'p-1' is already the id of services[0]"),
        (
            catalog_doc(plans=[{"id": "p-1", "name": "x"}]),
            "services[0].plans[0]: 'description' is a required property",
        ),
        (
            {**catalog_doc(), "credentials": {"nope": {}}},
            "credentials.nope: no plan with this id in services",
        ),
        ({**catalog_doc(), "extra": 1}, "extra: unknown top-level field"),
        ([1, 2], "(file): must be a mapping"),
    ],
)
def test_catalog_problems_name_the_field(document: Any, expected: str) -> None:
    problems = catalog_problems(document)
    assert any(p.startswith(expected) for p in problems), problems


def test_the_command_refuses_a_bad_catalog_with_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(json.dumps(catalog_doc(plans=[])))
    runner = CliRunner()
    result = runner.invoke(
        app, ["static-broker", "--catalog", str(path), "--username", "u", "--password", "p"]
    )
    assert result.exit_code == 2
    assert f"error: {path}: services[0].plans: a service offering needs at least one plan" in result.output
    missing = runner.invoke(app, ["static-broker", "--catalog", str(path)], env={"RRM_BROKER_PASSWORD": ""})
    assert missing.exit_code == 2 and "--username" in missing.output
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "absent.yaml")


def test_static_records_survive_in_the_state_file_and_failed_work_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(json.dumps(catalog_doc()))
    catalog, state = load_catalog(path), tmp_path / "state.json"
    body = {"service_id": "s-1", "plan_id": "p-1", "organization_guid": "o", "space_guid": "s"}
    backend = CatalogFileBackend(catalog, "u", "p", state)
    assert backend.authenticate("u", "p") is not None and backend.authenticate("u", "x") is None
    answer = backend.transact(
        "platform", lambda r: service.provision(service.Request(r, catalog, 1.0), "i", body, False)
    )
    assert answer == (201, {})
    assert state.stat().st_mode & 0o777 == 0o600

    def conflicting(records: Any) -> service.Answer:
        service.bind(
            service.Request(records, catalog, 1.0), "i", "b", {"service_id": "s-1", "plan_id": "p-1"}, False
        )
        raise BrokerError(409, "made up after a write")

    with pytest.raises(BrokerError):
        backend.transact("platform", conflicting)
    reopened = CatalogFileBackend(catalog, "u", "p", state)
    fetched = reopened.transact(
        "platform", lambda r: service.fetch_instance(service.Request(r, catalog, 2.0), "i")
    )
    assert fetched[0] == 200
    missing = reopened.transact("platform", lambda r: (200, {"binding": r.binding("i", "b") is None}))
    assert missing == (200, {"binding": True}), "a failed transaction left a binding behind"


def test_lookups_of_ids_that_cannot_exist_answer_unknown_not_an_error() -> None:
    records = Records()
    for call in (
        lambda: service.fetch_instance(request(records), "nul\x00id"),
        lambda: service.instance_last_operation(request(records), "x" * 300, None),
        lambda: service.fetch_binding(request(records), "i", "nul\x00id"),
        lambda: service.binding_last_operation(request(records), "i", "", None),
    ):
        assert error_of(call).status == 404
    broker = FastAPI()
    routes.install(broker, CatalogFileBackend(CATALOG, "platform", "secret"), service)
    deprovision = TestClient(broker).delete(
        "/v2/service_instances/tab%09id",
        params={"service_id": SERVICE, "plan_id": PLAN},
        headers={"X-Broker-API-Version": "2.17"},
        auth=("platform", "secret"),
    )
    assert deprovision.status_code == 400, "the router refuses to delete an id that cannot exist"
