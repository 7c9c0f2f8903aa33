"""The Environment Broker against the OSB OpenAPI description with schemathesis, as the System and Static
Brokers are (`test_broker_schemathesis`, whose `fuzz` this reuses with the same two checks left out, for
the same reasons): every operation, schema-valid and schema-violating requests, every response checked
against the spec's status codes, bodies and content types. Schema-valid requests name the `kubernetes` plan,
which every control plane offers, and reuse a few instance and binding ids."""

from __future__ import annotations

import uuid

import pytest
import schemathesis

from .harness import ServerProcess, expect_status
from .test_broker_schemathesis import MODES, OPERATIONS, Target, _label, fuzz

pytestmark = pytest.mark.integration
SERVICE_ID = "6f1c2a3e-9b0d-4e5f-8a7b-52726d2d7274"


@pytest.fixture(scope="module")
def environment_broker(server: ServerProcess) -> Target:
    name = f"fuzz-{uuid.uuid4().hex[:6]}"
    answer = expect_status(
        server.admin.post(f"/api/v1/environment-broker/platforms/{name}/credentials", json={}), 201
    ).json()
    plan_id = str(uuid.uuid5(uuid.UUID(SERVICE_ID), "kubernetes"))
    return Target(answer["broker_url"], answer["username"], answer["password"], SERVICE_ID, plan_id)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("operation", OPERATIONS, ids=_label)
def test_the_environment_broker_conforms_to_the_osb_openapi_description(
    environment_broker: Target, operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode
) -> None:
    fuzz(environment_broker, operation, mode)
