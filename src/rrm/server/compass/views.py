"""What the admin API and the agent API show of applications and scenarios. Credentials appear only as
their type: values are write-only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rrm.core.scenarios import binding_name
from rrm.server.compass.manifests import bundle_url
from rrm.server.compass.registry import RegisteredApplication


def _definition(item: Mapping[str, Any], base_url: str | None, with_target: bool) -> dict[str, Any]:
    view: dict[str, Any] = {"name": item["name"], "description": item.get("description", "")}
    if with_target:
        view["target_url"] = item.get("targetUrl") or base_url
    if "spec" in item:
        view["spec"] = dict(item["spec"])
    return view


def application_view(app: RegisteredApplication, scenarios: Iterable[str] | None = None) -> dict[str, Any]:
    """`scenarios`: the ones to show (a runtime sees only those it shares); all of them when None."""
    spec = app.manifest["spec"]
    base_url = spec.get("baseUrl")
    shown = app.application.scenarios if scenarios is None else app.application.scenarios & set(scenarios)
    return {
        "name": app.name,
        "uid": app.uid,
        "revision": app.application.revision,
        "description": spec.get("description", ""),
        "provider": spec.get("provider", ""),
        "base_url": base_url,
        "labels": dict(app.labels),
        "scenarios": sorted(shown),
        "apis": [_definition(api, base_url, True) for api in spec.get("apis") or []],
        "events": [_definition(event, base_url, False) for event in spec.get("events") or []],
        "bundles": [
            {
                "name": bundle["name"],
                "description": bundle.get("description", ""),
                "apis": list(bundle.get("apis") or []),
                "events": list(bundle.get("events") or []),
                "url": bundle_url(spec, bundle),
                "credentials": {"type": (bundle.get("credentials") or {}).get("type", "none")},
                "binding": binding_name(app.name, bundle["name"]),
            }
            for bundle in spec.get("bundles") or []
        ],
        "updated_at": app.updated_at.isoformat(),
    }
