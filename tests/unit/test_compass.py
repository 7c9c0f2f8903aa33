"""Compass in pure functions (scenarios, visibility, generated bindings) and its manifests' checks."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrm.core.render import render_desired_state
from rrm.core.resources import StoredComponent, secret_refs
from rrm.core.scenarios import (
    Application,
    Bundle,
    Credentials,
    beside,
    binding_manifest,
    binding_secret_data,
    connectivity,
    effective_scenarios,
    visible_applications,
)
from rrm.core.selectors import parse_selector
from rrm.dapr import validate_component
from rrm.server.compass.labels import label_problems, scenario_problems
from rrm.server.compass.manifests import parse_application, parse_assignment, parse_label_definition


def app(name: str, scenarios: set[str], revision: int = 1, bundles: tuple[Bundle, ...] = ()) -> Application:
    return Application(name, revision, frozenset(scenarios), bundles)


HEADER = Credentials("header", {"header": "X-Api-Key", "token": "t0k"})
BASIC = Credentials("basic", {"username": "svc", "password": "pw"})
OAUTH = Credentials(
    "oauth2", {"clientId": "id", "clientSecret": "cs", "tokenUrl": "https://idp.example.com/token"}
)


# scenarios and visibility -----------------------------------------------------------------------------


def test_effective_scenarios_add_the_assignments_whose_selector_matches() -> None:
    assignments = {"PROD": parse_selector("env=prod"), "EU": parse_selector("region in (eu)")}
    assert effective_scenarios(["X"], {"env": "prod", "region": "us"}, assignments) == {"X", "PROD"}
    assert effective_scenarios([], {"env": "dev"}, assignments) == frozenset()
    assert effective_scenarios([], {"env": "prod", "region": "eu"}, assignments) == {"PROD", "EU"}


@given(
    st.sets(st.sampled_from("ABCD")),
    st.lists(st.tuples(st.text("ab", min_size=1, max_size=3), st.sets(st.sampled_from("ABCD")))),
)
def test_a_runtime_sees_exactly_the_applications_sharing_a_scenario(
    scenarios: set[str], apps: list[tuple[str, set[str]]]
) -> None:
    applications = [app(f"{name}-{i}", s) for i, (name, s) in enumerate(apps)]
    seen = visible_applications(applications, frozenset(scenarios))
    assert [a.name for a in seen] == sorted(a.name for a in applications if a.scenarios & scenarios)


# generated bindings -----------------------------------------------------------------------------------


def items(manifest: dict[str, Any]) -> dict[str, Any]:
    return {i["name"]: i.get("value", i.get("secretKeyRef")) for i in manifest["spec"]["metadata"]}


@pytest.mark.parametrize(
    ("credentials", "expected_items", "secret"),
    [
        (
            HEADER,
            {"securityToken": {"name": "app-orders-api", "key": "token"}, "securityTokenHeader": "X-Api-Key"},
            {"token": "t0k"},
        ),
        (
            BASIC,
            {
                "securityToken": {"name": "app-orders-api", "key": "token"},
                "securityTokenHeader": "Authorization",
            },
            {"token": "Basic " + base64.b64encode(b"svc:pw").decode()},
        ),
        (
            OAUTH,
            {
                "oauth2ClientId": {"name": "app-orders-api", "key": "clientId"},
                "oauth2ClientSecret": {"name": "app-orders-api", "key": "clientSecret"},
                "oauth2TokenUrl": {"name": "app-orders-api", "key": "tokenUrl"},
            },
            {"clientId": "id", "clientSecret": "cs", "tokenUrl": "https://idp.example.com/token"},
        ),
        (Credentials(), {}, None),
    ],
    ids=["header", "basic", "oauth2", "none"],
)
def test_each_credential_type_becomes_a_binding_with_secret_key_refs(
    credentials: Credentials, expected_items: dict[str, Any], secret: dict[str, str] | None
) -> None:
    bundle = Bundle("api", "https://orders.example.com/v1", credentials)
    manifest = binding_manifest(app("orders", {"S"}), bundle)
    assert manifest["metadata"]["name"] == "app-orders-api"
    assert manifest["spec"]["type"] == "bindings.http"
    assert items(manifest) == {"url": "https://orders.example.com/v1", **expected_items}
    assert binding_secret_data(credentials) == secret
    assert not validate_component(manifest, secrets={"app-orders-api": set(secret or {})}).errors
    for key in ("token", "password", "clientSecret"):
        if key in credentials.values:
            assert credentials.values[key] not in str(manifest), f"{key} in the binding"


def test_connectivity_carries_the_application_revision_and_keys_the_render() -> None:
    orders = app("orders", {"S"}, revision=3, bundles=(Bundle("api", "https://o.example.com", HEADER),))
    plain = app("plain", {"S"}, revision=1, bundles=(Bundle("api", "https://p.example.com"),))
    connected = connectivity([orders, plain])
    assert connected.key == (("orders", 3), ("plain", 1))
    assert [(c.name, c.revision) for c in connected.components] == [
        ("app-orders-api", 3),
        ("app-plain-api", 1),
    ]
    assert set(connected.secrets) == {"app-orders-api"} and connected.secrets["app-orders-api"].revision == 3
    state = render_desired_state(list(connected.components), connected.secrets)
    assert [s.name for s in state.secrets] == ["app-orders-api"]
    assert secret_refs(state.components[0]) == {"app-orders-api": {"token"}}
    assert state.components[0]["metadata"]["annotations"]["rrm.io/revision"] == "3"
    rotated = connectivity([app("orders", {"S"}, revision=4, bundles=orders.bundles), plain])
    assert render_desired_state(list(rotated.components), rotated.secrets).hash != state.hash


def test_a_placed_component_wins_over_a_generated_one_of_the_same_name() -> None:
    placed = [StoredComponent("app-orders-api", 7, {"spec": {"type": "state.redis"}})]
    generated = connectivity(
        [app("orders", {"S"}, bundles=(Bundle("api", "https://o.example.com"),))]
    ).components
    assert beside(placed, generated) == placed
    assert [c.name for c in beside([], generated)] == ["app-orders-api"]


# manifests --------------------------------------------------------------------------------------------


def application_doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "baseUrl": "https://orders.example.com",
        "apis": [
            {
                "name": "v1",
                "targetUrl": "https://orders.example.com/v1",
                "spec": {"type": "OpenAPI", "url": "https://orders.example.com/openapi.json"},
            }
        ],
        "events": [{"name": "created", "spec": {"type": "AsyncAPI", "inline": "asyncapi: 2.6.0\n"}}],
        "bundles": [
            {
                "name": "api",
                "apis": ["v1"],
                "events": ["created"],
                "credentials": {"type": "header", "token": "t"},
            }
        ],
    }
    base.update(spec)
    return {"apiVersion": "rrm.io/v1", "kind": "Application", "metadata": {"name": "orders"}, "spec": base}


def fields(document: dict[str, Any]) -> list[str]:
    return [f for f, _ in parse_application(document).problems]


def test_a_valid_application_splits_into_a_public_manifest_and_credentials() -> None:
    parsed = parse_application(application_doc())
    assert parsed.problems == []
    assert parsed.scenarios == ["DEFAULT"]
    assert parsed.credentials == {"api": {"type": "header", "token": "t"}}
    assert parsed.manifest["spec"]["bundles"][0]["credentials"] == {"type": "header"}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"baseUrl": "ftp://x"}, "spec.baseUrl"),
        ({"bundles": [{"name": "Api"}]}, "spec.bundles[0].name"),
        ({"bundles": [{"name": "b" * 60}]}, "spec.bundles[0].name"),
        ({"bundles": [{"name": "api", "apis": ["v2"]}]}, "spec.bundles[0].apis[0]"),
        (
            {"bundles": [{"name": "api", "credentials": {"type": "basic", "username": "u"}}]},
            "spec.bundles[0].credentials.password",
        ),
        (
            {"bundles": [{"name": "api", "credentials": {"type": "none", "token": "x"}}]},
            "spec.bundles[0].credentials.token",
        ),
        (
            {"bundles": [{"name": "api", "credentials": {"type": "kerberos"}}]},
            "spec.bundles[0].credentials.type",
        ),
        ({"bundles": [{"name": "api"}, {"name": "api"}]}, "spec.bundles[1].name"),
        (
            {"apis": [{"name": "v1", "spec": {"type": "OpenAPI", "inline": {"swagger_like": 1}}}]},
            "spec.apis[0].spec.inline",
        ),
        (
            {
                "apis": [
                    {
                        "name": "v1",
                        "spec": {
                            "type": "OpenAPI",
                            "inline": {"openapi": "3"},
                            "url": "https://x.example.com",
                        },
                    }
                ]
            },
            "spec.apis[0].spec",
        ),
        (
            {"events": [{"name": "e", "spec": {"type": "OpenAPI", "url": "https://x.example.com"}}]},
            "spec.events[0].spec.type",
        ),
        ({"baseUrl": None}, "spec.baseUrl"),
        ({"targetURL": "https://x.example.com"}, "spec.targetURL"),
    ],
)
def test_application_problems_name_the_field(spec: dict[str, Any], field: str) -> None:
    assert field in fields(application_doc(**spec))


def test_a_bundle_needs_a_url_for_its_binding() -> None:
    document = application_doc(apis=[], bundles=[{"name": "api"}])
    del document["spec"]["baseUrl"]
    assert "spec.bundles[0]" in fields(document)


def test_labels_and_scenarios_are_checked_against_their_definitions() -> None:
    definitions = {"region": {"type": "string", "enum": ["eu", "us"]}}
    assert label_problems({"region": "eu", "free": "x"}, definitions) == []
    assert [f for f, _ in label_problems({"region": "mars"}, definitions)] == ["labels.region"]
    problems = scenario_problems("spec.scenarios", ["DEFAULT", "NOPE"], ["DEFAULT"])
    assert [f for f, _ in problems] == ["spec.scenarios[1]"] and "rrm create scenario NOPE" in problems[0][1]
    assert scenario_problems("s", ["DEFAULT", "DEFAULT"], ["DEFAULT"]), "duplicates pass"


def test_label_definitions_and_assignments_are_checked() -> None:
    def definition(name: str, schema: Any) -> dict[str, Any]:
        return {
            "apiVersion": "rrm.io/v1",
            "kind": "LabelDefinition",
            "metadata": {"name": name},
            "spec": {"schema": schema},
        }

    assert parse_label_definition(definition("example.com/tier", {"type": "string"})).problems == []
    assert [f for f, _ in parse_label_definition(definition("scenarios", {"type": "array"})).problems] == [
        "metadata.name"
    ]
    assert [f for f, _ in parse_label_definition(definition("bad key!", {})).problems] == ["metadata.name"]
    assert parse_label_definition(definition("ok", {"type": "nope"})).problems[0][0].startswith("spec.schema")
    assignment = {
        "apiVersion": "rrm.io/v1",
        "kind": "ScenarioAssignment",
        "metadata": {"name": "PROD"},
        "spec": {"selector": "env in (prod"},
    }
    assert [f for f, _ in parse_assignment(assignment).problems] == ["spec.selector"]
