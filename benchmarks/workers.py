"""The load generator: worker processes, each running many real agents (or etcd watchers) on one event loop.

An agent here is `rrm.agent.loop.Agent` with the real `DirectorClient` and `AgentIdentity`, exactly as
`rrm agent` builds it, down to the `Target` interface; only the target is a benchmark one that keeps the
objects in memory and notes when each desired-state hash was first applied. The client is the real one
too, subclassed only to count what it received, reported and failed, and the agent is subclassed only to
note when it took each state (what it applies, of what it received). Times are `time.monotonic()`, which
on Linux is one clock for every process of the machine, so workers and coordinator compare them directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import multiprocessing
import os
import ssl
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

import rrm.agent.client
import rrm.agent.loop
from benchmarks.common import raise_open_files
from rrm.agent.backoff import Backoff
from rrm.agent.cache import DesiredStateCache
from rrm.agent.client import DirectorClient, DirectorError, DirectorUnavailable, StreamOpened, Unauthorized
from rrm.agent.config import AgentConfig
from rrm.agent.identity import AgentIdentity
from rrm.agent.loop import Agent
from rrm.agent.plain_http import PlainHTTPTransport
from rrm.agent.targets.base import ApplyOutcome, NativeChanges, NativeObject, Target
from rrm.wire.protocol import DesiredState, ResourceResult, StatusReport, dumps

COMMAND_TIMEOUT = 1800.0
CONNECT_TIMEOUT_SECONDS = 60.0
GIL_SWITCH_SECONDS = 0.0005  # sys.setswitchinterval in each worker (see worker_main)
# One TLS context for every client: the agents talk plain HTTP on loopback, and loading the CA bundle
# 10,000 times would cost the load generator minutes and gigabytes for nothing.
_TLS = ssl.create_default_context()
T = TypeVar("T")


# --- the agent's pieces, instrumented -----------------------------------------------------------------------


class BenchTarget(Target):
    """Objects in memory; `applied[hash]` is when that hash was first applied (monotonic seconds)."""

    name = "bench"

    def __init__(self) -> None:
        self.objects: dict[str, NativeObject] = {}
        self.applied: dict[str, float] = {}

    @classmethod
    def from_config(cls, config: AgentConfig) -> Target:
        return cls()

    def render(self, state: DesiredState) -> dict[str, NativeObject]:
        return {str(c["metadata"]["name"]): c for c in state.components}

    def observe(self) -> dict[str, NativeObject]:
        return dict(self.objects)

    def apply(self, changes: NativeChanges, state: DesiredState, *, prune: bool) -> ApplyOutcome:
        self.objects.update(changes.create)
        self.objects.update(changes.update)
        if prune:
            for key in changes.delete:
                self.objects.pop(key, None)
        self.applied.setdefault(state.hash, time.monotonic())
        return ApplyOutcome(
            resources=[ResourceResult(name=name, state="applied") for name in sorted(self.objects)],
            changed=not changes.empty,
        )


class Failures(Counter[str]):
    """The agents' failed calls by kind, told apart finely enough to say what a storm is made of: a stream
    cut (not answered, answered without its open frame, or broken off after it), a connection that failed
    (by httpx's exception: refused, timed out, dropped), a status code the contract does not allow."""

    def note(self, exc: DirectorError) -> None:
        self[self.kind(exc)] += 1

    @staticmethod
    def kind(exc: DirectorError) -> str:
        message = str(exc)
        if isinstance(exc, Unauthorized):
            return "unauthorized"
        if isinstance(exc, rrm.agent.client.StreamCut):
            return "stream_" + (
                "unanswered" if not exc.answered else "not_opened" if not exc.opened else "cut_after_open"
            )
        if isinstance(exc, DirectorUnavailable):
            if exc.__cause__ is not None:  # the watch stream's connection failed
                return f"unreachable_watch:{type(exc.__cause__).__name__}"
            if "no director reachable" in message:  # "no director reachable: URL: ConnectError: …"
                return "unreachable:" + message.split(": ")[2]
            return "server_error:" + message.split(": ")[1].split(" ")[0]
        if isinstance(exc, rrm.agent.client.UnexpectedResponse) and exc.__cause__ is None:
            answer = message.split(": ")  # "GET /path: 404 detail", or a state that fails its hash
            status = answer[1].split(" ")[0] if len(answer) > 1 else ""
            return f"unexpected_status:{status}" if status.isdigit() else "unexpected_state"
        return f"unexpected:{type(exc).__name__}"


class BenchClient(DirectorClient):
    """The real client; notes each state received (time, hash), each report delivered, each failure."""

    def __init__(self, urls: list[str], failures: Failures, **kwargs: Any) -> None:
        super().__init__(urls, **kwargs)
        self.failures = failures
        self.received: list[tuple[float, str]] = []
        self.reported_hash: str | None = None
        self.report_times: dict[str, tuple[float, float]] = {}  # hash → first report of it: (began, answered)
        self.last_body: str | None = None

    async def fetch_desired(self, etag: str | None, wait: float) -> DesiredState | None:
        try:
            state = await super().fetch_desired(etag, wait)
        except DirectorError as exc:
            self.failures.note(exc)
            raise
        if state is not None:
            self.received.append((time.monotonic(), state.hash))
        return state

    async def watch_desired(
        self, etag: str | None, first_frame_timeout: float
    ) -> AsyncIterator[StreamOpened | DesiredState]:
        try:
            async for item in super().watch_desired(etag, first_frame_timeout):
                if isinstance(item, DesiredState):
                    self.received.append((time.monotonic(), item.hash))
                yield item
        except DirectorError as exc:
            self.failures.note(exc)
            raise

    async def report_status(self, report: StatusReport) -> None:
        began = time.monotonic()
        try:
            await super().report_status(report)
        except DirectorError as exc:
            self.failures.note(exc)
            raise
        self.reported_hash = report.applied_hash
        if report.applied_hash is not None and report.applied_hash not in self.report_times:
            self.report_times[report.applied_hash] = (began, time.monotonic())


class BenchAgent(Agent):
    """The real agent; notes when it took each state from a director, before the agent's own clock reading
    of the take, from which its delivery window runs (so two takes noted are never closer than it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taken: list[tuple[float, str]] = []

    async def _take(self, fetched: DesiredState) -> None:
        self.taken.append((time.monotonic(), fetched.hash))
        await super()._take(fetched)


@dataclass
class SimAgent:
    agent: BenchAgent
    client: BenchClient
    target: BenchTarget
    first_url: str
    task: asyncio.Task[None] | None = None


# --- etcd watchers ------------------------------------------------------------------------------------------


@dataclass
class Watcher:
    client: httpx.AsyncClient
    received: dict[int, float]
    created: asyncio.Event
    task: asyncio.Task[None] | None = None


async def _watch(url: str, key_b64: str, watcher: Watcher) -> None:
    """One watch stream on etcd's HTTP gateway: newline-delimited JSON; every event's value is decoded."""
    body = {"create_request": {"key": key_b64}}
    async with watcher.client.stream("POST", f"{url}/v3/watch", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            result = json.loads(line).get("result", {})
            if result.get("created"):
                watcher.created.set()
            for event in result.get("events", []):
                kv = event["kv"]
                json.loads(base64.b64decode(kv.get("value", "")) or b"null")
                watcher.received.setdefault(int(kv["mod_revision"]), time.monotonic())


# --- agent pods of provisioned clusters ---------------------------------------------------------------------

SHOOTS_PATH = "/apis/core.gardener.cloud/v1beta1/namespaces/{namespace}/shoots"
AGENT_SECRET_PATH = "/api/v1/namespaces/rrm-system/secrets/rrm-agent-{name}"
PAIR_AT_ONCE = 16
SECRET_POLL_SECONDS = (0.25, 2.0)  # first and longest wait between two looks for the agent's Secret
ENVIRONMENT_ANNOTATION = "rrm.io/environment"  # on each Shoot (rrm.server.provisioning.backends.gardener)


class ProvisionedAgents:
    """The agent pods of Shoots the control plane provisions: for each Shoot of one of our environments
    (named by the annotation the control plane puts on it, so no answer to the request needs to come first)
    that a watch on the Gardener stand-in shows up (an advertised address), the Shoot's admin kubeconfig,
    then the agent's Secret there (polled until the control plane installed it), pairing with its token,
    and the agent."""

    def __init__(
        self,
        garden: dict[str, str],
        environments: dict[str, tuple[str, str]],
        worker: Worker,
        wait_seconds: float,
        heartbeat_interval: float,
    ) -> None:
        self.garden, self.environments, self.worker = garden, environments, worker
        self.intervals = (wait_seconds, heartbeat_interval)
        self.started: set[str] = set()  # environments whose Shoot is up
        self.secrets_read = self.paired = self.retries = 0
        self.errors: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.gate = asyncio.Semaphore(PAIR_AT_ONCE)

    def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.garden['token']}"}
        transport = httpx.AsyncHTTPTransport(verify=_TLS)
        self.http = httpx.AsyncClient(headers=headers, transport=transport, timeout=60)
        self.shoot_http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(verify=_TLS), timeout=60)
        self._spawn(self._watch())

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _watch(self) -> None:
        url = self.garden["url"] + SHOOTS_PATH.format(namespace=self.garden["namespace"])
        version: str | None = None
        while True:
            params = {"watch": "true", **({"resourceVersion": version} if version else {})}
            try:
                async with self.http.stream("GET", url, params=params, timeout=None) as response:
                    if response.status_code != 200:
                        version = None
                        await asyncio.sleep(0.5)
                        continue
                    async for line in response.aiter_lines():
                        version = self._seen(json.loads(line)) if line.strip() else version
            except httpx.HTTPError:
                await asyncio.sleep(0.5)

    def _seen(self, event: dict[str, Any]) -> str | None:
        """A watch event; the resource version to resume from (None after an ERROR: list again)."""
        shoot = event.get("object") or {}
        if event.get("type") == "ERROR":
            return None
        metadata = shoot["metadata"]
        name = (metadata.get("annotations") or {}).get(ENVIRONMENT_ANNOTATION, "")
        up = (shoot.get("status") or {}).get("advertisedAddresses")
        if up and name in self.environments and name not in self.started:
            self.started.add(name)
            self._spawn(self._pod(name, metadata["name"]))
        return str(metadata["resourceVersion"])

    async def _pod(self, name: str, shoot: str) -> None:
        state_dir, cache_dir = self.environments[name]
        try:
            server, token = await self._retrying(lambda: self._admin_kubeconfig(shoot))
            secret = await self._retrying(lambda: self._secret(server, token, name))
            self.secrets_read += 1
            url = secret["RRM_DIRECTOR_URL"]
            async with self.gate:
                client = DirectorClient([url], transport=PlainHTTPTransport())
                try:
                    identity = await self._retrying(
                        lambda: AgentIdentity.pair(
                            Path(state_dir), client, secret["RRM_PAIRING_TOKEN"], [url]
                        )
                    )
                finally:
                    await client.close()
            self.paired += 1
            sim = self.worker._agent(identity, [url], cache_dir, *self.intervals)
            sim.task = asyncio.create_task(sim.agent.run())
            self.worker.agents.append(sim)
        except Exception as exc:
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

    async def _retrying(self, work: Callable[[], Awaitable[T]]) -> T:
        """`work` again after a connection error, with the agent's backoff, as the agent pod would have it:
        the kubelet reads the Secret again, and `rrm agent` pairs again while no director answers (only a
        rejected token is final). One read error must not fail an environment the real agent brings up."""
        backoff = Backoff()
        while True:
            try:
                return await work()
            except Unauthorized:
                raise
            except (httpx.TransportError, DirectorError):
                self.retries += 1
            await asyncio.sleep(backoff.next_delay())

    async def _admin_kubeconfig(self, shoot: str) -> tuple[str, str]:
        """The Shoot's API server and bearer token, from `shoots/{name}/adminkubeconfig`."""
        url = (
            self.garden["url"]
            + SHOOTS_PATH.format(namespace=self.garden["namespace"])
            + f"/{shoot}/adminkubeconfig"
        )
        body = {"apiVersion": "authentication.gardener.cloud/v1alpha1", "kind": "AdminKubeconfigRequest"}
        while True:
            answer = await self.http.post(url, json={**body, "spec": {"expirationSeconds": 3600}})
            if answer.status_code != 422:
                break
            await asyncio.sleep(1.0)  # no advertised address yet
        answer.raise_for_status()
        kubeconfig = yaml.safe_load(base64.b64decode(answer.json()["status"]["kubeconfig"]))
        return kubeconfig["clusters"][0]["cluster"]["server"], kubeconfig["users"][0]["user"]["token"]

    async def _secret(self, server: str, token: str, name: str) -> dict[str, str]:
        """The agent's Secret in the Shoot, once the control plane has installed it."""
        wait, longest = SECRET_POLL_SECONDS
        headers = {"Authorization": f"Bearer {token}"}
        while True:
            answer = await self.shoot_http.get(server + AGENT_SECRET_PATH.format(name=name), headers=headers)
            if answer.status_code != 404:
                break
            await asyncio.sleep(wait)
            wait = min(longest, wait * 2)
        answer.raise_for_status()
        secret = answer.json()
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        return {**data, **(secret.get("stringData") or {})}

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in ("http", "shoot_http"):
            if hasattr(self, client):
                await getattr(self, client).aclose()


# --- one worker process -------------------------------------------------------------------------------------


class Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.agents: list[SimAgent] = []
        self.provisioned = ProvisionedAgents({}, {}, self, 0, 0)
        self.failures = Failures()
        self.watchers: list[Watcher] = []
        self.done = asyncio.Event()

    async def handle(self, command: str, kwargs: dict[str, Any]) -> Any:
        handler: Callable[..., Any] = getattr(self, f"cmd_{command}")
        return await handler(**kwargs)

    # agents

    async def cmd_pair(self, url: str, specs: list[tuple[str, str, str, int]], concurrency: int) -> float:
        """Pair each (name, pairing token, state dir, index) with the real `AgentIdentity.pair`."""
        started = time.monotonic()
        gate = asyncio.Semaphore(concurrency)
        client = DirectorClient([url], transport=httpx.AsyncHTTPTransport(verify=_TLS))

        async def pair(name: str, token: str, state_dir: str) -> None:
            async with gate:
                for attempt in range(10):
                    try:
                        await AgentIdentity.pair(Path(state_dir), client, token, [url])
                        return
                    except DirectorUnavailable:
                        if attempt == 9:
                            raise
                        await asyncio.sleep(0.5 * (attempt + 1))

        try:
            await asyncio.gather(*(pair(name, token, state_dir) for name, token, state_dir, _ in specs))
        finally:
            await client.close()
        return time.monotonic() - started

    async def cmd_start(
        self,
        urls: list[str],
        specs: list[tuple[str, str, str, int]],
        wait_seconds: float,
        heartbeat_interval: float,
        ramp_seconds: float,
        spread_urls: bool = False,
    ) -> int:
        """Start an agent for each (name, state dir, cache dir, index), spread over `ramp_seconds`. With
        `spread_urls`, the agents take turns at which of `urls` they try first (the k-th of this worker's
        from `urls[k % len(urls)]` on, round the list), so every worker runs as many agents on each."""
        for position, (_, state_dir, cache_dir, _index) in enumerate(specs):
            identity = AgentIdentity.load(Path(state_dir))
            assert identity is not None, f"{state_dir} holds no identity"
            shift = position % len(urls) if spread_urls else 0
            sim = self._agent(
                identity, urls[shift:] + urls[:shift], cache_dir, wait_seconds, heartbeat_interval
            )
            delay = ramp_seconds * position / max(1, len(specs))
            sim.task = asyncio.create_task(_run_after(delay, sim.agent))
            self.agents.append(sim)
        return len(self.agents)

    def _agent(
        self,
        identity: AgentIdentity,
        directors: list[str],
        cache_dir: str,
        wait_seconds: float,
        heartbeat_interval: float,
    ) -> SimAgent:
        """A simulated agent with this identity, not yet running."""
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # the transport DirectorClient makes itself for plain-HTTP directors
        transport = PlainHTTPTransport(_keepalive_expiry())
        client = BenchClient(directors, self.failures, bearer=identity.bearer_token, transport=transport)
        target = BenchTarget()
        agent = BenchAgent(
            client,
            target,
            DesiredStateCache(Path(cache_dir)),
            identity,
            wait_seconds=wait_seconds,
            heartbeat_interval=heartbeat_interval,
        )
        return SimAgent(agent, client, target, client.active_url)

    # agents of provisioned clusters (benchmarks/provisioning.py)

    async def cmd_provisioned(
        self,
        garden: dict[str, str],
        specs: list[tuple[str, str, str]],
        wait_seconds: float,
        heartbeat_interval: float,
    ) -> int:
        """Play the agent pod of each (environment, state dir, cache dir): once its Shoot is up (a watch on
        the Gardener stand-in's Shoots), read the agent's Secret in the Shoot with its admin kubeconfig, pair
        with its token and run the agent it names."""
        environments = {name: (state_dir, cache_dir) for name, state_dir, cache_dir in specs}
        self.provisioned = ProvisionedAgents(garden, environments, self, wait_seconds, heartbeat_interval)
        self.provisioned.start()
        return len(environments)

    async def cmd_provisioned_progress(self) -> dict[str, int]:
        p = self.provisioned
        return {
            "clusters_up": len(p.started),
            "secrets_read": p.secrets_read,
            "paired": p.paired,
            "reported": sum(1 for a in self.agents if a.client.reported_hash is not None),
            "agent_failures": len(p.errors),
            "agent_retries": p.retries,
        }

    async def cmd_provisioned_errors(self) -> list[str]:
        return list(self.provisioned.errors)

    async def cmd_provisioned_stop(self) -> None:
        await self.provisioned.stop()

    async def cmd_progress(self, hash: str) -> dict[str, int]:
        return {
            "agents": len(self.agents),
            "applied": sum(1 for a in self.agents if hash in a.target.applied),
            "reported": sum(1 for a in self.agents if a.client.reported_hash == hash),
            "running": sum(1 for a in self.agents if a.task is not None and not a.task.done()),
        }

    async def cmd_applied_times(self, hash: str) -> list[float | None]:
        return [a.target.applied.get(hash) for a in self.agents]

    async def cmd_applied_by_director(self, hash: str) -> list[tuple[str, str, float | None]]:
        """Per agent: the director it started with, the one it talks to now, when it applied `hash`."""
        return [(a.first_url, a.client.active_url, a.target.applied.get(hash)) for a in self.agents]

    async def cmd_received(self, since: float) -> list[list[float]]:
        """Per agent, when it received a new desired state (a 200, or a state frame) after `since`."""
        return [[t for t, _ in a.client.received if t >= since] for a in self.agents]

    async def cmd_taken(self, since: float) -> list[list[float]]:
        """Per agent, when it took a state to apply after `since` (of those received, the ones not
        superseded before their turn)."""
        return [[t for t, _ in a.agent.taken if t >= since] for a in self.agents]

    async def cmd_stages(self, hash: str) -> list[tuple[float, float, float, float, float] | None]:
        """Per agent that reported `hash`: when it received it, took it, applied it, and when its first report
        of it began and was answered."""
        stages: list[tuple[float, float, float, float, float] | None] = []
        for a in self.agents:
            received = next((t for t, h in a.client.received if h == hash), None)
            taken = next((t for t, h in a.agent.taken if h == hash), None)
            applied, sent = a.target.applied.get(hash), a.client.report_times.get(hash)
            if received is None or taken is None or applied is None or sent is None:
                stages.append(None)
            else:
                stages.append((received, taken, applied, *sent))
        return stages

    async def cmd_payload(self) -> str | None:
        """The desired-state body the first agent holds, serialized as the control plane does."""
        for a in self.agents:
            if a.agent.state is not None:
                return dumps(a.agent.state).decode()
        return None

    async def cmd_failures(self, reset: bool = False) -> dict[str, int]:
        counts = dict(self.failures)
        if reset:
            self.failures.clear()
        return counts

    async def cmd_stop_agents(self) -> int:
        for a in self.agents:
            if a.task is not None:
                a.task.cancel()
        await asyncio.gather(*(a.task for a in self.agents if a.task is not None), return_exceptions=True)
        await asyncio.gather(*(a.client.close() for a in self.agents), return_exceptions=True)
        stopped, self.agents = len(self.agents), []
        self.failures.clear()
        return stopped

    # etcd

    async def cmd_etcd_watch(self, url: str, key_b64: str, count: int) -> int:
        for _ in range(count):
            transport = httpx.AsyncHTTPTransport(verify=_TLS)
            client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(None, connect=30))
            watcher = Watcher(client, {}, asyncio.Event())
            watcher.task = asyncio.create_task(_watch(url, key_b64, watcher))
            self.watchers.append(watcher)
        return len(self.watchers)

    async def cmd_etcd_progress(self, revision: int) -> dict[str, int]:
        return {
            "watchers": len(self.watchers),
            "created": sum(1 for w in self.watchers if w.created.is_set()),
            "received": sum(1 for w in self.watchers if revision in w.received),
            "failed": sum(1 for w in self.watchers if w.task is not None and w.task.done()),
        }

    async def cmd_etcd_times(self, revision: int) -> list[float | None]:
        return [w.received.get(revision) for w in self.watchers]

    async def cmd_etcd_stop(self) -> int:
        for w in self.watchers:
            if w.task is not None:
                w.task.cancel()
        await asyncio.gather(*(w.task for w in self.watchers if w.task is not None), return_exceptions=True)
        await asyncio.gather(*(w.client.aclose() for w in self.watchers), return_exceptions=True)
        stopped, self.watchers = len(self.watchers), []
        return stopped

    async def cmd_exit(self) -> None:
        await self.provisioned.stop()
        await self.cmd_stop_agents()
        await self.cmd_etcd_stop()
        self.done.set()

    async def serve(self, conn: Connection) -> None:
        """Commands arrive on the pipe (read by a thread) and run on this loop, one at a time."""
        loop = asyncio.get_running_loop()

        def read_commands() -> None:
            while True:
                try:
                    command, kwargs = conn.recv()
                except (EOFError, OSError):
                    command, kwargs = "exit", {}
                future = asyncio.run_coroutine_threadsafe(self.handle(command, kwargs), loop)
                try:
                    reply: tuple[str, Any] = ("ok", future.result())
                except Exception:
                    reply = ("error", traceback.format_exc())
                with contextlib.suppress(OSError, ValueError):
                    conn.send(reply)
                if command == "exit":
                    return

        threading.Thread(target=read_commands, daemon=True).start()
        await self.done.wait()


def _keepalive_expiry() -> float:
    """The keep-alive expiry `DirectorClient` sets on its own transport (a transport passed in replaces
    it); `RRM_BENCH_AGENT_KEEPALIVE` (seconds) is an experiment knob for it."""
    expiry = os.environ.get("RRM_BENCH_AGENT_KEEPALIVE")
    return float(expiry) if expiry else rrm.agent.client.KEEPALIVE_SECONDS


async def _run_after(delay: float, agent: Agent) -> None:
    await asyncio.sleep(delay)
    await agent.run()


def worker_main(conn: Connection, index: int, log_path: str, worker_class: type[Worker] = Worker) -> None:
    raise_open_files()
    # A real agent has its process to itself; here thousands share one event loop, whose lag would count
    # against the agent's 5 s connect timeout and turn a busy moment into a storm of retries.
    rrm.agent.client.CONNECT_TIMEOUT_SECONDS = CONNECT_TIMEOUT_SECONDS
    # The same lag would count against the watch stream's 10 s for its first frame: the agents would take
    # their own event loop's lag for a proxy that buffers streams and fall back to the long-poll.
    rrm.agent.loop.FIRST_FRAME_SECONDS = CONNECT_TIMEOUT_SECONDS
    # Each agent hands its applies and the sidecar's questions to threads; alone in its process it finds the
    # GIL free, here a thread waits for the busy event loop of thousands of other agents to give it up,
    # after up to the 5 ms switch interval, for each such job in turn.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    logging.basicConfig(
        filename=log_path, level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    worker = worker_class(index)
    try:
        import uvloop

        uvloop.run(worker.serve(conn))
    except ImportError:
        asyncio.run(worker.serve(conn))


# --- the coordinator's side ---------------------------------------------------------------------------------


class WorkerPool:
    """`count` worker processes; `call` sends one command to each and returns their answers in order.
    `worker_class` (a `Worker` with more commands) serves them."""

    def __init__(self, count: int, log_dir: Path, worker_class: type[Worker] = Worker) -> None:
        context = multiprocessing.get_context("spawn")
        log_dir.mkdir(parents=True, exist_ok=True)
        self.connections: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for index in range(count):
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(child, index, str(log_dir / f"worker-{index}.log"), worker_class),
                daemon=True,
            )
            process.start()
            self.connections.append(parent)
            self.processes.append(process)

    @property
    def size(self) -> int:
        return len(self.connections)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def call(
        self, command: str, per_worker: list[dict[str, Any]], timeout: float = COMMAND_TIMEOUT
    ) -> list[Any]:
        for connection, kwargs in zip(self.connections, per_worker, strict=True):
            connection.send((command, kwargs))
        replies = []
        for connection, process in zip(self.connections, self.processes, strict=True):
            deadline = time.monotonic() + timeout
            while not connection.poll(0.5):
                if not process.is_alive():
                    raise RuntimeError(f"worker {process.name} died (exit code {process.exitcode})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {process.name} did not answer {command!r}")
            status, value = connection.recv()
            if status != "ok":
                raise RuntimeError(f"worker {process.name} failed {command!r}:\n{value}")
            replies.append(value)
        return replies

    def broadcast(self, command: str, *, timeout: float = COMMAND_TIMEOUT, **kwargs: Any) -> list[Any]:
        return self.call(command, [kwargs] * self.size, timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.broadcast("exit", timeout=60)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(10)
