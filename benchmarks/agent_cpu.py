"""Agent CPU: the CPU one real `rrm agent` process spends per update, by delivery (long-poll, watch stream).

One `rrm agent` (the CLI, self-hosted target, its default intervals and log level) writes component files
into its own resources directory beside the daprd stand-in (tests/standins/fake_daprd.py), paired with a
fresh `rrm server`. Its runtime holds `COMPONENTS` components; each update rewrites one of them (a new
revision), and the next update is written only once the control plane shows the runtime Ready on the new
hash: the agent fetched, verified, cached and wrote it, followed the sidecar until it loaded it, and reported
both. The agent's CPU time (utime + stime of its process, all threads, from /proc/<pid>/stat: 10 ms ticks)
is read before and after the updates; the CPU it spends idle over the same wall time, measured at its
default intervals just before, is subtracted.

    .venv/bin/python -m benchmarks.agent_cpu [--updates 200] [--idle-seconds 60] [--delivery longpoll,watch]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.harness import AgentProcess, FakeDaprd, register

from benchmarks.common import SELECTOR, ServerProcess, component
from benchmarks.fleets import DEFAULT_HEARTBEAT_SECONDS, DEFAULT_WAIT_SECONDS, Bench
from benchmarks.profile import profiled

COMPONENTS = 10
DELIVERIES = ("longpoll", "watch")
IDLE_SECONDS = 60.0  # one default heartbeat and reconcile, two default long-poll waits
POLL_SECONDS = 0.02  # how often the control plane is asked whether the runtime is Ready
READY_DEADLINE = 60.0
TARGET_MS_PER_UPDATE = 1.0
RUNTIME = "agent-cpu"
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
LABELS = dict(label.split("=", 1) for label in SELECTOR.split(","))
CLOCK = "agent process CPU: utime+stime, all threads, /proc/<pid>/stat (10 ms ticks); wall: monotonic"


def run(
    bench: Bench,
    updates: int,
    idle_seconds: float = IDLE_SECONDS,
    deliveries: Sequence[str] = DELIVERIES,
    components: int = COMPONENTS,
) -> dict[str, Any]:
    """`updates` updates through one agent per delivery mode, each on a fresh server."""
    workdir = bench.workdir / "agent-cpu"
    return measure(workdir, bench.log, updates, idle_seconds, deliveries, components, bench.profile_dir)


def measure(
    workdir: Path,
    log: Callable[[str], None],
    updates: int,
    idle_seconds: float = IDLE_SECONDS,
    deliveries: Sequence[str] = DELIVERIES,
    components: int = COMPONENTS,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """As `run`; with `profile_dir`, the agent's update phase of each mode is recorded there (py-spy)."""
    results = {
        mode: _one_delivery(workdir / mode, log, mode, updates, idle_seconds, components, profile_dir)
        for mode in deliveries
    }
    return {
        "updates": updates,
        "components": components,
        "idle_seconds": idle_seconds,
        "clock": CLOCK,
        "target_ms_per_update": TARGET_MS_PER_UPDATE,
        "agent_intervals": {
            "wait_seconds": DEFAULT_WAIT_SECONDS,
            "heartbeat_seconds": DEFAULT_HEARTBEAT_SECONDS,
        },
        "deliveries": results,
        "met": all(r["met"] for r in results.values()),
    }


def _one_delivery(
    workdir: Path,
    log: Callable[[str], None],
    mode: str,
    updates: int,
    idle_seconds: float,
    components: int,
    profile_dir: Path | None,
) -> dict[str, Any]:
    if workdir.exists():
        shutil.rmtree(workdir)
    server = ServerProcess(workdir / "server", workdir / "server.log")
    server.start()
    try:
        with _agent(server, workdir, mode) as agent:
            names = [f"cpu-{i}" for i in range(components)]
            server.apply(*(component(name, 0) for name in names))
            if _wait_ready(server, "") is None:
                raise TimeoutError(f"the agent never got Ready on its first state; see {agent.log_path}")
            log(f"agent cpu, {mode}: Ready; {idle_seconds:.0f} s idle")
            (idle_cpu, _), idle_wall = _cpu_over(agent.pid, lambda: time.sleep(idle_seconds))
            log(f"agent cpu, {mode}: idle {1000 * idle_cpu / idle_wall:.2f} ms/s; {updates} updates")
            done = 0

            def update_all() -> None:
                nonlocal done
                hash = ""
                for marker in range(1, updates + 1):
                    server.apply(component(names[marker % components], marker))
                    ready = _wait_ready(server, hash)
                    if ready is None:
                        return
                    hash, done = ready, marker

            with profiled({"agent": agent.pid}, profile_dir, f"agent-cpu-{mode}"):
                (cpu, system), wall = _cpu_over(agent.pid, update_all)
    finally:
        server.stop()
    idle_share = idle_cpu / idle_wall * wall
    per_update = (cpu - idle_share) / done if done else None
    result = {
        "updates": done,
        "incomplete": "" if done == updates else f"stopped after update {done}: not Ready in time",
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 3),
        "cpu_system_seconds": round(system, 3),  # of cpu_seconds, in the kernel (fsync, sockets, threads)
        "idle_cpu_ms_per_second": round(1000 * idle_cpu / idle_wall, 3),
        "idle_cpu_seconds_subtracted": round(idle_share, 3),
        "cpu_ms_per_update": round(1000 * per_update, 3) if per_update is not None else None,
        "cpu_ms_per_update_with_idle": round(1000 * cpu / done, 3) if done else None,
    }
    result["met"] = done == updates and per_update is not None and 1000 * per_update <= TARGET_MS_PER_UPDATE
    log(f"agent cpu, {mode}: {result}")
    return result


@contextmanager
def _agent(server: ServerProcess, workdir: Path, mode: str) -> Iterator[AgentProcess]:
    """One paired `rrm agent` with the given delivery beside a daprd stand-in, both at their defaults."""
    assert server.admin is not None
    daprd = FakeDaprd(workdir / "resources", workdir / "daprd.log", app_id=RUNTIME)
    agent = AgentProcess(
        RUNTIME,
        server.url,
        workdir / "state",
        workdir / "resources",
        workdir / "agent.log",
        dapr_http_port=daprd.port,
        delivery=mode,
    )
    token = register(server.admin, RUNTIME, labels=LABELS)
    daprd.start()
    try:
        agent.start(token)
        yield agent
    finally:
        agent.stop()
        daprd.stop()


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of process `pid` so far: user and system together, and system alone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system = int(fields[11]), int(fields[12])
    return (user + system) / TICKS_PER_SECOND, system / TICKS_PER_SECOND


def _cpu_over(pid: int, work: Callable[[], None]) -> tuple[tuple[float, float], float]:
    """The CPU seconds process `pid` spent while `work` ran (all, and in the kernel), and the wall seconds."""
    (cpu, system), started = _cpu_seconds(pid), time.monotonic()
    work()
    (cpu_after, system_after), ended = _cpu_seconds(pid), time.monotonic()
    return (cpu_after - cpu, system_after - system), ended - started


def _wait_ready(server: ServerProcess, before: str) -> str | None:
    """The runtime's desired hash once it differs from `before` and the runtime is Ready on it; None when
    that does not happen within READY_DEADLINE."""
    assert server.admin is not None
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        runtime = server.admin.get(f"/api/v1/runtimes/{RUNTIME}").json()
        desired = runtime["desired_hash"]
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in runtime["conditions"])
        if desired and desired != before and ready and runtime["applied_hash"] == desired:
            return str(desired)
        time.sleep(POLL_SECONDS)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.agent_cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS)
    parser.add_argument("--delivery", default=",".join(DELIVERIES), help="comma-separated")
    parser.add_argument("--components", type=int, default=COMPONENTS)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--profile", type=Path, default=None, help="record py-spy profiles here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="rrm-bench-agent-cpu-"))
    try:
        result = measure(
            workdir,
            lambda message: print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True),
            args.updates,
            args.idle_seconds,
            [mode.strip() for mode in args.delivery.split(",") if mode.strip()],
            args.components,
            args.profile,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
