"""Minimal-protocol clients: the least an agent must do, to measure the control plane apart from its agents.

Each client is one runtime with its real identity (the JWT `AgentIdentity` signs, the ETag it holds). It
keeps the desired-state watch stream open (or long-polls), notes when each new state arrives, and, when told
to, sends the status report an agent sends after applying it; nothing else. Beside them, the same number of
etcd watchers on the same client stack. All clients of a worker process share one aiohttp session on one
event loop. Times are `time.monotonic()`, one clock for every process of the machine.
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

import aiohttp

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
# Idle connections (those the status reports went on) are kept from one round to the next, seconds apart, and
# closed before the control plane's 75 s: a round then measures the status path, not n connects at once.
KEEPALIVE_SECONDS = 60.0


@dataclass
class RrmClient:
    identity: AgentIdentity
    etag: str | None = None
    arrived: dict[str, float] = field(default_factory=dict)  # state hash → when it first arrived
    task: asyncio.Task[None] | None = None


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


class MinimalWorker(Worker):
    """A load-generator process of minimal clients (`minimal_*` commands) beside the real-agent commands."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.session: aiohttp.ClientSession | None = None
        self.url = ""
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

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS)
            self.session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self.session

    # the control plane's clients

    async def cmd_minimal_start(
        self, url: str, state_dirs: list[str], transport: str, report: bool, ramp_seconds: float
    ) -> int:
        """A client for each agent state dir (paired identities), opened spread over `ramp_seconds`."""
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: one of {TRANSPORTS}")
        self.url, self.report = url.rstrip("/"), report
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
            except (aiohttp.ClientError, TimeoutError, watch.FrameError) as exc:
                self.errors[type(exc).__name__] += 1
                await asyncio.sleep(random.uniform(*RETRY_SECONDS))

    def _headers(self, client: RrmClient, renew: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {client.identity.bearer_token(renew=renew)}"}
        if client.etag:
            headers["If-None-Match"] = client.etag
        return headers

    async def _watch(self, client: RrmClient) -> None:
        """One stream, opened with a fresh token (the stream lives as long as it), until its end frame."""
        session = self._session()
        async with session.get(self.url + watch.PATH, headers=self._headers(client, renew=True)) as response:
            if response.status != 200:
                await self._refused(response)
                return
            frames = watch.FrameReader()
            async for chunk in response.content.iter_any():
                for frame in frames.feed(chunk):
                    if frame.event == "state":
                        self._arrived(client, frame.id, frame.data)
                    elif frame.event == "end":
                        return
        self.errors["stream-cut"] += 1

    async def _longpoll(self, client: RrmClient) -> None:
        session = self._session()
        params = {"wait": f"{DEFAULT_WAIT_SECONDS:g}"}
        async with session.get(
            self.url + LONGPOLL_PATH, params=params, headers=self._headers(client)
        ) as answer:
            body = await answer.read()
            if answer.status == 200:
                self._arrived(client, answer.headers["ETag"].strip('"'), body)
            elif answer.status != 304:
                await self._refused(answer)

    async def _refused(self, response: aiohttp.ClientResponse) -> None:
        await response.read()
        self.errors[f"http-{response.status}"] += 1
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
        while True:
            try:
                async with self._session().put(self.url + STATUS_PATH, data=body, headers=headers) as answer:
                    await answer.read()
                    if answer.status in (200, 204):
                        self.reports[state_hash] += 1
                        return
                    self.errors[f"status-http-{answer.status}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
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
        stopped = len(self.clients) + len(self.etcd)
        self.clients, self.etcd = [], []
        self.arrivals.clear()
        self.reports.clear()
        self.etcd_arrivals.clear()
        self.errors.clear()
        self._bodies.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None
        return stopped

    # etcd's watchers

    async def cmd_minimal_etcd_watch(self, url: str, key_b64: str, count: int, ramp_seconds: float) -> int:
        for position in range(count):
            watcher = EtcdWatcher()
            delay = ramp_seconds * position / max(1, count)
            watcher.task = asyncio.create_task(self._etcd_after(delay, url.rstrip("/"), key_b64, watcher))
            self.etcd.append(watcher)
        return len(self.etcd)

    async def _etcd_after(self, delay: float, url: str, key_b64: str, watcher: EtcdWatcher) -> None:
        await asyncio.sleep(delay)
        while True:
            try:
                await self._etcd_watch(url, key_b64, watcher)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.errors[f"etcd-{type(exc).__name__}"] += 1
            await asyncio.sleep(random.uniform(*RETRY_SECONDS))

    async def _etcd_watch(self, url: str, key_b64: str, watcher: EtcdWatcher) -> None:
        """One watch on etcd's HTTP gateway: a JSON object a line; each event's value is decoded, as the
        control plane's clients decode their state."""
        body = {"create_request": {"key": key_b64}}
        async with self._session().post(url + "/v3/watch", json=body) as response:
            if response.status != 200:
                await self._refused(response)
                return
            async for line in response.content:
                created, events = watch_events(line)
                watcher.created = watcher.created or created
                for revision, value in events:
                    now = time.monotonic()
                    json.loads(value or b"null")
                    if revision not in watcher.received:
                        watcher.received[revision] = now
                        self.etcd_arrivals[revision] += 1
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
