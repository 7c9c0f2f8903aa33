"""Both brokers against the OSB OpenAPI description (the copy shipped in the package) with schemathesis:
every operation, schema-valid and schema-violating requests, every response checked against the spec's
status codes, bodies and content types.

Two checks are left out, on purpose:
- `positive_data_acceptance`: the spec answers schema-valid requests with errors that depend on state or
  on rules the schema does not state (unknown instance 404/410/422, conflicting re-provision 409,
  AsyncRequired 422, non-empty organization_guid 400), so schema validity alone does not mean 2xx.
- `ignored_auth` for schema-violating requests only: the test puts valid credentials on every request,
  which replaces the invalid ones schemathesis generated there; authentication is tested in
  test_broker.py, and the check runs on every schema-valid request.
"""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from rrm.server.broker.catalog_file import OPENAPI

from .compass import StaticBrokerProcess, application, create_scenario, offering, put_in_scenarios
from .harness import ServerProcess, apply, expect_status, pair, register
from .test_broker import report_applied

pytestmark = pytest.mark.integration

SCHEMA = schemathesis.openapi.from_path(OPENAPI)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
EXAMPLES = 12
POOL = 3  # schema-valid requests reuse a few instance and binding ids, so they meet existing records


@dataclass
class Target:
    url: str
    username: str
    password: str
    service_id: str
    plan_id: str


@pytest.fixture(scope="module")
def system_broker(server: ServerProcess) -> Target:
    scenario, app, name = (
        f"SC-{uuid.uuid4().hex[:8]}",
        f"fuzz-{uuid.uuid4().hex[:8]}",
        f"fz-{uuid.uuid4().hex[:8]}",
    )
    create_scenario(server.admin, scenario)
    apply(server.admin, [application(app, scenarios=[scenario])])
    identity = pair(server.url, register(server.admin, name))
    put_in_scenarios(server.admin, name, add=[scenario])
    report_applied(identity, f"app-{app}-main")
    creds = expect_status(
        server.admin.post(f"/api/v1/runtimes/{name}/broker-credentials", json={}), 201
    ).json()
    with httpx.Client(
        base_url=creds["broker_url"],
        auth=(creds["username"], creds["password"]),
        headers={"X-Broker-API-Version": "2.17"},
        timeout=30,
    ) as broker:
        service = offering(broker, app)
    return Target(
        creds["broker_url"], creds["username"], creds["password"], service["id"], service["plans"][0]["id"]
    )


STATIC_SERVICE = "5b0f1d8e-4c3a-4f57-9a51-0d6f4a1c2e01"
STATIC_PLAN = "9c2e7b44-1f0d-4d6a-8e3b-7a5c9d0e1f02"


@pytest.fixture(scope="module")
def static_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    directory = tmp_path_factory.mktemp("static-broker")
    catalog = {
        "services": [
            {
                "id": STATIC_SERVICE,
                "name": "logging",
                "description": "central logging",
                "bindable": True,
                "instances_retrievable": True,
                "bindings_retrievable": True,
                "plans": [{"id": STATIC_PLAN, "name": "standard", "description": "shared ingestion"}],
            }
        ],
        "credentials": {STATIC_PLAN: {"url": "https://logs.example.com", "token": "static-token"}},
    }
    (directory / "catalog.json").write_text(json.dumps(catalog))
    process = StaticBrokerProcess(
        directory / "catalog.json", directory / "broker.log", "platform", "secret-pw"
    )
    process.start()
    try:
        yield Target(process.url, "platform", "secret-pw", STATIC_SERVICE, STATIC_PLAN)
    finally:
        process.stop()


def _pooled(value: object, prefix: str) -> str:
    return f"{prefix}-{zlib.crc32(str(value).encode()) % POOL}"


def fuzz(target: Target, operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode) -> None:
    authorization = "Basic " + base64.b64encode(f"{target.username}:{target.password}".encode()).decode()
    positive = mode is schemathesis.GenerationMode.POSITIVE
    excluded = [schemathesis.checks.positive_data_acceptance]
    if not positive:
        excluded.append(schemathesis.checks.ignored_auth)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = {**headers, "Authorization": authorization, "X-Broker-API-Version": "2.17"}
        if positive:
            for name in ("instance_id", "binding_id"):
                if case.path_parameters and name in case.path_parameters:
                    case.path_parameters[name] = _pooled(case.path_parameters[name], name[:4])
            if isinstance(case.body, dict) and "service_id" in case.body:
                case.body["service_id"] = target.service_id
                if "plan_id" in case.body:
                    case.body["plan_id"] = target.plan_id
            if case.query and "service_id" in case.query:
                case.query.update(service_id=target.service_id, plan_id=target.plan_id)
        response = case.call(base_url=target.url, timeout=30)
        case.validate_response(response, excluded_checks=excluded)

    run()


def _label(operation: schemathesis.APIOperation) -> str:
    return operation.label.replace(" ", "_")


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("operation", OPERATIONS, ids=_label)
def test_the_system_broker_conforms_to_the_osb_openapi_description(
    system_broker: Target, operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode
) -> None:
    fuzz(system_broker, operation, mode)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("operation", OPERATIONS, ids=_label)
def test_the_static_broker_conforms_to_the_osb_openapi_description(
    static_broker: Target, operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode
) -> None:
    fuzz(static_broker, operation, mode)


def test_the_openapi_description_is_the_specifications_own() -> None:
    """The shipped copy is byte-identical to the reference (when the shared reference is beside the repo)."""
    reference = Path(__file__).resolve().parents[3] / "shared" / "reference" / "osb" / "openapi.yaml"
    if not reference.exists():
        pytest.skip(f"no shared reference at {reference}")
    assert OPENAPI.read_bytes() == reference.read_bytes()
