"""Ask daprd what it really loaded (`GET /v1.0/metadata`): a written file is not yet a loaded component.

The agent asks several times after every apply (a few hundred microseconds of CPU each, most of an
update's), so the question is one prepared request sent on the event loop over a kept-alive connection
to loopback (`PlainHTTPTransport`): no thread to hand it to, no client to build it."""

from __future__ import annotations

import json

import httpx

from rrm.agent.plain_http import PlainHTTPTransport
from rrm.wire.protocol import LoadedComponent, SidecarReport

METADATA_TIMEOUT_SECONDS = 3.0
METADATA_PATH = "/v1.0/metadata"


class SidecarClient:
    """One daprd on 127.0.0.1:`port`."""

    def __init__(self, port: int, api_token: str | None = None) -> None:
        headers = {"Host": f"127.0.0.1:{port}", "Accept": "application/json"}
        if api_token:
            headers["dapr-api-token"] = api_token
        self._question = httpx.Request(
            "GET",
            f"http://127.0.0.1:{port}{METADATA_PATH}",
            headers=headers,
            extensions={
                "timeout": dict.fromkeys(("connect", "read", "write", "pool"), METADATA_TIMEOUT_SECONDS)
            },
        )
        self._transport = PlainHTTPTransport(keepalive_expiry=None)  # daprd's to close; see `_get`

    async def query(self) -> SidecarReport:
        """What daprd lists; an unreachable or odd answer is reported, never raised."""
        try:
            status, data = await self._get()
        except httpx.TransportError as exc:
            return unreachable(f"{type(exc).__name__}: {exc}")
        if status != 200:
            return unreachable(f"GET {METADATA_PATH} answered {status}")
        try:
            body = json.loads(data)
        except ValueError as exc:
            return unreachable(f"{type(exc).__name__}: {exc}")
        return sidecar_report_of(body)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def _get(self) -> tuple[int, bytes]:
        """One GET; on a kept connection that daprd closed just as it was sent, once more at once on a new
        one (the transport does not pick a connection it sees closed)."""
        for attempt in (1, 2):
            try:
                response = await self._transport.handle_async_request(self._question)
                return response.status_code, await response.aread()
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def unreachable(error: str) -> SidecarReport:
    return SidecarReport(reachable=False, error=error[:500])


def sidecar_report_of(body: object) -> SidecarReport:
    """The report for a metadata answer's JSON body."""
    if not isinstance(body, dict):
        return unreachable("metadata answer is not a JSON object")
    components = [
        LoadedComponent(
            name=str(c.get("name", "")), type=str(c.get("type", "")), version=str(c.get("version", ""))
        )
        for c in body.get("components") or []
        if isinstance(c, dict)
    ]
    return SidecarReport(
        reachable=True,
        app_id=_text_or_none(body.get("id")),
        runtime_version=_text_or_none(body.get("runtimeVersion")),
        components=components,
    )


def _text_or_none(value: object) -> str | None:
    """A string as it is, anything else as unknown: the report must stay what the protocol allows."""
    return value if isinstance(value, str) else None
