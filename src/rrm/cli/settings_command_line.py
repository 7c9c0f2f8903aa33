"""A process's command line read with argparse from the settings a dataclass declares (`rrm.core.settings`):
`rrm agent` from `AgentConfig`, `rrm server` from `ServerSettings`. Values are read as the typer commands
these replaced read them, so command lines that worked keep working: an option takes the next word as its
value whatever it starts with, only the last of an option given twice counts, numbers are ASCII digits."""

from __future__ import annotations

import argparse
import re
import typing
from pathlib import Path
from typing import Any

from rrm.core.settings import Declared, declared

METAVARS = {str: "TEXT", int: "N", float: "SECONDS", Path: "PATH"}
WHOLE_WITH_ZEROS = re.compile(r"\s*([+-]?[0-9_]+)\.0+\s*")


def read_given(settings_class: type, prog: str, summary: str, args: list[str]) -> dict[str, Any]:
    """The settings `args` give, by field name; argparse prints usage and exits 2 on a mistake, 0 after
    `--help`."""
    command_line = parser(settings_class, prog, summary)
    given = vars(command_line.parse_args(_values_joined(settings_class, args)))
    return {
        item.name: _converted(command_line, item, given[item.name])
        for item in declared(settings_class)
        if item.name in given
    }


def parser(settings_class: type, prog: str, summary: str) -> argparse.ArgumentParser:
    """An option for each setting `settings_class` declares with a flag."""
    result = argparse.ArgumentParser(
        prog=prog, description=summary, add_help=False, allow_abbrev=False, argument_default=argparse.SUPPRESS
    )
    result.add_argument("--help", action="help", help="show this message and exit")
    for item in declared(settings_class):
        if item.flag:
            kind, repeatable = _value_kind(item.kind)
            result.add_argument(
                item.flag,
                dest=item.name,
                action="append" if repeatable else "store",
                required=item.required,
                metavar=METAVARS[kind] if item.parse in (None, kind) else "TEXT",
                help=_help(item),
            )
    return result


def _value_kind(kind: Any) -> tuple[type, bool]:
    """The type one value is read as, and whether the option is repeatable (a list)."""
    repeatable = typing.get_origin(kind) is list
    for candidate in typing.get_args(kind) or (kind,):
        if candidate in METAVARS:
            return candidate, repeatable
    return str, repeatable  # a Literal: checked, with its reason, by what uses it


def _converted(command_line: argparse.ArgumentParser, item: Declared, given: Any) -> Any:
    """A value as its setting's type (only the last of an option given twice counts, so only it is read)."""
    kind, repeatable = _value_kind(item.kind)
    read = item.parse or _read_as(kind)
    value: Any
    try:
        value = [read(one) for one in given] if repeatable else read(given)
    except ValueError as exc:
        command_line.error(f"argument {item.flag}: invalid value {given!r}: {exc}")
    if item.minimum is not None and value < item.minimum:
        command_line.error(f"argument {item.flag}: {given} is less than {item.minimum:g}")
    return value


def _read_as(kind: type) -> typing.Callable[[str], Any]:
    return lambda value: _read(value, kind)


def _read(value: str, kind: type) -> Any:
    """A number as typer reads one: ASCII digits only, and a whole number may end in ".0"."""
    if kind not in (int, float):
        return kind(value)
    if not value.isascii():
        raise ValueError("not a number")
    whole = WHOLE_WITH_ZEROS.fullmatch(value) if kind is int else None
    return kind(whole.group(1) if whole else value)


def _help(item: Declared) -> str:
    environment = f"${item.env}, else " if item.env else ""
    default = "required" if item.required else f"default: {environment}{item.shown.replace('`', '')}"
    return f"{item.help.replace('`', '')} ({default})".replace("%", "%%")


def _values_joined(settings_class: type, args: list[str]) -> list[str]:
    """`--option value` as `--option=value`: argparse would take a value starting with "-" for an option."""
    taking_values = {item.flag for item in declared(settings_class) if item.flag}
    joined: list[str] = []
    rest = iter(args)
    for arg in rest:
        value = next(rest, None) if arg in taking_values else None
        joined.append(arg if value is None else f"{arg}={value}")
    return joined
