"""7. Provisioning: environments requested all at once until every one has succeeded.

`gardener-aws`: N environments for T tenants (environment i for global account `ga-{i mod T}`) through the
admin API, against the Gardener API stand-in (tests/standins/gardener_apiserver.py, its own process) with a
zero-time reconciler and T free SecretBindings in its project. The stage `wait_for_connection` is satisfied
by simulated agents (benchmarks/workers.py, `ProvisionedAgents`), started before the first request as an
agent pod starts when its cluster does, not when the platform has its answer: each plays the agent pod of
its environment's Shoot (found by the annotation the control plane puts on it), reading the agent's Secret
in the Shoot's Kubernetes stand-in through the Shoot's admin kubeconfig, pairing with the token the control
plane put there and reporting status. Measured: the control plane's CPU time (its
processes: `rrm server` and its worker processes; the stand-in and the agents run in other processes) over
the run, per operation, and the time from the first request to the last operation's `finishedAt` (the
control plane's clock); checked: every operation succeeded, one Shoot per environment (and as many created,
by the stand-in's audit), one account per tenant (the bindings labelled with each tenant in the stand-in,
and the bindings the tenant's Shoots use).

`local`: M environments of the `local` plan at once (the control plane starts a real `rrm agent` process
for each), until every runtime shows `Connected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import REPO, ProcessSampler, ServerProcess, free_port, wait_until
from benchmarks.fleets import DEFAULT_HEARTBEAT_SECONDS, DEFAULT_WAIT_SECONDS, Bench
from benchmarks.profile import profiled

STANDIN = REPO / "tests" / "standins" / "gardener_apiserver.py"
PROJECT = "bench"
NAMESPACE = f"garden-{PROJECT}"
CORE = f"/apis/core.gardener.cloud/v1beta1/namespaces/{NAMESPACE}"
TOKEN = "bench-garden-token"
REQUESTS_AT_ONCE = 64
POLL_SECONDS = 2.0  # the end is read from finishedAt; polling less costs the control plane less
GARDENER_TARGET_SECONDS = 60.0
CPU_TARGET_MS = 50.0
LOCAL_TARGET_SECONDS = 30.0
FINISHED = ("succeeded", "failed", "canceled")
PR_SET_PDEATHSIG = 1  # prctl(2)


def gardener_deadline(size: int) -> float:
    """How long the gardener run may take before it is reported as not finished (17 minutes for 1,000: on
    a machine shared with other work the control plane may get a fraction of a core)."""
    return 120 + size * 0.9


def run(bench: Bench, size: int, tenants: int, local_size: int) -> dict[str, Any]:
    workdir = bench.workdir / f"provisioning-{size}"
    result: dict[str, Any] = {"size": size, "tenants": tenants}
    result["gardener"] = _gardener(bench, workdir / "gardener", size, tenants)
    try:
        result["local"] = _local(bench, workdir / "local", local_size)
    except Exception as exc:  # recorded, so the gardener figures are kept
        bench.log(f"provisioning: the local environments failed: {type(exc).__name__}: {exc}")
        result["local"] = {"size": local_size, "error": f"{type(exc).__name__}: {exc}"}
    return result


# --- gardener-aws ------------------------------------------------------------------------------------------


class Garden:
    """The Gardener API stand-in as its own process, zero-time reconciler."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.kubeconfig = workdir / "garden-kubeconfig.yaml"
        self.log = workdir / "gardener-apiserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)

    def start(self) -> None:
        command = [sys.executable, str(STANDIN), "--port", str(self.port), "--token", TOKEN]
        command += ["--kubeconfig", str(self.kubeconfig), "--create-seconds", "0", "--delete-seconds", "0"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the Gardener stand-in exited; see {self.log}")
            with self.http() as http:
                return http.get("/version").status_code == 200

        wait_until(up, 60, "the Gardener stand-in")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)

    def add_bindings(self, count: int) -> None:
        with self.http() as http:
            for index in range(count):
                name = f"aws-{index:04d}"
                body = {
                    "apiVersion": "core.gardener.cloud/v1beta1",
                    "kind": "SecretBinding",
                    "metadata": {"name": name, "labels": {"hyperscalerType": "aws"}},
                    "secretRef": {"name": f"{name}-credentials"},
                }
                http.post(f"{CORE}/secretbindings", json=body).raise_for_status()

    def audit(self) -> list[dict[str, Any]]:
        """Every write the stand-in took, in order."""
        with self.http() as http:
            answer = http.get("/test/audit")
            answer.raise_for_status()
            return list(answer.json())

    def items(self, plural: str) -> list[dict[str, Any]]:
        with self.http() as http:
            answer = http.get(f"{CORE}/{plural}")
            answer.raise_for_status()
            return list(answer.json()["items"])


def _die_with_parent() -> None:
    """In the stand-in's process before it runs: SIGTERM when the benchmark dies (killed by a timeout, its
    `finally` never runs), so no stand-in with 1,000 Shoot servers outlives it (Linux's PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _gardener(bench: Bench, workdir: Path, size: int, tenants: int) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    garden = Garden(workdir)
    garden.start()
    options = ["--gardener-kubeconfig", str(garden.kubeconfig), "--gardener-namespace", NAMESPACE]
    server = ServerProcess(workdir / "data", workdir / "server.log", options=options)
    try:
        garden.add_bindings(tenants)
        server.start()
        bench.log(f"provisioning: {size} gardener-aws environments for {tenants} tenants")
        return _measure_gardener(bench, server, garden, size, tenants)
    finally:
        bench.pool.broadcast("provisioned_stop")
        bench.stop_agents()
        server.stop()
        garden.stop()


def _measure_gardener(
    bench: Bench, server: ServerProcess, garden: Garden, size: int, tenants: int
) -> dict[str, Any]:
    assert server.admin is not None
    names = [f"gw-{i:04d}" for i in range(size)]
    bodies = [
        {
            "name": n,
            "plan": "gardener-aws",
            "tenant": {"globalAccount": f"ga-{i % tenants:03d}", "subaccount": n},
        }
        for i, n in enumerate(names)
    ]
    _start_agents(bench, garden, names)
    sampler = ProcessSampler(server.pid, children=True)  # rrm server --workers N: all of them
    with sampler, profiled(bench.pids(server), bench.profile_dir, f"provisioning-{size}"):
        started_wall, started = time.time(), time.monotonic()
        asyncio.run(_request_all(server, bodies))
        requested = time.monotonic() - started
        counts, finished = _wait_finished(bench, server, size, started, gardener_deadline(size))
    environments = _environments(server)
    shoots, bindings = garden.items("shoots"), garden.items("secretbindings")
    creates = sum(1 for e in garden.audit() if e["verb"] == "create" and e["resource"] == "shoots")
    result = {
        "requests_seconds": round(requested, 2),
        "operations": counts,
        "finished": finished,
        "seconds_until_last_succeeded": _last_succeeded(environments, started_wall),
        "control_plane": sampler.result(),
        "cpu_ms_per_operation": round(1000 * sampler.cpu_seconds / size, 1),
        "agents": _agent_progress(bench),
        "shoots_created": creates,
        **_checks(environments, shoots, bindings, names, tenants),
    }
    bench.log(
        f"provisioning: {counts} after {time.monotonic() - started:.1f} s; "
        f"{result['cpu_ms_per_operation']} ms of control-plane CPU per operation"
    )
    errors = [e for reply in bench.pool.broadcast("provisioned_errors") for e in reply]
    if errors:
        result["agent_errors"] = errors[:10]
    return result


async def _request_all(server: ServerProcess, bodies: list[dict[str, Any]]) -> None:
    """Every request sent at once (REQUESTS_AT_ONCE in flight); each must be accepted (202)."""
    assert server.admin is not None
    gate = asyncio.Semaphore(REQUESTS_AT_ONCE)
    headers = dict(server.admin.headers)
    limits = httpx.Limits(max_connections=REQUESTS_AT_ONCE)
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=300, limits=limits) as client:

        async def one(body: dict[str, Any]) -> None:
            async with gate:
                answer = await client.post("/api/v1/environments", json=body)
            if answer.status_code != 202:
                raise RuntimeError(f"requesting {body['name']}: {answer.status_code} {answer.text[:300]}")

        await asyncio.gather(*(one(b) for b in bodies))


def _start_agents(bench: Bench, garden: Garden, names: list[str]) -> None:
    root = bench.agents_root / "provisioning"
    specs = [(n, str(root / n / "state"), str(root / n / "cache")) for n in names]
    where = {"url": garden.url, "token": TOKEN, "namespace": NAMESPACE}
    bench.pool.call(
        "provisioned",
        [
            {
                "garden": where,
                "specs": chunk,
                "wait_seconds": DEFAULT_WAIT_SECONDS,
                "heartbeat_interval": DEFAULT_HEARTBEAT_SECONDS,
            }
            for chunk in bench.split(specs)
        ],
    )


def _count(server: ServerProcess, state: str) -> int:
    assert server.admin is not None
    answer = server.admin.get("/api/v1/environments", params={"state": state, "pageSize": 1})
    answer.raise_for_status()
    return int(answer.json()["total"])


def _wait_finished(
    bench: Bench, server: ServerProcess, size: int, started: float, deadline: float
) -> tuple[dict[str, int], bool]:
    """Poll the counts of succeeded and failed environments until all ended or the deadline passed."""
    counts: dict[str, int] = {}
    last_logged = 0.0
    while True:
        counts = {state: _count(server, state) for state in ("succeeded", "failed")}
        elapsed = time.monotonic() - started
        if sum(counts.values()) >= size:
            return counts, True
        if elapsed > deadline:
            return counts, False
        if elapsed - last_logged >= 10:
            last_logged = elapsed
            bench.log(f"provisioning: {elapsed:.0f} s: {counts}, agents {_agent_progress(bench)}")
        time.sleep(POLL_SECONDS)


def _agent_progress(bench: Bench) -> dict[str, int]:
    total: Counter[str] = Counter()
    for reply in bench.pool.broadcast("provisioned_progress"):
        total.update(reply)
    return dict(total)


def _environments(server: ServerProcess) -> list[dict[str, Any]]:
    assert server.admin is not None
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        answer = server.admin.get("/api/v1/environments", params={"page": page, "pageSize": 100})
        answer.raise_for_status()
        body = answer.json()
        found += body["items"]
        if len(found) >= body["total"] or not body["items"]:
            return found
        page += 1


def _last_succeeded(environments: list[dict[str, Any]], started_wall: float) -> float | None:
    """From the first request to the last provisioning operation's finishedAt (None unless all succeeded)."""
    ends = [e["operation"]["finishedAt"] for e in environments if e["state"] == "succeeded"]
    if not environments or len(ends) < len(environments):
        return None
    return round(max(datetime.fromisoformat(t).timestamp() for t in ends) - started_wall, 1)


def _checks(
    environments: list[dict[str, Any]],
    shoots: list[dict[str, Any]],
    bindings: list[dict[str, Any]],
    names: list[str],
    tenants: int,
) -> dict[str, Any]:
    states = Counter(e["state"] for e in environments)
    per_environment = Counter(s["metadata"]["annotations"].get("rrm.io/environment") for s in shoots)
    by_tenant: dict[str, set[str]] = {}
    for shoot in shoots:
        tenant = shoot["metadata"]["labels"].get("rrm.io/global-account", "")
        by_tenant.setdefault(tenant, set()).add(shoot["spec"]["secretBindingName"])
    labelled = Counter((b["metadata"].get("labels") or {}).get("tenantName") for b in bindings)
    labelled.pop(None, None)
    return {
        "environment_states": dict(states),
        "all_succeeded": states.get("succeeded", 0) == len(names) == len(environments),
        "shoots": len(shoots),
        "one_shoot_each": len(shoots) == len(names) and all(per_environment[n] == 1 for n in names),
        "tenants_with_bindings": len(labelled),
        "one_account_per_tenant": len(labelled) == tenants
        and all(count == 1 for count in labelled.values())
        and all(len(used) == 1 for used in by_tenant.values()),
    }


# --- local -------------------------------------------------------------------------------------------------


def _local(bench: Bench, workdir: Path, size: int) -> dict[str, Any]:
    server = ServerProcess(workdir / "data", workdir / "server.log")
    server.start()
    assert server.admin is not None
    names = [f"loc-{i:03d}" for i in range(size)]
    try:
        bench.log(f"provisioning: {size} local environments")
        started = time.monotonic()
        asyncio.run(_request_all(server, [{"name": n, "plan": "local"} for n in names]))
        connected: set[str] = set()
        deadline = started + max(120.0, 4 * LOCAL_TARGET_SECONDS)
        while len(connected) < size and time.monotonic() < deadline:
            for runtime in server.admin.get("/api/v1/runtimes").json():
                if any(c["type"] == "Connected" and c["status"] == "True" for c in runtime["conditions"]):
                    connected.add(runtime["name"])
            time.sleep(0.2)
        seconds = time.monotonic() - started
        states: Counter[str] = Counter()
        while time.monotonic() < deadline:  # Connected first; the operations see it at their next look
            states = Counter(e["state"] for e in _environments(server))
            if sum(states[s] for s in FINISHED) >= size:
                break
            time.sleep(0.5)
    finally:
        server.stop()
    all_connected = connected >= set(names)
    bench.log(f"provisioning: {len(connected)}/{size} local runtimes Connected after {seconds:.1f} s")
    return {
        "size": size,
        "connected": len(connected & set(names)),
        "all_connected": all_connected,
        "seconds_until_all_connected": round(seconds, 1) if all_connected else None,
        "environment_states": dict(states),
    }
