"""Writing objects as a Helm template: the builders of `agent` and `control_plane` are called with values
that are Go template expressions (strings `{{ … }}`, or the nodes below), and this module prints the result.

A string holding an expression is written as that expression (quoted when it is the whole value); the
nodes mark what Helm decides at render time: list items or documents repeated per element (`Each`) or
present only under a condition (`When`), mapping entries present only under a condition (`IfSet`), a
value written unquoted (`Raw`) or as a block from the chart's values (`Block`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

WHOLE_EXPRESSION = re.compile(r"\{\{ ((?:(?!\{\{).)*) \}\}")


@dataclass(frozen=True)
class Each:
    """List items (or documents) repeated for each element of `items`, bound to `var`."""

    items: str
    var: str
    body: list[Any]


@dataclass(frozen=True)
class When:
    """List items (or documents) present only when `condition` holds."""

    condition: str
    body: list[Any]


@dataclass(frozen=True)
class IfSet:
    """A mapping entry present only when `condition` holds."""

    condition: str
    value: Any


@dataclass(frozen=True)
class Raw:
    """A value written as the expression's output, unquoted: numbers, percentages."""

    expression: str


@dataclass(frozen=True)
class Block:
    """A mapping value copied from the chart's values with `toYaml`."""

    expression: str


def template(header: str, preamble: list[str], documents: list[Any]) -> str:
    """The text of a template file holding `documents` (objects, or `Each` / `When` of objects)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()] + preamble
    for document in documents:
        if isinstance(document, Each | When):
            lines.append(_opening(document, 0))
            lines += [line for inner in document.body for line in ["---", *_mapping(inner, 0)]]
            lines.append("{{- end }}")
        else:
            lines += ["---", *_mapping(document, 0)]
    return "\n".join(lines) + "\n"


def _opening(node: Each | When, indent: int) -> str:
    action = f"range {node.var} := {node.items}" if isinstance(node, Each) else f"if {node.condition}"
    return " " * indent + "{{- " + action + " }}"


def _mapping(mapping: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, value in mapping.items():
        if isinstance(value, IfSet):
            lines += [
                f"{pad}{{{{- if {value.condition} }}}}",
                *_entry(key, value.value, indent),
                f"{pad}{{{{- end }}}}",
            ]
        else:
            lines += _entry(key, value, indent)
    return lines


def _entry(key: str, value: Any, indent: int) -> list[str]:
    pad = " " * indent
    head = f"{pad}{_scalar(key)}:"
    if isinstance(value, Block):
        return [head, f"{pad}  {{{{- toYaml {value.expression} | nindent {indent + 2} }}}}"]
    if isinstance(value, dict) and value:
        return [head, *_mapping(value, indent + 2)]
    if isinstance(value, list) and value:
        return [head, *_sequence(value, indent + 2)]
    return [f"{head} {_scalar(value)}"]


def _sequence(items: list[Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for item in items:
        if isinstance(item, Each | When):
            lines += [_opening(item, indent), *_sequence(item.body, indent), f"{pad}{{{{- end }}}}"]
        elif isinstance(item, dict) and item:
            assert not isinstance(next(iter(item.values())), IfSet), "a list item cannot start with an IfSet"
            first, *rest = _mapping(item, indent + 2)
            lines += [f"{pad}- {first.lstrip()}", *rest]
        else:
            assert not isinstance(item, list), "lists of lists are not written"
            lines.append(f"{pad}- {_scalar(item)}")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return f"{{{{ {value.expression} }}}}"
    if isinstance(value, str) and "{{" in value:
        whole = WHOLE_EXPRESSION.fullmatch(value)
        if whole:
            return f"{{{{ {whole.group(1)} | quote }}}}"
        assert '"' not in WHOLE_EXPRESSION.sub("", value) and "\\" not in value, value
        return f'"{value}"'
    text: str = yaml.safe_dump(value, default_flow_style=True, width=1_000_000)
    return text.removesuffix("\n").removesuffix("\n...").strip()
