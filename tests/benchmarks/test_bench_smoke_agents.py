"""The benchmarks of single agents and of provisioning at smoke size (the fixture `results`,
tests/benchmarks/conftest.py): they run and produce well-formed results. Not how fast."""

from __future__ import annotations

from typing import Any

import pytest
from smoke import well_formed

pytestmark = pytest.mark.timeout(720)  # four benchmarks on a shared 2-core machine
BENCHMARKS = ("status_path", "agent_cpu", "ready", "provisioning")


def test_ready_is_measured_for_every_real_agent(results: dict[str, Any]) -> None:
    run = results["ready"]
    well_formed(run["latency"])
    assert run["not_ready"] == 0 and run["standin"]["init_delay_seconds"] > 0


def test_status_path_measures_every_phase_and_the_bare_stack_beside_it(results: dict[str, Any]) -> None:
    (run,) = results["status_path"]
    for phase in ("first", "floor", "heartbeat", "changed", "bare"):
        measured = run[phase]
        assert measured["reports"] > 0 and not measured["failures"], phase
        assert measured["cpu_us_per_report"] > 0, phase
    assert run["changed"]["reports"] == run["synced_after"] == run["runtimes"]


def test_provisioning_succeeds_with_one_shoot_each_and_one_account_per_tenant(
    results: dict[str, Any],
) -> None:
    run = results["provisioning"]
    gardener = run["gardener"]
    assert (run["size"], run["tenants"]) == (10, 5)
    assert gardener["finished"] and gardener["operations"] == {"succeeded": 10, "failed": 0}
    assert gardener["all_succeeded"] and gardener["one_shoot_each"] and gardener["one_account_per_tenant"]
    assert gardener["shoots"] == gardener["shoots_created"] == 10 and gardener["tenants_with_bindings"] == 5
    assert gardener["agents"]["paired"] == gardener["agents"]["reported"] == 10
    assert gardener["cpu_ms_per_operation"] > 0 and gardener["seconds_until_last_succeeded"] > 0
    local = run["local"]
    assert local["all_connected"] and local["connected"] == 2 and local["seconds_until_all_connected"] > 0


def test_targets_are_evaluated(results: dict[str, Any]) -> None:
    assert results["targets"], "the smoke run evaluates at least the storm and throughput targets"
    assert all(isinstance(t["met"], bool) for t in results["targets"])
