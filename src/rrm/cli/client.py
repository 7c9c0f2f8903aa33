"""A thin synchronous client of the admin API (docs/api.md) that turns HTTP failures into readable errors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from rrm.cli import config

REQUEST_TIMEOUT = 30.0
STREAM_READ_TIMEOUT = 60.0  # the server sends a keepalive at least every 15 s


class ApiError(Exception):
    """The control plane refused a request; `lines` are ready to print, one problem per line."""

    def __init__(self, status_code: int, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.status_code = status_code
        self.lines = lines


class ControlPlaneUnreachable(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the control plane at {url} (is `rrm server` running?): {reason}")
        self.url = url


def format_field_error(error: Mapping[str, Any]) -> str:
    """`document N (Kind/name): field: message`, leaving out the parts the server did not give.

    Also understands FastAPI's own request-validation items (`loc`, `msg`).
    """
    if "msg" in error and "message" not in error:
        location = ".".join(str(part) for part in error.get("loc") or [])
        return f"{location}: {error['msg']}" if location else str(error["msg"])
    where = []
    if error.get("document") is not None:
        where.append(f"document {error['document']}")
    if error.get("kind") or error.get("name"):
        identity = f"{error.get('kind') or '?'}/{error.get('name') or '?'}"
        where.append(f"({identity})" if where else identity)
    parts = [" ".join(where)] if where else []
    if error.get("field"):
        parts.append(str(error["field"]))
    parts.append(str(error.get("message", "")))
    return ": ".join(parts)


def error_lines(response: httpx.Response) -> list[str]:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text.strip() or None
    if isinstance(detail, list) and detail:
        return [format_field_error(item) if isinstance(item, Mapping) else str(item) for item in detail]
    if detail:
        return [f"{detail} (HTTP {response.status_code})"]
    return [f"HTTP {response.status_code} {response.reason_phrase}"]


def server_sent_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON `data` of each server-sent event; comments (keepalives) and other fields are skipped."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield json.loads("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def _segment(name: str) -> str:
    return quote(name, safe="")


class AdminClient:
    """One method per admin endpoint; `transport` lets tests answer without a server."""

    def __init__(self, url: str, token: str, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=REQUEST_TIMEOUT,
            transport=transport,
        )

    @classmethod
    def from_environment(cls, transport: httpx.BaseTransport | None = None) -> AdminClient:
        return cls(config.control_plane_url(), config.admin_token(), transport)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ControlPlaneUnreachable(self.url, str(exc) or type(exc).__name__) from None
        if response.is_error:
            raise ApiError(response.status_code, error_lines(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def list_runtimes(self, selector: str | None = None) -> list[dict[str, Any]]:
        params = {"selector": selector} if selector else None
        return self._request("GET", "/api/v1/runtimes", params=params)

    def register_runtime(
        self,
        name: str,
        kind: str,
        labels: Mapping[str, str],
        token_ttl_seconds: int,
        scenarios: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Without `scenarios` the control plane puts the runtime in DEFAULT."""
        body: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "labels": dict(labels),
            "token_ttl_seconds": token_ttl_seconds,
        }
        if scenarios is not None:
            body["scenarios"] = list(scenarios)
        return self._request("POST", "/api/v1/runtimes", json=body)

    def get_runtime(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/runtimes/{_segment(name)}")

    def delete_runtime(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/runtimes/{_segment(name)}")

    def update_labels(
        self, name: str, set_labels: Mapping[str, str], remove: Sequence[str]
    ) -> dict[str, Any]:
        body = {"set": dict(set_labels), "remove": list(remove)}
        return self._request("PATCH", f"/api/v1/runtimes/{_segment(name)}/labels", json=body)

    def new_pairing_token(self, name: str, ttl_seconds: int) -> dict[str, Any]:
        return self._request(
            "POST", f"/api/v1/runtimes/{_segment(name)}/token", json={"ttl_seconds": ttl_seconds}
        )

    def revoke_runtime(self, name: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/runtimes/{_segment(name)}/revoke")

    def apply(self, documents: Sequence[Mapping[str, Any]], dry_run: bool, strict: bool) -> dict[str, Any]:
        body = {"documents": list(documents), "dry_run": dry_run, "strict": strict}
        return self._request("POST", "/api/v1/apply", json=body)

    def list_components(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/components")

    def get_component(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/components/{_segment(name)}")

    def component_history(self, name: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/v1/components/{_segment(name)}/history")

    def rollback_component(self, name: str, revision: int) -> dict[str, Any]:
        return self._request(
            "POST", f"/api/v1/components/{_segment(name)}/rollback", json={"revision": revision}
        )

    def delete_component(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/components/{_segment(name)}")

    def list_secrets(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/secrets")

    def delete_secret(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/secrets/{_segment(name)}")

    def create_token(self, role: str, description: str, ttl_seconds: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"role": role, "description": description}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return self._request("POST", "/api/v1/tokens", json=body)

    def list_tokens(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/tokens")

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/api/v1/tokens/{_segment(token_id)}")

    # progressive rollouts
    def list_rollouts(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/rollouts")

    def get_rollout(self, component: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/rollouts/{_segment(component)}")

    def steer_rollout(self, component: str, action: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/rollouts/{_segment(component)}/{_segment(action)}")

    def list_rollout_policies(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/rollout-policies")

    def delete_rollout_policy(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/rollout-policies/{_segment(name)}")

    # Compass and the System Broker (rrm.cli.compass) ---------------------------------------------------

    def list_applications(self, runtime: str | None = None) -> list[dict[str, Any]]:
        params = {"runtime": runtime} if runtime else None
        return self._request("GET", "/api/v1/applications", params=params)

    def get_application(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/applications/{_segment(name)}")

    def delete_application(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/applications/{_segment(name)}")

    def list_scenarios(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/scenarios")

    def create_scenario(self, name: str) -> dict[str, Any]:
        return self._request("POST", "/api/v1/scenarios", json={"name": name})

    def delete_scenario(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/scenarios/{_segment(name)}")

    def assign_scenario(self, name: str, selector: str) -> dict[str, Any]:
        return self._request(
            "PUT", f"/api/v1/scenarios/{_segment(name)}/assignment", json={"selector": selector}
        )

    def unassign_scenario(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/scenarios/{_segment(name)}/assignment")

    def change_runtime_scenarios(
        self, runtime: str, add: Sequence[str], remove: Sequence[str]
    ) -> dict[str, Any]:
        body = {"add": list(add), "remove": list(remove)}
        return self._request("PATCH", f"/api/v1/runtimes/{_segment(runtime)}/scenarios", json=body)

    def list_label_definitions(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/labeldefinitions")

    def delete_label_definition(self, key: str) -> None:
        self._request("DELETE", f"/api/v1/labeldefinitions/{quote(key, safe='/')}")

    def broker_credentials(self, runtime: str, rotate: bool) -> dict[str, Any]:
        return self._request(
            "POST", f"/api/v1/runtimes/{_segment(runtime)}/broker-credentials", json={"rotate": rotate}
        )

    def list_events(self, after: int, limit: int) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/events", params={"after": after, "limit": limit})

    def stream_events(self, after: int) -> Iterator[dict[str, Any]]:
        """Every event with id > `after`, then each new one as it is recorded, until the stream ends."""
        timeout = httpx.Timeout(REQUEST_TIMEOUT, read=STREAM_READ_TIMEOUT)
        try:
            with self._http.stream(
                "GET", "/api/v1/events/stream", params={"after": after}, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    raise ApiError(response.status_code, error_lines(response))
                yield from server_sent_events(response.iter_lines())
        except httpx.TransportError as exc:
            raise ControlPlaneUnreachable(self.url, str(exc) or type(exc).__name__) from None
