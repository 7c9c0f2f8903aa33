"""The live event stream: one reader of the events table for every subscriber of this process.

While anyone listens it polls the table (so it sees events recorded by every replica) and keeps the newest
events in memory; each subscriber is served from that memory, so N open dashboards and CLI watchers cost one
query per interval, not N. A subscriber resuming from further back than memory reaches reads the table
itself until it has caught up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

from sqlalchemy import func, select

from rrm.server.views import event_view
from rrm.store import Database
from rrm.store import repositories as repo
from rrm.store.tables import Event

log = logging.getLogger("rrm.server.eventstream")
CATCH_UP_BATCH = 500


class EventBroadcaster:
    def __init__(self, db: Database, poll_seconds: float = 0.5, keep: int = 1000) -> None:
        self._db = db
        self._poll_seconds = poll_seconds
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._floor: int | None = None  # every event with floor < id <= latest is in _recent
        self._latest = 0
        self._subscribers = 0
        self._wanted = asyncio.Event()
        self._arrived = asyncio.Event()
        self._closing = False

    async def run(self) -> None:
        """Runs for the life of the process; reads the table only while somebody subscribes."""
        while True:
            await self._wanted.wait()
            try:
                await self._poll()
            except Exception:
                log.exception("reading new events failed; retrying")
            await asyncio.sleep(self._poll_seconds)

    async def _poll(self) -> None:
        if self._floor is None:
            self._floor = self._latest = await asyncio.to_thread(self._last_id)
        else:
            batch = await asyncio.to_thread(self._read_after, self._latest, None)
            if not batch or self._floor is None:  # nothing new, or memory was reset while reading
                return
            self._recent.extend(batch)
            self._latest = batch[-1]["id"]
            if len(self._recent) == self._recent.maxlen:
                self._floor = max(self._floor, self._recent[0]["id"] - 1)
        self._announce()

    def _announce(self) -> None:
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    async def latest_id(self) -> int:
        """The id of the newest recorded event, where a stream "from now on" starts."""
        return await asyncio.to_thread(self._last_id)

    def _last_id(self) -> int:
        with self._db.read() as session:
            return session.scalar(select(func.max(Event.id))) or 0

    def _read_after(self, after: int, limit: int | None) -> list[dict[str, Any]]:
        with self._db.read() as session:
            return [event_view(e) for e in repo.events_after(session, after, limit or 10_000)]

    async def subscribe(
        self, after: int, keepalive: float = 15.0
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Batches of the events with id > `after`, oldest first, as they are recorded; an empty batch
        after `keepalive` seconds of silence. Ends when the server stops."""
        if self._subscribers == 0:  # memory went stale while nobody listened
            self._floor, self._recent = None, deque(maxlen=self._recent.maxlen)
        self._subscribers += 1
        self._wanted.set()
        try:
            while self._floor is None and not self._closing:
                await self._arrived.wait()
            last = after
            while not self._closing:
                arrived = self._arrived
                assert self._floor is not None
                if last < self._floor:
                    batch = await asyncio.to_thread(self._read_after, last, CATCH_UP_BATCH)
                    if not batch:
                        last = self._floor
                        continue
                else:
                    batch = [e for e in self._recent if e["id"] > last]
                if batch:
                    last = batch[-1]["id"]
                    yield batch
                    continue
                try:
                    async with asyncio.timeout(keepalive):  # not wait_for, which on 3.11 can swallow a cancel
                        await arrived.wait()
                except TimeoutError:
                    yield []
        finally:
            self._subscribers -= 1
            if self._subscribers == 0:
                self._wanted.clear()

    def close(self) -> None:
        """End every subscription now, so a stopping server does not wait for open streams."""
        self._closing = True
        self._announce()
