"""Fleets of simulated runtimes: registered and paired once per size, then copied for every benchmark.

Registering and pairing 10,000 runtimes takes minutes, so each size is set up once per run: a control plane
on a fresh data dir registers the runtimes (admin API) and every agent pairs with its own token and its own
Ed25519 key (the real `AgentIdentity.pair`); the server is then stopped. Each benchmark starts its own
server on a copy of that data dir, and its agents start from their stored identities, as a restarted
`rrm agent` does. Agent state lives on tmpfs when there is one: in a real fleet every agent has its own
disk, here 10,000 of them would otherwise queue their fsyncs behind the control plane's. The replicas
benchmark builds its fleet the same way in a PostgreSQL database (`Bench.fleet_in`) and runs on it in place.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    BENCH_LABELS,
    LABEL_GROUPS,
    ServerProcess,
    at_open_file_limit,
    open_files,
    process_tree,
    wait_until,
)
from benchmarks.workers import WorkerPool
from rrm.agent.config import AgentConfig
from rrm.server.fd_limit import CONNECTIONS_PER_AGENT

REGISTER_CONCURRENCY = 16
# Registering through the admin API costs O(N) per runtime at the moment (its answer reads every runtime's
# condition rows), so larger fleets are written with the same repository calls the API makes, in one
# transaction, while the server is stopped. Pairing always goes through the agent API.
API_REGISTRATION_LIMIT = 1000
PAIR_CONCURRENCY_PER_WORKER = 16
# Agents start spread over size / RAMP_AGENTS_PER_SECOND seconds (50 s for 10,000), as a fleet does. Faster,
# the load generator's own event loops fall behind, connects time out in them (httpx's 5 s connect timeout
# includes the time the loop is busy elsewhere), and the retries feed the overload.
RAMP_AGENTS_PER_SECOND = 200
# The agent's own defaults ("default intervals"), as `rrm agent` runs without options.
_AGENT_DEFAULTS = {f.name: f.default for f in fields(AgentConfig)}
DEFAULT_WAIT_SECONDS = float(_AGENT_DEFAULTS["wait_seconds"])  # type: ignore[arg-type]
DEFAULT_HEARTBEAT_SECONDS = float(_AGENT_DEFAULTS["heartbeat_interval"])  # type: ignore[arg-type]
OPEN_FILES_BESIDE_AGENTS = 1000  # a process's own files (database, logs, pipes) and some room, rounded up


@dataclass
class FleetTemplate:
    """A registered, paired fleet: the set-up server's data dir (its admin token and encryption key, and on
    SQLite its database), the database URL when it is PostgreSQL, and each agent's state dir."""

    size: int
    data_dir: Path
    state_dirs: list[Path]
    names: list[str]
    setup: dict[str, float] = field(default_factory=dict)
    database_url: str | None = None


@dataclass
class Bench:
    """What one run of the benchmarks shares: the worker pool, the work dirs and the fleet templates."""

    pool: WorkerPool
    workdir: Path
    agents_root: Path
    templates: dict[int, FleetTemplate] = field(default_factory=dict)
    profile_dir: Path | None = None
    server_workers: int = 1  # `rrm server --workers N` for the fleet benchmarks' control plane

    def pids(self, server: ServerProcess) -> dict[str, int]:
        """The processes worth profiling: the server and each worker."""
        return {"server": server.pid} | {f"worker-{i}": pid for i, pid in enumerate(self.pool.pids)}

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # fleets --------------------------------------------------------------------------------------------

    def fleet(self, size: int) -> FleetTemplate:
        """The SQLite fleet of `size` runtimes, built on first use; benchmarks run on copies of it."""
        if size not in self.templates:
            label = f"fleet-{size}"
            self.templates[size] = self._build(size, self.workdir / label, self.agents_root / label)
        return self.templates[size]

    def fleet_in(self, database_url: str, size: int, label: str) -> FleetTemplate:
        """A fleet of `size` runtimes built in `database_url` (PostgreSQL: used in place, not copied, so it
        is not kept among the templates); the set-up server's data dir holds the admin token and key."""
        return self._build(size, self.workdir / label / "fleet", self.agents_root / label, database_url)

    def _build(
        self, size: int, root: Path, state_root: Path, database_url: str | None = None
    ) -> FleetTemplate:
        names = [f"rt-{i:05d}" for i in range(size)]
        state_dirs = [state_root / name for name in names]
        server = ServerProcess(root / "data", root / "server.log", database_url=database_url)
        server.start()
        try:
            started = time.monotonic()
            if size <= API_REGISTRATION_LIMIT:
                self.log(f"fleet of {size}: registering runtimes through the admin API")
                token = (server.data_dir / "admin-token").read_text().strip()
                tokens = asyncio.run(_register(server.url, token, names, self.log))
            else:
                self.log(f"fleet of {size}: registering runtimes straight into the stopped server's database")
                server.stop()
                tokens = _register_directly(server.database, names)
                server.start()
            registered = time.monotonic() - started
            self.log(f"fleet of {size}: {size / registered:.0f} registrations/s; pairing the agents")
            started = time.monotonic()
            specs = [
                (n, t, str(d), i) for i, (n, t, d) in enumerate(zip(names, tokens, state_dirs, strict=True))
            ]
            self.pool.call(
                "pair",
                [
                    {"url": server.url, "specs": chunk, "concurrency": PAIR_CONCURRENCY_PER_WORKER}
                    for chunk in self.split(specs)
                ],
            )
            paired = time.monotonic() - started
            self.log(f"fleet of {size}: {size / paired:.0f} pairings/s")
        finally:
            server.stop()
        return FleetTemplate(
            size,
            root / "data",
            state_dirs,
            names,
            {"register_per_second": round(size / registered, 1), "pair_per_second": round(size / paired, 1)},
            database_url,
        )

    def split(self, items: Sequence[Any]) -> list[list[Any]]:
        """Round-robin over the workers, so a ramp-up interleaves them."""
        return [list(items[w :: self.pool.size]) for w in range(self.pool.size)]

    def server(self, template: FleetTemplate | None, label: str) -> ServerProcess:
        """A server for one benchmark on a fresh copy of the template's data dir (or an empty one)."""
        root = self.workdir / label
        if root.exists():
            shutil.rmtree(root)
        data_dir = root / "data"
        if template is not None:
            shutil.copytree(template.data_dir, data_dir)
        options = ["--workers", str(self.server_workers)] if self.server_workers > 1 else []
        return ServerProcess(data_dir, root / "server.log", options=options)

    # agents --------------------------------------------------------------------------------------------

    def start_agents(
        self,
        template: FleetTemplate,
        urls: list[str],
        label: str,
        *,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_SECONDS,
        ramp_seconds: float | None = None,
        spread_urls: bool = False,
    ) -> None:
        """Agents from the template's identities, talking to `urls` (the agent's director list, tried in
        order). With `spread_urls`, the agents of each worker take turns at which URL they try first."""
        caches = self.agents_root / "caches" / label
        if caches.exists():
            shutil.rmtree(caches)
        specs = [
            (name, str(state_dir), str(caches / name), i)
            for i, (name, state_dir) in enumerate(zip(template.names, template.state_dirs, strict=True))
        ]
        ramp = template.size / RAMP_AGENTS_PER_SECOND if ramp_seconds is None else ramp_seconds
        self.pool.call(
            "start",
            [
                {
                    "urls": urls,
                    "specs": chunk,
                    "wait_seconds": wait_seconds,
                    "heartbeat_interval": heartbeat_interval,
                    "ramp_seconds": ramp,
                    "spread_urls": spread_urls,
                }
                for chunk in self.split(specs)
            ],
        )

    def progress(self, hash: str) -> dict[str, int]:
        total: dict[str, int] = {}
        for reply in self.pool.broadcast("progress", hash=hash):
            for key, value in reply.items():
                total[key] = total.get(key, 0) + value
        return total

    def wait_reported(self, hash: str, size: int, timeout: float, what: str) -> float:
        """Wait until every agent has applied `hash` and reported it; returns the seconds waited."""
        started = time.monotonic()
        last: dict[str, int] = {}

        def done() -> bool:
            last.update(self.progress(hash))
            return last["reported"] >= size

        try:
            wait_until(done, timeout, what, interval=0.25)
        except TimeoutError as exc:
            raise TimeoutError(
                f"{exc} ({last.get('applied')} applied, {last.get('reported')} reported)"
            ) from None
        return time.monotonic() - started

    def incomplete_after_update(self, hash: str, size: int, label: str, marker: int) -> str:
        """Every status report of update `marker` in before the next update, so rounds do not overlap;
        "" when they came, else why the benchmark stops here (logged)."""
        try:
            self.wait_reported(hash, size, 60 + size / 50, "status reports after the update")
        except TimeoutError as exc:
            incomplete = f"stopped after update {marker}: {exc}"
            self.log(f"{label}: {incomplete}")
            return incomplete
        return ""

    def wait_applied(self, hash: str, size: int, timeout: float) -> int:
        """Wait until every agent has applied `hash`, or the timeout; returns how many did."""
        deadline = time.monotonic() + timeout
        while True:
            applied = self.progress(hash)["applied"]
            if applied >= size or time.monotonic() > deadline:
                return applied
            time.sleep(0.05)

    def applied_times(self, hash: str) -> list[float | None]:
        return [t for reply in self.pool.broadcast("applied_times", hash=hash) for t in reply]

    def stages(self, hash: str) -> list[tuple[float, float, float, float, float]]:
        """(received, taken, applied, report began, report answered) of each agent that reported `hash`."""
        return [tuple(t) for reply in self.pool.broadcast("stages", hash=hash) for t in reply if t]

    def applied_by_director(self, hash: str) -> list[tuple[str, str, float | None]]:
        """Per agent: the director it started with, the one it talks to now, when it applied `hash`."""
        return [
            (first, active, t)
            for reply in self.pool.broadcast("applied_by_director", hash=hash)
            for first, active, t in reply
        ]

    def failures(self, reset: bool = False) -> dict[str, int]:
        total: dict[str, int] = {}
        for reply in self.pool.broadcast("failures", reset=reset):
            for key, value in reply.items():
                total[key] = total.get(key, 0) + value
        return total

    def stop_agents(self) -> None:
        self.pool.broadcast("stop_agents")

    def open_files_now(self, server: ServerProcess) -> dict[str, Any]:
        """The files each server process (with --workers, the supervisor then each worker) and each
        load-generator worker holds open now, and their limits (Linux)."""
        try:
            servers = [open_files(pid) for pid in process_tree(server.pid)]
            workers = [open_files(pid) for pid in self.pool.pids]
        except OSError:
            return {}
        return {
            "server_processes": [n for n, _ in servers],
            "server_limit": min(m for _, m in servers),
            "load_generator_workers": [n for n, _ in workers],
            "load_generator_limit": min((m for _, m in workers), default=None),
        }

    def open_file_limit_reached(self, server: ServerProcess, agents: int) -> tuple[str, str]:
        """Which of the server and the load-generator workers is at its open-file limit, where it drops
        connections unanswered ("" for none), and the limit `agents` real agents need."""
        found = [at_open_file_limit(server.pid, "the rrm server")]
        found += [
            at_open_file_limit(pid, f"load-generator worker {i}") for i, pid in enumerate(self.pool.pids)
        ]
        server_needs = CONNECTIONS_PER_AGENT * agents + OPEN_FILES_BESIDE_AGENTS
        worker_needs = CONNECTIONS_PER_AGENT * -(-agents // self.pool.size) + OPEN_FILES_BESIDE_AGENTS
        needed = (
            f"Each of the {agents:,} agents holds up to {CONNECTIONS_PER_AGENT} connections (its watch "
            "stream and its status reports' connection), so one control-plane process needs an open-file "
            f"limit of about {server_needs:,} and each of the {self.pool.size} load-generator workers "
            f"{worker_needs:,}: raise the hard limit (`ulimit -Hn`, `docker run --ulimit nofile=N:N`, "
            "systemd LimitNOFILE=N; as root beyond the hard limit only with CAP_SYS_RESOURCE), or run the "
            "control plane with --workers (each process holds its share)"
        )
        return "; ".join(filter(None, found)), needed


def sync_deadline(size: int) -> float:
    """How long N agents may take to start and sync before a benchmark gives up (310 s for 10,000)."""
    return 60 + size / 40


def desired_hash(server: ServerProcess, runtime: str) -> str:
    assert server.admin is not None
    value = server.admin.get(f"/api/v1/runtimes/{runtime}").json()["desired_hash"]
    return str(value)


def _labels(index: int) -> dict[str, str]:
    return {**BENCH_LABELS, "group": f"g{index % LABEL_GROUPS}"}


def _register_directly(database_url: str, names: list[str]) -> list[str]:
    """What `POST /api/v1/runtimes` stores, for every name, in one transaction; returns the pairing tokens."""
    from rrm.server.auth import PAIRING_TOKEN_PREFIX, new_token, token_hash
    from rrm.store import Database
    from rrm.store import repositories as repo
    from rrm.store.tables import Runtime

    db = Database(database_url)
    now = datetime.now(UTC)
    expires = now + timedelta(days=1)
    tokens = []
    try:
        with db.write() as session:
            for index, name in enumerate(names):
                row = Runtime(
                    id=str(uuid.uuid4()),
                    name=name,
                    kind="selfhosted",
                    labels=_labels(index),
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                session.flush()
                token = new_token(PAIRING_TOKEN_PREFIX)
                repo.add_pairing_token(session, row.id, token_hash(token), expires, now)
                repo.record_change(session, repo.ENTITY_RUNTIME, row.id, now)
                repo.record_event(session, "RuntimeRegistered", f"runtime/{name}", "kind selfhosted", now)
                tokens.append(token)
    finally:
        db.dispose()
    return tokens


async def _register(url: str, token: str, names: list[str], log: Callable[[str], None]) -> list[str]:
    gate = asyncio.Semaphore(REGISTER_CONCURRENCY)
    done = 0
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:

        async def register(index: int, name: str) -> str:
            body = {"name": name, "kind": "selfhosted", "labels": _labels(index), "token_ttl_seconds": 86400}
            async with gate:
                response = await client.post("/api/v1/runtimes", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"registering {name}: {response.status_code} {response.text[:300]}")
            nonlocal done
            done += 1
            if done % 1000 == 0:
                log(f"  {done} registered ({done / (time.monotonic() - started):.0f}/s)")
            return str(response.json()["pairing_token"])

        return await asyncio.gather(*(register(i, n) for i, n in enumerate(names)))
