"""Desired states rendered once per placement: a runtime's state follows from its `PlacementKey` and an
encoded body from its `RenderKey`, so the runtimes alike share one `Delivery` (one object, one body)."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Protocol

from rrm.core.placement import place
from rrm.core.render import DeliveredCache, SecretValue, render_desired_state
from rrm.core.resources import StoredComponent
from rrm.core.scenarios import Connectivity, beside
from rrm.server.compass.registry import Registry
from rrm.server.fleet.feed import FeedChange, RuntimeEntry
from rrm.server.rollouts.records import RolloutDelivery
from rrm.wire.protocol import DeliveredSecret, DesiredState, dumps
from rrm.wire.watch import state_frame


class PlacementKey(NamedTuple):
    """What a runtime's desired state depends on besides the components and secrets themselves."""

    labels: tuple[tuple[str, str], ...]
    rollout_revisions: tuple[tuple[str, int | None], ...]  # (component, revision its rollout hands out)
    scenarios: tuple[str, ...]  # the runtime's explicit Compass scenarios


class RenderKey(NamedTuple):
    """What one body is made of: the placed components' and the connected applications' revisions."""

    components: tuple[tuple[str, int], ...]
    applications: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Delivery:
    """One encoded desired state; shared by every runtime with the same placement."""

    hash: str
    body: bytes
    components: tuple[tuple[str, int, str], ...]  # (name, revision, type)

    @cached_property
    def etag(self) -> str:
        return f'"{self.hash}"'

    @cached_property
    def frame(self) -> bytes:
        """The watch stream's `state` event of this body, framed once: every stream of the group is written
        these same bytes."""
        return state_frame(self.hash, self.body)


class RenderSources(Protocol):
    """The caches the renderer reads (the feed's)."""

    @property
    def runtimes(self) -> Mapping[str, RuntimeEntry]: ...
    @property
    def components(self) -> Mapping[str, StoredComponent]: ...
    @property
    def secrets(self) -> dict[str, SecretValue]: ...  # a dict: ChainMap's second map
    @property
    def rollouts(self) -> Mapping[str, RolloutDelivery]: ...
    @property
    def registry(self) -> Registry: ...


class Renderer:
    """Renders the runtimes' deliveries, keeping the placement groups and the rendered bodies."""

    def __init__(self, sources: RenderSources) -> None:
        self._sources = sources
        self._groups: dict[PlacementKey, list[str]] | None = None  # placement → its runtimes
        self._renders: dict[RenderKey, Delivery] = {}
        # the renders before the last component change, still right for the keys whose revisions it left
        # alone (taken over when asked for), and the secrets they were rendered with
        self._earlier: dict[RenderKey, Delivery] = {}
        self._secrets_rendered: dict[str, SecretValue] = dict(sources.secrets)
        # each component revision's delivered manifest and canonical JSON, made once for every render
        self._delivered: DeliveredCache = {}

    def invalidate(self, change: FeedChange) -> None:
        if change.placements:
            self._groups = None
        if change.renders:
            keep = not change.full and self._secrets_unchanged()
            self._earlier = self._renders if keep else {}
            self._renders = {}
            self._secrets_rendered = dict(self._sources.secrets)
            live = self._sources.components
            self._delivered = {
                key: known for key, known in self._delivered.items() if live.get(key[0]) is known.source
            }

    def _secrets_unchanged(self) -> bool:
        """A render key names component and application revisions, not secrets: a render made before a
        secret changed cannot be reused."""
        now, then = self._sources.secrets, self._secrets_rendered
        return len(now) == len(then) and all(then.get(name) is value for name, value in now.items())

    def by_group(self) -> Iterator[tuple[Delivery, list[str]]]:
        """Every runtime's delivery, one render per placement group."""
        if self._groups is None:
            groups: dict[PlacementKey, list[str]] = {}
            for runtime_id, entry in self._sources.runtimes.items():
                groups.setdefault(self.placement_key(runtime_id, entry), []).append(runtime_id)
            self._groups = groups
        for key, runtime_ids in self._groups.items():
            yield self.delivery_for(key), runtime_ids

    def deliveries(self, runtime_ids: Iterable[str]) -> Iterator[tuple[str, Delivery]]:
        """The delivery of each of these runtimes that exists, placing each distinct key once."""
        placed: dict[PlacementKey, Delivery] = {}
        for runtime_id in runtime_ids:
            entry = self._sources.runtimes.get(runtime_id)
            if entry is None:
                continue
            key = self.placement_key(runtime_id, entry)
            delivery = placed.get(key)
            if delivery is None:
                delivery = placed[key] = self.delivery_for(key)
            yield runtime_id, delivery

    def placement_key(self, runtime_id: str, entry: RuntimeEntry) -> PlacementKey:
        scenarios = self._sources.registry.explicit_scenarios(runtime_id)
        return PlacementKey(entry.labels, self._rollout_revisions(runtime_id), scenarios)

    def delivery_for(self, key: PlacementKey) -> Delivery:
        labels = dict(key.labels)
        components = self._with_rollouts(list(self._sources.components.values()), key.rollout_revisions)
        connected = self._sources.registry.connectivity(labels, key.scenarios)
        return self._render(place(components, labels), connected)

    def _render(self, placed: list[StoredComponent], connected: Connectivity) -> Delivery:
        """`connected`: the bindings and secrets of the applications the runtime sees (Compass)."""
        revisions = tuple((c.name, c.revision) for c in sorted(placed, key=lambda c: c.name))
        key = RenderKey(revisions, connected.key)
        cached = self._renders.get(key) or self._earlier.pop(key, None)
        if cached is not None:
            self._renders[key] = cached
            return cached
        placed = beside(placed, connected.components)
        secrets = ChainMap(dict(connected.secrets), self._sources.secrets)
        state = render_desired_state(placed, secrets, self._delivered)
        body = DesiredState(
            hash=state.hash,
            components=state.components,
            secrets=[
                DeliveredSecret(name=s.name, revision=s.revision, data=dict(s.data)) for s in state.secrets
            ],
        )
        delivery = Delivery(
            hash=state.hash,
            body=dumps(body),
            components=tuple((c.name, c.revision, str(c.manifest["spec"]["type"])) for c in placed),
        )
        self._renders[key] = delivery
        return delivery

    # progressive rollouts: a component with an active rollout reaches each runtime at the revision the
    # rollout hands it (rrm.core.rollouts.Assignment), placed by that revision's own selector.

    def _rollout_revisions(self, runtime_id: str) -> tuple[tuple[str, int | None], ...]:
        return tuple(
            (name, rollout.assignment.revision_for(runtime_id))
            for name, rollout in sorted(self._sources.rollouts.items())
        )

    def _with_rollouts(
        self, components: list[StoredComponent], revisions: tuple[tuple[str, int | None], ...]
    ) -> list[StoredComponent]:
        if not revisions:
            return components
        rollouts = self._sources.rollouts
        chosen = [rollouts[name].revisions.get(rev) for name, rev in revisions if rev is not None]
        return [c for c in components if c.name not in rollouts] + [c for c in chosen if c is not None]
