"""Plans: the file `rrm server --plans` reads, and requests checked against a plan before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrm.server.provisioning.catalog import Catalog, build_catalog
from rrm.server.provisioning.plans import (
    PlanError,
    builtin_plans,
    load_plans,
    parameter_problems,
    region_problem,
    split_secret,
    with_defaults,
)
from rrm.server.settings import ServerSettings

GOOD = """
plans:
  - name: byo-shop
    backend: kubernetes
    regions: [eu, us]
    defaults: {namespace: rrm-system}
    parameters:
      type: object
      required: [kubeconfig]
      additionalProperties: false
      properties:
        kubeconfig: {type: string}
        namespace: {type: string}
        size: {type: integer, minimum: 1}
    secretParameters: [kubeconfig]
    updatableParameters: [size]
    deadlines: {wait_for_connection: 90s, install_agent: 2m}
    operationDeadline: 2h
"""


def plans_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plans.yaml"
    path.write_text(text)
    return path


def test_a_plans_file_is_read_with_durations_in_seconds(tmp_path: Path) -> None:
    (plan,) = load_plans(plans_file(tmp_path, GOOD))
    assert (plan.name, plan.backend, plan.regions) == ("byo-shop", "kubernetes", ("eu", "us"))
    assert plan.deadline("wait_for_connection") == 90 and plan.deadline("install_agent") == 120
    assert plan.deadline("register_runtime") == 300, "unset stages keep the default"
    assert plan.operation_deadline == 7200
    assert plan.secret == {"kubeconfig"} and plan.updatable == {"size"}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("plans: []", "non-empty list `plans`"),
        ("plans: [{backend: local}]", "plans[0].name: required"),
        ("plans: [{name: Bad_Name, backend: local}]", "plans[0].name"),
        ("plans: [{name: a, backend: local, colour: red}]", "unknown keys ['colour']"),
        (
            "plans: [{name: a, backend: local, deadlines: {brew_coffee: 1m}}]",
            "unknown stages ['brew_coffee']",
        ),
        ("plans: [{name: a, backend: local, deadlines: {validate: soon}}]", "plans[0].deadlines.validate"),
        (
            "plans: [{name: a, backend: local, parameters: {type: 12}}]",
            "plans[0].parameters: not a JSON Schema",
        ),
        ("plans: [{name: a, backend: local}, {name: a, backend: local}]", "unique"),
    ],
)
def test_a_plans_file_that_cannot_be_used_names_the_plan_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(PlanError) as refused:
        load_plans(plans_file(tmp_path, text))
    assert named in str(refused.value)


def test_a_plan_naming_an_unknown_backend_stops_the_catalog(tmp_path: Path) -> None:
    path = plans_file(tmp_path, "plans: [{name: mystery, backend: openstack}]")
    with pytest.raises(ValueError, match="plan mystery: unknown backend 'openstack'"):
        build_catalog(ServerSettings(data_dir=tmp_path, plans_file=path), is_sqlite=True, extensions=[])


def test_the_local_plan_is_refused_on_postgresql_with_the_reason(tmp_path: Path) -> None:
    assert "local" not in build_catalog(ServerSettings(data_dir=tmp_path), True, []).refusals
    refusal = build_catalog(ServerSettings(data_dir=tmp_path), False, []).refusals["local"]
    assert "single replica" in refusal and "PostgreSQL" in refusal


def test_extensions_add_plans_and_a_file_wins_over_them(tmp_path: Path) -> None:
    from rrm.server.provisioning.plans import Plan

    def extension(_: ServerSettings, catalog: Catalog) -> None:
        catalog.add_plan(Plan(name="byo-shop", backend="local"))
        catalog.add_plan(Plan(name="extra", backend="local"))

    settings = ServerSettings(data_dir=tmp_path, plans_file=plans_file(tmp_path, GOOD))
    catalog = build_catalog(settings, True, [extension])
    assert catalog.plans["byo-shop"].backend == "kubernetes"
    assert {"extra", "local", "kubernetes"} <= set(catalog.plans)


def test_parameters_are_checked_with_the_field_named() -> None:
    kubernetes = next(p for p in builtin_plans() if p.name == "kubernetes")
    assert parameter_problems(kubernetes, with_defaults(kubernetes, {})) == [
        ("parameters.kubeconfig", "required")
    ]
    problems = parameter_problems(kubernetes, {"kubeconfig": "x", "colour": "red", "targetNamespaces": []})
    assert [f for f, _ in problems] == ["parameters.colour", "parameters.targetNamespaces"]
    assert parameter_problems(kubernetes, with_defaults(kubernetes, {"kubeconfig": "x"})) == []


def test_secret_parameters_are_split_off_and_regions_checked(tmp_path: Path) -> None:
    (plan,) = load_plans(plans_file(tmp_path, GOOD))
    assert split_secret(plan, {"kubeconfig": "k", "size": 3}) == ({"size": 3}, {"kubeconfig": "k"})
    assert region_problem(plan, "eu") is None and region_problem(plan, None) is None
    assert region_problem(plan, "mars") == "plan byo-shop offers the regions eu, us"
