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
    output = log.read_text(errors="replace")
    assert "/ui/login#token=rrmat_" in output, "the dashboard link carries the token after #"
    assert "?token=" not in output, "a token in a query string reaches the server's access log"


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_demo_stopped_by_a_signal_stops_what_it_started(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """As `timeout`, systemd or a CI runner stop it: the signal goes to the demo only; its control plane and
    agents run in sessions of their own, so only the demo can stop them."""
    log = tmp_path / "demo.log"
    env = child_env({"HOME": str(tmp_path)})
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "rrm", "demo", "--data-dir", str(tmp_path / "data")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started: list[int] = []
    try:
        running_line = b"Running; data and logs in"
        wait_until(lambda: running_line in log.read_bytes(), DEMO_DEADLINE, "the demo never ran")
        started = children_of(demo.pid)
        assert len(started) == 4, f"expected a control plane and three agents, found {started}"
        demo.send_signal(stop_signal)
        wait_until(lambda: demo.poll() is not None, 30, "the demo did not exit")
        wait_until(lambda: not any(running(pid) for pid in started), 15, "")
    except AssertionError:
        left = [pid for pid in started if running(pid)]
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise AssertionError(f"still running after {stop_signal.name}: {left}\n{tail}") from None
    finally:
        for pid in started:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        stop_group(demo)
