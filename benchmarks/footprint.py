"""3. Footprint: the control plane's CPU and RSS with N idle agents connected as they are by default (each
on its watch stream, with the control plane's keep-alives, and the heartbeat of `AgentConfig`); and one real
`rrm agent` process (self-hosted target, scratch dir) idle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BENCH_LABELS, REPO, ProcessSampler, ServerProcess, component, wait_until
from benchmarks.fleets import Bench, desired_hash, sync_deadline
from benchmarks.profile import profiled

COMPONENT = "bench-idle"
ONE_AGENT_DEADLINE = 60.0


def run(bench: Bench, size: int, duration: float, with_one_agent: bool) -> dict[str, Any]:
    template = bench.fleet(size)
    label = f"footprint-{size}"
    server = bench.server(template, label)
    server.start()
    solo: subprocess.Popen[bytes] | None = None
    one_agent: dict[str, Any] | None = None
    try:
        server.apply(component(COMPONENT, 0))
        current = desired_hash(server, template.names[0])
        if with_one_agent:
            solo = _start_one_agent(server, bench.workdir / label / "one-agent")
        bench.start_agents(template, [server.url], label)
        bench.wait_reported(current, size, sync_deadline(size), f"{size} agents synced")
        if solo is not None:
            written = bench.workdir / label / "one-agent" / "resources" / f"rrm-{COMPONENT}.yaml"
            wait_until(written.exists, ONE_AGENT_DEADLINE, "the one agent's first apply")
        time.sleep(min(5.0, 1.0 + size / 2000))  # the last status reports of the start settle
        bench.failures(reset=True)
        bench.log(f"footprint {size}: sampling for {duration:.0f} s")
        samplers = [ProcessSampler(server.pid, children=True)] + [
            ProcessSampler(pid) for pid in bench.pool.pids
        ]
        if solo is not None:
            samplers.append(ProcessSampler(solo.pid))
        for sampler in samplers:
            sampler.__enter__()
        with profiled(bench.pids(server), bench.profile_dir, label):
            time.sleep(duration)
        for sampler in samplers:
            sampler.__exit__()
        if solo is not None:
            one_agent = samplers[-1].result()
            one_agent["running"] = solo.poll() is None
        failures = bench.failures()
        still_synced = bench.progress(current)["reported"]
    finally:
        if solo is not None:
            _stop(solo)
        bench.stop_agents()
        server.stop()
    workers = [s.result() for s in samplers[1 : 1 + bench.pool.size]]
    return {
        "size": size,
        "server": samplers[0].result(),
        "load_generator_cpu_cores": round(sum(w["cpu_cores"] for w in workers), 3),
        "load_generator_rss_mb": round(sum(w["rss_mb_max"] for w in workers), 1),
        "failed_requests": failures,
        "agents_synced": still_synced,
        "one_agent": one_agent,
    }


def _start_one_agent(server: ServerProcess, directory: Path) -> subprocess.Popen[bytes]:
    """A real `rrm agent` process, paired with its own token, writing into a scratch resources dir."""
    assert server.admin is not None
    body = {"name": "one-agent", "kind": "selfhosted", "labels": BENCH_LABELS}
    response = server.admin.post("/api/v1/runtimes", json=body)
    response.raise_for_status()
    resources = directory / "resources"
    resources.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RRM_", "DAPR_"))}
    env["RRM_PAIRING_TOKEN"] = response.json()["pairing_token"]
    with (directory / "agent.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rrm",
                "agent",
                "--director",
                server.url,
                "--state-dir",
                str(directory / "state"),
                "--target",
                "selfhosted",
                "--resources-path",
                str(resources),
                "--log-level",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(20)
