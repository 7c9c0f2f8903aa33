"""Environments end to end through real processes: `rrm server` provisions a `local` runtime (an agent
process it supervises) and a `kubernetes` one (the agent's objects applied to the Kubernetes stand-in, the
agent pod played by a real `rrm agent --target kubernetes` started from the Secret the server applied); a
component reaches each; deletion cleans up. A kill -9 of the control plane mid-operation resumes it without
repeating a finished stage, and a stage that hangs fails at the deadline stored before the restart."""

from __future__ import annotations

import base64
import json
import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .harness import DEADLINE, Fleet, ServerProcess, apply, component, expect_status, holds_for, parse_time
from .kube import TOKEN as STANDIN_TOKEN
from .kube import KubeAgentProcess, KubeApiServer, start_standin
from .planned_servers import PlannedServer, running_planned_server
from .test_cli import rrm

pytestmark = pytest.mark.integration
AGENT_NAMESPACE = "rrm-system"


def request(admin: httpx.Client, name: str, plan: str, **body: Any) -> dict[str, Any]:
    response = admin.post("/api/v1/environments", json={"name": name, "plan": plan, **body})
    return dict(expect_status(response, 202).json())


def detail(admin: httpx.Client, name: str) -> dict[str, Any]:
    return dict(expect_status(admin.get(f"/api/v1/environments/{name}"), 200).json())


def operation(admin: httpx.Client, name: str, operation_id: str) -> dict[str, Any]:
    return next(o for o in detail(admin, name)["operations"] if o["id"] == operation_id)


def stage(op: Mapping[str, Any], name: str) -> dict[str, Any]:
    return dict(next(s for s in op["stages"] if s["name"] == name))


def wait_operation(fleet: Fleet, name: str, operation_id: str, timeout: float = DEADLINE) -> dict[str, Any]:
    """Until the operation ends; its last state in the failure message."""
    seen: dict[str, Any] = {}

    def ended() -> dict[str, Any]:
        seen["op"] = operation(fleet.server.admin, name, operation_id)
        return seen["op"] if seen["op"]["state"] in ("succeeded", "failed", "canceled") else {}

    return fleet.wait_until(ended, lambda: f"operation {operation_id} did not end: {seen.get('op')}", timeout)


def wait_stage(
    fleet: Fleet, name: str, operation_id: str, stage_name: str, states: tuple[str, ...]
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> dict[str, Any]:
        seen["stage"] = stage(operation(fleet.server.admin, name, operation_id), stage_name)
        return seen["stage"] if seen["stage"]["state"] in states else {}

    return fleet.wait_until(reached, lambda: f"{stage_name} never reached {states}: {seen.get('stage')}")


def runtime_labels(admin: httpx.Client, name: str) -> dict[str, str]:
    return dict(expect_status(admin.get(f"/api/v1/runtimes/{name}"), 200).json()["labels"])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def local_agents(fleet: Fleet) -> Iterator[Path]:
    """The server's environments directory; any local agent left running (a kill -9) is stopped after."""
    root = fleet.server.data_dir / "environments"
    yield root
    for pid_file in root.glob("*/agent.pid") if root.is_dir() else []:
        pid = int(pid_file.read_text())
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


# --- local --------------------------------------------------------------------------------------------


def test_a_local_environment_runs_an_agent_that_gets_components_and_is_cleaned_up(
    fleet: Fleet, backend: str, local_agents: Path
) -> None:
    admin = fleet.server.admin
    if backend == "postgresql":
        response = admin.post("/api/v1/environments", json={"name": "loc-pg", "plan": "local"})
        assert response.status_code == 422
        assert response.json()["detail"][0]["field"] == "plan"
        assert "single replica" in response.json()["detail"][0]["message"]
        assert (
            expect_status(admin.get("/api/v1/environments", params={"all": "true"}), 200).json()["total"] == 0
        )
        return
    answer = request(admin, "loc-a", "local", labels={"team": "blue"}, tenant={"globalAccount": "ga-1"})
    op = wait_operation(fleet, "loc-a", answer["operation"])
    assert op["state"] == "succeeded", op
    assert {s["attempts"] for s in op["stages"] if s["name"] != "wait_for_connection"} == {1}
    assert runtime_labels(admin, "loc-a") == {
        "team": "blue",
        "rrm.io/environment": "loc-a",
        "rrm.io/plan": "local",
        "rrm.io/global-account": "ga-1",
    }
    directory = Path(detail(admin, "loc-a")["resources"]["directory"])
    assert directory == local_agents / "loc-a"
    mine = admin.get("/api/v1/environments", params={"globalAccount": "ga-1"}).json()["items"]
    assert [e["name"] for e in mine] == ["loc-a"]
    assert admin.get("/api/v1/environments", params={"globalAccount": "ga-2"}).json()["items"] == []
    events = admin.get("/api/v1/events", params={"subject": "environment/loc-a", "limit": 1000}).json()
    succeeded = [e["message"].split(": ")[1].split()[0] for e in events if e["type"] == "StageSucceeded"]
    assert succeeded == [s["name"] for s in op["stages"]]

    def measured() -> bool:
        text = admin.get("/metrics").text
        return (
            'rrm_operation_stage_seconds_count{plan="local",stage="install_agent"} 1.0' in text
            and 'rrm_operations{state="succeeded",type="provision"}' in text
        )

    fleet.wait_until(measured, "the operation's metrics never appeared")
    apply(admin, [component("loc-binding", "rrm.io/environment=loc-a")])
    fleet.wait_until(
        lambda: any((directory / "resources").glob("*loc-binding*")), "the component never landed"
    )
    pid = int((directory / "agent.pid").read_text())
    answer = expect_status(admin.delete("/api/v1/environments/loc-a"), 202).json()
    assert wait_operation(fleet, "loc-a", answer["operation"])["state"] == "succeeded"
    assert not directory.exists() and not pid_alive(pid)
    assert admin.get("/api/v1/runtimes/loc-a").status_code == 404
    assert admin.get("/api/v1/environments").json()["total"] == 0
    archived = admin.get("/api/v1/environments", params={"all": "true"}).json()["items"]
    assert [(e["name"], e["state"]) for e in archived] == [("loc-a", "deprovisioned")]


def test_the_cli_creates_updates_describes_and_deletes_an_environment(
    fleet: Fleet, backend: str, local_agents: Path
) -> None:
    if backend == "postgresql":
        pytest.skip("the local plan is refused on PostgreSQL")
    created = rrm(
        fleet.server, "environment", "create", "cli-a", "--plan", "local", "-l", "team=red", "--wait"
    )
    assert created.returncode == 0, created.stderr
    assert "succeeded: runtime cli-a is Connected" in created.stdout
    listed = json.loads(rrm(fleet.server, "get", "environments", "-o", "json").stdout)
    assert [(e["name"], e["state"]) for e in listed if e["name"] == "cli-a"] == [("cli-a", "succeeded")]
    refused = rrm(fleet.server, "environment", "update", "cli-a", "--param", "size=3")
    assert refused.returncode == 1 and "parameters.size: cannot be changed on plan local" in refused.stderr
    updated = rrm(
        fleet.server, "environment", "update", "cli-a", "-l", "team=green", "-l", "tier=gold", "--wait"
    )
    assert updated.returncode == 0, updated.stderr
    assert runtime_labels(fleet.server.admin, "cli-a")["team"] == "green"
    described = rrm(fleet.server, "describe", "environment", "cli-a")
    for text in (
        "wait_for_connection",
        "update_runtime",
        "runtime cli-a labelled",
        str(local_agents / "cli-a"),
    ):
        assert text in described.stdout, described.stdout
    deleted = rrm(fleet.server, "environment", "delete", "cli-a", "--wait")
    assert deleted.returncode == 0, deleted.stderr
    assert "cli-a" in rrm(fleet.server, "get", "environments", "--all").stdout
    assert "cli-a" not in rrm(fleet.server, "get", "environments").stdout


def test_a_local_agent_that_dies_is_started_again(fleet: Fleet, backend: str, local_agents: Path) -> None:
    if backend == "postgresql":
        pytest.skip("the local plan is refused on PostgreSQL (the test above)")
    admin = fleet.server.admin
    answer = request(admin, "loc-b", "local")
    assert wait_operation(fleet, "loc-b", answer["operation"])["state"] == "succeeded"
    pid_file = local_agents / "loc-b" / "agent.pid"
    first = int(pid_file.read_text())
    os.kill(first, signal.SIGKILL)
    fleet.wait_until(lambda: int(pid_file.read_text()) != first, "the dead agent was not restarted")
    assert pid_alive(int(pid_file.read_text()))
    expect_status(admin.delete("/api/v1/environments/loc-b"), 202)


def test_a_local_agent_outlives_a_kill_9_of_the_control_plane_and_is_adopted(
    own_server: ServerProcess, fleet: Fleet, backend: str, local_agents: Path
) -> None:
    if backend == "postgresql":
        pytest.skip("the local plan is refused on PostgreSQL")
    answer = request(own_server.admin, "loc-k", "local")
    assert wait_operation(fleet, "loc-k", answer["operation"])["state"] == "succeeded"
    pid = int((local_agents / "loc-k" / "agent.pid").read_text())
    own_server.kill9()
    assert pid_alive(pid), "a kill -9 of the control plane leaves its local agents running"
    own_server.start()
    pid_file = local_agents / "loc-k" / "agent.pid"
    holds_for(
        lambda: int(pid_file.read_text()) == pid and pid_alive(pid),
        5,  # more than two supervision passes of the new leader
        lambda: f"the running agent was not adopted:\n{own_server.tail()}",
    )
    assert "is not running: starting it" not in own_server.log_path.read_text()
    connected = own_server.admin.get("/api/v1/runtimes/loc-k").json()["conditions"]
    assert [c["status"] for c in connected if c["type"] == "Connected"] == ["True"]
    own_server.stop()
    assert not pid_alive(pid), "a graceful stop of the control plane stops the local agents"


def test_bad_requests_are_refused_naming_the_field_and_store_nothing(fleet: Fleet) -> None:
    admin = fleet.server.admin
    before = admin.get("/api/v1/environments", params={"all": "true"}).json()["total"]
    cases = [
        ({"name": "Bad_Name", "plan": "kubernetes", "parameters": {"kubeconfig": "x"}}, "name"),
        ({"name": "bad-plan", "plan": "nope"}, "plan"),
        ({"name": "bad-param", "plan": "kubernetes"}, "parameters.kubeconfig"),
        (
            {"name": "bad-param", "plan": "kubernetes", "parameters": {"kubeconfig": "x", "size": 3}},
            "parameters.size",
        ),
        (
            {
                "name": "bad-label",
                "plan": "kubernetes",
                "parameters": {"kubeconfig": "x"},
                "labels": {"rrm.io/plan": "x"},
            },
            "labels.rrm.io/plan",
        ),
    ]
    for body, field in cases:
        response = admin.post("/api/v1/environments", json=body)
        assert response.status_code == 422, response.text
        assert field in [p["field"] for p in response.json()["detail"]], response.text
    assert admin.get("/api/v1/environments", params={"all": "true"}).json()["total"] == before


# --- kubernetes ---------------------------------------------------------------------------------------


@pytest.fixture
def standin(fleet: Fleet) -> KubeApiServer:
    return start_standin(fleet)


@pytest.fixture
def cluster(standin: KubeApiServer) -> Iterator[client.ApiClient]:
    with standin.api_client() as api_client:
        yield api_client


def agent_secret(api_client: client.ApiClient, name: str) -> dict[str, str]:
    secret = client.CoreV1Api(api_client).read_namespaced_secret(f"rrm-agent-{name}", AGENT_NAMESPACE)
    data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
    return {**data, **(secret.string_data or {})}


def play_agent_pod(
    fleet: Fleet, standin: KubeApiServer, api_client: client.ApiClient, name: str
) -> KubeAgentProcess:
    """What the Deployment the server applied would run: the agent with the Secret's URL and token."""
    secret = agent_secret(api_client, name)
    token = secret["RRM_PAIRING_TOKEN"]
    url = secret["RRM_DIRECTOR_URL"]
    agent = KubeAgentProcess(name, url, fleet.workdir / name, standin.kubeconfig, ["default"])
    fleet.processes.append(agent)
    agent.start(token)
    return agent


def test_a_kubernetes_environment_installs_the_agent_into_the_cluster_and_removes_it(
    fleet: Fleet, standin: KubeApiServer, cluster: client.ApiClient
) -> None:
    admin = fleet.server.admin
    kubeconfig = standin.kubeconfig.read_text()
    answer = request(admin, "byo-a", "kubernetes", parameters={"kubeconfig": kubeconfig})
    wait_stage(fleet, "byo-a", answer["operation"], "wait_for_connection", ("waiting", "running"))
    shown = detail(admin, "byo-a")
    assert shown["secretParameters"] == ["kubeconfig"] and "kubeconfig" not in shown["parameters"]
    assert STANDIN_TOKEN in kubeconfig and STANDIN_TOKEN not in json.dumps(shown)
    database = fleet.server.data_dir / "rrm.db"
    if database.exists():  # SQLite: the kubeconfig is sealed at rest, in the database and its log
        stored = b"".join(p.read_bytes() for p in database.parent.glob("rrm.db*"))
        assert STANDIN_TOKEN.encode() not in stored
    deployment = client.AppsV1Api(cluster).read_namespaced_deployment("rrm-agent-byo-a", AGENT_NAMESPACE)
    assert deployment.to_dict()["metadata"]["labels"]["app.kubernetes.io/instance"] == "byo-a"
    play_agent_pod(fleet, standin, cluster, "byo-a")
    assert wait_operation(fleet, "byo-a", answer["operation"])["state"] == "succeeded"
    apply(admin, [component("byo-binding", "rrm.io/environment=byo-a")])
    custom = client.CustomObjectsApi(cluster)

    def delivered() -> bool:
        listed = custom.list_namespaced_custom_object("dapr.io", "v1alpha1", "default", "components")
        items = cast(dict[str, Any], listed)["items"]
        return "byo-binding" in [i["metadata"]["name"] for i in items]

    fleet.wait_until(delivered, "the component never reached the cluster")
    answer = expect_status(admin.delete("/api/v1/environments/byo-a"), 202).json()
    assert wait_operation(fleet, "byo-a", answer["operation"])["state"] == "succeeded"
    with pytest.raises(ApiException) as gone:
        client.AppsV1Api(cluster).read_namespaced_deployment("rrm-agent-byo-a", AGENT_NAMESPACE)
    assert gone.value.status == 404
    assert admin.get("/api/v1/runtimes/byo-a").status_code == 404


def test_a_delete_during_provisioning_cancels_it_and_removes_what_it_installed(
    fleet: Fleet, standin: KubeApiServer, cluster: client.ApiClient
) -> None:
    admin = fleet.server.admin
    answer = request(admin, "byo-c", "kubernetes", parameters={"kubeconfig": standin.kubeconfig.read_text()})
    wait_stage(fleet, "byo-c", answer["operation"], "wait_for_connection", ("waiting",))
    deleting = expect_status(admin.delete("/api/v1/environments/byo-c"), 202).json()
    again = expect_status(admin.delete("/api/v1/environments/byo-c"), 202).json()
    assert again["operation"] == deleting["operation"], "a second delete answers the running one"
    provisioning = wait_operation(fleet, "byo-c", answer["operation"])
    assert provisioning["state"] == "canceled"
    assert provisioning["description"] == "canceled: the environment is being deleted"
    assert stage(provisioning, "wait_for_connection")["state"] == "canceled"
    assert wait_operation(fleet, "byo-c", deleting["operation"])["state"] == "succeeded"
    with pytest.raises(ApiException) as gone:
        client.CoreV1Api(cluster).read_namespaced_secret("rrm-agent-byo-c", AGENT_NAMESPACE)
    assert gone.value.status == 404
    assert admin.get("/api/v1/runtimes/byo-c").status_code == 404
    assert admin.get("/api/v1/environments/byo-c").json()["state"] == "deprovisioned"


# --- restarts -----------------------------------------------------------------------------------------


PLANS = """
plans:
  - name: byo-quick
    backend: kubernetes
    parameters:
      type: object
      required: [kubeconfig]
      properties:
        kubeconfig: {type: string}
    secretParameters: [kubeconfig]
    deadlines:
      wait_for_connection: 20s
"""


@pytest.fixture
def planned_server(tmp_path: Path, backend: str) -> Iterator[PlannedServer]:
    with running_planned_server(tmp_path, backend, PLANS, PlannedServer) as server:
        yield server


@pytest.fixture
def planned_fleet(planned_server: PlannedServer, tmp_path: Path) -> Iterator[Fleet]:
    """The processes one test starts against `planned_server`."""
    fleet = Fleet(planned_server, tmp_path / "fleet")
    try:
        yield fleet
    finally:
        fleet.close()


def killed_while_waiting(
    fleet: Fleet, standin: KubeApiServer, name: str, plan: str
) -> tuple[str, dict[str, Any]]:
    """Request environment `name` on the stand-in, kill -9 the control plane while the operation waits for
    the agent, and start it again; returns the operation's id and its waiting stage as seen before."""
    server = fleet.server
    answer = request(server.admin, name, plan, parameters={"kubeconfig": standin.kubeconfig.read_text()})
    waiting = wait_stage(fleet, name, answer["operation"], "wait_for_connection", ("waiting",))
    server.kill9()
    server.start()
    return str(answer["operation"]), waiting


def test_a_kill_9_mid_operation_resumes_it_without_repeating_a_finished_stage(planned_fleet: Fleet) -> None:
    fleet = planned_fleet
    standin = start_standin(fleet)
    operation_id, _ = killed_while_waiting(fleet, standin, "byo-k", "kubernetes")
    admin = fleet.server.admin
    with standin.api_client() as cluster:
        play_agent_pod(fleet, standin, cluster, "byo-k")
    op = wait_operation(fleet, "byo-k", operation_id)
    assert op["state"] == "succeeded", op
    finished_before = [s for s in op["stages"] if s["name"] != "wait_for_connection"]
    assert [(s["name"], s["attempts"]) for s in finished_before] == [
        ("validate", 1), ("register_runtime", 1), ("fetch_kubeconfig", 1), ("install_agent", 1),
    ]  # fmt: skip
    events = admin.get("/api/v1/events", params={"after": 0, "limit": 1000}).json()
    issued = [e for e in events if e["type"] == "PairingTokenIssued" and e["subject"] == "runtime/byo-k"]
    assert len(issued) == 1, issued


def test_a_hanging_stage_fails_at_the_deadline_stored_before_a_restart(planned_fleet: Fleet) -> None:
    fleet = planned_fleet
    operation_id, waiting = killed_while_waiting(fleet, start_standin(fleet), "byo-h", "byo-quick")
    admin = fleet.server.admin
    op = wait_operation(fleet, "byo-h", operation_id, timeout=60)
    hung = stage(op, "wait_for_connection")
    assert op["state"] == "failed"
    assert hung["deadlineAt"] == waiting["deadlineAt"], "the restart moved the deadline"
    assert parse_time(hung["finishedAt"]) >= parse_time(waiting["deadlineAt"])
    assert parse_time(hung["finishedAt"]) - parse_time(waiting["deadlineAt"]) < 10
    assert op["lastError"].startswith(
        "stage wait_for_connection failed: wait_for_connection did not finish within its deadline of "
        "20 s; last: waiting for the agent of byo-h to connect"
    )
    assert op["leftBehind"] == ["the runtime", "the agent"]
    assert detail(admin, "byo-h")["state"] == "failed"
    answer = expect_status(admin.delete("/api/v1/environments/byo-h"), 202).json()
    assert wait_operation(fleet, "byo-h", answer["operation"])["state"] == "succeeded"
    assert admin.get("/api/v1/runtimes/byo-h").status_code == 404


def test_on_postgresql_the_leader_provisions_and_a_new_leader_resumes_after_a_kill_9(
    tmp_path: Path, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("replicas share a PostgreSQL database")
    from .databases import fresh_postgres_database
    from .test_replicas import Replicas, _leader

    with fresh_postgres_database() as url:
        replicas = Replicas(tmp_path, url, 2)
        fleet = Fleet(replicas.servers[0], tmp_path / "fleet")
        try:
            standin = start_standin(fleet)
            fleet.wait_until(lambda: sum(_leader(s) for s in replicas.servers) == 1, "no single leader")
            leader = next(s for s in replicas.servers if _leader(s))
            standby = next(s for s in replicas.servers if s is not leader)
            fleet.server = standby
            kubeconfig = standin.kubeconfig.read_text()
            answer = request(standby.admin, "byo-r", "kubernetes", parameters={"kubeconfig": kubeconfig})
            wait_stage(fleet, "byo-r", answer["operation"], "wait_for_connection", ("waiting",))
            leader.kill9()
            fleet.wait_until(lambda: _leader(standby), "the standby never took over")
            with standin.api_client() as cluster:
                token = agent_secret(cluster, "byo-r")["RRM_PAIRING_TOKEN"]
            agent = KubeAgentProcess(
                "byo-r", standby.url, fleet.workdir / "byo-r", standin.kubeconfig, ["default"]
            )
            fleet.processes.append(agent)
            agent.start(token)  # the Service now routes the agent to the surviving replica
            op = wait_operation(fleet, "byo-r", answer["operation"], timeout=90)  # a loaded machine
            assert op["state"] == "succeeded", op
            assert {s["name"]: s["attempts"] for s in op["stages"] if s["name"] != "wait_for_connection"} == {
                "validate": 1, "register_runtime": 1, "fetch_kubeconfig": 1, "install_agent": 1,
            }  # fmt: skip
        finally:
            fleet.close()
            replicas.close()
