"""Between the watch stream's reader and the agent's applies: the stream is read as its frames come, and
of the states it carries the agent takes at most one per delivery window, the newest.

Read lazily (the next frame only once the previous state was applied), a stream lets an agent that fell
behind find several frames waiting and apply each in turn, less than a window apart, though the control
plane wrote them a window apart. Here a newer state replaces the one held, which is never applied, and the
one held is handed out `window` seconds after the previous take at the soonest."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from rrm.wire.protocol import DesiredState

log = logging.getLogger(__name__)


class NewestState:
    """The newest verified state of the current watch stream that the agent has not taken yet. `taken`
    marks every take, a long-poll's too: the window runs from the previous take however it came."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.window = 0.0
        self._clock, self._sleep = clock, sleep
        self._taken_at = -math.inf
        self._held: DesiredState | None = None
        self._ended = False
        self._changed = asyncio.Event()

    def begin(self) -> None:
        """A new stream: nothing held, and no window until its open frame announces one."""
        self.window, self._held, self._ended = 0.0, None, False
        self._changed.clear()

    def offer(self, state: DesiredState) -> None:
        """A state the stream carried: it replaces the one held, which is dropped unapplied."""
        if self._held is not None:
            log.info(
                "event=superseded hash=%s by=%s action=not-applying", self._held.hash[:12], state.hash[:12]
            )
        self._held = state
        self._changed.set()

    def end(self) -> None:
        """The stream ended or broke off: `next` hands out what is held, then None."""
        self._ended = True
        self._changed.set()

    def taken(self) -> None:
        self._taken_at = self._clock()

    async def next(self) -> DesiredState | None:
        """The state held, once there is one and `window` has passed since the previous take (a newer one
        offered meanwhile is the one handed out); None once the stream ended with nothing held."""
        while True:
            await self._changed.wait()
            if self._held is None:
                return None  # set with nothing held: only `end` does that
            due = self._taken_at + self.window - self._clock()
            if due <= 0:
                break
            await self._sleep(due)
        state, self._held = self._held, None
        if not self._ended:
            self._changed.clear()
        return state
