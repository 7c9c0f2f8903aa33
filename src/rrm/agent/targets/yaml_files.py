"""The YAML files the self-hosted target reads and writes: parsed with libyaml where PyYAML has it (about ten
times cheaper than its pure-Python parser), and remembered by content, so that observing the resources
directory parses only the files whose bytes changed since they were last read or written."""

from __future__ import annotations

from pathlib import Path
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
    documents are shared with the callers, which do not change them."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[bytes, dict[str, Any]]] = {}

    def read(self, path: Path) -> dict[str, Any]:
        """The document in `path`; `{}` for a file that cannot be read or parsed."""
        try:
            data = path.read_bytes()
        except OSError:
            self._known.pop(path, None)
            return {}
        known = self._known.get(path)
        if known is not None and known[0] == data:
            return known[1]
        document = parse_document(data)
        self._known[path] = (data, document)
        return document

    def wrote(self, path: Path, data: bytes, document: dict[str, Any]) -> None:
        """`data`, the dump of `document`, is now in `path`."""
        self._known[path] = (data, document)

    def keep_only(self, paths: set[Path]) -> None:
        """Forget the files not in `paths` (removed ones), so the memo holds no more than the directory."""
        for path in self._known.keys() - paths:
            del self._known[path]
