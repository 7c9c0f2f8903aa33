"""Request body limits (`rrm.server.limits`): which limit a path has, how the status limit is computed, and
guard's answer to declared and chunked bodies, driven through its ASGI interface."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from rrm.server.limits import (
    AGENT_BODY_LIMIT,
    BROKER_BODY_LIMIT,
    DEFAULT_BODY_LIMIT,
    STATUS_BODY_LIMIT,
    BodyLimitGuard,
    BodyLimits,
    control_plane_limits,
    static_broker_limits,
)
from rrm.server.settings import DEFAULT_MAX_APPLY_BYTES, ServerSettings
from rrm.wire import protocol as plain

COMPONENTS = 1000
NAME = "c" * 63  # a DNS-1123 label at its longest


def status_of_a_thousand_components(text_character: str) -> bytes:
    """Every component failed with a full-length message, listed by the sidecar and drifted in 20 fields."""
    text = text_character * plain.MAX_TEXT_LENGTH
    report = plain.StatusReport(
        applied_hash="a" * 64,
        resources=[
            plain.ResourceResult(name=NAME, state="failed", message=text, revision=2**40)
            for _ in range(COMPONENTS)
        ],
        sidecar=plain.SidecarReport(
            reachable=True,
            app_id=NAME,
            runtime_version="1.15.0",
            components=[
                plain.LoadedComponent(name=NAME, type="bindings.azure.eventgrid", version="v1")
                for _ in range(COMPONENTS)
            ],
            error=text,
        ),
        reload=plain.ReloadResult(command=text, exit_code=1, output=text),
        drift=[
            plain.DriftRecord(
                resource=f"Component/{NAME}",
                change="modified",
                detected_at=datetime.now(UTC),
                fields=[f"spec.metadata[{i}].value" for i in range(20)],
            )
            for _ in range(COMPONENTS)
        ],
        agent_version="1.0.0",
        target="selfhosted",
        message=text,
    )
    return plain.dumps(report)


def test_the_status_limit_holds_a_thousand_components_with_room_to_spare() -> None:
    sizes = [len(status_of_a_thousand_components(c)) for c in ("x", "é", "€")]  # 1, 2 and 3 bytes in UTF-8
    assert sizes[0] > STATUS_BODY_LIMIT / 2.5  # not a limit far beyond what a status needs
    assert all(size < STATUS_BODY_LIMIT for size in sizes)


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/agent/v1/status", STATUS_BODY_LIMIT),
        ("/agent/v1/pair", AGENT_BODY_LIMIT),
        ("/agent/v1/rotate", AGENT_BODY_LIMIT),
        ("/agent/v1/rotate/challenge", AGENT_BODY_LIMIT),
        ("/api/v1/apply", 123_456),
        ("/api/v1/runtimes", DEFAULT_BODY_LIMIT),
        ("/broker/v2/service_instances/x", BROKER_BODY_LIMIT),
        ("/environments/v2/service_instances/x", BROKER_BODY_LIMIT),
        ("/brokerage", DEFAULT_BODY_LIMIT),
        ("/ui/login", DEFAULT_BODY_LIMIT),
    ],
)
def test_each_path_has_its_limit(path: str, limit: int) -> None:
    assert control_plane_limits(123_456, "/broker", "/environments").of(path) == limit


def test_the_apply_limit_is_a_setting() -> None:
    assert ServerSettings.from_env({}).max_apply_bytes == DEFAULT_MAX_APPLY_BYTES
    assert ServerSettings.from_env({"RRM_MAX_APPLY_BYTES": "1048576"}).max_apply_bytes == 1048576
    for wrong in ("0", "-1", "4MB"):
        with pytest.raises(ValueError, match="RRM_MAX_APPLY_BYTES"):
            ServerSettings.from_env({"RRM_MAX_APPLY_BYTES": wrong})


class Echo:
    """An ASGI app answering with the body it read, to see what the guard hands on."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


CONTROL_PLANE = control_plane_limits(1024, "/broker", "/environments")


def call(
    headers: dict[str, str],
    chunks: list[bytes],
    path: str = "/agent/v1/pair",
    limits: BodyLimits = CONTROL_PLANE,
) -> tuple[int, bytes, int]:
    """(status, body, chunks the guard read) for a request whose body arrives in `chunks`."""
    scope = {
        "type": "http",
        "path": path,
        "method": "POST",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    messages: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    read = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal read
        read += 1
        return messages[read - 1] if read <= len(messages) else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(BodyLimitGuard(Echo(), limits)(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), read


def test_a_declared_length_over_the_limit_is_refused_without_reading() -> None:
    status, body, read = call({"content-length": str(AGENT_BODY_LIMIT + 1)}, [b"x"])
    assert (status, read) == (413, 0)
    assert (
        json.loads(body)["detail"]
        == f"the request body is larger than this endpoint's limit of {AGENT_BODY_LIMIT} bytes"
    )


@pytest.mark.parametrize(
    ("path", "limits"),
    [
        ("/broker/v2/service_instances/x", CONTROL_PLANE),
        ("/environments/v2/service_instances/x", CONTROL_PLANE),
        ("/v2/service_instances/x", static_broker_limits()),
    ],
)
def test_a_broker_refuses_a_large_body_in_the_osb_error_shape(path: str, limits: BodyLimits) -> None:
    message = f"the request body is larger than this endpoint's limit of {BROKER_BODY_LIMIT} bytes"
    declared = call({"content-length": str(BROKER_BODY_LIMIT + 1)}, [b"x"], path, limits)
    chunked = call({"transfer-encoding": "chunked"}, [b"x" * BROKER_BODY_LIMIT, b"x"], path, limits)
    for status, body, _ in (declared, chunked):
        assert (status, json.loads(body)) == (413, {"description": message})


def test_a_chunked_body_is_read_only_up_to_the_limit() -> None:
    chunks = [b"x" * 1024] * (2 * AGENT_BODY_LIMIT // 1024)
    status, _, read = call({"transfer-encoding": "chunked"}, chunks)
    assert status == 413
    assert read == AGENT_BODY_LIMIT // 1024 + 1  # the chunk that went past the limit, and no more


def test_bodies_within_the_limit_reach_the_app_whole() -> None:
    chunks: list[Any] = [b"a" * 1000, b"b" * 1000, b""]
    assert call({"transfer-encoding": "chunked"}, chunks)[:2] == (200, b"a" * 1000 + b"b" * 1000)
    assert call({"content-length": "2000"}, [b"a" * 1000, b"b" * 1000])[:2] == (
        200,
        b"a" * 1000 + b"b" * 1000,
    )
    assert call({}, [b""], path="/api/v1/apply")[:2] == (200, b"")


def test_free_text_is_truncated_alike_by_the_agent_and_the_control_plane() -> None:
    long = "z" * 5000
    sent = plain.StatusReport(
        resources=[plain.ResourceResult(name="a", state="failed", message=long)],
        sidecar=plain.SidecarReport(reachable=False, error=long),
        reload=plain.ReloadResult(command="reload", exit_code=1, output=long),
        message=long,
    )
    received = plain.decode(plain.StatusReport, json.dumps({**plain.encode(sent), "message": long}))
    expected = "z" * (plain.MAX_TEXT_LENGTH - len(" [truncated]")) + " [truncated]"
    output_end = "[truncated] " + "z" * (plain.MAX_TEXT_LENGTH - len("[truncated] "))  # why it failed
    for report in (plain.encode(sent), plain.encode(received)):
        texts = [report["resources"][0]["message"], report["sidecar"]["error"], report["message"]]
        assert texts == [expected] * 3
        assert report["reload"]["output"] == output_end
    assert plain.truncated("short") == "short"
