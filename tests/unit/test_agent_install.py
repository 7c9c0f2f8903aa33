"""The agent's install files: `deploy/agent` (kustomize) and the Helm chart, both generated from
`rrm.install.agent`, hold what `rrm runtime manifest` prints, and every object is valid Kubernetes by
`kubernetes-validate`'s schemas."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import install_manifests
import pytest
import yaml
from install_manifests import validate_all

from rrm.install import AgentInstallValues, agent_objects

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUSTOMIZE_BASE = DEPLOY / "agent"
CHART = DEPLOY / "charts" / "rrm-agent"
PLACEHOLDERS = {
    "runtime": "my-runtime",
    "director_url": "https://rrm.example.com",
    "pairing_token": "REPLACE-WITH-A-PAIRING-TOKEN",
}


def agent_manifests(
    runtime: str,
    director_url: str,
    pairing_token: str,
    *,
    target_namespaces: tuple[str, ...] = ("default",),
    image: str = "rrm:0.1.0",
    restarts: bool = True,
) -> list[dict[str, Any]]:
    return agent_objects(
        AgentInstallValues(
            runtime,
            director_url,
            pairing_token,
            target_namespaces=target_namespaces,
            image=image,
            restarts=restarts,
        )
    )


def kustomize_resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUSTOMIZE_BASE / "kustomization.yaml").read_text())
    return [
        doc
        for resource in kustomization["resources"]
        for doc in yaml.safe_load_all((KUSTOMIZE_BASE / resource).read_text())
        if doc
    ]


def test_every_file_of_the_kustomize_base_is_valid() -> None:
    files = sorted(KUSTOMIZE_BASE.glob("*.yaml"))
    listed = set(yaml.safe_load((KUSTOMIZE_BASE / "kustomization.yaml").read_text())["resources"])
    assert {f.name for f in files} - {"kustomization.yaml"} == listed, (
        "a file is not listed in kustomization.yaml"
    )
    validate_all(kustomize_resources())


def test_the_kustomize_base_is_what_the_cli_prints_with_placeholders() -> None:
    assert kustomize_resources() == agent_manifests(
        PLACEHOLDERS["runtime"],
        PLACEHOLDERS["director_url"],
        PLACEHOLDERS["pairing_token"],
        image="rrm:0.1.0",
    )


@pytest.mark.parametrize("restarts", [True, False])
def test_cli_manifests_are_valid_and_least_privilege(restarts: bool) -> None:
    objects = agent_manifests(
        "edge-1", "http://cp:8080", "rrmpt_x", target_namespaces=("shop", "billing"), restarts=restarts
    )
    validate_all(objects)
    roles = [o for o in objects if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["billing", "shop"]
    granted = {
        (group, resource)
        for r in roles[0]["rules"]
        for group in r["apiGroups"]
        for resource in r["resources"]
    }
    # following rollouts and sidecars needs Deployments and pods listed, even without restarts
    base = {("", "secrets"), ("dapr.io", "components"), ("apps", "deployments"), ("", "pods")}
    workloads = {("apps", "statefulsets"), ("dapr.io", "configurations")}
    assert granted == (base | workloads if restarts else base)
    patched = {res for r in roles[0]["rules"] if "patch" in r["verbs"] for res in r["resources"]}
    assert patched == (
        {"secrets", "components", "deployments", "statefulsets"} if restarts else {"secrets", "components"}
    )
    args = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert args[args.index("--hot-reload") + 1] == ("auto" if restarts else "on")
    assert [args[i + 1] for i, a in enumerate(args) if a == "--namespace"] == ["shop", "billing"]
    assert not any(o["kind"] in ("ClusterRole", "ClusterRoleBinding") for o in objects)


def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    return install_manifests.render_chart(CHART, values, name="agent", namespace="rrm-system")


@pytest.mark.parametrize(
    ("restarts", "targets"),
    [(True, ("shop", "billing")), (False, ("shop", "billing")), (True, ("shop", "shop")), (True, ())],
)
def test_the_helm_chart_renders_the_same_objects_as_the_cli(restarts: bool, targets: tuple[str, ...]) -> None:
    values = {
        "runtime": "edge-1",
        "directorUrl": "http://cp:8080",
        "pairingToken": "rrmpt_x",
        "targetNamespaces": list(targets),
        "restarts": restarts,
    }
    rendered = render_chart(values)
    validate_all(rendered)
    expected = agent_manifests(
        "edge-1", "http://cp:8080", "rrmpt_x", target_namespaces=targets, restarts=restarts
    )
    # Helm installs into a namespace it creates (--create-namespace) and keeps the agent's key on uninstall.
    expected = [o for o in expected if o["kind"] != "Namespace"]
    for obj in expected:
        if obj["kind"] == "PersistentVolumeClaim":
            obj["metadata"]["annotations"] = {"helm.sh/resource-policy": "keep"}

    def key(obj: dict[str, Any]) -> tuple[str, str, str]:
        return obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]

    assert sorted(rendered, key=key) == sorted(copy.deepcopy(expected), key=key)


def test_the_helm_chart_lints_and_refuses_to_render_without_a_runtime() -> None:
    assert helm.lint(str(CHART), {"runtime": "edge-1", "directorUrl": "http://cp:8080"})["errors"] == []
    with pytest.raises(helm.HelmRenderError, match="runtime is required"):
        render_chart({"directorUrl": "http://cp:8080"})
