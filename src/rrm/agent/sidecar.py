"""Ask daprd what it really loaded (`GET /v1.0/metadata`): a written file is not yet a loaded component."""

from __future__ import annotations

import httpx

from rrm.agent.client import tls_verification
from rrm.wire.protocol import LoadedComponent, SidecarReport

METADATA_TIMEOUT_SECONDS = 3.0


def query_sidecar(
    port: int, api_token: str | None = None, transport: httpx.BaseTransport | None = None
) -> SidecarReport:
    headers = {"dapr-api-token": api_token} if api_token else {}
    url = f"http://127.0.0.1:{port}/v1.0/metadata"
    try:
        with httpx.Client(
            transport=transport, timeout=METADATA_TIMEOUT_SECONDS, verify=tls_verification([url])
        ) as http:
            response = http.get(url, headers=headers)
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return SidecarReport(reachable=False, error=f"{type(exc).__name__}: {exc}"[:500])
    if not isinstance(body, dict):
        return SidecarReport(reachable=False, error="metadata answer is not a JSON object")
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
