"""The long-poll hub: answers at once when the agent's state is out of date, wakes a waiting long-poll when
the runtime's delivery changes, holds a burst to one state per delivery window, lets go on close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from rrm.server.fleet.longpoll import LongPollHub
from rrm.server.fleet.render import Delivery

T = TypeVar("T")
NO_WINDOW = 0.0
LONG_WINDOW = 3600.0  # longer than any test: a change within it is held


def state(hash_: str) -> Delivery:
    return Delivery(hash=hash_, body=b"{}", components=())


def run(awaitable: Awaitable[T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(10):  # a wake that never comes fails the test instead of hanging it
            return await awaitable

    return asyncio.run(bounded())


async def waiting(hub: LongPollHub, runtime_id: str, etag: str | None) -> asyncio.Task[Delivery | None]:
    """A long-poll that has started waiting (it runs to its first suspension within one loop turn)."""
    task = asyncio.create_task(hub.wait_for_change(runtime_id, etag, 60))
    await asyncio.sleep(0)
    assert not task.done()
    return task


def test_an_agent_without_the_current_state_gets_it_at_once() -> None:
    hub = LongPollHub(LONG_WINDOW)
    a = state("a")
    hub.deliver(a, ["r1", "r2"])
    assert hub.delivery("r1") is a
    assert run(hub.wait_for_change("r1", None, 60)) is a
    assert run(hub.wait_for_change("r2", '"old"', 0)) is a  # sent nothing yet: no window to hold it in


def test_an_agent_with_the_current_state_waits_out_its_timeout() -> None:
    hub = LongPollHub(NO_WINDOW)
    hub.deliver(state("a"), ["r1"])
    assert run(hub.wait_for_change("r1", '"a"', 0.01)) is None
    assert run(hub.wait_for_change("unknown", None, 60)) is None


def test_a_new_delivery_wakes_the_waiting_long_poll_with_it() -> None:
    hub = LongPollHub(NO_WINDOW)
    hub.deliver(state("a"), ["r1", "r2"])

    async def scenario() -> tuple[Delivery | None, bool]:
        task = await waiting(hub, "r1", '"a"')
        other = await waiting(hub, "r2", '"a"')
        hub.deliver(state("b"), ["r1"])
        woken = await task
        other_still_waiting = not other.done()
        other.cancel()
        return woken, other_still_waiting

    woken, other_still_waiting = run(scenario())
    assert woken is not None and woken.hash == "b"
    assert other_still_waiting


def test_the_same_hash_in_another_object_is_counted_but_wakes_no_one() -> None:
    hub = LongPollHub(NO_WINDOW)
    hub.deliver(state("a"), ["r1"])
    version = hub.version

    async def scenario() -> bool:
        task = await waiting(hub, "r1", '"a"')
        hub.deliver(state("a"), ["r1"])
        await asyncio.sleep(0)
        asleep = not task.done()
        task.cancel()
        return asleep

    assert run(scenario())
    assert hub.version == version + 1
    current = hub.delivery("r1")
    assert current is not None
    hub.deliver(current, ["r1"])  # the very same object: no change at all
    assert hub.version == version + 1


def test_a_change_within_the_delivery_window_is_held() -> None:
    hub = LongPollHub(LONG_WINDOW)
    hub.deliver(state("a"), ["r1"])
    assert run(hub.wait_for_change("r1", None, 0)) is not None  # sent: the window starts
    hub.deliver(state("b"), ["r1"])
    assert run(hub.wait_for_change("r1", '"a"', 0.01)) is None
    assert run(hub.wait_for_change("r1", None, 0)) is not None  # an agent without a state is never held


def test_the_newest_state_goes_out_when_the_window_ends() -> None:
    window = 0.2
    hub = LongPollHub(window)
    hub.deliver(state("a"), ["r1"])
    run(hub.wait_for_change("r1", None, 0))
    hub.deliver(state("b"), ["r1"])
    hub.deliver(state("c"), ["r1"])
    started = time.monotonic()
    sent = run(hub.wait_for_change("r1", '"a"', 60))  # the agent has "a": its window runs from now
    assert sent is not None and sent.hash == "c"
    assert time.monotonic() - started >= window * 0.9  # the loop's timer may fire a hair early


def test_a_runtime_gone_answers_its_long_poll_and_leaves_nothing() -> None:
    hub = LongPollHub(NO_WINDOW)
    hub.deliver(state("a"), ["r1"])
    version = hub.version

    async def scenario() -> Delivery | None:
        task = await waiting(hub, "r1", '"a"')
        hub.withdraw("r1")
        return await task

    assert run(scenario()) is None
    assert hub.delivery("r1") is None
    assert hub.version == version + 1
    hub.withdraw("r1")
    assert hub.version == version + 1


def test_closing_answers_every_waiting_long_poll_and_those_after() -> None:
    hub = LongPollHub(NO_WINDOW)
    hub.deliver(state("a"), ["r1"])

    async def scenario() -> Delivery | None:
        task = await waiting(hub, "r1", '"a"')
        hub.close()
        return await task

    assert run(scenario()) is None
    assert run(hub.wait_for_change("r1", None, 60)) is None
