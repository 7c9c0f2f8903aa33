"""On Kubernetes, `Ready` means the sidecars of the Dapr-enabled Deployments in scope loaded what was applied:
real server and `rrm agent --target kubernetes` processes against the API server stand-in running its
Deployments (rollouts over time, pods with loopback IPs, sidecars serving daprd's metrics).

Each test watches the runtime until Ready and, every time it sees Ready, looks at the cluster right after:
what Ready claims must already be true there (rollout complete, the sidecar counting the component).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from rrm.agent.targets.kube.metrics import parse_component_metrics
from rrm.agent.targets.kube.rollout import rollout_status

from .harness import (
    Fleet,
    ServerProcess,
    apply,
    component,
    condition,
    free_port,
    http_binding,
    synced,
)
from .kube import Cluster, KubeApiServer, dapr_workload, start_kube_agent, start_standin

pytestmark = pytest.mark.integration

ROLLOUT_SECONDS = 2.0
INIT_DELAY = 1.5


@pytest.fixture(scope="module")
def backend() -> str:
    return "sqlite"


@pytest.fixture
def standin(fleet: Fleet, server: ServerProcess) -> KubeApiServer:
    return start_standin(fleet, rollout_seconds=ROLLOUT_SECONDS, sidecar_init_delay=INIT_DELAY)


@pytest.fixture
def cluster(standin: KubeApiServer) -> Iterator[Cluster]:
    with standin.api_client() as api_client:
        yield Cluster(api_client)


def ready(detail: dict[str, Any]) -> bool:
    return synced(detail) and (condition(detail, "Ready") or {}).get("status") == "True"


def run_shop(cluster: Cluster, fleet: Fleet, namespace: str, image: str) -> None:
    """A Dapr-enabled Deployment `shop` whose sidecar serves metrics on a port of its own, rolled out."""
    annotations = {
        **dapr_workload("shop"),
        "dapr.io/metrics-port": str(free_port()),
        "dapr.io/sidecar-image": image,
    }
    cluster.create_workload("Deployment", namespace, "shop", annotations)
    fleet.wait_until(lambda: shop_metrics(cluster, namespace) is not None, "shop's sidecar serves metrics")


def shop_and_agent(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster, key: str, image: str, *, hot_reload: str
) -> str:
    """`shop` rolled out in namespace `team-<key>`, watched by the agent of runtime `k8s-<key>` (labelled
    `t-k8s=<key>`); returns the namespace."""
    namespace = f"team-{key}"
    run_shop(cluster, fleet, namespace, image)
    start_kube_agent(fleet, standin, f"k8s-{key}", [namespace], {"t-k8s": key}, hot_reload=hot_reload)
    return namespace


def shop(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return dict(
        cluster.api_client.sanitize_for_serialization(
            cluster.apps.read_namespaced_deployment("shop", namespace)
        )
    )


def shop_metrics(cluster: Cluster, namespace: str) -> str | None:
    """The metrics of shop's current pods' sidecars, joined; None while one does not answer."""
    texts = []
    listed = cluster.core.list_namespaced_pod(namespace, label_selector="app=shop")
    for pod in cluster.api_client.sanitize_for_serialization(listed)["items"]:
        port = pod["metadata"]["annotations"]["dapr.io/metrics-port"]
        try:
            texts.append(httpx.get(f"http://{pod['status']['podIP']}:{port}/metrics", timeout=5).text)
        except httpx.HTTPError:
            return None
    return "\n".join(texts) if texts else None


def http_inits(cluster: Cluster, namespace: str) -> float:
    text = shop_metrics(cluster, namespace) or ""
    return parse_component_metrics(text).inits.get("bindings.http", 0.0)


def ready_checked(fleet: Fleet, name: str, claim: Callable[[], str | None]) -> dict[str, Any]:
    """Wait for Ready; each time it is seen, `claim()` (read just after) says what is not true yet."""
    broken: list[str] = []

    def check(detail: dict[str, Any]) -> bool:
        if not ready(detail):
            return False
        problem = claim()
        if problem:
            broken.append(problem)
        return True

    detail = fleet.wait_runtime(name, check, "Synced and Ready")
    assert not broken, f"Ready was reported before it was true: {broken}"
    return detail


def test_ready_only_once_the_hot_reloading_sidecar_reports_the_component_loaded(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    namespace = shop_and_agent(
        fleet, standin, cluster, "load", "ghcr.io/dapr/daprd:1.18.3", hot_reload="auto"
    )
    apply(fleet.server.admin, [http_binding("load-hook", "t-k8s=load", "http://hook.invalid/")])

    detail = ready_checked(
        fleet,
        "k8s-load",
        lambda: None if http_inits(cluster, namespace) >= 1 else "shop's sidecar has not initialised it",
    )
    assert (condition(detail, "Ready") or {})["reason"] == "Loaded"
    [result] = [r for r in detail["resources"] if r["name"] == "load-hook"]
    assert (result["state"], result["loaded"]) == ("applied", True)
    assert detail["reload"] is None, "a sidecar of Dapr 1.18 hot reloads: nothing restarted"


def test_a_component_the_sidecar_fails_to_initialise_is_failed_with_daprds_reason(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    shop_and_agent(fleet, standin, cluster, "refuse", "ghcr.io/dapr/daprd:1.18.3", hot_reload="auto")
    # valid for the control plane; the sidecar cannot read the file, so its initialisation fails
    missing_file = [{"name": "secretsFile", "value": "/nonexistent/rrm-test/secrets.json"}]
    odd = component("refuse-odd", "t-k8s=refuse", type="secretstores.local.file", metadata=missing_file)
    apply(fleet.server.admin, [http_binding("refuse-good", "t-k8s=refuse", "http://good.invalid/"), odd])

    failed = fleet.wait_runtime(
        "k8s-refuse",
        lambda d: synced(d) and (condition(d, "Ready") or {}).get("reason") == "NotLoaded",
        "Ready=False NotLoaded naming the refused component",
    )
    message = (condition(failed, "Ready") or {})["message"]
    assert "refuse-odd" in message and "refuse-good" not in message
    results = {r["name"]: r for r in failed["resources"]}
    assert (results["refuse-odd"]["state"], results["refuse-odd"]["loaded"]) == ("failed", False)
    assert "failed to initialise it (reason: init)" in results["refuse-odd"]["message"]
    fleet.wait_runtime(
        "k8s-refuse",
        lambda d: {r["name"]: r["loaded"] for r in d["resources"]}.get("refuse-good") is True,
        "the good component is loaded by the same sidecar",
    )


def test_without_hot_reload_ready_waits_for_the_rolling_restart_and_the_new_sidecar(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    namespace = shop_and_agent(fleet, standin, cluster, "roll", "daprd:1.14.4", hot_reload="off")
    apply(fleet.server.admin, [http_binding("roll-hook", "t-k8s=roll", "http://roll.invalid/")])

    def claim() -> str | None:
        status = rollout_status(shop(cluster, namespace))
        if not status.done:
            return status.message
        return None if http_inits(cluster, namespace) >= 1 else "the new sidecar has not initialised it"

    detail = ready_checked(fleet, "k8s-roll", claim)
    assert detail["reload"]["restarted"] == [f"Deployment/{namespace}/shop"]
    assert (condition(detail, "Ready") or {})["reason"] == "Loaded"
    assert shop(cluster, namespace)["metadata"]["generation"] == 2


def test_a_restart_whose_new_sidecar_exits_on_a_refused_component_fails_at_the_progress_deadline(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    namespace = "team-crash"
    run_shop(cluster, fleet, namespace, "daprd:1.14.4")
    cluster.apps.patch_namespaced_deployment("shop", namespace, {"spec": {"progressDeadlineSeconds": 3}})
    start_kube_agent(fleet, standin, "k8s-crash", [namespace], {"t-k8s": "crash"}, hot_reload="off")
    # without ignoreErrors, daprd exits when it cannot initialise a component at start: the pod never
    # becomes available and the rollout misses its deadline
    missing_file = [{"name": "secretsFile", "value": "/nonexistent/rrm-test/secrets.json"}]
    odd = component("crash-odd", "t-k8s=crash", type="secretstores.local.file", metadata=missing_file)
    apply(fleet.server.admin, [odd])

    failed = fleet.wait_runtime(
        "k8s-crash",
        lambda d: synced(d) and (condition(d, "Ready") or {}).get("reason") == "NotLoaded",
        "Ready=False NotLoaded once the rollout missed its deadline",
    )
    [result] = [r for r in failed["resources"] if r["name"] == "crash-odd"]
    assert (result["state"], result["loaded"]) == ("failed", False)
    assert (
        result["message"] == f'Deployment/{namespace}/shop: deployment "shop" exceeded its progress deadline'
    )
    assert rollout_status(shop(cluster, namespace)).failed
