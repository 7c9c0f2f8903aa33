"""`rrm apply`: validate every document at the boundary, then store all of them in one transaction.

Nothing is stored unless every document is valid. Secrets go first, so a component may reference a
secret created by the same request. Unchanged documents create no revision.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rrm.core.canonical import canonical_json
from rrm.core.resources import SELECTOR_ANNOTATION, secret_refs, selector_of
from rrm.core.rollouts import POLICY_API_VERSION, POLICY_KIND, PolicyError, RolloutPolicy, validate_policy
from rrm.core.scenarios import KINDS as COMPASS_KINDS
from rrm.core.scenarios import RRM_API_VERSION
from rrm.core.selectors import SelectorError, parse_selector
from rrm.dapr import validate_component, validate_secret
from rrm.server.rollouts.lifecycle import (
    POLICY_FIELD,
    on_component_revision,
    policy_problem,
    revisions_kept_by_rollouts,
)
from rrm.server.secretbox import SecretBox
from rrm.store import repositories as repo
from rrm.store import rollouts as rollout_repo

COMPONENT_API = ("dapr.io/v1alpha1", "Component")
SECRET_API = ("v1", "Secret")
ROLLOUT_POLICY_API = (POLICY_API_VERSION, POLICY_KIND)
COMPONENT_METADATA_FIELDS = ("name", "namespace", "labels", "annotations")
COMPONENT_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "auth", "scopes")
SECRET_TOP_LEVEL = ("apiVersion", "kind", "metadata", "type", "data", "stringData")
# the top-level fields of a kind, and its name; any other field is warned about (refused with --strict)
TOP_LEVEL_FIELDS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    COMPONENT_API: ((*COMPONENT_TOP_LEVEL, "status"), "a Dapr Component"),
    SECRET_API: (SECRET_TOP_LEVEL, "a Secret as rrm reads it"),
}
KNOWN_KINDS = (COMPONENT_API[1], SECRET_API[1], POLICY_KIND, *COMPASS_KINDS)


@dataclass(frozen=True)
class Problem:
    document: int | None
    kind: str
    name: str
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "document": self.document,
            "kind": self.kind,
            "name": self.name,
            "field": self.field,
            "message": self.message,
        }


class InvalidInput(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


class Conflict(Exception):
    pass


@dataclass
class ApplyOutcome:
    results: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


@dataclass
class _Parsed:
    secrets: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)  # name → (doc index, data)
    components: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    policies: dict[str, tuple[int, RolloutPolicy]] = field(default_factory=dict)


def normalize_component(document: Mapping[str, Any]) -> dict[str, Any]:
    """Keep what Dapr reads; fill `spec.metadata: []`, which the CRD requires and users often omit."""
    manifest = {k: copy.deepcopy(document[k]) for k in COMPONENT_TOP_LEVEL if k in document}
    metadata = manifest.get("metadata")
    if isinstance(metadata, Mapping):
        manifest["metadata"] = {k: metadata[k] for k in COMPONENT_METADATA_FIELDS if k in metadata}
    spec = manifest.get("spec")
    if isinstance(spec, dict) and spec.get("metadata") is None:
        spec["metadata"] = []
    return manifest


def _ident(document: Any) -> tuple[str, str]:
    if not isinstance(document, Mapping):
        return "", ""
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return str(document.get("kind") or ""), str(name or "")


def _parse(
    documents: Sequence[Any], existing_secret_keys: Mapping[str, set[str]], known_policies: set[str]
) -> tuple[_Parsed, ApplyOutcome]:
    parsed, outcome = _Parsed(), ApplyOutcome()
    problems: list[Problem] = []

    def problem(index: int, document: Any, path: str, message: str, *, warning: bool = False) -> None:
        kind, name = _ident(document)
        (outcome.warnings if warning else problems).append(Problem(index, kind, name, path, message))

    for index, document in enumerate(documents):
        if not isinstance(document, Mapping):
            problem(index, document, "", "a document must be a mapping")
            continue
        api = (document.get("apiVersion"), document.get("kind"))
        fields, what = TOP_LEVEL_FIELDS.get((str(api[0]), str(api[1])), ((), ""))  # api may be unhashable
        for key in document if fields else ():
            if key not in fields:
                problem(index, document, key, f"not part of {what}; ignored", warning=True)
        if api == SECRET_API:
            result, data = validate_secret(document)
            for e in result.errors:
                problem(index, document, e.field, e.message)
            name = _ident(document)[1]
            if result.ok:
                if name in parsed.secrets:
                    problem(
                        index, document, "metadata.name", f"secret {name!r} appears twice in this request"
                    )
                parsed.secrets[name] = (index, data)
        elif api == COMPONENT_API:
            parsed.components[f"#{index}"] = (index, normalize_component(document))
        elif api == ROLLOUT_POLICY_API:
            try:
                policy = validate_policy(document)
            except PolicyError as exc:
                for path, message in exc.problems:
                    problem(index, document, path, message)
            else:
                if policy.name in parsed.policies:
                    problem(index, document, "metadata.name", f"{POLICY_KIND} {policy.name!r} appears twice")
                parsed.policies[policy.name] = (index, policy)
        elif api[0] == RRM_API_VERSION and api[1] in COMPASS_KINDS:
            continue  # checked and stored by rrm.server.compass.apply
        else:
            problem(
                index,
                document,
                "apiVersion" if api[1] in KNOWN_KINDS else "kind",
                f"unsupported {api[0]}/{api[1]}: expected dapr.io/v1alpha1 Component, v1 Secret"
                f" or {RRM_API_VERSION} {', '.join((POLICY_KIND, *COMPASS_KINDS))}",
            )

    secret_keys = {**existing_secret_keys, **{n: set(d) for n, (_, d) in parsed.secrets.items()}}
    components: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, manifest in parsed.components.values():
        result = validate_component(manifest, secrets=secret_keys)
        for e in result.errors:
            problem(index, manifest, e.field, e.message)
        for w in result.warnings:
            problem(index, manifest, w.field, w.message, warning=True)
        selector = selector_of(manifest)
        annotations = manifest.get("metadata", {}).get("annotations") or {}
        if SELECTOR_ANNOTATION in annotations and selector is None:
            problem(index, manifest, f'metadata.annotations["{SELECTOR_ANNOTATION}"]', "must be a string")
        elif selector is not None:
            try:
                parse_selector(selector)
            except SelectorError as exc:
                problem(index, manifest, f'metadata.annotations["{SELECTOR_ANNOTATION}"]', str(exc))
        else:
            problem(
                index,
                manifest,
                "metadata.annotations",
                f"no {SELECTOR_ANNOTATION} annotation: the component reaches no runtime",
                warning=True,
            )
        policy_error = policy_problem(manifest, lambda p: p in known_policies or p in parsed.policies)
        if policy_error is not None:
            problem(index, manifest, POLICY_FIELD, policy_error)
        name = _ident(manifest)[1]
        if name in components:
            problem(index, manifest, "metadata.name", f"component {name!r} appears twice in this request")
        components[name] = (index, manifest)
    parsed.components = components
    if problems:
        raise InvalidInput(problems)
    return parsed, outcome


def apply_documents(
    session: Session, box: SecretBox, documents: Sequence[Any], *, dry_run: bool, now: datetime
) -> ApplyOutcome:
    """Validate and store; raises InvalidInput (nothing stored) or Conflict."""
    existing = {s.name: s for s in repo.all_secrets(session)}
    policies = {p.name for p in rollout_repo.all_policies(session)}
    parsed, outcome = _parse(documents, {name: set(s.keys) for name, s in existing.items()}, policies)
    _check_secret_keys_still_used(session, parsed)

    for name, (_, data) in sorted(parsed.secrets.items()):
        current = existing.get(name)
        if current is not None and box.open(name, current.ciphertext) == data:
            outcome.results.append(
                {"kind": "Secret", "name": name, "action": "unchanged", "revision": current.revision}
            )
            continue
        revision = current.revision if dry_run and current else 0
        if not dry_run:
            revision = repo.write_secret(session, name, sorted(data), box.seal(name, data), now)
            repo.record_event(
                session,
                "SecretUpdated" if current else "SecretCreated",
                f"secret/{name}",
                f"keys: {', '.join(sorted(data))}",
                now,
            )
        outcome.results.append(
            {
                "kind": "Secret",
                "name": name,
                "action": "updated" if current else "created",
                "revision": revision,
            }
        )

    _store_policies(session, parsed, outcome, dry_run=dry_run, now=now)
    for name, (_, manifest) in sorted(parsed.components.items()):
        live = repo.component(session, name)
        if live is not None and canonical_json(live.manifest) == canonical_json(manifest):
            outcome.results.append(
                {"kind": "Component", "name": name, "action": "unchanged", "revision": live.revision}
            )
            continue
        action = "updated" if live else "created"
        revision = repo.latest_revision(session, name) + 1
        if not dry_run:
            previous = live.revision if live else None
            revision = repo.write_component_revision(session, name, manifest, action, now)
            repo.record_event(
                session, f"Component{action.capitalize()}", f"component/{name}", f"revision {revision}", now
            )
            on_component_revision(session, name, manifest, revision, previous, now)
        outcome.results.append({"kind": "Component", "name": name, "action": action, "revision": revision})
    return outcome


def _store_policies(
    session: Session, parsed: _Parsed, outcome: ApplyOutcome, *, dry_run: bool, now: datetime
) -> None:
    """RolloutPolicies go before the components, which may name one created by the same request."""
    for name, (_, policy) in sorted(parsed.policies.items()):
        current = rollout_repo.policy(session, name)
        action = "created" if current is None else "unchanged" if current.spec == policy.spec() else "updated"
        if action != "unchanged" and not dry_run:
            rollout_repo.save_policy(session, name, policy.spec(), now)
            message = ", ".join(f"{k}: {v}" for k, v in policy.spec().items() if k != "groups")
            groups = " → ".join(g.selector for g in policy.groups)
            repo.record_event(
                session,
                f"{POLICY_KIND}{action.capitalize()}",
                f"rolloutpolicy/{name}",
                f"groups: {groups or 'none'}; {message}",
                now,
            )
        outcome.results.append({"kind": POLICY_KIND, "name": name, "action": action, "revision": None})


def _check_secret_keys_still_used(session: Session, parsed: _Parsed) -> None:
    """A secret update may not drop a key that a stored component (not replaced here) still uses, nor one
    that an earlier revision still handed out by a rollout uses."""
    if not parsed.secrets:
        return
    problems = []
    in_use: list[tuple[str, Mapping[str, Any]]] = [
        (f"component {r.name!r}", r.manifest)
        for r in repo.all_components(session)
        if r.name not in parsed.components
    ]
    in_use += [
        (f"revision {revision} of component {name!r}, which its rollout still hands out", manifest)
        for name, revision, manifest in revisions_kept_by_rollouts(session)
    ]
    for user, manifest in in_use:
        for secret, keys in secret_refs(manifest).items():
            if secret in parsed.secrets:
                index, data = parsed.secrets[secret]
                for key in sorted(keys - set(data)):
                    problems.append(
                        Problem(
                            index,
                            "Secret",
                            secret,
                            f"data.{key}",
                            f"key {key!r} is still used by {user}",
                        )
                    )
    if problems:
        raise InvalidInput(problems)


def revalidate_for_rollback(session: Session, manifest: Mapping[str, Any]) -> None:
    """A rollback re-stores an old manifest: it must still be valid against today's secrets and policies."""
    keys = {s.name: set(s.keys) for s in repo.all_secrets(session)}
    result = validate_component(manifest, secrets=keys)
    name = _ident(manifest)[1]
    problems = [Problem(None, "Component", name, e.field, e.message) for e in result.errors]
    policy_error = policy_problem(manifest, lambda p: rollout_repo.policy(session, p) is not None)
    if policy_error is not None:
        problems.append(Problem(None, "Component", name, POLICY_FIELD, policy_error))
    if problems:
        raise InvalidInput(problems)
