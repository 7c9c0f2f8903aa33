"""Component writes as `rrm apply` stores them (Core statements beside the ORM objects of the same
transaction): a live row already loaded follows the write, and the events of a request keep their order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fleet_fixtures import Store, manifest
from sqlalchemy import event

from rrm.server.apply import InvalidInput, RolloutHooks, apply_documents
from rrm.server.rollouts import lifecycle
from rrm.server.state import utcnow
from rrm.store import repositories as repo

HOOKS = RolloutHooks(lifecycle.on_component_revision, lifecycle.revisions_kept_by_rollouts)


def test_a_live_row_loaded_before_a_write_reads_the_new_revision_and_a_deleted_one_is_let_go(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    store.component("c1")
    with store.db.write() as session:
        loaded = repo.component(session, "c1")
        assert loaded is not None and loaded.revision == 1
        repo.write_component_revision(session, "c1", manifest("c1", "env=prod"), "updated", utcnow())
        assert loaded.revision == 2 and repo.component(session, "c1") is loaded
        assert loaded.manifest["metadata"]["annotations"]["rrm.io/selector"] == "env=prod"
        repo.write_component_revision(session, "c1", None, "deleted", utcnow())
        assert repo.component(session, "c1") is None
        assert repo.component_state(session, "c1") == repo.ComponentState(None, None, 3)


def test_each_components_rollout_events_follow_its_own_before_the_next_components(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.runtime("r1", env="prod")
    documents: list[Any] = [
        {"apiVersion": "rrm.io/v1", "kind": "RolloutPolicy", "metadata": {"name": "careful"}, "spec": {}},
    ]
    for name in ("a", "b"):
        document = manifest(name, "env=prod")
        document["metadata"]["annotations"]["rrm.io/rollout-policy"] = "careful"
        document["spec"]["metadata"] = [{"name": "redisHost", "value": "localhost:6379"}]
        documents.append(document)
    with store.db.write() as session:
        apply_documents(session, store.box, documents, HOOKS, dry_run=False, now=utcnow())
    with store.db.read() as session:
        events = [(e.subject, e.type) for e in repo.events_after(session, 0, 100)]
    subjects = [subject for subject, _ in events]
    assert subjects == sorted(subjects, key=["rolloutpolicy/careful", "component/a", "component/b"].index)
    for name in ("a", "b"):
        types = [kind for subject, kind in events if subject == f"component/{name}"]
        assert types[:2] == ["ComponentCreated", "RolloutStarted"]


def valid(name: str, selector: str, secret: str | None = None) -> dict[str, Any]:
    document = manifest(name, selector, secret)
    document["spec"]["metadata"][0] = {"name": "redisHost", "value": "localhost:6379"}
    return document


def test_updating_a_component_that_names_no_secret_and_has_no_rollout_reads_neither(tmp_path: Path) -> None:
    """The write path asks the database only what this write needs: no secret when no reference names
    one, no rollout object when none is active, and the latest revision once."""
    store = Store(tmp_path)
    store.secret("creds", token="t")
    store.component("c1", "env=prod")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = store.db._writer
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with store.db.write() as session:
            outcome = apply_documents(
                session, store.box, [valid("c1", "env=dev")], HOOKS, dry_run=False, now=utcnow()
            )
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    assert [(r.action, r.revision) for r in outcome.results] == [("updated", 2)]
    assert not [s for s in statements if "FROM secrets" in s]
    assert len([s for s in statements if "max(component_revisions.revision)" in s]) == 1
    assert not [s for s in statements if "FROM rollouts" in s and "rollouts.waves" in s]


def test_a_reference_to_a_stored_secret_is_still_checked_against_its_keys(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.secret("creds", password="p")
    good, bad = valid("c1", "env=prod", secret="creds"), valid("c2", "env=prod", secret="creds")
    bad["spec"]["metadata"][1]["secretKeyRef"]["key"] = "missing"
    with store.db.write() as session:
        apply_documents(session, store.box, [good], HOOKS, dry_run=False, now=utcnow())
        with pytest.raises(InvalidInput) as refused:
            apply_documents(session, store.box, [bad], HOOKS, dry_run=False, now=utcnow())
    assert [p.field for p in refused.value.problems] == ["spec.metadata[1].secretKeyRef.key"]
