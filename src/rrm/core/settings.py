"""Settings declared once: each field of a settings dataclass carries its command-line flag, its environment
variable and what it means, so the process's command line, its environment reader and the README's
configuration tables all come from the one definition."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

METADATA_KEY = "rrm.setting"
DURATION = re.compile(r"^(\d+)([smhd]?)$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Declared:
    """How a setting is given: `flag` on the command line, `env` in the environment, how either is read
    (`parse`; None: as the field's type), what it is for (`help`), its default as people read it (`shown`)
    and the least value a flag takes (`minimum`)."""

    name: str
    flag: str | None
    env: str | None
    help: str
    shown: str
    parse: Callable[[str], Any] | None
    minimum: float | None
    required: bool
    kind: Any  # the field's type: str, int, float, Path, a list of one of them, or one of them or None


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    env: str | None = None,
    parse: Callable[[str], Any] | None = None,
    shown: str | None = None,
    minimum: float | None = None,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
) -> Any:
    """A dataclass field declaring a setting; `factory` for a default made per instance (a list), `secret`
    keeps the value out of the instance's repr and so out of any log line that prints it."""
    described = {
        "flag": flag,
        "env": env,
        "help": help,
        "shown": shown if shown is not None else _shown(default, factory),
        "parse": parse,
        "minimum": minimum,
    }
    metadata = {METADATA_KEY: described}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata, repr=not secret)
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


def _shown(default: Any, factory: Callable[[], Any] | None) -> str:
    if factory is not None or default is None:
        return "none"
    if default is dataclasses.MISSING:
        return "required"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def declared(settings_class: type) -> Iterator[Declared]:
    """The settings `settings_class` declares, in the order of its fields."""
    kinds = typing.get_type_hints(settings_class)
    for field in dataclasses.fields(settings_class):
        if METADATA_KEY in field.metadata:
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            yield Declared(
                field.name, **field.metadata[METADATA_KEY], required=required, kind=kinds[field.name]
            )


def read_environment(settings_class: type, environ: Mapping[str, str]) -> dict[str, Any]:
    """The values the environment gives, by field name; an empty variable counts as not set."""
    values = {}
    for item in declared(settings_class):
        if item.env and environ.get(item.env):
            values[item.name] = (item.parse or str)(environ[item.env])
    return values


def markdown_table(settings_class: type) -> str:
    """The README's table of `settings_class`: flag, environment variable, default, meaning."""
    rows = ["| flag | environment | default | what it is |", "|---|---|---|---|"]
    for item in declared(settings_class):
        flag = f"`{item.flag}`" if item.flag else ""
        env = f"`{item.env}`" if item.env else ""
        rows.append(f"| {flag} | {env} | {item.shown} | {item.help.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


def duration_seconds(text: str) -> int:
    """Seconds from `3600`, `45s`, `30m`, `1h` or `7d`."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a positive duration such as 3600, 30m, 1h or 7d")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]
