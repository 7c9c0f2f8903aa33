"""Runs the benchmarks and writes benchmarks/results/<YYYY-MM-DD>-<short commit>.json and .md (the results
file, small enough to commit: `make bench-report` publishes from it) and latest.json and latest.md.

    .venv/bin/python -m benchmarks.run [--sizes 100,1000,10000]
        [--only propagation,replicas,footprint,throughput,storm,ready] [--replica-sizes 100,1000]
        [--footprint-sizes 1000,10000] [--duration 60] [--throughput-runtimes 1000] [--storm-size 10000]
        [--ready-size 20] [--provisioning-size 1000] [--provisioning-tenants 200] [--local-size 20] ...
    .venv/bin/python -m benchmarks.run --smoke      # every benchmark at N = 20, short windows

Every size is also settable by environment (RRM_BENCH_SIZES, RRM_BENCH_ONLY, ...; see --help).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    agent_cpu,
    footprint,
    minimal,
    propagation,
    provisioning,
    ready,
    replicas,
    report,
    status_path,
    storm,
    throughput,
)
from benchmarks.common import REPO, raise_open_files
from benchmarks.fleets import DEFAULT_HEARTBEAT_SECONDS, DEFAULT_WAIT_SECONDS, Bench
from benchmarks.workers import WorkerPool

BENCHMARKS = report.BENCHMARKS
# a benchmark's `run`, and the arguments and options it takes after the Bench
Runner = tuple[Callable[..., dict[str, Any]], tuple[Any, ...], dict[str, Any]]
SMOKE_SIZE = 20


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def parse(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=env("RRM_BENCH_ONLY", ",".join(BENCHMARKS)), help="comma-separated")
    parser.add_argument("--sizes", default=env("RRM_BENCH_SIZES", "100,1000,10000"), help="propagation sizes")
    parser.add_argument(
        "--replica-sizes",
        default=env("RRM_BENCH_REPLICA_SIZES", "100,1000"),
        help="two-replica propagation sizes (PostgreSQL at $RRM_TEST_DATABASE_URL)",
    )
    parser.add_argument("--footprint-sizes", default=env("RRM_BENCH_FOOTPRINT_SIZES", "1000,10000"))
    parser.add_argument(
        "--duration", type=float, default=float(env("RRM_BENCH_DURATION", "60")), help="footprint window, s"
    )
    parser.add_argument(
        "--rounds", type=int, default=int(env("RRM_BENCH_ROUNDS", "3")), help="updates per propagation size"
    )
    parser.add_argument(
        "--throughput-runtimes", type=int, default=int(env("RRM_BENCH_THROUGHPUT_RUNTIMES", "1000"))
    )
    parser.add_argument("--write-seconds", type=float, default=float(env("RRM_BENCH_WRITE_SECONDS", "10")))
    parser.add_argument(
        "--burst", type=int, default=int(env("RRM_BENCH_BURST", "100")), help="writes in the burst"
    )
    parser.add_argument(
        "--window", type=float, default=float(env("RRM_BENCH_WINDOW", "1.0")), help="debounce window, s"
    )
    parser.add_argument("--storm-size", type=int, default=int(env("RRM_BENCH_STORM_SIZE", "10000")))
    parser.add_argument(
        "--ready-size",
        type=int,
        default=int(env("RRM_BENCH_READY_SIZE", "20")),
        help="real agents, each beside a daprd stand-in, for write → Ready",
    )
    parser.add_argument(
        "--provisioning-size",
        type=int,
        default=int(env("RRM_BENCH_PROVISIONING_SIZE", "1000")),
        help="gardener-aws environments requested at once",
    )
    parser.add_argument(
        "--provisioning-tenants", type=int, default=int(env("RRM_BENCH_PROVISIONING_TENANTS", "200"))
    )
    parser.add_argument(
        "--local-size",
        type=int,
        default=int(env("RRM_BENCH_LOCAL_SIZE", "20")),
        help="local environments requested at once",
    )
    parser.add_argument(
        "--workers", type=int, default=int(env("RRM_BENCH_WORKERS", str(max(2, os.cpu_count() or 2))))
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=int(env("RRM_BENCH_SERVER_WORKERS", "1")),
        help="rrm server --workers N for propagation, footprint, throughput and the storm (open files: about "
        "2 per agent per process)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(env("RRM_BENCH_OUT", str(REPO / "benchmarks" / "results")))
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dirs (server logs, data) for inspection"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="record py-spy profiles of each phase here"
    )
    parser.add_argument(
        "--smoke", action="store_true", help=f"every benchmark at N = {SMOKE_SIZE}, short windows"
    )
    _control_plane_options(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes = args.replica_sizes = args.footprint_sizes = str(SMOKE_SIZE)
        args.throughput_runtimes = args.storm_size = args.ready_size = SMOKE_SIZE
        args.duration, args.rounds, args.write_seconds, args.burst = 3.0, 1, 2.0, 10
        args.provisioning_size, args.provisioning_tenants, args.local_size = 10, 5, 2
        args.minimal_sizes = args.status_sizes = str(SMOKE_SIZE)
        args.status_rate, args.status_seconds = 100.0, 3.0
        args.agent_cpu_updates, args.agent_cpu_idle = 5, 3.0
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}")
    return args


def _control_plane_options(parser: argparse.ArgumentParser) -> None:
    """The benchmarks that measure the control plane apart from its load generator."""
    env = os.environ.get
    parser.add_argument(
        "--minimal-sizes",
        default=env("RRM_BENCH_MINIMAL_SIZES", "1000,10000"),
        help="minimal-protocol clients against as many etcd watchers, same run",
    )
    parser.add_argument(
        "--minimal-transport",
        default=env("RRM_BENCH_MINIMAL_TRANSPORT", "watch"),
        choices=("watch", "longpoll"),
        help="how the minimal clients take desired states",
    )
    parser.add_argument(
        "--minimal-server-workers", type=int, default=int(env("RRM_BENCH_MINIMAL_SERVER_WORKERS", "1"))
    )
    parser.add_argument(
        "--status-sizes",
        default=env("RRM_BENCH_STATUS_SIZES", "1000,10000"),
        help="runtimes sending status reports (control-plane CPU per report)",
    )
    parser.add_argument("--status-rate", type=float, default=float(env("RRM_BENCH_STATUS_RATE", "300")))
    parser.add_argument("--status-seconds", type=float, default=float(env("RRM_BENCH_STATUS_SECONDS", "20")))
    parser.add_argument(
        "--agent-cpu-updates",
        type=int,
        default=int(env("RRM_BENCH_AGENT_CPU_UPDATES", "200")),
        help="updates through one real `rrm agent`, per delivery mode (its own CPU per update)",
    )
    parser.add_argument(
        "--agent-cpu-idle", type=float, default=float(env("RRM_BENCH_AGENT_CPU_IDLE", "60")), help="s"
    )


def asked(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """What this run was asked to measure: per benchmark its sizes and, where it has them, its updates."""
    sizes = {
        "propagation": _sizes(args.sizes),
        "minimal": _sizes(args.minimal_sizes),
        "status_path": _sizes(args.status_sizes),
        "agent_cpu": [args.agent_cpu_updates],
        "replicas": _sizes(args.replica_sizes),
        "footprint": _sizes(args.footprint_sizes),
        "throughput": [args.throughput_runtimes],
        "storm": [args.storm_size],
        "ready": [args.ready_size],
        "provisioning": [args.provisioning_size],
    }
    return {
        name: {"sizes": sizes[name], "rounds": args.rounds if name in report.WITH_ROUNDS else None}
        for name in BENCHMARKS
        if name in args.only
    }


def tree_state() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it when the run started."""

    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()

    describe = git("describe", "--always", "--dirty")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "describe": describe,
        "dirty": describe.endswith("-dirty"),
    }


def results_stem(out: Path, results: dict[str, Any]) -> str:
    """`<YYYY-MM-DD>-<short commit>` (`-smoke` after it for a smoke run), with the start time appended when
    that name is another run's."""
    stem = f"{results['machine']['date'][:10]}-{results['tree']['commit']}" + (
        "-smoke" if results["smoke"] else ""
    )
    existing = out / f"{stem}.json"
    if existing.exists() and json.loads(existing.read_text())["machine"] != results["machine"]:
        stem += "-" + results["machine"]["date"][11:19].replace(":", "")
    return stem


def _attempt(bench: Bench, name: str, runner: Runner) -> dict[str, Any]:
    """Run one benchmark at one size; a failure is recorded (and the run goes on with the next one)."""
    benchmark, args, options = runner
    try:
        return benchmark(bench, *args, **options)
    except Exception as exc:
        bench.log(f"{name} {args[0]} failed: {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            bench.stop_agents()
        return {"size": args[0], "error": f"{type(exc).__name__}: {exc}"}


class Recorder:
    """Writes what is measured so far after every benchmark (an interrupted run still leaves its results,
    marked incomplete): latest.json and latest.md, and the results file <date>-<commit>.json and .md."""

    def __init__(self, results: dict[str, Any], bench: Bench, out: Path) -> None:
        self.results, self.bench, self.out = results, bench, out
        self.started = time.monotonic()
        out.mkdir(parents=True, exist_ok=True)
        self.stem = results_stem(out, results)

    def write(self) -> str:
        results = self.results
        results["fleet_setup"] = {str(n): t.setup for n, t in self.bench.templates.items()}
        results["seconds"] = round(time.monotonic() - self.started, 1)
        results["incomplete"] = report.incomplete(results)
        results["complete"] = not results["incomplete"]
        results["targets"] = report.targets(results)
        text = report.markdown(results)
        small = report.compact(results)
        for stem, content in (("latest", results), (self.stem, small)):
            (self.out / f"{stem}.json").write_text(json.dumps(content, indent=2) + "\n")
            (self.out / f"{stem}.md").write_text(text)
        return text

    @property
    def paths(self) -> str:
        return f"{self.out / self.stem}.json and .md (also latest.json and latest.md)"


def _run_all(args: argparse.Namespace, bench: Bench, recorder: Recorder) -> None:
    results = recorder.results
    for name in BENCHMARKS:
        if name not in args.only:
            continue
        for size in results["asked"][name]["sizes"]:
            entry = _attempt(bench, name, _runners(args, size, results)[name])
            if name in report.SINGLE_RUNS:
                results[name] = entry
            else:
                results.setdefault(name, []).append(entry)
            recorder.write()


def _runners(args: argparse.Namespace, size: int, results: dict[str, Any]) -> dict[str, Runner]:
    """Per benchmark: its `run` function, and the arguments and options it takes after `bench`."""
    one_replica = {r["size"]: r["rrm"] for r in results.get("propagation", []) if "rrm" in r}
    minimal_options = {"transport": args.minimal_transport, "server_workers": args.minimal_server_workers}
    return {
        "propagation": (propagation.run, (size, args.rounds), {}),
        "minimal": (minimal.run, (size, args.rounds), minimal_options),
        "status_path": (status_path.run, (size, args.status_rate, args.status_seconds), {}),
        "agent_cpu": (agent_cpu.run, (size, args.agent_cpu_idle), {}),
        "replicas": (replicas.run, (size, args.rounds, one_replica.get(size)), {}),
        "footprint": (footprint.run, (size, args.duration, not results.get("footprint")), {}),
        "throughput": (throughput.run, (size, args.write_seconds, args.burst, args.window), {}),
        "storm": (storm.run, (size,), {}),
        "ready": (ready.run, (size, args.rounds), {}),
        "provisioning": (provisioning.run, (size, args.provisioning_tenants, args.local_size), {}),
    }


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = parse(arguments)
    limit = raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="rrm-bench-"))
    shm = Path("/dev/shm")
    agents_root = Path(tempfile.mkdtemp(prefix="rrm-bench-agents-", dir=shm if shm.is_dir() else None))
    results: dict[str, Any] = {
        "machine": report.machine(),
        "tree": tree_state(),
        "command": "python -m benchmarks.run " + shlex.join(arguments),
        "smoke": SMOKE_SIZE if args.smoke else None,
        "asked": asked(args),
        "open_files_limit": limit,
        "workers": args.workers,
        "server_workers": args.server_workers,
        "agent_intervals": {
            "wait_seconds": DEFAULT_WAIT_SECONDS,
            "heartbeat_seconds": DEFAULT_HEARTBEAT_SECONDS,
        },
        "environment": {
            k: v for k, v in os.environ.items() if k.startswith("RRM_BENCH_") or k == "PYTHONPATH"
        },
    }
    pool = WorkerPool(args.workers, workdir / "logs")
    bench = Bench(pool, workdir, agents_root, profile_dir=args.profile, server_workers=args.server_workers)
    recorder = Recorder(results, bench, args.out)
    bench.log(f"work dir {workdir}, agent state in {agents_root}, {args.workers} worker processes")
    try:
        _run_all(args, bench, recorder)
    finally:
        pool.close()
        shutil.rmtree(agents_root, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        text = recorder.write()
    print()
    print(text)
    print(f"results in {recorder.paths} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
