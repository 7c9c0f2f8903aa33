"""6. Ready: from the write's answer (admin API) to `Ready` in the control plane, with real `rrm agent`
processes at their default intervals, each on its own resources directory beside the daprd stand-in
(tests/standins/fake_daprd.py) at its defaults: Ready there means the sidecar has loaded the new revision.

Each update adds a component: daprd's metadata names a component's type and version, not its revision, so
only a component the sidecar did not hold before shows whether Ready waited for the sidecar to load it. The
control plane is polled every `POLL_SECONDS` for its runtime list; a runtime counts as Ready on the new state
at the first poll that shows it Ready with its applied hash equal to a desired hash that changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.harness import AgentProcess, FakeDaprd, register
from tests.standins import fake_daprd

from benchmarks.common import PAUSE_BEFORE_UPDATE, SELECTOR, ServerProcess, component, percentiles
from benchmarks.fleets import DEFAULT_HEARTBEAT_SECONDS, DEFAULT_WAIT_SECONDS, Bench

COMPONENT = "bench-ready"
POLL_SECONDS = 0.05
READY_DEADLINE = 120.0  # past two default heartbeats: an agent that waits for one is measured, not lost
AT_ONCE = 8  # processes started or stopped side by side
LABELS = dict(label.split("=", 1) for label in SELECTOR.split(","))


def run(bench: Bench, size: int, rounds: int) -> dict[str, Any]:
    workdir = bench.workdir / f"ready-{size}"
    server = ServerProcess(workdir / "server", workdir / "server.log")
    server.start()
    latencies: list[float] = []
    not_ready = 0
    try:
        with _fleet(bench, server, workdir, size):
            server.apply(component(f"{COMPONENT}-0", 0))
            hashes, _ = _wait_ready(server, {}, time.monotonic())
            bench.log(f"ready {size}: every runtime Ready; {rounds} updates")
            for marker in range(1, rounds + 1):
                time.sleep(PAUSE_BEFORE_UPDATE)
                server.apply(component(f"{COMPONENT}-{marker}", marker))
                answered = time.monotonic()
                hashes, ready_at = _wait_ready(server, hashes, answered)
                latencies += [t - answered for t in ready_at.values()]
                not_ready += size - len(ready_at)
                bench.log(
                    f"ready {size}: update {marker}: max {max(ready_at.values(), default=0) - answered:.3f} s"
                )
    finally:
        server.stop()
    return {
        "size": size,
        "rounds": rounds,
        "latency": percentiles(latencies),
        "not_ready": not_ready,
        "poll_seconds": POLL_SECONDS,
        "agent_intervals": {
            "wait_seconds": DEFAULT_WAIT_SECONDS,
            "heartbeat_seconds": DEFAULT_HEARTBEAT_SECONDS,
        },
        "standin": {
            "rescan_seconds": fake_daprd.RESCAN_INTERVAL,
            "init_delay_seconds": fake_daprd.INIT_DELAY,
        },
    }


@contextmanager
def _fleet(bench: Bench, server: ServerProcess, workdir: Path, size: int) -> Iterator[None]:
    """`size` runtimes, each an `rrm agent` beside a daprd stand-in, started and stopped side by side."""
    assert server.admin is not None
    pairs: list[tuple[FakeDaprd, AgentProcess, str]] = []
    for index in range(size):
        name = f"ready-{index:03d}"
        base = workdir / name
        daprd = FakeDaprd(base / "resources", base / "daprd.log", app_id=name)
        agent = AgentProcess(
            name,
            server.url,
            base / "state",
            base / "resources",
            base / "agent.log",
            dapr_http_port=daprd.port,
        )
        pairs.append((daprd, agent, register(server.admin, name, labels=LABELS)))
    with ThreadPoolExecutor(AT_ONCE) as pool:
        try:
            list(pool.map(lambda pair: (pair[0].start(), pair[1].start(pair[2])), pairs))
            bench.log(f"ready {size}: {size} agents and daprd stand-ins started")
            yield
        finally:
            list(pool.map(lambda process: process.stop(), [p for pair in pairs for p in pair[:2]]))


def _wait_ready(
    server: ServerProcess, before: dict[str, str], since: float
) -> tuple[dict[str, str], dict[str, float]]:
    """Poll until every runtime is Ready on a desired hash other than `before`'s (or the deadline passes).

    Returns each runtime's desired hash and, for those that got there, when they were first seen Ready."""
    assert server.admin is not None
    ready_at: dict[str, float] = {}
    hashes: dict[str, str] = {}
    while time.monotonic() < since + READY_DEADLINE:
        now = time.monotonic()
        runtimes = server.admin.get("/api/v1/runtimes").json()
        for runtime in runtimes:
            name, desired = runtime["name"], runtime["desired_hash"]
            hashes[name] = desired
            if name not in ready_at and desired and desired != before.get(name) and _ready(runtime):
                ready_at[name] = now
        if runtimes and len(ready_at) == len(runtimes):
            break
        time.sleep(POLL_SECONDS)
    return hashes, ready_at


def _ready(runtime: dict[str, Any]) -> bool:
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in runtime["conditions"])
    return ready and runtime["applied_hash"] == runtime["desired_hash"]
