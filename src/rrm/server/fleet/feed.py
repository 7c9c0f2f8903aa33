"""The change-feed follower: the fleet's caches of runtimes, components, secrets, active rollouts and
Compass, read from the database in a worker thread and applied on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.orm import Session

from rrm.core.render import SecretValue
from rrm.core.resources import StoredComponent
from rrm.core.rollouts import Assignment
from rrm.server.compass.registry import ENTITIES as REGISTRY_ENTITIES
from rrm.server.compass.registry import Registry, RegistryChanges
from rrm.server.metrics import FEED_CATCH_UP_SECONDS
from rrm.server.rollouts.records import RolloutDelivery, active_deliveries, active_delivery
from rrm.server.secretbox import SecretBox
from rrm.store import Database
from rrm.store import repositories as repo
from rrm.store.tables import Runtime

log = logging.getLogger("rrm.server.fleet")

_V = TypeVar("_V")
_T = TypeVar("_T")


@dataclass(frozen=True)
class RuntimeEntry:
    id: str
    name: str
    kind: str
    labels: tuple[tuple[str, str], ...]


@dataclass
class Loaded:
    """What one catch-up read from the database, applied to memory on the event loop; None removes."""

    seq: int
    runtimes: dict[str, RuntimeEntry | None] = field(default_factory=dict)
    keys: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # runtime id → [(key id, pem)]
    components: dict[str, StoredComponent | None] = field(default_factory=dict)
    secrets: dict[str, SecretValue | None] = field(default_factory=dict)
    rollouts: dict[str, RolloutDelivery | None] = field(default_factory=dict)  # component → active rollout
    registry: RegistryChanges = field(default_factory=RegistryChanges)  # Compass


@dataclass(frozen=True)
class FeedChange:
    """What applying one catch-up changed, in the terms of the caches built on the feed's."""

    full: bool  # everything was read anew
    runtimes: tuple[str, ...] = ()  # the runtimes read again: added, changed or gone
    keys: Mapping[str, Sequence[tuple[str, str]]] = field(default_factory=dict)  # theirs, [] when gone
    content: bool = False  # a component or a secret changed
    rollouts: bool = False  # a component's active rollout started, moved on or ended
    registry: bool = False  # a Compass application, assignment or runtime's scenarios changed

    @property
    def placements(self) -> bool:
        """A runtime may have moved to another placement group."""
        return self.full or bool(self.runtimes) or self.rollouts or self.registry

    @property
    def renders(self) -> bool:
        """A rendered body may be out of date."""
        return self.full or self.content

    @property
    def everyone(self) -> bool:
        """Any runtime's desired state may have changed, not only those read again."""
        return self.full or self.content or self.rollouts or self.registry


class FleetFeed:
    """Follows the change feed; after each catch-up it hands `on_change` what changed. The caches are the
    same dict objects for the life of the feed, so others may hold on to them."""

    def __init__(self, db: Database, box: SecretBox, on_change: Callable[[FeedChange], None]) -> None:
        self._db = db
        self._box = box
        self._on_change = on_change
        self.seq = 0
        self.runtimes: dict[str, RuntimeEntry] = {}
        self.components: dict[str, StoredComponent] = {}
        self.secrets: dict[str, SecretValue] = {}
        self.rollouts: dict[str, RolloutDelivery] = {}  # component → its active rollout
        self.registry = Registry(box)  # Compass: applications and scenarios
        self._lock = asyncio.Lock()
        self._nudge = asyncio.Event()

    async def load(self) -> None:
        loaded = await asyncio.to_thread(self._read_everything)
        self._on_change(self.apply(loaded, full=True))

    async def catch_up(self) -> None:
        """Apply every committed change not yet in memory. Writers call it before answering, so an admin
        read right after a write sees the write; the follower task calls it for other processes' writes."""
        async with self._lock:
            started = time.perf_counter()
            loaded = await asyncio.to_thread(self._read_changes, self.seq)
            if loaded is not None:
                self._on_change(self.apply(loaded, full=False))
                FEED_CATCH_UP_SECONDS.observe(time.perf_counter() - started)

    async def write_then_catch_up(self, write: Callable[[], _T]) -> _T:
        """Run `write` (a transaction that commits) in a worker thread and, in that same thread, read what
        changed since the last catch-up: one hop to a thread per write batch instead of two. Under the
        feed's lock, so that no catch-up can apply an older read after this one. A failed read after the
        commit leaves the catch-up to the follower (nudged), and still answers `write`'s result: it is
        committed."""
        async with self._lock:
            started = time.perf_counter()

            def run() -> tuple[_T, Loaded | None, bool]:
                result = write()
                try:
                    return result, self._read_changes(self.seq), True
                except Exception:
                    log.exception("reading the change feed after a write failed; the follower retries")
                    return result, None, False

            result, loaded, read = await asyncio.to_thread(run)
            if loaded is not None:
                self._on_change(self.apply(loaded, full=False))
                FEED_CATCH_UP_SECONDS.observe(time.perf_counter() - started)
            if not read:
                self.nudge()
            return result

    def nudge(self) -> None:
        self._nudge.set()

    async def follow(self, poll_seconds: float) -> None:
        """Runs for the life of the process: catch up on a nudge or every `poll_seconds`."""
        while True:
            with contextlib.suppress(TimeoutError):  # not wait_for, which on 3.11 can swallow a cancel
                async with asyncio.timeout(poll_seconds):
                    await self._nudge.wait()
            self._nudge.clear()
            try:
                await self.catch_up()
            except Exception:
                log.exception("catching up with the change feed failed; retrying")

    def rollout_assignment(self, component: str) -> Assignment | None:
        """What this fleet renders for the component's active rollout (None: no active rollout known)."""
        rollout = self.rollouts.get(component)
        return rollout.assignment if rollout else None

    def apply(self, loaded: Loaded, *, full: bool) -> FeedChange:
        """Take what was read into the caches (`full`: instead of everything they held)."""
        self.seq = max(self.seq, loaded.seq)
        if full:
            for cache in (self.runtimes, self.components, self.secrets, self.rollouts):
                cache.clear()
        # a runtime's explicit scenarios are its own placement: it is re-delivered with the runtimes read
        # again (a new runtime has both), not every runtime of the fleet
        shared = full or bool(loaded.registry.applications or loaded.registry.assignments)
        registry_changed = self.registry.merge(loaded.registry, full=full) and shared
        for runtime_id, entry in loaded.runtimes.items():
            if entry is None:
                self.registry.forget_runtime(runtime_id)
        _merge(self.runtimes, loaded.runtimes)
        _merge(self.components, loaded.components)
        _merge(self.secrets, loaded.secrets)
        _merge(self.rollouts, loaded.rollouts)
        return FeedChange(
            full=full,
            runtimes=tuple(dict.fromkeys([*loaded.runtimes, *loaded.registry.runtime_scenarios])),
            keys=loaded.keys,
            content=bool(loaded.components or loaded.secrets),
            rollouts=bool(loaded.rollouts),
            registry=registry_changed,
        )

    # reading, in a worker thread ----------------------------------------------------------------------

    def _read_everything(self) -> Loaded:
        with self._db.read() as session:
            loaded = Loaded(seq=repo.last_change_seq(session))
            for row in repo.all_runtimes(session):
                loaded.runtimes[row.id] = _runtime_entry(row)
                loaded.keys[row.id] = []
            for key in repo.all_keys(session):
                if key.runtime_id in loaded.keys:
                    loaded.keys[key.runtime_id].append((key.key_id, key.public_key))
            for c in repo.all_components(session):
                loaded.components[c.name] = StoredComponent(c.name, c.revision, c.manifest)
            for s in repo.all_secrets(session):
                loaded.secrets[s.name] = SecretValue(s.name, s.revision, self._box.open(s.name, s.ciphertext))
            loaded.rollouts.update(active_deliveries(session))
            loaded.registry = self.registry.read_all(session)
        return loaded

    def _read_changes(self, after: int) -> Loaded | None:
        with self._db.read() as session:
            changes = repo.changes_after(session, after)
            if not changes:
                return None
            loaded = Loaded(seq=changes[-1].seq)
            loaded.components = _read_components(session, changes)
            for change in changes:
                if change.entity == repo.ENTITY_RUNTIME and change.name not in loaded.runtimes:
                    row = repo.runtime_by_id(session, change.name)
                    loaded.runtimes[change.name] = _runtime_entry(row) if row else None
                    loaded.keys[change.name] = (
                        [(k.key_id, k.public_key) for k in repo.keys_of(session, change.name)] if row else []
                    )
                elif change.entity == repo.ENTITY_SECRET and change.name not in loaded.secrets:
                    s = repo.secret(session, change.name)
                    loaded.secrets[change.name] = (
                        SecretValue(s.name, s.revision, self._box.open(s.name, s.ciphertext)) if s else None
                    )
                elif change.entity == repo.ENTITY_ROLLOUT and change.name not in loaded.rollouts:
                    loaded.rollouts[change.name] = active_delivery(session, change.name)
                elif change.entity in REGISTRY_ENTITIES:
                    self.registry.read_change(session, loaded.registry, change.entity, change.name)
        return loaded


def _read_components(
    session: Session, changes: Sequence[repo.ChangeRow]
) -> dict[str, StoredComponent | None]:
    """The components the changes name, read in one statement, in the order of their first change."""
    named = list(dict.fromkeys(c.name for c in changes if c.entity == repo.ENTITY_COMPONENT))
    live = repo.live_components(session, named) if named else {}
    return {name: StoredComponent(name, *live[name]) if name in live else None for name in named}


def _runtime_entry(row: Runtime) -> RuntimeEntry:
    return RuntimeEntry(row.id, row.name, row.kind, tuple(sorted((row.labels or {}).items())))


def _merge(target: dict[str, _V], changes: Mapping[str, _V | None]) -> None:
    for name, value in changes.items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
