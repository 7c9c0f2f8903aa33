"""`rrm environment create|update|delete|wait`, `rrm get environments|plans`, `rrm describe environment`:
environments are runtimes rrm creates (a local agent, an agent in your cluster, a Gardener cluster)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer
import yaml
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rrm.cli.common import OUTPUT_OPTION, OutputFormat, admin_api, emit, fail, show, stderr
from rrm.cli.views import age, format_labels

environment_app = typer.Typer(help="Create, update, delete and wait for environments.", no_args_is_help=True)
STATE_STYLES = {"succeeded": "green", "failed": "red", "canceled": "yellow", "incomplete": "yellow"}
FINAL_STATES = ("succeeded", "failed", "canceled")
WAIT_POLL_SECONDS = 1.0


def _path(name: str = "") -> str:
    return "/api/v1/environments" + (f"/{quote(name, safe='')}" if name else "")


def parse_pairs(values: Sequence[str], option: str) -> dict[str, Any]:
    """`k=v` pairs; a value is read as YAML (`3` is a number, `true` a boolean), `@FILE` is a file's text."""
    pairs: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{option} {item!r}: expected KEY=VALUE", 2)
        if value.startswith("@"):
            try:
                pairs[key] = Path(value[1:]).read_text()
            except OSError as exc:
                fail(f"{option} {key}: cannot read {value[1:]}: {exc.strerror or exc}", 2)
            continue
        try:
            pairs[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            pairs[key] = value
    return pairs


def parse_labels(values: Sequence[str]) -> dict[str, str]:
    """Labels are strings as typed: `v=1` stays "1"."""
    result = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--label {item!r}: expected KEY=VALUE", 2)
        result[key] = value
    return result


@environment_app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the environment's (and its runtime's) name"),
    plan: str = typer.Option(..., "--plan", help="see `rrm get plans`"),
    region: str = typer.Option(None, "--region"),
    label: list[str] = typer.Option([], "--label", "-l", help="KEY=VALUE, repeatable"),
    param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE (VALUE as YAML, @FILE for a file)"),
    global_account: str = typer.Option(None, "--global-account", help="the tenant"),
    subaccount: str = typer.Option(None, "--subaccount"),
    wait: bool = typer.Option(False, "--wait", help="wait until the operation ends"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Request an environment: answers at once with its operation; `rrm environment wait` follows it."""
    body = {
        "name": name,
        "plan": plan,
        "region": region,
        "labels": parse_labels(label),
        "parameters": parse_pairs(param, "--param"),
        "tenant": {"globalAccount": global_account, "subaccount": subaccount},
    }
    with admin_api(ctx) as api:
        answer = api._request("POST", _path(), json=body)
    _requested(ctx, name, answer, output, wait, " requested")


@environment_app.command("update")
def update(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    label: list[str] = typer.Option([], "--label", "-l", help="KEY=VALUE to set, KEY- to remove; repeatable"),
    param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE of an updatable parameter"),
    wait: bool = typer.Option(False, "--wait", help="wait until the update ends"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Change labels (the runtime is relabelled) or updatable parameters (autoscaler, administrators)."""
    body: dict[str, Any] = {"parameters": parse_pairs(param, "--param")}
    with admin_api(ctx) as api:
        if label:
            labels = dict(api._request("GET", _path(name))["labels"])
            for key in (item[:-1] for item in label if item.endswith("-") and "=" not in item):
                labels.pop(key, None)
            labels.update(parse_labels([item for item in label if "=" in item]))
            body["labels"] = labels
        answer = api._request("PATCH", _path(name), json=body)
    _requested(ctx, name, answer, output, wait, ": update requested")


@environment_app.command("delete")
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    wait: bool = typer.Option(False, "--wait", help="wait until it is gone"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Deprovision: remove the agent, delete the cluster, release the account, delete the runtime."""
    with admin_api(ctx) as api:
        answer = api._request("DELETE", _path(name))
    _requested(ctx, name, answer, output, wait, ": deletion requested")


def _requested(
    ctx: typer.Context,
    name: str,
    answer: Mapping[str, Any],
    output: OutputFormat,
    wait: bool,
    what: str,
) -> None:
    """Shows the accepted request; with --wait, follows its operation and exits as it ended."""
    emit(answer, output, lambda a: f"environment {name}{what} (operation {a['operation']})")
    if wait:
        raise typer.Exit(wait_for(ctx, name, answer["operation"], quiet=output is not OutputFormat.table))


@environment_app.command("wait")
def wait_command(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    timeout: float = typer.Option(
        0, "--timeout", help="seconds; 0 waits as long as the operation's deadline"
    ),
) -> None:
    """Show the latest operation's progress until it ends: exit 0 when it succeeded, 1 when not."""
    raise typer.Exit(wait_for(ctx, name, None, timeout=timeout))


def wait_for(
    ctx: typer.Context, name: str, operation_id: str | None, timeout: float = 0, quiet: bool = False
) -> int:
    """Polls the environment; prints each new stage description once (to stderr when `quiet`)."""
    started, last = time.monotonic(), ""
    while True:
        with admin_api(ctx) as api:
            detail = api._request("GET", _path(name))
        operation = _operation(detail, operation_id)
        if operation is None:
            fail(f"environment {name} has no operation {operation_id}")
        line = progress_line(operation)
        if line != last:
            (stderr.print if quiet else show)(Text(line))
            last = line
        if operation["state"] in FINAL_STATES:
            return 0 if operation["state"] == "succeeded" else 1
        if timeout and time.monotonic() - started > timeout:
            fail(f"environment {name}: still {operation['state']} after {timeout:g} s")
        time.sleep(WAIT_POLL_SECONDS)


def _operation(detail: Mapping[str, Any], operation_id: str | None) -> Mapping[str, Any] | None:
    operations = detail.get("operations") or []
    if operation_id is None:
        return operations[-1] if operations else None
    return next((o for o in operations if o["id"] == operation_id), None)


def progress_line(operation: Mapping[str, Any]) -> str:
    """`provision 3/7 install_agent: running` while it runs; the outcome when it ended."""
    stages = operation.get("stages") or []
    finished = sum(1 for s in stages if s["state"] in ("succeeded", "failed", "incomplete", "canceled"))
    current = next(
        (s for s in stages if s["state"] not in ("succeeded", "failed", "incomplete", "canceled")), None
    )
    if operation["state"] in FINAL_STATES or current is None:
        return f"{operation['type']} {operation['state']}: {operation['description']}"
    detail = current["description"] or current["state"]
    error = f" (last error: {current['lastError']})" if current.get("lastError") else ""
    return f"{operation['type']} {finished + 1}/{len(stages)} {current['name']}: {detail}{error}"


def get_environments(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="archived (deleted) environments too"),
    global_account: str = typer.Option(None, "--global-account"),
    subaccount: str = typer.Option(None, "--subaccount"),
    state: str = typer.Option(None, "--state"),
    plan: str = typer.Option(None, "--plan"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """List environments with their state and latest operation."""
    params: dict[str, Any] = {"all": str(all_).lower(), "pageSize": 100, "page": 1}
    filters = {"globalAccount": global_account, "subaccount": subaccount, "state": state, "plan": plan}
    params.update({k: v for k, v in filters.items() if v})
    items: list[dict[str, Any]] = []
    with admin_api(ctx) as api:
        while True:
            page = api._request("GET", _path(), params=params)
            items += page["items"]
            if len(items) >= page["total"] or not page["items"]:
                break
            params["page"] += 1
    emit(items, output, environments_table)


def environments_table(items: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("NAME", "PLAN", "REGION", "STATE", "TENANT", "OPERATION", "DESCRIPTION", "AGE")
    for env in items:
        operation = env.get("operation") or {}
        tenant = env.get("tenant") or {}
        table.add_row(
            env["name"],
            env["plan"],
            env.get("region") or "-",
            _state(env["state"]),
            "/".join(v for v in (tenant.get("globalAccount"), tenant.get("subaccount")) if v) or "-",
            f"{operation.get('type', '-')} {operation.get('state', '')}".strip(),
            operation.get("description") or "",
            age(env.get("createdAt"), "-").removesuffix(" ago"),
        )
    return table


def describe_environment(
    ctx: typer.Context, name: str = typer.Argument(...), output: OutputFormat = OUTPUT_OPTION
) -> None:
    """Every operation of the environment with its stages: state, attempts, timings, last error."""
    with admin_api(ctx) as api:
        detail = api._request("GET", _path(name))
    emit(detail, output, environment_detail)


def environment_detail(env: Mapping[str, Any]) -> RenderableType:
    tenant = env.get("tenant") or {}
    head = [
        f"Name:        {env['name']}",
        f"Plan:        {env['plan']}",
        f"Region:      {env.get('region') or '-'}",
        f"State:       {env['state']}",
        f"Runtime:     {env.get('runtime') or '-'}",
        f"Tenant:      {tenant.get('globalAccount') or '-'} / {tenant.get('subaccount') or '-'}",
        f"Labels:      {format_labels(env.get('labels'))}",
        f"Parameters:  {format_labels({k: str(v) for k, v in (env.get('parameters') or {}).items()})}",
        f"Secret:      {', '.join(env.get('secretParameters') or []) or '-'} (write-only)",
        *(f"Resources:   {k}: {v}" for k, v in (env.get("resources") or {}).items()),
    ]
    if env.get("archivedAt"):
        head.append(f"Archived:    {env['archivedAt']}")
    parts: list[RenderableType] = [Text("\n".join(head), no_wrap=True, overflow="ignore")]
    for operation in env.get("operations") or []:
        parts += [Text(""), operation_header(operation), stages_table(operation.get("stages") or [])]
    return Group(*parts)


def operation_header(operation: Mapping[str, Any]) -> Text:
    lines = [
        f"Operation {operation['id']} ({operation['type']}): {operation['state']}, {operation['description']}"
    ]
    lines.append(f"  created {operation['createdAt']}, deadline {operation['deadlineAt']}")
    if operation.get("lastError"):
        lines.append(f"  last error: {operation['lastError']}")
    if operation.get("leftBehind"):
        lines.append(f"  left behind: {'; '.join(operation['leftBehind'])}")
    return Text("\n".join(lines), style=STATE_STYLES.get(operation["state"], ""))


def stages_table(stages: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("STAGE", "STATE", "ATTEMPTS", "STARTED", "TOOK", "DEADLINE", "DESCRIPTION / LAST ERROR")
    for stage in stages:
        took = "-" if stage.get("seconds") is None else f"{stage['seconds']:.1f} s"
        text = stage.get("lastError") or stage.get("description") or ""
        table.add_row(
            stage["name"] + (" (best effort)" if stage.get("bestEffort") else ""),
            _state(stage["state"]),
            str(stage["attempts"]),
            age(stage.get("startedAt"), "-"),
            took,
            stage.get("deadlineAt") or "-",
            text,
        )
    return table


def get_plans(ctx: typer.Context, output: OutputFormat = OUTPUT_OPTION) -> None:
    """The plans this control plane offers."""
    with admin_api(ctx) as api:
        plans = api._request("GET", "/api/v1/plans")
    emit(plans, output, plans_table)


def plans_table(plans: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("NAME", "BACKEND", "REGIONS", "PARAMETERS", "DESCRIPTION")
    for plan in plans:
        names = sorted((plan.get("parameters") or {}).get("properties", {}))
        secret = set(plan.get("secretParameters") or [])
        params = ", ".join(f"{n} (secret)" if n in secret else n for n in names) or "-"
        note = f" (unavailable: {plan['unavailable']})" if plan.get("unavailable") else ""
        table.add_row(
            plan["name"],
            plan["backend"],
            ", ".join(plan["regions"]) or "-",
            params,
            plan["description"] + note,
        )
    return table


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def register(app: typer.Typer, get_app: typer.Typer, describe_app: typer.Typer) -> None:
    """Add these commands to the `rrm` app and its groups."""
    app.add_typer(environment_app, name="environment")
    get_app.command("environments")(get_environments)
    get_app.command("plans")(get_plans)
    describe_app.command("environment")(describe_environment)
