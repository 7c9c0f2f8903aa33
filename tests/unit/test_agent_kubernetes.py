"""The Kubernetes target's pure parts and its restart policy, without an API server."""

from __future__ import annotations

import asyncio
import base64
import copy
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rrm.agent import AgentConfig, run_agent
from rrm.agent.cache import DesiredStateCache
from rrm.agent.client import DirectorClock
from rrm.agent.drift import changed_paths, drift_records
from rrm.agent.health import HealthServer
from rrm.agent.loop import Agent
from rrm.agent.targets.base import ApplyOutcome, NativeChanges, Target, component_results
from rrm.agent.targets.kube.client import KubeError
from rrm.agent.targets.kube.objects import managed_selector, owned_view, plan_state
from rrm.agent.targets.kube.restarts import Concern, Restarter, dapr_version, hot_reload_feature
from rrm.core.hashing import state_hash
from rrm.wire.protocol import DeliveredSecret, DesiredState, encode

RUNTIME = "3f1c8f8e-0000-4000-8000-000000000001"


def component(
    name: str, namespace: str | None = None, secret: str | None = None, **extra: Any
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "annotations": {"rrm.io/revision": "2"}}
    if namespace:
        metadata["namespace"] = namespace
    items: list[dict[str, Any]] = [{"name": "url", "value": "http://x.invalid/"}]
    if secret:
        items.append({"name": "securityToken", "secretKeyRef": {"name": secret, "key": "token"}})
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": metadata,
        "spec": {"type": "bindings.http", "version": "v1", "metadata": items},
        **extra,
    }


def state(*components: dict[str, Any], secrets: dict[str, dict[str, str]] | None = None) -> DesiredState:
    delivered = [DeliveredSecret(name=n, revision=1, data=d) for n, d in (secrets or {}).items()]
    return DesiredState(
        hash=state_hash(list(components), [(s.name, s.revision) for s in delivered]),
        components=list(components),
        secrets=delivered,
    )


# --- objects ---------------------------------------------------------------------------------------------


def test_each_component_lands_in_its_namespace_with_copies_of_its_secrets() -> None:
    plan = plan_state(
        state(
            component("a", secret="tok"),
            component("b", namespace="shop", secret="tok"),
            component("c", namespace="elsewhere"),
            component("d", secret="missing"),
            secrets={"tok": {"token": "v"}},
        ),
        RUNTIME,
        ["team", "shop"],
    )
    assert sorted(plan.objects) == [
        "Component/shop/b",
        "Component/team/a",
        "Secret/shop/tok",
        "Secret/team/tok",
    ]
    assert plan.needs["Component/shop/b"] == {"Secret/shop/tok"}
    assert "not one of the agent's namespaces" in plan.rejected["c"]
    assert "missing/token" in plan.rejected["d"]
    secret = plan.objects["Secret/team/tok"]
    assert base64.b64decode(secret["data"]["token"]) == b"v"
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "rrm", "rrm.io/runtime": RUNTIME}
    comp = plan.objects["Component/team/a"]
    assert "auth" not in comp, "the Kubernetes secret store is Dapr's default there"
    assert comp["metadata"]["labels"]["rrm.io/runtime"] == RUNTIME
    assert managed_selector(RUNTIME) == f"app.kubernetes.io/managed-by=rrm,rrm.io/runtime={RUNTIME}"


def test_owned_view_keeps_only_what_the_agent_applied() -> None:
    live = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": "a",
            "namespace": "team",
            "uid": "u",
            "resourceVersion": "7",
            "labels": {"rrm.io/runtime": RUNTIME, "added-by-someone": "x"},
            "managedFields": [
                {
                    "manager": "rrm-agent",
                    "operation": "Apply",
                    "fieldsV1": {
                        "f:metadata": {"f:labels": {"f:rrm.io/runtime": {}}},
                        "f:spec": {"f:type": {}, "f:metadata": {'k:{"name":"url"}': {".": {}}}},
                    },
                },
                {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:version": {}}}},
            ],
        },
        "spec": {"type": "bindings.http", "version": "v2", "metadata": [{"name": "url", "value": "u"}]},
    }
    assert owned_view(live) == {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "a", "namespace": "team", "labels": {"rrm.io/runtime": RUNTIME}},
        "spec": {"type": "bindings.http", "metadata": [{"name": "url", "value": "u"}]},
    }


def test_drift_names_the_changed_paths_never_the_values() -> None:
    before = {"spec": {"metadata": [{"value": "old"}], "type": "t"}, "data": {"token": "czE="}}
    after = {
        "spec": {"metadata": [{"value": "new"}], "type": "t"},
        "data": {"token": "czI=", "extra": "eA=="},
    }
    assert changed_paths(before, after) == ["data.extra", "data.token", "spec.metadata"]
    records = drift_records({"a": before, "b": before}, {"a": after, "c": after})
    assert {(r.resource, r.change) for r in records} == {
        ("a", "modified"),
        ("b", "deleted"),
        ("c", "created"),
    }
    assert "czI=" not in str(encode(records))


# --- restarts ----------------------------------------------------------------------------------------------


def workload(
    kind: str, name: str, app_id: str | None, enabled: bool = True, **annotations: str
) -> dict[str, Any]:
    template_annotations = {"dapr.io/enabled": "true" if enabled else "false", **annotations}
    if app_id:
        template_annotations["dapr.io/app-id"] = app_id
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"annotations": template_annotations}},
        },
    }


class FakeApi:
    def __init__(self, workloads: list[dict[str, Any]], pods: dict[str, str] | None = None) -> None:
        self.workloads = workloads
        self.pods = pods or {}  # app label → daprd image
        self.configurations: dict[str, dict[str, Any]] = {}
        self.patched: list[str] = []

    def list_workloads(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return [w for w in self.workloads if w["kind"] == kind and w["metadata"]["namespace"] == namespace]

    def annotate_pod_template(
        self, kind: str, namespace: str, name: str, annotations: dict[str, str]
    ) -> None:
        if name == "gone":
            raise KubeError(404, "not found")
        self.patched.append(f"{kind}/{namespace}/{name}")

    def get_configuration(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.configurations.get(name)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        image = self.pods.get(selector.removeprefix("app="))
        return [{"spec": {"containers": [{"name": "daprd", "image": image}]}}] if image else []


def restarter(api: FakeApi, mode: str = "off", min_interval: float = 0.0, clock: Any = None) -> Restarter:
    return Restarter(api, mode, min_interval, clock or (lambda: 0.0))  # type: ignore[arg-type]


def test_scopes_pick_exactly_the_dapr_enabled_workloads_with_those_app_ids() -> None:
    api = FakeApi(
        [
            workload("Deployment", "orders", "orders"),
            workload("StatefulSet", "stock", "stock"),
            workload("Deployment", "billing", "billing"),
            workload("Deployment", "plain", "orders", enabled=False),
            workload("Deployment", "gone", "orders"),
        ]
    )
    result = restarter(api).restart([Concern("team", ("orders", "stock"))])
    assert result is not None and result.exit_code == 0
    assert result.restarted == ["Deployment/team/orders", "StatefulSet/team/stock"]
    assert api.patched == result.restarted

    api.patched.clear()
    unscoped = restarter(api).restart([Concern("team", ())])
    assert unscoped is not None
    assert sorted(unscoped.restarted) == [
        "Deployment/team/billing",
        "Deployment/team/orders",
        "StatefulSet/team/stock",
    ]
    assert restarter(api, mode="on").restart([Concern("team", ())]) is None


def test_auto_restarts_only_sidecars_that_do_not_hot_reload() -> None:
    api = FakeApi(
        [
            workload("Deployment", "configured", "a", **{"dapr.io/config": "hot"}),
            workload("Deployment", "configured-off", "a", **{"dapr.io/config": "cold"}),
            workload("Deployment", "new", "a"),
            workload("Deployment", "old", "a"),
            workload("Deployment", "pinned", "a", **{"dapr.io/sidecar-image": "ghcr.io/dapr/daprd:1.12.0"}),
            workload("Deployment", "unknown", "a"),
        ],
        pods={
            "new": "ghcr.io/dapr/daprd:1.18.3",
            "old": "ghcr.io/dapr/daprd:1.17.1",
            "configured-off": "daprd:1.18.0",
        },
    )
    api.configurations["hot"] = {"spec": {"features": [{"name": "HotReload", "enabled": True}]}}
    api.configurations["cold"] = {"spec": {"features": [{"name": "HotReload", "enabled": False}]}}
    result = restarter(api, mode="auto").restart([Concern("team", ("a",))])
    assert result is not None
    assert result.restarted == [
        "Deployment/team/configured-off",
        "Deployment/team/old",
        "Deployment/team/pinned",
        "Deployment/team/unknown",
    ]
    secrets_only = restarter(api, mode="auto").restart([Concern("team", ("a",), secrets_only=True)])
    assert secrets_only is not None and len(secrets_only.restarted) == 6, "hot reload misses rotated Secrets"


def test_restarts_are_rate_limited_postponed_and_not_dropped() -> None:
    now = [100.0]
    woken = threading.Event()
    api = FakeApi([workload("Deployment", "orders", "orders")])
    limited = restarter(api, min_interval=30.0, clock=lambda: now[0])
    limited.wake = woken.set
    first = limited.restart([Concern("team", ())])
    assert first is not None and first.restarted == ["Deployment/team/orders"]

    now[0] = 110.0
    second = limited.restart([Concern("team", ()), Concern("team", ("orders",))])
    assert (
        second is not None and second.restarted == [] and "postponed Deployment/team/orders" in second.output
    )
    assert api.patched == ["Deployment/team/orders"]

    now[0] = 131.0
    due = limited.restart([])  # the next reconcile, with nothing new
    assert due is not None and due.restarted == ["Deployment/team/orders"]
    assert limited.restart([]) is None


def test_dapr_versions_and_hot_reload_features_are_read_leniently() -> None:
    assert dapr_version("ghcr.io/dapr/daprd:1.14.4") == (1, 14)
    assert dapr_version("registry:5000/daprd:v1.18.0-rc.1") == (1, 18)
    assert dapr_version("daprd:latest") is None
    assert dapr_version("daprd@sha256:abc") is None
    assert hot_reload_feature({"spec": {"features": [{"name": "Other", "enabled": True}]}}) is None
    assert hot_reload_feature(None) is None


# --- process level -----------------------------------------------------------------------------------------


def test_health_endpoints_answer_liveness_at_once_and_readiness_when_ready() -> None:
    async def scenario() -> None:
        ready = [False]
        server = HealthServer(0, lambda: ready[0], host="127.0.0.1")
        await server.start()
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/livez")).status_code == 200
                assert (await http.get("/readyz")).status_code == 503
                ready[0] = True
                assert (await http.get("/readyz")).status_code == 200
                assert (await http.get("/other")).status_code == 404
                assert (await http.post("/livez")).status_code == 405
        finally:
            await server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"kubeconfig": Path("/nonexistent/kubeconfig")}, "cannot use the kubeconfig"),
        ({"namespaces": ["Not_A_Namespace"]}, "--namespace"),
        ({"hot_reload": "sometimes"}, "--hot-reload"),
    ],
)
def test_kubernetes_configuration_errors_exit_with_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, options: dict[str, Any], expected: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    config = AgentConfig(
        director_urls=["http://127.0.0.1:9"],
        state_dir=tmp_path / "state",
        target="kubernetes",
        token="t",
        **{"kubeconfig": kubeconfig, **options},
    )
    assert run_agent(config) == 2
    assert expected in caplog.text


# --- the loop's reconcile triggers (generic, shown with an in-memory target) ------------------------------


class MemoryTarget(Target):
    """Objects in a dict; `watch` hands out the wake callback so a test can play the watch."""

    name = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.wake: Callable[[], None] | None = None
        self.lock = threading.Lock()

    @classmethod
    def from_config(cls, config: AgentConfig) -> MemoryTarget:
        return cls()

    def watch(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def render(self, state: DesiredState) -> dict[str, dict[str, Any]]:
        return {c["metadata"]["name"]: c for c in state.components}

    def observe(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.objects)

    def apply(self, changes: NativeChanges, state: DesiredState, *, prune: bool) -> ApplyOutcome:
        with self.lock:
            self.objects.update(copy.deepcopy({**changes.create, **changes.update}))
            for key in changes.delete if prune else ():
                del self.objects[key]
        return ApplyOutcome(resources=component_results(state, {}), changed=not changes.empty)


class OneStateDirector:
    def __init__(self, desired: DesiredState) -> None:
        self.answers: list[DesiredState] = [desired]
        self.clock = DirectorClock()
        self.heard_at = -math.inf

    async def fetch_desired(self, etag: str | None, wait: float) -> DesiredState | None:
        if not self.answers:
            await asyncio.Event().wait()
        return self.answers.pop(0)

    async def report_status(self, report: object) -> None:
        return None


def run_agent_until(tmp_path: Path, target: MemoryTarget, reconcile_interval: float, scenario: Any) -> Agent:
    director: Any = OneStateDirector(state(component("a")))
    agent = Agent(director, target, DesiredStateCache(tmp_path), reconcile_interval=reconcile_interval)

    async def main() -> None:
        task = asyncio.ensure_future(agent.run())
        try:
            await eventually(lambda: "a" in target.objects and agent.ready)
            await scenario(agent)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    return agent


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_a_wake_from_the_target_puts_a_hand_edit_back_at_once(tmp_path: Path) -> None:
    target = MemoryTarget()

    async def scenario(agent: Agent) -> None:
        with target.lock:
            target.objects["a"]["spec"]["type"] = "bindings.edited"
        assert target.wake is not None
        threading.Thread(target=target.wake).start()  # watches call it from their own threads
        await eventually(lambda: target.objects["a"]["spec"]["type"] == "bindings.http")
        await eventually(lambda: bool(agent.drift))

    agent = run_agent_until(tmp_path, target, reconcile_interval=600, scenario=scenario)
    assert [(d.resource, d.change, d.fields) for d in agent.drift] == [("a", "modified", ["spec.type"])]


def test_the_periodic_reconcile_puts_a_deleted_object_back_without_a_wake(tmp_path: Path) -> None:
    target = MemoryTarget()

    async def scenario(agent: Agent) -> None:
        with target.lock:
            del target.objects["a"]
        await eventually(lambda: "a" in target.objects)
        await eventually(lambda: bool(agent.drift))

    agent = run_agent_until(tmp_path, target, reconcile_interval=0.2, scenario=scenario)
    assert [(d.resource, d.change) for d in agent.drift] == [("a", "deleted")]
