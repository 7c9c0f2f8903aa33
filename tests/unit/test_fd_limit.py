"""The open-file watch: a process at or near its open-file limit says so in its log, once a minute."""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from rrm.server import fd_limit
from rrm.server.fd_limit import OpenFileWatch, count_open_files


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def watch(clock: Clock) -> Iterator[OpenFileWatch]:
    watch = OpenFileWatch(clock=clock)
    yield watch
    watch.close()


@pytest.fixture
def soft_limit() -> Iterator[list[int]]:
    """Lets a test lower this process's soft limit; the old one is back afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield [soft]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _lower_soft_limit(to: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (to, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _fill_to_limit() -> list[int]:
    opened = []
    try:
        while True:
            opened.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return opened


def test_at_the_limit_it_logs_an_error_naming_the_limit(
    watch: OpenFileWatch, soft_limit: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    limit = (count_open_files() or 0) + 20
    _lower_soft_limit(limit)
    opened = _fill_to_limit()
    try:
        with caplog.at_level(logging.INFO, logger="rrm.server.fd_limit"):
            assert watch.check() == "at"
    finally:
        for fd in opened:
            os.close(fd)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert f"open-file limit {limit} reached" in record.message
    assert "closes them unanswered" in record.message and "LimitNOFILE" in record.message


def test_near_the_limit_it_warns_at_most_once_a_minute_and_says_when_it_is_back(
    watch: OpenFileWatch, clock: Clock, soft_limit: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    # enough held that a few free files are under 10 % of the limit: a file another thread of the test
    # process opens meanwhile must not take the last one
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(100)]
    open_now = count_open_files() or 0
    limit = open_now + 5
    _lower_soft_limit(limit)
    try:
        with caplog.at_level(logging.INFO, logger="rrm.server.fd_limit"):
            assert watch.check() == "near"
            clock.now += fd_limit.REPEAT_SECONDS / 2
            assert watch.check() == "near"
            assert [r.levelno for r in caplog.records] == [logging.WARNING]
            assert f"files open of the open-file limit {limit}" in caplog.records[0].message
            clock.now += fd_limit.REPEAT_SECONDS
            assert watch.check() == "near"
            assert len(caplog.records) == 2
            _lower_soft_limit(soft_limit[0])
            for _ in range(fd_limit.COUNT_EVERY):  # until the next full count
                state = watch.check()
            assert state == "fine"
            _lower_soft_limit(limit)
            assert watch.check() == "near"  # again within the minute: not logged again
            assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING, logging.INFO]
    finally:
        for fd in held:
            os.close(fd)
    assert "back to" in caplog.records[-1].message


def test_well_below_the_limit_it_logs_nothing(watch: OpenFileWatch, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="rrm.server.fd_limit"):
        assert watch.check() == "fine"
    assert caplog.records == []


def test_a_forked_worker_runs_its_own_watch() -> None:
    """With --workers, the watch starts in each forked worker (a thread does not cross a fork), not in the
    supervisor; checked in a child interpreter, since the fork hook cannot be taken back."""
    script = textwrap.dedent(
        """
        import os, threading
        from rrm.server.fd_limit import watch_open_files
        watch_open_files(forked_workers=True)
        names = lambda: {t.name for t in threading.enumerate()}
        assert "rrm-open-files" not in names(), "the supervisor watches itself"
        pid = os.fork()
        if pid == 0:
            os._exit(0 if "rrm-open-files" in names() else 1)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "the worker has no watch"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
