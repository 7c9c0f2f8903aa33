"""5. Reconnect storm: restart the control plane under N connected agents. The clock starts at SIGTERM; the
new process starts on the same data dir and port, and as soon as it answers, one component placed on every
runtime is updated. Done when every agent has applied that update and reported it to the new process.
Besides the wall time, the new process's CPU-seconds from when it answers until then."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import ProcessSampler, component
from benchmarks.fleets import Bench, desired_hash, sync_deadline
from benchmarks.profile import profiled

COMPONENT = "bench-storm"
DEADLINE = 300.0


def run(bench: Bench, size: int) -> dict[str, Any]:
    template = bench.fleet(size)
    label = f"storm-{size}"
    server = bench.server(template, label)
    server.start()
    try:
        server.apply(component(COMPONENT, 0))
        current = desired_hash(server, template.names[0])
        bench.start_agents(template, [server.url], label)
        bench.wait_reported(current, size, sync_deadline(size), f"{size} agents synced")
        bench.failures(reset=True)
        bench.log(f"storm {size}: restarting the control plane")
        restarted = time.monotonic()
        server.stop()
        stopped = time.monotonic()
        server.start()
        answering = time.monotonic()
        sampler = ProcessSampler(server.pid, children=True)  # CPU-s compare across busy runs, wall does not
        with sampler, profiled(bench.pids(server), bench.profile_dir, label):
            server.apply(component(COMPONENT, 1))
            updated = time.monotonic()
            current = desired_hash(server, template.names[0])
            deadline = updated + DEADLINE
            while True:
                progress = bench.progress(current)
                if progress["reported"] >= size or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
        done = time.monotonic()
        failures = bench.failures()
        synced = server.synced_count()
    finally:
        bench.stop_agents()
        server.stop()
    all_synced = progress["reported"] >= size
    bench.log(
        f"storm {size}: all synced {done - restarted:.1f} s after SIGTERM" if all_synced else "not all synced"
    )
    return {
        "size": size,
        "stop_seconds": round(stopped - restarted, 2),
        "start_seconds": round(answering - stopped, 2),
        "all_synced": all_synced,
        "synced_seconds_after_restart": round(done - restarted, 2) if all_synced else None,
        "synced_seconds_after_update": round(done - updated, 2) if all_synced else None,
        "agents_reported_update": progress["reported"],
        "lost": size - progress["applied"],
        "synced_by_control_plane": synced,
        "server_cpu_seconds_until_synced": round(sampler.cpu_seconds, 2),
        "server_rss_mb_max": sampler.result()["rss_mb_max"],
        "failed_requests": failures,
    }
