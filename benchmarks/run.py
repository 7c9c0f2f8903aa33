"""Runs the benchmarks and writes benchmarks/results/latest.json and latest.md.

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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import footprint, propagation, provisioning, ready, replicas, report, storm, throughput
from benchmarks.common import REPO, raise_open_files
from benchmarks.fleets import DEFAULT_HEARTBEAT_SECONDS, DEFAULT_WAIT_SECONDS, Bench
from benchmarks.workers import WorkerPool

BENCHMARKS = ("propagation", "replicas", "footprint", "throughput", "storm", "ready", "provisioning")
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
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes = args.replica_sizes = args.footprint_sizes = str(SMOKE_SIZE)
        args.throughput_runtimes = args.storm_size = args.ready_size = SMOKE_SIZE
        args.duration, args.rounds, args.write_seconds, args.burst = 3.0, 1, 2.0, 10
        args.provisioning_size, args.provisioning_tenants, args.local_size = 10, 5, 2
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}")
    return args


def _attempt(bench: Bench, benchmark: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run one benchmark; a failure is recorded (and the run goes on with the next one)."""
    try:
        return benchmark(bench, *args)
    except Exception as exc:
        bench.log(f"{benchmark.__module__} {args[0]} failed: {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            bench.stop_agents()
        return {"size": args[0], "error": f"{type(exc).__name__}: {exc}"}


def _write(results: dict[str, Any], bench: Bench, out: Path, started: float) -> str:
    """Write what is measured so far (after every benchmark, so an interrupted run still leaves results)."""
    results["fleet_setup"] = {str(n): t.setup for n, t in bench.templates.items()}
    results["seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = report.targets(results)
    text = report.markdown(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    limit = raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="rrm-bench-"))
    shm = Path("/dev/shm")
    agents_root = Path(tempfile.mkdtemp(prefix="rrm-bench-agents-", dir=shm if shm.is_dir() else None))
    results: dict[str, Any] = {
        "machine": report.machine(),
        "command": "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv),
        "open_files_limit": limit,
        "workers": args.workers,
        "agent_intervals": {
            "wait_seconds": DEFAULT_WAIT_SECONDS,
            "heartbeat_seconds": DEFAULT_HEARTBEAT_SECONDS,
        },
        "environment": {
            k: v for k, v in os.environ.items() if k.startswith("RRM_BENCH_") or k == "PYTHONPATH"
        },
    }
    started = time.monotonic()
    pool = WorkerPool(args.workers, workdir / "logs")
    bench = Bench(pool, workdir, agents_root, profile_dir=args.profile)
    bench.log(f"work dir {workdir}, agent state in {agents_root}, {args.workers} worker processes")
    try:
        if "propagation" in args.only:
            results["propagation"] = []
            for n in _sizes(args.sizes):
                results["propagation"].append(_attempt(bench, propagation.run, n, args.rounds))
                _write(results, bench, args.out, started)
        if "replicas" in args.only:
            results["replicas"] = []
            one_replica = {r["size"]: r["rrm"] for r in results.get("propagation", []) if "rrm" in r}
            for n in _sizes(args.replica_sizes):
                results["replicas"].append(_attempt(bench, replicas.run, n, args.rounds, one_replica.get(n)))
                _write(results, bench, args.out, started)
        if "footprint" in args.only:
            results["footprint"] = []
            for i, n in enumerate(_sizes(args.footprint_sizes)):
                results["footprint"].append(_attempt(bench, footprint.run, n, args.duration, i == 0))
                _write(results, bench, args.out, started)
        if "throughput" in args.only:
            results["throughput"] = _attempt(
                bench, throughput.run, args.throughput_runtimes, args.write_seconds, args.burst, args.window
            )
            _write(results, bench, args.out, started)
        if "storm" in args.only:
            results["storm"] = _attempt(bench, storm.run, args.storm_size)
            _write(results, bench, args.out, started)
        if "ready" in args.only:
            results["ready"] = _attempt(bench, ready.run, args.ready_size, args.rounds)
            _write(results, bench, args.out, started)
        if "provisioning" in args.only:
            results["provisioning"] = _attempt(
                bench, provisioning.run, args.provisioning_size, args.provisioning_tenants, args.local_size
            )
    finally:
        pool.close()
        shutil.rmtree(agents_root, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    text = _write(results, bench, args.out, started)
    print()
    print(text)
    print(f"results in {args.out / 'latest.json'} and {args.out / 'latest.md'} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
