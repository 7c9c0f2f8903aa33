"""The agent's estimate of the directors' clock from `Date` headers (whole seconds, written somewhere between
the request sent and the answer received)."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from rrm.agent.client import DirectorClock

SENT = 1_800_000_000.25


def date(at: float) -> str:
    return formatdate(at, usegmt=True)


def test_a_slow_answer_from_a_director_on_the_same_clock_is_no_offset() -> None:
    clock = DirectorClock()
    clock.observe(date(SENT + 0.1), SENT, SENT + 5.0)  # answered 5 s late: a busy director
    assert clock.offset == 0.0
    assert clock.describe() == ""


@pytest.mark.parametrize("skew", [60.0, -400.0])
def test_a_director_whose_clock_differs_is_learned_within_the_answer_s_bounds(skew: float) -> None:
    clock = DirectorClock()
    clock.observe(date(SENT + 0.1 + skew), SENT, SENT + 0.2)
    assert abs(clock.offset - skew) <= 1.0
    assert ("behind" if skew > 0 else "ahead of") in clock.describe()


def test_a_known_offset_is_kept_while_answers_fit_it() -> None:
    clock = DirectorClock()
    clock.observe(date(SENT + 60.1), SENT, SENT + 0.2)
    learned = clock.offset
    long_poll_sent = SENT + 10
    clock.observe(date(long_poll_sent + 30 + 60), long_poll_sent, long_poll_sent + 30.1)  # a 30 s long-poll
    assert clock.offset == learned


def test_a_clock_set_right_again_is_noticed() -> None:
    clock = DirectorClock()
    clock.observe(date(SENT + 60.1), SENT, SENT + 0.2)
    clock.observe(date(SENT + 100.1), SENT + 100, SENT + 100.2)
    assert clock.offset == 0.0


def test_an_answer_without_a_date_changes_nothing() -> None:
    clock = DirectorClock()
    clock.observe(None, SENT, SENT + 0.1)
    assert clock.offset == 0.0
