"""Validation of Dapr resources against Dapr's own schemas (rrm.dapr)."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrm.dapr import (
    FieldError,
    ValidationResult,
    component_crd_schema,
    is_sensitive_field,
    known_component_types,
    validate_component,
    validate_secret,
)
from rrm.dapr.catalog import MetadataField, component_schema, component_versions


def component(
    metadata: list[dict[str, Any]],
    *,
    type_: str = "bindings.http",
    version: str | None = "v1",
    name: str = "web",
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type_, "metadata": metadata}
    if version is not None:
        spec["version"] = version
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": spec,
        **extra,
    }


def http_binding(*extra_metadata: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return component([{"name": "url", "value": "http://orders:8000/api"}, *extra_metadata], **kwargs)


def error_fields(result: ValidationResult) -> list[str]:
    return [e.field for e in result.errors]


def only_error(result: ValidationResult) -> FieldError:
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


def test_valid_http_binding_with_token_from_secret_passes() -> None:
    manifest = http_binding({"name": "securityToken", "secretKeyRef": {"name": "orders", "key": "token"}})

    result = validate_component(manifest, secrets={"orders": {"token"}})

    assert result.ok
    assert result.errors == [] and result.warnings == []


def test_wrong_api_version_and_kind_are_errors() -> None:
    manifest = http_binding(apiVersion="dapr.io/v1", kind="Secret")

    assert error_fields(validate_component(manifest)) == ["apiVersion", "kind"]


def test_missing_spec_version_names_the_field() -> None:
    error = only_error(validate_component(http_binding(version=None)))

    assert error.field == "spec.version"


def test_unknown_type_suggests_close_matches() -> None:
    error = only_error(validate_component(http_binding(type_="bindings.htp")))

    assert error.field == "spec.type"
    assert "bindings.http" in error.message


def test_unknown_version_lists_the_known_ones() -> None:
    error = only_error(validate_component(http_binding(version="v9")))

    assert error.field == "spec.version"
    assert "v1" in error.message


def test_missing_required_field_is_an_error() -> None:
    error = only_error(validate_component(component([{"name": "responseTimeout", "value": "5s"}])))

    assert error.field == "spec.metadata"
    assert "'url'" in error.message


def test_required_field_given_by_env_ref_counts_as_present() -> None:
    assert validate_component(component([{"name": "url", "envRef": "ORDERS_URL"}])).ok


@pytest.mark.parametrize(
    ("type_", "field", "bad", "good"),
    [
        ("bindings.http", "maxResponseBodySize", "lots", "100Mi"),
        ("state.redis", "enableTLS", "yes please", False),
        ("state.redis", "redisDB", "zero", "3"),
        ("state.redis", "redisDB", True, 3),
        ("state.redis", "dialTimeout", "10 seconds", "1m30s"),
        ("state.redis", "dialTimeout", 1.5, 5),
    ],
)
def test_value_of_the_wrong_type_is_an_error(type_: str, field: str, bad: Any, good: Any) -> None:
    required = [{"name": "url", "value": "http://x"}] if type_ == "bindings.http" else []
    required += [{"name": "redisHost", "value": "localhost:6379"}] if type_ == "state.redis" else []

    bad_result = validate_component(component([*required, {"name": field, "value": bad}], type_=type_))
    good_result = validate_component(component([*required, {"name": field, "value": good}], type_=type_))

    error = only_error(bad_result)
    assert error.field == f"spec.metadata[{len(required)}].value"
    assert field in error.message
    assert good_result.ok, good_result.errors


@pytest.mark.parametrize(
    ("value", "ok"), [("RenegotiateNever", True), ("renegotiatenever", True), ("Often", False)]
)
def test_value_outside_allowed_values_is_an_error(value: str, ok: bool) -> None:
    result = validate_component(http_binding({"name": "MTLSRenegotiation", "value": value}))

    assert result.ok is ok
    if not ok:
        error = only_error(result)
        assert error.field == "spec.metadata[1].value"
        assert "RenegotiateOnceAsClient" in error.message


def test_plaintext_security_token_must_be_a_secret_ref() -> None:
    error = only_error(validate_component(http_binding({"name": "securityToken", "value": "s3cret"})))

    assert error.field == "spec.metadata[1].value"
    assert "secretKeyRef" in error.message


def test_plaintext_redis_password_must_be_a_secret_ref() -> None:
    manifest = component(
        [{"name": "redisHost", "value": "localhost:6379"}, {"name": "redisPassword", "value": "hunter2"}],
        type_="state.redis",
    )

    error = only_error(validate_component(manifest))

    assert error.field == "spec.metadata[1].value"
    assert "secretKeyRef" in error.message


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"name": "missing", "key": "token"}, "spec.metadata[1].secretKeyRef.name"),
        ({"name": "orders", "key": "nope"}, "spec.metadata[1].secretKeyRef.key"),
        ({"name": "orders"}, "spec.metadata[1].secretKeyRef.name"),  # key defaults to the secret's name
    ],
)
def test_secret_ref_to_missing_secret_or_key_is_an_error(ref: dict[str, str], field: str) -> None:
    manifest = http_binding({"name": "securityToken", "secretKeyRef": ref})

    error = only_error(validate_component(manifest, secrets={"orders": {"token"}}))

    assert error.field == field


def test_secret_refs_into_the_components_own_store_are_not_checked() -> None:
    manifest = http_binding(
        {"name": "securityToken", "secretKeyRef": {"name": "missing"}}, auth={"secretStore": "vault"}
    )

    assert validate_component(manifest, secrets={}).ok


@pytest.mark.parametrize("name", ["Orders", "orders_api", "-orders", "a" * 64, ""])
def test_name_must_be_a_dns1123_label(name: str) -> None:
    error = only_error(validate_component(http_binding(name=name)))

    assert error.field == "metadata.name"


def test_reserved_name_prefix_is_an_error() -> None:
    error = only_error(validate_component(http_binding(name="rrm-secrets")))

    assert error.field == "metadata.name"
    assert "rrm-" in error.message


def test_duplicate_metadata_name_is_an_error() -> None:
    manifest = http_binding(
        {"name": "responseTimeout", "value": "5s"}, {"name": "responseTimeout", "value": "9s"}
    )

    error = only_error(validate_component(manifest))

    assert error.field == "spec.metadata[2].name"


def test_crd_schema_violation_names_the_item() -> None:
    manifest = http_binding({"value": "no name"})

    assert error_fields(validate_component(manifest)) == ["spec.metadata[1].name"]


def test_crd_requires_spec_metadata_list() -> None:
    manifest = component([], type_="pubsub.in-memory")
    del manifest["spec"]["metadata"]

    assert error_fields(validate_component(manifest)) == ["spec.metadata"]


def test_component_without_spec_is_an_error() -> None:
    manifest = http_binding()
    del manifest["spec"]

    assert error_fields(validate_component(manifest)) == ["spec"]


def test_unknown_metadata_is_a_warning_only() -> None:
    result = validate_component(http_binding({"name": "colour", "value": "blue"}))

    assert result.ok
    assert [w.field for w in result.warnings] == ["spec.metadata[1].name"]


def test_builtin_fields_are_accepted() -> None:
    binding = validate_component(http_binding({"name": "direction", "value": "output"}))
    pubsub = validate_component(
        component([{"name": "consumerID", "value": "{namespace}"}], type_="pubsub.in-memory")
    )
    state = component(
        [{"name": "redisHost", "value": "h:6379"}, {"name": "actorStateStore", "value": "true"}],
        type_="state.redis",
    )

    assert binding.ok and binding.warnings == []
    assert pubsub.ok and pubsub.warnings == []
    assert validate_component(state).warnings == []


def test_authentication_profile_fields_are_known_but_not_required() -> None:
    manifest = component(
        [
            {"name": "redisHost", "value": "h:6379"},
            {"name": "useEntraID", "value": "true"},
            {"name": "azureClientId", "value": "c7dd251f"},
            {"name": "azureEnvironment", "value": "AzureMoonCloud"},
        ],
        type_="state.redis",
    )

    result = validate_component(manifest)

    assert result.warnings == []
    assert error_fields(result) == ["spec.metadata[3].value"]


def test_types_whose_folder_differs_from_their_name_use_the_name() -> None:
    types = set(known_component_types())

    assert {"secretstores.local.file", "bindings.azure.servicebus.queues", "middleware.http.oauth2"} <= types
    assert "state.postgresql" in types and component_versions("state.postgresql") == ["v1", "v2"]


@pytest.mark.parametrize(
    ("type_", "field", "sensitive"),
    [
        ("bindings.http", "securityToken", True),
        ("bindings.http", "securityTokenHeader", False),
        ("state.redis", "redisPassword", True),
        ("state.redis", "keyPrefix", False),
        ("state.redis", "azureClientSecret", True),
        ("bindings.aws.s3", "secretKey", True),
        ("bindings.unknown", "connectionString", True),
        ("bindings.unknown", "tokenEndpoint", False),
        ("bindings.unknown", "passwordPolicy", False),
        ("secretstores.aws.secretsmanager", "multipleKeyValuesPerSecret", False),
    ],
)
def test_is_sensitive_field(type_: str, field: str, sensitive: bool) -> None:
    assert is_sensitive_field(type_, "v1", field) is sensitive


def test_crd_schema_is_the_component_openapi_schema() -> None:
    schema = component_crd_schema()

    assert schema["properties"]["spec"]["required"] == ["metadata", "type", "version"]


def test_every_known_type_has_a_version() -> None:
    types = known_component_types()

    assert len(types) > 100
    assert all(component_versions(t) for t in types)


def test_catalog_is_cached() -> None:
    known_component_types()
    started = time.perf_counter()
    for _ in range(100):
        component_schema("bindings.http", "v1")
    assert time.perf_counter() - started < 0.1


def _valid_value(field: MetadataField) -> st.SearchStrategy[Any]:
    if field.allowed_values:
        return st.sampled_from(field.allowed_values)
    integer = st.integers(min_value=-(10**6), max_value=10**6)
    if field.type == "number":
        return integer | integer.map(str) | st.floats(allow_nan=False, allow_infinity=False)
    if field.type == "bool":
        return st.booleans() | st.sampled_from(["true", "false", "True", "FALSE"])
    if field.type == "duration":
        parts = st.tuples(st.integers(0, 999), st.sampled_from(["ns", "us", "ms", "s", "m", "h"]))
        joined = st.lists(parts, min_size=1, max_size=3).map(lambda ps: "".join(f"{n}{u}" for n, u in ps))
        return joined | st.integers(0, 10**6)
    if field.type == "bytesize":
        suffix = st.sampled_from(["", "k", "M", "G", "Ki", "Mi", "Gi"])
        return st.builds(lambda n, s: f"{n}{s}", st.integers(0, 10**6), suffix)
    return st.text(min_size=1, max_size=20).filter(str.strip)


@st.composite
def minimal_components(draw: st.DrawFn) -> dict[str, Any]:
    component_type = draw(st.sampled_from(known_component_types()))
    version = draw(st.sampled_from(component_versions(component_type)))
    schema = component_schema(component_type, version)
    assert schema is not None
    metadata: list[dict[str, Any]] = []
    for field in schema.required_fields:
        if is_sensitive_field(component_type, version, field.name):
            metadata.append({"name": field.name, "secretKeyRef": {"name": "creds", "key": field.name}})
        else:
            metadata.append({"name": field.name, "value": draw(_valid_value(field))})
    return component(metadata, type_=component_type, version=version, name="c1")


@settings(max_examples=300, deadline=None)
@given(minimal_components())
def test_minimal_component_of_every_type_validates(manifest: dict[str, Any]) -> None:
    result = validate_component(manifest)

    assert result.errors == []
    assert result.warnings == []


def secret(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "orders"}, **fields}


def test_secret_decodes_data_and_string_data_wins() -> None:
    encoded = base64.b64encode(b"from-data").decode()

    result, values = validate_secret(
        secret(type="Opaque", data={"token": encoded, "user": encoded}, stringData={"token": "plain"})
    )

    assert result.ok
    assert values == {"token": "plain", "user": "from-data"}


def test_secret_with_bad_base64_names_the_key() -> None:
    result, _ = validate_secret(secret(data={"token": "not base64!"}))

    assert error_fields(result) == ["data.token"]


def test_secret_data_must_decode_to_utf8() -> None:
    result, _ = validate_secret(secret(data={"blob": base64.b64encode(b"\xff\xfe").decode()}))

    assert error_fields(result) == ["data.blob"]


@pytest.mark.parametrize("key", ["a/b", "with space", "..hidden", ".", "k" * 254, "trailing\n"])
def test_secret_key_must_be_a_kubernetes_key(key: str) -> None:
    result, values = validate_secret(secret(stringData={key: "v", "ok.key-1_x": "w"}))

    assert error_fields(result) == [f"stringData.{key}"]
    assert values == {"ok.key-1_x": "w"}


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        (secret(), "data"),
        (secret(stringData={}), "data"),
        (secret(type="kubernetes.io/tls", stringData={"a": "b"}), "type"),
        (secret(apiVersion="v2", stringData={"a": "b"}), "apiVersion"),
        (secret(kind="ConfigMap", stringData={"a": "b"}), "kind"),
        (secret(metadata={"name": "Bad_Name"}, stringData={"a": "b"}), "metadata.name"),
        (secret(stringData={"a": 1}), "stringData.a"),
    ],
)
def test_secret_errors_name_the_field(manifest: dict[str, Any], field: str) -> None:
    result, _ = validate_secret(manifest)

    assert error_fields(result) == [field]


# the compiled CRD check: it decides alone whether jsonschema runs, so it must agree with jsonschema

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=3))
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["name", "value", "key", "x"]), inner)
    ),
    max_leaves=8,
)
_ITEM = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=3), _JSON),
        "value": _JSON,
        "envRef": st.one_of(st.text(max_size=3), _JSON),
        "secretKeyRef": st.one_of(st.fixed_dictionaries({}, optional={"name": _JSON, "key": _JSON}), _JSON),
    },
)
_SPEC = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.just("bindings.http"), _JSON),
        "version": st.one_of(st.just("v1"), _JSON),
        "metadata": st.one_of(st.lists(st.one_of(_ITEM, _JSON), max_size=4), _JSON),
        "ignoreErrors": _JSON,
        "initTimeout": _JSON,
    },
)
_MANIFEST = st.one_of(
    _JSON,
    st.fixed_dictionaries(
        {},
        optional={
            "apiVersion": st.one_of(st.just("dapr.io/v1alpha1"), _JSON),
            "kind": st.one_of(st.just("Component"), _JSON),
            "metadata": st.one_of(st.just({"name": "web"}), _JSON),
            "spec": st.one_of(_SPEC, _JSON),
            "auth": st.one_of(st.fixed_dictionaries({}, optional={"secretStore": _JSON}), _JSON),
            "scopes": st.one_of(st.lists(st.one_of(st.text(max_size=3), _JSON), max_size=3), _JSON),
        },
    ),
)


@settings(max_examples=400, deadline=None)
@given(_MANIFEST)
def test_compiled_crd_check_agrees_with_jsonschema(manifest: Any) -> None:
    import jsonschema

    from rrm.dapr.validation import compile_schema

    schema = component_crd_schema()

    assert compile_schema(schema)(manifest) == jsonschema.Draft7Validator(schema).is_valid(manifest)


def test_a_schema_keyword_the_compiled_check_lacks_is_left_to_jsonschema() -> None:
    from rrm.dapr.validation import Unsupported, compile_schema

    with pytest.raises(Unsupported, match="minLength"):
        compile_schema({"type": "object", "properties": {"name": {"type": "string", "minLength": 1}}})


def test_the_crd_errors_still_name_the_field() -> None:
    manifest = component([{"name": "url", "value": "https://x"}, {"name": 3, "value": "y"}])
    manifest["spec"]["ignoreErrors"] = "yes"

    result = validate_component(manifest)

    assert {"spec.ignoreErrors", "spec.metadata[1].name"} <= set(error_fields(result))
