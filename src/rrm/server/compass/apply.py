"""`rrm apply` with Compass documents: Dapr documents go through `rrm.server.apply`, `rrm.io/v1` documents
are checked and stored here, in the same transaction and with the same all-or-nothing rule.

Label definitions and scenario assignments are stored before applications, so an application may use a
label defined by the same request. Names starting with `app-` are reserved for the bindings and secrets
generated for applications, the way `rrm-` is reserved for the agent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rrm.core.canonical import canonical_json
from rrm.core.scenarios import BINDING_PREFIX, KINDS, RRM_API_VERSION, binding_name
from rrm.server.apply import ApplyOutcome, InvalidInput, Problem, Result, RolloutHooks, apply_documents
from rrm.server.compass import manifests
from rrm.server.compass.labels import label_problems, scenario_problems, value_problems
from rrm.server.secretbox import SecretBox
from rrm.store import compass as store
from rrm.store import repositories as repo

RESERVED_KINDS = ("Component", "Secret")


@dataclass
class _Plan:
    """The valid Compass documents of one request, with their indexes."""

    definitions: list[tuple[int, manifests.LabelDefinitionDocument]] = field(default_factory=list)
    assignments: list[tuple[int, manifests.AssignmentDocument]] = field(default_factory=list)
    applications: list[tuple[int, manifests.ApplicationDocument]] = field(default_factory=list)


def is_compass_document(document: Any) -> bool:
    """Application, LabelDefinition, ScenarioAssignment; `rrm.server.apply` takes every other kind (and
    refuses unknown ones)."""
    return (
        isinstance(document, Mapping)
        and document.get("apiVersion") == RRM_API_VERSION
        and document.get("kind") in KINDS
    )


def apply_all(
    session: Session,
    box: SecretBox,
    documents: Sequence[Any],
    rollouts: RolloutHooks,
    *,
    dry_run: bool,
    now: datetime,
) -> ApplyOutcome:
    """Validate every document, then store them all; raises InvalidInput (nothing stored)."""
    plan, problems = _plan(session, documents)
    try:
        outcome = apply_documents(session, box, documents, rollouts, dry_run=dry_run, now=now)
    except InvalidInput as exc:
        raise InvalidInput(_ordered([*exc.problems, *problems])) from None
    if problems:
        raise InvalidInput(_ordered(problems))
    _store(session, box, plan, outcome, dry_run=dry_run, now=now)
    return outcome


def _ordered(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: -1 if p.document is None else p.document)


def _plan(session: Session, documents: Sequence[Any]) -> tuple[_Plan, list[Problem]]:
    plan, problems = _Plan(), list[Problem]()

    def report(index: int, kind: str, name: str, found: list[tuple[str, str]]) -> bool:
        problems.extend(Problem(index, kind, name, f, m) for f, m in found)
        return not found

    seen: set[tuple[str, str]] = set()
    for index, document in enumerate(documents):
        if not is_compass_document(document):
            _check_reserved(index, document, problems)
            continue
        kind = str(document["kind"])
        parsed: manifests.Checked
        if kind == manifests.APPLICATION:
            parsed = manifests.parse_application(document)
            name = parsed.name
        elif kind == manifests.LABEL_DEFINITION:
            parsed = manifests.parse_label_definition(document)
            name = parsed.key
        else:
            parsed = manifests.parse_assignment(document)
            name = parsed.scenario
        if (kind, name) in seen:
            parsed.add("metadata.name", f"{kind} {name!r} appears twice in this request")
        seen.add((kind, name))
        if not report(index, kind, name, parsed.problems):
            continue
        if isinstance(parsed, manifests.ApplicationDocument):
            plan.applications.append((index, parsed))
        elif isinstance(parsed, manifests.LabelDefinitionDocument):
            plan.definitions.append((index, parsed))
        elif isinstance(parsed, manifests.AssignmentDocument):
            plan.assignments.append((index, parsed))
    if not (plan.applications or plan.definitions or plan.assignments):
        return plan, problems  # no Compass document: nothing more to check against the registry

    definitions = store.label_definitions(session)
    definitions.update({d.key: d.schema for _, d in plan.definitions})
    known_scenarios = store.scenario_names(session)
    for index, app in plan.applications:
        found = [(f"metadata.{f}", m) for f, m in label_problems(app.labels, definitions)]
        found += scenario_problems("spec.scenarios", app.scenarios, known_scenarios)
        report(index, manifests.APPLICATION, app.name, found)
    for index, assignment in plan.assignments:
        if assignment.scenario not in known_scenarios:
            message = f"no scenario {assignment.scenario!r}; create it with `rrm create scenario`"
            report(index, manifests.SCENARIO_ASSIGNMENT, assignment.scenario, [("metadata.name", message)])
    _check_existing_labels(session, plan, problems)
    _check_binding_names(session, plan, problems)
    return plan, problems


def _check_reserved(index: int, document: Any, problems: list[Problem]) -> None:
    if not isinstance(document, Mapping) or document.get("kind") not in RESERVED_KINDS:
        return
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if isinstance(name, str) and name.startswith(BINDING_PREFIX):
        message = f"names starting with {BINDING_PREFIX!r} are reserved for the bindings of applications"
        problems.append(Problem(index, str(document["kind"]), name, "metadata.name", message))


def _check_existing_labels(session: Session, plan: _Plan, problems: list[Problem]) -> None:
    """A new or changed definition must hold for every value already stored (or applied with it)."""
    if not plan.definitions:
        return  # the common write: nothing to check, and no reason to load every runtime
    replaced = {app.name for _, app in plan.applications}
    labelled: list[tuple[str, Mapping[str, Any]]] = [
        (f"runtime {r.name!r}", r.labels) for r in repo.all_runtimes(session)
    ]
    labelled += [
        (f"application {a.name!r}", a.labels)
        for a in store.all_applications(session)
        if a.name not in replaced
    ]
    labelled += [(f"application {app.name!r}", app.labels) for _, app in plan.applications]
    for index, definition in plan.definitions:
        for owner, labels in labelled:
            if definition.key not in labels:
                continue
            for _, message in value_problems("", labels[definition.key], definition.schema, definition.key):
                problems.append(
                    Problem(
                        index,
                        manifests.LABEL_DEFINITION,
                        definition.key,
                        "spec.schema",
                        f"{owner} has {definition.key}={labels[definition.key]!r}, which {message}",
                    )
                )


def _check_binding_names(session: Session, plan: _Plan, problems: list[Problem]) -> None:
    """`app-a-b-c` could come from application a-b, bundle c or from application a, bundle b-c: refuse the
    second one, since a runtime could then get two components of one name."""
    if not plan.applications:
        return
    replaced = {app.name for _, app in plan.applications}
    owners: dict[str, str] = {}
    for row in store.all_applications(session):
        if row.name not in replaced:
            for bundle in row.manifest["spec"].get("bundles") or []:
                owners[binding_name(row.name, bundle["name"])] = row.name
    for index, app in plan.applications:
        for position, bundle in enumerate(app.manifest["spec"].get("bundles") or []):
            name = binding_name(app.name, bundle["name"])
            owner = owners.setdefault(name, app.name)
            if owner != app.name:
                message = f"its binding name {name!r} is already generated for application {owner!r}"
                problems.append(
                    Problem(index, manifests.APPLICATION, app.name, f"spec.bundles[{position}].name", message)
                )


def seal_credentials(box: SecretBox, name: str, credentials: Mapping[str, Mapping[str, str]]) -> bytes:
    """One blob per application; the associated data binds it to the application's row."""
    return box.seal(
        f"application/{name}",
        {bundle: json.dumps(dict(fields), sort_keys=True) for bundle, fields in credentials.items()},
    )


def open_credentials(box: SecretBox, name: str, blob: bytes) -> dict[str, dict[str, str]]:
    return {bundle: json.loads(fields) for bundle, fields in box.open(f"application/{name}", blob).items()}


def _store(
    session: Session, box: SecretBox, plan: _Plan, outcome: ApplyOutcome, *, dry_run: bool, now: datetime
) -> None:
    """Definitions and assignments first: an application may use a label defined by the same request."""
    _store_labels(session, plan, outcome, dry_run=dry_run, now=now)
    for _, app in plan.applications:
        outcome.results.append(_store_application(session, box, app, dry_run=dry_run, now=now))


def _store_labels(
    session: Session, plan: _Plan, outcome: ApplyOutcome, *, dry_run: bool, now: datetime
) -> None:
    existing_definitions = store.label_definitions(session) if plan.definitions else {}
    for _, definition in plan.definitions:
        current = existing_definitions.get(definition.key)
        action = _action(current, definition.schema)
        if action != "unchanged" and not dry_run:
            store.put_label_definition(session, definition.key, definition.schema, now)
            repo.record_event(
                session,
                f"LabelDefinition{action.capitalize()}",
                f"labeldefinition/{definition.key}"[:128],
                json.dumps(definition.schema)[:500],
                now,
            )
        outcome.results.append(Result(manifests.LABEL_DEFINITION, definition.key, action, None))

    existing_assignments = store.all_assignments(session) if plan.assignments else {}
    for _, assignment in plan.assignments:
        action = _action(existing_assignments.get(assignment.scenario), assignment.selector)
        if action != "unchanged" and not dry_run:
            store.set_assignment(session, assignment.scenario, assignment.selector, now)
            repo.record_event(
                session,
                f"ScenarioAssignment{action.capitalize()}",
                f"scenario/{assignment.scenario}",
                f"selector {assignment.selector!r}",
                now,
            )
        outcome.results.append(Result(manifests.SCENARIO_ASSIGNMENT, assignment.scenario, action, None))


def _store_application(
    session: Session, box: SecretBox, app: manifests.ApplicationDocument, *, dry_run: bool, now: datetime
) -> Result:
    row = store.application(session, app.name)
    if (
        row is not None
        and canonical_json(row.manifest) == canonical_json(app.manifest)
        and open_credentials(box, app.name, row.credentials) == app.credentials
    ):
        return Result(manifests.APPLICATION, app.name, "unchanged", row.revision)
    action = "updated" if row is not None else "created"
    revision = (row.revision if row else 0) + 1
    if not dry_run:
        revision = store.write_application(
            session,
            name=app.name,
            uid=row.uid if row else str(uuid.uuid4()),
            manifest=app.manifest,
            labels=app.labels,
            scenarios=app.scenarios,
            credentials=seal_credentials(box, app.name, app.credentials),
            now=now,
        )
        repo.record_event(
            session,
            f"Application{action.capitalize()}",
            f"application/{app.name}",
            f"revision {revision}, scenarios {', '.join(app.scenarios) or 'none'}",
            now,
        )
    return Result(manifests.APPLICATION, app.name, action, revision)


def _action(current: Any, wanted: Any) -> str:
    if current is None:
        return "created"
    return "unchanged" if canonical_json(current) == canonical_json(wanted) else "updated"
