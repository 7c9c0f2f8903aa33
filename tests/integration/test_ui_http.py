"""The dashboard and the event stream over plain HTTP against a real `rrm server`: who may see what, what
the session cookie holds, that the stream carries the events table, and that no secret value leaks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

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

PAGES = ["/ui", "/ui/runtimes", "/ui/runtimes/anything", "/ui/components", "/ui/components/anything"]
FRAGMENTS = [
    "/ui/fragments/fleet",
    "/ui/fragments/runtimes",
    "/ui/fragments/runtimes/anything",
    "/ui/fragments/components",
    "/ui/fragments/components/anything",
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


def test_a_bad_token_is_refused_and_a_good_one_gets_a_signed_cookie_without_the_token(
    server: ServerProcess,
) -> None:
    with browser(server) as client:
        refused = expect_status(client.post("/ui/login", data={"token": "rrmat_not-a-token"}), 401)
        assert "not valid" in refused.text and 'name="token"' in refused.text
        assert "set-cookie" not in refused.headers
        expect_status(client.get("/ui/login", params={"token": "rrmat_not-a-token"}), 401)

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


def test_the_one_click_link_signs_in_and_drops_the_token_from_the_address(server: ServerProcess) -> None:
    with browser(server) as client:
        response = expect_status(client.get("/ui/login", params={"token": server.admin_token}), 303)
        assert response.headers["location"] == "/ui"
        assert response.headers["referrer-policy"] == "no-referrer"
        expect_status(client.get("/ui"), 200)
        for elsewhere in ("https://elsewhere.invalid/", "//elsewhere.invalid/ui", "/api/v1/runtimes"):
            params = {"token": server.admin_token, "next": elsewhere}
            assert client.get("/ui/login", params=params).headers["location"] == "/ui"


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
        for path in ["/ui/runtimes", "/ui/components", *FRAGMENTS[:2]]:
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
    value = f"do-not-show-{uuid.uuid4().hex}"
    label = unique("t-leak")
    runtime = unique("leak")
    fleet.agent(runtime, {label: "yes"})
    name = unique("leaky")
    apply(
        server.admin,
        [
            secret(f"{name}-creds", {"token": value}),
            http_binding(name, f"{label}=yes", "http://leak.invalid/", token_ref=(f"{name}-creds", "token")),
        ],
    )
    apply(
        server.admin,
        [http_binding(name, f"{label}=yes", "http://leak2.invalid/", (f"{name}-creds", "token"))],
    )
    fleet.wait_runtime(runtime, lambda d: synced(d) and condition_true(d, "Ready"), "Ready with the secret")
    paths = [
        "/ui",
        "/ui/runtimes",
        f"/ui/runtimes/{runtime}",
        "/ui/components",
        f"/ui/components/{name}",
        f"/ui/components/{name}?from=1&to=2",
        "/ui/fragments/fleet",
        "/ui/fragments/runtimes",
        f"/ui/fragments/runtimes/{runtime}",
        "/ui/fragments/components",
        f"/ui/fragments/components/{name}",
    ]
    with signed_in(server) as client:
        pages = {path: expect_status(client.get(path), 200).text for path in paths}
        for path, text in pages.items():
            assert value not in text, path
        # the pages do show the secret, by name, key and reference
        assert f'data-secret="{name}-creds"' in pages["/ui/components"]
        assert "secretKeyRef" in pages[f"/ui/components/{name}"]
        with event_stream(client, params={"after": 0}) as events:
            seen = first_event(
                events, lambda e: e["subject"] == f"runtime/{runtime}" and "Applied" in e["type"]
            )
            assert value not in json.dumps(seen)
    history = expect_status(server.admin.get("/api/v1/events", params={"limit": 1000}), 200).text
    assert value not in history
