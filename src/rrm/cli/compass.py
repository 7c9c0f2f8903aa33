"""Compass and broker commands: applications, scenarios, label definitions, broker credentials and the
Static System Broker. `register` hangs them into the `rrm` command groups."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rrm.cli.client import AdminClient
from rrm.cli.common import (
    EXIT_USAGE,
    OUTPUT_OPTION,
    OutputFormat,
    add_delete_command,
    add_get_command,
    admin_api,
    broker_fields,
    emit,
    fail,
    shown_once,
)
from rrm.cli.views import age, format_labels

DEFAULT_BROKER_PORT = 8090

create_app = typer.Typer(help="Create a scenario.", no_args_is_help=True)
scenario_app = typer.Typer(
    help="Put runtimes in scenarios, by name or by label selector.", no_args_is_help=True
)


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _joined(values: Sequence[str] | None) -> str:
    return ",".join(values or []) or "-"


# tables -----------------------------------------------------------------------------------------------


def applications_table(applications: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("NAME", "PROVIDER", "SCENARIOS", "BUNDLES", "RUNTIMES", "REVISION", "UPDATED")
    for app in applications:
        runtimes = app.get("runtimes")
        table.add_row(
            Text(app["name"]),
            Text(app.get("provider") or "-"),
            Text(_joined(app.get("scenarios"))),
            Text(_joined([b["name"] for b in app.get("bundles") or []])),
            Text("-" if runtimes is None else str(len(runtimes))),
            Text(str(app.get("revision", ""))),
            Text(age(app.get("updated_at"))),
        )
    return table


def application_detail(app: Mapping[str, Any]) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in (
        ("Name", app["name"]),
        ("Description", app.get("description") or "-"),
        ("Provider", app.get("provider") or "-"),
        ("Base URL", app.get("base_url") or "-"),
        ("Labels", format_labels(app.get("labels"))),
        ("Scenarios", _joined(app.get("scenarios"))),
        ("Runtimes", _joined(app.get("runtimes"))),
        ("Revision", str(app.get("revision", ""))),
    ):
        grid.add_row(f"{label}:", Text(str(value)))
    bundles = _table("BUNDLE", "BINDING", "URL", "CREDENTIALS", "APIS", "EVENTS")
    for bundle in app.get("bundles") or []:
        bundles.add_row(
            Text(bundle["name"]),
            Text(bundle.get("binding", "")),
            Text(bundle.get("url") or "-"),
            Text((bundle.get("credentials") or {}).get("type", "none")),
            Text(_joined(bundle.get("apis"))),
            Text(_joined(bundle.get("events"))),
        )
    definitions = _table("DEFINITION", "KIND", "TARGET URL", "SPEC")
    for kind, items in (("API", app.get("apis")), ("event", app.get("events"))):
        for item in items or []:
            spec = item.get("spec") or {}
            where = spec.get("url") or ("inline" if "inline" in spec else "-")
            definitions.add_row(
                Text(item["name"]),
                Text(kind),
                Text(item.get("target_url") or "-"),
                Text(f"{spec.get('type', '')} {where}".strip()),
            )
    return Group(grid, Text(""), bundles, Text(""), definitions)


def scenarios_table(scenarios: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("NAME", "SELECTOR", "APPLICATIONS", "RUNTIMES")
    for scenario in scenarios:
        table.add_row(
            Text(scenario["name"] + (" (built in)" if scenario.get("builtin") else "")),
            Text(scenario.get("selector") or "-"),
            Text(_joined(scenario.get("applications"))),
            Text(_joined(scenario.get("runtimes"))),
        )
    return table


def label_definitions_table(definitions: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("KEY", "SCHEMA")
    for definition in definitions:
        key = definition["key"] + (" (built in)" if definition.get("builtin") else "")
        table.add_row(Text(key), Text(json.dumps(definition.get("schema"), sort_keys=True)))
    return table


# commands ---------------------------------------------------------------------------------------------


def get_applications(
    ctx: typer.Context,
    runtime: str = typer.Option(None, "--runtime", help="only those this runtime sees"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Applications; with --runtime, those sharing a scenario with that runtime."""
    with admin_api(ctx) as api:
        emit(api.list_applications(runtime), output, applications_table)


def describe_application(ctx: typer.Context, name: str, output: OutputFormat = OUTPUT_OPTION) -> None:
    """An application's bundles (with their bindings), API and event definitions, and runtimes."""
    with admin_api(ctx) as api:
        emit(api.get_application(name), output, application_detail)


@create_app.command("scenario")
def create_scenario(ctx: typer.Context, name: str) -> None:
    with admin_api(ctx) as api:
        api.create_scenario(name)
        typer.echo(f"scenario/{name} created")


@scenario_app.command("assign")
def assign(
    ctx: typer.Context,
    name: str,
    runtime: list[str] = typer.Option([], "--runtime", help="put this runtime in the scenario; repeatable"),
    selector: str = typer.Option(None, "--selector", help="every runtime whose labels match, now and later"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Put runtimes in scenario NAME: named ones (--runtime), or all matching a selector (--selector).
    -o json|yaml prints the assignment, or each runtime's scenarios (`explicit`, `effective`)."""
    if bool(runtime) == (selector is not None):
        fail("give either --runtime (one or more) or --selector", EXIT_USAGE)
    with admin_api(ctx) as api:
        if selector is not None:
            assignment = api.assign_scenario(name, selector)
            emit(
                assignment,
                output,
                lambda a: f"scenario/{name} assigned to runtimes matching {a['selector']!r}",
            )
            return
        answers = [api.change_runtime_scenarios(one, [name], []) for one in runtime]
    emit(answers, output, runtime_scenarios_text)


@scenario_app.command("unassign")
def unassign(
    ctx: typer.Context,
    name: str,
    runtime: list[str] = typer.Option(..., "--runtime", help="take this runtime out; repeatable"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Take runtimes out of scenario NAME (an automatic assignment that matches them still applies)."""
    with admin_api(ctx) as api:
        answers = [api.change_runtime_scenarios(one, [], [name]) for one in runtime]
    emit(answers, output, runtime_scenarios_text)


def runtime_scenarios_text(answers: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(f"runtime/{a['runtime']} scenarios: {_joined(a.get('effective'))}" for a in answers)


def broker_credentials(
    ctx: typer.Context,
    name: str,
    rotate: bool = typer.Option(
        False, "--rotate", help="replace existing credentials (the old ones stop working)"
    ),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """HTTP Basic credentials for the runtime's platform to call the System Broker; shown only this once."""
    with admin_api(ctx) as api:
        answer = api.broker_credentials(name, rotate)
    emit(answer, output, broker_credentials_text)


def broker_credentials_text(answer: Mapping[str, Any]) -> str:
    return shown_once(
        broker_fields(answer),
        "Shown only this once. Register the broker with the runtime's Service Catalog or marketplace.",
    )


def static_broker(
    catalog: Path = typer.Option(
        ..., "--catalog", help="OSB catalog (YAML or JSON) plus credentials per plan"
    ),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(DEFAULT_BROKER_PORT, "--port"),
    username: str = typer.Option(None, "--username", envvar="RRM_BROKER_USERNAME", help="HTTP Basic user"),
    password: str = typer.Option(
        None, "--password", envvar="RRM_BROKER_PASSWORD", help="HTTP Basic password"
    ),
    state: Path = typer.Option(None, "--state", help="JSON file that keeps instances and bindings"),
) -> None:
    """Serve the OSB API from a catalog file, for standalone runtimes (blocks until SIGTERM or Ctrl-C)."""
    from rrm.server.broker.catalog_file import CatalogError
    from rrm.server.broker.static import serve_static

    if not username or not password:
        fail(
            "the static broker needs --username and --password (or RRM_BROKER_USERNAME/PASSWORD)", EXIT_USAGE
        )
    try:
        serve_static(catalog, host, port, username, password, state)
    except CatalogError as exc:
        for line in str(exc).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def register(
    app: typer.Typer,
    runtime_app: typer.Typer,
    get_app: typer.Typer,
    describe_app: typer.Typer,
    delete_app: typer.Typer,
) -> None:
    """Add these commands to the `rrm` app and its groups."""
    get_app.command("applications")(get_applications)
    add_get_command(
        get_app,
        "scenarios",
        AdminClient.list_scenarios,
        scenarios_table,
        "Scenarios with their automatic assignment, applications and runtimes.",
    )
    add_get_command(
        get_app,
        "labeldefinitions",
        AdminClient.list_label_definitions,
        label_definitions_table,
        "Label definitions and their JSON Schemas (`scenarios` is built in).",
    )
    describe_app.command("application")(describe_application)
    add_delete_command(delete_app, "application", AdminClient.delete_application)
    add_delete_command(
        delete_app,
        "scenario",
        AdminClient.delete_scenario,
        "Refused while an application, a runtime or an automatic assignment uses it.",
    )
    add_delete_command(
        delete_app,
        "scenarioassignment",
        AdminClient.unassign_scenario,
        "Ends the automatic assignment of scenario NAME; runtimes keep only their explicit scenarios.",
    )
    add_delete_command(delete_app, "labeldefinition", AdminClient.delete_label_definition, argument="key")
    runtime_app.command("broker-credentials")(broker_credentials)
    app.command("static-broker")(static_broker)
    app.add_typer(create_app, name="create")
    app.add_typer(scenario_app, name="scenario")
