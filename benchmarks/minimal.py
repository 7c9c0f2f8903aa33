"""Propagation with minimal-protocol clients (`benchmarks.minimal_clients`): the control plane measured apart
from its agents, against the same number of etcd watchers on the same client stack, in the same run.

Three modes, each on its own fresh server copy of the fleet (or its own etcd): `watch`, the clients only
receive; `status`, each also reports every state it receives, as an agent does; `etcd`. Latency runs from
just before the write request is sent (the admin API's apply, etcd's put) to when a client has parsed the
new state, both `time.monotonic()`. CPU is counted per round from the write until every client has the
update (and every report is answered) plus the pause after it, so work the update set off is counted too.

    .venv/bin/python -m benchmarks.minimal --sizes 1000,10000 --rounds 3 --out /tmp/minimal.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.common import (
    PAUSE_BEFORE_UPDATE,
    ProcessSampler,
    component,
    percentiles,
    raise_open_files,
    ratios,
    wait_until,
)
from benchmarks.etcd import EtcdProcess, b64, etcd_binary
from benchmarks.fleets import Bench, desired_hash, sync_deadline
from benchmarks.minimal_clients import TRANSPORTS, MinimalWorker
from benchmarks.profile import profiled
from benchmarks.workers import WorkerPool

K = TypeVar("K")
MODES = ("watch", "status", "etcd")
COMPONENT = "bench-minimal"
ETCD_KEY = "/rrm-bench/minimal"
OPEN_PER_SECOND = 500  # clients (or watches) opened per second at the start: 20 s for 10,000
CLOCK = "time.monotonic, from just before the write request is sent to the state parsed by the client"


@dataclass
class Round:
    latencies: list[float]
    lost: int  # clients without the update at the deadline
    unreported: int  # clients whose status report was not answered by then (status mode)
    write_seconds: float
    seconds: float  # from the write until every client had it (or the deadline)
    server_cpu: float
    generator_cpu: float
    server_rss_mb: float


def run(
    bench: Bench,
    n: int,
    rounds: int,
    *,
    transport: str = "watch",
    modes: Sequence[str] = MODES,
    server_workers: int = 1,
    processes: int | None = None,
) -> dict[str, Any]:
    """Every mode in `modes` with `n` clients and `rounds` updates: per mode (`rrm_watch`, `rrm_status`,
    `etcd`) its status, latency percentiles (s), lost updates, and CPU-seconds per update of the server (all
    its processes) and of the load generator (all its processes); `ratio` is rrm over etcd."""
    if transport not in TRANSPORTS or set(modes) - set(MODES):
        raise ValueError(f"transport one of {TRANSPORTS}, modes among {MODES}")
    pool = WorkerPool(processes or bench.pool.size, bench.workdir / "minimal-workers", MinimalWorker)
    result: dict[str, Any] = {
        "size": n,
        "rounds": rounds,
        "transport": transport,
        "server_workers": server_workers,
        "load_generator_processes": pool.size,
        "clock": CLOCK,
    }
    payload: str | None = None
    try:
        for mode in modes:
            key = "etcd" if mode == "etcd" else f"rrm_{mode}"
            try:
                if mode == "etcd":
                    default = json.dumps(component(COMPONENT, 0), separators=(",", ":"))
                    result[key] = run_etcd(bench, pool, n, rounds, payload or default)
                else:
                    result[key], payload = run_rrm(
                        bench, pool, n, rounds, transport, mode == "status", server_workers
                    )
            except Exception as exc:  # the other modes are still worth measuring
                bench.log(f"minimal {n} {mode}: failed: {type(exc).__name__}: {exc}")
                result[key] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        pool.close()
    result.update(compare(result, n))
    return result


def compare(result: dict[str, Any], n: int) -> dict[str, Any]:
    """rrm over etcd per percentile, and the control plane's CPU per status report: what the status mode
    costs per update beyond the watch mode, per client."""
    ok = {k for k in ("rrm_watch", "rrm_status", "etcd") if result.get(k, {}).get("status") == "ok"}
    ratio = {
        k: ratios(result[k]["latency"], result["etcd"]["latency"])
        for k in ("rrm_watch", "rrm_status")
        if {k, "etcd"} <= ok
    }
    per_report = None
    if {"rrm_watch", "rrm_status"} <= ok:
        extra = result["rrm_status"]["server_cpu_seconds_per_update"]
        extra -= result["rrm_watch"]["server_cpu_seconds_per_update"]
        per_report = round(extra / n, 7)
    return {"ratio": ratio, "server_cpu_seconds_per_status_report": per_report}


def run_rrm(
    bench: Bench, pool: WorkerPool, n: int, rounds: int, transport: str, report: bool, server_workers: int
) -> tuple[dict[str, Any], str | None]:
    """One mode on the control plane; also returns the desired-state body the clients received."""
    template = bench.fleet(n)
    label = f"minimal-{'status' if report else 'watch'}-{n}"
    server = bench.server(template, label)
    # its own process count, not the fleet benchmarks' (`--server-workers`), which `bench.server` applies
    server.options = ["--workers", str(server_workers)] if server_workers > 1 else []
    server.start()
    try:
        server.apply(component(COMPONENT, 0))
        current = desired_hash(server, template.names[0])
        started = time.monotonic()
        bench.log(f"{label}: opening {n} {transport} clients")
        dirs = [str(d) for d in template.state_dirs]
        pool.call(
            "minimal_start",
            [
                {"url": server.url, "state_dirs": chunk, "transport": transport, "report": report}
                | {"ramp_seconds": n / OPEN_PER_SECOND}
                for chunk in _split(dirs, pool.size)
            ],
        )

        def done(state_hash: str) -> bool:
            progress = _total(pool, "minimal_progress", hash=state_hash)
            return progress["received"] >= n and (not report or progress["reported"] >= n)

        wait_until(lambda: done(current), sync_deadline(n), f"{n} clients with the first state", 0.25)
        setup = time.monotonic() - started
        bench.log(f"{label}: all have the first state after {setup:.1f} s; {rounds} updates")

        def write(marker: int) -> str:
            server.apply(component(COMPONENT, marker))
            return desired_hash(server, template.names[0])

        def times(state_hash: str) -> list[float | None]:
            return [t for reply in pool.broadcast("minimal_times", hash=state_hash) for t in reply]

        def unreported(state_hash: str) -> int:
            return n - _total(pool, "minimal_progress", hash=state_hash)["reported"] if report else 0

        process = (server.pid, server_workers > 1)
        with profiled({"server": server.pid}, bench.profile_dir, label):
            measured = _rounds(bench, label, pool, process, n, rounds, write, done, times, unreported)
        payload = next((p for p in pool.broadcast("minimal_payload") if p), None)
        errors = _total(pool, "minimal_errors")
    finally:
        pool.broadcast("minimal_stop")
        server.stop()
    return _summary(measured, n, rounds, setup, errors), payload


def run_etcd(bench: Bench, pool: WorkerPool, n: int, rounds: int, payload: str) -> dict[str, Any]:
    """The same rounds on etcd: `n` watchers of one key, each round a put of `payload` to it."""
    if etcd_binary() is None:
        return {"status": "unavailable", "reason": "etcd is not installed (apt-get install etcd-server)"}
    etcd = EtcdProcess(bench.workdir / f"minimal-etcd-{n}")
    etcd.start()
    try:
        etcd.put(ETCD_KEY, payload)
        started = time.monotonic()
        bench.log(f"minimal-etcd-{n}: opening {n} watches")
        pool.call(
            "minimal_etcd_watch",
            [
                {"url": etcd.url, "key_b64": b64(ETCD_KEY), "count": len(chunk)}
                | {"ramp_seconds": n / OPEN_PER_SECOND}
                for chunk in _split(range(n), pool.size)
            ],
        )
        wait_until(
            lambda: _total(pool, "minimal_etcd_progress", revision=0)["created"] >= n,
            sync_deadline(n),
            f"{n} etcd watches",
            0.25,
        )
        setup = time.monotonic() - started

        def done(revision: int) -> bool:
            return _total(pool, "minimal_etcd_progress", revision=revision)["received"] >= n

        def times(revision: int) -> list[float | None]:
            return [t for reply in pool.broadcast("minimal_etcd_times", revision=revision) for t in reply]

        def write(_: int) -> int:
            return etcd.put(ETCD_KEY, payload)

        measured = _rounds(bench, f"minimal-etcd-{n}", pool, (etcd.pid, False), n, rounds, write, done, times)
        errors = _total(pool, "minimal_errors")
    finally:
        pool.broadcast("minimal_stop")
        etcd.stop()
    return _summary(measured, n, rounds, setup, errors)


def _rounds(
    bench: Bench,
    label: str,
    pool: WorkerPool,
    process: tuple[int, bool],
    n: int,
    rounds: int,
    write: Callable[[int], K],
    done: Callable[[K], bool],
    times: Callable[[K], list[float | None]],
    unreported: Callable[[K], int] = lambda _: 0,
) -> list[Round]:
    """`rounds` updates, one at a time; stops after a round that did not reach every client."""
    measured: list[Round] = []
    for marker in range(1, rounds + 1):
        time.sleep(PAUSE_BEFORE_UPDATE)
        one = _round(pool, process, n, functools.partial(write, marker), done, times, unreported)
        measured.append(one)
        p99 = percentiles(one.latencies)["p99"]
        bench.log(
            f"{label}: update {marker}: p99 {p99 if p99 is None else round(p99, 3)} s, lost {one.lost}, "
            f"server {one.server_cpu:.2f} CPU-s, load generator {one.generator_cpu:.2f} CPU-s"
        )
        if one.lost or one.unreported:
            break
    return measured


def _round(
    pool: WorkerPool,
    process: tuple[int, bool],
    n: int,
    write: Callable[[], K],
    done: Callable[[K], bool],
    times: Callable[[K], list[float | None]],
    unreported: Callable[[K], int],
) -> Round:
    pid, children = process
    deadline = 60 + n / 100
    with ProcessSampler(pid, children=children) as server, contextlib.ExitStack() as stack:
        generator = [stack.enter_context(ProcessSampler(p)) for p in pool.pids]
        sent = time.monotonic()
        key = write()
        written = time.monotonic() - sent
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: done(key), deadline, "every client", 0.05)
        seconds = time.monotonic() - sent
        time.sleep(PAUSE_BEFORE_UPDATE)
    arrivals = [t - sent for t in times(key) if t is not None]
    return Round(
        latencies=arrivals,
        lost=n - len(arrivals),
        unreported=unreported(key),
        write_seconds=written,
        seconds=seconds,
        server_cpu=server.cpu_seconds,
        generator_cpu=sum(g.cpu_seconds for g in generator),
        server_rss_mb=server.result()["rss_mb_max"],
    )


def _summary(
    measured: list[Round], n: int, rounds: int, setup: float, errors: dict[str, int]
) -> dict[str, Any]:
    """One mode's figures; "incomplete" unless every round reached (and was reported by) every client."""
    latencies = [t for one in measured for t in one.latencies]
    server_cpu = sum(one.server_cpu for one in measured) / max(1, len(measured))
    generator_cpu = sum(one.generator_cpu for one in measured) / max(1, len(measured))
    complete = len(measured) == rounds and not any(one.lost or one.unreported for one in measured)
    summary: dict[str, Any] = {"status": "ok" if complete else "incomplete"}
    if not complete:
        summary["reason"] = (
            f"{len(measured)} of {rounds} rounds measured; the last one did not reach every client"
        )
    return summary | {
        "latency": percentiles(latencies),
        "rounds": [
            {
                "latency": percentiles(one.latencies),
                "lost": one.lost,
                "unreported": one.unreported,
                "write_seconds": round(one.write_seconds, 4),
                "seconds": round(one.seconds, 3),
                "server_cpu_seconds": round(one.server_cpu, 3),
                "load_generator_cpu_seconds": round(one.generator_cpu, 3),
            }
            for one in measured
        ],
        "lost": sum(one.lost for one in measured),
        "unreported": sum(one.unreported for one in measured),
        "failures": errors,
        "server_cpu_seconds_per_update": round(server_cpu, 4),
        "server_cpu_seconds_per_update_per_1000": round(server_cpu / (n / 1000), 4),
        "load_generator_cpu_seconds_per_update": round(generator_cpu, 4),
        "load_generator_cpu_seconds_per_client_update": round(generator_cpu / n, 7),
        "server_rss_mb_max": max((one.server_rss_mb for one in measured), default=None),
        "setup_seconds": round(setup, 1),
    }


def _total(pool: WorkerPool, command: str, **kwargs: Any) -> dict[str, int]:
    """A command's counts, summed over the workers."""
    total: dict[str, int] = {}
    for reply in pool.broadcast(command, **kwargs):
        for key, value in reply.items():
            total[key] = total.get(key, 0) + value
    return total


def _split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    return [list(items[w::parts]) for w in range(parts)]


def main(argv: list[str] | None = None) -> int:
    """This benchmark alone, its results as JSON in `--out`."""
    parser = argparse.ArgumentParser(prog="benchmarks.minimal", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000", help="comma-separated numbers of runtimes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transport", choices=TRANSPORTS, default="watch")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--server-workers", type=int, default=1, help="rrm server --workers")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy profiles of the server here")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="rrm-bench-minimal-"))
    agents_root = Path(tempfile.mkdtemp(prefix="rrm-bench-minimal-agents-", dir="/dev/shm"))
    pool = WorkerPool(args.workers, workdir / "logs")
    bench = Bench(pool, workdir, agents_root, profile_dir=args.profile)
    results: dict[str, Any] = {
        "command": "python -m benchmarks.minimal " + shlex.join(sys.argv[1:] if argv is None else argv),
        "runs": [],
    }
    try:
        for n in (int(size) for size in args.sizes.split(",")):
            modes = args.modes.split(",")
            one = run(
                bench,
                n,
                args.rounds,
                transport=args.transport,
                modes=modes,
                server_workers=args.server_workers,
            )
            results["runs"].append(one)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        pool.close()
        shutil.rmtree(agents_root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
