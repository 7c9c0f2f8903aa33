"""6. Two replicas: two `rrm server` processes on one fresh PostgreSQL database; half the agents long-poll
replica A, half replica B; every update is written through replica A's admin API. Per agent: the time from
A's answer (and from the request sent) to applied, for the agents on A and on B apart, and B / A per
percentile: a change committed through A must wake the long-polls held on B (LISTEN/NOTIFY, then B's
catch-up with the change feed) within the latency of those held on A."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import postgres
from benchmarks.common import (
    PAUSE_BEFORE_UPDATE,
    ProcessSampler,
    ServerProcess,
    component,
    percentiles,
    ratios,
    wait_until,
)
from benchmarks.fleets import Bench, FleetTemplate, desired_hash, sync_deadline
from benchmarks.profile import profiled
from rrm.store.repositories import CHANGES_CHANNEL

COMPONENT = "bench-replicas"
REPLICAS = ("a", "b")
# What the second replica needs from the first: on Kubernetes both get them from one Secret.
SHARED_FILES = ("admin-token", "secret-key")


def run(bench: Bench, size: int, rounds: int, one_replica: dict[str, Any] | None = None) -> dict[str, Any]:
    """`one_replica`: the propagation benchmark's rrm result at the same size in this run (SQLite), if any."""
    reason = postgres.unreachable()
    if reason is not None:
        bench.log(f"replicas {size}: {reason}")
        return {"size": size, "status": "unavailable", "reason": reason}
    with postgres.fresh_database() as url:
        measured = _measure(bench, size, rounds, url)
    result: dict[str, Any] = {"size": size, "rounds": rounds, "status": "ok", "postgres": postgres.describe()}
    result |= measured
    if one_replica and "error" not in one_replica:
        result["one_replica_sqlite"] = {
            "latency": one_replica["latency"],
            "latency_from_request": one_replica["latency_from_request"],
        }
        result["ratio_to_one_replica"] = ratios(measured["all"]["latency"], one_replica["latency"])
    return result


def _measure(bench: Bench, size: int, rounds: int, database_url: str) -> dict[str, Any]:
    label = f"replicas-{size}"
    root = bench.workdir / label
    if root.exists():
        shutil.rmtree(root)
    template = bench.fleet_in(database_url, size, label)
    servers = _replicas(template, root)
    a, b = servers["a"], servers["b"]
    side_of = {a.url: "a", b.url: "b"}
    latencies: dict[str, list[float]] = {side: [] for side in REPLICAS}
    from_request: dict[str, list[float]] = {side: [] for side in REPLICAS}
    early = dict.fromkeys(REPLICAS, 0)
    lost = dict.fromkeys(REPLICAS, 0)
    answers: list[float] = []
    updates: list[dict[str, Any]] = []
    incomplete = ""
    with ExitStack() as stack:
        stack.callback(_stop, servers.values())
        for server in servers.values():
            server.launch()
        for server in servers.values():
            server.wait_ready()
        a.apply(component(COMPONENT, 0))
        current = desired_hash(a, template.names[0])
        wait_until(lambda: desired_hash(b, template.names[0]) == current, 30, "replica B to see A's write")
        stack.callback(bench.stop_agents)
        bench.log(f"replicas {size}: starting {size} agents, half on replica A first, half on B first")
        started = time.monotonic()
        bench.start_agents(template, [a.url, b.url], label, spread_urls=True)
        bench.wait_reported(current, size, sync_deadline(size), f"{size} agents synced")
        initial_sync = time.monotonic() - started
        agents = _count_by_side(bench, current, side_of)
        bench.log(
            f"replicas {size}: all synced after {initial_sync:.1f} s ({agents['a']} agents on A, "
            f"{agents['b']} on B, leader {_leader(servers)}); {rounds} updates through A"
        )
        pids = {f"replica-{s}": server.pid for s, server in servers.items()}
        pids |= {f"worker-{i}": pid for i, pid in enumerate(bench.pool.pids)}
        catch_up_before = {side: _catch_up_totals(server) for side, server in servers.items()}
        probe = stack.enter_context(_CommitProbe(database_url))
        with _sampling(servers) as samplers, profiled(pids, bench.profile_dir, label):
            for marker in range(1, rounds + 1):
                time.sleep(PAUSE_BEFORE_UPDATE)
                sent = time.monotonic()
                a.apply(component(COMPONENT, marker))
                answered = time.monotonic()
                answers.append(answered - sent)
                current = desired_hash(a, template.names[0])
                bench.wait_applied(current, size, 60 + size / 100)
                this: dict[str, list[float]] = {side: [] for side in REPLICAS}
                for first, _active, applied in bench.applied_by_director(current):
                    side = side_of[first.rstrip("/")]
                    if applied is None:
                        lost[side] += 1
                        continue
                    early[side] += int(applied < answered)
                    this[side].append(applied - answered)
                    latencies[side].append(max(0.0, applied - answered))
                    from_request[side].append(applied - sent)
                updates.append(_update_summary(answered - sent, probe.first_after(sent), this))
                bench.log(
                    f"replicas {size}: update {marker}: commit notified {_s(updates[-1]['notified'])}, "
                    f"admin answer {answered - sent:.3f} s after the request; from the answer, first "
                    f"applied on A {_s(updates[-1]['a']['first'])} / on B {_s(updates[-1]['b']['first'])}, "
                    f"p99 on A {_s(updates[-1]['a']['p99'])} / on B {_s(updates[-1]['b']['p99'])}"
                )
                incomplete = bench.incomplete_after_update(current, size, f"replicas {size}", marker)
                if incomplete:
                    break
        switched = sum(
            1 for first, active, _ in bench.applied_by_director(current) if first.rstrip("/") != active
        )
        catch_up = {
            side: _catch_up_window(catch_up_before[side], _catch_up_totals(server))
            for side, server in servers.items()
        }
        synced = {side: server.synced_count() for side, server in servers.items()}
        leader = _leader(servers)
        failures = bench.failures()
    every = {
        "latency": percentiles(latencies["a"] + latencies["b"]),
        "latency_from_request": percentiles(from_request["a"] + from_request["b"]),
        "applied_before_admin_answer": early["a"] + early["b"],
        "lost": lost["a"] + lost["b"],
    }
    per_side: dict[str, dict[str, Any]] = {
        f"on_{side}": {
            "latency": percentiles(latencies[side]),
            "latency_from_request": percentiles(from_request[side]),
            "applied_before_admin_answer": early[side],
            "lost": lost[side],
        }
        for side in REPLICAS
    }
    return {
        "agents": agents,
        **per_side,
        "all": every,
        "ratio_b_to_a": ratios(per_side["on_b"]["latency"], per_side["on_a"]["latency"]),
        "ratio_b_to_a_from_request": ratios(
            per_side["on_b"]["latency_from_request"], per_side["on_a"]["latency_from_request"]
        ),
        "admin_answer": percentiles(answers),
        "updates": updates,
        "incomplete": incomplete,
        "switched_replica": switched,
        "synced_by_control_plane": synced,
        "leader": leader,
        "initial_sync_seconds": round(initial_sync, 1),
        "failed_requests": failures,
        "servers": {side: sampler.result() for side, sampler in samplers.items()},
        "feed_catch_up": catch_up,
        "setup": template.setup,
    }


def _replicas(template: FleetTemplate, root: Path) -> dict[str, ServerProcess]:
    """Replica A on the set-up server's data dir; B on its own, with A's admin token and encryption key."""
    b_dir = root / "replica-b"
    b_dir.mkdir(parents=True, exist_ok=True)
    for name in SHARED_FILES:
        shutil.copy2(template.data_dir / name, b_dir / name)
    return {
        "a": ServerProcess(template.data_dir, root / "replica-a.log", database_url=template.database_url),
        "b": ServerProcess(b_dir, root / "replica-b.log", database_url=template.database_url),
    }


def _stop(servers: Iterable[ServerProcess]) -> None:
    for server in servers:
        server.stop()


@contextmanager
def _sampling(servers: dict[str, ServerProcess]) -> Iterator[dict[str, ProcessSampler]]:
    with ExitStack() as stack:
        yield {side: stack.enter_context(ProcessSampler(server.pid)) for side, server in servers.items()}


def _count_by_side(bench: Bench, hash: str, side_of: dict[str, str]) -> dict[str, int]:
    counts = dict.fromkeys(REPLICAS, 0)
    for first, _, _ in bench.applied_by_director(hash):
        counts[side_of[first.rstrip("/")]] += 1
    return counts


def _leader(servers: dict[str, ServerProcess]) -> str:
    """Which replica runs the singleton work (housekeeping), by its `rrm_leader` gauge."""
    leading = []
    for side, server in servers.items():
        assert server.admin is not None
        if "rrm_leader 1.0" in server.admin.get("/metrics").text:
            leading.append(side)
    return ",".join(leading) or "none"


def _catch_up_totals(server: ServerProcess) -> tuple[float, float]:
    """(count, sum of seconds) of the replica's catch-ups with the change feed that applied something."""
    assert server.admin is not None
    totals = {"count": 0.0, "sum": 0.0}
    for line in server.admin.get("/metrics").text.splitlines():
        for key in totals:
            if line.startswith(f"rrm_feed_catch_up_seconds_{key} "):
                totals[key] = float(line.split()[1])
    return totals["count"], totals["sum"]


def _catch_up_window(before: tuple[float, float], after: tuple[float, float]) -> dict[str, float | None]:
    count, seconds = after[0] - before[0], after[1] - before[1]
    return {"count": int(count), "mean_seconds": round(seconds / count, 4) if count else None}


class _CommitProbe:
    """A LISTEN on the replicas' change channel, as each replica's listener has: when a commit's
    notification reached a listener (monotonic), to tell the write's commit from its answer."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._seen: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rrm-bench-commit-probe", daemon=True)
        self._listening = threading.Event()

    def __enter__(self) -> _CommitProbe:
        self._thread.start()
        self._listening.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with psycopg.connect(self._url, autocommit=True, application_name="rrm-bench-probe") as connection:
            connection.execute(f"LISTEN {CHANGES_CHANNEL}")
            self._listening.set()
            while not self._stop.is_set():
                for _ in connection.notifies(timeout=0.5, stop_after=1):
                    self._seen.append(time.monotonic())

    def first_after(self, since: float, timeout: float = 10.0) -> float | None:
        """Seconds from `since` to the first notification after it (None if none came)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = next((t for t in list(self._seen) if t >= since), None)
            if seen is not None or time.monotonic() > deadline or not self._thread.is_alive():
                return None if seen is None else seen - since
            time.sleep(0.05)


def _update_summary(
    answer: float, notified: float | None, since_answer: dict[str, list[float]]
) -> dict[str, Any]:
    """One update: seconds from the request to the commit's notification and to the admin answer; per
    replica, from the answer, when its first agent applied (negative: before the answer; B's first, against
    A's, bounds B's notification plus catch-up) and the p50 / p99."""
    summary: dict[str, Any] = {
        "notified": None if notified is None else round(notified, 4),
        "admin_answer": round(answer, 4),
    }
    for side, values in since_answer.items():
        got = percentiles(values)
        summary[side] = {
            "first": round(min(values), 4) if values else None,
            "p50": got["p50"] if got["p50"] is None else round(got["p50"], 4),
            "p99": got["p99"] if got["p99"] is None else round(got["p99"], 4),
        }
    return summary


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"
