"""Kubernetes load checking without a cluster: the rollout rules, daprd's metrics, the sidecars' verdicts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from rrm.agent.loading import Expected, LoadWatch
from rrm.agent.targets.kube.client import KubeError
from rrm.agent.targets.kube.metrics import MetricsError, parse_component_metrics
from rrm.agent.targets.kube.rollout import rollout_status
from rrm.agent.targets.kube.sidecars import Placed, SidecarInspector, metrics_url
from rrm.wire.protocol import ResourceResult


def deployment(generation: int = 2, observed: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "apps", "generation": generation},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "web"}}},
        },
        "status": {"observedGeneration": observed, **status},
        "kind": "Deployment",
    }


# --- rollout status: kubectl's DeploymentStatusViewer ----------------------------------------------------


def test_a_spec_not_yet_observed_is_not_rolled_out_whatever_the_replica_counts() -> None:
    status = rollout_status(deployment(3, 2, replicas=2, updatedReplicas=2, availableReplicas=2))
    assert (status.done, status.failed) == (False, False)
    assert status.message == "Waiting for deployment spec update to be observed..."


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        (
            {"replicas": 3, "updatedReplicas": 1, "availableReplicas": 2},
            "1 out of 2 new replicas have been updated",
        ),
        (
            {"replicas": 3, "updatedReplicas": 2, "availableReplicas": 2},
            "1 old replicas are pending termination",
        ),
        (
            {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 1},
            "1 of 2 updated replicas are available",
        ),
    ],
)
def test_a_rollout_waits_for_every_replica_updated_the_old_gone_and_all_available(
    counts: dict[str, int], message: str
) -> None:
    status = rollout_status(deployment(**counts))
    assert not status.done and not status.failed
    assert message in status.message


def test_a_rollout_is_done_when_all_replicas_are_updated_and_available() -> None:
    status = rollout_status(deployment(replicas=2, updatedReplicas=2, availableReplicas=2))
    assert status.done and status.message == 'deployment "web" successfully rolled out'


def test_progress_deadline_exceeded_fails_the_rollout() -> None:
    condition = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    status = rollout_status(deployment(replicas=2, updatedReplicas=1, conditions=[condition]))
    assert status.failed and not status.done
    assert status.message == 'deployment "web" exceeded its progress deadline'


# --- daprd's metrics -------------------------------------------------------------------------------------

METRICS = """\
# HELP dapr_runtime_component_init_total The number of initialized components.
# TYPE dapr_runtime_component_init_total counter
dapr_runtime_component_init_total{app_id="web",component="bindings.http"} 2
dapr_runtime_component_init_total{app_id="web",component="state.redis"} 1
dapr_runtime_component_init_fail_total{app_id="w",component="pubsub.x",componentName="b",reason="creation"} 1
dapr_http_server_request_count{app_id="web",method="GET",path="/v1.0/metadata",status="200"} 7
"""


def test_init_counts_are_per_type_and_failures_per_name_and_reason() -> None:
    metrics = parse_component_metrics(METRICS)
    assert metrics.inits == {"bindings.http": 2.0, "state.redis": 1.0}
    assert metrics.failures == {"b": {"creation": 1.0}}
    assert metrics.new_failures("b", None) == ["creation"]
    assert metrics.new_failures("b", metrics) == []


def test_escaped_label_values_are_read_and_garbage_is_refused() -> None:
    text = 'dapr_runtime_component_init_fail_total{componentName="a\\"b",reason="init"} 1\n'
    assert parse_component_metrics(text).failures == {'a"b': {"init": 1.0}}
    with pytest.raises(MetricsError):
        parse_component_metrics("<html>not metrics</html>\n")


def test_where_a_sidecar_cannot_be_asked_says_why() -> None:
    pod = {"metadata": {"name": "p", "annotations": {}}, "status": {}}
    assert metrics_url(pod) == (None, "pod p: no pod IP")
    pod["status"] = {"podIP": "127.0.0.9"}
    assert metrics_url(pod)[0] == "http://127.0.0.9:9090/metrics"
    pod["metadata"]["annotations"] = {"dapr.io/metrics-port": "9191"}
    assert metrics_url(pod)[0] == "http://127.0.0.9:9191/metrics"
    pod["metadata"]["annotations"] = {"dapr.io/enable-metrics": "false"}
    assert metrics_url(pod)[0] is None


# --- the inspector over a fake API -----------------------------------------------------------------------


class FakeApi:
    def __init__(self, deployments: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.deployments, self.pods = deployments, pods

    def list_workloads(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return self.deployments if kind == "Deployment" else []

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.pods


def pod(name: str, ip: str | None = "127.0.0.5") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"app": "web"}, "annotations": {}},
        "status": {"podIP": ip} if ip else {},
    }


def sample(http: int = 0, fails: str = "") -> str:
    lines = [f'dapr_runtime_component_init_total{{app_id="web",component="bindings.http"}} {http}']
    if fails:
        lines.append(
            f'dapr_runtime_component_init_fail_total{{app_id="web",component="bindings.http",'
            f'componentName="{fails}",reason="init"}} 1'
        )
    return "\n".join(lines) + "\n"


PLACED = {"hook": Placed("apps", "bindings.http", "v1", ())}
ROLLED_OUT = {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}


def inspector(deployments: list[dict[str, Any]], pods: list[dict[str, Any]], answers: dict[str, str]) -> Any:
    def scrape(url: str) -> str:
        if url not in answers:
            raise httpx.ConnectError("connection refused")
        return answers[url]

    return SidecarInspector(FakeApi(deployments, pods), scrape)  # type: ignore[arg-type]


def test_a_restarted_deployment_counts_only_once_rolled_out_and_its_sidecar_initialised_it() -> None:
    url = "http://127.0.0.5:9090/metrics"
    answers = {url: sample(0)}
    rolling = deployment(replicas=3, updatedReplicas=1, availableReplicas=2)
    sidecars = inspector([rolling], [pod("web-1")], answers)
    sidecars.begin(PLACED, {"hook"}, ["Deployment/apps/web"], {})
    view = sidecars.view()
    assert "1 out of 2 new replicas have been updated" in view.missing["hook"]
    sidecars.api.deployments = [deployment(**ROLLED_OUT)]
    assert "counts 0 of 1 bindings.http init(s)" in sidecars.view().missing["hook"]
    answers[url] = sample(1)
    view = sidecars.view()
    assert view.missing == {} and view.refused == {} and view.unknown == {}
    assert [c.name for c in view.report.components] == ["hook"]


def test_a_hot_reloaded_sidecar_must_count_a_new_init_since_the_apply() -> None:
    url = "http://127.0.0.5:9090/metrics"
    before = parse_component_metrics(sample(1))
    answers = {url: sample(1)}
    sidecars = inspector([deployment(**ROLLED_OUT)], [pod("web-1")], answers)
    sidecars.begin(PLACED, {"hook"}, [], {"uid-web-1": before})
    assert "not re-initialised it since the apply" in sidecars.view().missing["hook"]
    answers[url] = sample(2)
    assert sidecars.view().missing == {}


def test_an_init_failure_since_the_apply_is_a_refusal_with_daprds_reason() -> None:
    url = "http://127.0.0.5:9090/metrics"
    sidecars = inspector([deployment(**ROLLED_OUT)], [pod("web-1")], {url: sample(0, fails="hook")})
    sidecars.begin(PLACED, {"hook"}, [], {})
    view = sidecars.view()
    assert view.refused == {"hook": "daprd on pod web-1 failed to initialise it (reason: init)"}


def test_no_sidecar_in_reach_leaves_loading_unknown_and_says_why() -> None:
    sidecars = inspector([deployment(**ROLLED_OUT)], [pod("web-1", ip=None), pod("web-2")], {})
    sidecars.begin(PLACED, {"hook"}, [], {})
    view = sidecars.view()
    assert view.report is None and view.missing == {}
    assert "pod web-1: no pod IP" in view.unknown["hook"]
    assert "pod web-2: metrics at http://127.0.0.5:9090/metrics not readable" in view.unknown["hook"]
    sidecars.api.deployments = []
    assert sidecars.view().unknown["hook"] == "no Dapr-enabled Deployment in apps is in its scope"


def test_scopes_leave_out_deployments_of_other_app_ids() -> None:
    url = "http://127.0.0.5:9090/metrics"
    sidecars = inspector([deployment(**ROLLED_OUT)], [pod("web-1")], {url: sample(0)})
    sidecars.begin({"hook": Placed("apps", "bindings.http", "v1", ("other",))}, {"hook"}, [], {})
    assert "no Dapr-enabled Deployment in apps is in its scope" in sidecars.view().unknown["hook"]


def test_a_listing_refused_by_rbac_is_unknown_not_a_guess() -> None:
    class Forbidden(FakeApi):
        def list_workloads(self, kind: str, namespace: str) -> list[dict[str, Any]]:
            raise KubeError(403, 'deployments.apps is forbidden: User "agent" cannot list')

    sidecars = SidecarInspector(Forbidden([], []))  # type: ignore[arg-type]
    sidecars.begin(PLACED, {"hook"}, [], {})
    view = sidecars.view()
    assert view is not None and "forbidden" in view.unknown["hook"]


# --- the load watch takes a view ---------------------------------------------------------------------------


def test_the_load_watch_fails_a_refused_component_at_once_and_leaves_unknown_ones_unknown() -> None:
    from rrm.agent.loading import SidecarsView

    watch = LoadWatch(60.0)
    watch.begin({"a": Expected("bindings.http", "v1"), "b": Expected("bindings.http", "v1")}, now=0.0)
    view = SidecarsView(
        report=None, missing={}, refused={"a": "daprd on pod p refused it"}, unknown={"b": "no IP"}
    )
    watch.observe(view, now=0.5)
    assert not watch.following and not watch.overdue
    applied = [ResourceResult(name=n, state="applied") for n in ("a", "b")]
    a, b = watch.results(applied)
    assert (a.state, a.loaded, a.message) == ("failed", False, "daprd on pod p refused it")
    assert (b.state, b.loaded, b.message) == ("applied", None, "no IP")


def test_a_component_still_waiting_at_the_load_deadline_is_failed_with_the_sidecars_account() -> None:
    from rrm.agent.loading import SidecarsView

    watch = LoadWatch(4.0)
    watch.begin({"a": Expected("bindings.http", "v1")}, now=0.0)
    waiting = SidecarsView(report=None, missing={"a": "daprd on pod p counts 0 of 1 bindings.http init(s)"})
    watch.observe(waiting, now=1.0)
    assert watch.following
    [result] = watch.results([ResourceResult(name="a", state="applied")])
    assert (result.state, result.loaded) == ("applied", False)
    watch.observe(waiting, now=4.0)
    assert watch.overdue and not watch.following
    [result] = watch.results([ResourceResult(name="a", state="applied")])
    assert (result.state, result.loaded) == ("failed", False)
    assert result.message == (
        "not loaded within the load deadline (4 s): daprd on pod p counts 0 of 1 bindings.http init(s)"
    )
