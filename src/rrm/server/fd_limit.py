"""The control plane's open files, watched: a process at its open-file limit cannot accept a connection, and
uvloop (libuv) then accepts the pending ones and closes them at once, unanswered and unlogged. Clients see
"server disconnected without sending a response", the operator an empty log. Each agent holds up to two
connections (its watch stream or long-poll, and its status reports' connection), so a fleet reaches the
limit at about half as many agents as the limit has files. This watch logs when the process nears its
limit and when it reaches it, naming the limit and what to raise.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("rrm.server.fd_limit")

CONNECTIONS_PER_AGENT = 2
CHECK_SECONDS = 1.0
# A full count lists /proc/self/fd (about 1 µs per open file: 20 ms at 20,000), so it runs every tenth
# check; the check in between is one dup(), whose number is a lower bound of the files open (the kernel
# hands out the lowest free number) and which fails only at the limit itself.
COUNT_EVERY = 10
NEAR_FRACTION = 0.9
REPEAT_SECONDS = 60.0  # one line per condition and minute while it lasts
REMEDY = (
    "raise the open-file limit (the service's LimitNOFILE, `ulimit -n` before the start, the container's "
    "nofile ulimit) to at least twice the agents plus 1,000, or run more --workers: each holds its share"
)
_FD_DIR = Path("/proc/self/fd")
_EFFECT = (
    "this process cannot accept connections, and the event loop closes them unanswered (clients see the "
    f"server disconnect, nothing else is logged); each agent holds up to {CONNECTIONS_PER_AGENT} connections"
)


def count_open_files() -> int | None:
    """The files this process has open, or None where /proc is not there to tell."""
    try:
        return len(os.listdir(_FD_DIR)) - 1  # listing it opens one more
    except OSError:
        return None


class OpenFileWatch:
    """Logs at WARNING when the open files reach NEAR_FRACTION of the soft limit, at ERROR when a file can no
    longer be opened, at INFO when back below the mark; each at most once per REPEAT_SECONDS, so a limit
    touched at every fleet-wide burst of status reports gives one line a minute, not one a burst."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # held, so a dup() needs no path
        self._checks = 0
        self._counted = 0
        self._logged: dict[str, float] = {}
        self._state = "fine"

    def check(self) -> str:
        """One look: "fine", "near" or "at" (the limit), logged as the class says."""
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        try:
            lowest_free = os.dup(self._probe)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            return self._enter("at", logging.ERROR, f"open-file limit {limit} reached: {_EFFECT}; {REMEDY}")
        os.close(lowest_free)
        if self._checks % COUNT_EVERY == 0:
            self._counted = count_open_files() or 0
        self._checks += 1
        open_files = max(lowest_free, self._counted)
        if open_files >= NEAR_FRACTION * limit:
            near = f"{open_files} files open of the open-file limit {limit}; at the limit, {_EFFECT}"
            return self._enter("near", logging.WARNING, f"{near}; {REMEDY}")
        if self._state != "fine":
            return self._enter("fine", logging.INFO, f"open files back to {open_files} of the limit {limit}")
        return "fine"

    def _enter(self, state: str, level: int, message: str) -> str:
        now = self._clock()
        if now - self._logged.get(state, -REPEAT_SECONDS) >= REPEAT_SECONDS:
            log.log(level, "%s", message)
            self._logged[state] = now
        self._state = state
        return state

    def close(self) -> None:
        os.close(self._probe)


_started: set[int] = set()  # the pids whose watch runs: one per process


def start_watch() -> None:
    """Checks this process's open files every CHECK_SECONDS in a daemon thread (once per process)."""
    if os.getpid() in _started:
        return
    _started.add(os.getpid())
    watch = OpenFileWatch()

    def run() -> None:
        while True:
            time.sleep(CHECK_SECONDS)
            watch.check()

    threading.Thread(target=run, name="rrm-open-files", daemon=True).start()


def watch_open_files(forked_workers: bool) -> None:
    """Watch the open files of this process, or, when it only supervises forked workers (`--workers` > 1),
    of each worker, started in it right after the fork (a thread does not cross a fork)."""
    if forked_workers:
        os.register_at_fork(after_in_child=start_watch)
    else:
        start_watch()
