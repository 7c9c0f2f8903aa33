"""Status reports (which double as heartbeats) are written in batches: every report that arrives during
one flush interval goes into a single transaction, and each `PUT /agent/v1/status` is answered only after
the transaction holding it committed. Ten thousand agents then cost a few commits a second, not thousands.

A commit costs about as much CPU as a hundred reports in it, so a batch that says nothing new (heartbeats that
repeat the runtime's previous report, contacts of long-polls and watch streams, which only move `last_seen`)
waits longer for company than one holding a new report: the figures the leader derives from a repeated
report do not change, and `last_seen` a fraction of a second late is far inside the heartbeat grace.

What each flush wrote is also handed, in memory, to this process's leader (`Sightings`), which then reads
from the database only the rows other processes wrote (`rrm server --workers N`, replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rrm.core.conditions import Observed
from rrm.store import Database
from rrm.store import repositories as repo
from rrm.wire.protocol import StatusReport, encode

log = logging.getLogger("rrm.server.status_writer")


@dataclass
class _Pending:
    runtime_name: str
    report: StatusReport
    data: Mapping[str, Any]  # `report` as JSON data, what is stored and what the leader judges
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


@dataclass(frozen=True)
class _Last:
    """A runtime's last report: the hash of its body as received, and its JSON data, reused (the same
    object) while the runtime repeats the same body, which heartbeats do."""

    fingerprint: int
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Sighting:
    """One runtime as a flush left it: seen at `last_seen`, and its new report if it sent one (a long-poll
    only moves `last_seen`)."""

    last_seen: datetime
    observed: Observed | None


class Sightings:
    """What this process's flushes wrote since the leader last took it: the newest sighting per runtime,
    so it holds at most one entry per runtime however long nobody takes it."""

    def __init__(self) -> None:
        self.writer = uuid.uuid4().hex  # `runtime_status.reported_by` of this process's reports
        self._lock = threading.Lock()
        self._latest: dict[str, Sighting] = {}

    def note(self, reported: dict[str, Observed], touched: set[str], now: datetime) -> None:
        with self._lock:
            latest = self._latest
            for runtime_id in touched:
                known = latest.get(runtime_id)
                latest[runtime_id] = Sighting(now, known.observed if known else None)
            for runtime_id, observed in reported.items():
                latest[runtime_id] = Sighting(now, observed)

    def take(self) -> dict[str, Sighting]:
        with self._lock:
            taken, self._latest = self._latest, {}
        return taken


class StatusWriter:
    """`interval`: how long a batch with a new report gathers more; `quiet_interval`: how long one of only
    repeated reports and contacts may wait for a new report, or until it holds `full_batch` reports."""

    def __init__(
        self, db: Database, interval: float = 0.05, quiet_interval: float = 0.5, full_batch: int = 64
    ) -> None:
        self._db = db
        self._interval = interval
        self._quiet_interval = quiet_interval
        self._full_batch = full_batch
        self.sightings = Sightings()
        self._pending: dict[str, _Pending] = {}
        self._touched: set[str] = set()
        self._arrived = asyncio.Event()
        self._news = asyncio.Event()  # the batch holds a new report, or `full_batch` of them
        self._last_reports: dict[str, _Last] = {}
        self._first_reports: set[str] = set()  # runtimes whose first report here is pending or in a flush
        # told, on the event loop, of the runtimes whose first report here a flush just committed (and, by
        # the leader's housekeeping, of those whose reports other processes wrote: `ConditionWatch`)
        self.on_first_reports: Callable[[list[str]], None] | None = None

    async def submit(self, runtime_id: str, runtime_name: str, report: StatusReport, body: bytes) -> None:
        """Returns once the report is durable; a newer report of the same runtime in the batch wins.
        `body`: the report as received (`report` decoded from it): the same body is the same report."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fingerprint = hash(body)
        last = self._last_reports.get(runtime_id)
        repeated = last is not None and last.fingerprint == fingerprint
        if last is None:
            self._first_reports.add(runtime_id)
        if last is None or not repeated:
            last = self._last_reports[runtime_id] = _Last(fingerprint, encode(report))
        pending = self._pending.get(runtime_id)
        if pending is None:
            pending = self._pending[runtime_id] = _Pending(runtime_name, report, last.data)
        pending.report, pending.data = report, last.data
        pending.waiters.append(waiter)
        if not repeated or len(self._pending) >= self._full_batch:
            self._news.set()
        self._arrived.set()
        await waiter

    def forget_all_but(self, runtimes: Container[str]) -> None:
        """Drop what is remembered of runtimes not in `runtimes` (deleted ones), on the event loop."""
        for runtime_id in [r for r in self._last_reports if r not in runtimes]:
            del self._last_reports[runtime_id]
            self._first_reports.discard(runtime_id)

    def touch(self, runtime_id: str) -> None:
        """Record contact without a report (a long-poll): `last_seen` moves on with the next flush."""
        self._touched.add(runtime_id)
        self._arrived.set()

    async def run(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._news.is_set():
                with contextlib.suppress(TimeoutError):  # not wait_for, which on 3.11 can swallow a cancel
                    async with asyncio.timeout(self._quiet_interval):
                        await self._news.wait()
            await asyncio.sleep(self._interval)
            self._arrived.clear()
            self._news.clear()
            batch, self._pending = self._pending, {}
            touched, self._touched = self._touched - set(batch), set()
            try:
                await asyncio.to_thread(self._flush, batch, touched)
            except Exception as exc:
                log.exception("writing %d status report(s) failed", len(batch))
                self._db.note_failure(exc)
                # contacts were acknowledged to nobody: kept for the next flush, or a runtime that only
                # streams (its agent sends no report while it is heard from) would look disconnected
                self._touched |= touched
                self._arrived.set()
                for pending in batch.values():
                    for waiter in pending.waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                continue
            for pending in batch.values():
                for waiter in pending.waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            if self._first_reports:
                self._tell_first_reports([r for r in self._first_reports if r in batch])

    def _tell_first_reports(self, firsts: list[str]) -> None:
        self._first_reports.difference_update(firsts)
        if firsts and self.on_first_reports is not None:
            try:
                self.on_first_reports(firsts)
            except Exception:  # the listener's fault: the reports are stored, the writer goes on
                log.exception("telling of %d first report(s) failed", len(firsts))

    def _flush(self, batch: dict[str, _Pending], touched: set[str]) -> None:
        now = datetime.now(UTC)
        reported: dict[str, Observed] = {}
        # Status rows are each runtime's own: replicas write them side by side. Only events need the
        # exclusive lock (their ids must commit in order for the event stream).
        with self._db.write(exclusive=False) as session:
            if touched:
                repo.touch_statuses(session, sorted(touched), now)
            applied = [
                (r, b.report.applied_hash) for r, b in batch.items() if b.report.applied_hash is not None
            ]
            newly_applied = repo.newly_applied(session, applied)
            statuses: list[dict[str, Any]] = []
            events = []
            for runtime_id, pending in batch.items():
                body = pending.report
                reported[runtime_id] = Observed(now, body.heartbeat_interval, body.applied_hash, pending.data)
                statuses.append(
                    {
                        "runtime_id": runtime_id,
                        "applied_hash": body.applied_hash,
                        "report": pending.data,
                        "agent_version": body.agent_version,
                        "heartbeat_interval": body.heartbeat_interval,
                    }
                )
                if body.applied_hash is not None and runtime_id in newly_applied:
                    # one event per newly applied state (not per heartbeat), so watchers see deliveries land
                    failed = sum(1 for r in body.resources if r.state == "failed")
                    message = (
                        f"applied {body.applied_hash[:12]}: {len(body.resources)} resources, {failed} failed"
                    )
                    events.append(("DesiredStateApplied", f"runtime/{pending.runtime_name}", message))
            rows = sorted(statuses, key=lambda s: str(s["runtime_id"]))  # one lock order for every writer
            repo.save_statuses(session, rows, now, self.sightings.writer)
            if events:
                self._db.take_write_lock(session)
                repo.record_events(session, events, now)
        self.sightings.note(reported, touched, now)
