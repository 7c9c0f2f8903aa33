"""The pure core of progressive rollouts: policy parsing, wave planning, revision choice, runtime health and
the controller's step."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrm.core import rollouts as core
from rrm.core.conditions import Observed
from rrm.core.rollouts import (
    Amount,
    Assignment,
    Health,
    PolicyError,
    Progress,
    RolloutPolicy,
    Target,
    Wave,
    format_duration,
    parse_amount,
    parse_duration,
    plan_waves,
    policy_from_spec,
    runtime_health,
    select_targets,
    validate_policy,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
READY = Health(core.READY, "applied")
UPDATING = Health(core.UPDATING, "not applied yet")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def policy_document(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "rrm.io/v1", "kind": "RolloutPolicy", "metadata": {"name": "careful"}, "spec": spec}


def problems_of(**spec: Any) -> dict[str, str]:
    with pytest.raises(PolicyError) as caught:
        validate_policy(policy_document(**spec))
    return dict(caught.value.problems)


def policy(**overrides: Any) -> RolloutPolicy:
    return replace(RolloutPolicy("p"), **overrides)


# --- durations and amounts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1m30s", 90),
        ("1h", 3600),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("45", 45),
        (2, 2),
    ],
)
def test_durations_read_go_style_and_plain_seconds(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1s", "1m 30s", True, None, "s", -3])
def test_bad_durations_are_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**9))
def test_formatted_durations_read_back_exactly(millis: int) -> None:
    assert parse_duration(format_duration(millis / 1000)) == millis / 1000


def test_amounts_are_counts_or_percentages_rounded_up() -> None:
    assert parse_amount(3, minimum=1) == Amount(3)
    assert parse_amount("25%", minimum=1) == Amount(25, percent=True)
    assert Amount(25, percent=True).of(10) == 3
    assert Amount(0).of(10) == 0
    for bad in ("0%", "101%", 0, "x", 1.5, True):
        with pytest.raises(ValueError):
            parse_amount(bad, minimum=1)


# --- the policy ----------------------------------------------------------------------------------------


def test_a_policy_without_spec_rolls_out_all_at_once_and_pauses_on_failure() -> None:
    parsed = validate_policy(policy_document())
    assert parsed == RolloutPolicy("careful")
    assert parsed.max_concurrency == Amount(100, percent=True)
    assert parsed.on_failure == core.PAUSE


def test_a_full_policy_is_read_and_its_normalised_spec_reads_back_the_same() -> None:
    parsed = validate_policy(
        policy_document(
            groups=[{"name": "canary", "selector": "canary=true"}, {"selector": "region in (eu)"}],
            maxConcurrency="50%",
            minSuccessTime="1m30s",
            maxFailures=2,
            progressDeadline="10m",
            onFailure="rollback",
        )
    )
    assert parsed.groups == (core.Group("canary", "canary=true"), core.Group("group-2", "region in (eu)"))
    assert (parsed.min_success_seconds, parsed.progress_deadline_seconds) == (90, 600)
    assert parsed.spec()["minSuccessTime"] == "1m30s"
    assert policy_from_spec("careful", parsed.spec()) == parsed


def test_every_bad_field_is_named() -> None:
    problems = problems_of(
        groups=[{"selector": "env in (a"}, {"name": "Bad_Name", "selector": "x"}, {"selector": 3}],
        maxConcurrency="0%",
        minSuccessTime="soon",
        maxFailures=-1,
        progressDeadline="0s",
        onFailure="explode",
        minSuccesTime="30s",
    )
    assert set(problems) == {
        "spec.groups[0].selector",
        "spec.groups[1].name",
        "spec.groups[2].selector",
        "spec.maxConcurrency",
        "spec.minSuccessTime",
        "spec.maxFailures",
        "spec.progressDeadline",
        "spec.onFailure",
        "spec.minSuccesTime",
    }
    assert "unknown field" in problems["spec.minSuccesTime"]


def test_group_names_are_unique_and_rest_is_reserved() -> None:
    problems = problems_of(groups=[{"name": "a", "selector": "x"}, {"name": "a", "selector": "y"}])
    assert "twice" in problems["spec.groups[1].name"]
    assert "spec.groups[0].name" in problems_of(groups=[{"name": "rest", "selector": "x"}])


def test_the_policy_name_must_be_a_dns_label() -> None:
    with pytest.raises(PolicyError) as caught:
        validate_policy({"metadata": {"name": "No"}, "spec": {}})
    assert [f for f, _ in caught.value.problems] == ["metadata.name"]


def test_policy_name_of_reads_the_annotation() -> None:
    assert core.policy_name_of({"metadata": {"annotations": {core.POLICY_ANNOTATION: "p"}}}) == "p"
    assert core.policy_name_of({"metadata": {}}) is None
    assert core.policy_name_of({"metadata": {"annotations": {core.POLICY_ANNOTATION: 3}}}) == ""


# --- planning ------------------------------------------------------------------------------------------


def targets(*specs: tuple[str, dict[str, str]]) -> list[Target]:
    return [Target(f"id-{name}", name, labels) for name, labels in specs]


def test_targets_are_the_runtimes_either_revision_selects_sorted_by_name() -> None:
    runtimes = targets(("c", {"env": "prod"}), ("a", {"env": "dev"}), ("b", {"env": "test"}))
    chosen = select_targets(runtimes, ["env=prod", "env=dev", None], also=["id-b"])
    assert [t.name for t in chosen] == ["a", "b", "c"]
    assert select_targets(runtimes, [None]) == []


def test_canary_group_goes_first_then_waves_of_a_percentage_of_the_remaining() -> None:
    runtimes = targets(*((f"r{i}", {}) for i in range(10)), ("z-canary", {"canary": "true"}))
    waves = plan_waves(
        runtimes,
        policy(groups=(core.Group("canary", "canary=true"),), max_concurrency=Amount(50, percent=True)),
    )
    assert waves[0] == Wave("canary", ("id-z-canary",))
    # remaining 10 → 5, then 5 → 3, 2 → 1, 1 → 1
    assert [len(w.runtimes) for w in waves[1:]] == [5, 3, 1, 1]
    assert {w.group for w in waves[1:]} == {"rest"}
    assert waves[1].runtimes == ("id-r0", "id-r1", "id-r2", "id-r3", "id-r4")


def test_without_groups_or_concurrency_everything_is_one_wave() -> None:
    waves = plan_waves(targets(("a", {}), ("b", {})), policy())
    assert waves == (Wave("all", ("id-a", "id-b")),)
    assert plan_waves([], policy()) == ()


labels_strategy = st.fixed_dictionaries(
    {}, optional={"canary": st.just("true"), "tier": st.sampled_from("ab")}
)
amounts = st.one_of(
    st.integers(min_value=1, max_value=6).map(Amount),
    st.integers(min_value=1, max_value=100).map(lambda p: Amount(p, percent=True)),
)


@given(st.lists(labels_strategy, max_size=25), amounts)
def test_waves_partition_the_targets_in_group_order(
    labels: list[dict[str, str]], concurrency: Amount
) -> None:
    runtimes = [Target(f"id-{i:02}", f"rt-{i:02}", lab) for i, lab in enumerate(labels)]
    groups = (core.Group("canary", "canary=true"), core.Group("tier-a", "tier=a"))
    waves = plan_waves(runtimes, policy(groups=groups, max_concurrency=concurrency))
    planned = [r for w in waves for r in w.runtimes]
    assert sorted(planned) == sorted(r.id for r in runtimes) and len(planned) == len(set(planned))
    assert all(w.runtimes for w in waves)
    order = {"canary": 0, "tier-a": 1, "rest": 2}
    assert [order[w.group] for w in waves] == sorted(order[w.group] for w in waves)
    remaining = len(runtimes)
    for wave in waves:
        assert len(wave.runtimes) <= max(1, concurrency.of(remaining))
        remaining -= len(wave.runtimes)
    by_id = {r.id: r for r in runtimes}
    for wave in waves:
        if wave.group == "canary":
            assert all(by_id[r].labels.get("canary") == "true" for r in wave.runtimes)


# --- which revision each runtime gets ------------------------------------------------------------------


def test_started_runtimes_get_the_new_revision_pinned_ones_theirs_others_the_old() -> None:
    assignment = Assignment(1, 3, frozenset({"a"}), {"b": 2, "c": None})
    assert [assignment.revision_for(r) for r in "abcd"] == [3, 2, None, 1]
    assert assignment.revisions() == {1, 2, 3}
    assert Assignment(None, 1, frozenset()).revision_for("x") is None


# --- a runtime's health -----------------------------------------------------------------------------


def observed(
    *,
    seen: float = 0,
    applied: str | None = "h1",
    results: list[dict[str, Any]] | None = None,
    sidecar: dict[str, Any] | None = None,
) -> Observed:
    report: dict[str, Any] = {
        "resources": results if results is not None else [{"name": "orders", "state": "applied"}]
    }
    if sidecar is not None:
        report["sidecar"] = sidecar
    return Observed(at(seen), 1.0, applied, report)


def health(obs: Observed | None, desired: str | None = "h1", delivered: bool = True) -> Health:
    return runtime_health(obs, desired, "orders", delivered, at(1), 3.0)


def test_health_is_ready_only_when_online_synced_applied_and_loaded() -> None:
    assert health(observed()).state == core.READY
    loaded = {"reachable": True, "components": [{"name": "orders"}]}
    assert health(observed(sidecar=loaded)) == Health(core.READY, "applied and loaded by the sidecar")
    assert health(None).state == core.UPDATING
    assert "offline" in health(observed(seen=-10)).message
    assert "not applied yet" in health(observed(), desired="h2").message
    not_loaded = health(observed(sidecar={"reachable": True, "components": []}))
    assert not_loaded.state == core.UPDATING and "not loaded" in not_loaded.message
    assert health(observed(sidecar={"reachable": False, "error": "refused"})).state == core.UPDATING
    assert health(observed(results=[])).state == core.UPDATING


def test_health_is_failed_when_the_agent_applied_the_state_and_reports_the_component_failed() -> None:
    failing = observed(results=[{"name": "orders", "state": "failed", "message": "conflict"}])
    assert health(failing) == Health(core.FAILED, "conflict")
    assert health(failing, desired="h2").state == core.UPDATING  # a report about an older state


def test_a_runtime_the_revision_does_not_reach_is_ready_once_synced() -> None:
    assert health(observed(results=[]), delivered=False).state == core.READY


# --- the controller's step ------------------------------------------------------------------------------

WAVES = (Wave("canary", ("c",)), Wave("rest", ("a", "b")))


def started(waves: tuple[Wave, ...] = WAVES) -> Progress:
    step = core.start(waves, T0)
    assert [e.type for e in step.events] == ["RolloutWaveStarted"]
    return step.progress


def test_starting_starts_the_first_wave_and_nothing_to_do_succeeds_at_once() -> None:
    progress = started()
    assert (progress.state, progress.started, progress.deadline_from) == (core.PROGRESSING, 1, T0)
    assert core.start((), T0).progress.state == core.SUCCEEDED


def test_the_next_wave_starts_only_after_every_runtime_was_ready_for_the_bake_time() -> None:
    bake = policy(min_success_seconds=10)
    progress = started()
    waiting = core.step(WAVES, bake, progress, {"c": UPDATING}, at(1))
    assert waiting.progress == progress and not waiting.events
    ready = core.step(WAVES, bake, progress, {"c": READY}, at(2))
    assert ready.progress.ready_since == at(2) and [e.type for e in ready.events] == ["RolloutWaveReady"]
    baking = core.step(WAVES, bake, ready.progress, {"c": READY}, at(11.9))
    assert baking.progress == ready.progress and not baking.events
    dropped = core.step(WAVES, bake, ready.progress, {"c": UPDATING}, at(5))
    assert dropped.progress.ready_since is None
    assert [e.type for e in dropped.events] == ["RolloutWaveNotReady"]
    advanced = core.step(WAVES, bake, ready.progress, {"c": READY}, at(12))
    assert advanced.progress.started == 2 and advanced.progress.deadline_from == at(12)
    assert [e.type for e in advanced.events] == ["RolloutWaveStarted"]
    assert "wave 2/2 (rest): a, b" in advanced.events[0].message
    rest = {"c": READY, "a": READY, "b": READY}
    last = core.step(WAVES, bake, advanced.progress, rest, at(13))
    done = core.step(WAVES, bake, last.progress, rest, at(23))
    assert done.progress.state == core.SUCCEEDED and done.events[-1].type == "RolloutSucceeded"


def test_a_reported_failure_pauses_or_rolls_back_beyond_max_failures() -> None:
    failed = {"c": Health(core.FAILED, "conflict")}
    paused = core.step(WAVES, policy(), started(), failed, at(1))
    assert paused.progress.state == core.PAUSED and paused.progress.failures == {"c": "conflict"}
    assert [e.type for e in paused.events] == ["RolloutRuntimeFailed", "RolloutPaused"]
    rolled = core.step(WAVES, policy(on_failure=core.ROLLBACK), started(), failed, at(1))
    assert rolled.progress.state == core.ROLLED_BACK
    tolerated = core.step(WAVES, policy(max_failures=Amount(1)), started(), failed, at(1))
    assert tolerated.progress.state == core.PROGRESSING and tolerated.progress.started == 2


def test_max_failures_as_a_percentage_is_of_all_targets() -> None:
    waves = (Wave("all", tuple("abcdefghij")),)
    some = {r: (Health(core.FAILED, "x") if r in "ab" else UPDATING) for r in "abcdefghij"}
    twenty = policy(max_failures=Amount(20, percent=True))
    assert core.step(waves, twenty, started(waves), some, at(1)).progress.state == core.PROGRESSING
    some["c"] = Health(core.FAILED, "x")
    assert core.step(waves, twenty, started(waves), some, at(1)).progress.state == core.PAUSED


def test_a_runtime_not_ready_by_the_deadline_counts_as_failed() -> None:
    slow = policy(progress_deadline_seconds=5)
    before = core.step(WAVES, slow, started(), {"c": UPDATING}, at(4.9))
    assert before.progress.state == core.PROGRESSING
    after = core.step(WAVES, slow, started(), {"c": Health(core.UPDATING, "offline: silent")}, at(5))
    assert after.progress.state == core.PAUSED
    assert "progress deadline (5s): offline: silent" in after.progress.failures["c"]


def test_failures_in_earlier_waves_count_and_deleted_runtimes_are_ignored() -> None:
    progress = replace(started(), wave_starts=(T0, at(1)), deadline_from=at(1))
    step = core.step(WAVES, policy(), progress, {"c": Health(core.FAILED, "broke"), "a": READY}, at(2))
    assert step.progress.failures == {"c": "broke"}
    gone = core.step(WAVES, policy(), progress, {"c": READY, "a": READY}, at(2))  # b was deleted
    assert gone.progress.ready_since == at(2)


def test_only_a_progressing_rollout_moves() -> None:
    paused = replace(started(), state=core.PAUSED)
    assert core.step(WAVES, policy(), paused, {"c": READY}, at(100)) == core.Step(paused)


health_strategy = st.sampled_from([READY, UPDATING, Health(core.FAILED, "bad")])
runtime_ids = ("c", "a", "b")


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.tuples(*(health_strategy for _ in runtime_ids))),
        max_size=30,
    ),
    st.integers(min_value=0, max_value=3),
    st.sampled_from([core.PAUSE, core.ROLLBACK]),
)
def test_stepping_never_hands_out_a_wave_early_and_counts_each_failure_once(
    passes: list[tuple[float, tuple[Health, ...]]], max_failures: int, on_failure: str
) -> None:
    rules = policy(
        min_success_seconds=2,
        progress_deadline_seconds=8,
        max_failures=Amount(max_failures),
        on_failure=on_failure,
    )
    progress, now, failed_events = started(), T0, []
    for elapsed, healths in passes:
        now += timedelta(seconds=elapsed)
        assignment = Assignment(1, 2, core.started_runtimes(WAVES, progress.started))
        reached = {r for r in runtime_ids if assignment.revision_for(r) == 2}
        seen = {r: h for r, h in zip(runtime_ids, healths, strict=True) if r in reached}
        before = progress
        step = core.step(WAVES, rules, progress, seen, now)
        progress = step.progress
        failed_events += [e.message.split(":")[0] for e in step.events if e.type == "RolloutRuntimeFailed"]
        if progress.started > before.started:  # a wave started only after the previous one baked
            assert before.ready_since is not None and (now - before.ready_since).total_seconds() >= 2
            current = WAVES[before.started - 1].runtimes
            assert all(seen[r].state == core.READY for r in current if r not in progress.failures)
        assert set(progress.failures) <= reached
        if progress.state in (core.PAUSED, core.ROLLED_BACK):
            assert len(progress.failures) > max_failures
            assert progress.state == (core.PAUSED if on_failure == core.PAUSE else core.ROLLED_BACK)
        if not progress.active:
            break
    assert len(failed_events) == len(set(failed_events)) == len(progress.failures)


# --- operator actions ----------------------------------------------------------------------------------


def test_pause_resume_promote_abort_follow_the_state() -> None:
    progress = started()
    paused = core.pause(progress).progress
    assert paused.state == core.PAUSED
    with pytest.raises(core.NotAllowed):
        core.pause(paused)
    with pytest.raises(core.NotAllowed):
        core.resume(progress, at(1))
    failed = replace(paused, failures={"c": "x"}, ready_since=at(1))
    resumed = core.resume(failed, at(30)).progress
    assert (resumed.state, resumed.failures, resumed.deadline_from, resumed.ready_since) == (
        core.PROGRESSING,
        {},
        at(30),
        None,
    )
    assert core.promote(paused).progress.state == core.SUCCEEDED
    assert core.abort(progress).progress.state == core.ABORTED
    for action in (core.promote, core.abort):
        with pytest.raises(core.NotAllowed):
            action(replace(progress, state=core.SUCCEEDED))
    superseded = core.supersede(progress, "revision 3 supersedes it")
    assert superseded.progress.state == core.SUPERSEDED and not superseded.progress.active
