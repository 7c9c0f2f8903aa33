"""Component writes as `rrm apply` stores them (Core statements beside the ORM objects of the same
transaction): a live row already loaded follows the write, and the events of a request keep their order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet_fixtures import Store, manifest

from rrm.server.apply import RolloutHooks, apply_documents
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
