"""The pure operation/stage state machine (rrm.core.operations): deadlines fixed at the first attempt and
never moved, retries with bounded jittered backoff, best-effort stages, cancellation, descriptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from rrm.core.operations import (
    CANCELED,
    FAILED,
    IN_PROGRESS,
    INCOMPLETE,
    PENDING,
    RETRY_CAP_SECONDS,
    RETRYING,
    RUNNING,
    STAGE_PENDING,
    SUCCEEDED,
    WAITING,
    Done,
    Fail,
    Retry,
    Stage,
    Wait,
    cancel_rest,
    current_stage,
    due,
    expire,
    failure_summary,
    finish_attempt,
    global_deadline,
    left_behind,
    operation_state,
    progress_description,
    retry_delay,
    start_attempt,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_first_attempt_fixes_the_deadline_and_later_attempts_keep_it() -> None:
    stage = start_attempt(Stage("wait_for_cluster", deadline_seconds=3600), T0)
    assert (stage.state, stage.attempts, stage.started_at, stage.deadline_at) == (RUNNING, 1, T0, later(3600))
    waited = finish_attempt(stage, Wait("processing", 10), later(5), 0.5)
    again = start_attempt(waited, later(15))
    assert again.attempts == 2 and again.started_at == T0 and again.deadline_at == later(3600)


def test_a_wait_is_looked_at_again_after_its_interval_without_an_error() -> None:
    stage = finish_attempt(start_attempt(Stage("s"), T0), Wait("processing 40%", 10), later(1), 0.0)
    assert stage.state == WAITING and stage.description == "processing 40%" and stage.last_error is None
    assert stage.next_attempt_at == later(11)
    assert not due(stage, later(10)) and due(stage, later(11))


def test_a_retry_records_the_error_and_backs_off() -> None:
    stage = finish_attempt(start_attempt(Stage("s"), T0), Retry("503 from the API"), later(1), 0.0)
    assert stage.state == RETRYING and stage.last_error == "503 from the API"
    assert stage.next_attempt_at is not None and stage.next_attempt_at > later(1)


@given(st.integers(min_value=1, max_value=200), st.floats(min_value=0, max_value=0.999999))
def test_backoff_grows_is_capped_and_never_less_than_half_its_step(attempts: int, jitter: float) -> None:
    delay = retry_delay(attempts, jitter)
    step = min(RETRY_CAP_SECONDS, 2.0 * 2 ** (attempts - 1))
    assert step / 2 <= delay <= step <= RETRY_CAP_SECONDS


@given(
    st.lists(st.sampled_from(["wait", "retry"]), min_size=1, max_size=40),
    st.floats(min_value=1, max_value=600),
    st.floats(min_value=0, max_value=0.999),
)
def test_no_attempt_is_ever_scheduled_past_the_deadline_and_the_stage_ends_there(
    outcomes: list[str], deadline: float, jitter: float
) -> None:
    stage, now = Stage("s", deadline_seconds=deadline), T0
    for kind in outcomes:
        stage = start_attempt(stage, now)
        outcome = Wait("busy", 30) if kind == "wait" else Retry("flaky")
        stage = finish_attempt(stage, outcome, now, jitter)
        assert stage.deadline_at == later(deadline)
        if stage.finished:
            assert stage.state == FAILED and "within its deadline" in (stage.last_error or "")
            assert now >= stage.deadline_at
            return
        assert stage.next_attempt_at is not None and stage.next_attempt_at <= stage.deadline_at
        now = stage.next_attempt_at


def test_a_stage_whose_deadline_passed_while_nobody_looked_fails_with_what_it_last_saw() -> None:
    stage = finish_attempt(
        start_attempt(Stage("wait_for_cluster", deadline_seconds=60), T0),
        Wait("Processing 10%", 10),
        later(1),
        0,
    )
    assert expire(stage, later(59)) is None
    expired = expire(stage, later(61))
    assert expired is not None and expired.state == FAILED
    assert (
        expired.last_error
        == "wait_for_cluster did not finish within its deadline of 1 min; last: Processing 10%"
    )


def test_a_best_effort_stage_ends_incomplete_and_the_operation_goes_on() -> None:
    stages = [
        finish_attempt(
            start_attempt(Stage("remove_agent", best_effort=True), T0), Fail("cluster unreachable"), T0, 0
        ),
        Stage("archive"),
    ]
    assert stages[0].state == INCOMPLETE and current_stage(stages) == 1
    assert operation_state(stages) == IN_PROGRESS
    done = [stages[0], finish_attempt(start_attempt(stages[1], T0), Done(), T0, 0)]
    assert operation_state(done) == SUCCEEDED
    assert left_behind(done) == ["remove_agent: cluster unreachable"]


def test_a_failed_stage_fails_the_operation_and_names_itself() -> None:
    stages = [
        finish_attempt(start_attempt(Stage("validate"), T0), Done(), T0, 0),
        finish_attempt(start_attempt(Stage("create_cluster"), T0), Fail("quota exceeded"), T0, 0),
        Stage("wait_for_cluster"),
    ]
    assert operation_state(stages) == FAILED
    assert failure_summary(stages) == "stage create_cluster failed: quota exceeded"


def test_canceling_ends_every_unfinished_stage_and_keeps_the_finished_ones() -> None:
    first = finish_attempt(start_attempt(Stage("validate"), T0), Done(), T0, 0)
    waiting = finish_attempt(start_attempt(Stage("wait_for_cluster"), T0), Wait("busy", 10), T0, 0)
    canceled = cancel_rest([first, waiting, Stage("install_agent")], later(5))
    assert [s.state for s in canceled] == [SUCCEEDED, CANCELED, CANCELED]
    assert operation_state(canceled) == CANCELED


def test_an_operation_is_pending_until_its_first_attempt() -> None:
    assert operation_state([Stage("a"), Stage("b")]) == PENDING
    assert operation_state([start_attempt(Stage("a"), T0), Stage("b")]) == IN_PROGRESS
    assert Stage("a").state == STAGE_PENDING


def test_the_global_deadline_is_the_sum_of_the_stages_unless_configured() -> None:
    stages = [Stage("a", deadline_seconds=60), Stage("b", deadline_seconds=3600)]
    assert global_deadline(T0, stages, None) == later(3660)
    assert global_deadline(T0, stages, 7 * 3600) == later(7 * 3600)


def test_progress_reads_like_a_person_would_say_it() -> None:
    assert progress_description("waiting for the cluster", T0, later(12 * 60 + 5), 1800) == (
        "waiting for the cluster: 12 of ~30 min"
    )
    assert progress_description("waiting for the cluster", T0, later(40 * 60), 1800, "Processing 80%") == (
        "waiting for the cluster: 40 min, longer than the usual ~30 min (Processing 80%)"
    )
    assert progress_description("waiting for the agent", T0, later(7), None) == "waiting for the agent: 7 s"
