"""The `rrm.io/v1` documents `rrm apply` takes for Compass — Application, LabelDefinition,
ScenarioAssignment — checked field by field, and an Application split into what may be shown (the manifest
without credential values) and what is encrypted (each bundle's credentials).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

from rrm.core.bounded import load_yaml
from rrm.core.labels import label_key_error, validate_labels
from rrm.core.names import DNS1123_MAX, dns1123_label_error
from rrm.core.scenarios import (
    CREDENTIAL_FIELDS,
    DEFAULT_SCENARIO,
    Application,
    Bundle,
    Credentials,
    binding_name,
)
from rrm.core.selectors import SelectorError, parse_selector
from rrm.dapr.validation import schema_error_message
from rrm.server.compass.labels import SCENARIOS_KEY, schema_error

APPLICATION = "Application"
LABEL_DEFINITION = "LabelDefinition"
SCENARIO_ASSIGNMENT = "ScenarioAssignment"
MAX_NAMES = DNS1123_MAX - len(binding_name("", ""))  # application and bundle name together
API_SPEC_TYPES = {"OpenAPI": ("openapi", "swagger")}
EVENT_SPEC_TYPES = {"AsyncAPI": ("asyncapi",)}
OPTIONAL_CREDENTIAL_FIELDS = {"header"}

_TEXT = {"type": "string", "maxLength": 2000}
_NAME = {"type": "string", "minLength": 1, "maxLength": 100}
_URL = {"type": "string", "minLength": 1, "maxLength": 2048}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _definition(spec_types: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": _NAME,
            "description": _TEXT,
            "targetUrl": _URL,
            "spec": {
                "type": "object",
                "required": ["type"],
                "additionalProperties": False,
                "properties": {
                    "type": {"enum": sorted(spec_types)},
                    "inline": {"type": ["object", "string"]},
                    "url": _URL,
                },
            },
        },
    }


_API = _definition(API_SPEC_TYPES)
_EVENT = copy.deepcopy(_definition(EVENT_SPEC_TYPES))
del _EVENT["properties"]["targetUrl"]
_CREDENTIALS = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": sorted(CREDENTIAL_FIELDS)},
        **{
            name: {"type": "string", "minLength": 1, "maxLength": 4096}
            for fields in CREDENTIAL_FIELDS.values()
            for name in fields
        },
    },
}


def _document(metadata: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The envelope every rrm.io document shares: apiVersion, kind, metadata and a closed spec."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": metadata,
            "spec": {"type": "object", "additionalProperties": False, **spec},
        },
    }


APPLICATION_SCHEMA = _document(
    _METADATA,
    {
        "properties": {
            "description": _TEXT,
            "provider": {"type": "string", "maxLength": 256},
            "baseUrl": _URL,
            "scenarios": {"type": "array", "items": {"type": "string"}},
            "apis": {"type": "array", "items": _API},
            "events": {"type": "array", "items": _EVENT},
            "bundles": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "description": _TEXT,
                        "apis": {"type": "array", "items": {"type": "string"}},
                        "events": {"type": "array", "items": {"type": "string"}},
                        "credentials": _CREDENTIALS,
                    },
                },
            },
        }
    },
)


def _one_field_document(spec_field: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A document named by `metadata.name` whose spec is exactly one required field."""
    metadata = {**_METADATA, "properties": {"name": {"type": "string"}}}
    return _document(metadata, {"required": [spec_field], "properties": {spec_field: schema}})


LABEL_DEFINITION_SCHEMA = _one_field_document("schema", {"type": "object"})
ASSIGNMENT_SCHEMA = _one_field_document("selector", {"type": "string"})


@dataclass
class Checked:
    """One document's problems as (field, message); `value` is what the document means when there are none."""

    problems: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.problems.append((path, message))


@dataclass
class ApplicationDocument(Checked):
    name: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)  # without credential values
    labels: dict[str, str] = field(default_factory=dict)
    scenarios: list[str] = field(default_factory=list)
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)  # bundle → type and fields


@dataclass
class LabelDefinitionDocument(Checked):
    key: str = ""
    schema: dict[str, Any] = field(default_factory=dict)


@dataclass
class AssignmentDocument(Checked):
    scenario: str = ""
    selector: str = ""


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _structure(document: Mapping[str, Any], schema: Mapping[str, Any], checked: Checked) -> bool:
    """JSON Schema errors with the field they concern; True when the structure is sound."""
    for error in sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=lambda e: list(e.path)):
        path = _path(error.absolute_path)
        if error.validator == "required":
            for missing in error.validator_value:
                if isinstance(error.instance, Mapping) and missing not in error.instance:
                    checked.add(f"{path}.{missing}" if path else missing, "is required")
        elif error.validator == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            extra = sorted(set(error.instance) - set(known)) if isinstance(error.instance, Mapping) else []
            for name in extra:
                checked.add(
                    f"{path}.{name}" if path else name, f"unknown field; expected one of {', '.join(known)}"
                )
        else:
            checked.add(path or "(document)", schema_error_message(error))
    return not checked.problems


def url_error(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http or https URL"
    return None


def _name_of(document: Mapping[str, Any]) -> str:
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) else ""


# Application ------------------------------------------------------------------------------------------


def parse_application(document: Mapping[str, Any]) -> ApplicationDocument:
    """Everything that can be checked from the document alone; scenarios and label definitions are checked
    against the registry by the caller."""
    result = ApplicationDocument(name=_name_of(document))
    if not _structure(document, APPLICATION_SCHEMA, result):
        return result
    spec = document["spec"]
    if (error := dns1123_label_error(result.name)) is not None:
        result.add("metadata.name", error)
    result.labels = dict(document["metadata"].get("labels") or {})
    for path, message in validate_labels(result.labels):
        result.add(f"metadata.{path}", message)
    result.scenarios = list(spec.get("scenarios", [DEFAULT_SCENARIO]))
    for key in ("baseUrl",):
        if key in spec and (error := url_error(spec[key])) is not None:
            result.add(f"spec.{key}", error)

    apis = _definitions(spec.get("apis") or [], "spec.apis", API_SPEC_TYPES, result)
    events = _definitions(spec.get("events") or [], "spec.events", EVENT_SPEC_TYPES, result)
    bundles = spec.get("bundles") or []
    seen: set[str] = set()
    for index, bundle in enumerate(bundles):
        path = f"spec.bundles[{index}]"
        name = bundle["name"]
        if (error := dns1123_label_error(name)) is not None:
            result.add(f"{path}.name", error)
        elif len(result.name) + len(name) > MAX_NAMES:
            result.add(
                f"{path}.name",
                f"the binding name {binding_name(result.name, name)!r} would be longer than {DNS1123_MAX} "
                f"characters: application and bundle names may have {MAX_NAMES} together",
            )
        if name in seen:
            result.add(f"{path}.name", f"bundle {name!r} appears twice")
        seen.add(name)
        for kind, known in (("apis", apis), ("events", events)):
            for item_index, item in enumerate(bundle.get(kind) or []):
                if item not in known:
                    result.add(
                        f"{path}.{kind}[{item_index}]",
                        f"no {kind[:-1]} definition named {item!r} in spec.{kind}",
                    )
        if bundle_url(spec, bundle) is None:
            result.add(
                path,
                "the binding needs a URL: an API of the bundle with a targetUrl, or a baseUrl",
            )
        credentials = bundle.get("credentials") or {"type": "none"}
        _check_credentials(credentials, f"{path}.credentials", result)
        result.credentials[name] = dict(credentials)
    result.manifest = public_manifest(document)
    return result


def _definitions(
    items: list[Mapping[str, Any]], path: str, spec_types: Mapping[str, tuple[str, ...]], result: Checked
) -> set[str]:
    names: set[str] = set()
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        if item["name"] in names:
            result.add(f"{where}.name", f"{item['name']!r} appears twice")
        names.add(item["name"])
        if "targetUrl" in item and (error := url_error(item["targetUrl"])) is not None:
            result.add(f"{where}.targetUrl", error)
        spec = item.get("spec")
        if spec is None:
            continue
        if ("inline" in spec) == ("url" in spec):
            result.add(f"{where}.spec", "give the definition either inline or by url, exactly one of them")
        elif "url" in spec:
            if (error := url_error(spec["url"])) is not None:
                result.add(f"{where}.spec.url", error)
        else:
            inline = spec["inline"]
            if isinstance(inline, str):
                try:
                    inline = load_yaml(inline)
                except yaml.YAMLError as exc:
                    result.add(f"{where}.spec.inline", f"does not parse as JSON or YAML: {exc}")
                    continue
            markers = spec_types[spec["type"]]
            if not isinstance(inline, Mapping) or not any(m in inline for m in markers):
                result.add(
                    f"{where}.spec.inline",
                    f"not a {spec['type']} document: it needs a top-level {' or '.join(markers)} field",
                )
    return names


def _check_credentials(credentials: Mapping[str, Any], path: str, result: Checked) -> None:
    kind = credentials["type"]
    allowed = CREDENTIAL_FIELDS[kind]
    for name in sorted(set(credentials) - {"type"} - set(allowed)):
        result.add(f"{path}.{name}", f"not a field of {kind} credentials")
    for name in allowed:
        if name not in credentials and name not in OPTIONAL_CREDENTIAL_FIELDS:
            result.add(f"{path}.{name}", f"is required for {kind} credentials")
    if kind == "oauth2" and "tokenUrl" in credentials and (error := url_error(credentials["tokenUrl"])):
        result.add(f"{path}.tokenUrl", error)


def bundle_url(spec: Mapping[str, Any], bundle: Mapping[str, Any]) -> str | None:
    """The target URL of the bundle's first API (that API's targetUrl, else the application's baseUrl)."""
    apis = {api["name"]: api for api in spec.get("apis") or []}
    first = next((apis[name] for name in bundle.get("apis") or [] if name in apis), None)
    url = (first or {}).get("targetUrl") or spec.get("baseUrl")
    return url if isinstance(url, str) else None


def public_manifest(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document as stored and shown: each bundle's credentials reduced to their type."""
    manifest = {k: copy.deepcopy(document[k]) for k in ("apiVersion", "kind", "metadata", "spec")}
    for bundle in manifest["spec"].get("bundles") or []:
        bundle["credentials"] = {"type": (bundle.get("credentials") or {}).get("type", "none")}
    return manifest


def core_application(
    name: str,
    revision: int,
    manifest: Mapping[str, Any],
    scenarios: list[str],
    credentials: Mapping[str, Mapping[str, str]],
) -> Application:
    """What desired states and brokers need, from a stored application and its decrypted credentials."""
    spec = manifest["spec"]
    bundles = []
    for bundle in spec.get("bundles") or []:
        values = dict(credentials.get(bundle["name"]) or {"type": "none"})
        kind = values.pop("type", "none")
        bundles.append(Bundle(bundle["name"], bundle_url(spec, bundle) or "", Credentials(kind, values)))
    return Application(name, revision, frozenset(scenarios), tuple(bundles))


# LabelDefinition and ScenarioAssignment ---------------------------------------------------------------


def parse_label_definition(document: Mapping[str, Any]) -> LabelDefinitionDocument:
    result = LabelDefinitionDocument(key=_name_of(document))
    if not _structure(document, LABEL_DEFINITION_SCHEMA, result):
        return result
    if (error := label_key_error(result.key)) is not None:
        result.add("metadata.name", f"must be a label key: {error}")
    elif result.key == SCENARIOS_KEY:
        result.add(
            "metadata.name",
            "the scenarios label definition is built in; `rrm create|delete scenario` change it",
        )
    result.schema = dict(document["spec"]["schema"])
    if (invalid := schema_error(result.schema)) is not None:
        result.add("spec.schema" + invalid[0], invalid[1])
    return result


def parse_assignment(document: Mapping[str, Any]) -> AssignmentDocument:
    result = AssignmentDocument(scenario=_name_of(document))
    if not _structure(document, ASSIGNMENT_SCHEMA, result):
        return result
    result.selector = document["spec"]["selector"]
    try:
        parse_selector(result.selector)
    except SelectorError as exc:
        result.add("spec.selector", str(exc))
    return result
