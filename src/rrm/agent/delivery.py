"""Which way the agent receives its desired state: the watch stream, or the long-poll where a proxy on the
way cuts or buffers streams.

`auto` tries the stream; a stream answered without its open frame (the proxy buffers it, or answers in its
place) sends the agent to the long-poll at once, and so do `CUTS_BEFORE_FALLBACK` streams in a row cut
before any frame after their open one (the proxy cuts them) or not answered at all. A stream not answered
is not enough alone: a director busy with a fleet reconnecting at once (its accept queue full, SYNs
retried) looks the same for a while, so the agent takes one long-poll, which waits its turn, and then tries
the stream again. A stream that delivered a frame, or that the director ended cleanly, starts the count
anew. The stream is tried again after `WATCH_RETRY_SECONDS`. `watch` and `longpoll` never switch."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

from rrm.agent.client import StreamCut
from rrm.agent.config import DeliveryMode

log = logging.getLogger(__name__)

DELIVERY_MODES: tuple[DeliveryMode, ...] = ("auto", "watch", "longpoll")
CUTS_BEFORE_FALLBACK = 2
WATCH_RETRY_SECONDS = 600.0
# A stream the control plane ended (its token expired, it restarts) is opened again after a uniform draw
# from [0, this): a restarted control plane is not met by its whole fleet in the same instant.
RECONNECT_JITTER_SECONDS = 1.0
# Until its first frame comes, a stream may be held by a proxy that buffers: this long, then it counts as cut.
FIRST_FRAME_SECONDS = 10.0


def reconnect_jitter() -> float:
    return random.uniform(0, RECONNECT_JITTER_SECONDS)


class DeliveryChoice:
    def __init__(self, mode: DeliveryMode, clock: Callable[[], float] = time.monotonic) -> None:
        self.mode = mode
        self._clock = clock
        self._cuts = 0
        self._longpoll_until = -math.inf
        self._one_long_poll = False

    def watching(self) -> bool:
        """Whether the next fetch is a watch stream."""
        if self.mode != "auto":
            return self.mode == "watch"
        if self._one_long_poll:
            self._one_long_poll = False
            return False
        return self._clock() >= self._longpoll_until

    def ended(self) -> None:
        """A stream the director ended cleanly (its token expired, it stops): streams work on this path."""
        self._cuts = 0

    def cut(self, exc: StreamCut) -> None:
        """A stream was cut: in `auto`, perhaps fall back to the long-poll for a while."""
        if exc.delivered:
            self._cuts = 0
            return
        self._cuts += 1
        buffered = exc.answered and not exc.opened
        if self.mode == "auto" and (buffered or self._cuts >= CUTS_BEFORE_FALLBACK):
            self._cuts = 0
            self._longpoll_until = self._clock() + WATCH_RETRY_SECONDS
            log.warning(
                "event=watch-fallback reason=%r action=long-poll-for-%.0fs", str(exc), WATCH_RETRY_SECONDS
            )
        elif self.mode == "auto" and not exc.answered:
            self._one_long_poll = True  # patient where the stream was not: a busy director answers it in turn
