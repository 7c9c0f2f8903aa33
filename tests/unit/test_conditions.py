"""Ready means loaded: how a runtime's conditions and a rollout's view of it read the agent's per-component
judgement of the sidecar (`loaded`), and reports of agents that did not judge."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rrm.core import rollouts
from rrm.core.conditions import Observed, ready, synced

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SIDECAR = {"reachable": True, "components": [{"name": "a"}]}


def observed(
    resources: list[dict[str, Any]], sidecar: dict[str, Any] | None = SIDECAR, **report: Any
) -> Observed:
    return Observed(NOW, 60.0, "h1", {"resources": resources, "sidecar": sidecar, **report})


def result(
    name: str, state: str = "applied", loaded: bool | None = None, message: str = ""
) -> dict[str, Any]:
    return {"kind": "Component", "name": name, "state": state, "loaded": loaded, "message": message}


def test_ready_when_every_component_is_loaded() -> None:
    condition = ready(observed([result("a", loaded=True), result("b", loaded=True)]), "h1", ["a", "b"])
    assert (condition.status, condition.reason) == ("True", "Loaded")


def test_loading_while_the_agent_waits_for_the_sidecar() -> None:
    condition = ready(observed([result("a", loaded=True), result("b", loaded=False)]), "h1", ["a", "b"])
    assert (condition.status, condition.reason) == ("False", "Loading")
    assert condition.message == "waiting for the sidecar to load: b"


def test_not_loaded_by_the_deadline_names_the_components_and_why() -> None:
    late = result("b", "failed", loaded=False, message="not loaded within the load deadline (60 s)")
    condition = ready(observed([result("a", loaded=True), late]), "h1", ["a", "b"])
    assert (condition.status, condition.reason) == ("False", "NotLoaded")
    assert condition.message == "sidecar has not loaded: b (not loaded within the load deadline (60 s))"


def test_an_apply_failure_comes_first() -> None:
    late = result("b", "failed", loaded=False, message="late")
    broken = result("c", "failed", message="could not write")
    condition = ready(observed([late, broken]), "h1", ["b", "c"])
    assert (condition.reason, condition.message) == ("ApplyFailed", "c: could not write")


def test_a_component_the_agent_cannot_judge_counts_as_applied() -> None:
    # scoped to another app id: this sidecar does not list it, and is not expected to
    condition = ready(
        observed([result("a", loaded=True), result("other", loaded=None)]), "h1", ["a", "other"]
    )
    assert (condition.status, condition.reason) == ("True", "Loaded")
    assert ready(observed([result("a")], sidecar=None), "h1", ["a"]).reason == "Applied"


def test_a_removed_component_the_sidecar_still_holds_past_the_deadline_is_not_unloaded() -> None:
    stale = result("old", "failed", loaded=True, message="removed, but still listed after the load deadline")
    condition = ready(observed([result("a", loaded=True), stale]), "h1", ["a"])
    assert (condition.status, condition.reason) == ("False", "NotUnloaded")
    assert condition.message == (
        "sidecar has not unloaded: old (removed, but still listed after the load deadline)"
    )
    # failures come before what is still loading, and an apply failure before everything
    assert ready(observed([result("a", loaded=False), stale]), "h1", ["a"]).reason == "NotUnloaded"
    late = result("a", "failed", loaded=False, message="late")
    assert ready(observed([late, stale]), "h1", ["a"]).reason == "NotLoaded"
    broken = ready(observed([result("a", "failed", message="could not write"), stale]), "h1", ["a"])
    assert (broken.reason, broken.message) == ("ApplyFailed", "a: could not write")


def test_reports_without_the_agents_judgement_are_judged_by_the_sidecars_list() -> None:
    legacy = [{"name": "a", "state": "applied"}, {"name": "b", "state": "applied"}]
    condition = ready(observed(legacy), "h1", ["a", "b"])
    assert (condition.reason, condition.message) == ("NotLoaded", "sidecar has not loaded: b")


def test_not_synced_says_what_the_agent_says() -> None:
    waiting = Observed(NOW, 60.0, None, {"message": "3 object(s) of an earlier state are still in place"})
    assert synced(waiting, "h1").message == "3 object(s) of an earlier state are still in place"
    assert synced(None, "h1").message == "the agent has applied no desired state yet"


def health(resources: list[dict[str, Any]]) -> rollouts.Health:
    return rollouts.runtime_health(observed(resources), "h1", "b", True, NOW, 3.0)


def test_a_rollout_counts_a_component_not_loaded_by_the_deadline_failed_in_the_servers_words() -> None:
    late = health([result("b", "failed", loaded=False, message="not loaded within the load deadline (60 s)")])
    assert late == rollouts.Health(
        rollouts.FAILED, "applied; the sidecar has not loaded it: not loaded within the load deadline (60 s)"
    )
    waiting = health([result("b", loaded=False, message="written; waiting for the sidecar to load it")])
    assert waiting == rollouts.Health(rollouts.UPDATING, "applied; the sidecar has not loaded it")
    assert health([result("b", loaded=True)]) == rollouts.Health(
        rollouts.READY, "applied and loaded by the sidecar"
    )
    assert health([result("b", "failed", message="conflict")]) == rollouts.Health(rollouts.FAILED, "conflict")
