"""Every `rrm` command that prints data takes `-o json|yaml` and prints the admin API's answer as it is,
so scripts never parse the lines meant for people (docs/api.md names each answer)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from test_cli_commands import RUNTIME, FakeApi, run

MANIFEST = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: logging}\nspec: {}\n"
ROLLOUT = {"component": "orders", "state": "paused", "to_revision": 2, "current_wave": 1, "wave_count": 3}
SCENARIOS = {"runtime": "edge-1", "explicit": ["PROD"], "effective": ["DEFAULT", "PROD"]}


@dataclass(frozen=True)
class Case:
    """One command: the route it calls, what that route answers, and what the command prints of it."""

    args: tuple[str, ...]
    method: str
    path: str
    answer: Any
    printed: Any = None  # what -o prints when it is not `answer` itself
    stdin: str | None = None
    human: str = ""  # a piece of the text for people


CASES = {
    "apply": Case(
        ("apply", "-f", "-"),
        "POST",
        "/api/v1/apply",
        {
            "results": [{"kind": "Component", "name": "logging", "action": "created", "revision": 1}],
            "warnings": [],
        },
        stdin=MANIFEST,
        human="component/logging created (revision 1)",
    ),
    "label runtime": Case(
        ("label", "runtime", "prod-eu", "tier=1"),
        "PATCH",
        "/api/v1/runtimes/prod-eu/labels",
        {**RUNTIME, "labels": {"tier": "1"}},
        human="runtime/prod-eu labeled: tier=1",
    ),
    "rollback component": Case(
        ("rollback", "component", "logging", "--to-revision", "1"),
        "POST",
        "/api/v1/components/logging/rollback",
        {"name": "logging", "revision": 3},
        human="(new revision 3)",
    ),
    "rollout pause": Case(
        ("rollout", "pause", "orders"),
        "POST",
        "/api/v1/rollouts/orders/pause",
        ROLLOUT,
        human="rollout of revision 2 paused (wave 1/3, state paused)",
    ),
    "scenario assign --runtime": Case(
        ("scenario", "assign", "PROD", "--runtime", "edge-1"),
        "PATCH",
        "/api/v1/runtimes/edge-1/scenarios",
        SCENARIOS,
        printed=[SCENARIOS],
        human="runtime/edge-1 scenarios: DEFAULT,PROD",
    ),
    "scenario assign --selector": Case(
        ("scenario", "assign", "PROD", "--selector", "env=prod"),
        "PUT",
        "/api/v1/scenarios/PROD/assignment",
        {"scenario": "PROD", "selector": "env=prod"},
        human="scenario/PROD assigned to runtimes matching 'env=prod'",
    ),
    "scenario unassign": Case(
        ("scenario", "unassign", "PROD", "--runtime", "edge-1"),
        "PATCH",
        "/api/v1/runtimes/edge-1/scenarios",
        {**SCENARIOS, "explicit": [], "effective": ["DEFAULT"]},
        printed=[{**SCENARIOS, "explicit": [], "effective": ["DEFAULT"]}],
        human="runtime/edge-1 scenarios: DEFAULT",
    ),
    "runtime broker-credentials": Case(
        ("runtime", "broker-credentials", "edge-1"),
        "POST",
        "/api/v1/runtimes/edge-1/broker-credentials",
        {"username": "edge-1", "password": "rrmbp_x", "broker_url": "http://cp/broker"},
        human="password:    rrmbp_x",
    ),
}


@pytest.mark.parametrize("output", ["json", "yaml"])
@pytest.mark.parametrize("name", list(CASES))
def test_the_command_prints_the_api_answer_as_is(name: str, output: str) -> None:
    case, api = CASES[name], FakeApi()
    api.on(case.method, case.path, 201 if case.method == "POST" else 200, case.answer)
    result = run(api, *case.args, "-o", output, stdin=case.stdin)
    assert result.exit_code == 0, result.output
    loads = json.loads if output == "json" else yaml.safe_load
    assert loads(result.stdout) == (case.answer if case.printed is None else case.printed)


@pytest.mark.parametrize("name", list(CASES))
def test_without_o_the_command_prints_lines_for_people(name: str) -> None:
    case, api = CASES[name], FakeApi()
    api.on(case.method, case.path, 201 if case.method == "POST" else 200, case.answer)
    result = run(api, *case.args, stdin=case.stdin)
    assert result.exit_code == 0, result.output
    assert case.human in result.stdout
