"""A `gardener-aws` environment ordered through the Environment Broker by a platform in region cf-eu11,
end to end against the Gardener stand-in (the setup of test_gardener_environments): provision → an
EU-access account → poll → Connected runtime → bind → the kubeconfig works against the Shoot's API server
→ update → suspend (the Shoot deleted, the instance kept) → resume (a new Shoot) → deprovision → 410."""

from __future__ import annotations

import shutil

import pytest
from urllib3.exceptions import MaxRetryError

from . import test_gardener_environments as gardener
from .harness import Fleet, expect_status
from .test_environment_broker import (
    CONTEXT,
    Platform,
    bind,
    can_list_secrets,
    connected,
    register_platform,
    wait_last_operation,
)
from .test_environments import wait_stage

pytestmark = pytest.mark.integration
setup = gardener.setup
PARAMETERS = {"name": "gb-a", "region": "eu-west-2", "autoScalerMax": 5}


def connect(setup: gardener.Setup, platform: Platform, instance: str, operation: str) -> None:
    """Wait for the agent's install into the Shoot, play its pod, and wait for the operation to succeed."""
    fleet = setup.fleet
    wait_stage(fleet, "gb-a", operation, "wait_for_connection", ("waiting", "running"))
    stale = [p for p in fleet.processes if p.label.startswith("rrm agent gb-a")]
    for agent in stale:  # the agent of a Shoot that suspending deleted
        agent.stop()
        fleet.processes.remove(agent)
    shutil.rmtree(fleet.workdir / "gb-a", ignore_errors=True)
    gardener.play_agent_pod(setup, gardener.the_shoot(setup, "gb-a")["metadata"]["name"], "gb-a")
    assert wait_last_operation(fleet, platform, instance, operation, timeout=90)["state"] == "succeeded"
    fleet.wait_until(lambda: connected(setup.server.admin, "gb-a"), "the runtime never connected")


def revoked_or_gone(kubeconfig: str) -> bool:
    """The binding's token is refused, or the Shoot's API server went with the Shoot."""
    try:
        return can_list_secrets(kubeconfig) == 401
    except MaxRetryError:
        return True


def test_a_gardener_environment_ordered_through_the_broker_lives_its_whole_life(
    setup: gardener.Setup,
) -> None:
    fleet: Fleet = setup.fleet
    setup.garden.binding("aws-eu", euAccess="true")
    platform = register_platform(setup.server, "cf-gardener", region="cf-eu11")
    plans = {p["name"]: p for p in platform.catalog()["services"][0]["plans"]}
    assert (
        plans["gardener-aws"]["bindable"]
        and "eu-west-2" in plans["gardener-aws"]["metadata"]["supportedRegions"]
    )
    assert (
        "autoScalerMax"
        in plans["gardener-aws"]["schemas"]["service_instance"]["update"]["parameters"]["properties"]
    )
    instance = "6b1e3f0a-5d0c-4f7e-9a55-3c2b1a0d9e8f"
    operation = expect_status(platform.provision(instance, "gardener-aws", PARAMETERS), 202).json()[
        "operation"
    ]
    connect(setup, platform, instance, operation)
    shoot = gardener.the_shoot(setup, "gb-a")
    assert (
        shoot["spec"]["region"] == "eu-west-2"
        and shoot["metadata"]["labels"]["rrm.io/global-account"] == "ga-1"
    )
    assert shoot["spec"]["secretBindingName"] == "aws-eu"  # platform region cf-eu11: EU-access accounts only

    bound = expect_status(
        bind(platform, instance, "admin-1", "gardener-aws", expiration_seconds=3600), 201
    ).json()
    kubeconfig = bound["credentials"]["kubeconfig"]
    assert can_list_secrets(kubeconfig) == 200

    update = expect_status(platform.update(instance, parameters={"autoScalerMax": 8}), 202).json()[
        "operation"
    ]
    assert wait_last_operation(fleet, platform, instance, update, timeout=60)["state"] == "succeeded"
    assert gardener.the_shoot(setup, "gb-a")["spec"]["provider"]["workers"][0]["maximum"] == 8

    suspend = platform.update(instance, context={**CONTEXT, "active": False})
    suspend_id = expect_status(suspend, 202).json()["operation"]
    assert wait_last_operation(fleet, platform, instance, suspend_id, timeout=90)["state"] == "succeeded"
    assert setup.garden.shoots() == [] and setup.server.admin.get("/api/v1/runtimes/gb-a").status_code == 404
    assert revoked_or_gone(kubeconfig)

    resume = platform.update(instance, context={**CONTEXT, "active": True})
    resume_id = expect_status(resume, 202).json()["operation"]
    connect(setup, platform, instance, resume_id)
    assert len(setup.garden.shoots()) == 1

    gone_id = expect_status(platform.deprovision(instance, "gardener-aws"), 202).json()["operation"]
    assert wait_last_operation(fleet, platform, instance, gone_id, timeout=90)["state"] == "succeeded"
    assert setup.garden.shoots() == []
    expect_status(platform.deprovision(instance, "gardener-aws"), 410)
    platform.http.close()
