"""The YAML files the self-hosted target reads and writes: parsed with libyaml where PyYAML has it (about ten
times cheaper than its pure-Python parser), and remembered by content, so that observing the resources
directory parses only the files whose bytes changed since they were last read or written."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

import yaml

SafeLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, through libyaml when present; raises `yaml.YAMLError` as it does."""
    return yaml.load(text, Loader=SafeLoader)


def dump_yaml(document: Any) -> str:
    """`yaml.safe_dump` in block style and in the document's own key order, through libyaml when present."""
    text: str = yaml.dump(
        document, Dumper=SafeDumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return text


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
