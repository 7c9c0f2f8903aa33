"""Label definitions: a JSON Schema per label key that every value of that label must satisfy.

Runtime and application labels are strings, so a definition's schema validates strings. `scenarios` is the
one built-in definition: its value is a list, its schema an array whose items are the known scenarios, and
it validates the scenarios of applications and the explicit scenarios of runtimes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
from sqlalchemy.orm import Session

from rrm.core.labels import label_value_error
from rrm.server.apply import InvalidInput, Problem
from rrm.store import compass as store

SCENARIOS_KEY = "scenarios"


def scenario_name_error(name: object) -> str | None:
    """Scenario names follow the label value charset (so they print and parse anywhere), non-empty."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    return label_value_error(name)


def scenarios_schema(known: Sequence[str]) -> dict[str, Any]:
    """The built-in `scenarios` label definition: a list of distinct known scenarios."""
    return {"type": "array", "uniqueItems": True, "items": {"type": "string", "enum": sorted(known)}}


def schema_error(schema: object) -> tuple[str, str] | None:
    """(path inside the schema, message) when `schema` is not a usable JSON Schema, else None."""
    if not isinstance(schema, Mapping):
        return "", "must be a JSON Schema object"
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
        return path, f"not a valid JSON Schema: {exc.message}"
    return _reference_in(schema, "")


def _reference_in(schema: object, path: str) -> tuple[str, str] | None:
    """A `$ref` makes a schema that refers to itself possible, whose validation never ends: refused."""
    if isinstance(schema, Mapping):
        if "$ref" in schema:
            return (
                f"{path}.$ref",
                "references ($ref) are not supported: a label definition spells out its schema",
            )
        found = (_reference_in(value, f"{path}.{key}") for key, value in schema.items())
    elif isinstance(schema, list):
        found = (_reference_in(value, f"{path}[{index}]") for index, value in enumerate(schema))
    else:
        return None
    return next((problem for problem in found if problem is not None), None)


def value_problems(field: str, value: Any, schema: Mapping[str, Any], what: str) -> list[tuple[str, str]]:
    """Where `value` breaks `schema`, as (field path, message)."""
    problems = []
    for error in jsonschema.Draft7Validator(schema).iter_errors(value):
        path = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        if error.validator == "enum" and what == SCENARIOS_KEY:
            message = (
                f"unknown scenario {error.instance!r}; create it with `rrm create scenario {error.instance}`"
            )
        else:
            message = f"does not satisfy the label definition of {what!r}: {error.message}"
        problems.append((path, message))
    return problems


def scenario_problems(field: str, scenarios: Any, known: Sequence[str]) -> list[tuple[str, str]]:
    return value_problems(field, scenarios, scenarios_schema(known), SCENARIOS_KEY)


def label_problems(
    labels: Mapping[str, Any], definitions: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """Every label whose key has a definition is checked against it."""
    problems = []
    for key, value in sorted(labels.items()):
        schema = definitions.get(key)
        if schema is not None:
            problems += value_problems(f"labels.{key}", value, schema, key)
    return problems


def check_runtime_labels(session: Session, name: str, labels: Mapping[str, Any]) -> None:
    """Raises InvalidInput (nothing stored) when a runtime label breaks its definition."""
    problems = label_problems(labels, store.label_definitions(session))
    if problems:
        raise InvalidInput([Problem(None, "Runtime", name, f, m) for f, m in problems])


def check_runtime_scenarios(session: Session, name: str, scenarios: Sequence[str]) -> None:
    """Raises InvalidInput (nothing stored) unless a runtime's explicit scenarios are distinct known ones."""
    problems = scenario_problems(SCENARIOS_KEY, scenarios, store.scenario_names(session))
    if problems:
        raise InvalidInput([Problem(None, "Runtime", name, f, m) for f, m in problems])
