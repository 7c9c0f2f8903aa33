"""`rrm agent --target kubernetes` against the API server stand-in: real server, agent and stand-in processes.

Every check reads the stand-in through the official client (or its write audit for ordering), and the
runtime's status through the admin API.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from rrm.agent.targets.kube.client import load_configuration
from rrm.agent.targets.kubernetes import KubernetesTarget
from rrm.core.diff import diff
from rrm.core.hashing import state_hash
from rrm.wire.protocol import DesiredState

from .harness import (
    Fleet,
    ServerProcess,
    apply,
    condition_true,
    expect_status,
    holds_for,
    http_binding,
    metadata_value,
    relabel,
    secret,
    synced,
)
from .kube import (
    MANAGED_BY,
    RUNTIME_LABEL,
    Cluster,
    KubeApiServer,
    dapr_workload,
    decoded,
    start_kube_agent,
    start_standin,
    write_order,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backend() -> str:
    """The agent and the CLI do not care which database the control plane uses: SQLite only."""
    return "sqlite"


@pytest.fixture
def standin(fleet: Fleet, server: ServerProcess) -> KubeApiServer:
    """Deployments run, as in a cluster: a restarted one counts only once rolled out."""
    return start_standin(fleet, rollout_seconds=0.2, sidecar_init_delay=0.05)


@pytest.fixture
def cluster(standin: KubeApiServer) -> Iterator[Cluster]:
    with standin.api_client() as api_client:
        yield Cluster(api_client)


def ready(detail: dict[str, Any]) -> bool:
    return synced(detail) and condition_true(detail, "Ready")


def delete(fleet: Fleet, kind: str, name: str) -> None:
    expect_status(fleet.server.admin.delete(f"/api/v1/{kind}/{name}"), 204)


def hand_edit_is_reverted(fleet: Fleet, cluster: Cluster, namespace: str, name: str, what: str) -> None:
    """Point component `name` at http://wrong.invalid/ by hand; wait until http://right.invalid/ is back."""
    wrong = {"spec": {"metadata": [{"name": "url", "value": "http://wrong.invalid/"}]}}
    cluster.edit_component(namespace, name, wrong)
    fleet.wait_until(
        lambda: metadata_value(cluster.components(namespace)[name], "url") == "http://right.invalid/",
        what,
        timeout=15,
    )


def test_create_update_and_delete_reach_the_cluster(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    agent = start_kube_agent(fleet, standin, "k8s-crud", ["team-crud"], {"t-k8s": "crud"})
    apply(
        fleet.server.admin,
        [
            secret("crud-token", {"token": "s3cret-1"}),
            http_binding("crud-web", "t-k8s=crud", "http://one.invalid/", token_ref=("crud-token", "token")),
        ],
    )
    detail = fleet.wait_runtime("k8s-crud", ready, "Synced and Ready")
    components = cluster.components("team-crud")
    secrets = cluster.secrets("team-crud")
    web, token = components["crud-web"], secrets["crud-token"]
    runtime_id = detail["id"]
    for obj in (web, token):
        assert obj["metadata"]["labels"][MANAGED_BY] == "rrm"
        assert obj["metadata"]["labels"][RUNTIME_LABEL] == runtime_id
        assert any(
            m["manager"] == "rrm-agent" and m["operation"] == "Apply"
            for m in obj["metadata"]["managedFields"]
        )
    assert decoded(token) == {"token": "s3cret-1"}
    assert "auth" not in web, "on Kubernetes the default (Kubernetes) secret store resolves the reference"
    assert metadata_value(web, "securityToken") == {"name": "crud-token", "key": "token"}
    assert [r["state"] for r in detail["resources"] if r["name"] == "crud-web"] == ["applied"]
    assert agent.probe("/livez") == 200 and agent.probe("/readyz") == 200

    apply(
        fleet.server.admin,
        [
            secret("crud-token", {"token": "s3cret-2"}),
            http_binding("crud-web", "t-k8s=crud", "http://two.invalid/", token_ref=("crud-token", "token")),
        ],
    )
    fleet.wait_until(
        lambda: (
            metadata_value(cluster.components("team-crud")["crud-web"], "url") == "http://two.invalid/"
            and decoded(cluster.secrets("team-crud")["crud-token"]) == {"token": "s3cret-2"}
        ),
        "the update reaches the Component and the Secret",
    )

    delete(fleet, "components", "crud-web")
    fleet.wait_until(
        lambda: not cluster.components("team-crud") and not cluster.secrets("team-crud"),
        "the Component and the Secret only it used are pruned",
    )
    fleet.wait_runtime("k8s-crud", ready, "Synced and Ready with nothing placed")


def test_secrets_are_applied_before_components_and_deleted_after_them(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    start_kube_agent(fleet, standin, "k8s-order", ["team-order"], {"t-k8s": "order"})
    apply(
        fleet.server.admin,
        [
            secret("order-a", {"token": "a"}),
            secret("order-b", {"token": "b"}),
            http_binding("order-one", "t-k8s=order", "http://one.invalid/", token_ref=("order-a", "token")),
            http_binding("order-two", "t-k8s=order", "http://two.invalid/", token_ref=("order-b", "token")),
        ],
    )
    fleet.wait_runtime("k8s-order", ready, "Synced and Ready")
    applied = write_order(standin.audit(), "apply")
    assert sorted(applied[:2]) == ["secrets/order-a", "secrets/order-b"], applied
    assert sorted(applied[2:4]) == ["components/order-one", "components/order-two"], applied

    relabel(fleet.server.admin, "k8s-order", remove=["t-k8s"])  # both components leave in one change
    fleet.wait_until(
        lambda: not cluster.components("team-order") and not cluster.secrets("team-order"), "pruned"
    )
    deleted = write_order(standin.audit(), "delete")
    assert sorted(deleted[:2]) == ["components/order-one", "components/order-two"], deleted
    assert sorted(deleted[2:4]) == ["secrets/order-a", "secrets/order-b"], deleted


def test_objects_without_the_agents_labels_are_never_touched(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    namespace = "team-foreign"
    foreign = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
    }
    cluster.create_component(namespace, {**foreign, "metadata": {"name": "theirs"}})
    cluster.create_component(namespace, {**foreign, "metadata": {"name": "clash"}})
    other_runtime = {MANAGED_BY: "rrm", RUNTIME_LABEL: "someone-else"}
    cluster.create_component(
        namespace, {**foreign, "metadata": {"name": "neighbour", "labels": other_runtime}}
    )
    before = {name: c["metadata"]["resourceVersion"] for name, c in cluster.components(namespace).items()}

    start_kube_agent(fleet, standin, "k8s-foreign", [namespace], {"t-k8s": "foreign"})
    apply(
        fleet.server.admin,
        [
            http_binding("clash", "t-k8s=foreign", "http://clash.invalid/"),
            http_binding("foreign-mine", "t-k8s=foreign", "http://mine.invalid/"),
        ],
    )
    detail = fleet.wait_runtime(
        "k8s-foreign",
        lambda d: (
            synced(d)
            and {r["name"]: r["state"] for r in d["resources"]}
            == {"clash": "failed", "foreign-mine": "applied"}
        ),
        "clash reported as failed, foreign-mine applied",
    )
    clash = next(r for r in detail["resources"] if r["name"] == "clash")
    assert "not managed by rrm" in clash["message"]
    assert not condition_true(detail, "Ready")

    delete(fleet, "components", "foreign-mine")
    delete(fleet, "components", "clash")
    fleet.wait_until(
        lambda: "foreign-mine" not in cluster.components(namespace), "its own component is pruned"
    )
    fleet.wait_runtime("k8s-foreign", ready, "Ready with nothing placed")
    after = {name: c["metadata"]["resourceVersion"] for name, c in cluster.components(namespace).items()}
    assert after == before, "an object without the agent's labels was changed or deleted"
    touched = {e["name"] for e in standin.audit() if e["manager"] == "rrm-agent"}
    assert touched.isdisjoint(before), f"the agent wrote to foreign objects: {touched & set(before)}"


def test_hand_edits_and_deletions_are_put_back_and_reported_as_drift(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    namespace = "team-drift"
    # A long periodic reconcile: putting things back quickly is the watch's doing.
    start_kube_agent(fleet, standin, "k8s-drift", [namespace], {"t-k8s": "drift"}, reconcile_interval=600)
    apply(fleet.server.admin, [http_binding("drift-web", "t-k8s=drift", "http://right.invalid/")])
    fleet.wait_runtime("k8s-drift", ready, "Synced and Ready")

    hand_edit_is_reverted(fleet, cluster, namespace, "drift-web", "the hand edit is reverted")
    detail = fleet.wait_runtime("k8s-drift", lambda d: bool(d["drift"]), "the edit reported as drift")
    record = detail["drift"][-1]
    assert record["resource"] == f"Component/{namespace}/drift-web"
    assert record["change"] == "modified" and "spec.metadata" in record["fields"]
    assert record["detected_at"]

    cluster.delete_component(namespace, "drift-web")
    fleet.wait_until(
        lambda: "drift-web" in cluster.components(namespace), "the deleted object is re-created", 15
    )
    fleet.wait_runtime(
        "k8s-drift",
        lambda d: any(r["change"] == "deleted" for r in d["drift"]),
        "the deletion reported as drift",
    )


def test_without_hot_reload_exactly_the_workloads_in_scope_are_restarted(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    namespace = "team-restart"
    workloads = {
        ("Deployment", "orders"): dapr_workload("orders"),
        ("StatefulSet", "inventory"): dapr_workload("inventory"),
        ("Deployment", "billing"): dapr_workload("billing"),
        ("Deployment", "plain"): dapr_workload("orders", enabled=False),
    }
    for (kind, name), template_annotations in workloads.items():
        cluster.create_workload(kind, namespace, name, template_annotations)
    cluster.create_workload("Deployment", "elsewhere", "orders", dapr_workload("orders"))
    start_kube_agent(fleet, standin, "k8s-restart", [namespace], {"t-k8s": "restart"}, hot_reload="off")

    scoped = http_binding("restart-scoped", "t-k8s=restart", "http://scoped.invalid/")
    apply(fleet.server.admin, [{**scoped, "scopes": ["orders", "inventory"]}])
    detail = fleet.wait_runtime(
        "k8s-restart", lambda d: ready(d) and d["reload"], "Ready with a restart reported"
    )
    expected = [f"Deployment/{namespace}/orders", f"StatefulSet/{namespace}/inventory"]
    assert sorted(detail["reload"]["restarted"]) == sorted(expected)
    restarted = {key for key in workloads if cluster.restarted_at(*key[:1], namespace, key[1])}
    assert restarted == {("Deployment", "orders"), ("StatefulSet", "inventory")}
    assert cluster.restarted_at("Deployment", "elsewhere", "orders") is None

    apply(fleet.server.admin, [http_binding("restart-everyone", "t-k8s=restart", "http://all.invalid/")])
    detail = fleet.wait_runtime(
        "k8s-restart",
        lambda d: ready(d) and len((d["reload"] or {}).get("restarted", [])) == 3,
        "an unscoped component restarts every Dapr-enabled workload",
    )
    assert sorted(detail["reload"]["restarted"]) == sorted([*expected, f"Deployment/{namespace}/billing"])
    assert cluster.restarted_at("Deployment", namespace, "plain") is None
    assert cluster.restarted_at("Deployment", "elsewhere", "orders") is None


def test_two_agents_in_two_namespaces_do_not_interfere(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    start_kube_agent(fleet, standin, "k8s-blue", ["team-blue"], {"t-k8s": "pair", "colour": "blue"})
    start_kube_agent(fleet, standin, "k8s-green", ["team-green"], {"t-k8s": "pair", "colour": "green"})
    apply(
        fleet.server.admin,
        [
            secret("pair-token", {"token": "shared"}),
            http_binding(
                "pair-shared", "t-k8s=pair", "http://shared.invalid/", token_ref=("pair-token", "token")
            ),
            http_binding("pair-blue", "colour=blue", "http://blue.invalid/"),
            http_binding("pair-green", "colour=green", "http://green.invalid/"),
        ],
    )
    blue = fleet.wait_runtime("k8s-blue", ready, "blue Ready")
    green = fleet.wait_runtime("k8s-green", ready, "green Ready")
    assert set(cluster.components("team-blue")) == {"pair-shared", "pair-blue"}
    assert set(cluster.components("team-green")) == {"pair-shared", "pair-green"}
    for namespace, detail in (("team-blue", blue), ("team-green", green)):
        objects = [*cluster.components(namespace).values(), *cluster.secrets(namespace).values()]
        assert {o["metadata"]["labels"][RUNTIME_LABEL] for o in objects} == {detail["id"]}

    expect_status(
        fleet.server.admin.patch("/api/v1/runtimes/k8s-blue/labels", json={"set": {}, "remove": ["t-k8s"]}),
        200,
    )
    # the agent prunes the component, then the Secret it was the last user of: two API calls
    fleet.wait_until(
        lambda: set(cluster.components("team-blue")) == {"pair-blue"} and not cluster.secrets("team-blue"),
        "blue loses the shared one, and its copy of the Secret with its last user",
    )
    holds_for(
        lambda: (
            set(cluster.components("team-green")) == {"pair-shared", "pair-green"}
            and set(cluster.secrets("team-green")) == {"pair-token"}
        ),
        2,
        lambda: fleet.explain("green's objects changed when only blue's placement did"),
    )
    green_versions = {
        e["name"] for e in standin.audit() if e["namespace"] == "team-green" and e["verb"] == "delete"
    }
    assert not green_versions


def test_a_component_the_api_server_refuses_is_reported_with_its_message(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    start_kube_agent(fleet, standin, "k8s-refused", ["team-refused"], {"t-k8s": "refused"})
    good = http_binding("refused-good", "t-k8s=refused", "http://good.invalid/")
    # Accepted by rrm (a label rrm does not check), refused by the API server's label rules.
    bad = http_binding("refused-bad", "t-k8s=refused", "http://bad.invalid/")
    bad["metadata"]["labels"] = {"tier": "not valid!"}
    apply(fleet.server.admin, [good, bad])
    detail = fleet.wait_runtime(
        "k8s-refused",
        lambda d: synced(d) and {r["name"] for r in d["resources"]} == {"refused-good", "refused-bad"},
        "both reported",
    )
    results = {r["name"]: r for r in detail["resources"]}
    assert results["refused-good"]["state"] == "applied"
    assert results["refused-bad"]["state"] == "failed"
    assert "metadata.labels" in results["refused-bad"]["message"]
    assert set(cluster.components("team-refused")) == {"refused-good"}


def test_a_watch_whose_version_expired_lists_again_and_keeps_noticing_edits(
    fleet: Fleet, standin: KubeApiServer, cluster: Cluster
) -> None:
    namespace = "team-expire"
    agent = start_kube_agent(
        fleet, standin, "k8s-expire", [namespace], {"t-k8s": "expire"}, reconcile_interval=600
    )
    apply(fleet.server.admin, [http_binding("expire-web", "t-k8s=expire", "http://right.invalid/")])
    fleet.wait_runtime("k8s-expire", ready, "Synced and Ready")
    fleet.wait_until(
        lambda: any(w["namespace"] == namespace and w["resourceVersion"] for w in standin.watches()),
        "the agent watches its components",
    )
    unrelated = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}}
    cluster.core.create_namespaced_secret("elsewhere", unrelated)
    seen = len(standin.watches())
    standin.compact()  # the agent's resourceVersion is now older than the server's history

    def rewatched() -> bool:
        later = [w for w in standin.watches()[seen:] if w["namespace"] == namespace]
        expired = [n for n, w in enumerate(later) if w["code"] == 410]
        return bool(expired) and any(w["code"] == 200 for w in later[expired[0] + 1 :])

    fleet.wait_until(rewatched, "a 410 Expired, then a watch from a fresh list")
    hand_edit_is_reverted(fleet, cluster, namespace, "expire-web", "the new watch notices the hand edit")
    log = agent.log_path.read_text()
    assert "event=watch-expired" in log
    assert "event=watch-failed" not in log, "an expired version is routine, not a failure"


def test_bookmarks_keep_the_agents_watch_current_so_it_resumes_after_a_restart_without_a_410(
    fleet: Fleet, server: ServerProcess
) -> None:
    standin = start_standin(fleet, fleet.workdir / "bookmarking", bookmark_interval=0.3)
    namespace = "team-bookmark"
    start_kube_agent(
        fleet, standin, "k8s-bookmark", [namespace], {"t-k8s": "bookmark"}, reconcile_interval=600
    )
    apply(fleet.server.admin, [http_binding("bookmark-web", "t-k8s=bookmark", "http://right.invalid/")])
    fleet.wait_runtime("k8s-bookmark", ready, "Synced and Ready")
    api_client = standin.api_client()
    unrelated = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}}
    written = client.CoreV1Api(api_client).create_namespaced_secret("elsewhere", unrelated)
    api_client.close()
    since = int(written.metadata.resource_version)

    def bookmarked(watch: dict[str, Any]) -> bool:
        return watch["namespace"] == namespace and int(watch.get("bookmark") or 0) >= since

    fleet.wait_until(
        lambda: {w["resource"] for w in standin.watches() if bookmarked(w)} == {"secrets", "components"},
        "both of the agent's watches were told the newer resourceVersion",
    )
    seen = len(standin.watches())
    standin.compact()
    fleet.wait_until(
        lambda: (
            {w["resource"] for w in standin.watches()[seen:] if w["namespace"] == namespace}
            == {"secrets", "components"}
        ),
        "the agent watches again",
    )
    again = [w for w in standin.watches()[seen:] if w["namespace"] == namespace]
    assert all(w["code"] == 200 and int(w["resourceVersion"]) >= since for w in again), again


def target_for(standin: KubeApiServer, namespace: str, runtime_id: str) -> KubernetesTarget:
    configuration, _ = load_configuration(standin.kubeconfig)
    target = KubernetesTarget(configuration, [namespace], hot_reload="on")
    target.attach(runtime_id)
    return target


def state_of(url: str) -> DesiredState:
    manifest = http_binding("race-web", "t-k8s=race", url)
    return DesiredState(hash=state_hash([manifest], []), components=[manifest], secrets=[])


def test_an_apply_over_a_version_changed_since_it_was_read_reads_again_and_stays_off_foreign_objects(
    standin: KubeApiServer, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    namespace, runtime_id = "team-race", "7a1c0f0e-0000-4000-8000-000000000001"
    target = target_for(standin, namespace, runtime_id)
    first = state_of("http://one.invalid/")
    target.apply(diff(target.render(first), target.observe()), first, prune=True)

    second = state_of("http://two.invalid/")
    changes = diff(target.render(second), target.observe())
    cluster.edit_component(namespace, "race-web", {"spec": {"initTimeout": "5s"}})  # after the agent read it
    with caplog.at_level(logging.INFO, logger="rrm.agent.targets.kube.client"):
        outcome = target.apply(changes, second, prune=True)
    assert [r.state for r in outcome.resources] == ["applied"]
    assert metadata_value(cluster.components(namespace)["race-web"], "url") == "http://two.invalid/"
    assert "event=apply-conflict" in caplog.text, "the first attempt met a 409 and was redone"

    third = state_of("http://three.invalid/")
    changes = diff(target.render(third), target.observe())
    cluster.edit_component(namespace, "race-web", {"metadata": {"labels": {RUNTIME_LABEL: "someone-else"}}})
    writes = len(standin.audit())
    outcome = target.apply(changes, third, prune=True)
    (result,) = outcome.resources
    assert result.state == "failed" and "no longer this agent's" in result.message
    assert metadata_value(cluster.components(namespace)["race-web"], "url") == "http://two.invalid/"
    assert standin.audit()[writes:] == [], "nothing written to an object that changed hands"
