"""Plans: what an environment can be asked for (backend, regions, parameters and their JSON Schema, which
parameters are secret or updatable, stage deadlines, an account pool), from `rrm server --plans FILE` or the
built-in defaults; and the check of a request against its plan, before anything starts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from rrm.core.bounded import load_yaml
from rrm.core.names import dns1123_label_error

# How long each stage may take unless a plan says otherwise (seconds). Waiting for a cluster gets an hour,
# as KEB's Runtime CR wait does; the global deadline is the sum of the stages', so it never fires first.
DEFAULT_DEADLINES: dict[str, float] = {
    "validate": 60,
    "claim_account": 600,
    "register_runtime": 300,
    "create_cluster": 1800,
    "wait_for_cluster": 3600,
    "fetch_kubeconfig": 600,
    "install_agent": 900,
    "wait_for_connection": 900,
    "update_runtime": 300,
    "update_cluster": 3600,
    "remove_agent": 900,
    "delete_cluster": 1800,
    "wait_for_deletion": 3600,
    "release_account": 3600,
    "delete_runtime": 300,
    "archive": 300,
}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
QUOTED = re.compile(r"^'(.+?)'")
UNITS = {"s": 1, "m": 60, "h": 3600, None: 1}
PLAN_KEYS = {
    "name", "backend", "description", "regions", "defaults", "parameters", "secretParameters",
    "updatableParameters", "deadlines", "expected", "operationDeadline", "accountPool",
}  # fmt: skip


class PlanError(ValueError):
    """A plans file that cannot be used; the message names the plan and the key."""


@dataclass(frozen=True)
class Plan:
    name: str
    backend: str
    description: str = ""
    regions: tuple[str, ...] = ()  # empty: no region asked for; else the first is the default
    defaults: Mapping[str, Any] = field(default_factory=dict)
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    secret: frozenset[str] = frozenset()
    updatable: frozenset[str] = frozenset()
    deadlines: Mapping[str, float] = field(default_factory=dict)
    expected: Mapping[str, float] = field(default_factory=dict)  # usual seconds, shown in descriptions
    operation_deadline: float | None = None
    account_pool: str | None = None
    # checks JSON Schema cannot express (autoScalerMin <= autoScalerMax): (field, message) for each problem
    checks: tuple[Callable[[Mapping[str, Any]], list[tuple[str, str]]], ...] = ()

    def deadline(self, stage: str) -> float:
        return self.deadlines.get(stage, DEFAULT_DEADLINES.get(stage, 600.0))

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "description": self.description,
            "regions": list(self.regions),
            "parameters": dict(self.schema),
            "secretParameters": sorted(self.secret),
            "updatableParameters": sorted(self.updatable),
            "accountPool": self.account_pool,
        }


def builtin_plans() -> list[Plan]:
    """`local` (an agent process on this machine) and `kubernetes` (bring your own cluster)."""
    kubernetes_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["kubeconfig"],
        "properties": {
            "kubeconfig": {
                "type": "string",
                "minLength": 1,
                "description": "the cluster's kubeconfig (YAML)",
            },
            "namespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "targetNamespaces": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
    }
    return [
        Plan(
            name="local",
            backend="local",
            description="an agent process on the control plane's machine (development, demos)",
            schema={"type": "object", "additionalProperties": False, "properties": {}},
            deadlines={"wait_for_connection": 120},
        ),
        Plan(
            name="kubernetes",
            backend="kubernetes",
            description="bring your own cluster: the agent is installed with the kubeconfig given",
            defaults={"namespace": "rrm-system", "targetNamespaces": ["default"]},
            schema=kubernetes_schema,
            secret=frozenset({"kubeconfig"}),
        ),
    ]


def load_plans(path: Path) -> list[Plan]:
    """The plans of a YAML file `{plans: [...]}`; PlanError naming the plan and key when one is wrong."""
    try:
        document = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PlanError(f"{path}: {exc}") from exc
    entries = document.get("plans") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise PlanError(f"{path}: expected a mapping with a non-empty list `plans`")
    plans = [_plan(path, i, entry) for i, entry in enumerate(entries)]
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise PlanError(f"{path}: plan names must be unique, got {names}")
    return plans


def _plan(path: Path, index: int, entry: Any) -> Plan:
    where = f"{path}: plans[{index}]"
    if not isinstance(entry, dict):
        raise PlanError(f"{where}: must be a mapping")
    unknown = sorted(set(entry) - PLAN_KEYS)
    if unknown:
        raise PlanError(f"{where}: unknown keys {unknown}; allowed: {sorted(PLAN_KEYS)}")
    for key in ("name", "backend"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise PlanError(f"{where}.{key}: required, a string")
    if (error := dns1123_label_error(entry["name"])) is not None:
        raise PlanError(f"{where}.name: {error}")
    schema = entry.get("parameters", {"type": "object"})
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise PlanError(f"{where}.parameters: not a JSON Schema: {exc.message}") from exc
    return Plan(
        name=entry["name"],
        backend=entry["backend"],
        description=str(entry.get("description", "")),
        regions=tuple(_strings(where, "regions", entry.get("regions", []))),
        defaults=_mapping(where, "defaults", entry.get("defaults", {})),
        schema=schema,
        secret=frozenset(_strings(where, "secretParameters", entry.get("secretParameters", []))),
        updatable=frozenset(_strings(where, "updatableParameters", entry.get("updatableParameters", []))),
        deadlines=_durations(where, "deadlines", entry.get("deadlines", {})),
        expected=_durations(where, "expected", entry.get("expected", {})),
        operation_deadline=_seconds(f"{where}.operationDeadline", entry.get("operationDeadline")),
        account_pool=entry.get("accountPool"),
    )


def _strings(where: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlanError(f"{where}.{key}: must be a list of strings")
    return value


def _mapping(where: str, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PlanError(f"{where}.{key}: must be a mapping")
    return value


def _durations(where: str, key: str, value: Any) -> dict[str, float]:
    stages = _mapping(where, key, value)
    unknown = sorted(set(stages) - set(DEFAULT_DEADLINES))
    if unknown:
        raise PlanError(f"{where}.{key}: unknown stages {unknown}; stages: {sorted(DEFAULT_DEADLINES)}")
    return {stage: _seconds(f"{where}.{key}.{stage}", v) or 0.0 for stage, v in stages.items()}


def _seconds(where: str, value: Any) -> float | None:
    """`90`, `90s`, `30m`, `2h`."""
    if value is None:
        return None
    match = DURATION.match(str(value))
    if match is None or float(match.group(1)) <= 0:
        raise PlanError(f"{where}: a positive duration such as 90s, 30m or 2h, not {value!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def parameter_problems(plan: Plan, parameters: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each way `parameters` (defaults applied) break the plan's schema."""
    validator = jsonschema.Draft202012Validator(dict(plan.schema))
    problems = []
    for error in sorted(validator.iter_errors(dict(parameters)), key=lambda e: [str(p) for p in e.path]):
        path = ".".join(["parameters", *(str(p) for p in error.absolute_path)])
        if error.validator == "required":
            missing = QUOTED.match(error.message)
            problems.append((f"{path}.{missing.group(1) if missing else ''}", "required"))
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            allowed = ", ".join(sorted(known)) or "none"
            problems += [
                (f"{path}.{k}", f"unknown parameter (known: {allowed})")
                for k in error.instance
                if k not in known
            ]
        else:
            problems.append((path, _short(error.message)))
    for check in plan.checks:
        problems += check(parameters)
    return problems


def _short(message: str) -> str:
    """jsonschema quotes whole values; a kubeconfig would be repeated in full."""
    return message if len(message) <= 200 else message[:197] + "..."


def region_problem(plan: Plan, region: str | None) -> str | None:
    if plan.regions and region is not None and region not in plan.regions:
        return f"plan {plan.name} offers the regions {', '.join(plan.regions)}"
    if not plan.regions and region is not None:
        return f"plan {plan.name} has no regions"
    return None


def with_defaults(plan: Plan, parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {**plan.defaults, **parameters}


def split_secret(plan: Plan, parameters: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(parameters stored in the clear, secret ones to seal): secret values never come back."""
    clear = {k: v for k, v in parameters.items() if k not in plan.secret}
    secret = {k: str(v) for k, v in parameters.items() if k in plan.secret}
    return clear, secret


def catalog(plans: Iterable[Plan]) -> dict[str, Plan]:
    return {plan.name: plan for plan in plans}
