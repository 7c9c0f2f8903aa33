"""`rrm demo --once`: the whole path, end to end, as a newcomer first runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import child_env, wait_until

pytestmark = pytest.mark.integration

DEMO_DEADLINE = 120


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def group_ends(demo: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        wait_until(lambda: demo.poll() is not None and not group_alive(demo.pid), timeout, "")
    except AssertionError:
        return False
    return True


def stop_group(demo: subprocess.Popen[bytes]) -> None:
    """The demo runs in its own session: whatever it started and left behind goes with it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if group_ends(demo, 0):
            return
        os.killpg(demo.pid, sig)
        group_ends(demo, 10)


def test_demo_once_completes_and_leaves_nothing_running(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    env = child_env({"RRM_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)})
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "rrm", "demo", "--once"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.wait(DEMO_DEADLINE)
        finished = demo.returncode is not None
        leftover = finished and not group_ends(demo, 10)
    finally:
        stop_group(demo)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
    assert finished, f"rrm demo --once still running after {DEMO_DEADLINE} s:\n{tail}"
    assert demo.returncode == 0, f"rrm demo --once exited {demo.returncode}:\n{tail}"
    assert not leftover, f"rrm demo --once left processes running after it exited:\n{tail}"
