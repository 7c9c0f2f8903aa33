"""Dapr's component catalog, read once from the components-contrib `metadata.yaml` files in `schemas/`.

Each file describes one component (`type` + `name` + `version`); the folder path does not always match the
name, so the index is built from the file contents. On top of a file's own metadata the index adds what Dapr's
build adds (built-in fields per category) and the metadata of its authentication profiles.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SCHEMAS_DIR = Path(__file__).with_name("schemas")
CONTRIB_DIR = SCHEMAS_DIR / "components-contrib"
BUILTIN_PROFILES_FILE = SCHEMAS_DIR / "builtin-authentication-profiles.yaml"
COMPONENT_CRD_FILE = SCHEMAS_DIR / "crds" / "components.yaml"

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Name resolvers are configured in the Configuration resource, never as a Component.
NOT_COMPONENT_CATEGORIES = frozenset({"nameresolution"})
# daprd registers these crypto providers under a `dapr.` prefix (`crypto.dapr.jwks`, ...).
DAPR_PREFIXED_CRYPTO = frozenset({"jwks", "localstorage", "kubernetes.secrets"})

_PUBSUB_BUILTINS = (
    "consumerID",
    "allowedTopics",
    "publishingScopes",
    "subscriptionScopes",
    "protectedTopics",
)
_OUTBOX_BUILTINS = (
    ("outboxPublishPubsub", "string"),
    ("outboxPublishTopic", "string"),
    ("outboxPubsub", "string"),
    ("outboxDiscardWhenMissingState", "bool"),
)


@dataclass(frozen=True)
class MetadataField:
    """One metadata field a component accepts, as declared by Dapr."""

    name: str
    type: str  # string, number, bool, duration or bytesize
    required: bool
    sensitive: bool
    allowed_values: tuple[str, ...]  # empty: any value


@dataclass(frozen=True)
class ComponentSchema:
    """The metadata fields of one component type at one version; field names match case-insensitively."""

    component_type: str
    version: str
    fields: Mapping[str, MetadataField]  # keyed by lower-cased name

    def field(self, name: str) -> MetadataField | None:
        return self.fields.get(name.lower())

    @property
    def required_fields(self) -> list[MetadataField]:
        return [f for f in self.fields.values() if f.required]


def component_type_of(category: str, name: str) -> str:
    """The `spec.type` Dapr expects for a metadata.yaml's `type` and `name`."""
    if category == "middleware":
        return f"middleware.http.{name}"
    if category == "crypto" and name in DAPR_PREFIXED_CRYPTO:
        return f"crypto.dapr.{name}"
    return f"{category}.{name}"


def component_schema(component_type: str, version: str) -> ComponentSchema | None:
    """The schema for `spec.type` / `spec.version` (both case-insensitive, as in daprd), None when unknown."""
    return _catalog().get(component_type.lower(), {}).get(version.lower())


def component_versions(component_type: str) -> list[str]:
    return sorted(_catalog().get(component_type.lower(), {}))


def known_component_types() -> list[str]:
    return sorted(_catalog())


@functools.cache
def component_crd_schema() -> dict[str, Any]:
    """The openAPIV3Schema of Dapr's Component CRD (`dapr.io/v1alpha1`)."""
    for document in yaml.load_all(COMPONENT_CRD_FILE.read_text(), Loader=_Loader):
        if document and document.get("kind") == "CustomResourceDefinition":
            for version in document["spec"]["versions"]:
                if version["name"] == "v1alpha1":
                    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
                    return schema
    raise LookupError(f"no v1alpha1 schema in {COMPONENT_CRD_FILE}")


@functools.cache
def _catalog() -> dict[str, dict[str, ComponentSchema]]:
    builtin_profiles = yaml.load(BUILTIN_PROFILES_FILE.read_text(), Loader=_Loader)
    catalog: dict[str, dict[str, ComponentSchema]] = {}
    for path in sorted(CONTRIB_DIR.rglob("metadata.yaml")):
        document = yaml.load(path.read_text(), Loader=_Loader)
        if document["type"] in NOT_COMPONENT_CATEGORIES:
            continue
        schema = _component_schema(document, builtin_profiles)
        catalog.setdefault(schema.component_type, {})[schema.version] = schema
    return catalog


def _component_schema(document: Mapping[str, Any], builtin_profiles: Mapping[str, Any]) -> ComponentSchema:
    own = list(document.get("metadata") or []) + _builtin_fields(document)
    profile_fields: list[Mapping[str, Any]] = []
    for profile in document.get("authenticationProfiles") or []:
        profile_fields += profile.get("metadata") or []
    for reference in document.get("builtinAuthenticationProfiles") or []:
        profile_fields += reference.get("metadata") or []
        for profile in builtin_profiles[reference["name"]]:
            profile_fields += profile.get("metadata") or []
    fields = _merge(own, profile_fields)
    return ComponentSchema(
        component_type=component_type_of(document["type"], document["name"]).lower(),
        version=str(document["version"]).lower(),
        fields=fields,
    )


def _builtin_fields(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fields Dapr's build (and runtime) add to every component of a category."""
    category = document["type"]
    capabilities = document.get("capabilities") or []
    names: list[tuple[str, str]] = []
    if category == "state":
        names.append(("keyPrefix", "string"))
        if "actorStateStore" in capabilities:
            names.append(("actorStateStore", "bool"))
        if "transactional" in capabilities:
            names += _OUTBOX_BUILTINS
    elif category == "lock":
        names.append(("keyPrefix", "string"))
    elif category == "pubsub":
        names += [(name, "string") for name in _PUBSUB_BUILTINS]
    elif category == "bindings":
        names.append(("direction", "string"))
        if (document.get("binding") or {}).get("input"):
            names.append(("route", "string"))
    return [{"name": name, "type": field_type} for name, field_type in names]


def _merge(
    own: Iterable[Mapping[str, Any]], profile: Iterable[Mapping[str, Any]]
) -> dict[str, MetadataField]:
    """One field per name. Only a component's own fields can be required: authentication profiles are
    alternatives, so their `required` holds only for the profile chosen. A field is sensitive if any
    declaration says so; profile-only fields take the union of their profiles' allowed values."""
    declarations: dict[str, tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]] = {}
    for item in own:
        declarations.setdefault(item["name"].lower(), ([], []))[0].append(item)
    for item in profile:
        declarations.setdefault(item["name"].lower(), ([], []))[1].append(item)
    fields: dict[str, MetadataField] = {}
    for key, (own_items, profile_items) in declarations.items():
        primary = own_items or profile_items
        types = {item.get("type") or "string" for item in primary}
        if any(not item.get("allowedValues") for item in primary):
            allowed: tuple[str, ...] = ()
        else:
            allowed = tuple(dict.fromkeys(str(v) for item in primary for v in item["allowedValues"]))
        fields[key] = MetadataField(
            name=primary[0]["name"],
            type=types.pop() if len(types) == 1 else "string",
            required=any(item.get("required") for item in own_items),
            sensitive=any(item.get("sensitive") for item in own_items + profile_items),
            allowed_values=allowed,
        )
    return fields
