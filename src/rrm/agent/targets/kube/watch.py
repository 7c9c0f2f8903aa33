"""Noticing hand edits at once: one watch per kind and namespace on the agent's own objects.

Each watch lists first (for a resourceVersion), then streams from there; any event wakes the loop, which
reconciles with a drift check (its own writes cost one reconcile that finds nothing to do). Bookmarks keep
the resourceVersion to resume from fresh. An expired resourceVersion (410 Gone: the server no longer has
the events after it) or a broken stream lists again, with backoff, and watches from the new list; the loop
looks once, for what happened in between. The periodic reconcile is the safety net for whatever a watch
misses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client

from rrm.agent.backoff import Backoff
from rrm.agent.targets.kube.client import KubeApi, KubeError

log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 240
WATCHED_EVENTS = frozenset({"ADDED", "MODIFIED", "DELETED"})


@dataclass(frozen=True)
class ChangeWatcher:
    """Watches the agent's objects (`selector`) of each kind in each namespace; any change calls `wake`."""

    configuration: client.Configuration
    kinds: tuple[str, ...]
    namespaces: list[str]
    selector: str
    wake: Callable[[], None]

    def start(self) -> None:
        for namespace in self.namespaces:
            for kind in self.kinds:
                threading.Thread(
                    target=self._watch_forever,
                    args=(kind, namespace),
                    name=f"watch-{kind}-{namespace}",
                    daemon=True,
                ).start()

    def _watch_forever(self, kind: str, namespace: str) -> None:
        api = KubeApi(self.configuration)
        backoff = Backoff()
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    _, resource_version = api.list_objects(kind, namespace, self.selector)
                resource_version = self._follow(api, kind, namespace, resource_version, backoff)
                continue  # the server ended the stream: resume from the last resourceVersion seen
            except KubeError as exc:
                if exc.status == 410:
                    log.info("event=watch-expired kind=%s namespace=%s error=%s", kind, namespace, exc)
                else:
                    log.warning("event=watch-failed kind=%s namespace=%s error=%s", kind, namespace, exc)
            except Exception as exc:  # a connection dropped mid-stream
                log.warning("event=watch-failed kind=%s namespace=%s error=%s", kind, namespace, exc)
            # Events may have been missed: list again and let the loop look once.
            resource_version = None
            self.wake()
            time.sleep(backoff.next_delay())

    def _follow(
        self, api: KubeApi, kind: str, namespace: str, resource_version: str, backoff: Backoff
    ) -> str:
        """Stream until the server ends the watch; answers the last resourceVersion seen."""
        for event in api.watch(kind, namespace, self.selector, resource_version, WATCH_TIMEOUT_SECONDS):
            backoff.reset()
            metadata = (event.get("object") or {}).get("metadata") or {}
            resource_version = metadata.get("resourceVersion") or resource_version
            if event.get("type") in WATCHED_EVENTS:
                log.debug("event=watch kind=%s namespace=%s type=%s", kind, namespace, event["type"])
                self.wake()
        return resource_version
