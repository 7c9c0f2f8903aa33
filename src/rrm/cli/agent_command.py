"""`rrm agent`: the command, and the short way into it that loads nothing of the rest of the CLI.

An agent runs on every runtime for as long as the runtime lives, so what its process holds in memory
matters: `main` never imports the admin commands, rich, the server or its libraries. A plain command line,
as agents are started (`--option value` or `--option=value`, known options, plain values), is read with the
standard library from the options `agent` declares (`read_plainly`): typer reads every value through
pydantic, which would stay loaded, about 10 MB, for the agent's lifetime. Anything else (help, a mistake, an
unusual form) goes to a typer app with only this command, so usage, help and errors read exactly as in the
full CLI.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.models import OptionInfo

LOG_LEVEL_OPTION = typer.Option("info", "--log-level", help="debug, info, warning or error")


def agent(
    director: list[str] = typer.Option(..., "--director", help="control plane URL; repeatable"),
    token: str = typer.Option(None, "--token", envvar="RRM_PAIRING_TOKEN", help="single-use pairing token"),
    state_dir: Path = typer.Option(..., "--state-dir", help="where the agent keeps its key and cache"),
    target: str = typer.Option("selfhosted", "--target"),
    resources_path: Path = typer.Option(None, "--resources-path", help="daprd's resources directory"),
    dapr_http_port: int = typer.Option(None, "--dapr-http-port", help="to ask the sidecar what it loaded"),
    dapr_api_token: str = typer.Option(None, "--dapr-api-token", envvar="DAPR_API_TOKEN"),
    reload_command: str = typer.Option(None, "--reload-command", help="run after each change"),
    wait: float = typer.Option(30.0, "--wait", help="long-poll wait in seconds"),
    heartbeat_interval: float = typer.Option(
        60.0, "--heartbeat-interval", help="seconds between status reports when nothing changed"
    ),
    reconcile_interval: float = typer.Option(
        60.0, "--reconcile-interval", help="seconds between full reconciles that put back hand edits"
    ),
    load_deadline: float = typer.Option(
        60.0, "--load-deadline", help="seconds the sidecar has to load an apply before it counts as failed"
    ),
    health_port: int = typer.Option(None, "--health-port", help="serve /livez and /readyz on this port"),
    kubeconfig: Path = typer.Option(None, "--kubeconfig", help="kubernetes: default in-cluster config"),
    namespace: list[str] = typer.Option(
        [], "--namespace", help="kubernetes: namespace it may write to, repeatable; the first is the default"
    ),
    hot_reload: str = typer.Option(
        "auto", "--hot-reload", help="kubernetes: auto, on (never restart workloads) or off (always restart)"
    ),
    restart_min_interval: float = typer.Option(
        30.0, "--restart-min-interval", help="kubernetes: seconds between two restarts of one workload"
    ),
    log_level: str = LOG_LEVEL_OPTION,
) -> None:
    """Run the agent of one runtime (blocks until SIGTERM or Ctrl-C)."""
    from rrm.agent import AgentConfig, run_agent

    raise typer.Exit(
        run_agent(
            AgentConfig(
                director_urls=director,
                state_dir=state_dir,
                target=target,
                token=token,
                resources_path=resources_path,
                dapr_http_port=dapr_http_port,
                dapr_api_token=dapr_api_token,
                reload_command=reload_command,
                wait_seconds=wait,
                heartbeat_interval=heartbeat_interval,
                reconcile_interval=reconcile_interval,
                load_deadline=load_deadline,
                health_port=health_port,
                kubeconfig=kubeconfig,
                namespaces=namespace,
                hot_reload=hot_reload,  # type: ignore[arg-type]  # checked by run_agent
                restart_min_interval=restart_min_interval,
                log_level=log_level,
            )
        )
    )


def main(args: list[str]) -> None:
    """Run `rrm agent ARGS…` (`args` start with "agent") with only this command loaded."""
    _skip_httpx_command_line()
    values = read_plainly(args[1:])
    if values is not None:
        try:
            agent(**values)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # as typer (click) ends then
            print("\nAborted!", file=sys.stderr)
            sys.exit(1)
        return
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(_group)
    app.command("agent")(agent)
    app(args, prog_name="rrm")


def _group() -> None:
    """A callback makes the app a group, so the command is addressed as `rrm agent`, as in the full CLI."""


def _skip_httpx_command_line() -> None:
    """httpx imports its own command-line client (click, rich and pygments: about 5 MB) whenever those are
    installed, and rrm's CLI installs them. The agent never runs it: a None entry in `sys.modules` makes that
    optional import fail, and httpx defines a stub `httpx.main` instead. Nothing else changes in httpx."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Option:
    parameter: str
    kind: Any  # str, Path, int, float, or a list of one of them (a repeatable option)
    default: Any  # `...` when required
    envvar: str | None


PLAIN_NUMBERS = {int: re.compile(r"[0-9]{1,9}"), float: re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")}


def read_plainly(args: list[str]) -> dict[str, Any] | None:
    """`agent`'s arguments from a plain command line, exactly as typer would read them. None for anything
    else, which typer then reads (or refuses) as it always did: an unknown option or argument (`--help` among
    them), a missing value or required option, an empty value or one starting with "-", a number in any form
    but plain digits, a single option given twice, an empty environment variable."""
    options = _options()
    if options is None:
        return None
    values: dict[str, Any] = {}
    rest = list(args)
    while rest:
        name, has_value, value = rest.pop(0).partition("=")
        if not has_value:
            if not rest:
                return None
            value = rest.pop(0)
        option = options.get(name)
        read = None if option is None else _read(value, option.kind)
        if option is None or read is None:
            return None
        if typing.get_origin(option.kind) is list:
            values.setdefault(option.parameter, []).append(read)
        elif option.parameter in values:
            return None
        else:
            values[option.parameter] = read
    for option in options.values():
        if option.parameter in values:
            continue
        environment = os.environ.get(option.envvar) if option.envvar else None
        if environment is not None:
            read = _read(environment, option.kind)
            if read is None or typing.get_origin(option.kind) is list:
                return None
            values[option.parameter] = read
        elif option.default is ...:
            return None
        else:
            default = option.default
            values[option.parameter] = list(default) if isinstance(default, list) else default
    return values


def _options() -> dict[str, _Option] | None:
    """`agent`'s options by name, from its signature: the one definition of the command line. None when it
    declares what `read_plainly` does not read (an argument, a default factory, several environment
    variables): then typer reads every command line."""
    hints = typing.get_type_hints(agent)
    options = {}
    for parameter in inspect.signature(agent).parameters.values():
        info = parameter.default
        if (
            not isinstance(info, OptionInfo)
            or info.default_factory
            or not isinstance(info.envvar, str | None)
        ):
            return None
        for name in info.param_decls or (f"--{parameter.name.replace('_', '-')}",):
            options[name] = _Option(parameter.name, hints[parameter.name], info.default, info.envvar)
    return options


def _read(value: str, kind: Any) -> Any:
    """`value` as `kind`, or None where typer might read it otherwise, or refuse it."""
    if typing.get_origin(kind) is list:
        (kind,) = typing.get_args(kind)
    if not value or value.startswith("-"):
        return None
    if kind is str:
        return value
    if kind is Path:
        return Path(value)
    if kind in PLAIN_NUMBERS and PLAIN_NUMBERS[kind].fullmatch(value):
        return kind(value)
    return None
