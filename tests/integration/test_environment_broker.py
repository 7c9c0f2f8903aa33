"""The Environment Broker through real processes: a platform registers with its own credentials, orders a
`local` environment and follows it through its whole life (provision → poll → Connected runtime → update →
suspend → resume → deprovision → 410), orders a `kubernetes` one into the Kubernetes stand-in and binds it
(the kubeconfig works against the stand-in until the unbind revokes it), polls `last_operation` across a
control-plane restart, and never sees another platform's instances."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .harness import DEADLINE, Fleet, ServerProcess, condition_true, expect_status, runtime
from .kube import KubeApiServer
from .test_environments import cluster, local_agents, play_agent_pod, standin  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
SERVICE_ID = "6f1c2a3e-9b0d-4e5f-8a7b-52726d2d7274"
CONTEXT = {"platform": "cloudfoundry", "globalaccount_id": "ga-1", "subaccount_id": "sa-1", "user_id": "ann"}


@dataclass
class Platform:
    """One platform's OSB client, as `cf create-service-broker` would register it."""

    name: str
    password: str
    http: httpx.Client

    def catalog(self) -> dict[str, Any]:
        return dict(expect_status(self.http.get("/v2/catalog"), 200).json())

    def plan(self, name: str) -> dict[str, Any]:
        return dict(next(p for p in self.catalog()["services"][0]["plans"] if p["name"] == name))

    def provision(
        self, instance: str, plan: str, parameters: dict[str, Any] | None = None, **extra: Any
    ) -> httpx.Response:
        body = {
            "service_id": SERVICE_ID,
            "plan_id": self.plan(plan)["id"],
            "organization_guid": "org-1",
            "space_guid": "space-1",
            "context": extra.pop("context", CONTEXT),
            "parameters": parameters or {},
        }
        params = extra.pop("params", {"accepts_incomplete": "true"})
        return self.http.put(f"/v2/service_instances/{instance}", json=body, params=params)

    def update(self, instance: str, **body: Any) -> httpx.Response:
        body = {"service_id": SERVICE_ID, **body}
        return self.http.patch(
            f"/v2/service_instances/{instance}", json=body, params={"accepts_incomplete": "true"}
        )

    def deprovision(self, instance: str, plan: str, accepts_incomplete: bool = True) -> httpx.Response:
        params = {"service_id": SERVICE_ID, "plan_id": self.plan(plan)["id"]}
        if accepts_incomplete:
            params["accepts_incomplete"] = "true"
        return self.http.delete(f"/v2/service_instances/{instance}", params=params)

    def last_operation(self, instance: str, operation: str | None = None) -> httpx.Response:
        params = {"operation": operation} if operation else {}
        return self.http.get(f"/v2/service_instances/{instance}/last_operation", params=params)


def register_platform(server: ServerProcess, name: str) -> Platform:
    answer = expect_status(
        server.admin.post(f"/api/v1/environment-broker/platforms/{name}/credentials", json={}), 201
    ).json()
    assert answer["broker_url"] == f"{server.url}/environments"
    http = httpx.Client(
        base_url=answer["broker_url"],
        auth=(answer["username"], answer["password"]),
        headers={"X-Broker-API-Version": "2.14"},
        timeout=30,
    )
    return Platform(name, answer["password"], http)


@pytest.fixture
def platform(fleet: Fleet) -> Iterator[Platform]:
    one = register_platform(fleet.server, f"cf-{uuid.uuid4().hex[:6]}")
    yield one
    one.http.close()


def wait_last_operation(
    fleet: Fleet, platform: Platform, instance: str, operation: str, timeout: float = DEADLINE
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def ended() -> dict[str, Any]:
        seen["last"] = expect_status(platform.last_operation(instance, operation), 200).json()
        return seen["last"] if seen["last"]["state"] != "in progress" else {}

    return fleet.wait_until(ended, lambda: f"{operation} did not end: {seen.get('last')}", timeout)


def connected(admin: httpx.Client, name: str) -> bool:
    response = admin.get(f"/api/v1/runtimes/{name}")
    return response.status_code == 200 and condition_true(response.json(), "Connected")


def test_a_platform_orders_a_local_environment_and_follows_it_through_its_whole_life(
    fleet: Fleet, backend: str, platform: Platform, local_agents: Path
) -> None:
    if backend == "postgresql":
        names = [p["name"] for p in platform.catalog()["services"][0]["plans"]]
        assert "local" not in names and "kubernetes" in names  # one replica only: not offered
        return
    instance, admin = str(uuid.uuid4()), fleet.server.admin
    refused = platform.provision(instance, "local", params={})
    assert refused.status_code == 422 and refused.json()["error"] == "AsyncRequired", refused.text
    first = expect_status(platform.provision(instance, "local", {"name": "shop-dev"}), 202).json()
    again = expect_status(platform.provision(instance, "local", {"name": "shop-dev"}), 202).json()
    assert again == first
    other = platform.provision(instance, "local", {"name": "shop-other"})
    assert other.status_code == 409, other.text
    last = wait_last_operation(fleet, platform, instance, first["operation"])
    assert last["state"] == "succeeded", last
    assert connected(admin, "shop-dev")
    labels = runtime(admin, "shop-dev")["labels"]
    assert labels["rrm.io/global-account"] == "ga-1" and labels["rrm.io/subaccount"] == "sa-1"
    expect_status(platform.provision(instance, "local", {"name": "shop-dev"}), 200)
    fetched = expect_status(platform.http.get(f"/v2/service_instances/{instance}"), 200).json()
    assert fetched["plan_id"] == platform.plan("local")["id"] and fetched["parameters"]["name"] == "shop-dev"

    fixed = platform.update(instance, parameters={"name": "renamed"})
    assert fixed.status_code == 400 and "parameters.name" in fixed.json()["description"], fixed.text
    expect_status(platform.update(instance, parameters={"name": "shop-dev"}), 200)

    directory = local_agents / "shop-dev"
    suspend = expect_status(platform.update(instance, context={**CONTEXT, "active": False}), 202).json()
    assert wait_last_operation(fleet, platform, instance, suspend["operation"])["state"] == "succeeded"
    assert admin.get("/api/v1/runtimes/shop-dev").status_code == 404 and not directory.exists()
    assert admin.get("/api/v1/environments/shop-dev").json()["state"] == "suspended"
    expect_status(platform.update(instance, context={**CONTEXT, "active": False}), 200)  # nothing to do

    resume = expect_status(platform.update(instance, context={**CONTEXT, "active": True}), 202).json()
    assert wait_last_operation(fleet, platform, instance, resume["operation"])["state"] == "succeeded"
    fleet.wait_until(lambda: connected(admin, "shop-dev"), "the resumed runtime never connected")

    refused = platform.deprovision(instance, "local", accepts_incomplete=False)
    assert refused.status_code == 422 and refused.json()["error"] == "AsyncRequired", refused.text
    gone = expect_status(platform.deprovision(instance, "local"), 202).json()
    last = wait_last_operation(fleet, platform, instance, gone["operation"])
    assert last["state"] == "succeeded", last
    assert expect_status(platform.last_operation(instance), 200).json()["state"] == "succeeded"
    expect_status(platform.deprovision(instance, "local"), 410)
    expect_status(platform.http.get(f"/v2/service_instances/{instance}"), 404)
    assert admin.get("/api/v1/runtimes/shop-dev").status_code == 404 and not directory.exists()
