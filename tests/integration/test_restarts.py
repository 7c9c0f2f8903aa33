"""Crashes and outages: the agent never deletes on uncertainty, never leaves a partial or duplicate file."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import (
    AgentProcess,
    Fleet,
    ServerProcess,
    apply,
    assert_resources_consistent,
    condition_true,
    holds_for,
    http_binding,
    metadata_value,
    runtime,
    secret,
    secrets_file_of,
    synced,
)

pytestmark = pytest.mark.integration


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_agent_keeps_its_files_while_the_control_plane_is_down_then_resyncs(
    fleet: Fleet, own_server: ServerProcess
) -> None:
    agent = fleet.agent("cp-down", {"t-cp": "yes"})
    apply(own_server.admin, [http_binding("cp-web", "t-cp=yes", "http://before.invalid/")])
    fleet.wait_files(
        agent, lambda c: metadata_value(c.get("cp-web", {}), "url") == "http://before.invalid/", "delivered"
    )
    fleet.wait_runtime("cp-down", synced, "Synced before the outage")
    before = snapshot(agent.resources_path)
    admin_token = own_server.admin_token

    code = own_server.stop()
    assert code != -signal.SIGKILL, fleet.explain("the server did not stop within 20 s of SIGTERM")
    holds_for(
        lambda: agent.running and snapshot(agent.resources_path) == before,
        4,
        lambda: fleet.explain("the agent changed its files (or died) while the control plane was down"),
    )
    agent.kill9()
    agent.start()  # restarted while the control plane is still away: serves what it applied
    holds_for(
        lambda: agent.running and snapshot(agent.resources_path) == before,
        3,
        lambda: fleet.explain("an agent restarted during the outage changed its files (or died)"),
    )

    own_server.start()
    assert own_server.admin_token == admin_token
    apply(own_server.admin, [http_binding("cp-web", "t-cp=yes", "http://after.invalid/")])
    fleet.wait_files(
        agent,
        lambda c: metadata_value(c.get("cp-web", {}), "url") == "http://after.invalid/",
        "a change applied after the restart arrives",
    )
    fleet.wait_runtime("cp-down", lambda d: condition_true(d, "Connected") and synced(d), "Connected, Synced")


BURST_NAMES = [f"kill-web-{i}" for i in range(4)]
SECRET_USER = "kill-secret-user"


def burst_documents(round_no: int, step: int) -> list[dict[str, Any]]:
    value = f"r{round_no}-s{step}"
    docs = [http_binding(n, "t-kill=yes", f"http://{value}.invalid/") for n in BURST_NAMES]
    docs.append(secret("kill-secret", {"token": value}))
    docs.append(
        http_binding(
            SECRET_USER, "t-kill=yes", f"http://{value}.invalid/", token_ref=("kill-secret", "token")
        )
    )
    return docs


def workloads(on_disk: dict[str, dict[str, Any]]) -> set[str]:
    """The components on disk other than the secret stores rrm adds."""
    return {n for n, m in on_disk.items() if m["spec"].get("type") != "secretstores.local.file"}


def assert_daprd_would_accept(agent: AgentProcess) -> dict[str, dict[str, Any]]:
    """The invariants at any instant: parseable files, no name twice, no dangling store or secrets file."""
    on_disk = assert_resources_consistent(agent.resources_path)
    for name, manifest in on_disk.items():
        store = (manifest.get("auth") or {}).get("secretStore")
        if store is not None:
            assert store in on_disk, f"{name} names secret store {store}, which is not on disk"
            assert secrets_file_of(on_disk[store]).is_file(), f"{store}'s secrets file is missing"
    return on_disk


def round_arriving(round_no: int) -> Callable[[dict[str, dict[str, Any]]], bool]:
    def arriving(on_disk: dict[str, dict[str, Any]]) -> bool:
        urls = [str(metadata_value(on_disk.get(n, {}), "url")) for n in BURST_NAMES]
        return any(url.startswith(f"http://r{round_no}-") for url in urls)

    return arriving


def test_agent_killed_during_a_burst_leaves_no_partial_or_duplicate_file(
    fleet: Fleet, admin: httpx.Client
) -> None:
    agent = fleet.agent("kill-1", {"t-kill": "yes"})
    apply(admin, burst_documents(0, 0))
    expected = {*BURST_NAMES, SECRET_USER}
    fleet.wait_files(agent, lambda c: expected <= set(c), "the first round delivered")
    agent.kill9()  # once at rest, then during bursts
    assert_daprd_would_accept(agent)
    agent.start()

    steps = 12
    for round_no in range(1, 5):
        failures: list[BaseException] = []

        def burst(round_no: int = round_no, failures: list[BaseException] = failures) -> None:
            try:
                for step in range(steps):
                    apply(admin, burst_documents(round_no, step))
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=burst)
        thread.start()
        fleet.wait_files(agent, round_arriving(round_no), f"round {round_no} starts arriving")
        agent.kill9()
        on_disk = assert_daprd_would_accept(agent)
        assert workloads(on_disk) <= expected, f"unexpected components after kill -9: {sorted(on_disk)}"
        agent.start()
        thread.join(60)
        assert not thread.is_alive() and not failures, f"the burst of applies failed: {failures}"

    final = f"http://r4-s{steps - 1}.invalid/"
    fleet.wait_files(
        agent,
        lambda c: all(metadata_value(c.get(n, {}), "url") == final for n in expected),
        "the last update reaches every component",
    )
    detail = fleet.wait_runtime("kill-1", synced, "Synced after the crashes")
    on_disk = assert_daprd_would_accept(agent)
    assert workloads(on_disk) == expected
    assert sorted(c["name"] for c in detail["desired_components"]) == sorted(expected)
    assert runtime(admin, "kill-1")["applied_hash"] == detail["desired_hash"]
