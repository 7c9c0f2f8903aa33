"""Read commands (`get`, `describe`, `history`) and the rich tables they print."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import typer
import yaml
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rrm.cli.client import AdminClient
from rrm.cli.common import OUTPUT_OPTION, OutputFormat, add_get_command, admin_api, emit

CONDITION_TYPES = ("Connected", "Synced", "Ready")
RECENT_EVENTS = 10
EVENTS_PAGE = 1000
WATCH_COLUMNS = (("TIME (UTC)", 19), ("TYPE", 22), ("SUBJECT", 30))
STATUS_STYLES = {"True": "green", "False": "red", "Unknown": "yellow"}

get_app = typer.Typer(help="List runtimes, components, secrets or events.", no_args_is_help=True)
describe_app = typer.Typer(help="Show one runtime or component in detail.", no_args_is_help=True)
history_app = typer.Typer(help="Show the revisions of a component.", no_args_is_help=True)


def age(timestamp: str | None, missing: str = "never") -> str:
    """`12s ago`, `3m ago`, … from an ISO timestamp (naive means UTC)."""
    if not timestamp:
        return missing
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def format_labels(labels: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "-"


def format_selector(selector: str | None) -> str:
    """No selector places a component nowhere; an empty one places it everywhere."""
    if selector is None:
        return "<none>"
    return selector or "<all>"


def find_condition(runtime: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in runtime.get("conditions") or [] if c.get("type") == kind), None)


def status_text(status: str | None) -> Text:
    if status is None:
        return Text("-", style="dim")
    return Text(status, style=STATUS_STYLES.get(status, ""))


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def runtimes_table(runtimes: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("NAME", "KIND", "LABELS", *(t.upper() for t in CONDITION_TYPES), "LAST-SEEN", "COMPONENTS")
    for runtime in runtimes:
        conditions = [find_condition(runtime, kind) for kind in CONDITION_TYPES]
        table.add_row(
            Text(runtime["name"]),
            Text(runtime.get("kind", "")),
            Text(format_labels(runtime.get("labels"))),
            *(status_text(c.get("status") if c else None) for c in conditions),
            Text(age(runtime.get("last_seen"))),
            Text(str(runtime.get("component_count", 0))),
        )
    return table


def components_table(components: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("NAME", "TYPE", "REVISION", "SELECTOR", "MATCHED", "READY")
    for component in components:
        matched, ready = component.get("matched", 0), component.get("ready", 0)
        table.add_row(
            Text(component["name"]),
            Text(f"{component.get('type', '')}/{component.get('version', '')}".rstrip("/")),
            Text(str(component.get("revision", ""))),
            Text(format_selector(component.get("selector"))),
            Text(str(matched)),
            Text(str(ready), style="green" if ready == matched else "yellow"),
        )
    return table


def secrets_table(secrets: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("NAME", "KEYS", "USED-BY", "UPDATED")
    for secret in secrets:
        table.add_row(
            Text(secret["name"]),
            Text(",".join(secret.get("keys") or []) or "-"),
            Text(",".join(secret.get("used_by") or []) or "-"),
            Text(age(secret.get("updated_at"))),
        )
    return table


def _fields(rows: list[tuple[str, str | Text]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in rows:
        grid.add_row(f"{label}:", value if isinstance(value, Text) else Text(value))
    return grid


def _hash_state(desired: str | None, applied: str | None) -> Text:
    if not desired:
        return Text("nothing desired yet", style="dim")
    if applied == desired:
        return Text("in sync", style="green")
    return Text("not applied yet" if not applied else "differs from desired", style="yellow")


def runtime_detail(runtime: Mapping[str, Any]) -> RenderableType:
    """Everything an operator needs to see why a runtime is or is not Ready."""
    parts: list[RenderableType] = [
        _fields(
            [
                ("Name", runtime["name"]),
                ("ID", runtime.get("id", "")),
                ("Kind", runtime.get("kind", "")),
                ("Labels", format_labels(runtime.get("labels"))),
                ("Paired", "yes" if runtime.get("paired") else "no"),
                ("Agent version", runtime.get("agent_version") or "-"),
                ("Last seen", age(runtime.get("last_seen"))),
                ("Desired hash", runtime.get("desired_hash") or "-"),
                ("Applied hash", runtime.get("applied_hash") or "-"),
                ("Sync", _hash_state(runtime.get("desired_hash"), runtime.get("applied_hash"))),
                *([("Message", runtime["message"])] if runtime.get("message") else []),
            ]
        )
    ]
    conditions = _table("TYPE", "STATUS", "REASON", "MESSAGE", "SINCE", title="\nConditions")
    for condition in runtime.get("conditions") or []:
        conditions.add_row(
            Text(condition.get("type", "")),
            status_text(condition.get("status")),
            Text(condition.get("reason") or ""),
            Text(condition.get("message") or ""),
            Text(age(condition.get("last_transition"))),
        )
    parts.append(conditions)

    parts.append(_components(runtime))
    parts.append(_sidecar(runtime.get("sidecar")))
    parts += _reload_drift_events(runtime)
    return Group(*parts)


def _components(runtime: Mapping[str, Any]) -> RenderableType:
    """Each desired component with what the agent reported of it; then results of anything else reported."""
    results = {(r.get("kind", "Component"), r.get("name")): r for r in runtime.get("resources") or []}
    components = _table("NAME", "TYPE", "REVISION", "STATE", "SINCE", "MESSAGE", title="\nDesired components")
    for desired in runtime.get("desired_components") or []:
        result = results.pop(("Component", desired["name"]), None)
        components.add_row(*_component_row(desired, result))
    for (kind, name), result in results.items():
        components.add_row(*_component_row({"name": f"{kind}/{name}", "type": "", "revision": None}, result))
    return components if components.row_count else Text("\nDesired components: none")


def _reload_drift_events(runtime: Mapping[str, Any]) -> list[RenderableType]:
    parts: list[RenderableType] = []
    reload = runtime.get("reload")
    if reload:
        style = "green" if reload.get("exit_code") == 0 else "red"
        reload_rows: list[tuple[str, str | Text]] = [
            ("Command", reload.get("command", "")),
            ("Exit code", Text(str(reload.get("exit_code")), style=style)),
        ]
        if reload.get("output"):
            reload_rows.append(("Output", reload["output"].strip()))
        parts += [Text("\nReload", style="bold"), _fields(reload_rows)]
    drift = runtime.get("drift") or []
    if drift:
        drift_table = _table(
            "RESOURCE", "CHANGE", "FIELDS", "DETECTED", title="\nDrift (changed outside rrm, put back)"
        )
        for record in drift:
            drift_table.add_row(
                Text(record.get("resource", "")),
                Text(record.get("change", "")),
                Text(", ".join(record.get("fields") or [])),
                Text(age(record.get("detected_at"))),
            )
        parts.append(drift_table)
    events = sorted(runtime.get("events") or [], key=lambda event: event.get("id", 0))[-RECENT_EVENTS:]
    if events:
        events_table = _table("AGE", "TYPE", "MESSAGE", title="\nRecent events")
        for event in events:
            events_table.add_row(
                Text(age(event.get("time"))), Text(event.get("type", "")), Text(event.get("message") or "")
            )
        parts.append(events_table)
    return parts


def component_state(result: Mapping[str, Any] | None) -> tuple[str, str]:
    """What became of a component on the runtime, and its colour: applied (the agent cannot see the
    sidecar), loaded by the sidecar, applied but not loaded (yet), failed, or not reported."""
    if not result:
        return "not reported", "yellow"
    state, loaded = str(result.get("state") or ""), result.get("loaded")
    if state == "failed":
        return ("failed, not loaded" if loaded is False else "failed"), "red"
    if state == "applied" and loaded is True:
        return "loaded by the sidecar", "green"
    if state == "applied" and loaded is False:
        return "applied, not loaded yet", "yellow"
    return state, "green" if state == "applied" else "yellow"


def _component_row(desired: Mapping[str, Any], result: Mapping[str, Any] | None) -> list[Text]:
    state, style = component_state(result)
    revision = desired.get("revision")
    if result and result.get("revision") is not None and result.get("revision") != revision:
        shown_revision = f"{revision} (applied {result['revision']})"
    else:
        shown_revision = "" if revision is None else str(revision)
    return [
        Text(desired["name"]),
        Text(desired.get("type") or ""),
        Text(shown_revision),
        Text(state, style=style),
        Text(age((result or {}).get("since"), missing="-")),
        Text((result or {}).get("message") or ""),
    ]


def _sidecar(sidecar: Mapping[str, Any] | None) -> RenderableType:
    if not sidecar:
        return Text("\nSidecar: not reported (no Dapr HTTP port configured, or no status yet)")
    rows: list[tuple[str, str | Text]] = [
        ("Reachable", Text("yes", style="green") if sidecar.get("reachable") else Text("no", style="red")),
        ("App ID", sidecar.get("app_id") or "-"),
        ("Dapr version", sidecar.get("runtime_version") or "-"),
    ]
    if sidecar.get("error"):
        rows.append(("Error", Text(sidecar["error"], style="red")))
    loaded = _table("NAME", "TYPE", "VERSION", title="Loaded by the sidecar")
    for component in sidecar.get("components") or []:
        loaded.add_row(
            Text(component["name"]), Text(component.get("type", "")), Text(component.get("version", ""))
        )
    parts: list[RenderableType] = [Text("\nSidecar", style="bold"), _fields(rows)]
    if loaded.row_count:
        parts.append(loaded)
    return Group(*parts)


def component_detail(component: Mapping[str, Any]) -> RenderableType:
    matched, ready = component.get("matched", 0), component.get("ready", 0)
    fields = _fields(
        [
            ("Name", component["name"]),
            ("Type", f"{component.get('type', '')} {component.get('version', '')}".strip()),
            ("Revision", str(component.get("revision", ""))),
            ("Selector", format_selector(component.get("selector"))),
            ("Ready", Text(f"{ready}/{matched} runtimes", style="green" if ready == matched else "yellow")),
            ("Secrets", ", ".join(component.get("secrets") or []) or "-"),
            ("Updated", age(component.get("updated_at"), missing="-")),
        ]
    )
    runtimes = _table("RUNTIME", "READY", title="\nRuntimes")
    for runtime in component.get("runtimes") or []:
        runtimes.add_row(Text(runtime["name"]), status_text("True" if runtime.get("ready") else "False"))
    parts: list[RenderableType] = [
        fields,
        runtimes if runtimes.row_count else Text("\nRuntimes: none matched"),
    ]
    if component.get("manifest"):
        manifest = yaml.safe_dump(component["manifest"], sort_keys=False)
        parts += [Text("\nManifest", style="bold"), Text(manifest.rstrip())]
    return Group(*parts)


def events_table(events: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("AGE", "TYPE", "SUBJECT", "MESSAGE")
    for event in events:
        table.add_row(
            Text(age(event.get("time"))),
            Text(event.get("type", "")),
            Text(event.get("subject", "")),
            Text(event.get("message") or ""),
        )
    return table


def event_line(event: Mapping[str, Any], output: OutputFormat) -> str:
    """One event as `--watch` prints it: aligned columns, a JSON line, or a YAML document."""
    if output is OutputFormat.json:
        return json.dumps(event)
    if output is OutputFormat.yaml:
        return "---\n" + yaml.safe_dump(dict(event), sort_keys=False, allow_unicode=True).rstrip()
    time = str(event.get("time", ""))[:19].replace("T", " ")
    values = (time, str(event.get("type", "")), str(event.get("subject", "")))
    columns = "  ".join(value.ljust(width) for value, (_, width) in zip(values, WATCH_COLUMNS, strict=True))
    return f"{columns}  {event.get('message') or ''}"


def history_table(history: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("REVISION", "ACTION", "CREATED")
    for entry in history:
        table.add_row(
            Text(str(entry.get("revision", ""))),
            Text(entry.get("action", "")),
            Text(entry.get("created_at") or ""),
        )
    return table


@get_app.command("runtimes")
def get_runtimes(
    ctx: typer.Context,
    selector: str = typer.Option(None, "--selector", "-l", help="label selector, e.g. env=prod"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Runtimes with their conditions."""
    with admin_api(ctx) as api:
        emit(api.list_runtimes(selector), output, runtimes_table)


add_get_command(
    get_app,
    "components",
    AdminClient.list_components,
    components_table,
    "Components with their placement and how many runtimes are ready.",
)
add_get_command(
    get_app,
    "secrets",
    AdminClient.list_secrets,
    secrets_table,
    "Secrets by name and key; values are never shown.",
)


@get_app.command("events")
def get_events(
    ctx: typer.Context,
    after: int = typer.Option(0, "--after", help="only events with a higher id"),
    watch: bool = typer.Option(False, "--watch", "-w", help="then print each new event as it is recorded"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Events (registrations, pairings, changes, condition transitions), oldest first."""
    with admin_api(ctx) as api:
        if watch:
            if output is OutputFormat.table:
                typer.echo("  ".join(title.ljust(width) for title, width in WATCH_COLUMNS) + "  MESSAGE")
            try:
                for event in api.stream_events(after):
                    typer.echo(event_line(event, output))
            except KeyboardInterrupt:
                return
            return
        events: list[dict[str, Any]] = []
        while True:
            page = api.list_events(after, EVENTS_PAGE)
            events += page
            if len(page) < EVENTS_PAGE:
                break
            after = page[-1]["id"]
        emit(events, output, events_table)


@describe_app.command("runtime")
def describe_runtime(ctx: typer.Context, name: str, output: OutputFormat = OUTPUT_OPTION) -> None:
    """Conditions, desired vs applied, per-component results, the sidecar's view, reload and drift."""
    with admin_api(ctx) as api:
        emit(api.get_runtime(name), output, runtime_detail)


@describe_app.command("component")
def describe_component(ctx: typer.Context, name: str, output: OutputFormat = OUTPUT_OPTION) -> None:
    """Placement, readiness per runtime and the stored manifest."""
    with admin_api(ctx) as api:
        emit(api.get_component(name), output, component_detail)


@history_app.command("component")
def component_history(ctx: typer.Context, name: str, output: OutputFormat = OUTPUT_OPTION) -> None:
    """Revisions, newest first; `-o yaml` includes each revision's manifest."""
    with admin_api(ctx) as api:
        emit(api.component_history(name), output, history_table)
