"""What the tests of the install files under deploy/ share: rendering kustomize and Helm offline, and
validating every object against kubernetes-validate's schemas.

`kustomize_build` is a small loader for the kustomize features deploy/ uses (resources, components,
namespace, labels without selectors, images), because kustomize itself is no Python package and the
machines may lack `kubectl kustomize`. Anything else in a kustomization fails loudly rather than being
ignored, and a test compares it with `kubectl kustomize` wherever kubectl is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

# The oldest and the newest Kubernetes whose schemas kubernetes-validate ships offline.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

# Kinds kustomize's namespace transformer leaves without metadata.namespace (those deploy/ could use).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "components", "namespace", "labels", "images"}


def validate_all(objects: list[dict[str, Any]]) -> None:
    assert objects
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc}") from exc


def render_chart(chart: Path, values: dict[str, Any], *, name: str, namespace: str) -> list[dict[str, Any]]:
    with helm.Chart.load(str(chart)) as loaded:
        rendered = loaded.render(values, name=name, namespace=namespace)
    return [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]


def object_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def kustomize_build(directory: Path, accumulated: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """What `kustomize build DIRECTORY` prints, as objects in the order the resources are listed.

    A component (`accumulated` given) adds its resources to, and runs its transformers over, what the
    kustomization listing it has so far; that kustomization's own transformers then run over everything.
    """
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    assert not unsupported, f"{directory}: {sorted(unsupported)} not supported by this loader"
    objects = [] if accumulated is None else accumulated
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += kustomize_build(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for component in kustomization.get("components", []):
        kustomize_build(directory / component, objects)
    for obj in objects:
        _transform(obj, kustomization)
    return objects


def _transform(obj: dict[str, Any], kustomization: dict[str, Any]) -> None:
    metadata = obj["metadata"]
    if "namespace" in kustomization and obj["kind"] not in CLUSTER_SCOPED:
        metadata["namespace"] = kustomization["namespace"]
    for labels in kustomization.get("labels", []):
        assert not labels.get("includeSelectors") and not labels.get("includeTemplates"), "not supported"
        metadata.setdefault("labels", {}).update(labels["pairs"])
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        for image in kustomization.get("images", []):
            container["image"] = _retag(container["image"], image)


def _retag(reference: str, image: dict[str, str]) -> str:
    """The images transformer: a reference named `image["name"]` gets `newName` and `newTag`, if given."""
    assert "@" not in reference and "digest" not in image, "digests not supported by this loader"
    name, tag = reference, ""
    if ":" in reference[reference.rfind("/") + 1 :]:
        name, _, tag = reference.rpartition(":")
    if name != image["name"]:
        return reference
    name, tag = image.get("newName", name), image.get("newTag", tag)
    return f"{name}:{tag}" if tag else name
