"""`rrm token create` and `rrm get events [--watch]` against a fake admin API."""

from __future__ import annotations

import json

import httpx
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
        return httpx.Response(201, json={"token": "rrmat_new", "role": "viewer"})

    code, output = run(
        httpx.MockTransport(answer), "token", "create", "--role", "viewer", "--description", "wall"
    )
    assert code == 0, output
    assert "rrmat_new" in output and "viewer" in output
    assert seen[0].url.path == "/api/v1/tokens"
    assert json.loads(seen[0].content) == {"role": "viewer", "description": "wall"}
    code, output = run(httpx.MockTransport(answer), "token", "create", "--role", "root")
    assert code == 2


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
