"""5. Reconnect storm: restart the control plane under N connected agents. The clock starts at SIGTERM; the
new process starts on the same data dir and port, and as soon as it answers, one component placed on every
runtime is updated. Done when every agent has applied that update and reported it to the new process.
Besides the wall time, the new process's CPU-seconds from when it answers until then, and the load
generator's (its agents share the machine: a saturated generator makes the storm look slower than the
control plane is); the apply times' distribution and a timeline of the agents' progress say where the time
went."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from benchmarks.common import ProcessSampler, component, percentiles, rounded
from benchmarks.fleets import Bench, desired_hash, sync_deadline
from benchmarks.profile import profiled

COMPONENT = "bench-storm"
DEADLINE = 300.0
TIMELINE_SECONDS = 5.0  # one sample of the agents' progress this often


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
        generator = [ProcessSampler(pid) for pid in bench.pool.pids]
        timeline: list[tuple[float, int, int]] = []
        with contextlib.ExitStack() as sampling:
            for each in (sampler, *generator):
                sampling.enter_context(each)
            sampling.enter_context(profiled(bench.pids(server), bench.profile_dir, label))
            server.apply(component(COMPONENT, 1))
            updated = time.monotonic()
            current = desired_hash(server, template.names[0])
            deadline = updated + DEADLINE
            lag: list[float] = []  # a progress call waits for every generator worker's event loop to run it
            while True:
                asked = time.monotonic()
                progress = bench.progress(current)
                now = time.monotonic()
                lag.append(now - asked)
                if not timeline or now - restarted >= timeline[-1][0] + TIMELINE_SECONDS:
                    timeline.append((round(now - restarted, 1), progress["applied"], progress["reported"]))
                if progress["reported"] >= size or now > deadline:
                    break
                time.sleep(0.25)
        done = time.monotonic()
        failures = bench.failures()
        applied = [t - updated for t in bench.applied_times(current) if t is not None]
        reports = [stages[2:] for stages in bench.stages(current)]  # (applied, report began, answered)
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
        "load_generator_cpu_seconds_until_synced": [round(g.cpu_seconds, 2) for g in generator],
        # its agents' timers (the 10 s for a stream's first frame) count this lag as the director's silence
        "load_generator_progress_call_seconds": {
            "p50": round(percentiles(lag)["p50"] or 0, 2),
            "max": round(max(lag), 2),
        },
        "applied_seconds_after_update": rounded(percentiles(applied)),
        # from an agent's apply until its report was sent, and until the control plane answered it
        "report_began_seconds_after_apply": rounded(percentiles([began - a for a, began, _ in reports])),
        "report_answered_seconds_after_begun": rounded(percentiles([done - b for _, b, done in reports])),
        "timeline_seconds_applied_reported": timeline,
        "failed_requests": failures,
    }
