"""What the admin API, the agent API and the dashboard show of applications and scenarios. Credentials
appear only as their type: values are write-only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rrm.core.scenarios import DEFAULT_SCENARIO, binding_name
from rrm.server.compass.manifests import bundle_url
from rrm.server.compass.registry import RegisteredApplication
from rrm.server.fleet import Fleet, RuntimeEntry


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


# who sees what: the fleet's memory, read on the event loop ----------------------------------------------


def runtime_named(fleet: Fleet, name: str) -> RuntimeEntry | None:
    return next((r for r in fleet.runtimes.values() if r.name == name), None)


def scenarios_of(fleet: Fleet, runtime: RuntimeEntry) -> frozenset[str]:
    """The runtime's effective scenarios: its own plus those whose automatic assignment matches it."""
    return fleet.registry.scenarios_of(runtime.id, dict(runtime.labels))


def runtime_scenarios_view(fleet: Fleet, runtime: RuntimeEntry) -> dict[str, Any]:
    return {
        "runtime": runtime.name,
        "explicit": list(fleet.registry.explicit_scenarios(runtime.id)),
        "effective": sorted(scenarios_of(fleet, runtime)),
    }


def runtime_applications(fleet: Fleet, runtime: RuntimeEntry) -> list[dict[str, Any]]:
    """The applications the runtime sees, each with only the scenarios it shares with them."""
    scenarios = scenarios_of(fleet, runtime)
    return [application_view(app, scenarios) for app in fleet.registry.visible(scenarios)]


def _by_name(fleet: Fleet) -> list[RuntimeEntry]:
    return sorted(fleet.runtimes.values(), key=lambda r: r.name)


def seen_by(fleet: Fleet) -> dict[str, list[str]]:
    """application name → names of the runtimes that see it."""
    seen: dict[str, list[str]] = {name: [] for name in fleet.registry.applications}
    for runtime in _by_name(fleet):
        for app in fleet.registry.visible(scenarios_of(fleet, runtime)):
            seen[app.name].append(runtime.name)
    return seen


def application_list(fleet: Fleet) -> list[dict[str, Any]]:
    """Every application by name, with the runtimes that see it."""
    seen = seen_by(fleet)
    apps = sorted(fleet.registry.applications.values(), key=lambda a: a.name)
    return [{**application_view(app), "runtimes": seen.get(app.name, [])} for app in apps]


def scenario_views(fleet: Fleet, names: Iterable[str]) -> list[dict[str, Any]]:
    """The scenarios `names` (as stored) with their automatic assignment, applications and runtimes."""
    registry = fleet.registry
    runtimes: dict[str, list[str]] = {}
    for runtime in _by_name(fleet):
        for scenario in scenarios_of(fleet, runtime):
            runtimes.setdefault(scenario, []).append(runtime.name)
    return [
        {
            "name": name,
            "builtin": name == DEFAULT_SCENARIO,
            "selector": registry.selectors.get(name),
            "applications": sorted(
                a.name for a in registry.applications.values() if name in a.application.scenarios
            ),
            "runtimes": runtimes.get(name, []),
        }
        for name in names
    ]
