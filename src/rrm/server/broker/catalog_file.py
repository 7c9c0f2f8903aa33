"""The Static System Broker's catalog file: the OSB catalog (`services`, exactly what `GET /v2/catalog`
answers) plus `credentials`, what binding each plan returns, by plan id (never shown in the catalog).

It is checked on start against the `Catalog` schema of the OSB OpenAPI description shipped beside this
module and against the spec's rules the schema cannot say (non-empty names, ids and descriptions, at least
one plan, unique names and ids); every error names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from rrm.core.bounded import load_yaml
from rrm.server.broker.models import Catalog, Offering, Plan

OPENAPI = Path(__file__).with_name("osb-openapi.yaml")
TOP_LEVEL = ("services", "credentials")


class CatalogError(ValueError):
    """The file cannot be served; the message names the file and every field at fault."""


@lru_cache(maxsize=1)
def osb_catalog_schema() -> dict[str, Any]:
    """The OpenAPI description's Catalog schema as JSON Schema (its `$ref`s resolve inside it)."""
    document = yaml.safe_load(OPENAPI.read_text())
    return {"$ref": "#/components/schemas/Catalog", "components": document["components"]}


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def catalog_problems(document: Any) -> list[str]:
    """Every problem as `field: message`; empty when the document is a catalog that can be served."""
    if not isinstance(document, Mapping):
        return ["(file): must be a mapping with services (and optionally credentials)"]
    problems = [
        f"{key}: unknown top-level field; expected {' or '.join(TOP_LEVEL)}"
        for key in document
        if key not in TOP_LEVEL
    ]
    if "services" not in document:
        return [*problems, "services: is required"]
    catalog = {"services": document["services"]}
    validator = jsonschema.Draft4Validator(osb_catalog_schema())
    for error in sorted(validator.iter_errors(catalog), key=lambda e: list(e.absolute_path)):
        problems.append(f"{_path(error.absolute_path) or 'services'}: {error.message}")
    if problems:
        return problems
    problems += _spec_rules(document["services"])
    credentials = document.get("credentials") or {}
    if not isinstance(credentials, Mapping):
        return [*problems, "credentials: must be a mapping of plan id to what binding that plan returns"]
    plan_ids = {plan["id"] for service in document["services"] for plan in service["plans"]}
    for plan_id, value in credentials.items():
        if plan_id not in plan_ids:
            problems.append(f"credentials.{plan_id}: no plan with this id in services")
        elif not isinstance(value, Mapping):
            problems.append(f"credentials.{plan_id}: must be an object (the credentials a bind returns)")
    return problems


def _spec_rules(services: list[Mapping[str, Any]]) -> list[str]:
    problems = []
    ids: dict[str, str] = {}
    names: set[str] = set()

    def unique_id(path: str, value: str) -> None:
        if value in ids:
            problems.append(f"{path}.id: {value!r} is already the id of {ids[value]}; ids must be unique")
        ids.setdefault(value, path)

    for index, service in enumerate(services):
        path = f"services[{index}]"
        for field in ("name", "id", "description"):
            if not service[field]:
                problems.append(f"{path}.{field}: must be a non-empty string")
        if service["name"] in names:
            problems.append(f"{path}.name: {service['name']!r} is the name of another service offering")
        names.add(service["name"])
        unique_id(path, service["id"])
        if not service["plans"]:
            problems.append(f"{path}.plans: a service offering needs at least one plan")
        plan_names: set[str] = set()
        for plan_index, plan in enumerate(service["plans"]):
            plan_path = f"{path}.plans[{plan_index}]"
            for field in ("name", "id", "description"):
                if not plan[field]:
                    problems.append(f"{plan_path}.{field}: must be a non-empty string")
            if plan["name"] in plan_names:
                problems.append(
                    f"{plan_path}.name: {plan['name']!r} is the name of another plan of this offering"
                )
            plan_names.add(plan["name"])
            unique_id(plan_path, plan["id"])
    return problems


def load_catalog(path: Path) -> Catalog:
    """Read and check the file; raises CatalogError naming the file and the fields at fault."""
    try:
        document = load_yaml(path.read_text())
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not YAML or JSON: {exc}") from exc
    problems = catalog_problems(document)
    if problems:
        raise CatalogError("\n".join(f"{path}: {p}" for p in problems))
    credentials = document.get("credentials") or {}
    offerings = []
    for service in document["services"]:
        plans = tuple(
            Plan(
                id=plan["id"],
                name=plan["name"],
                document=dict(plan),
                credentials=credentials.get(plan["id"]),
                bindable=plan.get("bindable", service["bindable"]),
            )
            for plan in service["plans"]
        )
        offering = {k: v for k, v in service.items() if k != "plans"}
        offerings.append(Offering(service["id"], offering, plans))
    return Catalog(tuple(offerings))
