"""The Environment Broker's pure parts: its catalog (stable ids, one plan per servable provisioning plan,
schemas, bindable where the backend mints kubeconfigs, polling time from the plan's deadlines), the suspend
and resume operations' stages, binding lifetimes, and what `rrm environment-broker credentials` prints."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from rrm.cli.environment_broker import credentials_text
from rrm.core.operations import DEPROVISION, PROVISION, RESUME, SUSPEND
from rrm.server.broker.models import BrokerError
from rrm.server.environment_broker.backend import request_hash
from rrm.server.environment_broker.bindings import expiration
from rrm.server.environment_broker.catalog import SERVICE_ID, broker_catalog, create_schema, update_schema
from rrm.server.provisioning.backends.kubernetes import KubernetesBackend
from rrm.server.provisioning.catalog import build_catalog
from rrm.server.provisioning.plans import Plan
from rrm.server.provisioning.stages import planned_stages
from rrm.server.settings import ServerSettings


def plans_of(tmp_path: Path, is_sqlite: bool) -> dict[str, dict[str, object]]:
    catalog = broker_catalog(build_catalog(ServerSettings(data_dir=tmp_path), is_sqlite, extensions=[]))
    [service] = catalog.document()["services"]
    assert service["id"] == SERVICE_ID and service["name"] == "rrm-runtime"
    return {p["name"]: p for p in service["plans"]}


def test_the_catalog_offers_every_servable_plan_with_stable_ids(tmp_path: Path) -> None:
    plans = plans_of(tmp_path, is_sqlite=True)
    assert set(plans) == {"local", "kubernetes"}
    assert plans_of(tmp_path, is_sqlite=True) == plans  # the same ids every time
    assert plans["kubernetes"]["id"] == str(uuid.uuid5(uuid.UUID(SERVICE_ID), "kubernetes"))
    assert (plans["local"]["bindable"], plans["kubernetes"]["bindable"]) == (False, True)
    assert all(p["plan_updateable"] is False for p in plans.values())
    # validate 60 s + register_runtime 300 + fetch_kubeconfig 600 + install_agent 900 + wait 120
    assert plans["local"]["maximum_polling_duration"] == 1980
    assert set(plans_of(tmp_path, is_sqlite=False)) == {"kubernetes"}  # local needs one replica


def test_a_plans_schemas_add_name_and_region_on_create_and_keep_only_updatable_on_update() -> None:
    plan = Plan(
        name="sized",
        backend="kubernetes",
        regions=("eu", "us"),
        schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {"size": {"type": "integer"}, "zone": {"type": "string"}},
        },
        updatable=frozenset({"size"}),
    )
    create = create_schema(plan)
    assert set(create["properties"]) == {"size", "zone", "name", "region"}
    assert create["properties"]["region"]["enum"] == ["eu", "us"] and create["additionalProperties"] is False
    assert update_schema(plan)["properties"] == {"size": {"type": "integer"}}


def test_suspend_leaves_the_environment_and_resume_provisions_again() -> None:
    plan, backend = Plan(name="byo", backend="kubernetes"), KubernetesBackend()
    names = {t: [s.name for s in planned_stages(t, plan, backend)] for t in (PROVISION, DEPROVISION)}
    assert [s.name for s in planned_stages(SUSPEND, plan, backend)] == names[DEPROVISION][:-1]
    assert names[DEPROVISION][-1] == "archive"
    assert [s.name for s in planned_stages(RESUME, plan, backend)] == names[PROVISION]


@pytest.mark.parametrize("value", [599, 7201, "600", 600.5, True])
def test_a_binding_lifetime_outside_600_to_7200_seconds_is_refused_naming_it(value: object) -> None:
    with pytest.raises(BrokerError) as refused:
        expiration({"expiration_seconds": value})
    assert (
        refused.value.status == 400 and "parameters.expiration_seconds" in refused.value.body["description"]
    )


def test_a_binding_lifetime_defaults_to_600_seconds_and_unknown_parameters_are_named() -> None:
    assert expiration({}) == 600 and expiration({"expiration_seconds": 7200}) == 7200
    with pytest.raises(BrokerError) as refused:
        expiration({"ttl": 5})
    assert "parameters.ttl" in refused.value.body["description"]


def test_the_same_request_hashes_the_same_whatever_the_key_order() -> None:
    assert request_hash({"a": 1, "b": 2}) == request_hash({"b": 2, "a": 1})
    assert request_hash({"a": 1}) != request_hash({"a": 2})


def test_the_credentials_text_says_how_to_register_the_broker() -> None:
    text = credentials_text({"broker_url": "http://cp/environments", "username": "cf", "password": "rrmep_x"})
    assert "cf create-service-broker rrm-environments cf PASSWORD http://cp/environments" in text
    assert "rrmep_x" in text and "only this once" in text
