"""`rrm agent`: the agent's own command line, read with argparse from the settings `AgentConfig` declares.

An agent runs on every runtime for as long as the runtime lives, so what its process holds in memory
matters: this entry point loads neither typer (which reads every value through pydantic, about 10 MB kept
for the agent's lifetime) nor the admin commands, rich, the server or its libraries. The full CLI's
`rrm agent` hands its arguments here, so both read a command line the same way.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rrm.agent.config import AgentConfig
from rrm.core.settings import Declared, declared, read_environment

SUMMARY = "Run the agent of one runtime (blocks until SIGTERM or Ctrl-C)."
METAVARS = {str: "TEXT", int: "N", float: "SECONDS", Path: "PATH"}
WHOLE_WITH_ZEROS = re.compile(r"\s*([+-]?[0-9_]+)\.0+\s*")


def main(args: list[str]) -> None:
    """Run `rrm agent ARGS…` (`args` start with "agent") and exit with the agent's exit code: 2 for a
    command line or configuration it cannot run with, 1 when stopped with Ctrl-C before it started."""
    from rrm.agent import run_agent

    config = read_command_line(args[1:], os.environ)
    try:
        code = run_agent(config)
    except KeyboardInterrupt:
        print("\nAborted!", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)


def read_command_line(args: list[str], environ: Mapping[str, str]) -> AgentConfig:
    """The configuration `args` and the environment give (the command line wins over the environment, an
    empty variable counts as unset); argparse prints usage and exits 2 on a mistake, 0 after `--help`."""
    command_line = parser()
    given = vars(command_line.parse_args(_values_joined(args)))
    read = {
        item.name: _converted(command_line, item, given[item.name])
        for item in declared(AgentConfig)
        if item.name in given
    }
    return AgentConfig(**{**read_environment(AgentConfig, environ), **read})


def parser() -> argparse.ArgumentParser:
    """`rrm agent`'s options, one for each setting `AgentConfig` declares with a flag."""
    result = argparse.ArgumentParser(
        prog="rrm agent",
        description=SUMMARY,
        add_help=False,
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    result.add_argument("--help", action="help", help="show this message and exit")
    for item in declared(AgentConfig):
        if item.flag:
            kind, repeatable = _value_kind(item.kind)
            result.add_argument(
                item.flag,
                dest=item.name,
                action="append" if repeatable else "store",
                required=item.required,
                metavar=METAVARS[kind],
                help=_help(item),
            )
    return result


def _value_kind(kind: Any) -> tuple[type, bool]:
    """The type one value is read as, and whether the option is repeatable (a list)."""
    repeatable = typing.get_origin(kind) is list
    for candidate in typing.get_args(kind) or (kind,):
        if candidate in METAVARS:
            return candidate, repeatable
    return str, repeatable  # a Literal: checked with its reason when the agent starts


def _converted(command_line: argparse.ArgumentParser, item: Declared, given: Any) -> Any:
    """A value as its setting's type. Only the last of an option given twice counts, so only it is read."""
    kind, repeatable = _value_kind(item.kind)
    try:
        return [_read(value, kind) for value in given] if repeatable else _read(given, kind)
    except ValueError:
        command_line.error(f"argument {item.flag}: invalid {METAVARS[kind].lower()} value: {given!r}")


def _read(value: str, kind: type) -> Any:
    """A number as the full CLI always read one: ASCII digits only, and a whole number may end in ".0"."""
    if kind not in (int, float):
        return kind(value)
    if not value.isascii():
        raise ValueError(value)
    whole = WHOLE_WITH_ZEROS.fullmatch(value) if kind is int else None
    return kind(whole.group(1) if whole else value)


def _help(item: Declared) -> str:
    environment = f", else ${item.env}" if item.env else ""
    default = "required" if item.required else f"default: {item.shown.strip('`')}"
    return f"{item.help} ({default}{environment})"


def _values_joined(args: list[str]) -> list[str]:
    """`--option value` as `--option=value`: an option takes the next word as its value, even one that
    starts with "-" (as the full CLI always read it), which argparse would otherwise take for an option."""
    taking_values = {item.flag for item in declared(AgentConfig) if item.flag}
    joined: list[str] = []
    rest = iter(args)
    for arg in rest:
        value = next(rest, None) if arg in taking_values else None
        joined.append(arg if value is None else f"{arg}={value}")
    return joined
