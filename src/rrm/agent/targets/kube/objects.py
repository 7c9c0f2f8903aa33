"""Pure: the Kubernetes objects a desired state becomes, their ids, and what of a live object is ours.

Object ids are `Kind/namespace/name`. Every object carries `app.kubernetes.io/managed-by: rrm` and
`rrm.io/runtime: <runtime id>`; the agent lists, watches and prunes by exactly these two labels, so it never
touches anything else. A live object is compared with the desired one through `owned_view`: only the fields
the agent's field manager owns (from `metadata.managedFields`), so fields other controllers add are not
drift, and a field someone else took over by editing it is.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rrm.core.names import dns1123_label_error
from rrm.core.resources import MANAGED_BY_LABEL, MANAGED_BY_VALUE, REVISION_ANNOTATION, secret_refs
from rrm.wire.protocol import DesiredState

FIELD_MANAGER = "rrm-agent"
RUNTIME_LABEL = "rrm.io/runtime"
SECRET = "Secret"
COMPONENT = "Component"
COMPONENT_API_VERSION = "dapr.io/v1alpha1"
API_VERSIONS = {SECRET: "v1", COMPONENT: COMPONENT_API_VERSION}
COMPONENT_FIELDS = ("spec", "auth", "scopes")

NativeObject = dict[str, Any]


def object_id(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def split_id(object_id_: str) -> tuple[str, str, str]:
    kind, namespace, name = object_id_.split("/", 2)
    return kind, namespace, name


def id_of(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return object_id(str(obj.get("kind")), str(metadata.get("namespace")), str(metadata.get("name")))


def managed_labels(runtime_id: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, RUNTIME_LABEL: runtime_id}


def managed_selector(runtime_id: str) -> str:
    return ",".join(f"{k}={v}" for k, v in managed_labels(runtime_id).items())


def is_managed_by(obj: Mapping[str, Any], runtime_id: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in managed_labels(runtime_id).items())


def secret_object(
    name: str, namespace: str, data: Mapping[str, str], revision: int, runtime_id: str
) -> NativeObject:
    """A `v1` Secret; values base64-encoded into `data`, as the API server stores them."""
    return {
        "apiVersion": "v1",
        "kind": SECRET,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": managed_labels(runtime_id),
            "annotations": {REVISION_ANNOTATION: str(revision)},
        },
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(data.items())},
    }


def component_object(manifest: Mapping[str, Any], namespace: str, runtime_id: str) -> NativeObject:
    """The Component as delivered, in `namespace`, with the agent's labels. References resolve against the
    Kubernetes secret store (Dapr's default there), so no `auth.secretStore` is added."""
    metadata = manifest.get("metadata") or {}
    spec = copy.deepcopy(dict(manifest.get("spec") or {}))
    spec["metadata"] = spec.get("metadata") or []
    obj: NativeObject = {
        "apiVersion": COMPONENT_API_VERSION,
        "kind": COMPONENT,
        "metadata": {
            "name": str(metadata.get("name", "")),
            "namespace": namespace,
            "labels": {**(metadata.get("labels") or {}), **managed_labels(runtime_id)},
        },
        "spec": spec,
    }
    if metadata.get("annotations"):
        obj["metadata"]["annotations"] = dict(metadata["annotations"])
    for key in ("auth", "scopes"):
        if manifest.get(key):
            obj[key] = copy.deepcopy(manifest[key])
    return obj


@dataclass
class Plan:
    """The objects a state becomes, the components that cannot be applied (name → why), and for each
    component object the Secret objects it needs."""

    objects: dict[str, NativeObject] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    needs: dict[str, set[str]] = field(default_factory=dict)


def plan_state(state: DesiredState, runtime_id: str, namespaces: list[str]) -> Plan:
    """Each component in its manifest's namespace (else the first of `namespaces`, which must allow it);
    each delivered secret as a Secret of the same name in every namespace whose components reference it."""
    plan = Plan()
    delivered = {s.name: s for s in state.secrets}
    for manifest in state.components:
        metadata = manifest.get("metadata") or {}
        name = str(metadata.get("name", ""))
        namespace = str(metadata.get("namespace") or namespaces[0])
        refs = secret_refs(manifest)
        missing = [
            f"{s}/{k}"
            for s, keys in sorted(refs.items())
            for k in sorted(keys)
            if s not in delivered or k not in delivered[s].data
        ]
        problem = dns1123_label_error(name)
        if problem is None and namespace not in namespaces:
            problem = f"namespace {namespace} is not one of the agent's namespaces ({', '.join(namespaces)})"
        if problem is None and missing:
            problem = "references secret keys that were not delivered: " + ", ".join(missing)
        if problem is not None:
            plan.rejected[name] = problem
            continue
        component_id = object_id(COMPONENT, namespace, name)
        plan.objects[component_id] = component_object({**manifest}, namespace, runtime_id)
        plan.needs[component_id] = set()
        for secret_name in sorted(refs):
            secret = delivered[secret_name]
            secret_id = object_id(SECRET, namespace, secret_name)
            plan.objects.setdefault(
                secret_id, secret_object(secret.name, namespace, secret.data, secret.revision, runtime_id)
            )
            plan.needs[component_id].add(secret_id)
    return plan


def owned_view(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> NativeObject:
    """The object reduced to its identity plus the fields `manager` owns through an Apply, following the
    `FieldsV1` format (`f:` map fields; anything inside a list counts as the whole list)."""
    metadata = obj.get("metadata") or {}
    view: NativeObject = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")},
    }
    for entry in metadata.get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            owned = _project(obj, entry.get("fieldsV1") or {})
            if isinstance(owned, dict):
                _merge(view, owned)
    return view


def _project(value: Any, fields: Mapping[str, Any]) -> Any:
    if not fields or not isinstance(value, Mapping):
        return copy.deepcopy(value)
    projected: dict[str, Any] = {}
    for key, child in fields.items():
        if key.startswith("f:") and key[2:] in value:
            projected[key[2:]] = _project(value[key[2:]], child)
    return projected


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def status_message(body: str | bytes | None, fallback: str) -> str:
    """The `message` of a Kubernetes `Status` answer, else `fallback`."""
    try:
        status = json.loads(body or b"")
    except ValueError:
        return fallback
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return fallback
