"""What every admin command shares: the client for this invocation, error reporting and output formats."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
import yaml
from rich.console import Console, RenderableType

from rrm.cli.client import AdminClient, ApiError, ControlPlaneUnreachable
from rrm.cli.config import ConfigError

EXIT_API_ERROR = 1
EXIT_USAGE = 2
UNLIMITED_WIDTH = 10_000

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OUTPUT_OPTION = typer.Option(OutputFormat.table, "--output", "-o", help="table, json or yaml")


def fail(message: str, code: int = EXIT_API_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _client(ctx: typer.Context) -> AdminClient:
    """The client given by the caller (tests pass one as `obj`), else one built from the environment once."""
    root = ctx.find_root()
    if not isinstance(root.obj, AdminClient):
        root.obj = AdminClient.from_environment()
    return root.obj


@contextmanager
def admin_api(ctx: typer.Context) -> Iterator[AdminClient]:
    """Runs the body against the admin API; any failure becomes a message on stderr and an exit code."""
    try:
        yield _client(ctx)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except ControlPlaneUnreachable as exc:
        fail(str(exc))
    except ApiError as exc:
        for line in exc.lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(EXIT_API_ERROR) from None


def add_get_command(
    group: typer.Typer,
    kind: str,
    fetch: Callable[[AdminClient], Any],
    table: Callable[[Any], RenderableType],
    help: str,
) -> None:
    """Adds `rrm get KIND`: one admin call, shown as `table` or as -o asks."""

    def get(ctx: typer.Context, output: OutputFormat = OUTPUT_OPTION) -> None:
        with admin_api(ctx) as api:
            emit(fetch(api), output, table)

    group.command(kind, help=help)(get)


def add_delete_command(
    group: typer.Typer,
    kind: str,
    remove: Callable[[AdminClient, str], None],
    help: str | None = None,
    argument: str = "name",
) -> None:
    """Adds `rrm delete KIND NAME` to `group`: one admin call, then `KIND/NAME deleted`."""

    def delete(ctx: typer.Context, name: str = typer.Argument(..., metavar=argument)) -> None:
        with admin_api(ctx) as api:
            remove(api, name)
        typer.echo(f"{kind}/{name} deleted")

    group.command(kind, help=help)(delete)


def shown_once(fields: Sequence[tuple[str, str]], *after: str) -> str:
    """Credentials as aligned `label: value` lines, then `after` (saying they are shown only this once)."""
    width = max(len(label) for label, _ in fields) + len(":  ")
    return "\n".join([*(f"{label + ':':<{width}}{value}" for label, value in fields), *after])


def broker_fields(answer: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The HTTP Basic credentials a platform registers a broker with."""
    return [
        ("broker URL", answer["broker_url"]),
        ("username", answer["username"]),
        ("password", answer["password"]),
    ]


def emit(data: Any, output: OutputFormat, table: Callable[[Any], RenderableType]) -> None:
    """JSON and YAML show the API's answer as it is; the table is for people. A table that is a plain
    string is printed as it is, never wrapped, so a token or a command in it stays one line to copy."""
    if output is OutputFormat.json:
        typer.echo(json.dumps(data, indent=2))
    elif output is OutputFormat.yaml:
        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    elif isinstance(human := table(data), str):
        typer.echo(human)
    else:
        show(human)


def show(renderable: RenderableType) -> None:
    """On a terminal rich fits its width; into a pipe or file nothing is cut or folded."""
    if stdout.is_terminal:
        stdout.print(renderable)
        return
    plain = Console(width=UNLIMITED_WIDTH, highlight=False)
    with plain.capture() as captured:
        plain.print(renderable)
    typer.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))
