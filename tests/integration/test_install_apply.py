"""`rrm.install.apply.apply_objects` against the Kubernetes API stand-in: the agent's install objects go in
by server-side apply with field manager `rrm`, applying again changes nothing and takes back what another
manager changed, and a refusal names the object.

The stand-in serves Secrets and Deployments of the agent's objects (it has no Namespaces, ServiceAccounts,
RBAC or volume claims), so the objects it serves are applied, and the others show the refusal.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from rrm.install import AgentInstallValues, ControlPlaneInstallValues, agent_objects, control_plane_objects
from rrm.install.apply import FIELD_MANAGER, InstallError, apply_objects

from .kube import KubeApiServer, decoded

pytestmark = pytest.mark.integration

VALUES = AgentInstallValues(
    "edge-1", "http://rrm.cluster.local:8080", "rrmpt_first", target_namespaces=("shop",)
)
SERVED_KINDS = ("Secret", "Deployment")


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[KubeApiServer]:
    process = KubeApiServer(tmp_path)
    try:
        process.start()
        yield process
    finally:
        process.stop()


def served(values: AgentInstallValues = VALUES) -> list[dict[str, Any]]:
    return [o for o in agent_objects(values) if o["kind"] in SERVED_KINDS]


def managers(obj: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m["manager"], m["operation"]) for m in obj["metadata"].get("managedFields", [])}


def test_objects_are_applied_in_order_by_the_rrm_field_manager(standin: KubeApiServer) -> None:
    objects = served()
    applied = apply_objects(standin.kubeconfig.read_text(), objects)
    assert [(o["kind"], o["metadata"]["name"]) for o in applied] == [
        ("Secret", "rrm-agent-edge-1"),
        ("Deployment", "rrm-agent-edge-1"),
    ]
    assert all(managers(o) == {(FIELD_MANAGER, "Apply")} for o in applied)
    writes = [(w["verb"], w["resource"], w["manager"]) for w in standin.audit()]
    assert writes == [("apply", "secrets", "rrm"), ("apply", "deployments", "rrm")]
    with standin.api_client() as api:
        stored = client.CoreV1Api(api).read_namespaced_secret("rrm-agent-edge-1", "rrm-system")
        deployment = client.AppsV1Api(api).read_namespaced_deployment("rrm-agent-edge-1", "rrm-system")
    assert decoded(api.sanitize_for_serialization(stored)) == objects[0]["stringData"]
    assert (
        deployment.spec.template.spec.containers[0].args
        == objects[1]["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_applying_again_changes_nothing_and_takes_back_what_another_manager_changed(
    standin: KubeApiServer,
) -> None:
    kubeconfig = standin.kubeconfig.read_text()
    [secret, _] = apply_objects(kubeconfig, served())
    again = apply_objects(kubeconfig, served())
    assert again[0]["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]

    other = base64.b64encode(b"rrmpt_someone-elses").decode()
    with standin.api_client() as api:
        client.CoreV1Api(api).patch_namespaced_secret(
            "rrm-agent-edge-1",
            "rrm-system",
            {"data": {"RRM_PAIRING_TOKEN": other}},
            field_manager="kubectl-edit",
            _content_type="application/merge-patch+json",
        )
    [taken_back, _] = apply_objects(kubeconfig, served())
    assert decoded(taken_back)["RRM_PAIRING_TOKEN"] == "rrmpt_first"
    assert (FIELD_MANAGER, "Apply") in managers(taken_back)


def test_a_refused_object_is_named_with_the_api_servers_answer(standin: KubeApiServer) -> None:
    kubeconfig = standin.kubeconfig.read_text()
    # a kind this API server does not serve (the stand-in has no policy/v1 group): the real server's 404
    [budget] = [
        o for o in control_plane_objects(ControlPlaneInstallValues()) if o["kind"] == "PodDisruptionBudget"
    ]
    with pytest.raises(InstallError, match=r"^PodDisruptionBudget/rrm-control-plane: 404 "):
        apply_objects(kubeconfig, [budget])
    bad = served()[0]
    bad["stringData"] = {"not a key!": "x"}
    with pytest.raises(InstallError, match=r"^Secret/rrm-agent-edge-1: 422 .*not a key!"):
        apply_objects(kubeconfig, [bad])
    assert standin.audit() == []


def test_kinds_rrm_does_not_install_and_unusable_kubeconfigs_are_refused_before_any_request(
    standin: KubeApiServer,
) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "shop"}}
    with pytest.raises(InstallError, match="ConfigMap/x: rrm does not install objects of kind ConfigMap"):
        apply_objects(standin.kubeconfig.read_text(), [config_map])
    with pytest.raises(InstallError, match="the kubeconfig is not usable"):
        apply_objects("clusters: []\n", served())
    assert standin.audit() == []
