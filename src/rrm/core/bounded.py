"""Decoding untrusted JSON and YAML within bounds: at most `MAX_DEPTH` nested arrays/objects, and YAML aliases
that expand to at most `MAX_ALIAS_NODES` nodes per document.

Python's decoders and everything that walks their output recurse once per level, so a deeply nested body
ends in `RecursionError`; a YAML alias bomb is small as a graph and exponential once serialized. Both are
refused here, with the path of the field or the line at fault, before anything deep or expanded is built.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, cast

import yaml
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000
_SHOWN_SEGMENTS = 16

_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_NOT_BRACKET = re.compile(_STRING + r'|[^\[\]{}"]+')
_INNERMOST = re.compile(r"\[\]|\{\}|\[\}|\{\]")
# what the path of a field needs: strings (keys), brackets, commas and colons
_STRUCTURE = re.compile(_STRING + r"|[\[\]{},:]")


class DecodeError(ValueError):
    """A body that is not JSON, not UTF-8 or too deep; `path` leads to the field (empty: the body itself)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{field_name(path) or 'body'}: {message}")
        self.path = path
        self.message = message


def field_name(path: tuple[str | int, ...]) -> str:
    """`documents[0].spec.metadata`; long paths keep their first segments and end in `...`."""
    text = ""
    for part in path[:_SHOWN_SEGMENTS]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text + ("..." if len(path) > _SHOWN_SEGMENTS else "")


def decode_json(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of a request body (UTF-8, no NaN or Infinity), nested at most `max_depth` deep."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise DecodeError((), f"not UTF-8 text (byte {exc.start})") from None
    if _deeper_than(text, max_depth):
        _check_depth(text, max_depth)
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except DecodeError:
        raise
    except RecursionError:  # brackets left open (a body cut short) form no pairs for `_deeper_than`
        _check_depth(text, max_depth)
        raise DecodeError((), f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, and integers beyond Python's digit limit
        raise DecodeError((), f"not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise DecodeError((), f"not valid JSON: {name} is not a JSON number")


def _finite_float(literal: str) -> float:
    """A number beyond a double's range would become infinity, which no JSON encoder writes back."""
    value = float(literal)
    if math.isinf(value):
        raise DecodeError((), f"not valid JSON: {literal[:40]} is beyond a 64-bit floating-point number")
    return value


def _deeper_than(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest beyond `limit`: innermost pairs removed `limit` times over,
    each time at the regular-expression engine's speed."""
    brackets = _NOT_BRACKET.sub("", text)
    for _ in range(limit):
        brackets, removed = _INNERMOST.subn("", brackets)
        if not removed:
            return False
    return _INNERMOST.search(brackets) is not None


def _check_depth(text: str, limit: int) -> None:
    """Raise naming the first value nested beyond `limit`. `slots[i]` is where the scan is in the i-th open
    container: an index, or the raw token of the key."""
    kinds: list[str] = []
    slots: list[int | str] = []
    last_string = '""'
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        char = token[0]
        if char == '"':
            last_string = token
        elif char in "[{":
            if len(kinds) == limit:
                raise DecodeError(_decoded(slots), f"nested deeper than {limit} levels")
            kinds.append(char)
            slots.append(0 if char == "[" else '""')
        elif char in "]}":
            if kinds:
                kinds.pop()
                slots.pop()
        elif kinds and char == "," and kinds[-1] == "[":
            slots[-1] = int(slots[-1]) + 1
        elif kinds and char == ":" and kinds[-1] == "{":
            slots[-1] = last_string


def _decoded(slots: list[int | str]) -> tuple[str | int, ...]:
    return tuple(s if isinstance(s, int) else str(json.loads(s)) for s in slots)


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses nesting beyond `MAX_DEPTH` and aliases that, expanded, would add
    more than `MAX_ALIAS_NODES` nodes to a document (or refer to a node that contains them)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) → (nodes once expanded, nesting height)

    def compose_document(self) -> Node | None:
        self._expanded = 0
        self._sizes.clear()
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._count_alias(cast(yaml.AliasEvent, self._next_event()))  # as check_event found
            return super().compose_node(parent, index)
        opens = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        if opens and self._depth == MAX_DEPTH:
            self._refuse(f"nested deeper than {MAX_DEPTH} levels", self._next_event())
        self._depth += opens
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= opens
        if node is not None:
            self._sizes[id(node)] = self._size_of(node)
        return node

    def _next_event(self) -> yaml.Event:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        return event

    def _size_of(self, node: Node) -> tuple[int, int]:
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            return 1, 0
        sizes = [self._sizes.get(id(child), (1, 0)) for child in children]
        return 1 + sum(n for n, _ in sizes), 1 + max((h for _, h in sizes), default=0)

    def _count_alias(self, event: yaml.AliasEvent) -> None:
        node = self.anchors.get(event.anchor)
        if node is None:
            return  # PyYAML reports the undefined alias
        if id(node) not in self._sizes:
            self._refuse(f"alias *{event.anchor} refers to a node that contains it", event)
        nodes, height = self._sizes[id(node)]
        self._expanded += nodes
        if self._expanded > MAX_ALIAS_NODES:
            self._refuse(f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?)", event)
        if self._depth + height > MAX_DEPTH:
            self._refuse(f"alias *{event.anchor} nests deeper than {MAX_DEPTH} levels", event)

    def _refuse(self, problem: str, event: yaml.Event) -> None:
        raise ComposerError(None, None, problem, event.start_mark)  # type: ignore[arg-type]


def load_yaml(text: str) -> Any:
    """One YAML document, within the bounds; raises `yaml.YAMLError` (a marked one when bounds are hit)."""
    return yaml.load(text, Loader=BoundedLoader)


def load_yaml_documents(text: str) -> list[Any]:
    """Every document of a multi-document YAML text, within the bounds."""
    return list(yaml.load_all(text, Loader=BoundedLoader))
