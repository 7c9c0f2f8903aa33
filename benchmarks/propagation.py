"""1 + 2. Propagation: admin API response → every agent has applied the update; then the same fan-out from
etcd (put response → every watcher has the value) in the same run, on the same machine, same workers."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from benchmarks.common import (
    PAUSE_BEFORE_UPDATE,
    ProcessSampler,
    ServerProcess,
    component,
    percentiles,
    ratios,
    rounded,
    wait_until,
)
from benchmarks.etcd import EtcdProcess, b64, etcd_binary
from benchmarks.fleets import Bench, desired_hash, sync_deadline
from benchmarks.profile import profiled

COMPONENT = "bench-propagation"
# where an update's time goes, per agent: each stage ends where the next begins (request → state received
# → taken to apply → applied → its report sent → the report answered)
STAGES = (
    "received_after_request",
    "taken_after_received",
    "applied_after_taken",
    "report_after_applied",
    "report_answered_after_sent",
)
ETCD_KEY = "/rrm-bench/desired-state"


def run(bench: Bench, size: int, rounds: int) -> dict[str, Any]:
    try:
        rrm = run_rrm(bench, size, rounds)
    except Exception as exc:  # the baseline is still worth measuring
        bench.log(f"propagation {size}: rrm failed: {type(exc).__name__}: {exc}")
        bench.stop_agents()
        rrm = {"error": f"{type(exc).__name__}: {exc}"}
    payload = rrm.pop("payload", None) or json.dumps(component(COMPONENT, 0), separators=(",", ":"))
    etcd = run_etcd(bench, size, rounds, payload)
    result: dict[str, Any] = {"size": size, "rounds": rounds, "rrm": rrm, "etcd": etcd}
    if etcd.get("status") == "ok" and "error" not in rrm:
        result["ratio"] = ratios(rrm["latency"], etcd["latency"])
        result["ratio_from_request"] = ratios(rrm["latency_from_request"], etcd["latency_from_request"])
    return result


def run_rrm(bench: Bench, size: int, rounds: int) -> dict[str, Any]:
    template = bench.fleet(size)
    label = f"propagation-{size}"
    server = bench.server(template, label)
    server.start()
    latencies: list[float] = []
    from_request: list[float] = []
    before_response = lost = 0
    incomplete = ""
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    try:
        server.apply(component(COMPONENT, 0))
        current = desired_hash(server, template.names[0])
        bench.log(f"propagation {size}: starting {size} agents")
        started = time.monotonic()
        bench.start_agents(template, [server.url], label)
        bench.wait_reported(current, size, sync_deadline(size), f"{size} agents synced")
        initial_sync = time.monotonic() - started
        bench.log(f"propagation {size}: all synced after {initial_sync:.1f} s; {rounds} updates")
        open_files = bench.open_files_now(server)
        reached = _and_why(bench, server, size)
        if reached:  # every connection from here on may be dropped unanswered, the admin API's too
            raise RuntimeError(f"with {size:,} agents synced{reached}")
        generator = [ProcessSampler(pid) for pid in bench.pool.pids]
        for worker in generator:
            worker.__enter__()
        with (
            ProcessSampler(server.pid, children=True) as sampler,
            profiled(bench.pids(server), bench.profile_dir, label),
        ):
            for marker in range(1, rounds + 1):
                time.sleep(PAUSE_BEFORE_UPDATE)
                sent = time.monotonic()
                server.apply(component(COMPONENT, marker))
                answered = time.monotonic()
                current = desired_hash(server, template.names[0])
                bench.wait_applied(current, size, 60 + size / 100)
                times = [t for t in bench.applied_times(current) if t is not None]
                lost += size - len(times)
                before_response += sum(1 for t in times if t < answered)
                latencies += [max(0.0, t - answered) for t in times]
                from_request += [t - sent for t in times]
                bench.log(
                    f"propagation {size}: update {marker}: p99 {percentiles(latencies)['p99']:.3f} s, "
                    f"admin answer {answered - sent:.3f} s"
                )
                incomplete = bench.incomplete_after_update(current, size, f"propagation {size}", marker)
                if incomplete:
                    incomplete += _and_why(bench, server, size)
                    break
                this_update: dict[str, list[float]] = {stage: [] for stage in STAGES}
                for received, taken, applied, began, answered_report in bench.stages(current):
                    moments = (sent, received, taken, applied, began, answered_report)
                    for stage, (start, end) in zip(STAGES, itertools.pairwise(moments), strict=True):
                        this_update[stage].append(end - start)
                bench.log(
                    f"propagation {size}: update {marker}: p50/p99 of each stage: "
                    + ", ".join(f"{stage} {_p50_p99(values)}" for stage, values in this_update.items())
                )
                for stage, values in this_update.items():
                    stages[stage] += values
        for worker in generator:
            worker.__exit__()
        synced = server.synced_count()
        payload = next((p for p in bench.pool.broadcast("payload") if p), "")
        failures = bench.failures()
    except Exception as exc:
        why = _and_why(bench, server, size, str(exc))
        if why and "agents synced; " not in str(exc):
            raise RuntimeError(f"{type(exc).__name__}: {exc}{why}") from exc
        raise
    finally:
        bench.stop_agents()
        server.stop()
    return {
        "latency": percentiles(latencies),
        "latency_from_request": percentiles(from_request),
        "incomplete": incomplete,
        "applied_before_admin_answer": before_response,
        "lost": lost,
        "synced_by_control_plane": synced,
        "initial_sync_seconds": round(initial_sync, 1),
        "stage_seconds": {stage: rounded(percentiles(values), 4) for stage, values in stages.items()},
        "failed_requests": failures,
        "resent_applies": server.resent_applies,
        "open_files_after_sync": open_files,
        "server": sampler.result(),
        "load_generator_cpu_seconds_per_agent_update": round(
            sum(w.cpu_seconds for w in generator) / (size * rounds), 5
        ),
        "body_bytes": len(payload.encode()),
        "payload": payload,
        "setup": template.setup,
    }


def _p50_p99(values: list[float]) -> str:
    figures = percentiles(values)
    return f"{figures['p50'] or 0:.3f}/{figures['p99'] or 0:.3f} s"


def _and_why(bench: Bench, server: ServerProcess, size: int, said: str = "") -> str:
    """ "; " and the open-file limit the server or a load-generator worker is at, if it is at one, and the
    limit `size` agents need (only that, when `said` names the limit already)."""
    found, needed = bench.open_file_limit_reached(server, size)
    if not found:
        return ""
    return f"; {needed}" if "open-file limit" in said else f"; {found}. {needed}"


def run_etcd(bench: Bench, size: int, rounds: int, payload: str) -> dict[str, Any]:
    if etcd_binary() is None:
        return {"status": "unavailable", "reason": "etcd is not installed (apt-get install etcd-server)"}
    etcd = EtcdProcess(bench.workdir / f"etcd-{size}")
    etcd.start()
    latencies: list[float] = []
    from_request: list[float] = []
    before_response = lost = 0
    try:
        etcd.put(ETCD_KEY, payload)
        bench.log(f"etcd {size}: opening {size} watches")
        bench.pool.call(
            "etcd_watch",
            [
                {"url": etcd.url, "key_b64": b64(ETCD_KEY), "count": len(chunk)}
                for chunk in bench.split(range(size))
            ],
        )
        wait_until(
            lambda: _etcd_progress(bench, 0)["created"] >= size, sync_deadline(size), f"{size} etcd watches"
        )
        with ProcessSampler(etcd.pid) as sampler:
            for _ in range(rounds):
                sent = time.monotonic()
                revision = etcd.put(ETCD_KEY, payload)
                answered = time.monotonic()
                deadline = answered + 60 + size / 100
                while _etcd_progress(bench, revision)["received"] < size and time.monotonic() < deadline:
                    time.sleep(0.05)
                times = [t for reply in bench.pool.broadcast("etcd_times", revision=revision) for t in reply]
                got = [t for t in times if t is not None]
                lost += size - len(got)
                before_response += sum(1 for t in got if t < answered)
                latencies += [max(0.0, t - answered) for t in got]
                from_request += [t - sent for t in got]
                time.sleep(1.0)
        failed = _etcd_progress(bench, 0)["failed"]
    finally:
        bench.pool.broadcast("etcd_stop")
        etcd.stop()
    bench.log(f"etcd {size}: p99 {percentiles(latencies)['p99']:.3f} s")
    return {
        "status": "ok",
        "latency": percentiles(latencies),
        "latency_from_request": percentiles(from_request),
        "received_before_put_answer": before_response,
        "lost": lost,
        "failed_watches": failed,
        "etcd": sampler.result(),
    }


def _etcd_progress(bench: Bench, revision: int) -> dict[str, int]:
    total: dict[str, int] = {}
    for reply in bench.pool.broadcast("etcd_progress", revision=revision):
        for key, value in reply.items():
            total[key] = total.get(key, 0) + value
    return total
