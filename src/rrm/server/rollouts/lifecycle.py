"""Starting, ending and steering rollouts, always inside the caller's write transaction.

A component revision that names a `rrm.io/rollout-policy` starts a rollout (superseding the component's
active one); the rollout starts its first wave at once. Rolling back (automatically, or an operator's
abort) stores the content of the last good revision as a new revision, which starts no rollout; for a
component that had no earlier revision that means deleting it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, or_, select
from sqlalchemy.orm import Session

from rrm.core import rollouts as core
from rrm.core.resources import selector_of
from rrm.core.rollouts import Target, policy_from_spec, policy_name_of
from rrm.dapr import validate_component
from rrm.server.metrics import ROLLOUT_EVENTS, ROLLOUT_WAVES_STARTED
from rrm.server.rollouts.records import assignment_of, progress_of, waves_json, waves_of, write_progress
from rrm.store import repositories as repo
from rrm.store import rollouts as rollout_repo
from rrm.store.tables import Rollout

ACTION_AUTO_ROLLBACK = "auto-rollback"
ACTION_ABORT = "rollout-abort"


_ROLLOUTS = cast(Table, Rollout.__table__)
_ACTIVE_ID = (  # built once: every component write asks
    select(_ROLLOUTS.c.id)
    .where(
        _ROLLOUTS.c.component == bindparam("component"),
        # not `in_`, whose list is an expanding parameter: its SQL is rendered again at every execution
        or_(*(_ROLLOUTS.c.state == state for state in core.ACTIVE_STATES)),
    )
    .limit(1)
)


class RolloutNotFound(Exception):
    pass


class CannotRollBack(Exception):
    """The last good revision cannot be stored again (e.g. a secret it references is gone)."""


def subject(component: str) -> str:
    return f"component/{component}"


def on_component_revision(
    session: Session,
    name: str,
    manifest: Mapping[str, Any] | None,
    revision: int,
    previous: int | None,
    now: datetime,
) -> None:
    """Called in the transaction that stored `revision` of component `name` (None: deleted), whose live
    revision before was `previous`. Supersedes the active rollout; starts one when the revision names a
    policy. The new rollout rolls forward from the superseded one's starting point, each runtime keeping
    (pinned) what the superseded one gave it until its own wave starts."""
    from_revision, pinned = _supersede(session, name, manifest is None, revision, previous, now)
    policy_name = policy_name_of(manifest) if manifest is not None else None
    if manifest is None or not policy_name:
        return
    policy_row = rollout_repo.policy(session, policy_name)
    if policy_row is None:  # refused by validation before anything is stored
        raise ValueError(f"no RolloutPolicy named {policy_name!r}")
    policy = policy_from_spec(policy_row.name, policy_row.spec)

    targets = _targets(session, name, manifest, from_revision, pinned)
    waves = core.plan_waves(targets, policy)
    row = rollout_repo.add_rollout(
        session,
        Rollout(
            component=name,
            from_revision=from_revision,
            to_revision=revision,
            policy_name=policy.name,
            policy=policy.spec(),
            state=core.PROGRESSING,
            waves=waves_json(waves),
            wave_starts=[],
            deadline_from=None,
            ready_since=None,
            failures={},
            pinned=pinned,
            message="",
            version=0,
            created_at=now,
            updated_at=now,
            finished_at=None,
        ),
    )
    since = f"revision {from_revision}" if from_revision is not None else "nothing"
    repo.record_event(
        session,
        "RolloutStarted",
        subject(name),
        f"{since} → revision {revision}, policy {policy.name}: "
        f"{len(waves)} wave(s) over {len(targets)} runtime(s)",
        now,
    )
    ROLLOUT_EVENTS.labels("RolloutStarted").inc()
    store(session, row, core.start(waves, now, {t.id: t.name for t in targets}), now, new=True)


def _supersede(
    session: Session, name: str, deleted: bool, revision: int, previous: int | None, now: datetime
) -> tuple[int | None, dict[str, int | None]]:
    """Supersedes the component's active rollout, if any. Returns the revision a new rollout starts from
    and the runtimes pinned to a revision other than that, with the revision each keeps meanwhile."""
    if session.connection().execute(_ACTIVE_ID, {"component": name}).first() is None:
        return previous, {}  # the common case, asked without loading an ORM object
    active = rollout_repo.active_rollout(session, name)
    if active is None:
        return previous, {}
    assignment = assignment_of(active)
    from_revision = active.from_revision
    concerned = [r for wave in waves_of(active) for r in wave.runtimes] + list(assignment.pinned)
    pinned = {r: assignment.revision_for(r) for r in concerned}
    pinned = {r: given for r, given in pinned.items() if given != from_revision}
    why = f"revision {revision} " + ("deletes the component" if deleted else "supersedes it")
    store(session, active, core.supersede(progress_of(active), why), now)
    return from_revision, pinned


def _targets(
    session: Session,
    name: str,
    manifest: Mapping[str, Any],
    from_revision: int | None,
    pinned: Mapping[str, int | None],
) -> list[Target]:
    """The runtimes the new revision, the one rolled forward from, or a pinned one selects, or pinned."""
    selectors = [selector_of(manifest)]
    for earlier in sorted({r for r in (from_revision, *pinned.values()) if r is not None}):
        stored = repo.component_revision(session, name, earlier)
        if stored is not None and stored.manifest is not None:
            selectors.append(selector_of(stored.manifest))
    runtimes = [Target(r.id, r.name, dict(r.labels)) for r in repo.all_runtimes(session)]
    return core.select_targets(runtimes, selectors, also=pinned)


def revisions_kept_by_rollouts(session: Session) -> list[tuple[str, int, Mapping[str, Any]]]:
    """(component, revision, manifest) of each earlier revision an active rollout still hands out: the
    secrets they reference must stay, as for live components."""
    kept: list[tuple[str, int, Mapping[str, Any]]] = []
    for row in rollout_repo.active_rollouts(session):
        for revision in sorted(assignment_of(row).revisions() - {row.to_revision}):
            stored = repo.component_revision(session, row.component, revision)
            if stored is not None and stored.manifest is not None:
                kept.append((row.component, revision, stored.manifest))
    return kept


def store(session: Session, row: Rollout, step: core.Step, now: datetime, *, new: bool = False) -> None:
    """Persist a step with its events; a change in who gets which revision goes on the change feed."""
    before = assignment_of(row) if row.state in core.ACTIVE_STATES and not new else None
    write_progress(row, step.progress, now)
    after = assignment_of(row) if step.progress.active else None
    if new or before != after:
        rollout_repo.record_rollout_change(session, row.component, now)
    for event in step.events:
        repo.record_event(session, event.type, subject(row.component), event.message, now)
        ROLLOUT_EVENTS.labels(event.type).inc()
        if event.type == "RolloutWaveStarted":
            ROLLOUT_WAVES_STARTED.inc()


def restorable(session: Session, row: Rollout) -> Mapping[str, Any] | None:
    """The content to store again (None: the component had none before, so it goes); raises
    CannotRollBack when the last good revision can no longer be stored again."""
    if row.from_revision is None:
        return None
    good = repo.component_revision(session, row.component, row.from_revision)
    if good is None or good.manifest is None:
        raise CannotRollBack(f"revision {row.from_revision} of {row.component} has no content")
    secrets = {s.name: set(s.keys) for s in repo.all_secrets(session)}
    errors = validate_component(good.manifest, secrets=secrets).errors
    if errors:
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise CannotRollBack(f"revision {row.from_revision} is no longer valid: {detail}")
    return good.manifest


def roll_back(session: Session, row: Rollout, action: str, now: datetime) -> None:
    """Store the last good revision's content as a new revision (it starts no rollout); a component that
    had none before the rollout is deleted. Raises CannotRollBack (see `restorable`)."""
    good = restorable(session, row)
    name = row.component
    if good is None:
        if repo.component(session, name) is not None:
            revision = repo.write_component_revision(session, name, None, action, now)
            message = f"revision {revision} removes it again: it had no revision before the rollout"
            repo.record_event(session, "ComponentDeleted", subject(name), message, now)
        return
    revision = repo.write_component_revision(session, name, dict(good), action, now)
    message = (
        f"revision {revision} restores revision {row.from_revision} (rollout of revision {row.to_revision})"
    )
    repo.record_event(session, "ComponentRolledBack", subject(name), message, now)


def settle(session: Session, row: Rollout, step: core.Step, now: datetime) -> None:
    """Store a controller step; a rollback it decided is carried out here, or turned into a pause when
    the last good revision cannot be restored."""
    if step.progress.state != core.ROLLED_BACK:
        store(session, row, step, now)
        return
    try:
        restorable(session, row)
    except CannotRollBack as exc:
        message = f"{step.progress.message}; cannot roll back: {exc}"
        paused = replace(step.progress, state=core.PAUSED, message=message)
        events = [e for e in step.events if e.type != "RolloutRolledBack"]
        store(session, row, core.Step(paused, (*events, core.Event("RolloutPaused", message))), now)
        return
    store(session, row, step, now)
    roll_back(session, row, ACTION_AUTO_ROLLBACK, now)


def control(session: Session, component: str, action: str, now: datetime) -> Rollout:
    """An operator's pause, resume, promote or abort of the component's current rollout.

    Raises RolloutNotFound, core.NotAllowed (the state does not allow it) or CannotRollBack (abort)."""
    row = rollout_repo.active_rollout(session, component) or rollout_repo.latest_rollout(session, component)
    if row is None:
        raise RolloutNotFound(f"component {component!r} has no rollout")
    progress = progress_of(row)
    if action == "pause":
        step = core.pause(progress)
    elif action == "resume":
        step = core.resume(progress, now)
    elif action == "promote":
        step = core.promote(progress)
    elif action == "abort":
        step = core.abort(progress)
        restorable(session, row)
    else:
        raise ValueError(f"unknown rollout action {action!r}")
    store(session, row, step, now)
    if step.progress.state == core.ABORTED:
        roll_back(session, row, ACTION_ABORT, now)
    return row
