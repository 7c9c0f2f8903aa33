"""The fleet view as the rest of the server uses it: the feed, the renderer, the long-poll hub and the
agents' keys put together."""

from __future__ import annotations

from rrm.server.fleet.feed import FeedChange, FleetFeed
from rrm.server.fleet.keys import AgentKeys
from rrm.server.fleet.longpoll import LongPollHub
from rrm.server.fleet.render import Renderer
from rrm.server.secretbox import SecretBox
from rrm.store import Database


class Fleet:
    """Each change the feed applies is followed through to the deliveries (`_follow_through`); everything
    else is one of the parts' own caches or methods (see `rrm.server.fleet` for when each cache changes)."""

    def __init__(self, db: Database, box: SecretBox, delivery_window: float = 1.0) -> None:
        self._keys = AgentKeys()
        self._hub = LongPollHub(delivery_window)
        self._feed = FleetFeed(db, box, self._follow_through)
        self._renderer = Renderer(self._feed)
        # bound once to the parts' own objects and methods, so that serving a request goes through no wrapper
        self.runtimes = self._feed.runtimes
        self.components = self._feed.components
        self.registry = self._feed.registry
        self.load = self._feed.load
        self.catch_up = self._feed.catch_up
        self.write_then_catch_up = self._feed.write_then_catch_up
        self.nudge = self._feed.nudge
        self.follow = self._feed.follow
        self.rollout_assignment = self._feed.rollout_assignment
        self.delivery = self._hub.delivery
        self.wait_for_change = self._hub.wait_for_change
        self.watch = self._hub.watch
        self.close = self._hub.close
        self.key = self._keys.key
        self.set_key = self._keys.set_key
        self.forget_keys = self._keys.forget_keys
        self.paired = self._keys.paired

    @property
    def closing(self) -> bool:
        """Whether the hub let go of its waiting agents: the server stops."""
        return self._hub.closing

    @property
    def deliveries_version(self) -> int:
        """Grows whenever a runtime's delivery changes or goes (the leader re-evaluates them then)."""
        return self._hub.version

    def _follow_through(self, change: FeedChange) -> None:
        self._keys.take(change.keys, full=change.full)
        self._renderer.invalidate(change)
        if change.everyone:
            for delivery, runtime_ids in self._renderer.by_group():
                self._hub.deliver(delivery, runtime_ids)
        else:
            for runtime_id, delivery in self._renderer.deliveries(change.runtimes):
                self._hub.deliver(delivery, (runtime_id,))
        for runtime_id in change.runtimes:
            if runtime_id not in self.runtimes:
                self._hub.withdraw(runtime_id)
