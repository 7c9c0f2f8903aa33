"""`rrm token create|list|revoke` and `rrm get events [--watch]` against a fake admin API."""

from __future__ import annotations

import json
from typing import Any

import httpx
import yaml
from typer.testing import CliRunner

from rrm.cli.app import app
from rrm.cli.client import AdminClient, server_sent_events

URL = "http://cp.test:8080"


def event(id_: int, type_: str = "RuntimeRegistered") -> dict[str, object]:
    return {
        "id": id_,
        "time": "2026-01-02T03:04:05+00:00",
        "type": type_,
        "subject": "runtime/a",
        "message": "m",
    }


def run(handler: httpx.MockTransport, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), obj=AdminClient(URL, "t", transport=handler))
    return result.exit_code, result.output


def test_token_create_sends_the_role_and_prints_the_token_once() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        created = {"token": "rrmat_new", "id": "0123456789ab", "role": "viewer", "expires_at": None}
        return httpx.Response(201, json=created)

    code, output = run(
        httpx.MockTransport(answer), "token", "create", "--role", "viewer", "--description", "wall"
    )
    assert code == 0, output
    assert "rrmat_new" in output and "viewer" in output
    assert seen[0].url.path == "/api/v1/tokens"
    assert json.loads(seen[0].content) == {"role": "viewer", "description": "wall"}
    code, output = run(httpx.MockTransport(answer), "token", "create", "--role", "root")
    assert code == 2


def test_token_create_with_a_ttl_sends_it_in_seconds_and_refuses_a_bad_one() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        created = {
            "token": "rrmat_new",
            "id": "0123456789ab",
            "role": "admin",
            "expires_at": "2026-01-03T00:00:00+00:00",
        }
        return httpx.Response(201, json=created)

    code, output = run(httpx.MockTransport(answer), "token", "create", "--role", "admin", "--ttl", "24h")
    assert code == 0, output
    assert json.loads(seen[0].content) == {"role": "admin", "description": "", "ttl_seconds": 86400}
    assert "0123456789ab" in output and "2026-01-03" in output
    code, output = run(httpx.MockTransport(answer), "token", "create", "--role", "admin", "--ttl", "soon")
    assert code == 2 and len(seen) == 1


def test_token_create_prints_the_answer_as_json_or_yaml_for_scripts() -> None:
    created = {
        "token": "rrmat_new",
        "id": "0123456789ab",
        "role": "viewer",
        "description": "wall",
        "created_at": "2026-01-01T00:00:00+00:00",
        "expires_at": None,
        "expired": False,
    }
    answer = httpx.MockTransport(lambda request: httpx.Response(201, json=created))
    code, output = run(answer, "token", "create", "--role", "viewer", "-o", "json")
    assert code == 0 and json.loads(output) == created
    code, output = run(answer, "token", "create", "--role", "viewer", "-o", "yaml")
    assert code == 0 and yaml.safe_load(output) == created
    code, output = run(answer, "token", "create", "--role", "viewer", "-o", "xml")
    assert code == 2


TOKENS: list[dict[str, Any]] = [
    {
        "id": "aaaaaaaaaaaa",
        "role": "admin",
        "description": "first",
        "created_at": "2026-01-01T00:00:00+00:00",
        "expires_at": None,
        "expired": False,
    },
    {
        "id": "bbbbbbbbbbbb",
        "role": "viewer",
        "description": "",
        "created_at": "2026-01-01T00:00:00+00:00",
        "expires_at": "2026-01-02T00:00:00+00:00",
        "expired": True,
    },
]


def test_token_list_shows_ids_roles_and_expiry_and_passes_json_through() -> None:
    answer = httpx.MockTransport(lambda request: httpx.Response(200, json=TOKENS))
    code, output = run(answer, "token", "list")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].split() == ["ID", "ROLE", "DESCRIPTION", "CREATED", "EXPIRES"]
    assert lines[1].split()[:3] == ["aaaaaaaaaaaa", "admin", "first"] and lines[1].endswith("never")
    assert lines[2].split()[:2] == ["bbbbbbbbbbbb", "viewer"] and "expired" in lines[2]
    code, output = run(answer, "token", "list", "-o", "json")
    assert code == 0 and json.loads(output) == TOKENS


def test_token_revoke_deletes_by_id_and_reports_refusals() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/aaaaaaaaaaaa"):
            return httpx.Response(409, json={"detail": "this is the last admin token"})
        return httpx.Response(200, json={**TOKENS[1], "expired": False})

    code, output = run(httpx.MockTransport(answer), "token", "revoke", "bbbbbbbbbbbb")
    assert code == 0, output
    assert (seen[0].method, seen[0].url.path) == ("DELETE", "/api/v1/tokens/bbbbbbbbbbbb")
    assert "bbbbbbbbbbbb" in output and "revoked" in output
    code, output = run(httpx.MockTransport(answer), "token", "revoke", "aaaaaaaaaaaa")
    assert code == 1 and "last admin token" in output


def test_token_revoke_prints_the_revoked_token_as_json_or_yaml() -> None:
    answer = httpx.MockTransport(lambda request: httpx.Response(200, json=TOKENS[1]))
    code, output = run(answer, "token", "revoke", "bbbbbbbbbbbb", "-o", "json")
    assert code == 0 and json.loads(output) == TOKENS[1]
    code, output = run(answer, "token", "revoke", "bbbbbbbbbbbb", "--output", "yaml")
    assert code == 0 and yaml.safe_load(output) == TOKENS[1]


def test_get_events_pages_through_the_table() -> None:
    afters: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params["after"])
        afters.append(request.url.params["after"])
        limit = int(request.url.params["limit"])
        ids = range(after + 1, min(after + limit, 1500) + 1)
        return httpx.Response(200, json=[event(i) for i in ids])

    code, output = run(httpx.MockTransport(answer), "get", "events", "-o", "json")
    assert code == 0, output
    assert [e["id"] for e in json.loads(output)] == list(range(1, 1501))
    assert afters == ["0", "1000"]


def test_watch_follows_the_stream_from_the_given_id() -> None:
    body = "retry: 2000\n\n: keepalive\n\n" + "".join(
        f"id: {e['id']}\ndata: {json.dumps(e)}\n\n" for e in (event(7), event(8, "ReadyTrue"))
    )
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    code, output = run(httpx.MockTransport(answer), "get", "events", "--watch", "--after", "6")
    assert code == 0, output
    assert seen[0].url.path == "/api/v1/events/stream" and seen[0].url.params["after"] == "6"
    lines = output.splitlines()
    assert lines[0].startswith("TIME (UTC)")
    assert (
        lines[1].startswith("2026-01-02 03:04:05  RuntimeRegistered") and lines[2].split()[2] == "ReadyTrue"
    )


def test_server_sent_events_joins_data_lines_and_skips_comments() -> None:
    lines = [": hi", "id: 1", 'data: {"a":', "data: 1}", "", "event: x", "", 'data: {"b": 2}', ""]
    assert list(server_sent_events(lines)) == [{"a": 1}, {"b": 2}]
