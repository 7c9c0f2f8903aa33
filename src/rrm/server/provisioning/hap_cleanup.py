"""The Hyperscaler Account Pool's cleanup job: on the leader, now and then, run `--hap-cleanup-command` for
each dirty binding nobody uses, and return the binding to the pool only when the command succeeded. A failure
is kept on the binding (shown by `rrm get accounts`), recorded as an event (`AccountCleanupFailed`, subject
`account/KIND/NAME`) and tried again next time; a success is an `AccountCleaned` event."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from rrm.server.provisioning.hap import HYPERSCALER_TYPE, Binding, HyperscalerAccountPool
from rrm.store import Database
from rrm.store import repositories as repo

log = logging.getLogger("rrm.server.provisioning.hap")
COMMAND_TIMEOUT = 3600.0
OUTPUT_LIMIT = 500


def run_command(
    command: str, binding: Binding, namespace: str, timeout: float = COMMAND_TIMEOUT
) -> str | None:
    """Run `command NAME`; None when it exited 0, else what went wrong (its last output)."""
    env = {
        **os.environ,
        "RRM_BINDING_KIND": binding.kind.kind,
        "RRM_BINDING_NAME": binding.name,
        "RRM_BINDING_NAMESPACE": namespace,
        "RRM_HYPERSCALER_TYPE": binding.labels.get(HYPERSCALER_TYPE, ""),
    }
    try:
        done = subprocess.run(
            [*shlex.split(command), binding.name], env=env, capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the cleanup command could not run: {exc}"
    if done.returncode == 0:
        return None
    output = (done.stderr.strip() or done.stdout.strip())[-OUTPUT_LIMIT:]
    return f"the cleanup command exited {done.returncode}" + (f": {output}" if output else "")


Record = Callable[[str, str, str], None]


class EventLog:
    """Writes the job's events to the control plane's database, through connections of its own (opened on
    the first event: the job runs outside any request and the engine hands backends no database)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._db: Database | None = None

    def __call__(self, type_: str, subject: str, message: str) -> None:
        if self._db is None:
            self._db = Database(self.database_url)
        with self._db.write() as session:
            repo.record_event(session, type_, subject, message, datetime.now(UTC))


class CleanupJob:
    """Runs a cleanup pass at most every `interval` seconds, on its own thread, never two at once."""

    def __init__(
        self, pool: HyperscalerAccountPool, command: str | None, interval: float, record: Record | None = None
    ) -> None:
        self.pool = pool
        self.command = command
        self.interval = interval
        self.record = record
        self._last = float("-inf")
        self._thread: threading.Thread | None = None

    def due(self) -> None:
        """Called on the leader every few seconds; starts a pass when one is due and none runs."""
        if self.command is None or (self._thread is not None and self._thread.is_alive()):
            return
        if time.monotonic() - self._last < self.interval:
            return
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self.run_once, name="rrm-hap-cleanup", daemon=True)
        self._thread.start()

    def run_once(self) -> None:
        command = self.command
        if command is None:
            return
        try:
            results = self.pool.clean(lambda b: run_command(command, b, self.pool.garden.namespace))
        except Exception:
            log.exception("the account pool's cleanup pass failed; retried in %.0f s", self.interval)
            return
        for account, error in results:
            if error is None:
                message = "cleaned up and returned to the pool"
                log.info("account %s %s", account, message)
            else:
                message = f"stays dirty: {error} (tried again in {self.interval:.0f} s)"
                log.warning("account %s %s", account, message)
            if self.record is not None:
                kind = "AccountCleaned" if error is None else "AccountCleanupFailed"
                try:
                    self.record(kind, f"account/{account}", message)
                except Exception:
                    log.exception("recording the cleanup of %s failed", account)
