"""Status path: control-plane CPU per status report (`PUT /agent/v1/status`), apart from any long-poll.

A real `rrm server` on a copy of the N-runtime fleet; minimal clients in this process (plain asyncio and
httpx, each runtime's own JWT from its stored identity) send status reports at a fixed total rate, and the
server's CPU seconds (utime + stime, /proc or psutil, with its worker processes) are read before and after
each phase, whose window ends one housekeeping pass after the last answer, so the leader's bookkeeping of
those reports is counted. Phases, in order:

- `first`: every runtime reports the desired hash once (its first report: a first sighting, no events,
  and its token's first verification; later phases reuse each token as an agent does);
- `floor`: as many requests as `heartbeat`, each a body the protocol refuses (422 after the token is
  checked): what HTTP and authentication (a cached token) cost, which no status path can save;
- `idle`: nothing is sent, to know what the server costs meanwhile (`cpu_us_per_report_net` subtracts it);
- `heartbeat`: reports with an unchanged applied hash, round-robin over the runtimes, for `seconds`;
- `changed`: a component write gives every runtime a new desired state, then every runtime reports it
  once: each report a newly applied hash (a DesiredStateApplied event, Synced and Ready transitions);
- `bare`: once the control plane has stopped, as many requests as `heartbeat` to uvicorn with the control
  plane's settings serving an app that only answers 204 (`benchmarks.bare_asgi`): the stack's own cost per
  request, below which no endpoint can go.

    .venv/bin/python -m benchmarks.status_path --sizes 1000 [--rate 300] [--seconds 20] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks import postgres
from benchmarks.common import (
    ProcessSampler,
    ServerProcess,
    component,
    free_port,
    percentiles,
    raise_open_files,
    wait_until,
)
from benchmarks.fleets import Bench, FleetTemplate, desired_hash
from benchmarks.profile import profiled
from benchmarks.workers import WorkerPool
from rrm.agent.identity import AgentIdentity
from rrm.wire.protocol import ResourceResult, StatusReport, dumps

COMPONENT = "bench-status"
# Long enough that no runtime goes silent between its reports in any phase (Connected stays True), so the
# figures are the reports' cost and not that of heartbeat deadlines passing.
REPORTED_HEARTBEAT_SECONDS = 600.0
HOUSEKEEPING_INTERVAL = 1.0  # rrm.server.housekeeping.run_housekeeping's default
IDLE_SECONDS = 5.0
_ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


def run(
    bench: Bench,
    n: int,
    rate: float = 300.0,
    seconds: float = 20.0,
    concurrency: int = 128,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Status reports from `n` runtimes at `rate` per second in total; `database_url`: a PostgreSQL
    database to build the fleet in (else the SQLite fleet template of size `n`)."""
    template, server = _fleet_and_server(bench, n, database_url)
    server.start()
    try:
        server.apply(component(COMPONENT, 0))
        sender = _Sender(server.url, template, rate, min(n, concurrency))
        first_hash = desired_hash(server, template.names[0])
        bench.log(f"status path {n}: every runtime reports once ({n / rate:.0f} s)")
        measure = _Phases(server, sender, bench.profile_dir, f"status-{n}")
        first = measure("first", _body(first_hash), range(n))
        bench.log(f"status path {n}: idle for {IDLE_SECONDS:.0f} s")
        with ProcessSampler(server.pid, children=True) as idle:
            time.sleep(IDLE_SECONDS)
        idle_cores = idle.cpu_seconds / idle.elapsed
        count = max(1, round(rate * seconds))
        bench.log(f"status path {n}: {count} refused reports (HTTP and authentication only)")
        floor = measure("floor", b"[]", (i % n for i in range(count)), expected=422)
        bench.log(f"status path {n}: {count} heartbeats (unchanged hash) at {rate:.0f}/s")
        heartbeat = measure("heartbeat", _body(first_hash), (i % n for i in range(count)))
        server.apply(component(COMPONENT, 1))
        new_hash = desired_hash(server, template.names[0])
        _settle(server)
        bench.log(f"status path {n}: every runtime reports a newly applied hash ({n / rate:.0f} s)")
        changed = measure("changed", _body(new_hash), range(n))
        synced = server.synced_count()
    finally:
        server.stop()
    phases = {"first": first, "floor": floor, "heartbeat": heartbeat, "changed": changed}
    for phase in phases.values():
        phase["cpu_us_per_report_net"] = _per_report(
            phase["cpu_seconds"] - idle_cores * phase["seconds"], phase["reports"]
        )
    bench.log(f"status path {n}: {count} requests to bare uvicorn (the stack's floor)")
    with _BareServer(bench.workdir / "bare-asgi.log") as bare:
        sender.url = bare.url
        phases["bare"] = measure("bare", _body(new_hash), (i % n for i in range(count)), pid=bare.pid)
    phases["bare"]["cpu_us_per_report_net"] = None  # no idle of its own measured; it idles at ~0
    return {
        "runtimes": n,
        "database": "postgresql" if database_url else "sqlite",
        "rate_target": rate,
        "concurrency": min(n, concurrency),
        "reported_heartbeat_interval": REPORTED_HEARTBEAT_SECONDS,
        "idle": {"seconds": round(idle.elapsed, 2), "cpu_cores": round(idle_cores, 4)},
        **phases,
        "synced_after": synced,
    }


def _fleet_and_server(bench: Bench, n: int, database_url: str | None) -> tuple[FleetTemplate, ServerProcess]:
    if database_url is None:
        template = bench.fleet(n)
        return template, bench.server(template, "status-path")
    template = bench.fleet_in(database_url, n, f"status-path-pg-{n}")
    return template, ServerProcess(
        template.data_dir, bench.workdir / "status-path-pg.log", database_url=database_url
    )


def _identities(template: FleetTemplate) -> list[AgentIdentity]:
    identities = []
    for state_dir in template.state_dirs:
        identity = AgentIdentity.load(state_dir)
        assert identity is not None, f"{state_dir} holds no paired identity"
        identities.append(identity)
    return identities


def _body(applied_hash: str) -> bytes:
    """What a bench agent reports with `applied_hash` applied: the one component, applied."""
    report = StatusReport(
        applied_hash=applied_hash,
        resources=[ResourceResult(name=COMPONENT, state="applied")],
        agent_version="bench",
        heartbeat_interval=REPORTED_HEARTBEAT_SECONDS,
    )
    return dumps(report)


class _Phases:
    """Runs the phases against one server; with `profile_dir`, each phase's server is recorded there
    (py-spy, `<label>-<phase>-server.txt`)."""

    def __init__(self, server: ServerProcess, sender: _Sender, profile_dir: Path | None, label: str) -> None:
        self.server, self.sender, self.profile_dir, self.label = server, sender, profile_dir, label

    def __call__(
        self, name: str, body: bytes, runtimes: Any, expected: int = 204, pid: int | None = None
    ) -> dict[str, Any]:
        """Send `body` for each runtime index in `runtimes`; CPU (of `pid`, else the control plane's)
        until one housekeeping pass after the last. `reports` counts the answers with status `expected`;
        any other answer is a failure."""
        pid = self.server.pid if pid is None else pid
        with (
            profiled({"server": pid}, self.profile_dir, f"{self.label}-{name}"),
            ProcessSampler(pid, children=True) as sampler,
        ):
            sent = asyncio.run(self.sender.send(body, list(runtimes), expected))
            time.sleep(HOUSEKEEPING_INTERVAL * 1.5)
        return {
            **sent,
            "seconds": round(sampler.elapsed, 2),
            "cpu_seconds": round(sampler.cpu_seconds, 3),
            "cpu_us_per_report": _per_report(sampler.cpu_seconds, sent["reports"]),
        }


def _per_report(cpu_seconds: float, reports: int) -> float | None:
    return round(cpu_seconds / reports * 1e6, 1) if reports else None


def _settle(server: ServerProcess, quiet_cores: float = 0.2, deadline: float = 120.0) -> None:
    """Wait until the server uses less than `quiet_cores` over one housekeeping interval (a write's
    aftermath, e.g. the leader recording every runtime's Synced=False, is not a report's cost)."""
    ends = time.monotonic() + deadline
    while time.monotonic() < ends:
        with ProcessSampler(server.pid, children=True) as sample:
            time.sleep(HOUSEKEEPING_INTERVAL * 1.5)
        if sample.cpu_seconds / sample.elapsed < quiet_cores:
            return


class _BareServer:
    """`benchmarks.bare_asgi` in a process of its own, for the `bare` phase."""

    def __init__(self, log: Path) -> None:
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> _BareServer:
        with self.log.open("ab") as log:
            command = [sys.executable, "-m", "benchmarks.bare_asgi", "--port", str(self.port)]
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._listening, 30, "bare uvicorn listening")
        return self

    def _listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(30)


class _Sender:
    """Status reports at a fixed total rate over `concurrency` keep-alive connections, one per worker."""

    def __init__(self, url: str, template: FleetTemplate, rate: float, concurrency: int) -> None:
        self.url, self.rate, self.concurrency = url, rate, concurrency
        self.identities = _identities(template)

    async def send(self, body: bytes, runtimes: list[int], expected: int) -> dict[str, Any]:
        """Report `body` once for each runtime index, the i-th no sooner than i / rate s after the start,
        each with its runtime's token as a real agent holds it: signed on first use and reused for half its
        five-minute lifetime, so the control plane verifies each token once and finds it in its cache after
        (signing anew for every phase made every request of a large fleet a first verification)."""
        tokens = [identity.bearer_token() for identity in self.identities]
        failures: Counter[str] = Counter()
        latencies: list[float] = []
        order = iter(enumerate(runtimes))
        started = time.monotonic()

        async def worker() -> None:
            # a client of one connection per worker: one pool of hundreds costs httpx more than the server
            async with httpx.AsyncClient(base_url=self.url, limits=_ONE_CONNECTION, timeout=60) as client:
                for position, runtime in order:
                    delay = started + position / self.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent = time.monotonic()
                    headers = {
                        "Authorization": f"Bearer {tokens[runtime]}",
                        "Content-Type": "application/json",
                    }
                    try:
                        response = await client.put("/agent/v1/status", content=body, headers=headers)
                    except httpx.HTTPError as exc:
                        failures[type(exc).__name__] += 1
                        continue
                    if response.status_code == expected:
                        latencies.append(time.monotonic() - sent)
                    else:
                        failures[str(response.status_code)] += 1

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        elapsed = time.monotonic() - started
        return {
            "reports": len(latencies),
            "failures": dict(failures),
            "send_seconds": round(elapsed, 2),
            "reports_per_second": round(len(latencies) / elapsed, 1),
            "latency": percentiles(latencies),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.status_path", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000", help="comma-separated runtime counts")
    parser.add_argument("--rate", type=float, default=300.0, help="reports per second, in total")
    parser.add_argument("--seconds", type=float, default=20.0, help="heartbeat phase, s")
    parser.add_argument("--workers", type=int, default=2, help="processes that pair the fleet")
    parser.add_argument("--postgres", action="store_true", help="a fresh database at $RRM_TEST_DATABASE_URL")
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args(argv)
    raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="rrm-bench-status-"))
    pool = WorkerPool(args.workers, workdir / "logs")
    bench = Bench(pool, workdir, workdir / "agents")
    results = []
    try:
        for n in (int(s) for s in args.sizes.split(",") if s.strip()):
            if args.postgres:
                with postgres.fresh_database() as url:
                    results.append(run(bench, n, args.rate, args.seconds, database_url=url))
            else:
                results.append(run(bench, n, args.rate, args.seconds))
    finally:
        pool.close()
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
