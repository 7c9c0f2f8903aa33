"""Progressive rollouts with real server, agent and fake daprd processes: waves, bake, failures, pause,
rollback, the operator's actions, a superseding revision and a control-plane restart.

Order is asserted from what the processes recorded (wave start times, the agents' file times), never by
sleeping: a runtime's file holds the new revision only if it was written after its wave started.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .databases import fresh_postgres_database
from .harness import (
    AgentProcess,
    Fleet,
    ServerProcess,
    apply,
    apply_refused,
    child_env,
    component,
    components_on_disk,
    expect_status,
    holds_for,
    http_binding,
    metadata_value,
    parse_time,
    register,
    secret,
    wait_until,
)

pytestmark = pytest.mark.integration

REVISION_ANNOTATION = "rrm.io/revision"


def policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "rrm.io/v1", "kind": "RolloutPolicy", "metadata": {"name": name}, "spec": spec}


def binding(
    name: str, selector: str, url: str, policy_name: str | None = None, token: str | None = None
) -> dict[str, Any]:
    manifest = http_binding(name, selector, url, (token, "token") if token else None)
    if policy_name is not None:
        manifest["metadata"]["annotations"]["rrm.io/rollout-policy"] = policy_name
    return manifest


def rollout(admin: httpx.Client, component: str) -> dict[str, Any]:
    return dict(expect_status(admin.get(f"/api/v1/rollouts/{component}"), 200).json())


def steer(admin: httpx.Client, component: str, action: str) -> dict[str, Any]:
    return dict(expect_status(admin.post(f"/api/v1/rollouts/{component}/{action}"), 200).json())


def wait_rollout(fleet: Fleet, component: str, state: str, timeout: float = 45) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> dict[str, Any]:
        seen["rollout"] = rollout(fleet.server.admin, component)
        return seen["rollout"] if seen["rollout"]["state"] == state else {}

    return fleet.wait_until(
        check, lambda: f"rollout of {component} did not become {state}: {yaml.safe_dump(seen)}", timeout
    )


def url_of(agent: AgentProcess, component: str) -> Any:
    return metadata_value(components_on_disk(agent.resources_path).get(component, {}), "url")


def revision_on_disk(agent: AgentProcess, component: str) -> str | None:
    found = components_on_disk(agent.resources_path).get(component)
    return None if found is None else found["metadata"]["annotations"].get(REVISION_ANNOTATION)


def file_time(agent: AgentProcess, component: str) -> float:
    return (agent.resources_path / f"rrm-{component}.yaml").stat().st_mtime


def wait_url(fleet: Fleet, agents: list[AgentProcess], component: str, url: str | None) -> None:
    for agent in agents:
        fleet.wait_files(
            agent, lambda c: metadata_value(c.get(component, {}), "url") == url, f"{component} {url}"
        )


def paired_later(fleet: Fleet, name: str, labels: dict[str, str]) -> tuple[AgentProcess, str]:
    """A registered runtime whose agent the test starts itself (with the returned pairing token)."""
    token = register(fleet.server.admin, name, labels=labels)
    return fleet.agent_process(name), token


def conflicting_file(agent: AgentProcess, component: str) -> None:
    """A component of the same name that someone else put there: the agent reports ours failed."""
    agent.resources_path.mkdir(parents=True, exist_ok=True)
    foreign = http_binding(component, "", "http://foreign.invalid/")
    (agent.resources_path / f"{component}.yaml").write_text(yaml.safe_dump(foreign))


def events_of(admin: httpx.Client, component: str) -> list[dict[str, Any]]:
    answer = expect_status(admin.get("/api/v1/events", params={"subject": f"component/{component}"}), 200)
    return list(answer.json())


def test_waves_start_only_after_the_previous_wave_is_ready_and_baked(fleet: Fleet) -> None:
    admin = fleet.server.admin
    labels = {"ro-wave": "yes"}
    canary = fleet.agent("ro-wave-c", {**labels, "canary": "true"}, daprd=fleet.daprd("ro-wave-c"))
    first = fleet.agent("ro-wave-a", labels, daprd=fleet.daprd("ro-wave-a"))
    second = fleet.agent("ro-wave-b", labels, daprd=fleet.daprd("ro-wave-b"))
    agents = [canary, first, second]
    apply(admin, [binding("ro-wave-web", "ro-wave=yes", "http://v1.invalid/")])
    wait_url(fleet, agents, "ro-wave-web", "http://v1.invalid/")

    bake = 2.0
    spec = {"groups": [{"name": "canary", "selector": "canary=true"}], "maxConcurrency": 1}
    apply(
        admin,
        [
            policy("ro-wave-policy", **spec, minSuccessTime="2s", progressDeadline="30s"),
            binding("ro-wave-web", "ro-wave=yes", "http://v2.invalid/", "ro-wave-policy"),
        ],
    )
    started = rollout(admin, "ro-wave-web")
    assert (started["from_revision"], started["to_revision"]) == (1, 2)
    assert [[r["name"] for r in w["runtimes"]] for w in started["waves"]] == [
        ["ro-wave-c"],
        ["ro-wave-a"],
        ["ro-wave-b"],
    ]
    done = wait_rollout(fleet, "ro-wave-web", "succeeded")
    wait_url(fleet, agents, "ro-wave-web", "http://v2.invalid/")

    starts = [parse_time(w["started_at"]) for w in done["waves"]]
    ready_events = [e for e in events_of(admin, "ro-wave-web") if e["type"] == "RolloutWaveReady"]
    assert len(ready_events) >= 3, ready_events
    for index, agent in enumerate(agents):
        # every runtime got the new revision only once its own wave started …
        assert file_time(agent, "ro-wave-web") >= starts[index] - 0.5, fleet.explain(f"{agent.name} early")
        if index:  # … and a wave started only after the one before had been Ready for the bake time
            ready = max(parse_time(e["time"]) for e in ready_events if f"wave {index}/3" in e["message"])
            assert starts[index] >= ready + bake - 0.05, (starts, ready_events)
            assert starts[index] >= file_time(agents[index - 1], "ro-wave-web")
    assert done["ready"] == done["targets"] == 3 and done["failed"] == 0

    def metric(line: str) -> float:
        found = re.search(rf"^{re.escape(line)} (\S+)$", admin.get("/metrics").text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    fleet.wait_until(lambda: metric('rrm_rollouts{state="succeeded"}') >= 1, "the rollouts gauge")
    assert metric("rrm_rollout_waves_started_total") >= 3
    assert metric('rrm_rollout_events_total{event="RolloutWaveStarted"}') >= 3

    env = child_env({"RRM_URL": fleet.server.url, "RRM_TOKEN": fleet.server.admin_token})
    cli = [sys.executable, "-m", "rrm"]
    status = subprocess.run(
        [*cli, "rollout", "status", "ro-wave-web", "--watch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert (
        "succeeded" in status.stdout and "canary" in status.stdout and "3/3 runtimes ready" in status.stdout
    )
    listed = subprocess.run([*cli, "get", "rollouts", "-o", "json"], env=env, capture_output=True, text=True)
    assert any(r["component"] == "ro-wave-web" for r in yaml.safe_load(listed.stdout)), listed.stderr


def test_a_runtime_reporting_failure_pauses_the_rollout_and_abort_restores_the_old_content(
    fleet: Fleet,
) -> None:
    admin = fleet.server.admin
    labels = {"ro-pause": "yes"}
    failing, token = paired_later(fleet, "ro-pause-c", {**labels, "canary": "true"})
    conflicting_file(failing, "ro-pause-web")
    failing.start(token)
    others = [fleet.agent("ro-pause-a", labels), fleet.agent("ro-pause-b", labels)]
    apply(admin, [binding("ro-pause-web", "ro-pause=yes", "http://v1.invalid/")])
    wait_url(fleet, others, "ro-pause-web", "http://v1.invalid/")

    spec = {"groups": [{"name": "canary", "selector": "canary=true"}], "progressDeadline": "30s"}
    apply(
        admin,
        [
            policy("ro-pause-policy", **spec, onFailure="pause"),
            binding("ro-pause-web", "ro-pause=yes", "http://v2.invalid/", "ro-pause-policy"),
        ],
    )
    paused = wait_rollout(fleet, "ro-pause-web", "paused")
    assert [f["runtime"] for f in paused["failures"]] == ["ro-pause-c"]
    assert "already defined" in paused["failures"][0]["message"]
    assert paused["current_wave"] == 1 and paused["waves"][1]["state"] == "pending"
    holds_for(
        lambda: (
            all(url_of(a, "ro-pause-web") == "http://v1.invalid/" for a in others)
            and rollout(admin, "ro-pause-web")["state"] == "paused"
        ),
        2,
        lambda: fleet.explain("a paused rollout moved on"),
    )

    aborted = steer(admin, "ro-pause-web", "abort")
    assert aborted["state"] == "aborted"
    for agent in others:
        fleet.wait_files(
            agent,
            lambda c: (
                c.get("ro-pause-web", {}).get("metadata", {}).get("annotations", {}).get(REVISION_ANNOTATION)
                == "3"
            ),
            "revision 3 (revision 1's content) after the abort",
        )
        assert url_of(agent, "ro-pause-web") == "http://v1.invalid/"
    history = expect_status(admin.get("/api/v1/components/ro-pause-web/history"), 200).json()
    assert (history[0]["revision"], history[0]["action"]) == (3, "rollout-abort")
    assert expect_status(admin.post("/api/v1/rollouts/ro-pause-web/resume"), 409)
    assert expect_status(admin.post("/api/v1/rollouts/ro-pause-web/restart"), 422)
    assert expect_status(admin.post("/api/v1/rollouts/ro-nothing/pause"), 404)


def test_a_failure_rolls_every_updated_runtime_back(fleet: Fleet) -> None:
    admin = fleet.server.admin
    labels = {"ro-back": "yes"}
    canary = fleet.agent("ro-back-c", {**labels, "canary": "true"})
    healthy = fleet.agent("ro-back-a", labels)
    failing, token = paired_later(fleet, "ro-back-b", labels)
    conflicting_file(failing, "ro-back-web")
    failing.start(token)
    apply(admin, [binding("ro-back-web", "ro-back=yes", "http://v1.invalid/")])
    wait_url(fleet, [canary, healthy], "ro-back-web", "http://v1.invalid/")

    spec = {"groups": [{"name": "canary", "selector": "canary=true"}], "minSuccessTime": "1s"}
    apply(
        admin,
        [
            policy("ro-back-policy", **spec, progressDeadline="30s", onFailure="rollback"),
            binding("ro-back-web", "ro-back=yes", "http://v2.invalid/", "ro-back-policy"),
        ],
    )
    wait_url(fleet, [canary], "ro-back-web", "http://v2.invalid/")  # the canary was updated …
    rolled = wait_rollout(fleet, "ro-back-web", "rolled-back")
    assert [f["runtime"] for f in rolled["failures"]] == ["ro-back-b"]
    assert rolled["current_wave"] == 2
    # … and, like every runtime, goes back to revision 1's content, stored as revision 3
    wait_url(fleet, [canary, healthy], "ro-back-web", "http://v1.invalid/")
    assert revision_on_disk(canary, "ro-back-web") == revision_on_disk(healthy, "ro-back-web") == "3"
    history = expect_status(admin.get("/api/v1/components/ro-back-web/history"), 200).json()
    assert [(h["revision"], h["action"]) for h in history] == [
        (3, "auto-rollback"),
        (2, "updated"),
        (1, "created"),
    ]
    assert metadata_value(history[0]["manifest"], "url") == "http://v1.invalid/"


def test_a_runtime_that_never_reports_fails_at_the_deadline_and_resume_retries_it(fleet: Fleet) -> None:
    admin = fleet.server.admin
    labels = {"ro-silent": "yes"}
    silent, token = paired_later(fleet, "ro-silent-c", {**labels, "canary": "true"})
    other = fleet.agent("ro-silent-a", labels)
    apply(admin, [binding("ro-silent-web", "ro-silent=yes", "http://v1.invalid/")])
    wait_url(fleet, [other], "ro-silent-web", "http://v1.invalid/")

    spec = {"groups": [{"name": "canary", "selector": "canary=true"}], "progressDeadline": "4s"}
    apply(
        admin,
        [
            policy("ro-silent-policy", **spec),
            binding("ro-silent-web", "ro-silent=yes", "http://v2.invalid/", "ro-silent-policy"),
        ],
    )
    paused = wait_rollout(fleet, "ro-silent-web", "paused")
    started = parse_time(paused["waves"][0]["started_at"])
    failure = paused["failures"][0]
    assert failure["runtime"] == "ro-silent-c"
    assert "progress deadline (4s)" in failure["message"] and "offline" in failure["message"]
    failed_at = max(
        parse_time(e["time"])
        for e in events_of(admin, "ro-silent-web")
        if e["type"] == "RolloutRuntimeFailed"
    )
    assert failed_at >= started + 4
    assert url_of(other, "ro-silent-web") == "http://v1.invalid/"

    silent.start(token)  # the runtime comes up (its wave started: it gets revision 2) …
    wait_url(fleet, [silent], "ro-silent-web", "http://v2.invalid/")
    resumed = steer(admin, "ro-silent-web", "resume")  # … and the operator resumes: the deadline restarts
    assert resumed["state"] == "progressing" and resumed["failures"] == []
    wait_rollout(fleet, "ro-silent-web", "succeeded")
    wait_url(fleet, [silent, other], "ro-silent-web", "http://v2.invalid/")


def local_store(
    name: str, selector: str, secrets_file: Path, policy_name: str | None = None
) -> dict[str, Any]:
    """A local-file secret store that ignores init errors: daprd stays up when it cannot read the file."""
    manifest = component(
        name,
        selector,
        type="secretstores.local.file",
        metadata=[{"name": "secretsFile", "value": str(secrets_file)}],
    )
    manifest["spec"]["ignoreErrors"] = True
    if policy_name is not None:
        manifest["metadata"]["annotations"]["rrm.io/rollout-policy"] = policy_name
    return manifest


def test_a_wave_fails_when_the_sidecar_refuses_the_new_revision(fleet: Fleet, tmp_path: Path) -> None:
    """The control plane accepts revision 2 (a valid local-file store) but daprd cannot initialise it (its
    file does not exist): the canary's sidecar leaves it out, the rollout fails there and goes no further."""
    admin = fleet.server.admin
    labels = {"ro-refuse": "yes"}
    values = tmp_path / "ro-refuse-secrets.json"
    values.write_text(json.dumps({"k": "v"}))
    daprds = {name: fleet.daprd(name) for name in ("ro-refuse-c", "ro-refuse-a")}
    fleet.agent("ro-refuse-c", {**labels, "canary": "true"}, daprd=daprds["ro-refuse-c"])
    other = fleet.agent("ro-refuse-a", labels, daprd=daprds["ro-refuse-a"])
    apply(admin, [local_store("ro-refuse-store", "ro-refuse=yes", values)])
    for daprd in daprds.values():
        fleet.wait_until(lambda d=daprd: "ro-refuse-store" in d.loaded_names(), "revision 1 loaded")

    missing = tmp_path / "ro-refuse-missing.json"
    spec = {"groups": [{"name": "canary", "selector": "canary=true"}], "progressDeadline": "8s"}
    apply(
        admin,
        [
            policy("ro-refuse-policy", **spec, onFailure="pause"),
            local_store("ro-refuse-store", "ro-refuse=yes", missing, "ro-refuse-policy"),
        ],
    )
    paused = wait_rollout(fleet, "ro-refuse-store", "paused", timeout=60)
    assert [f["runtime"] for f in paused["failures"]] == ["ro-refuse-c"], paused
    assert "the sidecar has not loaded it" in paused["failures"][0]["message"], paused["failures"]
    assert paused["current_wave"] == 1 and paused["waves"][1]["state"] == "pending"
    refused = daprds["ro-refuse-c"].init_errors().get("ro-refuse-store", "")
    assert "[INIT_COMPONENT_FAILURE]" in refused and str(missing) in refused, refused
    assert "ro-refuse-store" not in daprds["ro-refuse-c"].loaded_names()
    # the wave went no further: the other runtime keeps revision 1, loaded by its sidecar
    on_disk = components_on_disk(other.resources_path)["ro-refuse-store"]
    assert metadata_value(on_disk, "secretsFile") == str(values)
    assert "ro-refuse-store" in daprds["ro-refuse-a"].loaded_names()


def test_a_newer_revision_supersedes_the_rollout_and_promote_skips_the_rest(fleet: Fleet) -> None:
    admin = fleet.server.admin
    labels = {"ro-next": "yes"}
    canary = fleet.agent("ro-next-c", {**labels, "canary": "true"})
    others = [fleet.agent("ro-next-a", labels), fleet.agent("ro-next-b", labels)]
    old, new = secret("ro-next-old", {"token": "old"}), secret("ro-next-new", {"token": "new"})
    apply(admin, [old, new, binding("ro-next-web", "ro-next=yes", "http://v1.invalid/", token="ro-next-old")])
    wait_url(fleet, [canary, *others], "ro-next-web", "http://v1.invalid/")

    spec = {"groups": [{"name": "canary", "selector": "canary=true"}], "minSuccessTime": "10m"}
    apply(
        admin,
        [
            policy("ro-next-policy", **spec),
            binding("ro-next-web", "ro-next=yes", "http://v2.invalid/", "ro-next-policy", "ro-next-new"),
        ],
    )
    wait_url(fleet, [canary], "ro-next-web", "http://v2.invalid/")
    first = rollout(admin, "ro-next-web")

    apply(
        admin, [binding("ro-next-web", "ro-next=yes", "http://v3.invalid/", "ro-next-policy", "ro-next-new")]
    )
    second = rollout(admin, "ro-next-web")
    assert second["id"] != first["id"]
    assert (second["from_revision"], second["to_revision"], second["state"]) == (1, 3, "progressing")
    superseded = [e for e in events_of(admin, "ro-next-web") if e["type"] == "RolloutSuperseded"]
    assert superseded and "revision 3" in superseded[-1]["message"]
    wait_url(fleet, [canary], "ro-next-web", "http://v3.invalid/")
    holds_for(
        lambda: all(url_of(a, "ro-next-web") == "http://v1.invalid/" for a in others),
        1.5,
        lambda: fleet.explain("runtimes outside the canary wave left revision 1 before promote"),
    )

    # runtimes outside the started waves still run revision 1, so its secret must stay
    refused = expect_status(admin.delete("/api/v1/secrets/ro-next-old"), 409)
    assert "revision 1" in refused.json()["detail"]

    promoted = steer(admin, "ro-next-web", "promote")
    assert promoted["state"] == "succeeded"
    wait_url(fleet, others, "ro-next-web", "http://v3.invalid/")
    listed = expect_status(admin.get("/api/v1/rollouts"), 200).json()
    assert [r["state"] for r in listed if r["component"] == "ro-next-web"] == ["succeeded"]
    expect_status(admin.delete("/api/v1/secrets/ro-next-old"), 204)


def test_a_rollout_resumes_where_it_was_after_a_control_plane_restart(
    fleet: Fleet, own_server: ServerProcess
) -> None:
    admin = own_server.admin
    labels = {"ro-restart": "yes"}
    canary = fleet.agent("ro-restart-c", {**labels, "canary": "true"})
    others = [fleet.agent("ro-restart-a", labels), fleet.agent("ro-restart-b", labels)]
    spec = {"groups": [{"name": "canary", "selector": "canary=true"}], "minSuccessTime": "3s"}
    # a brand-new component rolls out in waves too: runtimes not reached yet simply do not have it
    apply(
        admin,
        [
            policy("ro-restart-policy", **spec, progressDeadline="60s"),
            binding("ro-restart-web", "ro-restart=yes", "http://v1.invalid/", "ro-restart-policy"),
        ],
    )
    wait_url(fleet, [canary], "ro-restart-web", "http://v1.invalid/")
    assert all(url_of(a, "ro-restart-web") is None for a in others)
    before = fleet.wait_until(
        lambda: (r := rollout(own_server.admin, "ro-restart-web"))["bake"]["ready_since"] and r,
        "the canary wave baking",
    )

    own_server.restart()
    after = rollout(own_server.admin, "ro-restart-web")
    assert after["id"] == before["id"] and after["waves"][0]["started_at"] == before["waves"][0]["started_at"]
    # the restart may outlast the 3 s bake: then the next wave has started, still after the bake (below)
    assert after["state"] == "progressing" and after["current_wave"] in (1, 2)
    done = wait_rollout(fleet, "ro-restart-web", "succeeded")
    wait_url(fleet, others, "ro-restart-web", "http://v1.invalid/")
    assert done["waves"][0]["started_at"] == before["waves"][0]["started_at"]
    assert parse_time(done["waves"][1]["started_at"]) >= parse_time(before["bake"]["ready_since"]) + 3


def test_policies_and_references_are_validated_at_the_boundary(admin: httpx.Client) -> None:
    detail = apply_refused(admin, [binding("ro-bad-web", "ro-bad=yes", "http://x.invalid/", "ro-missing")])
    assert [d["field"] for d in detail] == ['metadata.annotations["rrm.io/rollout-policy"]']
    assert "ro-missing" in detail[0]["message"]
    detail = apply_refused(
        admin, [policy("ro-bad-policy", maxConcurrency="0", minSuccessTime="soon", onFailure="retry")]
    )
    assert {d["field"] for d in detail} == {"spec.maxConcurrency", "spec.minSuccessTime", "spec.onFailure"}
    assert all(d["kind"] == "RolloutPolicy" and d["name"] == "ro-bad-policy" for d in detail)
    assert expect_status(admin.get("/api/v1/components/ro-bad-web"), 404)

    apply(
        admin,
        [
            policy("ro-used-policy"),
            binding("ro-used-web", "ro-used=yes", "http://x.invalid/", "ro-used-policy"),
        ],
    )
    policies = {p["name"]: p for p in expect_status(admin.get("/api/v1/rollout-policies"), 200).json()}
    assert policies["ro-used-policy"]["used_by"] == ["ro-used-web"]
    assert expect_status(admin.delete("/api/v1/rollout-policies/ro-used-policy"), 409)


def leads(server: ServerProcess) -> bool:
    return "rrm_leader 1.0" in server.admin.get("/metrics").text


def test_another_replica_carries_the_rollout_on_when_the_leader_dies(tmp_path: Path) -> None:
    """PostgreSQL: the replica holding leadership runs the controller; kill -9 it mid-bake and the other one
    takes over and finishes the rollout from the stored state."""
    with fresh_postgres_database() as url:
        first = ServerProcess(tmp_path / "replica-0", tmp_path / "replica-0.log", database_url=url)
        first.start()
        second_dir = tmp_path / "replica-1"
        second_dir.mkdir()
        for name in ("admin-token", "secret-key"):
            shutil.copy(first.data_dir / name, second_dir / name)
        second = ServerProcess(second_dir, tmp_path / "replica-1.log", database_url=url)
        second.start()
        replicas = [first, second]
        leader = wait_until(lambda: next((s for s in replicas if leads(s)), None), message="no leader")
        survivor = second if leader is first else first
        fleet = Fleet(survivor, tmp_path / "fleet")  # agents and every request go to the survivor
        try:
            labels = {"ro-ha": "yes"}
            canary = fleet.agent("ro-ha-c", {**labels, "canary": "true"})
            other = fleet.agent("ro-ha-a", labels)
            spec = {"groups": [{"name": "canary", "selector": "canary=true"}], "minSuccessTime": "3s"}
            apply(
                survivor.admin,
                [
                    policy("ro-ha-policy", **spec, progressDeadline="60s"),
                    binding("ro-ha-web", "ro-ha=yes", "http://v1.invalid/", "ro-ha-policy"),
                ],
            )
            baking = fleet.wait_until(
                lambda: (r := rollout(survivor.admin, "ro-ha-web"))["bake"]["ready_since"] and r,
                "the canary wave baking",
            )
            leader.kill9()
            fleet.wait_until(lambda: leads(survivor), "the survivor taking leadership over")
            done = wait_rollout(fleet, "ro-ha-web", "succeeded")
            wait_url(fleet, [canary, other], "ro-ha-web", "http://v1.invalid/")
            assert (
                done["id"] == baking["id"]
                and done["waves"][0]["started_at"] == baking["waves"][0]["started_at"]
            )
            assert parse_time(done["waves"][1]["started_at"]) >= parse_time(baking["bake"]["ready_since"]) + 3
        finally:
            fleet.close()
            for server in replicas:
                server.stop()
