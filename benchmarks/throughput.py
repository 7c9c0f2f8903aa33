"""4. Write throughput: component writes per second through the admin API with N runtimes registered and
every written component placed on all of them; then, with their agents connected, a burst of writes to one
component: how many states each agent took (applied) and how many it received, at most how many of each
within one delivery window, and whether every agent ends on the final revision. A state is received when
its frame (or long-poll answer) is read, which the agent does as frames come; it is taken when the agent
begins to apply it, at most one per window, the newest received: an agent that fell behind can receive
frames closer together than the control plane wrote them, and drops those superseded before their turn."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from benchmarks.common import ProcessSampler, ServerProcess, component, percentiles
from benchmarks.fleets import Bench, desired_hash, sync_deadline
from benchmarks.profile import profiled
from rrm.agent.plain_http import PlainHTTPTransport

COMPONENTS = 10
CONCURRENCY = 8


def run(bench: Bench, size: int, seconds: float, burst: int, window: float) -> dict[str, Any]:
    template = bench.fleet(size)
    server = bench.server(template, "throughput")
    server.start()
    names = [f"bench-w{i}" for i in range(COMPONENTS)]
    try:
        server.apply(*(component(name, 0) for name in names))
        bench.log(f"throughput: writing for {seconds:.0f} s, {size} runtimes, no agents")
        with (
            ProcessSampler(server.pid, children=True) as sampler,
            profiled(bench.pids(server), bench.profile_dir, "writes"),
        ):
            quiet = asyncio.run(_write(server, names, seconds=seconds))
        bench.log(f"throughput: writing for {seconds:.0f} s in applies of {COMPONENTS} components")
        with (
            ProcessSampler(server.pid, children=True) as batched_sampler,
            profiled(bench.pids(server), bench.profile_dir, "writes-batched"),
        ):
            batched = asyncio.run(_write(server, names, seconds=seconds, batch=True, first_marker=500_000))
        current = desired_hash(server, template.names[0])
        bench.start_agents(template, [server.url], "throughput")
        bench.wait_reported(current, size, sync_deadline(size), f"{size} agents synced")
        bench.log(f"throughput: burst of {burst} writes to one component with {size} agents connected")
        started = time.monotonic()
        with profiled(bench.pids(server), bench.profile_dir, "burst"):
            loaded = asyncio.run(_write(server, names[:1], count=burst, first_marker=1_000_000))
            final = desired_hash(server, template.names[0])
            applied = bench.wait_applied(final, size, 120 + size / 50)
        settled = time.monotonic() - started
        received = [r for reply in bench.pool.broadcast("received", since=started) for r in reply]
        taken = [t for reply in bench.pool.broadcast("taken", since=started) for t in reply]
        failures = bench.failures()
    finally:
        bench.stop_agents()
        server.stop()
    taken_per_agent, received_per_agent = [len(t) for t in taken], [len(r) for r in received]
    return {
        "runtimes": size,
        "components_placed": COMPONENTS,
        "writes_per_second": quiet["per_second"],
        "write_latency": quiet["latency"],
        "server_cpu_ms_per_write": _cpu_ms_per_write(sampler, quiet),
        "batched": {
            "components_per_apply": COMPONENTS,
            "writes_per_second": batched["per_second"],
            "server_cpu_ms_per_write": _cpu_ms_per_write(batched_sampler, batched),
            "applies_per_second": round(batched["per_second"] / COMPONENTS, 1),
            "apply_latency": batched["latency"],
        },
        "server": sampler.result(),
        "burst": {
            "writes": burst,
            "writes_per_second": loaded["per_second"],
            "write_latency": loaded["latency"],
            "window_seconds": window,
            "taken_per_agent_max": max(taken_per_agent, default=0),
            "taken_per_agent_mean": _mean(taken_per_agent),
            "taken_per_window_max": max((_most_within(t, window) for t in taken), default=0),
            "received_per_agent_max": max(received_per_agent, default=0),
            "received_per_agent_mean": _mean(received_per_agent),
            "received_per_window_max": max((_most_within(r, window) for r in received), default=0),
            "agents_on_final_revision": applied,
            "agents": size,
            "seconds_until_all_final": round(settled, 2),
            "failed_requests": failures,
        },
    }


async def _write(
    server: ServerProcess,
    names: list[str],
    *,
    seconds: float | None = None,
    count: int | None = None,
    first_marker: int = 1,
    batch: bool = False,
) -> dict[str, Any]:
    """Component updates (each a new revision) from CONCURRENCY clients, until `seconds` or `count`; with
    `batch`, each request updates every component in `names` (one apply, one transaction)."""
    assert server.admin is not None
    headers = {"Authorization": server.admin.headers["Authorization"]}
    latencies: list[float] = []
    written = 0
    markers = iter(range(first_marker, first_marker + 10**9))
    started = time.monotonic()
    deadline = started + seconds if seconds is not None else float("inf")

    end = first_marker + count if count is not None else None

    async def writer(client: httpx.AsyncClient) -> None:
        nonlocal written
        while time.monotonic() < deadline:
            marker = next(markers)  # each writer takes the next marker, so `count` writes are made exactly
            if end is not None and marker >= end:
                return
            if batch:
                documents = [component(name, marker) for name in names]
            else:
                documents = [component(names[marker % len(names)], marker)]
            sent = time.monotonic()
            response = await client.post("/api/v1/apply", json={"documents": documents})
            if response.status_code != 200:
                raise RuntimeError(f"apply answered {response.status_code}: {response.text[:300]}")
            latencies.append(time.monotonic() - sent)
            written += len(documents)

    # the agents' transport: httpx's own cost this process more CPU per write than half the server's
    transport = PlainHTTPTransport()
    async with httpx.AsyncClient(
        base_url=server.url, headers=headers, timeout=120, transport=transport
    ) as client:
        await asyncio.gather(*(writer(client) for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - started
    return {"written": written, "per_second": round(written / elapsed, 1), "latency": percentiles(latencies)}


def _cpu_ms_per_write(sampler: ProcessSampler, phase: dict[str, Any]) -> float | None:
    """The control plane's CPU time per component write: a figure that a busy machine changes less than
    writes per second (other processes take the cores, not this process's work per write)."""
    return round(1000 * sampler.cpu_seconds / phase["written"], 2) if phase["written"] else None


def _mean(counts: list[int]) -> float:
    return round(sum(counts) / max(1, len(counts)), 2)


def _most_within(times: list[float], window: float) -> int:
    """The largest number of `times` inside any interval of length `window`."""
    best, start = 0, 0
    ordered = sorted(times)
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best
