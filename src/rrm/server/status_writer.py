"""Status reports (which double as heartbeats) are written in batches: every report that arrives during
one flush interval goes into a single transaction, and each `PUT /agent/v1/status` is answered only after
the transaction holding it committed. Ten thousand agents then cost a few commits a second, not thousands."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rrm.store import Database
from rrm.store import repositories as repo
from rrm.wire.protocol import StatusReport, encode

log = logging.getLogger("rrm.server.status_writer")


@dataclass
class _Pending:
    runtime_name: str
    report: StatusReport
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class StatusWriter:
    def __init__(self, db: Database, interval: float = 0.05) -> None:
        self._db = db
        self._interval = interval
        self._pending: dict[str, _Pending] = {}
        self._touched: set[str] = set()
        self._arrived = asyncio.Event()

    async def submit(self, runtime_id: str, runtime_name: str, report: StatusReport) -> None:
        """Returns once the report is durable; a newer report of the same runtime in the batch wins."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = self._pending.get(runtime_id)
        if pending is None:
            pending = self._pending[runtime_id] = _Pending(runtime_name, report)
        pending.report = report
        pending.waiters.append(waiter)
        self._arrived.set()
        await waiter

    def touch(self, runtime_id: str) -> None:
        """Record contact without a report (a long-poll): `last_seen` moves on with the next flush."""
        self._touched.add(runtime_id)
        self._arrived.set()

    async def run(self) -> None:
        while True:
            await self._arrived.wait()
            await asyncio.sleep(self._interval)
            self._arrived.clear()
            batch, self._pending = self._pending, {}
            touched, self._touched = self._touched - set(batch), set()
            try:
                await asyncio.to_thread(self._flush, batch, touched)
            except Exception as exc:
                log.exception("writing %d status report(s) failed", len(batch))
                for pending in batch.values():
                    for waiter in pending.waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                continue
            for pending in batch.values():
                for waiter in pending.waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def _flush(self, batch: dict[str, _Pending], touched: set[str]) -> None:
        now = datetime.now(UTC)
        # Status rows are each runtime's own: replicas write them side by side. Only events need the
        # exclusive lock (their ids must commit in order for the event stream).
        with self._db.write(exclusive=False) as session:
            if touched:
                repo.touch_statuses(session, sorted(touched), now)
            applied_before = repo.applied_hashes(session, list(batch))
            statuses, events = [], []
            for runtime_id, pending in batch.items():
                body = pending.report
                statuses.append(
                    {
                        "runtime_id": runtime_id,
                        "applied_hash": body.applied_hash,
                        "report": encode(body),
                        "agent_version": body.agent_version,
                        "heartbeat_interval": body.heartbeat_interval,
                    }
                )
                if body.applied_hash is not None and body.applied_hash != applied_before.get(runtime_id):
                    # one event per newly applied state (not per heartbeat), so watchers see deliveries land
                    failed = sum(1 for r in body.resources if r.state == "failed")
                    message = (
                        f"applied {body.applied_hash[:12]}: {len(body.resources)} resources, {failed} failed"
                    )
                    events.append(("DesiredStateApplied", f"runtime/{pending.runtime_name}", message))
            repo.save_statuses(session, sorted(statuses, key=lambda s: s["runtime_id"]), now)
            if events:
                self._db.take_write_lock(session)
                repo.record_events(session, events, now)
