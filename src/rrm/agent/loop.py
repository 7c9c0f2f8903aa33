"""The agent's work as concurrent asyncio tasks: fetch → diff → apply → report, heartbeat, key rotation,
and a periodic reconcile that puts back what was changed outside rrm (sooner when the target watches).

Never delete on uncertainty: a cached state is applied without pruning; pruning starts once a director has
confirmed the state (a verified 200, or a 304 for the cached hash), which a restarted agent asks for at once
with one request that does not wait. A state counts as applied only once nothing the agent owns outside it
is left, so a restart in the middle of deleting never reports the new hash early. Errors keep everything in
place and retry. Reconciles never overlap: one lock serialises them, whichever task asks.

After each apply the agent follows the sidecar until it has loaded what was applied and unloaded what was
removed (`rrm.agent.loading`), and reports at once when it has, or when the load deadline passed. The apply's
own report waits for that, up to REPORT_HOLD_SECONDS, so that a load that is quick costs one report, not two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from rrm.agent.backoff import Backoff
from rrm.agent.cache import DesiredStateCache
from rrm.agent.client import (
    DirectorClient,
    DirectorError,
    NothingListening,
    StreamCut,
    StreamOpened,
    Unauthorized,
)
from rrm.agent.config import AgentConfig, DeliveryMode
from rrm.agent.delivery import FIRST_FRAME_SECONDS, DeliveryChoice, reconnect_jitter
from rrm.agent.drift import drift_records
from rrm.agent.identity import AgentIdentity
from rrm.agent.loading import (
    LoadWatch,
    SidecarAnswer,
    expected_components,
    wire_report,
)
from rrm.agent.pacing import NewestState
from rrm.agent.status import HeartbeatReports, build_status_report
from rrm.agent.targets.base import ApplyOutcome, NativeObject, Target
from rrm.core.diff import diff
from rrm.wire.protocol import DesiredState, DriftRecord, ReloadResult, SidecarReport, StatusReport

log = logging.getLogger(__name__)

DRIFT_RECORDS_KEPT = 20
MIN_RECONCILE_SPACING = 1.0  # a controller fighting over an object cannot make the agent spin
# Long-polls answered 304 at once (a wait of 0, polling without holding, or a director or proxy that cuts
# holds short) follow each other at most once per this many seconds, instead of back to back
MIN_POLL_SPACING = 1.0
# How long the report of an apply waits for the sidecar to load it (daprd notices a change in about 200 ms;
# the agent first asks 0.5 s after the apply, and 1.05 s after it when only rewritten components are awaited,
# `rrm.agent.loading`): each report costs the agent a request to the director and a question to the sidecar,
# most of its CPU per update, so the hold outlasts that first question and its answer.
REPORT_HOLD_SECONDS = 1.5
# The ceiling of the backoff while no director listens (refused connections, a restart): retrying costs them
# nothing, and the default ceiling (30 s) left a restarted director's fleet reconnecting for half a minute.
NOTHING_LISTENING_CAP_SECONDS = 10.0


@dataclass(frozen=True)
class Reconciled:
    """One reconcile: the target's outcome, the drift put back, how many owned objects outside the state
    are left, the components rewritten in place (their old instance may still be loaded) and those removed
    (the sidecar may still hold them)."""

    outcome: ApplyOutcome
    drift: list[DriftRecord]
    leftovers: int
    rewritten: set[str]
    removed: set[str]


class Agent:
    def __init__(
        self,
        client: DirectorClient,
        target: Target,
        cache: DesiredStateCache,
        identity: AgentIdentity | None = None,
        *,
        wait_seconds: float = AgentConfig.wait_seconds,
        delivery: DeliveryMode = AgentConfig.delivery,
        heartbeat_interval: float = AgentConfig.heartbeat_interval,
        rotate_interval: float = AgentConfig.rotate_interval,
        reconcile_interval: float = AgentConfig.reconcile_interval,
        load_deadline: float = AgentConfig.load_deadline,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.target = target
        self.cache = cache
        self.identity = identity
        self.wait_seconds = wait_seconds
        self.delivery = delivery
        self.heartbeat_interval = heartbeat_interval
        self.rotate_interval = rotate_interval
        self.reconcile_interval = reconcile_interval
        self.state: DesiredState | None = None
        self.confirmed = False
        self.applied_hash: str | None = None
        self.outcome: ApplyOutcome | None = None
        self.last_reload: ReloadResult | None = None
        self.drift: deque[DriftRecord] = deque(maxlen=DRIFT_RECORDS_KEPT)
        self._snapshot: dict[str, NativeObject] | None = None
        self.ready = False
        self.leftovers = 0  # objects the agent owns that the current state does not hold
        self.loads = LoadWatch(load_deadline, clock)
        self._following: asyncio.Task[None] | None = None
        self._report_now = asyncio.Event()
        self.heartbeats = HeartbeatReports(heartbeat_interval)
        self._channel_interval: float | None = wait_seconds or None  # see `_contact_by`
        self._report_held: asyncio.TimerHandle | None = None
        self._followed: tuple[SidecarAnswer] | None = None  # a follow's last answer, for the next report
        self._wake = asyncio.Event()
        self._reconciling = asyncio.Lock()
        self.watched = NewestState()

    async def run(self) -> None:
        """Runs until cancelled."""
        await asyncio.to_thread(self.target.prepare)
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(self._wake.set)

        self.target.watch(wake)
        await self.start_from_cache()
        tasks = [self.sync_forever(), self.heartbeat_forever(), self.reconcile_forever()]
        if self.identity is not None:
            tasks.append(self.rotate_forever(self.identity))
        await asyncio.gather(*tasks)

    async def start_from_cache(self) -> None:
        """Serve the last verified state at once, creating and updating only: it may be out of date."""
        cached = await asyncio.to_thread(self.cache.load)
        if cached is None:
            return
        log.info("event=cache-loaded hash=%s components=%d", cached.hash[:12], len(cached.components))
        self.state = cached
        await self.reconcile(prune=False, check_drift=False)

    async def sync_forever(self) -> None:
        """Watch streams once a director confirmed a state (long-polls where `DeliveryChoice` says so), each
        opened again after a jitter when the director ends it; errors back off, with jitter too."""
        backoff = Backoff()
        choice = DeliveryChoice(self.delivery)
        while True:
            watching = self.confirmed and choice.watching()
            delay = backoff.next_delay
            polled_at, news = time.monotonic(), False
            try:
                if watching:
                    await self.watch_once()
                else:
                    news = await self.sync_once()
            except StreamCut as exc:
                log.warning("event=watch-cut error=%s action=keeping-applied-resources", exc)
                choice.cut(exc)
            except Unauthorized as exc:
                log.error("event=unauthorized error=%s action=keeping-applied-resources", exc)
            except NothingListening as exc:
                log.warning("event=fetch-failed error=%s action=keeping-applied-resources", exc)
                delay = partial(backoff.next_delay, cap=NOTHING_LISTENING_CAP_SECONDS)
            except DirectorError as exc:
                log.warning("event=fetch-failed error=%s action=keeping-applied-resources", exc)
            except Exception:
                log.exception("event=sync-failed action=keeping-applied-resources")
            else:
                backoff.reset()
                if watching:
                    choice.ended()
                    await asyncio.sleep(reconnect_jitter())
                elif not news:
                    await asyncio.sleep(max(0.0, polled_at + MIN_POLL_SPACING - time.monotonic()))
                continue
            await asyncio.sleep(delay())

    async def watch_once(self) -> None:
        """One watch stream, read by a task of its own as its frames come, so that a slow apply neither
        leaves frames waiting nor makes the stream look silent. Its states are taken as a long-poll's 200
        is, at most one per delivery window, the newest (`NewestState`): those it superseded meanwhile are
        never applied. The state held when the stream ends is still taken; then the stream's error, if any,
        is raised."""
        etag = self.state.hash if self.state is not None else None
        self.watched.begin()
        reader = asyncio.create_task(self._read_stream(etag))
        try:
            while (fetched := await self.watched.next()) is not None:
                await self._take(fetched)
            await reader
        finally:
            if not reader.done():
                reader.cancel()
            elif not reader.cancelled():
                reader.exception()  # an error of the take (or a cancellation) is the one raised

    async def _read_stream(self, etag: str | None) -> None:
        try:
            async for item in self.client.watch_desired(etag, FIRST_FRAME_SECONDS):
                if isinstance(item, StreamOpened):
                    self.watched.window = item.delivery_window
                    self._contact_by(item.keep_alive)
                else:
                    self.watched.offer(item)
        finally:
            self.watched.end()

    async def sync_once(self) -> bool:
        """One long-poll; a new verified state is cached and applied (True), a 304 triggers a drift check.
        Until a director has confirmed a state the request does not wait, so a restarted agent prunes at
        once."""
        etag = self.state.hash if self.state is not None else None
        self._contact_by(self.wait_seconds or None)
        fetched = await self.client.fetch_desired(etag, self.wait_seconds if self.confirmed else 0.0)
        if fetched is not None:
            await self._take(fetched)
            return True
        if self.state is not None:
            self.confirmed = True
            await self.reconcile(prune=True, check_drift=True)
        return False

    async def _take(self, fetched: DesiredState) -> None:
        """A verified state from a director: cached, then applied with pruning (one job on a thread)."""
        self.watched.taken()
        log.info(
            "event=fetched hash=%s components=%d secrets=%d",
            fetched.hash[:12],
            len(fetched.components),
            len(fetched.secrets),
        )
        self.state = fetched
        self.confirmed = True
        await self.reconcile(prune=True, check_drift=False, cache=True)

    async def reconcile_forever(self) -> None:
        """A reconcile with a drift check every `reconcile_interval`, and soon after the target wakes us."""
        while True:
            with contextlib.suppress(TimeoutError):  # not wait_for, which on 3.11 can swallow a cancel
                async with asyncio.timeout(self.reconcile_interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.reconcile(prune=self.confirmed, check_drift=True)
            await asyncio.sleep(MIN_RECONCILE_SPACING)

    async def reconcile(self, *, prune: bool, check_drift: bool, cache: bool = False) -> None:
        """Bring the target in line with the current state; target errors are logged, retried next round.
        With `cache`, the state is written to the cache first, in the same job on a thread."""
        async with self._reconciling:
            await self._reconcile(prune=prune, check_drift=check_drift, cache=cache)

    async def _reconcile(self, *, prune: bool, check_drift: bool, cache: bool = False) -> None:
        state = self.state
        if state is None:
            return
        try:
            done = await asyncio.to_thread(self._reconcile_blocking, state, prune, check_drift, cache)
        except Exception:
            log.exception("event=apply-crashed hash=%s", state.hash[:12])
            return
        outcome = done.outcome
        self.ready = True
        applied_hash = None if done.leftovers else state.hash
        first_apply = self.applied_hash != applied_hash
        self.outcome, self.applied_hash, self.leftovers = outcome, applied_hash, done.leftovers
        self.last_reload = outcome.reload or self.last_reload
        self.drift.extend(done.drift)
        if first_apply or outcome.changed:
            applied = (r.name for r in outcome.resources if r.state == "applied")
            expected = expected_components(state, applied)
            self.loads.begin(expected, time.monotonic(), done.rewritten, done.removed)
            self._followed = None
            self._follow_sidecar()
        if first_apply or outcome.changed or done.drift:
            self._report_after_load()

    def _report_after_load(self) -> None:
        """Report now, or, while a sidecar that answered before is followed, when the follow ends and at
        most REPORT_HOLD_SECONDS from now (the first hold of a series of applies stands: reports go out)."""
        if not (self.loads.following and self.loads.answered):
            self._release()
        elif self._report_held is None:
            self._report_held = asyncio.get_running_loop().call_later(REPORT_HOLD_SECONDS, self._release)

    def _release(self) -> None:
        """Send the held report now."""
        if self._report_held is not None:
            self._report_held.cancel()
            self._report_held = None
        self._report_now.set()

    def _reconcile_blocking(
        self, state: DesiredState, prune: bool, check_drift: bool, cache: bool = False
    ) -> Reconciled:
        if cache:
            try:
                self.cache.save(state)
            except OSError as exc:
                log.error("event=cache-write-failed error=%s", exc)
        actual = self.target.observe()
        drift = drift_records(self._snapshot, actual) if check_drift and self._snapshot is not None else []
        for record in drift:
            log.warning(
                "event=drift resource=%s change=%s fields=%s action=restoring",
                record.resource,
                record.change,
                ",".join(record.fields) or "-",
            )
        rendered = self.target.render(state)
        changes = diff(rendered, actual)
        outcome = self.target.apply(changes, state, prune=prune)
        # Observing again only after a change keeps the window small in which an outside edit would be
        # taken for the agent's own (it is still put back then, only not reported as drift).
        self._snapshot = self.target.observe() if outcome.changed else actual
        leftovers = len(self._snapshot.keys() - rendered.keys())
        if leftovers:
            log.info("event=not-applied-yet hash=%s leftovers=%d", state.hash[:12], leftovers)
        rewritten = self._component_names(changes.update)
        removed = self._component_names(i for i in changes.delete if i not in self._snapshot)
        return Reconciled(outcome, drift, leftovers, rewritten, removed)

    def _component_names(self, object_ids: Iterable[str]) -> set[str]:
        names = (self.target.component_name(i) for i in object_ids)
        return {name for name in names if name is not None}

    def _follow_sidecar(self) -> None:
        """(Re)start following the sidecar; the previous follow, of an older apply, ends."""
        if self._following is not None:
            self._following.cancel()
        self._following = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        """Ask the sidecar on the load watch's schedule until it lists everything applied and nothing
        removed, or the load deadline passed; then report."""
        if not self.loads.following:
            return  # nothing to load or unload: the apply's own report says all there is
        sidecar: SidecarAnswer = None
        while self.loads.following:
            await asyncio.sleep(self.loads.next_poll(time.monotonic()))
            sidecar = await self._query_sidecar()
            if sidecar is None:
                self._release()
                return
            self.loads.observe(sidecar, time.monotonic())
        log.info(
            "event=%s missing=%s lingering=%s",
            "sidecar-not-loaded" if self.loads.missing or self.loads.lingering else "sidecar-loaded",
            ",".join(sorted(self.loads.missing)) or "-",
            ",".join(sorted(self.loads.lingering)) or "-",
        )
        self._followed = (sidecar,)
        self._release()

    async def _query_sidecar(self) -> SidecarAnswer:
        answer: SidecarAnswer
        try:
            answer = await self.target.sidecar_report()
        except Exception as exc:
            answer = SidecarReport(reachable=False, error=f"{type(exc).__name__}: {exc}")
        return answer

    async def heartbeat_forever(self) -> None:
        """The only sender of status: at once after an apply that changed something, and once per contact
        interval (the heartbeat, or sooner where the channel promises contact sooner) a look at the sidecar
        whose report goes out only when `HeartbeatReports` finds it due (it says something new, or the
        director has not heard from the agent otherwise)."""
        self._report_now.set()
        while True:
            with contextlib.suppress(TimeoutError):  # not wait_for, which on 3.11 can swallow a cancel
                async with asyncio.timeout(self._contact_interval()):
                    await self._report_now.wait()
            asked_for = self._report_now.is_set()  # after a change: sent whatever it says
            self._report_now.clear()
            report = await self.status_report()
            if not asked_for and not self.heartbeats.due(report, self.client.heard_at):
                continue
            try:
                await self.client.report_status(report)
            except DirectorError as exc:
                self.heartbeats.failed()
                log.warning("event=status-failed error=%s", exc)
            else:
                self.heartbeats.acknowledged(report)

    async def status_report(self) -> StatusReport:
        """Also a look at the sidecar between applies: a component it dropped is followed again. Right after
        a follow ended, its last answer (taken after the apply, and observed) is the sidecar's view."""
        followed, self._followed = self._followed, None
        sidecar = followed[0] if followed is not None else await self._query_sidecar()
        if followed is None:
            _, dropped = self.loads.observe(sidecar, time.monotonic())
            if dropped and (self._following is None or self._following.done()):
                log.warning("event=sidecar-dropped missing=%s", ",".join(sorted(self.loads.missing)))
                self._follow_sidecar()
        outcome = self.outcome
        return build_status_report(
            applied_hash=self.applied_hash,
            resources=self.loads.results(outcome.resources) if outcome else [],
            sidecar=wire_report(sidecar),
            reload=self.last_reload,
            drift=self.drift,
            target=self.target.name,
            heartbeat_interval=self._contact_interval(),
            message=self._message(),
        )

    def _contact_interval(self) -> float:
        """How often the control plane hears from this agent at the least, which its report tells it: each
        long-poll and each watch frame counts as contact, so the channel in use bounds it (a long-poll's
        wait, the stream's keep-alive); without one (a wait of 0, polling without holding) the heartbeat,
        whose report goes out when neither came within the interval (`HeartbeatReports`)."""
        return min(self.heartbeat_interval, self._channel_interval or self.heartbeat_interval)

    def _contact_by(self, interval: float | None) -> None:
        """The channel in use now comes at least every `interval` s (None: no promise). A longer interval
        than the one last reported is reported at once, or the control plane would expect contact sooner
        than it comes and take the runtime for disconnected in between."""
        before = self._contact_interval()
        self._channel_interval = interval
        if self._contact_interval() > before:
            self._report_now.set()

    def _message(self) -> str:
        """What the report says beside its fields; while this host's clock is off, that too (an operator
        should fix it)."""
        if self.leftovers:
            message = (
                f"{self.leftovers} object(s) of an earlier state are still in place; the current state "
                "counts as applied once they are removed"
            )
        else:
            message = (
                "" if self.confirmed or self.state is None else "serving the cached state; no director yet"
            )
        return "; ".join(filter(None, (message, self.client.clock.describe())))

    async def rotate_forever(self, identity: AgentIdentity) -> None:
        """Rotate when the key on disk is `rotate_interval` old; failures are retried with backoff."""
        backoff = Backoff()
        while True:
            age = await asyncio.to_thread(identity.key_age)
            await asyncio.sleep(max(0.0, self.rotate_interval - age))
            try:
                await identity.rotate(self.client)
            except DirectorError as exc:
                log.warning("event=rotate-failed error=%s", exc)
                await asyncio.sleep(backoff.next_delay())
            except OSError as exc:
                log.error("event=rotate-failed error=%s action=re-pair-if-unauthorized", exc)
                await asyncio.sleep(backoff.next_delay())
            else:
                backoff.reset()
