"""Cross-replica wake-ups: PostgreSQL LISTEN on the change channel, in a thread, reconnecting forever.

A lost notification costs at most one poll interval: the fleet also polls the feed on a timer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from rrm.store.repositories import CHANGES_CHANNEL

log = logging.getLogger("rrm.store.notifications")


class ChangeListener:
    def __init__(self, url: str, on_change: Callable[[], Any], reconnect_seconds: float = 1.0) -> None:
        self._url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._on_change = on_change
        self._reconnect_seconds = reconnect_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rrm-change-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._url, autocommit=True, connect_timeout=5, application_name="rrm-change-listener"
                ) as connection:
                    connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._on_change()  # anything committed while we were not listening
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=1.0, stop_after=1):
                            self._on_change()
            except psycopg.Error as exc:
                log.warning("change listener lost its connection (%s); reconnecting", exc)
                self._stop.wait(self._reconnect_seconds)
