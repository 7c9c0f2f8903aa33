"""The agent tells the truth: a hash is reported applied only when nothing outside it is left on disk, and
Ready means the sidecar loaded what was applied, reported within a second of it doing so.

Real `rrm server`, `rrm agent` and daprd stand-in processes at their default timings, observed through the
admin API, the resources directory and the stand-in's own log.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    AgentProcess,
    FakeDaprd,
    Fleet,
    apply,
    component,
    condition,
    condition_true,
    expect_status,
    http_binding,
    parse_time,
    register,
    relabel,
    runtime,
    secret,
    synced,
)

pytestmark = pytest.mark.integration

STAYING = 150
MOVING = 150
ROUNDS = 5
LONG_POLL_WAIT = 60.0  # the old agent pruned only after the first 304, i.e. after this
CONVERGED_WITHIN = 20.0


class AgentWithOptions(AgentProcess):
    """`rrm agent` with further options (such as `--load-deadline`) after the harness's own."""

    def __init__(self, *args: Any, extra: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra = extra

    def _launch(self, args: list[str], env: Any = None) -> None:
        super()._launch([*args, *self.extra], env)


def started_agent(fleet: Fleet, name: str, labels: dict[str, str], extra: list[str], **options: Any) -> Any:
    token = register(fleet.server.admin, name, labels=labels)
    base = fleet.workdir / name
    agent = AgentWithOptions(
        name, fleet.server.url, base / "state", base / "resources", base / "agent.log", extra=extra, **options
    )
    fleet.processes.append(agent)
    agent.start(token)
    return agent


# --- issue 12 item 1: kill -9 while deleting ---------------------------------------------------------------


def rrm_names(directory: Path) -> set[str]:
    return {entry.name for entry in os.scandir(directory) if entry.name.startswith("rrm-")}


def secrets_files(agent: AgentProcess) -> set[str]:
    secrets = agent.state_dir / "secrets"
    return {p.name for p in secrets.glob("secrets-*.json")} if secrets.is_dir() else set()


def kill_while_deleting(agent: AgentProcess, full: int, removed: int) -> int:
    """Kill the agent -9 once it has removed `removed` of the `full` files (or more: it does not wait for
    us); returns how many were left."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(rrm_names(agent.resources_path)) <= full - removed:
            agent.kill9()
            return len(rrm_names(agent.resources_path))
    raise AssertionError(f"{agent.name} did not delete {removed} file(s) within 60 s")


def synced_to(state_hash: str) -> Callable[[dict[str, Any]], bool]:
    return lambda detail: synced(detail) and detail["applied_hash"] == state_hash


def desired_other_than(state_hash: str) -> Callable[[dict[str, Any]], bool]:
    return lambda detail: bool(detail["desired_hash"] != state_hash)


def watch_restart(
    fleet: Fleet, agent: AgentProcess, new_hash: str, old: set[str], old_secrets: set[str]
) -> float:
    """From the restart until the directory holds only the staying components: the control plane must never
    show `new_hash` applied while a removed component, old secret store or secrets file is still there.
    Returns how long it took."""
    restarted = time.monotonic()
    while True:
        agent.ensure_running()
        detail = runtime(fleet.server.admin, agent.name)  # read first: a file seen after was there before
        names = rrm_names(agent.resources_path)
        removed_left = sorted(names & old)
        secrets_left = sorted(secrets_files(agent) & old_secrets)
        claims = synced(detail) and detail["applied_hash"] == new_hash
        assert not (claims and (removed_left or secrets_left)), fleet.explain(
            f"Synced for {new_hash[:12]} while {len(removed_left)} removed file(s) ({removed_left[:3]}) "
            f"and secrets files {secrets_left} remain"
        )
        took = time.monotonic() - restarted
        if not removed_left and not secrets_left and len(names) == STAYING:
            return took
        assert took < CONVERGED_WITHIN, fleet.explain(
            f"{len(removed_left)} removed file(s) and secrets files {secrets_left} still there {took:.1f} s "
            f"after the restart (the long-poll waits {LONG_POLL_WAIT:g} s)"
        )
        time.sleep(0.02)


def test_a_restarted_agent_never_reports_synced_while_removed_components_remain(fleet: Fleet) -> None:
    """Issue 12 item 1, five rounds: 300 components, a relabel moves 150 (and the only secret) away, the
    agent is killed -9 while it removes their files, and restarted without a token."""
    admin = fleet.server.admin
    name = "truth-kill"
    staying = [http_binding(f"stay-{i:03d}", "t-truth=yes", "http://stay.invalid/") for i in range(STAYING)]
    moving = [
        http_binding(f"move-{i:03d}", "t-truth=yes,keep=yes", "http://m.invalid/") for i in range(1, MOVING)
    ]
    moving.append(http_binding("move-000", "t-truth=yes,keep=yes", "http://m.invalid/", ("truth-s", "token")))
    apply(admin, [secret("truth-s", {"token": "v1"}), *staying, *moving])
    agent = fleet.agent(name, {"t-truth": "yes", "keep": "yes"}, wait=LONG_POLL_WAIT)
    full = STAYING + MOVING + 1  # and the secret store
    mid_deletion = []
    for round_no in range(1, ROUNDS + 1):
        relabel(admin, name, {"keep": "yes"})
        fleet.wait_files(agent, lambda c: len(c) == full, f"round {round_no}: all {full} components on disk")
        before = fleet.wait_runtime(name, synced, f"round {round_no}: Synced with all components")
        old = {n for n in rrm_names(agent.resources_path) if n.startswith("rrm-move-") or "secrets-" in n}
        old_secrets = secrets_files(agent)
        assert len(old) == MOVING + 1 and old_secrets, f"round {round_no}: {sorted(old)[-3:]}, {old_secrets}"

        relabel(admin, name, remove=["keep"])
        changed = desired_other_than(before["desired_hash"])
        new_hash = fleet.wait_runtime(name, changed, "the relabel changes the state")["desired_hash"]
        left = kill_while_deleting(agent, full, removed=1 + 30 * (round_no - 1))
        mid_deletion.append(STAYING < left < full)
        agent.start()
        took = watch_restart(fleet, agent, new_hash, old, old_secrets)
        print(
            f"round {round_no}: killed with {left - STAYING} to remove; converged {took:.2f} s after restart"
        )
        fleet.wait_runtime(name, synced_to(new_hash), "Synced at last")
    assert any(mid_deletion), f"no round killed the agent while it was deleting: {mid_deletion}"


# --- issue 13 item 1: Ready follows loading -----------------------------------------------------------------

READY_AFTER_LOAD = 1.0  # seconds, the promise under test


def ready_for(detail: dict[str, Any], names: set[str]) -> bool:
    results = {r["name"]: r for r in detail.get("resources") or []}
    return condition_true(detail, "Ready") and all(results.get(n, {}).get("loaded") for n in names)


def test_ready_follows_the_sidecar_loading_within_a_second_at_the_default_heartbeat(fleet: Fleet) -> None:
    daprd = fleet.daprd("truth-ready")  # the stand-in's defaults: rescan 0.2 s, init 0.3 s per component
    agent = fleet.agent("truth-ready", {"t-ready": "yes"}, daprd=daprd)  # the agent's default heartbeat
    admin = fleet.server.admin
    seen = fleet.wait_runtime("truth-ready", synced, "Synced with nothing placed")
    steps = [  # two new components, two more, then the first two rewritten (daprd closes and re-initialises)
        ({"ready-0", "ready-1"}, "http://first.invalid/"),
        ({"ready-2", "ready-3"}, "http://first.invalid/"),
        ({"ready-0", "ready-1"}, "http://second.invalid/"),
    ]
    delays = []
    for names, url in steps:
        apply(admin, [http_binding(n, "t-ready=yes", url) for n in sorted(names)])

        def ready_now(
            detail: dict[str, Any], names: set[str] = names, before: str = seen["desired_hash"]
        ) -> bool:
            return detail["desired_hash"] != before and synced(detail) and ready_for(detail, names)

        seen = fleet.wait_runtime("truth-ready", ready_now, f"Ready with {sorted(names)} at {url}")
        # When the control plane stored the report that made it Ready (it reads conditions live from the
        # stored report), against when the stand-in logged the last of the components (re)loaded.
        stored = parse_time(seen["last_seen"])
        loaded = [daprd.loaded_at(n) for n in names]
        assert all(t is not None for t in loaded), fleet.explain(f"the stand-in never logged {names} loaded")
        delays.append(stored - max(t for t in loaded if t is not None))
    shown = [f"{d:.3f}" for d in delays]
    print(f"Ready after the sidecar loaded (s): {shown}")  # shown with pytest -rP
    assert all(0 <= d <= READY_AFTER_LOAD for d in delays), fleet.explain(
        f"Ready came {shown} s after the sidecar loaded (promise: at most {READY_AFTER_LOAD} s)"
    )
    assert agent.running


def test_a_component_the_sidecar_refuses_is_not_loaded_then_failed_at_the_load_deadline(fleet: Fleet) -> None:
    daprd = fleet.daprd("truth-refused")
    agent = started_agent(
        fleet,
        "truth-refused",
        {"t-refused": "yes"},
        ["--load-deadline", "4"],
        dapr_http_port=daprd.port,
    )
    good = component("refused-good", "t-refused=yes")
    # valid for the control plane, but daprd fails to initialise it (its secrets file does not exist);
    # with ignoreErrors it leaves it out and runs on
    missing_file = [{"name": "secretsFile", "value": "/nonexistent/rrm-test/secrets.json"}]
    odd = component("refused-odd", "t-refused=yes", type="secretstores.local.file", metadata=missing_file)
    odd["spec"]["ignoreErrors"] = True
    apply(fleet.server.admin, [good, odd])

    waiting = fleet.wait_runtime(
        "truth-refused",
        lambda d: (condition(d, "Ready") or {}).get("reason") == "Loading" and synced(d),
        "Ready=False Loading while the sidecar has not loaded everything",
    )
    assert "refused-odd" in (condition(waiting, "Ready") or {})["message"]
    failed = fleet.wait_runtime(
        "truth-refused",
        lambda d: (condition(d, "Ready") or {}).get("reason") == "NotLoaded",
        "Ready=False NotLoaded once the load deadline passed",
    )
    message = (condition(failed, "Ready") or {})["message"]
    assert "refused-odd" in message and "refused-good" not in message
    results = {r["name"]: r for r in failed["resources"]}
    assert (results["refused-odd"]["state"], results["refused-odd"]["loaded"]) == ("failed", False)
    assert "load deadline (4 s)" in results["refused-odd"]["message"]
    assert (results["refused-good"]["state"], results["refused-good"]["loaded"]) == ("applied", True)
    assert "refused-odd" in daprd.init_errors()
    assert agent.running


def test_a_sidecar_that_restarts_and_drops_a_component_is_noticed_within_one_heartbeat(fleet: Fleet) -> None:
    """A user's local-file secret store whose file went away: the restarted daprd cannot initialise it
    (`ignoreErrors` keeps daprd running) and no longer lists it."""
    daprd = fleet.daprd("truth-drop")
    heartbeat = 3.0  # the property under test is "within one heartbeat": a short one keeps the test short
    agent = started_agent(
        fleet,
        "truth-drop",
        {"t-drop": "yes"},
        ["--load-deadline", "4"],
        heartbeat_interval=heartbeat,
        dapr_http_port=daprd.port,
    )
    secrets_file = fleet.workdir / "user-secrets.json"
    secrets_file.write_text('{"k": "v"}')
    store = component(
        "drop-store",
        "t-drop=yes",
        type="secretstores.local.file",
        metadata=[{"name": "secretsFile", "value": str(secrets_file)}],
    )
    store["spec"]["ignoreErrors"] = True
    apply(fleet.server.admin, [store, component("drop-keep", "t-drop=yes")])
    names = {"drop-store", "drop-keep"}
    fleet.wait_runtime("truth-drop", lambda d: ready_for(d, names), "Ready with both loaded")

    secrets_file.unlink()
    daprd.stop()
    daprd.start()  # the same port; answers once it has initialised what it can
    back = time.monotonic()
    detail = fleet.wait_runtime(
        "truth-drop",
        lambda d: (condition(d, "Ready") or {}).get("reason") in ("Loading", "NotLoaded"),
        "Ready=False once a heartbeat finds the restarted sidecar without drop-store",
        timeout=heartbeat * 2 + 5,
    )
    noticed = time.monotonic() - back
    assert noticed <= heartbeat + 1.5, f"noticed {noticed:.1f} s after the restart (heartbeat {heartbeat} s)"
    assert "drop-store" in (condition(detail, "Ready") or {})["message"]
    assert "drop-store" in daprd.init_errors()
    failed = fleet.wait_runtime(
        "truth-drop",
        lambda d: (condition(d, "Ready") or {}).get("reason") == "NotLoaded",
        "NotLoaded once the load deadline passed",
    )
    assert "drop-keep" not in (condition(failed, "Ready") or {})["message"]

    secrets_file.write_text('{"k": "v"}')
    daprd.hangup()  # reloads from scratch, as a restart would
    fleet.wait_runtime("truth-drop", lambda d: ready_for(d, names), "Ready again within a heartbeat")
    assert agent.running


# --- after a delete the agent follows the sidecar until it unloaded the component --------------------------


def sidecar_names(detail: dict[str, Any]) -> set[str]:
    return {c["name"] for c in (detail.get("sidecar") or {}).get("components") or []}


def closed_at(daprd: FakeDaprd, component: str) -> float | None:
    """When daprd last logged closing `component` (deleted or out of scope), epoch seconds, if it did."""
    found = re.findall(
        rf'^time="([^"]+)" level=info msg="component {re.escape(component)} \([^)]*\) closed',
        daprd.tail(10**6),
        re.MULTILINE,
    )
    return parse_time(found[-1]) if found else None


def test_a_deleted_component_leaves_the_sidecar_view_within_a_second_of_daprd_unloading_it(
    fleet: Fleet,
) -> None:
    daprd = fleet.daprd("truth-unload")
    agent = fleet.agent("truth-unload", {"t-unload": "yes"}, daprd=daprd)  # the agent's default heartbeat
    admin = fleet.server.admin
    names = {"unload-keep", "unload-gone"}
    apply(admin, [http_binding(n, "t-unload=yes", "http://unload.invalid/") for n in sorted(names)])
    fleet.wait_runtime(
        "truth-unload",
        lambda d: synced(d) and ready_for(d, names) and names <= sidecar_names(d),
        "Ready with both components loaded",
    )

    expect_status(admin.delete("/api/v1/components/unload-gone"), 204)
    # a heartbeat (a minute) would come far too late: only following the sidecar gets there in time
    seen = fleet.wait_runtime(
        "truth-unload",
        lambda d: "unload-gone" not in sidecar_names(d) and "unload-keep" in sidecar_names(d),
        "the sidecar view drops the deleted component",
        timeout=15,
    )
    stored = parse_time(seen["last_seen"])  # when the control plane stored the report that dropped it
    closed = closed_at(daprd, "unload-gone")
    assert closed is not None, fleet.explain("the stand-in never logged unload-gone closed")
    print(f"the sidecar view dropped the component {stored - closed:.3f} s after daprd closed it")
    assert 0 <= stored - closed <= READY_AFTER_LOAD, fleet.explain(
        f"the report came {stored - closed:.3f} s after daprd closed it (at most {READY_AFTER_LOAD} s)"
    )
    assert condition_true(seen, "Ready") and synced(seen), fleet.explain(
        f"the report that dropped it is not Ready and Synced: {json.dumps(seen, indent=1)[:3000]}"
    )
    assert [r["name"] for r in seen["resources"]] == ["unload-keep"]
    assert agent.running
