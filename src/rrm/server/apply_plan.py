"""What `rrm apply` would change, decided without I/O.

`read_request` checks every document on its own and against the names it may refer to; `plan` compares
the valid ones with what is stored (read beforehand by `rrm.server.apply` and handed in as `Stored`) and
answers the changes to make, the result of each document and the warnings. Both raise InvalidInput,
naming each field refused, so that a request is stored entirely or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from rrm.core.canonical import canonical_json
from rrm.core.resources import SELECTOR_ANNOTATION, secret_refs, selector_of
from rrm.core.rollouts import (
    POLICY_ANNOTATION,
    POLICY_API_VERSION,
    POLICY_KIND,
    PolicyError,
    RolloutPolicy,
    policy_name_of,
    validate_policy,
)
from rrm.core.scenarios import KINDS as COMPASS_KINDS
from rrm.core.scenarios import RRM_API_VERSION
from rrm.core.selectors import SelectorError, parse_selector
from rrm.dapr import validate_component, validate_secret

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
POLICY_FIELD = f'metadata.annotations["{POLICY_ANNOTATION}"]'
SELECTOR_FIELD = f'metadata.annotations["{SELECTOR_ANNOTATION}"]'
CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"


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


@dataclass(frozen=True)
class Result:
    """What became of one document: `action` is created, updated or unchanged."""

    kind: str
    name: str
    action: str
    revision: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "action": self.action, "revision": self.revision}


@dataclass
class ApplyOutcome:
    results: list[Result] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    """The valid Secrets, Components and RolloutPolicies of one request, by name, with their indexes."""

    secrets: Mapping[str, tuple[int, dict[str, str]]]
    components: Mapping[str, tuple[int, dict[str, Any]]]
    policies: Mapping[str, tuple[int, RolloutPolicy]]
    warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class StoredSecret:
    revision: int
    data: Mapping[str, str]


@dataclass(frozen=True)
class StoredComponent:
    live: Mapping[str, Any] | None  # None: never stored, or deleted
    revision: int | None  # the live revision
    latest: int  # the highest revision ever used, a deletion's included (0: none)


@dataclass(frozen=True)
class SecretUser:
    """A manifest whose secret references must stay valid: a live component (`component` names it, and a
    request storing that component replaces it) or an earlier revision a rollout still hands out."""

    who: str
    manifest: Mapping[str, Any]
    component: str | None = None


@dataclass(frozen=True)
class Stored:
    """What is stored of the names a request touches."""

    secrets: Mapping[str, StoredSecret] = field(default_factory=dict)
    policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name → spec
    components: Mapping[str, StoredComponent] = field(default_factory=dict)
    secret_users: Sequence[SecretUser] = ()


@dataclass(frozen=True)
class SecretChange:
    name: str
    data: Mapping[str, str]
    created: bool


@dataclass(frozen=True)
class PolicyChange:
    policy: RolloutPolicy
    created: bool


@dataclass(frozen=True)
class ComponentChange:
    name: str
    manifest: dict[str, Any]
    action: str
    previous: int | None  # the live revision it replaces
    revision: int  # the revision it is stored as


@dataclass(frozen=True)
class Plan:
    """The writes, in the order they must be made (secrets and policies before the components that name
    them), and each document's result as a dry run answers it."""

    secrets: tuple[SecretChange, ...]
    policies: tuple[PolicyChange, ...]
    components: tuple[ComponentChange, ...]
    results: tuple[Result, ...]
    warnings: tuple[Problem, ...]


def normalize_component(document: Mapping[str, Any]) -> dict[str, Any]:
    """Keep what Dapr reads; fill `spec.metadata: []`, which the CRD requires and users often omit."""
    manifest = {k: _json_copy(document[k]) for k in COMPONENT_TOP_LEVEL if k in document}
    metadata = manifest.get("metadata")
    if isinstance(metadata, Mapping):
        manifest["metadata"] = {k: metadata[k] for k in COMPONENT_METADATA_FIELDS if k in metadata}
    spec = manifest.get("spec")
    if isinstance(spec, dict) and spec.get("metadata") is None:
        spec["metadata"] = []
    return manifest


def _json_copy(value: Any) -> Any:
    """A copy of decoded JSON (dicts, lists and immutable scalars): what `copy.deepcopy` makes of it, at a
    quarter of the cost, without its memo of every object."""
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    return value


def ident(document: Any) -> tuple[str, str]:
    """(kind, name) of a document, empty where it has none."""
    if not isinstance(document, Mapping):
        return "", ""
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return str(document.get("kind") or ""), str(name or "")


def policy_problem(manifest: Mapping[str, Any], policy_exists: Callable[[str], bool]) -> str | None:
    """Why the component's rollout-policy annotation cannot be used, or None (also when there is none)."""
    name = policy_name_of(manifest)
    if name is None:
        return None
    if not name:
        return "must be the name of a RolloutPolicy"
    if not policy_exists(name):
        return f"no RolloutPolicy named {name!r}: apply it first, or in the same request"
    return None


def policies_named(documents: Sequence[Any]) -> set[str]:
    """The RolloutPolicy names the Component documents' annotations name: the only stored policies a
    request needs to know of (`read_request`'s `known_policies`)."""
    names = set()
    for document in documents:
        if (
            not isinstance(document, Mapping)
            or (document.get("apiVersion"), document.get("kind")) != COMPONENT_API
        ):
            continue
        metadata = document.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
        name = annotations.get(POLICY_ANNOTATION) if isinstance(annotations, Mapping) else None
        if isinstance(name, str) and name:
            names.add(name)
    return names


def read_request(
    documents: Sequence[Any], secret_keys: Mapping[str, set[str]], known_policies: Set[str]
) -> Request:
    """The valid documents; raises InvalidInput naming every problem. Compass kinds are skipped (checked by
    `rrm.server.compass.apply`); components are checked against the stored secrets' keys and policies and
    those of the same request."""
    checker = _Checker()
    for index, document in enumerate(documents):
        checker.document(index, document)
    keys = _Overlay({name: set(data) for name, (_, data) in checker.secrets.items()}, secret_keys)
    components: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, manifest in checker.components:
        checker.component(index, manifest, keys, lambda p: p in known_policies or p in checker.policies)
        name = ident(manifest)[1]
        if name in components:
            checker.report(
                index, manifest, "metadata.name", f"component {name!r} appears twice in this request"
            )
        components[name] = (index, manifest)
    if checker.problems:
        raise InvalidInput(checker.problems)
    return Request(checker.secrets, components, checker.policies, tuple(checker.warnings))


class _Overlay(Mapping[str, set[str]]):
    """The request's own secrets over the stored ones, which are looked at only when a name is not the
    request's (a lazily read `secret_keys` stays unread when no reference asks for it)."""

    def __init__(self, own: Mapping[str, set[str]], stored: Mapping[str, set[str]]) -> None:
        self._own = own
        self._stored = stored

    def __getitem__(self, name: str) -> set[str]:
        return self._own[name] if name in self._own else self._stored[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._stored, **self._own})

    def __len__(self) -> int:
        return len({**self._stored, **self._own})


class _Checker:
    """Collects the valid documents of a request, its problems and its warnings."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.secrets: dict[str, tuple[int, dict[str, str]]] = {}
        self.components: list[tuple[int, dict[str, Any]]] = []
        self.policies: dict[str, tuple[int, RolloutPolicy]] = {}

    def report(self, index: int, document: Any, path: str, message: str, *, warning: bool = False) -> None:
        kind, name = ident(document)
        (self.warnings if warning else self.problems).append(Problem(index, kind, name, path, message))

    def document(self, index: int, document: Any) -> None:
        if not isinstance(document, Mapping):
            self.report(index, document, "", "a document must be a mapping")
            return
        api = (document.get("apiVersion"), document.get("kind"))
        fields, what = TOP_LEVEL_FIELDS.get((str(api[0]), str(api[1])), ((), ""))  # api may be unhashable
        for key in document if fields else ():
            if key not in fields:
                self.report(index, document, key, f"not part of {what}; ignored", warning=True)
        if api == SECRET_API:
            self.secret(index, document)
        elif api == COMPONENT_API:
            self.components.append((index, normalize_component(document)))
        elif api == ROLLOUT_POLICY_API:
            self.policy(index, document)
        elif not (api[0] == RRM_API_VERSION and api[1] in COMPASS_KINDS):
            self.report(
                index,
                document,
                "apiVersion" if api[1] in KNOWN_KINDS else "kind",
                f"unsupported {api[0]}/{api[1]}: expected dapr.io/v1alpha1 Component, v1 Secret"
                f" or {RRM_API_VERSION} {', '.join((POLICY_KIND, *COMPASS_KINDS))}",
            )

    def secret(self, index: int, document: Mapping[str, Any]) -> None:
        result, data = validate_secret(document)
        for e in result.errors:
            self.report(index, document, e.field, e.message)
        name = ident(document)[1]
        if result.ok:
            if name in self.secrets:
                self.report(
                    index, document, "metadata.name", f"secret {name!r} appears twice in this request"
                )
            self.secrets[name] = (index, data)

    def policy(self, index: int, document: Mapping[str, Any]) -> None:
        try:
            policy = validate_policy(document)
        except PolicyError as exc:
            for path, message in exc.problems:
                self.report(index, document, path, message)
            return
        if policy.name in self.policies:
            self.report(index, document, "metadata.name", f"{POLICY_KIND} {policy.name!r} appears twice")
        self.policies[policy.name] = (index, policy)

    def component(
        self,
        index: int,
        manifest: dict[str, Any],
        secret_keys: Mapping[str, set[str]],
        policy_exists: Callable[[str], bool],
    ) -> None:
        result = validate_component(manifest, secrets=secret_keys)
        for e in result.errors:
            self.report(index, manifest, e.field, e.message)
        for w in result.warnings:
            self.report(index, manifest, w.field, w.message, warning=True)
        selector = selector_of(manifest)
        annotations = manifest.get("metadata", {}).get("annotations") or {}
        if SELECTOR_ANNOTATION in annotations and selector is None:
            self.report(index, manifest, SELECTOR_FIELD, "must be a string")
        elif selector is not None:
            try:
                parse_selector(selector)
            except SelectorError as exc:
                self.report(index, manifest, SELECTOR_FIELD, str(exc))
        else:
            message = f"no {SELECTOR_ANNOTATION} annotation: the component reaches no runtime"
            self.report(index, manifest, "metadata.annotations", message, warning=True)
        policy_error = policy_problem(manifest, policy_exists)
        if policy_error is not None:
            self.report(index, manifest, POLICY_FIELD, policy_error)


def plan(request: Request, stored: Stored) -> Plan:
    """The changes a valid request makes to what is stored; raises InvalidInput when a secret would lose a
    key that a stored component, or a revision a rollout still hands out, uses."""
    _check_secret_keys_still_used(request, stored.secret_users)
    results: list[Result] = []
    secrets: list[SecretChange] = []
    for name, (_, data) in sorted(request.secrets.items()):
        current = stored.secrets.get(name)
        if current is not None and current.data == data:
            results.append(Result("Secret", name, UNCHANGED, current.revision))
            continue
        secrets.append(SecretChange(name, data, created=current is None))
        action, revision = (CREATED, 0) if current is None else (UPDATED, current.revision)
        results.append(Result("Secret", name, action, revision))
    policies: list[PolicyChange] = []
    for name, (_, policy) in sorted(request.policies.items()):
        spec = stored.policies.get(name)
        action = CREATED if spec is None else UNCHANGED if spec == policy.spec() else UPDATED
        if action != UNCHANGED:
            policies.append(PolicyChange(policy, created=spec is None))
        results.append(Result(POLICY_KIND, name, action, None))
    components: list[ComponentChange] = []
    for name, (_, manifest) in sorted(request.components.items()):
        was = stored.components.get(name, StoredComponent(None, None, 0))
        # equal canonical JSON means equal values (no NaN gets in: rrm.core.bounded refuses it), so values
        # that differ, as in most writes, need no encoding; equal ones may still differ (1 and 1.0)
        if (
            was.live is not None
            and was.live == manifest
            and canonical_json(was.live) == canonical_json(manifest)
        ):
            results.append(Result("Component", name, UNCHANGED, was.revision))
            continue
        action = UPDATED if was.live is not None else CREATED
        previous = was.revision if was.live else None
        components.append(ComponentChange(name, manifest, action, previous, was.latest + 1))
        results.append(Result("Component", name, action, was.latest + 1))
    return Plan(tuple(secrets), tuple(policies), tuple(components), tuple(results), request.warnings)


def _check_secret_keys_still_used(request: Request, users: Sequence[SecretUser]) -> None:
    """A secret update may not drop a key that a stored component (not replaced here) still uses, nor one
    that an earlier revision still handed out by a rollout uses."""
    problems = []
    for user in users:
        if user.component is not None and user.component in request.components:
            continue
        for secret, keys in secret_refs(user.manifest).items():
            if secret in request.secrets:
                index, data = request.secrets[secret]
                for key in sorted(keys - set(data)):
                    message = f"key {key!r} is still used by {user.who}"
                    problems.append(Problem(index, "Secret", secret, f"data.{key}", message))
    if problems:
        raise InvalidInput(problems)


def rollback_problems(
    manifest: Mapping[str, Any], secret_keys: Mapping[str, set[str]], policy_exists: Callable[[str], bool]
) -> list[Problem]:
    """A rollback stores an old manifest again: it must still be valid against today's secrets and
    policies."""
    name = ident(manifest)[1]
    result = validate_component(manifest, secrets=secret_keys)
    problems = [Problem(None, "Component", name, e.field, e.message) for e in result.errors]
    policy_error = policy_problem(manifest, policy_exists)
    if policy_error is not None:
        problems.append(Problem(None, "Component", name, POLICY_FIELD, policy_error))
    return problems
