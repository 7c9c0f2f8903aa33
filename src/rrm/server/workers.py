"""The supervisor of `rrm server --workers N`: forks N worker processes that serve on the listening socket
it bound (the kernel hands each new connection to one of them), replaces a worker that dies, and on SIGTERM
or Ctrl-C stops them all.

Each worker is a full replica (its own fleet cache following the change feed; the singleton work on the
one that holds the leader lock), so the supervisor itself does no control-plane work and holds no
database connection.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from types import FrameType

log = logging.getLogger("rrm.server.workers")
STOP_SECONDS = 20.0  # a worker's graceful stop (held requests answered, background work ended), then SIGKILL
QUICK_DEATH_SECONDS = 2.0  # a worker that dies this soon after its start is replaced after a pause
PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def shared_metrics_directory() -> Iterator[None]:
    """A private directory for prometheus-client's multiprocess mode, named in `PROMETHEUS_MULTIPROC_DIR`
    (read when prometheus-client is imported), removed after the workers."""
    directory = tempfile.mkdtemp(prefix="rrm-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(directory, ignore_errors=True)


def _forget_metrics_of(pid: int) -> None:
    """The live-only gauges of a worker that ended leave the sum (its counters stay counted)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class Supervisor:
    def __init__(self, count: int, run_worker: Callable[[int], None]) -> None:
        self._count = count
        self._run_worker = run_worker
        self._workers: dict[int, tuple[int, float]] = {}  # pid → (slot, when it started, monotonic)
        self._stopping = False

    def run(self) -> None:
        """Blocks until every worker has ended after a SIGTERM or SIGINT."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGALRM, self._kill_remaining)
        for slot in range(self._count):
            self._start(slot)
        while self._workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            ended = self._workers.pop(pid, None)
            _forget_metrics_of(pid)
            if ended is None or self._stopping:
                continue
            slot, started = ended
            log.warning("worker %d (pid %d) ended (%s); starting another", slot, pid, _how(status))
            if time.monotonic() - started < QUICK_DEATH_SECONDS:
                time.sleep(QUICK_DEATH_SECONDS)
            if not self._stopping:
                self._start(slot)
        log.info("every worker has stopped")

    def _start(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            _become_worker()
            code = 0
            try:
                self._run_worker(slot)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
                if exc.code is not None and not isinstance(exc.code, int):
                    log.error("%s", exc.code)
            except BaseException:
                log.exception("worker %d failed", slot)
                code = 1
            finally:
                logging.shutdown()
            os._exit(code)
        self._workers[pid] = (slot, time.monotonic())
        log.info("started worker %d (pid %d)", slot, pid)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("stopping %d worker(s) (%s)", len(self._workers), signal.Signals(signum).name)
        for pid in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        signal.alarm(int(STOP_SECONDS))

    def _kill_remaining(self, _signum: int, _frame: FrameType | None) -> None:
        for pid in self._workers:
            log.warning("worker pid %d did not stop in %.0f s: killing it", pid, STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _become_worker() -> None:
    """In the forked child: the default signal handlers (uvicorn installs its own), and a SIGKILL when the
    supervisor dies (Linux), so a kill -9 of the supervisor ends the control plane as it would end one
    process: no worker outlives it, and none stops gracefully (a graceful stop ends the `local` agents)."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(signum, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
