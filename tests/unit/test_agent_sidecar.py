"""What daprd reports as loaded, read from a real HTTP endpoint on loopback, and the reload hook."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rrm.agent.reload import run_reload_command
from rrm.agent.sidecar import query_sidecar
from rrm.agent.status import NOT_LOADED_MESSAGE, mark_unloaded
from rrm.wire.plain import LoadedComponent, ResourceResult, SidecarReport

METADATA = {
    "id": "orders",
    "runtimeVersion": "1.18.3",
    "enabledFeatures": ["HotReload"],
    "components": [{"name": "cache", "type": "state.redis", "version": "v1", "capabilities": ["ETAG"]}],
}


class FakeDaprd(BaseHTTPRequestHandler):
    seen_tokens: list[str | None] = []

    def do_GET(self) -> None:
        FakeDaprd.seen_tokens.append(self.headers.get("dapr-api-token"))
        body = json.dumps(METADATA).encode() if self.path == "/v1.0/metadata" else b"{}"
        self.send_response(200 if self.path == "/v1.0/metadata" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def daprd_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeDaprd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sidecar_report_lists_loaded_components_and_sends_api_token(daprd_port: int) -> None:
    report = query_sidecar(daprd_port, api_token="tok")

    assert report == SidecarReport(
        reachable=True,
        app_id="orders",
        runtime_version="1.18.3",
        components=[LoadedComponent(name="cache", type="state.redis", version="v1")],
    )
    assert FakeDaprd.seen_tokens[-1] == "tok"


def test_an_id_or_version_that_is_not_a_string_is_reported_as_unknown() -> None:
    odd = {**METADATA, "id": 7, "runtimeVersion": ["1.18"]}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=odd))

    report = query_sidecar(3500, transport=transport)

    assert (report.reachable, report.app_id, report.runtime_version) == (True, None, None)
    assert [c.name for c in report.components] == ["cache"]


def test_unreachable_sidecar_is_reported_not_raised() -> None:
    report = query_sidecar(free_port())

    assert not report.reachable
    assert report.error


def test_component_counts_as_loaded_only_when_daprd_lists_it() -> None:
    sidecar = SidecarReport(reachable=True, components=[LoadedComponent(name="cache", type="state.redis")])
    resources = [
        ResourceResult(name="cache", state="applied"),
        ResourceResult(name="queue", state="applied"),
        ResourceResult(name="broken", state="failed", message="conflict"),
    ]

    marked = mark_unloaded(resources, sidecar)

    assert [(r.name, r.state) for r in marked] == [
        ("cache", "applied"),
        ("queue", "pending"),
        ("broken", "failed"),
    ]
    assert marked[1].message == NOT_LOADED_MESSAGE
    assert mark_unloaded(resources, SidecarReport(reachable=False)) == resources


def test_reload_command_keeps_exit_code_and_output_tail() -> None:
    result = run_reload_command("printf 'x%.0s' $(seq 3000); echo; echo tail-marker >&2; exit 3")

    assert result.exit_code == 3
    assert result.output.endswith("tail-marker\n")
    assert len(result.output.encode()) <= 2048


def test_reload_command_is_killed_after_its_timeout() -> None:
    started = time.monotonic()
    result = run_reload_command("sleep 30 & wait", timeout=0.5)

    assert result.exit_code == -1
    assert "killed" in result.output
    assert time.monotonic() - started < 10
