"""The YAML files the self-hosted target reads and writes: parsed with libyaml where PyYAML has it (about ten
times cheaper than its pure-Python parser), and remembered by content, so that observing the resources
directory parses only the files whose bytes changed since they were last read or written."""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from typing import Any

import yaml

SafeLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, through libyaml when present; raises `yaml.YAMLError` as it does."""
    return yaml.load(text, Loader=SafeLoader)


def dump_yaml(document: Any) -> str:
    """`yaml.safe_dump` in block style and in the document's own key order, through libyaml when present.

    A mapping of what a Component holds (mappings, lists of mappings or scalars, ints, booleans, nulls and
    one-line ASCII strings without spaces) is written here directly, as PyYAML writes it: PyYAML's
    representer and resolver, in Python even with libyaml, took about 400 us per component file."""
    lines = _mapping_lines(document) if type(document) is dict and document else None
    if lines is not None:
        return "\n".join(lines) + "\n"
    text: str = yaml.dump(
        document, Dumper=SafeDumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return text


# Strings PyYAML writes plain unless its resolver reads them as another type (then in single quotes): no
# indicator at the start, no space, no line break, no quote, not ending in ':'.
_SIMPLE_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:?=&%+@~,-]*(?<!:)\Z")
# PyYAML's implicit types by the first character that can start them (`Resolver.resolve` looks them up so)
_IMPLICIT: dict[str, list[tuple[str, re.Pattern[str]]]] = yaml.resolver.Resolver.yaml_implicit_resolvers
_SIMPLE_KEY_LIMIT = 100  # PyYAML writes a key of 128 characters or more as a complex key (`? key`)


def _scalar(value: Any) -> str | None:
    """`value` as PyYAML's safe dump writes it on a line of its own, or None for anything left to PyYAML."""
    if value is True or value is False or value is None:
        return "true" if value else "false" if value is False else "null"
    if type(value) is int:
        return str(value)
    if type(value) is str and _SIMPLE_TEXT.match(value):
        implicit = any(pattern.match(value) for _, pattern in _IMPLICIT.get(value[0], ()))
        return f"'{value}'" if implicit else value
    if value == {} or value == []:
        return "{}" if type(value) is dict else "[]" if type(value) is list else None
    return None


def _mapping_lines(mapping: dict[Any, Any]) -> list[str] | None:
    lines: list[str] = []
    for key, value in mapping.items():
        name = _scalar(key) if type(key) is str and len(key) < _SIMPLE_KEY_LIMIT else None
        if name is None:
            return None
        if value and type(value) is dict:
            inner = _mapping_lines(value)
            if inner is None:
                return None
            lines.append(name + ":")
            lines.extend("  " + line for line in inner)
        elif value and type(value) is list:
            items = _sequence_lines(value)
            if items is None:
                return None
            lines.append(name + ":")
            lines.extend(items)  # PyYAML does not indent a sequence in a mapping
        else:
            text = _scalar(value)
            if text is None:
                return None
            lines.append(f"{name}: {text}")
    return lines


def _sequence_lines(items: list[Any]) -> list[str] | None:
    lines: list[str] = []
    for item in items:
        inner = _mapping_lines(item) if item and type(item) is dict else None
        if inner is not None:
            lines.append("- " + inner[0])
            lines.extend("  " + line for line in inner[1:])
            continue
        text = _scalar(item) if not (item and type(item) in (dict, list)) else None
        if text is None:
            return None
        lines.append("- " + text)
    return lines


def parse_document(data: bytes) -> dict[str, Any]:
    """The mapping a file holds; `{}` for anything else (not UTF-8, not YAML, not a mapping)."""
    try:
        document = load_yaml(data.decode())
    except (UnicodeDecodeError, yaml.YAMLError):
        return {}
    return document if isinstance(document, dict) else {}


class DocumentMemo:
    """Each file's last bytes and the document they hold. A file is always read: only bytes equal to the
    remembered ones are taken as the remembered document, so an edit from outside is never missed. The
    documents are shared with the callers, which do not change them. Files are known by their path as a
    string (`os.fspath`), so a directory scan needs no `Path` per entry."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[bytes, dict[str, Any]]] = {}

    def read(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The document in `path`; `{}` for a file that cannot be read or parsed."""
        key = os.fspath(path)
        try:
            with open(key, "rb") as file:
                data = file.read()
        except OSError:
            self._known.pop(key, None)
            return {}
        known = self._known.get(key)
        if known is not None and known[0] == data:
            return known[1]
        document = parse_document(data)
        self._known[key] = (data, document)
        return document

    def wrote(self, path: str | os.PathLike[str], data: bytes, document: dict[str, Any]) -> None:
        """`data`, the dump of `document`, is now in `path`."""
        self._known[os.fspath(path)] = (data, document)

    def keep_only(self, paths: Collection[str]) -> None:
        """Forget the files not in `paths` (as strings; removed ones), so the memo holds no more than the
        directory."""
        for path in self._known.keys() - paths:
            del self._known[path]
