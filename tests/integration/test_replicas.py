"""Several `rrm server` replicas on one PostgreSQL database, as real processes: wake-ups across replicas,
single-use pairing tokens under races, concurrent writes, singleton hand-over and kill -9 during writes."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from rrm.wire import agent_auth

from .databases import database_for, fresh_postgres_database
from .harness import (
    AgentProcess,
    ServerProcess,
    apply,
    components_on_disk,
    expect_status,
    http_binding,
    metadata_value,
    register,
    wait_until,
)

pytestmark = pytest.mark.integration


class Replicas:
    """N servers on one database; the first creates the admin token and encryption key, the others share
    them (on Kubernetes they come from one Secret)."""

    def __init__(self, workdir: Path, database_url: str | None, count: int) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.servers: list[ServerProcess] = []
        for index in range(count):
            self.add(index)

    def add(self, index: int) -> ServerProcess:
        data_dir = self.workdir / f"replica-{index}"
        if self.servers:
            data_dir.mkdir(parents=True, exist_ok=True)
            for name in ("admin-token", "secret-key"):
                shutil.copy(self.servers[0].data_dir / name, data_dir / name)
        server = ServerProcess(
            data_dir, self.workdir / f"replica-{index}.log", database_url=self.database_url
        )
        server.start()
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def two_replicas(tmp_path: Path, postgres_url: str) -> Iterator[Replicas]:
    replicas = Replicas(tmp_path, postgres_url, 2)
    try:
        yield replicas
    finally:
        replicas.close()


def _agent(tmp_path: Path, name: str, directors: list[str], token: str) -> AgentProcess:
    agent = AgentProcess(
        name,
        directors[0],
        tmp_path / name / "state",
        tmp_path / name / "components",
        tmp_path / f"{name}.log",
    )
    agent.extra_directors = directors[1:]
    agent.start(token)
    return agent


def _pair(url: str, token: str) -> httpx.Response:
    key = agent_auth.generate_private_key()
    return httpx.post(
        f"{url}/agent/v1/pair",
        json={"token": token, "public_key": agent_auth.public_key_pem(key)},
        timeout=30,
    )


def _leader(server: ServerProcess) -> bool:
    metrics = server.admin.get("/metrics").text
    return "rrm_leader 1.0" in metrics


def test_change_through_one_replica_wakes_long_polls_held_on_another(
    two_replicas: Replicas, tmp_path: Path
) -> None:
    a, b = two_replicas.servers
    token = register(a.admin, "rep-wake", labels={"t-rep": "wake"})
    agent = _agent(tmp_path, "rep-wake", [b.url], token)
    try:
        apply(a.admin, [http_binding("rep-wake-web", "t-rep=wake", "http://one.invalid/")])
        wait_until(
            lambda: (
                metadata_value(components_on_disk(agent.resources_path).get("rep-wake-web", {}), "url")
                == "http://one.invalid/"
            ),
            message=lambda: f"agent on replica B never got the change made on A:\n{agent.tail()}",
        )
        # The listener's connection dies: the periodic check still brings the change over, and the
        # listener reconnects.
        with psycopg.connect(two_replicas.database_url, autocommit=True) as connection:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'rrm-change-listener'"
            )
        apply(a.admin, [http_binding("rep-wake-web", "t-rep=wake", "http://two.invalid/")])
        wait_until(
            lambda: (
                metadata_value(components_on_disk(agent.resources_path).get("rep-wake-web", {}), "url")
                == "http://two.invalid/"
            ),
            message=lambda: f"a lost notification left the agent behind:\n{agent.tail()}\n{b.tail()}",
        )
    finally:
        agent.stop()


def test_pairing_token_is_single_use_when_two_replicas_receive_it_at_once(two_replicas: Replicas) -> None:
    a, b = two_replicas.servers
    for attempt in range(5):
        token = register(a.admin, f"rep-race-{attempt}")
        barrier = threading.Barrier(2)

        def pair_via(server: ServerProcess, token: str = token, barrier: threading.Barrier = barrier) -> int:
            barrier.wait()
            return _pair(server.url, token).status_code

        with ThreadPoolExecutor(2) as pool:
            codes = sorted(pool.map(pair_via, [a, b]))
        assert codes == [201, 401], f"attempt {attempt}: both replicas answered {codes}"


def test_concurrent_writes_to_one_component_lose_nothing(two_replicas: Replicas) -> None:
    a, b = two_replicas.servers
    urls = [f"http://v{i}.invalid/" for i in range(24)]

    def write(index: int) -> tuple[int, httpx.Response]:
        server = (a, b)[index % 2]
        doc = http_binding("rep-contended", "t-rep=contended", urls[index])
        return index, server.admin.post("/api/v1/apply", json={"documents": [doc]})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(write, range(len(urls))))
    stored = {}
    for index, response in results:
        assert response.status_code in (200, 409), response.text
        if response.status_code == 200:
            (result,) = response.json()["results"]
            stored[result["revision"]] = urls[index]
    history = expect_status(a.admin.get("/api/v1/components/rep-contended/history"), 200).json()
    revisions = [entry["revision"] for entry in history]
    assert revisions == sorted(revisions, reverse=True) and len(set(revisions)) == len(revisions)
    by_revision = {e["revision"]: metadata_value(e["manifest"], "url") for e in history}
    for revision, url in stored.items():
        assert by_revision[revision] == url, f"acknowledged revision {revision} lost or changed"
    newest = max(by_revision)
    live = expect_status(b.admin.get("/api/v1/components/rep-contended"), 200).json()
    assert live["revision"] == newest and metadata_value(live["manifest"], "url") == by_revision[newest]


def test_singleton_work_moves_to_another_replica_when_its_holder_is_killed(two_replicas: Replicas) -> None:
    wait_until(
        lambda: sum(_leader(s) for s in two_replicas.servers) == 1, message="exactly one replica should lead"
    )
    leader = next(s for s in two_replicas.servers if _leader(s))
    other = next(s for s in two_replicas.servers if s is not leader)
    leader.kill9()
    wait_until(lambda: _leader(other), message=lambda: f"no replica took over:\n{other.tail()}")
    # The new leader does the singleton work: a never-connected runtime's conditions get recorded.
    register(other.admin, "rep-after-handover")
    wait_until(
        lambda: any(
            c["last_transition"]
            for c in other.admin.get("/api/v1/runtimes/rep-after-handover").json()["conditions"]
        ),
        message="the new leader records no condition transitions",
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill9_during_a_write_burst_keeps_every_acknowledged_write(tmp_path: Path, backend: str) -> None:
    with database_for(backend) as url:
        replicas = Replicas(tmp_path, url, 2 if url else 1)
        try:
            target = replicas.servers[0]
            acknowledged: dict[int, str] = {}
            stop = threading.Event()

            def burst() -> None:
                client = httpx.Client(
                    base_url=target.url, headers={"Authorization": f"Bearer {target.admin_token}"}, timeout=10
                )
                index = 0
                while not stop.is_set():
                    value = f"http://burst-{index}.invalid/"
                    try:
                        response = client.post(
                            "/api/v1/apply",
                            json={"documents": [http_binding("rep-burst", "t-rep=burst", value)]},
                        )
                    except httpx.HTTPError:
                        return
                    if response.status_code == 200:
                        acknowledged[response.json()["results"][0]["revision"]] = value
                    index += 1

            writer = threading.Thread(target=burst)
            writer.start()
            wait_until(lambda: len(acknowledged) >= 20, message="the write burst did not get going")
            target.kill9()
            stop.set()
            writer.join(timeout=30)
            survivor = replicas.servers[-1] if url else target
            if not url:
                survivor.start()
            history = expect_status(survivor.admin.get("/api/v1/components/rep-burst/history"), 200).json()
            stored = {e["revision"]: metadata_value(e["manifest"], "url") for e in history}
            missing = {r: v for r, v in acknowledged.items() if stored.get(r) != v}
            assert not missing, f"acknowledged writes lost after kill -9: {sorted(missing)[:10]}"
        finally:
            replicas.close()


def test_agent_moves_to_another_replica_when_its_replica_dies(two_replicas: Replicas, tmp_path: Path) -> None:
    a, b = two_replicas.servers
    token = register(b.admin, "rep-failover", labels={"t-rep": "failover"})
    agent = _agent(tmp_path, "rep-failover", [a.url, b.url], token)
    try:
        apply(b.admin, [http_binding("rep-failover-web", "t-rep=failover", "http://before.invalid/")])
        wait_until(lambda: "rep-failover-web" in components_on_disk(agent.resources_path), message=agent.tail)
        a.kill9()
        apply(b.admin, [http_binding("rep-failover-web", "t-rep=failover", "http://after.invalid/")])
        wait_until(
            lambda: (
                metadata_value(components_on_disk(agent.resources_path).get("rep-failover-web", {}), "url")
                == "http://after.invalid/"
            ),
            message=lambda: f"the agent did not move to the live replica:\n{agent.tail()}",
        )
        wait_until(
            lambda: (
                next(
                    c
                    for c in b.admin.get("/api/v1/runtimes/rep-failover").json()["conditions"]
                    if c["type"] == "Synced"
                )["status"]
                == "True"
            ),
            message="the runtime is not Synced through the surviving replica",
        )
    finally:
        agent.stop()


def test_admin_token_created_through_one_replica_works_on_another(two_replicas: Replicas) -> None:
    a, b = two_replicas.servers
    created = expect_status(a.admin.post("/api/v1/tokens", json={"role": "viewer"}), 201).json()
    viewer = {"Authorization": f"Bearer {created['token']}"}
    assert httpx.get(f"{b.url}/api/v1/runtimes", headers=viewer, timeout=10).status_code == 200
    refused = httpx.post(f"{b.url}/api/v1/runtimes", headers=viewer, json={"name": "x", "kind": "selfhosted"})
    assert refused.status_code == 403
