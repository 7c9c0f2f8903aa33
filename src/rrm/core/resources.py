"""Dapr resources as rrm stores and delivers them: placement annotation, revisions, secret references."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SELECTOR_ANNOTATION = "rrm.io/selector"
REVISION_ANNOTATION = "rrm.io/revision"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "rrm"
RRM_ANNOTATION_PREFIX = "rrm.io/"


@dataclass(frozen=True)
class StoredComponent:
    """One revision of a component as the control plane keeps it."""

    name: str
    revision: int
    manifest: Mapping[str, Any]

    @property
    def selector(self) -> str | None:
        return selector_of(self.manifest)


def selector_of(manifest: Mapping[str, Any]) -> str | None:
    annotations = manifest.get("metadata", {}).get("annotations") or {}
    value = annotations.get(SELECTOR_ANNOTATION)
    return value if isinstance(value, str) else None


def uses_rrm_secret_store(manifest: Mapping[str, Any]) -> bool:
    """A component that names its own `auth.secretStore` resolves its references there, not in rrm."""
    auth = manifest.get("auth")
    return not (isinstance(auth, Mapping) and auth.get("secretStore"))


def secret_refs(manifest: Mapping[str, Any]) -> dict[str, set[str]]:
    """The rrm secrets (name → keys) a component references; key defaults to the secret's name, as in Dapr."""
    if not uses_rrm_secret_store(manifest):
        return {}
    refs: dict[str, set[str]] = {}
    for item in (manifest.get("spec") or {}).get("metadata") or []:
        ref = item.get("secretKeyRef") if isinstance(item, Mapping) else None
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
            key = ref.get("key") or ref["name"]
            refs.setdefault(ref["name"], set()).add(str(key))
    return refs


def delivered_manifest(component: StoredComponent) -> dict[str, Any]:
    """The manifest a runtime receives: rrm's own annotations replaced by the revision, a managed-by label.

    Only the metadata is new; the other fields are the stored manifest's own objects, shared rather than
    copied on every render (a render encodes and hashes them, never changes them)."""
    manifest = dict(component.manifest)
    metadata = dict(manifest.get("metadata") or {})
    annotations = {
        k: v
        for k, v in (metadata.get("annotations") or {}).items()
        if not k.startswith(RRM_ANNOTATION_PREFIX)
    }
    annotations[REVISION_ANNOTATION] = str(component.revision)
    labels = dict(metadata.get("labels") or {})
    labels[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
    metadata["annotations"] = annotations
    metadata["labels"] = labels
    manifest["metadata"] = metadata
    return manifest
