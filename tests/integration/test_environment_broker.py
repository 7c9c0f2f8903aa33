"""The Environment Broker through real processes: a platform registers with its own credentials, orders a
`local` environment and follows it through its whole life (provision → poll → Connected runtime → update →
suspend → resume → deprovision → 410), orders a `kubernetes` one into the Kubernetes stand-in and binds it
(the kubeconfig works against the stand-in until the unbind revokes it), polls `last_operation` across a
control-plane restart, and never sees another platform's instances."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import test_environments as environments
from .harness import DEADLINE, Fleet, ServerProcess, condition_true, expect_status, runtime
from .kube import KubeApiServer, start_standin
from .planned_servers import PlannedServer, running_planned_server
from .test_cli import ok, rrm
from .test_environments import play_agent_pod

pytestmark = pytest.mark.integration
standin, cluster, local_agents = environments.standin, environments.cluster, environments.local_agents
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


def register_platform(server: ServerProcess, name: str, region: str | None = None) -> Platform:
    path = f"/api/v1/environment-broker/platforms/{name}/credentials"
    answer = expect_status(server.admin.post(path, json={"region": region}), 201).json()
    assert answer["region"] == region
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


def bind(platform: Platform, instance: str, binding: str, plan: str, **parameters: Any) -> httpx.Response:
    body = {"service_id": SERVICE_ID, "plan_id": platform.plan(plan)["id"], "parameters": parameters}
    return platform.http.put(f"/v2/service_instances/{instance}/service_bindings/{binding}", json=body)


def unbind(platform: Platform, instance: str, binding: str, plan: str) -> httpx.Response:
    params = {"service_id": SERVICE_ID, "plan_id": platform.plan(plan)["id"]}
    return platform.http.delete(f"/v2/service_instances/{instance}/service_bindings/{binding}", params=params)


def can_list_secrets(kubeconfig: str) -> int:
    """200 when the kubeconfig's token is accepted, else the stand-in's status (401)."""
    api_client = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    try:
        client.CoreV1Api(api_client).list_namespaced_secret("default")
        return 200
    except ApiException as exc:
        return int(exc.status)
    finally:
        api_client.close()


def provisioned_into_standin(
    fleet: Fleet,
    platform: Platform,
    standin: KubeApiServer,
    cluster: client.ApiClient,
    name: str,
    plan: str = "kubernetes",
) -> tuple[str, str]:
    """A `kubernetes` instance whose agent (played from the Secret the server applied) connected."""
    instance = str(uuid.uuid4())
    parameters = {"name": name, "kubeconfig": standin.kubeconfig.read_text()}
    operation = expect_status(platform.provision(instance, plan, parameters), 202).json()["operation"]
    fleet.wait_until(lambda: _has_agent_secret(cluster, name), "the agent's Secret was never applied")
    play_agent_pod(fleet, standin, cluster, name)
    return instance, operation


def _has_agent_secret(cluster: client.ApiClient, name: str) -> bool:
    try:
        client.CoreV1Api(cluster).read_namespaced_secret(f"rrm-agent-{name}", "rrm-system")
        return True
    except ApiException:
        return False


def test_a_kubernetes_environment_is_bound_and_its_kubeconfig_works_until_unbound(
    fleet: Fleet, platform: Platform, standin: KubeApiServer, cluster: client.ApiClient
) -> None:
    plan = platform.plan("kubernetes")
    assert plan["bindable"] is True and plan["plan_updateable"] is False
    plans = {p["name"]: p for p in platform.catalog()["services"][0]["plans"]}
    assert "local" not in plans or plans["local"]["bindable"] is False
    create = plan["schemas"]["service_instance"]["create"]["parameters"]
    assert {"kubeconfig", "name"} <= set(create["properties"]) and create["required"] == ["kubeconfig"]
    assert plan["maximum_polling_duration"] >= 900
    instance, operation = provisioned_into_standin(fleet, platform, standin, cluster, "byo-eb")
    assert wait_last_operation(fleet, platform, instance, operation)["state"] == "succeeded"

    short = bind(platform, instance, "b-short", "kubernetes", expiration_seconds=100)
    assert short.status_code == 400 and "parameters.expiration_seconds" in short.json()["description"]
    first = expect_status(bind(platform, instance, "b-1", "kubernetes", expiration_seconds=900), 201).json()
    kubeconfig = first["credentials"]["kubeconfig"]
    assert can_list_secrets(kubeconfig) == 200
    assert (
        yaml.safe_load(kubeconfig)["users"][0]["user"]["token"]
        != yaml.safe_load(standin.kubeconfig.read_text())["users"][0]["user"]["token"]
    )
    assert (
        expect_status(bind(platform, instance, "b-1", "kubernetes", expiration_seconds=900), 200).json()
        == first
    )
    expect_status(bind(platform, instance, "b-1", "kubernetes", expiration_seconds=1200), 409)
    fetched = platform.http.get(f"/v2/service_instances/{instance}/service_bindings/b-1")
    assert expect_status(fetched, 200).json()["credentials"] == first["credentials"]
    expect_status(unbind(platform, instance, "b-1", "kubernetes"), 200)
    assert can_list_secrets(kubeconfig) == 401
    expect_status(unbind(platform, instance, "b-1", "kubernetes"), 410)

    live = [expect_status(bind(platform, instance, f"b-{i}", "kubernetes"), 201).json() for i in range(2, 12)]
    eleventh = bind(platform, instance, "b-12", "kubernetes")
    assert eleventh.status_code == 400 and "10 live bindings" in eleventh.json()["description"]
    gone = expect_status(platform.deprovision(instance, "kubernetes"), 202).json()["operation"]
    assert all(can_list_secrets(b["credentials"]["kubeconfig"]) == 401 for b in live)  # revoked at once
    assert wait_last_operation(fleet, platform, instance, gone)["state"] == "succeeded"
    expect_status(platform.deprovision(instance, "kubernetes"), 410)


def test_a_platform_polls_last_operation_across_a_control_plane_restart(
    own_server: ServerProcess,
    fleet: Fleet,
    platform: Platform,
    standin: KubeApiServer,
    cluster: client.ApiClient,
) -> None:
    instance = str(uuid.uuid4())
    parameters = {"name": "byo-restart", "kubeconfig": standin.kubeconfig.read_text()}
    operation = expect_status(platform.provision(instance, "kubernetes", parameters), 202).json()["operation"]
    fleet.wait_until(
        lambda: _has_agent_secret(cluster, "byo-restart"), "the agent's Secret was never applied"
    )
    seen: list[str] = []
    polling = threading.Event()

    def poll() -> None:
        while not polling.is_set():
            try:
                answer = platform.last_operation(instance, operation)
                seen.append(f"{answer.status_code} {answer.json().get('state')}")
            except httpx.TransportError:
                seen.append("down")
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        own_server.restart()
        fleet.wait_until(lambda: seen and seen[-1] == "200 in progress", "no answer after the restart")
        play_agent_pod(fleet, standin, cluster, "byo-restart")
        fleet.wait_until(
            lambda: seen and seen[-1] == "200 succeeded", lambda: f"never succeeded: {seen[-5:]}"
        )
    finally:
        polling.set()
        poller.join(10)
    assert {s for s in seen if s != "down"} <= {"200 in progress", "200 succeeded"}, seen


UNREACHABLE = yaml.safe_dump(
    {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
)


def test_two_platforms_never_see_each_others_instances(fleet: Fleet, platform: Platform) -> None:
    other = register_platform(fleet.server, f"sm-{uuid.uuid4().hex[:6]}")
    instance = str(uuid.uuid4())
    parameters = {"name": f"iso-{instance[:8]}", "kubeconfig": UNREACHABLE}
    operation = expect_status(platform.provision(instance, "kubernetes", parameters), 202).json()["operation"]
    path = f"/v2/service_instances/{instance}"
    expect_status(other.http.get(path), 404)
    expect_status(other.last_operation(instance), 404)
    expect_status(other.last_operation(instance, operation), 404)
    expect_status(other.update(instance, context={"active": False}), 422)
    expect_status(other.deprovision(instance, "kubernetes"), 410)
    assert other.provision(instance, "kubernetes", parameters).status_code == 409
    expect_status(bind(other, instance, "b-1", "kubernetes"), 422)
    expect_status(other.http.get(f"{path}/service_bindings/b-1"), 404)
    expect_status(unbind(other, instance, "b-1", "kubernetes"), 410)
    assert expect_status(platform.last_operation(instance, operation), 200).json()["state"] == "in progress"

    wrong = httpx.get(f"{fleet.server.url}/environments/v2/catalog", auth=(platform.name, "nope"))
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")
    again = fleet.server.admin.post(
        f"/api/v1/environment-broker/platforms/{platform.name}/credentials", json={}
    )
    assert again.status_code == 409
    rotated = expect_status(
        fleet.server.admin.post(
            f"/api/v1/environment-broker/platforms/{platform.name}/credentials", json={"rotate": True}
        ),
        201,
    ).json()
    expect_status(platform.http.get("/v2/catalog"), 401)
    fresh = httpx.get(
        f"{fleet.server.url}/environments/v2/catalog",
        auth=(platform.name, rotated["password"]),
        headers={"X-Broker-API-Version": "2.17"},
    )
    assert fresh.status_code == 200
    platform.http.auth = httpx.BasicAuth(platform.name, rotated["password"])
    expect_status(platform.deprovision(instance, "kubernetes"), 202)
    other.http.close()


TRIAL_PLANS = """
plans:
  - name: trial
    backend: kubernetes
    description: a runtime for 15 seconds
    parameters:
      type: object
      required: [kubeconfig]
      properties:
        kubeconfig: {type: string}
    secretParameters: [kubeconfig]
"""


class TrialServer(PlannedServer):
    """`rrm server --plans FILE --trial-lifetime 15s`."""

    def _launch(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        super()._launch([*args, "--trial-lifetime", "15s"], env)


@pytest.fixture
def trial_server(tmp_path: Path, backend: str) -> Iterator[TrialServer]:
    with running_planned_server(tmp_path, backend, TRIAL_PLANS, TrialServer) as server:
        yield server


def test_one_trial_per_global_account_and_it_is_suspended_for_good_after_its_lifetime(
    trial_server: TrialServer, tmp_path: Path
) -> None:
    fleet = Fleet(trial_server, tmp_path / "fleet")
    try:
        standin = start_standin(fleet, tmp_path)
        with standin.api_client() as cluster:
            trial_expires(fleet, register_platform(trial_server, "cf-trial"), standin, cluster)
    finally:
        fleet.close()


def trial_expires(
    fleet: Fleet, platform: Platform, standin: KubeApiServer, cluster: client.ApiClient
) -> None:
    kubeconfig = standin.kubeconfig.read_text()
    nameless = platform.provision(str(uuid.uuid4()), "trial", {"kubeconfig": kubeconfig}, context={})
    assert nameless.status_code == 400 and "globalaccount_id" in nameless.json()["description"]
    instance, operation = provisioned_into_standin(fleet, platform, standin, cluster, "trial-a", plan="trial")
    assert wait_last_operation(fleet, platform, instance, operation)["state"] == "succeeded"
    second = platform.provision(str(uuid.uuid4()), "trial", {"name": "trial-b", "kubeconfig": kubeconfig})
    assert second.status_code == 400, second.text
    assert "one per global account" in second.json()["description"]

    def suspended() -> bool:
        shown = fleet.server.admin.get("/api/v1/environments/trial-a").json()
        return bool(shown["state"] == "suspended")

    fleet.wait_until(suspended, "the trial was not suspended after its lifetime", timeout=DEADLINE + 15)
    assert expect_status(platform.last_operation(instance), 200).json()["state"] == "succeeded"
    resumed = platform.update(instance, context={**CONTEXT, "active": True})
    assert resumed.status_code == 400 and "cannot be resumed" in resumed.json()["description"], resumed.text
    expect_status(platform.deprovision(instance, "trial"), 202)


def listed_by_cli(server: ServerProcess, global_account: str, subaccount: str) -> list[dict[str, Any]]:
    """`rrm get environments` of one tenant, as JSON."""
    command = ("get", "environments", "--global-account", global_account, "--subaccount", subaccount)
    return list(json.loads(ok(rrm(server, *command, "-o", "json"))))


def test_the_cli_issues_platform_credentials_and_lists_what_each_platform_ordered(fleet: Fleet) -> None:
    server, name = fleet.server, f"cli-{uuid.uuid4().hex[:6]}"
    issue = ("environment-broker", "credentials", name)
    issued = json.loads(ok(rrm(server, *issue, "--platform-region", "cf-us10", "-o", "json")))
    assert issued["username"] == name and issued["broker_url"] == f"{server.url}/environments"
    again = rrm(server, *issue)
    assert again.returncode != 0 and "rotate" in again.stderr
    text = ok(rrm(server, *issue, "--rotate"))
    assert f"cf create-service-broker rrm-environments {name} PASSWORD {server.url}/environments" in text
    rotated = json.loads(ok(rrm(server, *issue, "--rotate", "-o", "json")))
    assert rotated["region"] == "cf-us10"  # rotation keeps the platform region
    password = rotated["password"]
    http = httpx.Client(
        base_url=issued["broker_url"], auth=(name, password), headers={"X-Broker-API-Version": "2.17"}
    )
    platform, instance = Platform(name, password, http), str(uuid.uuid4())
    context = {"globalaccount_id": f"ga-{name}", "subaccount_id": "sa-cli", "user_id": "bob"}
    parameters = {"name": f"env-{name}", "kubeconfig": UNREACHABLE}
    expect_status(platform.provision(instance, "kubernetes", parameters, context=context), 202)
    listed = listed_by_cli(server, f"ga-{name}", "sa-cli")
    assert [(e["name"], e["platform"], e["tenant"]["subaccount"]) for e in listed] == [
        (f"env-{name}", name, "sa-cli")
    ]
    assert listed_by_cli(server, f"ga-{name}", "x") == []
    expect_status(platform.deprovision(instance, "kubernetes"), 202)
    http.close()
