"""The System Broker (OSB API v2.17 at /broker): every endpoint and each error case of the spec, runtimes
isolated from each other, asynchronous provisioning that completes when the agent applies the binding,
and records that survive a restart."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .compass import application, broker_client, create_scenario, offering, put_in_scenarios
from .harness import AgentIdentity, Fleet, ServerProcess, apply, expect_status, pair, register

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class Platform:
    """A runtime as a platform sees the broker: its client, its application's ids, its agent identity."""

    name: str
    broker: httpx.Client
    app: str
    service_id: str
    plan_id: str
    identity: AgentIdentity

    def body(self, **extra: Any) -> dict[str, Any]:
        return {
            "service_id": self.service_id,
            "plan_id": self.plan_id,
            "organization_guid": "org",
            "space_guid": "space",
            **extra,
        }

    def ids(self) -> dict[str, str]:
        return {"service_id": self.service_id, "plan_id": self.plan_id}


def report_applied(identity: AgentIdentity, *names: str) -> None:
    """What the agent reports once it applied the bindings (as `PUT /agent/v1/status` does)."""
    resources = [{"kind": "Component", "name": n, "state": "applied"} for n in names]
    body = {"applied_hash": None, "agent_version": "test", "heartbeat_interval": 1.0, "resources": resources}
    expect_status(identity.request("PUT", "/agent/v1/status", json=body), 204)


def platform(server: ServerProcess, scenario: str, *, applied: bool = True) -> Platform:
    admin = server.admin
    name, app = unique("brk-"), unique("svc-")
    bundles = [
        {"name": "main", "credentials": {"type": "header", "header": "X-Api-Key", "token": f"{app}-token"}},
        {"name": "basic", "credentials": {"type": "basic", "username": "svc", "password": f"{app}-pw"}},
    ]
    apply(admin, [application(app, bundles, scenarios=[scenario])])
    identity = pair(server.url, register(admin, name))
    put_in_scenarios(admin, name, add=[scenario])
    if applied:
        report_applied(identity, f"app-{app}-main", f"app-{app}-basic")
    broker = broker_client(admin, name)
    service = offering(broker, app)
    plan = next(p for p in service["plans"] if p["name"] == "main")
    return Platform(name, broker, app, service["id"], plan["id"], identity)


@pytest.fixture(scope="module")
def platforms(server: ServerProcess) -> tuple[Platform, Platform]:
    """Two runtimes, each in its own scenario with its own application, bindings reported applied."""
    first, second = unique("SC-"), unique("SC-")
    create_scenario(server.admin, first)
    create_scenario(server.admin, second)
    return platform(server, first), platform(server, second)


def test_the_catalog_offers_the_callers_applications_as_services_and_bundles_as_plans(
    platforms: tuple[Platform, Platform],
) -> None:
    a, b = platforms
    services = expect_status(a.broker.get("/v2/catalog"), 200).json()["services"]
    assert [s["name"] for s in services] == [a.app], "another runtime's application is offered"
    service = services[0]
    assert service["bindable"] and service["instances_retrievable"] and service["bindings_retrievable"]
    assert sorted(p["name"] for p in service["plans"]) == ["basic", "main"]
    assert all(p["id"] and p["description"] for p in service["plans"])
    again = expect_status(a.broker.get("/v2/catalog"), 200).json()["services"][0]
    assert again["id"] == service["id"] and again["plans"] == service["plans"], "catalog ids are not stable"
    assert "token" not in str(services) and "pw" not in str(services), "credentials in the catalog"
    assert [s["name"] for s in expect_status(b.broker.get("/v2/catalog"), 200).json()["services"]] == [b.app]


def test_callers_need_their_credentials_and_a_supported_api_version(
    server: ServerProcess, platforms: tuple[Platform, Platform]
) -> None:
    a, _ = platforms
    url = f"{server.url}/broker/v2/catalog"
    version = {"X-Broker-API-Version": "2.17"}
    missing = expect_status(httpx.get(url, headers=version, timeout=30), 401)
    assert missing.headers["www-authenticate"].startswith("Basic") and missing.json()["description"]
    wrong = httpx.get(url, headers=version, auth=(a.name, "rrmbp_wrong"), timeout=30)
    assert expect_status(wrong, 401).json()["description"]
    admin_token = httpx.get(
        url, headers={**version, "Authorization": f"Bearer {server.admin_token}"}, timeout=30
    )
    expect_status(admin_token, 401)
    garbage = {**version, "Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}
    expect_status(httpx.get(url, headers=garbage, timeout=30), 401)

    without = a.broker.get("/v2/catalog", headers={"X-Broker-API-Version": ""})
    assert expect_status(without, 412).json()["description"]
    request = a.broker.build_request("GET", "/v2/catalog")
    del request.headers["X-Broker-API-Version"]
    assert "X-Broker-API-Version" in expect_status(a.broker.send(request), 400).json()["description"]
    for unsupported in ("1.0", "2.12", "3.0", "latest"):
        expect_status(a.broker.get("/v2/catalog", headers={"X-Broker-API-Version": unsupported}), 412)
    for supported in ("2.13", "2.17", "2.18"):
        expect_status(a.broker.get("/v2/catalog", headers={"X-Broker-API-Version": supported}), 200)
    identified = a.broker.get("/v2/catalog", headers={"X-Broker-API-Request-Identity": "req-1"})
    assert identified.headers["X-Broker-API-Request-Identity"] == "req-1"

    rotated = broker_client(server.admin, a.name)
    expect_status(a.broker.get("/v2/catalog"), 401)
    a.broker = rotated
    expect_status(a.broker.get("/v2/catalog"), 200)
    expect_status(server.admin.post(f"/api/v1/runtimes/{a.name}/broker-credentials", json={}), 409)


def test_provision_fetch_update_and_deprovision(platforms: tuple[Platform, Platform]) -> None:
    a, _ = platforms
    broker, iid = a.broker, unique("inst-")
    path = f"/v2/service_instances/{iid}"
    assert expect_status(broker.put(path, json=a.body(parameters={"size": 1})), 201).json() == {}
    assert expect_status(broker.put(path, json=a.body(parameters={"size": 1})), 200).json() == {}
    expect_status(broker.put(path, json=a.body(parameters={"size": 2})), 409)
    expect_status(broker.put(path, json={**a.body(), "space_guid": "other"}), 409)
    fetched = expect_status(broker.get(path), 200).json()
    assert fetched == {"service_id": a.service_id, "plan_id": a.plan_id, "parameters": {"size": 1}}
    assert expect_status(broker.get(f"{path}/last_operation"), 200).json()["state"] == "succeeded"

    assert (
        expect_status(
            broker.patch(path, json={"service_id": a.service_id, "parameters": {"size": 3}}), 200
        ).json()
        == {}
    )
    assert expect_status(broker.get(path), 200).json()["parameters"] == {"size": 3}
    other_plan = next(p["id"] for p in offering(broker, a.app)["plans"] if p["id"] != a.plan_id)
    changed = expect_status(
        broker.patch(path, json={"service_id": a.service_id, "plan_id": other_plan}), 422
    ).json()
    assert changed["update_repeatable"] is False
    expect_status(broker.patch(path, json={"service_id": "another-service"}), 400)
    expect_status(broker.patch(path, json={"plan_id": a.plan_id}), 400)
    expect_status(
        broker.patch(f"/v2/service_instances/{unique('none-')}", json={"service_id": a.service_id}), 422
    )
    conflict = broker.patch(path, json={"service_id": a.service_id, "maintenance_info": {"version": "9.9.9"}})
    assert expect_status(conflict, 422).json()["error"] == "MaintenanceInfoConflict"

    other = f"/v2/service_instances/{unique('inst-')}"
    expect_status(broker.put(other, json={**a.body(), "plan_id": "no-such-plan"}), 400)
    expect_status(
        broker.put(other, json={k: v for k, v in a.body().items() if k != "organization_guid"}), 400
    )
    expect_status(broker.put(other, json=["not", "an", "object"]), 400)
    expect_status(broker.put(other, content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    expect_status(broker.put(other, params={"accepts_incomplete": "maybe"}, json=a.body()), 400)
    mismatch = broker.put(other, json=a.body(maintenance_info={"version": "1.0.0"}))
    assert expect_status(mismatch, 422).json()["error"] == "MaintenanceInfoConflict"
    expect_status(broker.get(other), 404)
    expect_status(broker.get(f"{other}/last_operation"), 404)

    expect_status(broker.delete(path, params={"service_id": a.service_id}), 400)
    expect_status(broker.delete(path, params={"service_id": a.service_id, "plan_id": other_plan}), 400)
    assert expect_status(broker.delete(path, params=a.ids()), 200).json() == {}
    expect_status(broker.delete(path, params=a.ids()), 410)
    expect_status(broker.get(path), 404)
    expect_status(broker.get(f"{path}/last_operation"), 404)


def test_bind_fetch_and_unbind(platforms: tuple[Platform, Platform]) -> None:
    a, _ = platforms
    broker, iid, bid = a.broker, unique("inst-"), unique("bind-")
    expect_status(broker.put(f"/v2/service_instances/{iid}", json=a.body()), 201)
    path = f"/v2/service_instances/{iid}/service_bindings/{bid}"
    body = {**a.ids(), "bind_resource": {"app_guid": "workload-1"}, "parameters": {"role": "reader"}}
    created = expect_status(broker.put(path, json=body), 201).json()
    credentials = created["credentials"]
    assert (
        credentials["url"] == f"https://{a.app}.example.com" and credentials["binding"] == f"app-{a.app}-main"
    )
    assert credentials["auth"] == {
        "type": "header",
        "header": "X-Api-Key",
        "token": f"{a.app}-token",
        "headerValue": f"{a.app}-token",
    }
    assert created["endpoints"] == [{"host": f"{a.app}.example.com", "ports": ["443"], "protocol": "tcp"}]
    assert expect_status(broker.put(path, json=body), 200).json()["credentials"] == credentials
    expect_status(broker.put(path, json={**body, "parameters": {"role": "writer"}}), 409)
    fetched = expect_status(broker.get(path), 200).json()
    assert fetched["credentials"] == credentials and fetched["parameters"] == {"role": "reader"}
    assert expect_status(broker.get(f"{path}/last_operation"), 200).json()["state"] == "succeeded"

    missing = f"/v2/service_instances/{unique('none-')}/service_bindings/{bid}"
    expect_status(broker.put(missing, json=body), 422)
    expect_status(broker.put(path.replace(bid, unique("bind-")), json={**body, "plan_id": "other"}), 400)
    rotation = broker.put(path.replace(bid, unique("bind-")), json={**body, "predecessor_binding_id": bid})
    expect_status(rotation, 400)
    expect_status(broker.get(missing), 404)
    expect_status(broker.get(f"{missing}/last_operation"), 404)

    expect_status(broker.delete(path, params={"plan_id": a.plan_id}), 400)
    assert expect_status(broker.delete(path, params=a.ids()), 200).json() == {}
    expect_status(broker.delete(path, params=a.ids()), 410)
    expect_status(broker.get(path), 404)
    expect_status(broker.delete(f"/v2/service_instances/{iid}", params=a.ids()), 200)


def test_runtimes_never_see_each_others_instances_or_bindings(platforms: tuple[Platform, Platform]) -> None:
    a, b = platforms
    iid, bid = unique("shared-"), unique("bind-")
    expect_status(a.broker.put(f"/v2/service_instances/{iid}", json=a.body()), 201)
    expect_status(a.broker.put(f"/v2/service_instances/{iid}/service_bindings/{bid}", json=a.ids()), 201)

    expect_status(b.broker.get(f"/v2/service_instances/{iid}"), 404)
    expect_status(b.broker.get(f"/v2/service_instances/{iid}/last_operation"), 404)
    expect_status(b.broker.get(f"/v2/service_instances/{iid}/service_bindings/{bid}"), 404)
    expect_status(b.broker.delete(f"/v2/service_instances/{iid}/service_bindings/{bid}", params=a.ids()), 410)
    expect_status(b.broker.delete(f"/v2/service_instances/{iid}", params=a.ids()), 410)
    expect_status(b.broker.patch(f"/v2/service_instances/{iid}", json={"service_id": a.service_id}), 422)
    expect_status(
        b.broker.put(f"/v2/service_instances/{unique('i-')}", json=a.body()), 400
    )  # not in b's catalog
    # The same instance id is b's own, separate instance.
    expect_status(b.broker.put(f"/v2/service_instances/{iid}", json=b.body()), 201)
    assert (
        expect_status(a.broker.get(f"/v2/service_instances/{iid}"), 200).json()["service_id"] == a.service_id
    )
    assert (
        expect_status(b.broker.get(f"/v2/service_instances/{iid}"), 200).json()["service_id"] == b.service_id
    )


def test_provisioning_is_asynchronous_until_the_agent_applies_the_binding(
    fleet: Fleet, server: ServerProcess, admin: httpx.Client
) -> None:
    scenario, app, name = unique("SC-"), unique("async-"), unique("asy-")
    create_scenario(admin, scenario)
    apply(admin, [application(app, scenarios=[scenario])])
    agent = fleet.agent(name, start=False)  # registered; started with a new token once provisioning waits
    put_in_scenarios(admin, name, add=[scenario])
    broker = broker_client(admin, name)
    service = offering(broker, app)
    ids = {"service_id": service["id"], "plan_id": service["plans"][0]["id"]}
    body = {**ids, "organization_guid": "org", "space_guid": "space"}
    iid, bid = unique("inst-"), unique("bind-")
    path = f"/v2/service_instances/{iid}"

    required = expect_status(broker.put(path, json=body), 422).json()
    assert required["error"] == "AsyncRequired"
    accepted = expect_status(broker.put(path, params={"accepts_incomplete": "true"}, json=body), 202).json()
    operation = accepted["operation"]
    again = broker.put(path, params={"accepts_incomplete": "true"}, json=body)
    assert expect_status(again, 202).json()["operation"] == operation
    expect_status(
        broker.put(path, params={"accepts_incomplete": "true"}, json={**body, "parameters": {"x": 1}}), 409
    )
    expect_status(broker.get(path), 404)
    polled = expect_status(broker.get(f"{path}/last_operation", params={"operation": operation, **ids}), 200)
    assert polled.json()["state"] == "in progress" and polled.headers.get("Retry-After")
    expect_status(broker.get(f"{path}/last_operation", params={"operation": "other"}), 400)
    busy = expect_status(
        broker.patch(path, json={"service_id": ids["service_id"], "parameters": {"x": 1}}), 422
    )
    assert busy.json()["error"] == "ConcurrencyError"

    binding = f"{path}/service_bindings/{bid}"
    assert expect_status(broker.put(binding, json=ids), 422).json()["error"] == "AsyncRequired"
    bind_op = expect_status(broker.put(binding, params={"accepts_incomplete": "true"}, json=ids), 202).json()
    assert "credentials" not in bind_op
    expect_status(broker.get(binding), 404)
    assert expect_status(broker.get(f"{binding}/last_operation"), 200).json()["state"] == "in progress"

    agent.start(fleet_token(fleet, name))
    fleet.wait_until(
        lambda: (
            broker.get(f"{path}/last_operation", params={"operation": operation}).json()["state"]
            == "succeeded"
        ),
        "provisioning completes once the agent reports the binding applied",
    )
    assert (
        expect_status(
            broker.get(f"{binding}/last_operation", params={"operation": bind_op["operation"]}), 200
        ).json()["state"]
        == "succeeded"
    )
    assert expect_status(broker.get(binding), 200).json()["credentials"]["binding"] == f"app-{app}-main"
    assert expect_status(broker.get(path), 200).json()["service_id"] == ids["service_id"]
    assert expect_status(broker.put(path, json=body), 200).json() == {}


def fleet_token(fleet: Fleet, name: str) -> str:
    return str(
        expect_status(
            fleet.server.admin.post(f"/api/v1/runtimes/{name}/token", json={"ttl_seconds": 600}), 201
        ).json()["pairing_token"]
    )


def test_instances_and_bindings_survive_a_restart(own_server: ServerProcess) -> None:
    scenario = unique("SC-")
    create_scenario(own_server.admin, scenario)
    a = platform(own_server, scenario)
    iid, bid = unique("inst-"), unique("bind-")
    expect_status(a.broker.put(f"/v2/service_instances/{iid}", json=a.body(parameters={"keep": True})), 201)
    expect_status(a.broker.put(f"/v2/service_instances/{iid}/service_bindings/{bid}", json=a.ids()), 201)
    own_server.restart()
    broker = httpx.Client(
        base_url=f"{own_server.url}/broker",
        auth=a.broker.auth,
        headers={"X-Broker-API-Version": "2.17"},
        timeout=30,
    )
    assert expect_status(broker.get(f"/v2/service_instances/{iid}"), 200).json()["parameters"] == {
        "keep": True
    }
    fetched = expect_status(broker.get(f"/v2/service_instances/{iid}/service_bindings/{bid}"), 200).json()
    assert fetched["credentials"]["auth"]["token"] == f"{a.app}-token"
