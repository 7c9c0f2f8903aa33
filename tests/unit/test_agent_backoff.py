"""The agent's backoff: full jitter under a ceiling that doubles, and a lower ceiling on request."""

from __future__ import annotations

import random

from rrm.agent.backoff import Backoff


def test_the_ceiling_doubles_up_to_the_cap_and_a_draw_may_ask_for_a_lower_one() -> None:
    random.seed(7)
    backoff = Backoff(initial=1.0, cap=30.0)
    draws = [backoff.next_delay() for _ in range(8)]
    assert all(0 <= d <= min(30.0, 2**i) for i, d in enumerate(draws))
    assert max(draws) > 10, "the ceiling reached the cap"
    lowered = [backoff.next_delay(cap=10.0) for _ in range(200)]
    assert max(lowered) <= 10.0 and max(lowered) > 5.0
    backoff.reset()
    assert backoff.next_delay(cap=10.0) <= 1.0, "a reset starts from `initial` again"
