"""Minimal-protocol clients: the least an agent must do, to measure the control plane apart from its agents.

Each client is one runtime with its real identity (the JWT `AgentIdentity` signs, the ETag it holds). It
keeps the desired-state watch stream open (or long-polls), notes when each new state arrives, and, when told
to, sends the status report an agent sends after applying it; nothing else. Beside them, the same number of
etcd watchers on the same client stack: HTTP/1.1 on asyncio protocols and httptools' parser
(`benchmarks.raw_http`), each stream and long-poll on a connection of its own, the status reports of a worker
process's clients on a pool of `REPORT_CONNECTIONS` kept connections, all on one event loop per process.
Times are `time.monotonic()`, one clock for every process of the machine.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks import raw_http
from benchmarks.etcd import watch_events
from benchmarks.fleets import DEFAULT_HEARTBEAT_SECONDS, DEFAULT_WAIT_SECONDS
from benchmarks.workers import Worker
from rrm.agent.identity import AgentIdentity
from rrm.agent.status import build_status_report
from rrm.wire import watch
from rrm.wire.protocol import ResourceResult, dumps

TRANSPORTS = ("watch", "longpoll")
LONGPOLL_PATH = "/agent/v1/desired-state"
STATUS_PATH = "/agent/v1/status"
RETRY_SECONDS = (0.5, 1.5)  # a failed stream, long-poll or report is tried again after a uniform draw
CONNECT_TIMEOUT_SECONDS = 60.0  # the loop of thousands of clients may be busy when a connect is due
# A worker process's clients send their reports over this many kept connections (aiohttp's default limit per
# session, which the clients used before): a round measures the status path, not thousands of connects.
REPORT_CONNECTIONS = 100
_FAILURES = (OSError, TimeoutError)  # raw_http.ConnectionFailed is an OSError
_JSON = {"Content-Type": "application/json"}


@dataclass
class RrmClient:
    identity: AgentIdentity
    etag: str | None = None
    arrived: dict[str, float] = field(default_factory=dict)  # state hash → when it first arrived
    task: asyncio.Task[None] | None = None
    connection: raw_http.Connection | None = None  # its long-polls', kept from one to the next


@dataclass
class EtcdWatcher:
    received: dict[int, float] = field(default_factory=dict)  # mod revision → when it arrived
    created: bool = False
    task: asyncio.Task[None] | None = None


def status_body(state: dict[str, Any], heartbeat_interval: float = DEFAULT_HEARTBEAT_SECONDS) -> bytes:
    """The report an agent sends once it has applied `state` (a decoded DesiredState): every component
    applied, no sidecar to judge them by."""
    resources = [
        ResourceResult(name=str(c["metadata"]["name"]), state="applied") for c in state["components"]
    ]
    report = build_status_report(
        applied_hash=state["hash"],
        resources=resources,
        sidecar=None,
        reload=None,
        drift=(),
        target="minimal",
        heartbeat_interval=heartbeat_interval,
    )
    return dumps(report)


def _address(url: str) -> tuple[str, int]:
    """`http://host:port` → (host, port)."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{url!r}: expected http://host:port")
    return parts.hostname, parts.port


class MinimalWorker(Worker):
    """A load-generator process of minimal clients (`minimal_*` commands) beside the real-agent commands."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.host, self.port = "", 0
        self.reporting: raw_http.Pool | None = None
        self.etcd_host, self.etcd_port = "", 0
        self.report = False
        self.clients: list[RrmClient] = []
        self.etcd: list[EtcdWatcher] = []
        self.arrivals: Counter[str] = Counter()  # hash → clients it reached
        self.reports: Counter[str] = Counter()  # hash → reports answered 2xx
        self.etcd_arrivals: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.payload: bytes | None = None
        self._bodies: dict[str, bytes] = {}  # hash → its status report, the same for every client
        self._reporting: set[asyncio.Task[None]] = set()

    async def _connect(self) -> raw_http.Connection:
        return await raw_http.Connection.open(self.host, self.port, CONNECT_TIMEOUT_SECONDS)

    # the control plane's clients

    async def cmd_minimal_start(
        self, url: str, state_dirs: list[str], transport: str, report: bool, ramp_seconds: float
    ) -> int:
        """A client for each agent state dir (paired identities), opened spread over `ramp_seconds`."""
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: one of {TRANSPORTS}")
        self.host, self.port = _address(url)
        self.report = report
        self.reporting = raw_http.Pool(self.host, self.port, REPORT_CONNECTIONS, CONNECT_TIMEOUT_SECONDS)
        run = self._watch if transport == "watch" else self._longpoll
        for position, state_dir in enumerate(state_dirs):
            identity = AgentIdentity.load(Path(state_dir))
            assert identity is not None, f"{state_dir} holds no identity"
            client = RrmClient(identity)
            delay = ramp_seconds * position / max(1, len(state_dirs))
            client.task = asyncio.create_task(self._after(delay, run, client))
            self.clients.append(client)
        return len(self.clients)

    async def _after(self, delay: float, run: Any, client: RrmClient) -> None:
        await asyncio.sleep(delay)
        while True:
            try:
                await run(client)
            except (*_FAILURES, watch.FrameError) as exc:
                self.errors[type(exc).__name__] += 1
                await asyncio.sleep(random.uniform(*RETRY_SECONDS))

    def _headers(self, client: RrmClient, renew: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {client.identity.bearer_token(renew=renew)}"}
        if client.etag:
            headers["If-None-Match"] = client.etag
        return headers

    async def _watch(self, client: RrmClient) -> None:
        """One stream, opened with a fresh token (the stream lives as long as it), until its end frame."""
        frames = watch.FrameReader()
        ended = False

        def arrived(chunk: bytes) -> None:
            nonlocal ended
            for frame in frames.feed(chunk):
                if frame.event == "state":
                    self._arrived(client, frame.id, frame.data)
                elif frame.event == "end":
                    ended = True

        connection = await self._connect()
        try:
            answer = await connection.request(
                "GET", watch.PATH, self._headers(client, renew=True), on_body=arrived
            )
        finally:
            connection.close()
        if answer.status != 200:
            await self._refused(answer.status)
        elif not ended:
            self.errors["stream-cut"] += 1

    async def _longpoll(self, client: RrmClient) -> None:
        if client.connection is None or client.connection.closed:
            client.connection = await self._connect()
        path = f"{LONGPOLL_PATH}?wait={DEFAULT_WAIT_SECONDS:g}"
        answer = await client.connection.request("GET", path, self._headers(client))
        if answer.status == 200:
            self._arrived(client, answer.headers[b"etag"].decode().strip('"'), answer.body)
        elif answer.status != 304:
            await self._refused(answer.status)

    async def _refused(self, status: int) -> None:
        self.errors[f"http-{status}"] += 1
        await asyncio.sleep(random.uniform(*RETRY_SECONDS))

    def _arrived(self, client: RrmClient, state_hash: str, body: bytes) -> None:
        now = time.monotonic()
        state = json.loads(body)
        client.etag = f'"{state_hash}"'
        if state_hash in client.arrived:
            return
        client.arrived[state_hash] = now
        self.arrivals[state_hash] += 1
        self.payload = self.payload or body
        if self.report:
            report = self._bodies.get(state_hash) or self._bodies.setdefault(state_hash, status_body(state))
            task = asyncio.create_task(self._send_report(client, state_hash, report))
            self._reporting.add(task)
            task.add_done_callback(self._reporting.discard)

    async def _send_report(self, client: RrmClient, state_hash: str, body: bytes) -> None:
        headers = {"Authorization": f"Bearer {client.identity.bearer_token()}"}
        headers["Content-Type"] = "application/json"
        assert self.reporting is not None
        while True:
            try:
                answer = await self.reporting.request("PUT", STATUS_PATH, headers, body)
                if answer.status in (200, 204):
                    self.reports[state_hash] += 1
                    return
                self.errors[f"status-http-{answer.status}"] += 1
            except _FAILURES as exc:
                self.errors[f"status-{type(exc).__name__}"] += 1
            await asyncio.sleep(random.uniform(*RETRY_SECONDS))

    async def cmd_minimal_progress(self, hash: str) -> dict[str, int]:
        return {
            "clients": len(self.clients),
            "received": self.arrivals[hash],
            "reported": self.reports[hash],
        }

    async def cmd_minimal_times(self, hash: str) -> list[float | None]:
        return [c.arrived.get(hash) for c in self.clients]

    async def cmd_minimal_payload(self) -> str | None:
        return self.payload.decode() if self.payload is not None else None

    async def cmd_minimal_errors(self) -> dict[str, int]:
        return dict(self.errors)

    async def cmd_minimal_stop(self) -> int:
        tasks = [c.task for c in self.clients] + [w.task for w in self.etcd] + list(self._reporting)
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        for client in self.clients:
            if client.connection is not None:
                client.connection.close()
        if self.reporting is not None:
            self.reporting.close()
            self.reporting = None
        stopped = len(self.clients) + len(self.etcd)
        self.clients, self.etcd = [], []
        self.arrivals.clear()
        self.reports.clear()
        self.etcd_arrivals.clear()
        self.errors.clear()
        self._bodies.clear()
        return stopped

    # etcd's watchers

    async def cmd_minimal_etcd_watch(self, url: str, key_b64: str, count: int, ramp_seconds: float) -> int:
        self.etcd_host, self.etcd_port = _address(url)
        for position in range(count):
            watcher = EtcdWatcher()
            delay = ramp_seconds * position / max(1, count)
            watcher.task = asyncio.create_task(self._etcd_after(delay, key_b64, watcher))
            self.etcd.append(watcher)
        return len(self.etcd)

    async def _etcd_after(self, delay: float, key_b64: str, watcher: EtcdWatcher) -> None:
        await asyncio.sleep(delay)
        while True:
            try:
                await self._etcd_watch(key_b64, watcher)
            except (*_FAILURES, ValueError) as exc:
                self.errors[f"etcd-{type(exc).__name__}"] += 1
            await asyncio.sleep(random.uniform(*RETRY_SECONDS))

    async def _etcd_watch(self, key_b64: str, watcher: EtcdWatcher) -> None:
        """One watch on etcd's HTTP gateway: a JSON object a line; each event's value is decoded, as the
        control plane's clients decode their state. An `error` line ends the watch with ValueError."""
        pending = b""
        failure: ValueError | None = None
        connection = await raw_http.Connection.open(self.etcd_host, self.etcd_port, CONNECT_TIMEOUT_SECONDS)

        def arrived(chunk: bytes) -> None:
            nonlocal pending, failure
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                try:
                    created, events = watch_events(line)
                except ValueError as exc:
                    failure = exc
                    connection.close()
                    return
                watcher.created = watcher.created or created
                for revision, value in events:
                    now = time.monotonic()
                    json.loads(value or b"null")
                    if revision not in watcher.received:
                        watcher.received[revision] = now
                        self.etcd_arrivals[revision] += 1

        body = json.dumps({"create_request": {"key": key_b64}}).encode()
        try:
            answer = await connection.request("POST", "/v3/watch", _JSON, body, on_body=arrived)
        except raw_http.ConnectionFailed:
            if failure is not None:
                raise failure from None
            raise
        finally:
            connection.close()
        if answer.status != 200:
            await self._refused(answer.status)
        else:
            self.errors["etcd-stream-cut"] += 1

    async def cmd_minimal_etcd_progress(self, revision: int) -> dict[str, int]:
        return {
            "watchers": len(self.etcd),
            "created": sum(1 for w in self.etcd if w.created),
            "received": self.etcd_arrivals[revision],
        }

    async def cmd_minimal_etcd_times(self, revision: int) -> list[float | None]:
        return [w.received.get(revision) for w in self.etcd]

    async def cmd_exit(self) -> None:
        await self.cmd_minimal_stop()
        await super().cmd_exit()
