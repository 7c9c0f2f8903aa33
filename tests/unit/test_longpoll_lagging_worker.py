"""The long-poll hub of a worker (or replica) whose change feed is behind the one that sent the agent its
state: it waits for its own feed to catch up instead of sending the agent back an older state."""

from __future__ import annotations

import asyncio

import pytest

from rrm.server.fleet import longpoll
from rrm.server.fleet.longpoll import LongPollHub
from rrm.server.fleet.render import Delivery

NO_WINDOW = 0.0


def state(hash_: str) -> Delivery:
    return Delivery(hash=hash_, body=b"{}", components=())


def test_an_agent_ahead_of_this_worker_waits_for_the_feed_not_for_the_older_state() -> None:
    async def scenario() -> Delivery | None:
        hub = LongPollHub(NO_WINDOW)
        a, b, c = state("a"), state("b"), state("c")
        hub.deliver(a, ["r1"])
        task = asyncio.create_task(hub.wait_for_change("r1", b.etag, 60))  # another worker sent it b
        await asyncio.sleep(0)
        assert not task.done()  # not answered with a, which the agent has already left behind
        hub.deliver(b, ["r1"])  # this worker's feed catches up: the agent is up to date
        await asyncio.sleep(0)
        assert not task.done()
        hub.deliver(c, ["r1"])
        return await asyncio.wait_for(task, 10)

    assert asyncio.run(scenario()).hash == "c"  # type: ignore[union-attr]


def test_an_agent_with_the_state_before_the_current_one_gets_the_change_at_once() -> None:
    hub = LongPollHub(NO_WINDOW)
    a, b = state("a"), state("b")
    hub.deliver(a, ["r1"])
    hub.deliver(b, ["r1"])
    assert asyncio.run(asyncio.wait_for(hub.wait_for_change("r1", a.etag, 60), 0.5)) is b


def test_a_state_no_worker_has_is_answered_with_the_current_one_after_the_catch_up_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(longpoll, "CATCH_UP_SECONDS", 0.05)
    hub = LongPollHub(NO_WINDOW)
    a = state("a")
    hub.deliver(a, ["r1"])
    assert asyncio.run(asyncio.wait_for(hub.wait_for_change("r1", '"from-an-old-cache"', 60), 10)) is a
