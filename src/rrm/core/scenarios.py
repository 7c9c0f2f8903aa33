"""Compass in pure functions: which scenarios a runtime is in, which applications it can see, and the Dapr
bindings (with their secrets) that connect it to them.

A runtime is in the scenarios it was put in explicitly plus those whose automatic assignment selector
matches its labels. It sees every application that shares one of them. For every bundle of every
application it sees, its desired state gains an output binding `bindings.http` named
`app-<application>-<bundle>` that calls the bundle's API, and a secret of the same name with the bundle's
credentials, referenced through `secretKeyRef` like any other rrm secret.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rrm.core.render import SecretValue
from rrm.core.resources import MANAGED_BY_LABEL, MANAGED_BY_VALUE, StoredComponent
from rrm.core.selectors import Selector

RRM_API_VERSION = "rrm.io/v1"
KINDS = ("Application", "LabelDefinition", "ScenarioAssignment")  # the rrm.io/v1 kinds of Compass
DEFAULT_SCENARIO = "DEFAULT"
BINDING_PREFIX = "app-"
APPLICATION_LABEL = "rrm.io/application"
BUNDLE_LABEL = "rrm.io/bundle"

# Credential types of a bundle and the fields each one carries.
CREDENTIAL_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "basic": ("username", "password"),
    "oauth2": ("clientId", "clientSecret", "tokenUrl"),
    "header": ("header", "token"),
}
DEFAULT_TOKEN_HEADER = "Authorization"


@dataclass(frozen=True)
class Credentials:
    """A bundle's default credentials: `type` is a key of CREDENTIAL_FIELDS, `values` its fields."""

    type: str = "none"
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Bundle:
    name: str
    url: str  # the target URL the binding calls
    credentials: Credentials = Credentials()


@dataclass(frozen=True)
class Application:
    """What the desired state and the brokers need of an application; `revision` changes with any edit."""

    name: str
    revision: int
    scenarios: frozenset[str]
    bundles: tuple[Bundle, ...] = ()


def effective_scenarios(
    explicit: Iterable[str], labels: Mapping[str, str], assignments: Mapping[str, Selector]
) -> frozenset[str]:
    """The runtime's own scenarios plus those whose assignment selector matches its labels."""
    automatic = {scenario for scenario, selector in assignments.items() if selector.matches(labels)}
    return frozenset(explicit) | automatic


def visible_applications(applications: Iterable[Application], scenarios: frozenset[str]) -> list[Application]:
    """The applications sharing at least one scenario with the runtime, by name."""
    return sorted((a for a in applications if a.scenarios & scenarios), key=lambda a: a.name)


def binding_name(application: str, bundle: str) -> str:
    return f"{BINDING_PREFIX}{application}-{bundle}"


def binding_secret_data(credentials: Credentials) -> dict[str, str] | None:
    """What the generated secret holds; None when the bundle needs no credentials (and gets no secret).

    `token` is the exact value of the header bindings.http sends. OAuth2 cannot be expressed that way
    (bindings.http does not fetch tokens), so its secret carries the client credentials as they are.
    """
    values = credentials.values
    if credentials.type == "header":
        return {"token": values["token"]}
    if credentials.type == "basic":
        pair = f"{values['username']}:{values['password']}".encode()
        return {"token": "Basic " + base64.b64encode(pair).decode()}
    if credentials.type == "oauth2":
        return {key: values[key] for key in CREDENTIAL_FIELDS["oauth2"]}
    return None


def binding_manifest(application: Application, bundle: Bundle) -> dict[str, Any]:
    """The `bindings.http` Component for one bundle; credentials only through `secretKeyRef`s."""
    name = binding_name(application.name, bundle.name)
    items: list[dict[str, Any]] = [{"name": "url", "value": bundle.url}]
    credentials = bundle.credentials
    if credentials.type in ("header", "basic"):
        header = (
            credentials.values.get("header") or DEFAULT_TOKEN_HEADER
            if credentials.type == "header"
            else "Authorization"
        )
        items.append({"name": "securityToken", "secretKeyRef": {"name": name, "key": "token"}})
        items.append({"name": "securityTokenHeader", "value": header})
    elif credentials.type == "oauth2":
        # bindings.http ignores these; they make the client credentials reach the runtime's secret store.
        for key in CREDENTIAL_FIELDS["oauth2"]:
            items.append(
                {"name": f"oauth2{key[0].upper()}{key[1:]}", "secretKeyRef": {"name": name, "key": key}}
            )
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": name,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY_VALUE,
                APPLICATION_LABEL: application.name,
                BUNDLE_LABEL: bundle.name,
            },
        },
        "spec": {"type": "bindings.http", "version": "v1", "metadata": items},
    }


@dataclass(frozen=True)
class Connectivity:
    """The generated bindings and secrets of one runtime; `key` identifies them for memoization."""

    key: tuple[tuple[str, int], ...] = ()
    components: tuple[StoredComponent, ...] = ()
    secrets: Mapping[str, SecretValue] = field(default_factory=dict)


def connectivity(applications: Sequence[Application]) -> Connectivity:
    """Bindings and secrets for the applications a runtime sees; both carry the application's revision."""
    components: list[StoredComponent] = []
    secrets: dict[str, SecretValue] = {}
    for application in applications:
        for bundle in application.bundles:
            name = binding_name(application.name, bundle.name)
            components.append(
                StoredComponent(name, application.revision, binding_manifest(application, bundle))
            )
            data = binding_secret_data(bundle.credentials)
            if data is not None:
                secrets[name] = SecretValue(name, application.revision, data)
    return Connectivity(
        key=tuple((a.name, a.revision) for a in applications),
        components=tuple(components),
        secrets=secrets,
    )


def beside(placed: Sequence[StoredComponent], generated: Iterable[StoredComponent]) -> list[StoredComponent]:
    """The placed components plus the generated ones whose names are free (a placed one always wins)."""
    taken = {c.name for c in placed}
    return [*placed, *(c for c in generated if c.name not in taken)]
