"""The Kubernetes stand-in's workloads (`kube_workloads.py`, on with `rollout_seconds`) follow the rules
the Deployment documentation and daprd's metrics state, so the agent's load checks cannot pass against a
laxer cluster."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import kube_apiserver
import pytest

TOKEN = "t"
NS = "team"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROLLOUT_SECONDS = 0.6
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
COMPONENTS = f"/apis/dapr.io/v1alpha1/namespaces/{NS}/components"
PODS = f"/api/v1/namespaces/{NS}/pods"
MERGE = {"Content-Type": "application/merge-patch+json", **AUTH}


@pytest.fixture
def url() -> Iterator[str]:
    standin = kube_apiserver.ApiServer(0, TOKEN, rollout_seconds=ROLLOUT_SECONDS, sidecar_init_delay=0.05)
    thread = threading.Thread(target=standin.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{standin.server_address[1]}"
    finally:
        standin.shutdown()
        standin.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {check}")


def create_deployment(
    url: str, annotations: dict[str, str], replicas: int = 1, **spec: Any
) -> dict[str, Any]:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {
                "metadata": {"labels": {"app": "shop"}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
            },
            **spec,
        },
    }
    response = httpx.post(f"{url}{DEPLOYMENTS}", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return dict(response.json())


def get(url: str, path: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}{path}", headers=AUTH).json())


def dapr_annotations(port: int, **extra: str) -> dict[str, str]:
    return {"dapr.io/enabled": "true", "dapr.io/app-id": "shop", "dapr.io/metrics-port": str(port), **extra}


def component(name: str, version: str = "v1", scopes: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "type": "bindings.http",
            "version": version,
            "metadata": [{"name": "url", "value": "http://x/"}],
        },
    }
    if scopes is not None:
        body["scopes"] = scopes
    return body


def rolled_out(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status") or {}
    return (
        status.get("observedGeneration") == deployment["metadata"]["generation"]
        and status.get("updatedReplicas") == status.get("availableReplicas") == deployment["spec"]["replicas"]
    )


def test_generation_counts_spec_changes_only(url: str) -> None:
    """ObjectMeta: generation is "a sequence number representing a specific generation of the desired
    state. Populated by the system"; a metadata-only or status change is no new desired state."""
    created = create_deployment(url, {})
    assert created["metadata"]["generation"] == 1
    labelled = httpx.patch(
        f"{url}{DEPLOYMENTS}/shop", json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE
    )
    assert labelled.json()["metadata"]["generation"] == 1
    patch = {"spec": {"template": {"metadata": {"annotations": {"rrm.io/restarted-at": "now"}}}}}
    changed = httpx.patch(f"{url}{DEPLOYMENTS}/shop", json=patch, headers=MERGE)
    assert changed.json()["metadata"]["generation"] == 2


def test_a_template_change_rolls_out_observed_then_updated_and_available(url: str) -> None:
    """Deployment docs, "Progressing Deployment" / "Complete Deployment": while new pods replace old ones
    the Progressing condition says ReplicaSetUpdated; complete when all replicas are updated and available,
    with reason NewReplicaSetAvailable; `observedGeneration` tells which spec the status is about."""
    create_deployment(url, {}, replicas=2)
    first = wait_for(lambda: rolled_out(d := get(url, f"{DEPLOYMENTS}/shop")) and d)
    old_pods = {p["metadata"]["name"] for p in get(url, PODS)["items"]}
    assert len(old_pods) == 2
    patch = {"spec": {"template": {"metadata": {"annotations": {"rrm.io/restarted-at": "now"}}}}}
    httpx.patch(f"{url}{DEPLOYMENTS}/shop", json=patch, headers=MERGE).raise_for_status()
    progressing = wait_for(
        lambda: (d := get(url, f"{DEPLOYMENTS}/shop"))["status"]["observedGeneration"] == 2 and d
    )
    assert progressing["status"]["updatedReplicas"] == 0
    reasons = {c["type"]: c["reason"] for c in progressing["status"]["conditions"]}
    assert reasons["Progressing"] == "ReplicaSetUpdated"
    done = wait_for(lambda: rolled_out(d := get(url, f"{DEPLOYMENTS}/shop")) and d)
    assert {c["type"]: c["reason"] for c in done["status"]["conditions"]} == {
        "Available": "MinimumReplicasAvailable",
        "Progressing": "NewReplicaSetAvailable",
    }
    assert done["metadata"]["generation"] == first["metadata"]["generation"] + 1
    pods = get(url, PODS)["items"]
    assert len(pods) == 2 and not old_pods & {p["metadata"]["name"] for p in pods}
    for pod in pods:
        assert pod["status"]["podIP"].startswith("127.0.0.")
        assert pod["metadata"]["labels"]["pod-template-hash"] in pod["metadata"]["name"]


def pod_metrics(url: str) -> str:
    pod = wait_for(lambda: get(url, PODS)["items"])[0]
    port = pod["metadata"]["annotations"]["dapr.io/metrics-port"]
    try:
        return httpx.get(f"http://{pod['status']['podIP']}:{port}/metrics").text
    except httpx.ConnectError:  # the pod is there a moment before its sidecar listens
        return ""


def test_a_sidecar_counts_inits_per_type_and_refusals_per_name_for_its_app_only(url: str) -> None:
    """daprd's service_monitoring.go: init_total{app_id, component=<type>}; init_fail_total{app_id,
    component, reason, componentName}, reason "creation" when the registry has no such type/version;
    disk.go/operator scoping: a component scoped to other app ids is not loaded."""
    for body in (component("hook"), component("nope", version="v9"), component("theirs", scopes=["other"])):
        httpx.post(f"{url}{COMPONENTS}", json=body, headers=AUTH).raise_for_status()
    create_deployment(url, dapr_annotations(free_port()))
    init = 'dapr_runtime_component_init_total{app_id="shop",component="bindings.http"} 1'
    fail = (
        'dapr_runtime_component_init_fail_total{app_id="shop",component="bindings.http",'
        'componentName="nope",reason="creation"} 1'
    )
    text = wait_for(lambda: m if fail in (m := pod_metrics(url)) else "")
    assert init in text and "theirs" not in text
    pod = get(url, PODS)["items"][0]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "daprd"]


@pytest.mark.parametrize(("image", "reloads"), [("ghcr.io/dapr/daprd:1.18.3", True), ("daprd:1.14.4", False)])
def test_sidecars_of_dapr_1_18_hot_reload_a_changed_component_older_ones_do_not(
    url: str, image: str, reloads: bool
) -> None:
    """The Dapr reference: hot reload is on by default from 1.18; without it a sidecar loads components
    only at start."""
    httpx.post(f"{url}{COMPONENTS}", json=component("hook"), headers=AUTH).raise_for_status()
    create_deployment(url, dapr_annotations(free_port(), **{"dapr.io/sidecar-image": image}))
    wait_for(lambda: 'component="bindings.http"} 1' in pod_metrics(url))
    change = {"spec": {"metadata": [{"name": "url", "value": "http://y/"}]}}
    httpx.patch(f"{url}{COMPONENTS}/hook", json=change, headers=MERGE).raise_for_status()
    if reloads:
        wait_for(lambda: 'component="bindings.http"} 2' in pod_metrics(url))
    else:
        time.sleep(0.5)  # several rescans: a count that never comes cannot be waited for
        assert 'component="bindings.http"} 1' in pod_metrics(url)


def test_a_component_failing_as_the_sidecar_starts_crashes_it_and_the_rollout_misses_its_deadline(
    url: str,
) -> None:
    """The Dapr reference: a component that fails to init with ignoreErrors false shuts daprd down; the
    Deployment docs, "Failed Deployment": once progressDeadlineSeconds pass without progress the controller
    sets Progressing False with reason ProgressDeadlineExceeded."""
    httpx.post(f"{url}{COMPONENTS}", json=component("nope", version="v9"), headers=AUTH).raise_for_status()
    create_deployment(url, dapr_annotations(free_port()), progressDeadlineSeconds=1)

    def deadline_exceeded() -> dict[str, Any] | None:
        found = get(url, f"{DEPLOYMENTS}/shop")
        reasons = {c["type"]: c["reason"] for c in found.get("status", {}).get("conditions", [])}
        return found if reasons.get("Progressing") == "ProgressDeadlineExceeded" else None

    failed = wait_for(deadline_exceeded)
    assert (failed["status"]["updatedReplicas"], failed["status"]["availableReplicas"]) == (1, 0)
    [pod] = get(url, PODS)["items"]
    assert pod["status"]["conditions"][0]["status"] == "False"
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "CrashLoopBackOff" and "process component nope error" in waiting["message"]
