"""The dashboard and the event stream over plain HTTP against a real `rrm server`: who may see what, what
the session cookie holds, that the stream carries the events table, and that no secret value leaks."""

from __future__ import annotations

import base64
import html
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from .compass import application
from .harness import (
    Fleet,
    ServerProcess,
    apply,
    condition_true,
    expect_status,
    http_binding,
    register,
    secret,
    synced,
)

pytestmark = pytest.mark.integration

PAGES = [
    "/ui",
    "/ui/runtimes",
    "/ui/runtimes/anything",
    "/ui/components",
    "/ui/components/anything",
    "/ui/applications",
]
FRAGMENTS = [
    "/ui/fragments/fleet",
    "/ui/fragments/runtimes",
    "/ui/fragments/runtimes/anything",
    "/ui/fragments/components",
    "/ui/fragments/components/anything",
    "/ui/fragments/applications",
]
STREAM = "/api/v1/events/stream"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def browser(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)


@contextmanager
def signed_in(server: ServerProcess, token: str | None = None) -> Iterator[httpx.Client]:
    with browser(server) as client:
        response = client.post("/ui/login", data={"token": token or server.admin_token, "next": "/ui"})
        expect_status(response, 303)
        yield client


def new_token(server: ServerProcess, role: str) -> str:
    response = server.admin.post("/api/v1/tokens", json={"role": role, "description": "test"})
    body = expect_status(response, 201).json()
    assert body["role"] == role
    return str(body["token"])


@contextmanager
def event_stream(client: httpx.Client, **kwargs: Any) -> Iterator[Iterator[dict[str, Any]]]:
    """The stream's events as dicts, each with the SSE `id` it came with."""
    with client.stream("GET", STREAM, timeout=httpx.Timeout(30, read=20), **kwargs) as response:
        expect_status(response, 200)
        assert response.headers["content-type"].startswith("text/event-stream")

        def events() -> Iterator[dict[str, Any]]:
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if line == "" and "data" in fields:
                    yield {**json.loads(fields["data"]), "sse_id": fields.get("id")}
                    fields = {}
                elif line and not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

        yield events()


def first_event(
    events: Iterator[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    for event in events:
        if predicate(event):
            return event
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no matching event within {timeout} s")


WAVE = re.compile(
    r'<li class="wave[^"]*" data-wave="(\d+)" data-state="([^"]+)">'
    r'.*?<span class="chip">([^<]*)</span>(.*?)</li>',
    re.S,
)
WAVE_RUNTIME = re.compile(r'<tr data-runtime="([^"]+)" data-state="([^"]+)">')


def waves_shown(page: str) -> dict[int, tuple[str, str, dict[str, str]]]:
    """Wave number → (group, state, {runtime: state}) as the component page shows the rollout."""
    return {
        int(number): (group, state, dict(WAVE_RUNTIME.findall(body)))
        for number, state, group, body in WAVE.findall(page)
    }


def rollout_policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "rrm.io/v1", "kind": "RolloutPolicy", "metadata": {"name": name}, "spec": spec}


def bundle(name: str, credentials: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "credentials": credentials}


def row_of(page: str, attribute: str, value: str) -> str:
    """The HTML of the table row with `attribute="value"`."""
    start = page.index(f'{attribute}="{value}"')
    return page[start : page.index("</tr>", start)]


def runtime_chips(row: str) -> set[str]:
    return set(re.findall(r'<a class="chip" href="/ui/runtimes/[^"]+" data-runtime="([^"]+)">', row))


def test_nothing_of_the_dashboard_or_the_stream_is_reachable_without_a_session(server: ServerProcess) -> None:
    with browser(server) as anonymous:
        for path in PAGES:
            response = expect_status(anonymous.get(path), 303)
            assert response.headers["location"].startswith("/ui/login?next=%2Fui"), path
        for path in FRAGMENTS:
            expect_status(anonymous.get(path), 401)
        expect_status(anonymous.get(STREAM), 401)
        expect_status(anonymous.get(STREAM, headers={"Authorization": "Bearer rrmat_wrong"}), 401)
        for forged in (server.admin_token, "e30.AAAA", "garbage"):
            anonymous.cookies.set("rrm_session", forged)
            expect_status(anonymous.get("/ui"), 303)
            expect_status(anonymous.get("/ui/fragments/fleet"), 401)
            expect_status(anonymous.get(STREAM), 401)
        # the stylesheet and script hold no data and the sign-in form needs them
        expect_status(anonymous.get("/ui/static/rrm.css"), 200)
        expect_status(anonymous.get("/ui/login"), 200)


def test_a_bad_token_is_refused_and_a_good_one_gets_a_cookie_without_the_token(
    server: ServerProcess,
) -> None:
    with browser(server) as client:
        refused = expect_status(client.post("/ui/login", data={"token": "rrmat_not-a-token"}), 401)
        assert "not valid" in refused.text and 'name="token"' in refused.text
        assert "set-cookie" not in refused.headers

        token = server.admin_token
        response = expect_status(
            client.post("/ui/login", data={"token": token, "next": "/ui/components"}), 303
        )
        assert response.headers["location"] == "/ui/components"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("rrm_session=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
        assert token not in cookie and token.split("_", 1)[1] not in cookie
        page = expect_status(client.get("/ui/components"), 200)
        assert "Components" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "default-src 'self'" in page.headers["content-security-policy"]


def test_sign_in_redirects_only_within_the_dashboard(server: ServerProcess) -> None:
    """The one-click link is `/ui/login#token=…` (the page's script posts the token, see
    test_sessions_and_tokens); after the post the address holds no token and points into the dashboard."""
    with browser(server) as client:
        response = expect_status(client.post("/ui/login", data={"token": server.admin_token}), 303)
        assert response.headers["location"] == "/ui"
        assert response.headers["referrer-policy"] == "no-referrer"
        expect_status(client.get("/ui"), 200)
        for elsewhere in ("https://elsewhere.invalid/", "//elsewhere.invalid/ui", "/api/v1/runtimes"):
            data = {"token": server.admin_token, "next": elsewhere}
            assert client.post("/ui/login", data=data).headers["location"] == "/ui"


def test_signing_out_ends_the_session(server: ServerProcess) -> None:
    with signed_in(server) as client:
        expect_status(client.get("/ui/runtimes"), 200)
        response = expect_status(client.post("/ui/logout"), 303)
        assert (
            'rrm_session=""' in response.headers["set-cookie"]
            or "Max-Age=0" in response.headers["set-cookie"]
        )
        expect_status(client.get("/ui/runtimes"), 303)


def test_a_viewer_token_reads_everything_and_writes_nothing(server: ServerProcess) -> None:
    viewer = new_token(server, "viewer")
    headers = {"Authorization": f"Bearer {viewer}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as api:
        expect_status(api.get("/api/v1/runtimes"), 200)
        expect_status(api.get("/api/v1/events"), 200)
        body = {"name": unique("viewer-made"), "kind": "selfhosted", "labels": {}}
        expect_status(api.post("/api/v1/runtimes", json=body), 403)
        expect_status(api.post("/api/v1/tokens", json={"role": "admin"}), 403)
    expect_status(server.admin.post("/api/v1/tokens", json={"role": "root"}), 422)
    with signed_in(server, viewer) as client:
        for path in ["/ui/runtimes", "/ui/components", "/ui/applications", *FRAGMENTS[:2], FRAGMENTS[-1]]:
            expect_status(client.get(path), 200)
        assert '<span class="role"' in expect_status(client.get("/ui"), 200).text
        with event_stream(client, params={"after": 0}) as events:
            assert next(events)["id"] >= 1
    another_admin = {"Authorization": f"Bearer {new_token(server, 'admin')}"}
    expect_status(server.admin.post("/api/v1/tokens", json={"role": "viewer"}, headers=another_admin), 201)


def test_the_stream_carries_new_events_with_ids_and_resumes_after_last_event_id(
    server: ServerProcess,
) -> None:
    first, second = unique("stream-a"), unique("stream-b")
    stream_client = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}
    )
    with stream_client, event_stream(stream_client) as events:  # from now on
        register(server.admin, first)
        event = first_event(events, lambda e: e["subject"] == f"runtime/{first}")
        assert event["type"] in ("RuntimeRegistered", "PairingTokenIssued")
        assert event["sse_id"] == str(event["id"])
        assert set(event) >= {"id", "time", "type", "subject", "message"}
        resume_from = event["id"]
    register(server.admin, second)
    with (
        signed_in(server) as browser_client,
        event_stream(
            browser_client, headers={"Last-Event-ID": str(resume_from)}, params={"after": 0}
        ) as events,
    ):
        resumed = next(events)
        assert resumed["id"] > resume_from  # Last-Event-ID wins over `after`
        first_event(events, lambda e: e["subject"] == f"runtime/{second}")


def test_pages_show_runtimes_and_components_and_a_revision_diff(server: ServerProcess, fleet: Fleet) -> None:
    label = unique("t-ui")
    ready, idle = unique("ui-ready"), unique("ui-idle")
    fleet.agent(ready, {label: "yes"})
    register(server.admin, idle, labels={label: "yes", "idle": "true"})
    name = unique("ui-http")
    apply(server.admin, [http_binding(name, f"{label}=yes,!idle", "http://one.invalid/")])
    apply(server.admin, [http_binding(name, f"{label}=yes,!idle", "http://two.invalid/")])
    fleet.wait_runtime(ready, lambda d: synced(d) and condition_true(d, "Ready"), "Ready with the binding")
    with signed_in(server) as client:
        listed = expect_status(client.get("/ui/runtimes", params={"selector": f"{label}=yes,idle"}), 200).text
        assert f'data-runtime="{idle}"' in listed and f'data-runtime="{ready}"' not in listed
        refused = client.get("/ui/runtimes", params={"selector": "env in"})
        assert refused.status_code == 422 and "Bad selector" in refused.text

        fleet_page = expect_status(client.get("/ui"), 200).text
        assert f'data-runtime="{idle}"' in fleet_page and "NeverConnected" in fleet_page

        detail = expect_status(client.get(f"/ui/runtimes/{ready}"), 200).text
        assert (
            f'data-component="{name}"' in detail and "applied" in detail and "DesiredStateApplied" in detail
        )
        expect_status(client.get(f"/ui/runtimes/{unique('missing')}"), 404)

        component = expect_status(client.get(f"/ui/components/{name}", params={"from": 1, "to": 2}), 200).text
        assert "-    value: http://one.invalid/" in component
        assert "+    value: http://two.invalid/" in component
        assert "1/1 runtimes" in component


def test_no_page_fragment_or_event_shows_a_secret_value(server: ServerProcess, fleet: Fleet) -> None:
    """Neither a secret's value nor an application's credentials (a header token, a basic password, nor
    the `Basic …` header value the runtime's binding gets) appear anywhere, though the runtime has them."""
    value = f"do-not-show-{uuid.uuid4().hex}"
    token, password = f"header-token-{uuid.uuid4().hex}", f"basic-password-{uuid.uuid4().hex}"
    basic_header = base64.b64encode(f"leak-user:{password}".encode()).decode()
    hidden = {"secret value": value, "header token": token, "password": password, "basic": basic_header}
    label = unique("t-leak")
    runtime = unique("leak")
    scenario = unique("LEAK")
    expect_status(server.admin.post("/api/v1/scenarios", json={"name": scenario}), 201)
    fleet.agent(runtime, {label: "yes"})
    expect_status(server.admin.patch(f"/api/v1/runtimes/{runtime}/scenarios", json={"add": [scenario]}), 200)
    name, app = unique("leaky"), unique("leaky-app")
    apply(
        server.admin,
        [
            secret(f"{name}-creds", {"token": value}),
            http_binding(name, f"{label}=yes", "http://leak.invalid/", token_ref=(f"{name}-creds", "token")),
            application(
                app,
                [
                    bundle("header", {"type": "header", "header": "X-Api-Key", "token": token}),
                    bundle("basic", {"type": "basic", "username": "leak-user", "password": password}),
                ],
                scenarios=[scenario],
            ),
        ],
    )
    apply(
        server.admin,
        [http_binding(name, f"{label}=yes", "http://leak2.invalid/", (f"{name}-creds", "token"))],
    )
    placed = {name, f"app-{app}-header", f"app-{app}-basic"}
    fleet.wait_runtime(
        runtime,
        lambda d: placed <= {c["name"] for c in d["resources"]} and synced(d) and condition_true(d, "Ready"),
        "Ready with the secret and the application's bindings",
    )
    paths = [
        "/ui",
        "/ui/runtimes",
        f"/ui/runtimes/{runtime}",
        "/ui/components",
        f"/ui/components/{name}",
        f"/ui/components/{name}?from=1&to=2",
        "/ui/applications",
        "/ui/fragments/fleet",
        "/ui/fragments/runtimes",
        f"/ui/fragments/runtimes/{runtime}",
        "/ui/fragments/components",
        f"/ui/fragments/components/{name}",
        "/ui/fragments/applications",
    ]
    with signed_in(server) as client:
        pages = {path: expect_status(client.get(path), 200).text for path in paths}
        for path, text in pages.items():
            for what, needle in hidden.items():
                assert needle not in text, f"{path} shows the {what}"
        # the pages do show the secret, by name, key and reference, and the credentials' types
        assert f'data-secret="{name}-creds"' in pages["/ui/components"]
        assert "secretKeyRef" in pages[f"/ui/components/{name}"]
        applications = row_of(pages["/ui/applications"], "data-application", app)
        assert ">header</span>" in applications and ">basic</span>" in applications
        assert runtime_chips(applications) == {runtime}
        assert f'data-application="{app}"' in pages[f"/ui/runtimes/{runtime}"]
        with event_stream(client, params={"after": 0}) as events:
            seen = first_event(
                events, lambda e: e["subject"] == f"runtime/{runtime}" and "Applied" in e["type"]
            )
            assert all(needle not in json.dumps(seen) for needle in hidden.values())
    history = expect_status(server.admin.get("/api/v1/events", params={"limit": 1000}), 200).text
    assert all(needle not in history for needle in hidden.values())


def test_a_component_page_shows_its_rollout_wave_by_wave_with_each_runtime(
    server: ServerProcess, fleet: Fleet
) -> None:
    """A canary wave with one runtime Ready and one whose agent reports the component failed (a foreign
    file of the same name): the rollout pauses, the next wave waits, and the page shows all of it."""
    label = unique("t-ro")
    name, policy = unique("ui-ro"), unique("ui-ro-policy")
    good, bad, later = unique("ro-good"), unique("ro-bad"), unique("ro-later")
    bad_token = register(server.admin, bad, labels={label: "yes", "canary": "true"})
    bad_agent = fleet.agent_process(bad)
    bad_agent.resources_path.mkdir(parents=True, exist_ok=True)
    foreign = http_binding(name, "", "http://foreign.invalid/")
    (bad_agent.resources_path / f"{name}.yaml").write_text(json.dumps(foreign))
    bad_agent.start(bad_token)
    fleet.agent(good, {label: "yes", "canary": "true"})
    register(server.admin, later, labels={label: "yes"})
    spec = {"groups": [{"name": "canary", "selector": "canary=true"}], "progressDeadline": "60s"}
    component = http_binding(name, f"{label}=yes", "http://v1.invalid/")
    component["metadata"]["annotations"]["rrm.io/rollout-policy"] = policy
    apply(server.admin, [rollout_policy(policy, **spec, onFailure="pause"), component])

    def rollout_settled() -> dict[str, Any]:
        seen = expect_status(server.admin.get(f"/api/v1/rollouts/{name}"), 200).json()
        states = {r["name"]: r["state"] for w in seen["waves"] for r in w["runtimes"]}
        return seen if seen["state"] == "paused" and states[good] == "ready" else {}

    api = fleet.wait_until(rollout_settled, f"the rollout of {name} pauses with {good} ready")
    with signed_in(server) as client:
        page = expect_status(client.get(f"/ui/components/{name}"), 200).text
        assert waves_shown(page) == {
            1: ("canary", "paused", {bad: "failed", good: "ready"}),
            2: ("rest", "pending", {later: "pending"}),
        }
        assert 'id="rollout" data-state="paused"' in page
        assert "none → 1" in page and f"<strong>{policy}</strong>" in page
        assert "1/3 ready" in page and "1 failed" in page
        (failure,) = api["failures"]
        assert failure["runtime"] == bad and "already defined" in failure["message"]
        assert html.escape(failure["message"]) in page  # under the failed runtime and in the failures
        assert f"rrm rollout resume|abort|promote {name}" in page
        listed = expect_status(client.get("/ui/fragments/components"), 200).text
        row = listed[listed.index(f'data-component="{name}"') :]
        assert row.index('class="badge ro-paused"') < row.index("</tr>") and "wave 1/2" in row


def test_the_applications_page_shows_which_runtimes_see_which_application(
    server: ServerProcess, fleet: Fleet
) -> None:
    """One runtime put in a scenario (with its agent, which gets the bindings), one in another scenario by
    automatic assignment, one in none; two applications."""
    label = unique("t-app")
    explicit, automatic = unique("UI"), unique("UI")
    both, only = unique("ui-app"), unique("ui-app")
    member, assigned, outsider = unique("app-in"), unique("app-auto"), unique("app-out")
    for scenario in (explicit, automatic):
        expect_status(server.admin.post("/api/v1/scenarios", json={"name": scenario}), 201)
    selector = f"{label}=auto"
    body: dict[str, Any] = {"selector": selector}
    expect_status(server.admin.put(f"/api/v1/scenarios/{automatic}/assignment", json=body), 200)
    apply(
        server.admin,
        [
            application(
                both,
                [
                    bundle("public", {"type": "header", "header": "X-Api-Key", "token": "t"}),
                    bundle("admin", {"type": "basic", "username": "u", "password": "p"}),
                ],
                scenarios=[explicit, automatic],
            ),
            application(only, [bundle("main", {"type": "none"})], scenarios=[explicit]),
        ],
    )
    fleet.agent(member, {label: "yes"})
    register(server.admin, assigned, labels={label: "auto"})
    body = {"name": outsider, "kind": "selfhosted", "labels": {label: "no"}, "scenarios": []}
    expect_status(server.admin.post("/api/v1/runtimes", json=body), 201)  # in none, not even DEFAULT
    body = {"add": [explicit]}
    expect_status(server.admin.patch(f"/api/v1/runtimes/{member}/scenarios", json=body), 200)
    bindings = {f"app-{both}-public", f"app-{both}-admin", f"app-{only}-main"}
    fleet.wait_runtime(
        member,
        lambda d: (
            bindings <= {c["name"] for c in d["resources"]} and synced(d) and condition_true(d, "Ready")
        ),
        "Ready with the applications' bindings",
    )

    with signed_in(server) as client:
        listing = expect_status(client.get("/ui/applications"), 200).text
        assert 'aria-current="page">Applications</a>' in listing
        assert runtime_chips(row_of(listing, "data-application", both)) == {member, assigned}
        assert runtime_chips(row_of(listing, "data-application", only)) == {member}
        both_row = row_of(listing, "data-application", both)
        for binding, kind in ((f"app-{both}-public", "header"), (f"app-{both}-admin", "basic")):
            assert re.search(
                rf"<code>{binding}</code> <span class=\"badge cred\"[^>]*>{kind}</span>", both_row
            )
        assert f'<span class="chip">{explicit}</span>' in both_row
        automatic_row = row_of(listing, "data-scenario", automatic)
        assert f"<code>{selector}</code>" in automatic_row and runtime_chips(automatic_row) == {assigned}
        assert runtime_chips(row_of(listing, "data-scenario", explicit)) == {member}
        assert f'data-runtime="{outsider}"' not in listing
        assert expect_status(client.get("/ui/fragments/applications"), 200).text.strip() in listing

        detail = expect_status(client.get(f"/ui/runtimes/{member}"), 200).text
        assert f'data-scenario="{explicit}"' in detail and "put in it" in detail
        assert set(re.findall(r'<tr data-application="([^"]+)">', detail)) == {both, only}
        assert f'data-component="app-{both}-public"' in detail  # the binding its agent applied
        auto_detail = expect_status(client.get(f"/ui/fragments/runtimes/{assigned}"), 200).text
        assert f'data-scenario="{automatic}"' in auto_detail and "by automatic assignment" in auto_detail
        assert set(re.findall(r'<tr data-application="([^"]+)">', auto_detail)) == {both}
        outside = expect_status(client.get(f"/ui/runtimes/{outsider}"), 200).text
        assert "In no scenario" in outside and "data-application=" not in outside
