"""The Hyperscaler Account Pool's cleanup job: on the leader, now and then, run `--hap-cleanup-command` for
each dirty binding nobody uses, and return the binding to the pool only when the command succeeded. A failure
is kept on the binding (shown by `rrm get accounts`) and logged, and the binding is tried again next time."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import time

from rrm.server.provisioning.hap import HYPERSCALER_TYPE, Binding, HyperscalerAccountPool

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


class CleanupJob:
    """Runs a cleanup pass at most every `interval` seconds, on its own thread, never two at once."""

    def __init__(self, pool: HyperscalerAccountPool, command: str | None, interval: float) -> None:
        self.pool = pool
        self.command = command
        self.interval = interval
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
                log.info("account %s cleaned up and returned to the pool", account)
            else:
                log.warning("account %s stays dirty: %s (retried in %.0f s)", account, error, self.interval)
