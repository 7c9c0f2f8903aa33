"""Gardener environments end to end through real processes: `rrm server --gardener-kubeconfig` against the
Gardener API stand-in creates a Shoot with an account from the Hyperscaler Account Pool, installs the agent
into the "shoot" (the Kubernetes stand-in Gardener's kubeconfig points at), where a real
`rrm agent --target kubernetes` plays the agent pod; a component reaches it; deletion deletes the Shoot
(confirmed first) and marks the account dirty until the cleanup command succeeds."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from .databases import database_for
from .gardener import GardenerApiServer, GardenerServer, HoldingProxy, cleanup_command
from .harness import Fleet, apply, child_env, component, expect_status
from .kube import KubeAgentProcess
from .test_environments import agent_secret, detail, request, stage, wait_operation, wait_stage

pytestmark = pytest.mark.integration
CONFIRM = "confirmation.gardener.cloud/deletion"
QUICK_PLANS = """
plans:
  - name: gardener-quick
    backend: gardener
    regions: [eu-central-1]
    accountPool: gardener
    defaults: {provider: aws, machineType: m6i.large, autoScalerMin: 3, autoScalerMax: 4}
    deadlines: {wait_for_cluster: 12s}
"""


@dataclass
class Setup:
    garden: GardenerApiServer
    server: GardenerServer
    fleet: Fleet
    cleanup: Path
    proxy: HoldingProxy


@pytest.fixture
def setup(tmp_path: Path, backend: str) -> Iterator[Setup]:
    garden = GardenerApiServer(tmp_path)
    plans = tmp_path / "plans.yaml"
    plans.write_text(QUICK_PLANS)
    cleanup = tmp_path / "cleanup"
    extra = ["--plans", str(plans), "--hap-cleanup-command", cleanup_command(cleanup)]
    extra += ["--hap-cleanup-interval", "1"]
    with database_for(backend) as database_url:
        server = GardenerServer(
            garden, extra, tmp_path / "data", tmp_path / "server.log", database_url=database_url
        )
        fleet = Fleet(server, tmp_path / "fleet")
        fleet.processes.append(garden)
        proxy: HoldingProxy | None = None
        try:
            garden.start()
            for name in ("aws-1", "aws-2", "aws-3"):
                garden.binding(name)
            proxy = HoldingProxy(garden.url)
            server.kubeconfig = proxy.kubeconfig(garden.kubeconfig, tmp_path / "garden-via-proxy.yaml")
            server.start()
            yield Setup(garden, server, fleet, cleanup, proxy)
        finally:
            fleet.close()
            server.stop()
            if proxy is not None:
                proxy.close()


def play_agent_pod(setup: Setup, shoot: str, name: str) -> KubeAgentProcess:
    """What the Deployment the server applied in the Shoot would run, with the Secret's URL and token."""
    kubeconfig = setup.garden.shoot_kubeconfig(shoot, setup.fleet.workdir / f"{name}-shoot.yaml")
    with config.new_client_from_config(config_file=str(kubeconfig)) as api:
        secret = agent_secret(api, name)
    agent = KubeAgentProcess(
        name, secret["RRM_DIRECTOR_URL"], setup.fleet.workdir / name, kubeconfig, ["default"]
    )
    setup.fleet.processes.append(agent)
    agent.start(secret["RRM_PAIRING_TOKEN"])
    return agent


def the_shoot(setup: Setup, environment: str) -> dict[str, Any]:
    shoots = [
        s for s in setup.garden.shoots() if s["metadata"]["annotations"]["rrm.io/environment"] == environment
    ]
    assert len(shoots) == 1, shoots
    return shoots[0]


def accounts_cli(setup: Setup) -> list[dict[str, Any]]:
    """`rrm get accounts -o json`, as an operator runs it."""
    env = child_env({"RRM_URL": setup.server.url, "RRM_TOKEN": setup.server.admin_token})
    done = subprocess.run(
        [sys.executable, "-m", "rrm", "get", "accounts", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def check_shoot(shoot: dict[str, Any], operation_id: str) -> str:
    """The Shoot gw-a asked for; its name."""
    name = str(shoot["metadata"]["name"])
    assert len("dev" + name) <= 21
    assert shoot["metadata"]["labels"] == {"rrm.io/global-account": "ga-1", "rrm.io/subaccount": "sa-1"}
    assert shoot["metadata"]["annotations"]["rrm.io/operation"] == operation_id
    spec = shoot["spec"]
    assert (spec["region"], spec["provider"]["type"]) == ("eu-west-2", "aws")
    assert spec["secretBindingName"] in ("aws-1", "aws-2", "aws-3")
    worker = spec["provider"]["workers"][0]
    assert (worker["machine"]["type"], worker["minimum"], worker["maximum"]) == ("m6i.large", 3, 20)
    assert spec["networking"]["nodes"] == "10.250.0.0/16"
    return name


def dirty_until_cleaned(setup: Setup, released: str) -> None:
    """The binding gw-a released stays dirty while the cleanup fails (and is not handed to gw-b of the same
    tenant), and comes back once it succeeds."""
    admin, fleet, garden = setup.server.admin, setup.fleet, setup.garden

    def failed_cleanup() -> dict[str, Any]:
        account: dict[str, Any] = {a["name"]: a for a in admin.get("/api/v1/accounts").json()}[released]
        return account if account["cleanupError"] else {}

    account = fleet.wait_until(failed_cleanup, "the failing cleanup was never recorded")
    assert account["dirty"] and "3 EBS volumes still attached" in account["cleanupError"]
    other = request(admin, "gw-b", "gardener-aws", tenant={"globalAccount": "ga-1"})
    wait_stage(fleet, "gw-b", other["operation"], "create_cluster", ("succeeded",))
    assert the_shoot(setup, "gw-b")["spec"]["secretBindingName"] != released, "a dirty binding was handed out"
    (setup.cleanup / "fail").unlink()
    fleet.wait_until(
        lambda: "dirty" not in garden.labels(released), "the binding never came back to the pool"
    )
    assert "tenantName" not in garden.labels(released)
    assert set((setup.cleanup / "cleaned").read_text().split()) == {released}
    events = admin.get("/api/v1/events", params={"after": 0, "limit": 1000}).json()
    kinds = [e["type"] for e in events if e["subject"] == f"account/SecretBinding/{released}"]
    assert "AccountCleanupFailed" in kinds and kinds[-1] == "AccountCleaned", kinds


def test_a_gardener_environment_becomes_a_connected_runtime_and_its_account_is_cleaned_up(
    setup: Setup,
) -> None:
    admin, fleet, garden = setup.server.admin, setup.fleet, setup.garden
    tenant = {"globalAccount": "ga-1", "subaccount": "sa-1"}
    garden.outcome({"outcome": "hang", "operation": "Create"})  # until the progress was seen
    answer = request(admin, "gw-a", "gardener-aws", region="eu-west-2", tenant=tenant)
    waiting = wait_stage(fleet, "gw-a", answer["operation"], "wait_for_cluster", ("waiting",))
    garden.clear_outcomes()
    assert waiting["description"].startswith("waiting for the cluster: 0 of ~30 min (Shoot c-"), waiting
    name = check_shoot(the_shoot(setup, "gw-a"), answer["operation"])
    account = the_shoot(setup, "gw-a")["spec"]["secretBindingName"]
    assert garden.labels(account)["tenantName"] == "ga-1"
    wait_stage(fleet, "gw-a", answer["operation"], "wait_for_connection", ("waiting", "running"))
    play_agent_pod(setup, name, "gw-a")
    op = wait_operation(fleet, "gw-a", answer["operation"], timeout=60)
    assert op["state"] == "succeeded", op
    assert [s["attempts"] for s in op["stages"] if s["name"] == "create_cluster"] == [1]
    apply(admin, [component("gw-binding", "rrm.io/environment=gw-a")])
    kubeconfig = fleet.workdir / "gw-a-shoot.yaml"
    with config.new_client_from_config(config_file=str(kubeconfig)) as api:
        custom = client.CustomObjectsApi(api)

        def delivered() -> bool:
            items: dict[str, Any] = custom.list_namespaced_custom_object(  # type: ignore[assignment]
                "dapr.io", "v1alpha1", "default", "components"
            )
            return "gw-binding" in [i["metadata"]["name"] for i in items["items"]]

        fleet.wait_until(delivered, "the component never reached the Shoot")
    update = admin.patch("/api/v1/environments/gw-a", json={"parameters": {"autoScalerMax": 10}})
    update_id = expect_status(update, 202).json()["operation"]
    assert wait_operation(fleet, "gw-a", update_id)["state"] == "succeeded"
    assert the_shoot(setup, "gw-a")["spec"]["provider"]["workers"][0]["maximum"] == 10
    shown = {a["name"]: a for a in accounts_cli(setup)}
    assert shown[account]["tenant"] == "ga-1" and shown[account]["environments"] == ["gw-a"]
    assert shown[account]["clusters"] == ["gw-a"] and not shown[account]["dirty"]
    (setup.cleanup / "fail").touch()
    answer = expect_status(admin.delete("/api/v1/environments/gw-a"), 202).json()
    assert wait_operation(fleet, "gw-a", answer["operation"], timeout=60)["state"] == "succeeded"
    assert garden.shoots() == []
    assert admin.get("/api/v1/runtimes/gw-a").status_code == 404
    dirty_until_cleaned(setup, account)
    expect_status(admin.delete("/api/v1/environments/gw-b"), 202)


def test_a_hanging_cluster_fails_at_the_stage_deadline_and_deprovisioning_cleans_up(setup: Setup) -> None:
    admin, fleet, garden = setup.server.admin, setup.fleet, setup.garden
    garden.outcome({"outcome": "hang", "operation": "Create"})
    answer = request(admin, "gw-h", "gardener-quick", tenant={"globalAccount": "ga-h"})
    op = wait_operation(fleet, "gw-h", answer["operation"], timeout=60)
    assert op["state"] == "failed", op
    assert op["lastError"].startswith(
        "stage wait_for_cluster failed: wait_for_cluster did not finish within its deadline of 12 s; "
        "last: waiting for the cluster"
    ), op["lastError"]
    assert op["leftBehind"] == ["the claimed account", "the runtime", "the cluster"]
    assert stage(op, "wait_for_cluster")["state"] == "failed"
    (setup.cleanup / "fail").touch()
    answer = expect_status(admin.delete("/api/v1/environments/gw-h"), 202).json()
    op = wait_operation(fleet, "gw-h", answer["operation"], timeout=60)
    assert op["state"] == "succeeded", op
    assert garden.shoots() == []
    (held,) = [
        b for b, body in garden.bindings().items() if body["metadata"]["labels"].get("tenantName") == "ga-h"
    ]
    assert garden.labels(held)["dirty"] == "true"
    assert admin.get("/api/v1/runtimes/gw-h").status_code == 404
    shown = detail(admin, "gw-h")
    assert shown["state"] == "deprovisioned"
    assert "account" not in shown["resources"], "a released account stays the environment's"


def test_trial_environments_take_the_least_used_shared_binding(setup: Setup) -> None:
    admin, fleet, garden = setup.server.admin, setup.fleet, setup.garden
    garden.binding("shared-a", shared="true")
    garden.binding("shared-b", shared="true")
    first = request(admin, "gt-1", "trial", tenant={"globalAccount": "ga-t1"})
    wait_stage(fleet, "gt-1", first["operation"], "create_cluster", ("succeeded",))
    second = request(admin, "gt-2", "trial", tenant={"globalAccount": "ga-t2"})
    wait_stage(fleet, "gt-2", second["operation"], "create_cluster", ("succeeded",))
    third = request(admin, "gt-3", "trial", tenant={"globalAccount": "ga-t1"})
    wait_stage(fleet, "gt-3", third["operation"], "create_cluster", ("succeeded",))
    used = [the_shoot(setup, f"gt-{i}")["spec"]["secretBindingName"] for i in (1, 2, 3)]
    assert used == ["shared-a", "shared-b", "shared-a"]
    assert "tenantName" not in garden.labels("shared-a")
    assert all("tenantName" not in garden.labels(f"aws-{i}") for i in (1, 2, 3))


def test_a_bad_rule_set_stops_the_server_at_start_naming_the_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "garden.yaml"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: g\nclusters: [{name: g, cluster: {server: "
        "'http://127.0.0.1:9'}}]\nusers: [{name: g, user: {token: t}}]\n"
        "contexts: [{name: g, context: {cluster: g, user: g}}]\n"
    )
    rules = tmp_path / "hap.rules"
    base = [sys.executable, "-m", "rrm", "server", "--data-dir", str(tmp_path / "data"), "--port", "1"]
    base += ["--gardener-kubeconfig", str(kubeconfig), "--gardener-namespace", "garden-dev"]
    for text, message in [
        ("aws\nazure\ngcp\n# trial is missing\n", "no rule for the plans trial"),
        (
            "aws\nazure\ngcp\ntrial -> S\ngcp(PR=*)\n",
            f"{rules}:5: 'gcp(PR=*)' applies to the same requests as line 3",
        ),
        ("aws\naws(PR=cf-eu11) -> EUROPE\n", f"{rules}:2: 'EUROPE'"),
    ]:
        rules.write_text(text)
        done = subprocess.run(
            [*base, "--hap-rules", str(rules)], env=child_env(), capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0 and message in done.stderr, done.stderr
        assert not (tmp_path / "data").exists(), "a refused start stored something"
