"""The in-memory view of the fleet that every agent request is served from.

It follows the change feed: after each committed change it reloads only what changed, recomputes the
desired state of the runtimes concerned (pure core functions, memoized per distinct label set and per
distinct set of placed revisions, so runtimes with the same placement share one encoded body) and wakes
the long-polls whose state changed. A waiting long-poll holds no database connection and no thread.

A burst of writes coalesces: a runtime is sent at most one state per delivery window, counted from when
its agent had the previous one (its next request carries that state's ETag). The first change goes out at
once; later ones within the window are held and the newest is sent when the window ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import ChainMap
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from rrm.core.placement import place
from rrm.core.render import SecretValue, render_desired_state
from rrm.core.resources import StoredComponent
from rrm.core.rollouts import Assignment
from rrm.core.scenarios import Connectivity, beside
from rrm.server.compass.registry import ENTITIES as REGISTRY_ENTITIES
from rrm.server.compass.registry import Registry, RegistryChanges
from rrm.server.metrics import FEED_CATCH_UP_SECONDS, LONGPOLLS_WAITING
from rrm.server.rollouts.records import RolloutDelivery, active_deliveries, active_delivery
from rrm.server.secretbox import SecretBox
from rrm.store import Database
from rrm.store import repositories as repo
from rrm.wire import DeliveredSecret, DesiredState
from rrm.wire.agent_auth import load_public_key

log = logging.getLogger("rrm.server.fleet")


@dataclass(frozen=True)
class RuntimeEntry:
    id: str
    name: str
    kind: str
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Delivery:
    """One encoded desired state; shared by every runtime with the same placement."""

    hash: str
    body: bytes
    components: tuple[tuple[str, int, str], ...]  # (name, revision, type)

    @property
    def etag(self) -> str:
        return f'"{self.hash}"'


@dataclass
class _Loaded:
    """What one catch-up read from the database, applied to memory on the event loop."""

    seq: int
    runtimes: dict[str, RuntimeEntry | None] = field(default_factory=dict)
    keys: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # runtime id → [(key id, pem)]
    components: dict[str, StoredComponent | None] = field(default_factory=dict)
    secrets: dict[str, SecretValue | None] = field(default_factory=dict)
    rollouts: dict[str, RolloutDelivery | None] = field(default_factory=dict)  # component → active rollout
    registry: RegistryChanges = field(default_factory=RegistryChanges)  # Compass


class Fleet:
    def __init__(self, db: Database, box: SecretBox, delivery_window: float = 1.0) -> None:
        self._db = db
        self._box = box
        self._delivery_window = delivery_window
        self.seq = 0
        self.runtimes: dict[str, RuntimeEntry] = {}
        self.components: dict[str, StoredComponent] = {}
        self.secrets: dict[str, SecretValue] = {}
        self.rollouts: dict[str, RolloutDelivery] = {}  # component → its active rollout
        self.registry = Registry(box)  # Compass: applications and scenarios
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}  # key id → (runtime id, public key)
        self._key_of: dict[str, str] = {}  # runtime id → its one key id
        self._closing = False
        self._deliveries: dict[str, Delivery] = {}
        self.deliveries_version = 0  # grows whenever a runtime's delivery changes or goes (for the leader)
        self._sent_at: dict[str, float] = {}  # runtime id → when its delivery window began (monotonic)
        self._unconfirmed: dict[str, str] = {}  # runtime id → ETag sent, until its agent asks with it
        # the runtimes by what their desired state depends on besides the components: (labels, the
        # revisions rollouts hand them, their scenarios); rebuilt after a runtime, a rollout or the registry
        # changed, so that a component change costs one render per group and one comparison per runtime
        self._groups: dict[tuple[Any, ...], list[str]] | None = None
        self._renders: dict[tuple[Any, ...], Delivery] = {}
        self._signals: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()
        self._nudge = asyncio.Event()

    # loading ------------------------------------------------------------------------------------------

    async def load(self) -> None:
        loaded = await asyncio.to_thread(self._read_everything)
        self._apply(loaded, full=True)

    def _read_everything(self) -> _Loaded:
        with self._db.read() as session:
            loaded = _Loaded(seq=repo.last_change_seq(session))
            for row in repo.all_runtimes(session):
                loaded.runtimes[row.id] = _runtime_entry(row)
                loaded.keys[row.id] = []
            for key in repo.all_keys(session):
                loaded.keys.setdefault(key.runtime_id, []).append((key.key_id, key.public_key))
            for c in repo.all_components(session):
                loaded.components[c.name] = StoredComponent(c.name, c.revision, c.manifest)
            for s in repo.all_secrets(session):
                loaded.secrets[s.name] = SecretValue(s.name, s.revision, self._box.open(s.name, s.ciphertext))
            loaded.rollouts.update(active_deliveries(session))
            loaded.registry = self.registry.read_all(session)
        return loaded

    def _read_changes(self, after: int) -> _Loaded | None:
        with self._db.read() as session:
            changes = repo.changes_after(session, after)
            if not changes:
                return None
            loaded = _Loaded(seq=changes[-1].seq)
            for change in changes:
                if change.entity == repo.ENTITY_RUNTIME and change.name not in loaded.runtimes:
                    row = repo.runtime_by_id(session, change.name)
                    loaded.runtimes[change.name] = _runtime_entry(row) if row else None
                    loaded.keys[change.name] = [
                        (k.key_id, k.public_key) for k in repo.keys_of(session, change.name)
                    ]
                elif change.entity == repo.ENTITY_COMPONENT and change.name not in loaded.components:
                    c = repo.component(session, change.name)
                    loaded.components[change.name] = (
                        StoredComponent(c.name, c.revision, c.manifest) if c else None
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

    async def catch_up(self) -> None:
        """Apply every committed change not yet in memory. Writers call it before answering, so an admin
        read right after a write sees the write; the follower task calls it for other processes' writes."""
        async with self._lock:
            started = time.perf_counter()
            loaded = await asyncio.to_thread(self._read_changes, self.seq)
            if loaded is not None:
                self._apply(loaded, full=False)
                FEED_CATCH_UP_SECONDS.observe(time.perf_counter() - started)

    def nudge(self) -> None:
        self._nudge.set()

    async def follow(self, poll_seconds: float) -> None:
        """Runs for the life of the process: catch up on a nudge or every `poll_seconds`."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), poll_seconds)
            self._nudge.clear()
            try:
                await self.catch_up()
            except Exception:
                log.exception("catching up with the change feed failed; retrying")

    def _apply(self, loaded: _Loaded, *, full: bool) -> None:
        self.seq = max(self.seq, loaded.seq)
        if full:
            self.runtimes, self.components, self.secrets, self._keys, self._key_of = {}, {}, {}, {}, {}
            self.rollouts = {}
        registry_changed = self.registry.merge(loaded.registry, full=full)
        if full or loaded.runtimes or loaded.rollouts or registry_changed:
            self._groups = None
        for runtime_id, entry in loaded.runtimes.items():
            self.forget_keys(runtime_id)
            if entry is None:
                self.runtimes.pop(runtime_id, None)
                self.registry.forget_runtime(runtime_id)
            else:
                self.runtimes[runtime_id] = entry
                for kid, pem in loaded.keys.get(runtime_id, []):
                    self.set_key(runtime_id, kid, pem)
        _merge(self.components, loaded.components)
        _merge(self.secrets, loaded.secrets)
        _merge(self.rollouts, loaded.rollouts)
        if full or loaded.components or loaded.secrets:
            self._renders = {}
        # a rollout or a Compass change keeps the renders (their keys tell them apart)
        if full or loaded.components or loaded.secrets or loaded.rollouts or registry_changed:
            self._recompute_all()
            self._recompute([r for r in loaded.runtimes if r not in self.runtimes])  # deleted ones
        else:
            self._recompute(loaded.runtimes)

    # desired state ------------------------------------------------------------------------------------

    def _recompute(self, runtime_ids: Iterable[str]) -> None:
        placements: dict[tuple[Any, ...], Delivery] = {}
        for runtime_id in list(runtime_ids):
            entry = self.runtimes.get(runtime_id)
            if entry is None:
                if self._deliveries.pop(runtime_id, None) is not None:
                    self.deliveries_version += 1
                self._sent_at.pop(runtime_id, None)
                self._unconfirmed.pop(runtime_id, None)
                self._wake(runtime_id)
                continue
            key = self._placement_key(runtime_id, entry)
            delivery = placements.get(key)
            if delivery is None:
                delivery = placements[key] = self._delivery_for(key)
            self._deliver(runtime_id, delivery)

    def _recompute_all(self) -> None:
        if self._groups is None:
            groups: dict[tuple[Any, ...], list[str]] = {}
            for runtime_id, entry in self.runtimes.items():
                groups.setdefault(self._placement_key(runtime_id, entry), []).append(runtime_id)
            self._groups = groups
        for key, runtime_ids in self._groups.items():
            delivery = self._delivery_for(key)
            for runtime_id in runtime_ids:
                self._deliver(runtime_id, delivery)

    def _placement_key(self, runtime_id: str, entry: RuntimeEntry) -> tuple[Any, ...]:
        return (entry.labels, self._rollout_choices(runtime_id), self.registry.explicit_scenarios(runtime_id))

    def _delivery_for(self, key: tuple[Any, ...]) -> Delivery:
        labels, choices, scenarios = key
        return self._render(
            place(self._with_rollouts(list(self.components.values()), choices), dict(labels)),
            self.registry.connectivity(dict(labels), scenarios),
        )

    def _deliver(self, runtime_id: str, delivery: Delivery) -> None:
        previous = self._deliveries.get(runtime_id)
        if previous is not delivery:
            self._deliveries[runtime_id] = delivery
            self.deliveries_version += 1
            if previous is None or previous.hash != delivery.hash:
                self._wake(runtime_id)

    def _render(self, placed: list[StoredComponent], connected: Connectivity = Connectivity()) -> Delivery:
        """`connected`: the bindings and secrets of the applications the runtime sees (Compass)."""
        key = (tuple((c.name, c.revision) for c in sorted(placed, key=lambda c: c.name)), connected.key)
        cached = self._renders.get(key)
        if cached is not None:
            return cached
        placed = beside(placed, connected.components)
        state = render_desired_state(placed, ChainMap(dict(connected.secrets), self.secrets))
        body = DesiredState(
            hash=state.hash,
            components=state.components,
            secrets=[
                DeliveredSecret(name=s.name, revision=s.revision, data=dict(s.data)) for s in state.secrets
            ],
        ).model_dump_json()
        delivery = Delivery(
            hash=state.hash,
            body=body.encode(),
            components=tuple((c.name, c.revision, str(c.manifest["spec"]["type"])) for c in placed),
        )
        self._renders[key] = delivery
        return delivery

    # progressive rollouts: a component with an active rollout reaches each runtime at the revision the
    # rollout hands it (rrm.core.rollouts.Assignment), placed by that revision's own selector.

    def _rollout_choices(self, runtime_id: str) -> tuple[tuple[str, int | None], ...]:
        return tuple(
            (name, rollout.assignment.revision_for(runtime_id))
            for name, rollout in sorted(self.rollouts.items())
        )

    def _with_rollouts(
        self, components: list[StoredComponent], choices: tuple[tuple[str, int | None], ...]
    ) -> list[StoredComponent]:
        if not choices:
            return components
        chosen = [
            self.rollouts[name].revisions.get(revision) for name, revision in choices if revision is not None
        ]
        return [c for c in components if c.name not in self.rollouts] + [c for c in chosen if c is not None]

    def rollout_assignment(self, component: str) -> Assignment | None:
        """What this fleet renders for the component's active rollout (None: no active rollout known)."""
        rollout = self.rollouts.get(component)
        return rollout.assignment if rollout else None

    def delivery(self, runtime_id: str) -> Delivery | None:
        return self._deliveries.get(runtime_id)

    def _wake(self, runtime_id: str) -> None:
        signal = self._signals.pop(runtime_id, None)
        if signal is not None:
            signal.set()

    async def wait_for_change(self, runtime_id: str, etag: str | None, timeout: float) -> Delivery | None:
        """The runtime's state once its hash differs from `etag`; None after `timeout` without change.

        A state that changed within the delivery window of the last one sent to this runtime is held until
        the window ends (an agent without a state, `etag` None, is never held)."""
        deadline = time.monotonic() + timeout
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
            await self._wait_for_signal(runtime_id, remaining)

    async def _wait_for_signal(self, runtime_id: str, seconds: float) -> None:
        signal = self._signals.setdefault(runtime_id, asyncio.Event())
        LONGPOLLS_WAITING.inc()
        try:
            async with asyncio.timeout(seconds):
                await signal.wait()
        except TimeoutError:
            pass
        finally:
            LONGPOLLS_WAITING.dec()

    # identity -----------------------------------------------------------------------------------------

    def key(self, key_id: str) -> tuple[str, Ed25519PublicKey] | None:
        return self._keys.get(key_id)

    def set_key(self, runtime_id: str, key_id: str, public_pem: str) -> None:
        """Make a just-committed key usable at once, ahead of the change feed."""
        self.forget_keys(runtime_id)
        self._keys[key_id] = (runtime_id, load_public_key(public_pem))
        self._key_of[runtime_id] = key_id

    def forget_keys(self, runtime_id: str) -> None:
        kid = self._key_of.pop(runtime_id, None)
        if kid is not None:
            self._keys.pop(kid, None)

    def paired(self, runtime_id: str) -> bool:
        return runtime_id in self._key_of

    def close(self) -> None:
        """Answer every held long-poll now (304), so a stopping server does not wait out their timeouts."""
        self._closing = True
        for runtime_id in list(self._signals):
            self._wake(runtime_id)


def _runtime_entry(row: Any) -> RuntimeEntry:
    return RuntimeEntry(row.id, row.name, row.kind, tuple(sorted((row.labels or {}).items())))


def _merge(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
