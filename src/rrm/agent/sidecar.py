"""Ask daprd what it really loaded (`GET /v1.0/metadata`): a written file is not yet a loaded component.

The agent asks several times after every apply, so the question goes over one kept-alive plain-HTTP
connection to loopback: a new HTTP client per question cost more CPU than the rest of an update."""

from __future__ import annotations

import http.client
import json
import threading

from rrm.wire.protocol import LoadedComponent, SidecarReport

METADATA_TIMEOUT_SECONDS = 3.0
METADATA_PATH = "/v1.0/metadata"


class SidecarClient:
    """One daprd on 127.0.0.1:`port`. Safe to use from several threads: their questions take turns."""

    def __init__(self, port: int, api_token: str | None = None) -> None:
        self.port = port
        self._headers = {"dapr-api-token": api_token} if api_token else {}
        self._connection: http.client.HTTPConnection | None = None
        self._reused = False  # the connection has answered before (daprd may have closed it since)
        self._lock = threading.Lock()

    def query(self) -> SidecarReport:
        """What daprd lists; an unreachable or odd answer is reported, never raised."""
        try:
            with self._lock:
                status, data = self._get()
        except (OSError, http.client.HTTPException) as exc:
            return unreachable(f"{type(exc).__name__}: {exc}")
        if status != 200:
            return unreachable(f"GET {METADATA_PATH} answered {status}")
        try:
            body = json.loads(data)
        except ValueError as exc:
            return unreachable(f"{type(exc).__name__}: {exc}")
        return sidecar_report_of(body)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _get(self) -> tuple[int, bytes]:
        """One GET; on a kept connection that daprd closed meanwhile, once more at once on a new one."""
        while True:
            if self._connection is None:
                self._connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=METADATA_TIMEOUT_SECONDS
                )
                self._reused = False
            try:
                self._connection.request("GET", METADATA_PATH, headers=self._headers)
                response = self._connection.getresponse()
                data = response.read()
            except ConnectionError:
                stale = self._reused
                self._drop()
                if stale:
                    continue
                raise
            except (OSError, http.client.HTTPException):
                self._drop()
                raise
            if response.will_close:
                self._drop()
            else:
                self._reused = True
            return response.status, data

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


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
