"""`rrm runtime register` against a real server: a new runtime is in DEFAULT (as a new application is), so
the applications there reach its System Broker catalog without `rrm scenario assign`; `--scenario`
replaces the default; scripts read `-o json|yaml`, people read the token and the next command."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from .compass import application, broker_client, catalog_names, create_scenario
from .harness import ServerProcess, apply, expect_status, pair
from .test_cli import ok, rrm

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_a_new_runtime_sees_the_default_applications_in_its_broker_catalog(server: ServerProcess) -> None:
    name, app = unique("reg-"), unique("reg-app-")
    answer = json.loads(ok(rrm(server, "runtime", "register", name, "--kind", "selfhosted", "-o", "json")))
    assert answer["runtime"]["name"] == name and answer["pairing_token"]
    assert answer["scenarios"]["explicit"] == ["DEFAULT"]
    apply(server.admin, [application(app)])  # no scenarios given: DEFAULT

    assert app in catalog_names(broker_client(server.admin, name))
    seen = expect_status(server.admin.get("/api/v1/applications", params={"runtime": name}), 200).json()
    assert app in [a["name"] for a in seen]


def test_scenario_replaces_the_default(server: ServerProcess) -> None:
    name, scenario = unique("reg-sc-"), unique("REG-")
    in_default, in_scenario = unique("reg-def-"), unique("reg-own-")
    create_scenario(server.admin, scenario)
    args = ["runtime", "register", name, "--kind", "kubernetes", "--scenario", scenario, "-o", "yaml"]
    answer = yaml.safe_load(ok(rrm(server, *args)))
    assert answer["scenarios"]["explicit"] == [scenario]
    apply(server.admin, [application(in_default), application(in_scenario, scenarios=[scenario])])

    names = catalog_names(broker_client(server.admin, name))
    assert in_scenario in names and in_default not in names
    shown = expect_status(server.admin.get(f"/api/v1/runtimes/{name}/scenarios"), 200).json()
    assert shown["explicit"] == [scenario] and shown["effective"] == [scenario]


def test_an_unknown_scenario_is_refused_and_nothing_is_registered(server: ServerProcess) -> None:
    name = unique("reg-bad-")
    result = rrm(server, "runtime", "register", name, "--kind", "selfhosted", "--scenario", "NO-SUCH")
    assert result.returncode == 1, result
    assert "scenarios[0]" in result.stderr and "rrm create scenario NO-SUCH" in result.stderr
    expect_status(server.admin.get(f"/api/v1/runtimes/{name}"), 404)


def test_the_text_output_gives_a_person_the_token_and_the_command_that_pairs(server: ServerProcess) -> None:
    name = unique("reg-txt-")
    text = ok(rrm(server, "runtime", "register", name, "--kind", "selfhosted"))
    assert f"runtime/{name} registered" in text and "scenarios:      DEFAULT" in text
    token = next(line.split()[-1] for line in text.splitlines() if line.startswith("pairing token:"))
    assert f"rrm agent --director {server.url} --token {token} --state-dir ./rrm-agent-{name}" in text
    pair(server.url, token)
    assert expect_status(server.admin.get(f"/api/v1/runtimes/{name}"), 200).json()["paired"]
