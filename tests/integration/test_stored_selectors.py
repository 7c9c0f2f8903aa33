"""Selectors an older rrm stored and today's syntax refuses (an empty list, `env in ()`, which it read as the
empty value) neither stop the server nor change what they select; new input with them is still refused."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from rrm.store import Database
from rrm.store import compass as compass_store
from rrm.store import repositories as repo
from rrm.store import rollouts as rollout_repo

from .harness import ServerProcess, apply, apply_refused, component, expect_status, register

OLD = "env in ()"  # what rrm accepted before it refused empty lists, meaning env in (,): env is ""


def _store_as_an_older_rrm(server: ServerProcess, component_name: str) -> None:
    """Rewrite what the API stored with the selector an older rrm would have stored, through the same store
    functions its apply, scenario and policy writes used (they check no selector)."""
    url = server.database_url or f"sqlite:///{server.data_dir / 'rrm.db'}"
    db = Database(url)
    now = datetime.now(UTC)
    try:
        with db.write() as session:
            live = repo.component(session, component_name)
            assert live is not None
            manifest = copy.deepcopy(dict(live.manifest))
            manifest["metadata"]["annotations"]["rrm.io/selector"] = OLD
            repo.write_component_revision(session, component_name, manifest, "updated", now)
            policy = rollout_repo.policy(session, "legacy")
            assert policy is not None
            spec = copy.deepcopy(dict(policy.spec))
            spec["groups"][0]["selector"] = OLD
            rollout_repo.save_policy(session, "legacy", spec, now)
            compass_store.set_assignment(session, "LEGACY", OLD, now)
    finally:
        db.dispose()


def test_selectors_an_older_rrm_stored_keep_their_meaning_and_new_ones_are_refused(
    own_server: ServerProcess,
) -> None:
    admin = own_server.admin
    register(admin, "blank", labels={"env": ""})
    register(admin, "prod", labels={"env": "prod"})
    policy = {
        "apiVersion": "rrm.io/v1",
        "kind": "RolloutPolicy",
        "metadata": {"name": "legacy"},
        "spec": {"groups": [{"name": "blanks", "selector": "env="}]},
    }
    apply(admin, [component("old-placement", "env="), policy])
    expect_status(admin.post("/api/v1/scenarios", json={"name": "LEGACY"}), 201)
    expect_status(admin.put("/api/v1/scenarios/LEGACY/assignment", json={"selector": "env="}), 200)
    own_server.stop()
    _store_as_an_older_rrm(own_server, "old-placement")

    own_server.start()
    admin = own_server.admin
    log = own_server.log_path.read_text()
    for subject in ("component/old-placement", "rolloutpolicy/legacy group blanks", "scenario/LEGACY"):
        assert f"{subject}: the stored selector 'env in ()' has an empty list" in log, log[-3000:]
    placed = expect_status(admin.get("/api/v1/components/old-placement"), 200).json()
    assert placed["selector"] == OLD and [r["name"] for r in placed["runtimes"]] == ["blank"]
    scenarios = expect_status(admin.get("/api/v1/runtimes/blank/scenarios"), 200).json()
    assert "LEGACY" in scenarios["effective"]
    assert (
        "LEGACY" not in expect_status(admin.get("/api/v1/runtimes/prod/scenarios"), 200).json()["effective"]
    )

    rolled = component("rolled", "env", metadata=None)
    rolled["metadata"]["annotations"]["rrm.io/rollout-policy"] = "legacy"
    apply(admin, [rolled])
    waves = expect_status(admin.get("/api/v1/rollouts/rolled"), 200).json()["waves"]
    assert (waves[0]["group"], [r["name"] for r in waves[0]["runtimes"]]) == ("blanks", ["blank"])

    refused = apply_refused(admin, [component("new-placement", OLD)])
    assert [p["field"] for p in refused] == ['metadata.annotations["rrm.io/selector"]']
    response = admin.put("/api/v1/scenarios/LEGACY/assignment", json={"selector": OLD})
    assert response.status_code == 422 and "an empty list" in response.text
