"""Checks Dapr resources against Dapr's own schemas before rrm stores them, naming the field at fault.

Unknown metadata names are warnings, not errors: Dapr accepts unknown metadata and many components pass it
through to the service they wrap.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from rrm.core.names import RESERVED_PREFIX, dns1123_label_error
from rrm.core.resources import uses_rrm_secret_store
from rrm.dapr.catalog import (
    ComponentSchema,
    component_crd_schema,
    component_schema,
    component_versions,
    known_component_types,
)
from rrm.dapr.values import value_text, value_type_error

COMPONENT_API_VERSION = "dapr.io/v1alpha1"
COMPONENT_KIND = "Component"
SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")  # whole key (fullmatch): `$` would let a trailing newline through
SECRET_KEY_MAX = 253

# A field is a credential when its name is, or ends with, one of these (case-insensitive, `_`/`-` ignored).
# Matching on the end keeps `keyPrefix`, `tokenHeader`, `passwordPolicy` and the like out.
CREDENTIAL_NAME_ENDINGS = (
    "password",
    "passwd",
    "token",
    "secret",
    "secretkey",
    "accesskey",
    "accountkey",
    "apikey",
    "privatekey",
    "clientsecret",
    "connectionstring",
    "credentials",
    "masterkey",
    "sastoken",
    "securitytoken",
)


@dataclass(frozen=True)
class FieldError:
    """What is wrong with one field: `field` is a path such as `spec.metadata[2].value`."""

    field: str
    message: str


@dataclass
class ValidationResult:
    errors: list[FieldError] = field(default_factory=list)
    warnings: list[FieldError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, path: str, message: str) -> None:
        if FieldError(path, message) not in self.errors:
            self.errors.append(FieldError(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(FieldError(path, message))


def is_sensitive_field(component_type: str, version: str, field_name: str) -> bool:
    """Dapr marks the field `sensitive`, or its name says it holds a credential (for string fields)."""
    return _is_sensitive(component_schema(component_type, version), field_name)


def _is_sensitive(schema: ComponentSchema | None, field_name: str) -> bool:
    declared = schema.field(field_name) if schema else None
    if declared and declared.sensitive:
        return True
    if declared and declared.type != "string":
        return False
    return is_credential_name(field_name)


def is_credential_name(name: object) -> bool:
    """The name says the field holds a credential: `password`, `clientSecret`, `credentials`, ..."""
    if not isinstance(name, str):
        return False
    return name.lower().replace("_", "").replace("-", "").endswith(CREDENTIAL_NAME_ENDINGS)


def schema_error_message(error: jsonschema.ValidationError, *, sensitive: bool = False) -> str:
    """jsonschema's message, unless the value may be a credential (`sensitive`, a credential field on the
    path, or one inside the value): then a message that does not contain the value."""
    if not (
        sensitive or any(map(is_credential_name, error.absolute_path)) or _holds_credential(error.instance)
    ):
        return error.message
    if error.validator == "type":
        return f"must be of type {error.validator_value!r} (the value is not shown: it may be a credential)"
    return (
        f"does not satisfy {error.validator!r} of its schema (the value is not shown: it may be a credential)"
    )


def _holds_credential(value: object) -> bool:
    if isinstance(value, Mapping):
        return any(is_credential_name(k) or _holds_credential(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_holds_credential, value))
    return False


def validate_component(
    manifest: Mapping[str, Any], *, secrets: Mapping[str, set[str]] | None = None
) -> ValidationResult:
    """Validate a `dapr.io/v1alpha1` Component. `secrets` (rrm secret name → keys), when given, is checked
    against the `secretKeyRef`s of a component that resolves them in rrm's own secret store."""
    result = ValidationResult()
    if manifest.get("apiVersion") != COMPONENT_API_VERSION:
        result.error("apiVersion", f"must be {COMPONENT_API_VERSION!r}")
    if manifest.get("kind") != COMPONENT_KIND:
        result.error("kind", f"must be {COMPONENT_KIND!r}")
    _check_crd_schema(manifest, result)
    _check_name(manifest, result)
    spec = manifest.get("spec")
    if spec is None:
        result.error("spec", "is required")
    if not isinstance(spec, Mapping):
        return result
    items = _metadata_items(spec)
    _check_items(items, result)
    schema = _resolve_schema(spec, result)
    if schema is not None:
        _check_fields(items, schema, result)
    if secrets is not None and uses_rrm_secret_store(manifest):
        _check_secret_refs(items, secrets, result)
    return result


def validate_secret(manifest: Mapping[str, Any]) -> tuple[ValidationResult, dict[str, str]]:
    """Validate a Kubernetes `v1` Secret and decode its values; `stringData` wins over `data` for the same
    key, as in Kubernetes. The values are complete only when the result is ok."""
    result = ValidationResult()
    if manifest.get("apiVersion") != "v1":
        result.error("apiVersion", "must be 'v1'")
    if manifest.get("kind") != "Secret":
        result.error("kind", "must be 'Secret'")
    metadata = manifest.get("metadata")
    name_error = dns1123_label_error(metadata.get("name") if isinstance(metadata, Mapping) else None)
    if name_error:
        result.error("metadata.name", name_error)
    if manifest.get("type", "Opaque") != "Opaque":
        result.error("type", "must be 'Opaque' or absent")
    values: dict[str, str] = {}
    for section in ("data", "stringData"):
        entries = manifest.get(section)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            result.error(section, "must be a mapping of key to value")
            continue
        for key, raw in entries.items():
            path = f"{section}.{key}"
            key_error = _secret_key_error(key)
            if key_error:
                result.error(path, key_error)
                continue
            value = _decode_data_value(raw) if section == "data" else raw
            if not isinstance(value, str):
                expected = "base64 of UTF-8 text" if section == "data" else "a string"
                result.error(path, f"must be {expected}")
                continue
            values[key] = value
    if not any(isinstance(manifest.get(s), Mapping) and manifest[s] for s in ("data", "stringData")):
        result.error("data", "a secret needs at least one key in data or stringData")
    return result, values


# What a JSON Schema `type` admits, as jsonschema's Draft 7 type checker decides it (a bool is no integer).
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
}
_ANNOTATIONS = ("description", "title")  # keywords that constrain nothing (as do `x-` extensions)


class Unsupported(Exception):
    """The schema uses a keyword `compile_schema` does not implement."""


def compile_schema(schema: Mapping[str, Any]) -> Callable[[Any], bool]:
    """A predicate equal to `Draft7Validator(schema).is_valid` for the keywords Dapr's Component CRD uses
    (`type` among object, array, string and boolean; `properties`; `required`; `items` as one schema),
    about a hundred times faster than jsonschema on a component; raises Unsupported for any other keyword,
    so that a schema it cannot judge exactly is left to jsonschema."""
    checks: list[Callable[[Any], bool]] = []
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS or keyword.startswith("x-"):
            continue
        if keyword == "type" and isinstance(value, str) and value in _TYPES:
            checks.append(_TYPES[value])
        elif keyword == "properties" and isinstance(value, Mapping):
            checks.append(_properties({name: compile_schema(sub) for name, sub in value.items()}))
        elif keyword == "required" and isinstance(value, list):
            checks.append(_required(tuple(value)))
        elif keyword == "items" and isinstance(value, Mapping):
            checks.append(_items(compile_schema(value)))
        else:
            raise Unsupported(keyword)
    return lambda instance: all(check(instance) for check in checks)


def _properties(properties: dict[str, Callable[[Any], bool]]) -> Callable[[Any], bool]:
    def check(instance: Any) -> bool:
        if not isinstance(instance, dict):
            return True
        return all(valid(instance[name]) for name, valid in properties.items() if name in instance)

    return check


def _required(names: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda instance: not isinstance(instance, dict) or all(name in instance for name in names)


def _items(valid: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda instance: not isinstance(instance, list) or all(map(valid, instance))


@functools.cache
def _crd_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(component_crd_schema())


@functools.cache
def _crd_valid() -> Callable[[Any], bool] | None:
    """The CRD's compiled check; None when the CRD uses a keyword it does not implement."""
    try:
        return compile_schema(component_crd_schema())
    except Unsupported:
        return None


def _check_crd_schema(manifest: Mapping[str, Any], result: ValidationResult) -> None:
    """jsonschema makes the messages, run only on a manifest the compiled check refuses: on a valid one it
    costs ~0.2 ms, most of a component write's validation."""
    valid = _crd_valid()
    if valid is not None and valid(manifest):
        return
    for error in _crd_validator().iter_errors(manifest):
        path = _path(error.absolute_path)
        if error.validator == "required":
            for missing in error.validator_value:
                if isinstance(error.instance, Mapping) and missing not in error.instance:
                    result.error(_join(path, missing), "is required")
        else:
            result.error(
                path or "(document)",
                schema_error_message(error, sensitive=_names_credential(manifest, error)),
            )


def _names_credential(manifest: Mapping[str, Any], error: jsonschema.ValidationError) -> bool:
    """The error concerns a `spec.metadata` item whose name says it holds a credential."""
    parts = list(error.absolute_path)
    if parts[:2] != ["spec", "metadata"] or len(parts) < 3 or not isinstance(parts[2], int):
        return False
    items = manifest["spec"]["metadata"]
    return isinstance(items[parts[2]], Mapping) and is_credential_name(items[parts[2]].get("name"))


def _check_name(manifest: Mapping[str, Any], result: ValidationResult) -> None:
    metadata = manifest.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    name_error = dns1123_label_error(name)
    if name_error:
        result.error("metadata.name", name_error)
    elif isinstance(name, str) and name.startswith(RESERVED_PREFIX):
        result.error(
            "metadata.name", f"must not start with {RESERVED_PREFIX!r}, which rrm reserves for itself"
        )


def _metadata_items(spec: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """The well-formed metadata items with their index; the CRD check reports the malformed ones."""
    items = spec.get("metadata")
    if not isinstance(items, list):
        return []
    return [
        (index, item)
        for index, item in enumerate(items)
        if isinstance(item, Mapping) and isinstance(item.get("name"), str)
    ]


def _check_items(items: list[tuple[int, Mapping[str, Any]]], result: ValidationResult) -> None:
    seen: dict[str, int] = {}
    for index, item in items:
        name = item["name"]
        if name.lower() in seen:
            result.error(
                f"spec.metadata[{index}].name",
                f"duplicate metadata name {name!r} (first at spec.metadata[{seen[name.lower()]}]); "
                "each name may appear once",
            )
        else:
            seen[name.lower()] = index
        sources = [key for key in ("value", "envRef", "secretKeyRef") if key in item]
        if len(sources) > 1:
            result.error(
                f"spec.metadata[{index}]", f"set only one of value, envRef, secretKeyRef (has {sources})"
            )


def _resolve_schema(spec: Mapping[str, Any], result: ValidationResult) -> ComponentSchema | None:
    component_type, version = spec.get("type"), spec.get("version")
    if not isinstance(component_type, str) or not component_type:
        return None
    versions = component_versions(component_type)
    if not versions:
        close = difflib.get_close_matches(component_type.lower(), known_component_types(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "no known type is close to it"
        result.error("spec.type", f"unknown component type {component_type!r}; {hint}")
        return None
    if not isinstance(version, str) or not version:
        return None
    schema = component_schema(component_type, version)
    if schema is None:
        result.error(
            "spec.version",
            f"unknown version {version!r} of {component_type!r}; known: {', '.join(versions)}",
        )
    return schema


def _check_fields(
    items: list[tuple[int, Mapping[str, Any]]], schema: ComponentSchema, result: ValidationResult
) -> None:
    present = {item["name"].lower() for _, item in items if _has_value(item)}
    for required in schema.required_fields:
        if required.name.lower() not in present:
            result.error("spec.metadata", f"required metadata {required.name!r} is missing or empty")
    for index, item in items:
        name = item["name"]
        path = f"spec.metadata[{index}]"
        declared = schema.field(name)
        if declared is None:
            result.warn(
                f"{path}.name", f"{name!r} is not a documented metadata field of {schema.component_type}"
            )
        if "value" not in item or item["value"] in (None, ""):
            continue
        value = item["value"]
        if _is_sensitive(schema, name):
            result.error(
                f"{path}.value",
                f"{name!r} is sensitive: it must be a secretKeyRef, not a plaintext value",
            )
            continue
        if declared is None:
            continue
        type_error = value_type_error(declared.type, value)
        if type_error:
            result.error(f"{path}.value", f"{name!r} {type_error}")
        elif declared.allowed_values and not _allowed(value, declared.allowed_values):
            result.error(
                f"{path}.value",
                f"{name!r} must be one of {', '.join(declared.allowed_values)}; got {value_text(value)!r}",
            )


def _check_secret_refs(
    items: list[tuple[int, Mapping[str, Any]]], secrets: Mapping[str, set[str]], result: ValidationResult
) -> None:
    for index, item in items:
        ref = item.get("secretKeyRef")
        if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str):
            continue
        secret_name = ref["name"]
        key = ref.get("key") or secret_name
        if secret_name not in secrets:
            result.error(
                f"spec.metadata[{index}].secretKeyRef.name", f"secret {secret_name!r} does not exist"
            )
        elif key not in secrets[secret_name]:
            path = f"spec.metadata[{index}].secretKeyRef.{'key' if ref.get('key') else 'name'}"
            result.error(path, f"secret {secret_name!r} has no key {key!r}")


def _has_value(item: Mapping[str, Any]) -> bool:
    if item.get("secretKeyRef") or item.get("envRef"):
        return True
    return item.get("value") not in (None, "")


def _allowed(value: object, allowed_values: tuple[str, ...]) -> bool:
    """Case-insensitive, as most components compare these values."""
    text = value_text(value).strip().lower()
    return any(text == allowed.lower() for allowed in allowed_values)


def _secret_key_error(key: object) -> str | None:
    if not isinstance(key, str) or not key:
        return "key must be a non-empty string"
    if len(key) > SECRET_KEY_MAX:
        return f"key must be at most {SECRET_KEY_MAX} characters"
    if not SECRET_KEY.fullmatch(key):
        return "key may contain only letters, digits, '-', '_' and '.'"
    if key in (".", "..") or key.startswith(".."):
        return "key must not be '.' or '..' or start with '..'"
    return None


def _decode_data_value(raw: object) -> str | None:
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _path(parts: Any) -> str:
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, str(part))
    return path


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
