"""The Compass and broker commands against a recorded fake of the admin API."""

from __future__ import annotations

import json

import pytest
import yaml
from test_cli_commands import FakeApi, run

APPLICATION = {
    "name": "orders",
    "uid": "u-1",
    "revision": 2,
    "description": "Orders",
    "provider": "ACME",
    "base_url": "https://orders.example.com",
    "labels": {"team": "shop"},
    "scenarios": ["DEFAULT"],
    "apis": [
        {
            "name": "v1",
            "description": "",
            "target_url": "https://orders.example.com/v1",
            "spec": {"type": "OpenAPI", "url": "https://orders.example.com/openapi.json"},
        }
    ],
    "events": [],
    "bundles": [
        {
            "name": "public",
            "description": "",
            "apis": ["v1"],
            "events": [],
            "url": "https://orders.example.com/v1",
            "credentials": {"type": "header"},
            "binding": "app-orders-public",
        }
    ],
    "updated_at": None,
    "runtimes": ["edge-1"],
}


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def test_get_and_describe_applications(api: FakeApi) -> None:
    api.on("GET", "/api/v1/applications", body=[APPLICATION])
    api.on("GET", "/api/v1/applications/orders", body=APPLICATION)
    listed = run(api, "get", "applications", "--runtime", "edge-1")
    assert listed.exit_code == 0, listed.output
    assert api.requests[0].url.params["runtime"] == "edge-1"
    assert "orders" in listed.stdout and "ACME" in listed.stdout and "public" in listed.stdout
    described = run(api, "describe", "application", "orders")
    assert described.exit_code == 0, described.output
    for text in ("app-orders-public", "https://orders.example.com/v1", "header", "edge-1", "OpenAPI"):
        assert text in described.stdout
    assert json.loads(run(api, "get", "applications", "-o", "json").stdout) == [APPLICATION]


def test_scenario_commands(api: FakeApi) -> None:
    api.on("POST", "/api/v1/scenarios", 201, {"name": "PROD"})
    api.on("PUT", "/api/v1/scenarios/PROD/assignment", body={"scenario": "PROD", "selector": "env=prod"})
    api.on(
        "PATCH",
        "/api/v1/runtimes/edge-1/scenarios",
        body={"runtime": "edge-1", "explicit": ["PROD"], "effective": ["PROD"]},
    )
    api.on("DELETE", "/api/v1/scenarios/PROD", 409, {"detail": "scenario 'PROD' is in use by runtime edge-1"})
    assert run(api, "create", "scenario", "PROD").exit_code == 0
    assert api.body() == {"name": "PROD"}
    assigned = run(api, "scenario", "assign", "PROD", "--selector", "env=prod")
    assert assigned.exit_code == 0 and api.body() == {"selector": "env=prod"}
    put = run(api, "scenario", "assign", "PROD", "--runtime", "edge-1")
    assert put.exit_code == 0 and api.body() == {"add": ["PROD"], "remove": []}
    removed = run(api, "scenario", "unassign", "PROD", "--runtime", "edge-1")
    assert removed.exit_code == 0 and api.body() == {"add": [], "remove": ["PROD"]}
    both = run(api, "scenario", "assign", "PROD", "--selector", "a=b", "--runtime", "edge-1")
    assert both.exit_code == 2
    refused = run(api, "delete", "scenario", "PROD")
    assert refused.exit_code == 1 and "in use by runtime edge-1" in refused.output


def test_broker_credentials_are_printed_once_and_rotation_is_explicit(api: FakeApi) -> None:
    answer = {"username": "edge-1", "password": "rrmbp_x", "broker_url": "http://cp/broker"}
    api.on("POST", "/api/v1/runtimes/edge-1/broker-credentials", 201, answer)
    result = run(api, "runtime", "broker-credentials", "edge-1", "--rotate")
    assert result.exit_code == 0, result.output
    assert api.body() == {"rotate": True}
    assert "rrmbp_x" in result.stdout and "http://cp/broker" in result.stdout
    as_json = run(api, "runtime", "broker-credentials", "edge-1", "-o", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == answer
    as_yaml = run(api, "runtime", "broker-credentials", "edge-1", "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout) == answer
