"""`rrm apply`: read what a request touches, plan it (`rrm.server.apply_plan`, pure), store the plan in the
caller's transaction.

Nothing is stored unless every document is valid. Secrets go first, so a component may reference a
secret created by the same request. Unchanged documents create no revision. A stored component revision
is handed to the rollout controller through `RolloutHooks`, which the app wires in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rrm.core.rollouts import POLICY_KIND
from rrm.server.apply_plan import (
    ApplyOutcome,
    InvalidInput,
    Plan,
    Problem,
    Request,
    Result,
    SecretUser,
    Stored,
    StoredComponent,
    StoredSecret,
    plan,
    policies_named,
    read_request,
    rollback_problems,
)
from rrm.server.secretbox import SecretBox
from rrm.store import repositories as repo
from rrm.store import rollouts as rollout_repo

__all__ = ["ApplyOutcome", "Conflict", "InvalidInput", "Problem", "Result", "RolloutHooks", "apply_documents"]


class Conflict(Exception):
    pass


@dataclass(frozen=True)
class RolloutHooks:
    """The rollout controller as apply sees it: told of each component revision stored (None: deleted,
    with the live revision it replaces), and asked which earlier revisions its rollouts still hand out
    (component, revision, manifest), whose secrets must stay."""

    on_component_revision: Callable[[Session, str, Mapping[str, Any] | None, int, int | None, datetime], None]
    revisions_kept: Callable[[Session], list[tuple[str, int, Mapping[str, Any]]]]


def apply_documents(
    session: Session,
    box: SecretBox,
    documents: Sequence[Any],
    rollouts: RolloutHooks,
    *,
    dry_run: bool,
    now: datetime,
) -> ApplyOutcome:
    """Validate and store; raises InvalidInput (nothing stored)."""
    named = policies_named(documents)
    policies = {name for name in named if rollout_repo.policy(session, name) is not None}
    request = read_request(documents, _StoredSecretKeys(session), policies)
    changes = plan(request, _stored(session, box, request, rollouts))
    results = list(changes.results) if dry_run else _store(session, box, changes, rollouts, now)
    return ApplyOutcome(results, list(changes.warnings))


class _StoredSecretKeys(Mapping[str, set[str]]):
    """The stored secrets' key names, read when first asked for: most components reference no secret,
    and their writes need not read every secret."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._keys: dict[str, set[str]] | None = None

    def _read(self) -> dict[str, set[str]]:
        if self._keys is None:
            self._keys = repo.secret_keys(self._session)
        return self._keys

    def __getitem__(self, name: str) -> set[str]:
        return self._read()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def _stored(session: Session, box: SecretBox, request: Request, rollouts: RolloutHooks) -> Stored:
    secrets = {}
    for name in request.secrets:
        row = repo.secret(session, name)
        if row is not None:
            secrets[name] = StoredSecret(row.revision, box.open(name, row.ciphertext))
    policies = {}
    for name in request.policies:
        policy = rollout_repo.policy(session, name)
        if policy is not None:
            policies[name] = policy.spec
    components = {}
    for name in request.components:
        state = repo.component_state(session, name)
        components[name] = StoredComponent(state.manifest, state.revision, state.latest)
    return Stored(secrets, policies, components, _secret_users(session, rollouts) if request.secrets else ())


def _secret_users(session: Session, rollouts: RolloutHooks) -> list[SecretUser]:
    users = [SecretUser(f"component {r.name!r}", r.manifest, r.name) for r in repo.all_components(session)]
    users += [
        SecretUser(f"revision {revision} of component {name!r}, which its rollout still hands out", manifest)
        for name, revision, manifest in rollouts.revisions_kept(session)
    ]
    return users


def _store(
    session: Session, box: SecretBox, changes: Plan, rollouts: RolloutHooks, now: datetime
) -> list[Result]:
    """Make the planned writes, with their events; the results carry the revisions stored."""
    stored: dict[tuple[str, str], int] = {}
    for secret in changes.secrets:
        data = dict(secret.data)
        stored["Secret", secret.name] = repo.write_secret(
            session, secret.name, sorted(data), box.seal(secret.name, data), now
        )
        kind = "SecretCreated" if secret.created else "SecretUpdated"
        repo.record_event(session, kind, f"secret/{secret.name}", f"keys: {', '.join(sorted(data))}", now)
    for change in changes.policies:
        policy = change.policy
        rollout_repo.save_policy(session, policy.name, policy.spec(), now)
        message = ", ".join(f"{k}: {v}" for k, v in policy.spec().items() if k != "groups")
        groups = " → ".join(g.selector for g in policy.groups)
        kind = f"{POLICY_KIND}{'Created' if change.created else 'Updated'}"
        repo.record_event(
            session, kind, f"rolloutpolicy/{policy.name}", f"groups: {groups or 'none'}; {message}", now
        )
    for component in changes.components:
        name = component.name
        session.flush()  # the ORM writes before (secrets, policies, a rollout's) first, their events in order
        revision = repo.write_component_revision(
            session, name, component.manifest, component.action, now, component.revision
        )
        stored["Component", name] = revision
        kind = f"Component{component.action.capitalize()}"
        repo.record_events(session, [(kind, f"component/{name}", f"revision {revision}")], now)
        rollouts.on_component_revision(session, name, component.manifest, revision, component.previous, now)
    return [replace(r, revision=stored.get((r.kind, r.name), r.revision)) for r in changes.results]


def revalidate_for_rollback(session: Session, manifest: Mapping[str, Any]) -> None:
    """A rollback re-stores an old manifest: it must still be valid against today's secrets and policies."""
    keys = repo.secret_keys(session)
    problems = rollback_problems(manifest, keys, lambda p: rollout_repo.policy(session, p) is not None)
    if problems:
        raise InvalidInput(problems)
