"""The long-poll hub: each runtime's current delivery, the long-polls waiting for it to change, and the
delivery window that coalesces a burst of changes. A waiting long-poll holds no database connection and no
thread, only a future (and a timer handle), woken without an exception whichever way its wait ends."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Iterable

from rrm.server.fleet.render import Delivery
from rrm.server.metrics import LONGPOLLS_WAITING
from rrm.wire.watch import KEEP_ALIVE_FRAME, end_frame

# How long a long-poll whose state this process never had waits for its own change feed to catch up before
# it answers: the feed's poll interval (`feed_poll_seconds`), the longest one replica lags another.
CATCH_UP_SECONDS = 1.0

_TICKED = True  # what a wait's future is resolved with when a keep-alive clock ended it
_WOKEN = False  # ... when its runtime changed, its own timer ran out or the hub closed


class KeepAliveClock:
    """The keep-alive timers of every watch stream with the same interval: the waits that begin within the
    same slot (1/`SLOTS` of the interval) share one timer, which releases them all between one interval and
    one interval and a slot later. Rather than each stream arming (and cancelling) a timer of its own, the
    hub arms `SLOTS` per interval, however many streams are open, and their releases stay spread out."""

    SLOTS = 16

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._slot_seconds = interval / self.SLOTS
        self.latest_release = interval + self._slot_seconds  # after a wait begins
        self._slots: dict[int, list[asyncio.Future[bool]]] = {}  # slot → the waits it releases

    def add(self, waiter: asyncio.Future[bool]) -> None:
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + self.interval) / self._slot_seconds)
        waiting = self._slots.get(slot)
        if waiting is None:
            waiting = self._slots[slot] = []
            loop.call_at(slot * self._slot_seconds, self._release, slot)
        waiting.append(waiter)

    def _release(self, slot: int) -> None:
        for waiter in self._slots.pop(slot, ()):
            _resolve(waiter, _TICKED)


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


class LongPollHub:
    """A runtime is sent at most one state per delivery window, counted from when its agent had the previous
    one (its next request carries that state's ETag). The first change goes out at once; later ones within
    the window are held and the newest is sent when the window ends."""

    def __init__(self, delivery_window: float) -> None:
        self._delivery_window = delivery_window
        self._deliveries: dict[str, Delivery] = {}
        self.version = 0  # grows whenever a runtime's delivery changes or goes (for the leader)
        self._sent_at: dict[str, float] = {}  # runtime id → when its delivery window began (monotonic)
        self._unconfirmed: dict[str, str] = {}  # runtime id → ETag sent, until its agent asks with it
        self._superseded: dict[str, str] = {}  # runtime id → the ETag of the delivery before its current one
        self._waiters: dict[str, list[asyncio.Future[bool]]] = {}  # runtime id → its waits, woken together
        self._clocks: dict[float, KeepAliveClock] = {}  # keep-alive interval → the streams' shared clock
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def delivery(self, runtime_id: str) -> Delivery | None:
        return self._deliveries.get(runtime_id)

    def deliver(self, delivery: Delivery, runtime_ids: Iterable[str]) -> None:
        """Make `delivery` these runtimes' current one; wake those whose state it changes. Called for every
        runtime of a placement group after each write: the loop does no more than it must per runtime."""
        deliveries, superseded, waiters = self._deliveries, self._superseded, self._waiters
        changed = 0
        for runtime_id in runtime_ids:
            previous = deliveries.get(runtime_id)
            if previous is delivery:
                continue
            deliveries[runtime_id] = delivery
            changed += 1
            if previous is None or previous.hash != delivery.hash:
                if previous is not None:
                    superseded[runtime_id] = previous.etag
                if runtime_id in waiters:
                    self._wake(runtime_id)
        self.version += changed

    def withdraw(self, runtime_id: str) -> None:
        """The runtime is gone: its waiting long-poll is answered (304) and nothing is kept for it."""
        if self._deliveries.pop(runtime_id, None) is not None:
            self.version += 1
        self._sent_at.pop(runtime_id, None)
        self._unconfirmed.pop(runtime_id, None)
        self._superseded.pop(runtime_id, None)
        self._wake(runtime_id)

    async def wait_for_change(
        self, runtime_id: str, etag: str | None, timeout: float, clock: KeepAliveClock | None = None
    ) -> Delivery | None:
        """The runtime's state once its hash differs from `etag`; None after `timeout` without change, or
        when `clock` ticks first while nothing is to be sent.

        A state that changed within the delivery window of the last one sent to this runtime is held until
        the window ends (an agent without a state, `etag` None, is never held). An agent holding a state this
        process never had (another replica or worker sent it, and this one's feed is behind) waits up to
        `CATCH_UP_SECONDS` for this process to catch up, rather than being sent the older state."""
        deadline = time.monotonic() + timeout
        caught_up = etag is None
        if etag is not None and self._unconfirmed.get(runtime_id) == etag:
            del self._unconfirmed[runtime_id]  # the agent has the state sent last: its window runs from now
            self._sent_at[runtime_id] = time.monotonic()
        while True:
            if self._closing:
                return None
            now = time.monotonic()
            remaining = deadline - now
            current = self._deliveries.get(runtime_id)
            if current is None:
                return None
            if current.etag != etag and not caught_up and etag != self._superseded.get(runtime_id):
                caught_up = True
                seconds, ticking = min(remaining, CATCH_UP_SECONDS), None
            else:
                if current.etag != etag:
                    last_sent = self._sent_at.get(runtime_id, -math.inf)
                    held = 0.0 if etag is None else last_sent + self._delivery_window - now
                    if held <= 0:
                        self._sent_at[runtime_id] = now
                        self._unconfirmed[runtime_id] = current.etag
                        return current
                    remaining = min(remaining, held)
                if remaining <= 0:
                    return None
                seconds, ticking = remaining, clock
            # awaited here, not in a coroutine of its own: a waiting stream or long-poll keeps one less
            waiter, waiters, timer = self._arm(runtime_id, seconds, ticking)
            try:
                if await waiter is _TICKED:
                    return None
            finally:
                self._disarm(runtime_id, waiter, waiters, timer)

    async def watch(
        self, runtime_id: str, etag: str | None, until: float, keep_alive: float
    ) -> AsyncGenerator[bytes]:
        """The frames of one watch stream (`rrm.wire.watch`): each new state of the runtime, held by the
        delivery window as for a long-poll (each wait starts with the ETag written last, as the next
        long-poll would), a keep-alive after `keep_alive` seconds (to one `KeepAliveClock` slot more)
        without a frame, and last the end frame: at `until` (monotonic: the token's expiry), when the hub
        closes, or when the runtime is gone. A state frame is the `Delivery`'s own bytes, shared by every
        stream of its placement group."""
        clock = self._clocks.get(keep_alive)
        if clock is None:
            clock = self._clocks[keep_alive] = KeepAliveClock(keep_alive)
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0:
                yield end_frame("token-expired")
                return
            delivery = await self.wait_for_change(runtime_id, etag, remaining, clock)
            if delivery is not None:
                etag = delivery.etag
                yield delivery.frame
            elif self._closing:
                yield end_frame("shutdown")
                return
            elif runtime_id not in self._deliveries:
                yield end_frame("runtime-gone")
                return
            elif time.monotonic() < until:
                yield KEEP_ALIVE_FRAME

    def _arm(
        self, runtime_id: str, seconds: float, clock: KeepAliveClock | None
    ) -> tuple[asyncio.Future[bool], list[asyncio.Future[bool]], asyncio.TimerHandle | None]:
        """A wait, resolved when the runtime changes, `seconds` pass or `clock` releases it (then with
        `_TICKED`); the list of the runtime's waits it joined, and its own timer if it has one."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        waiters = self._waiters.get(runtime_id)
        if waiters is None:
            waiters = self._waiters[runtime_id] = []
        waiters.append(waiter)
        timer = None
        if clock is None or seconds <= clock.latest_release:
            timer = loop.call_later(seconds, _resolve, waiter, _WOKEN)
        if clock is not None:
            clock.add(waiter)  # it releases the wait first: no timer of its own to arm and cancel
        LONGPOLLS_WAITING.inc()
        return waiter, waiters, timer

    def _disarm(
        self,
        runtime_id: str,
        waiter: asyncio.Future[bool],
        waiters: list[asyncio.Future[bool]],
        timer: asyncio.TimerHandle | None,
    ) -> None:
        """The wait `_arm` began has ended, however it ended (a cancelled long-poll too)."""
        LONGPOLLS_WAITING.dec()
        if timer is not None:
            timer.cancel()
        if self._waiters.get(runtime_id) is waiters:  # not woken: this wait is still listed
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[runtime_id]

    def _wake(self, runtime_id: str) -> None:
        for waiter in self._waiters.pop(runtime_id, ()):
            _resolve(waiter, _WOKEN)

    def close(self) -> None:
        """Answer every held long-poll now (304), so a stopping server does not wait out their timeouts."""
        self._closing = True
        for runtime_id in list(self._waiters):
            self._wake(runtime_id)
