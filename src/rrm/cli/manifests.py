"""Reading `rrm apply -f` inputs: files, directories and stdin, each possibly holding many YAML documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

import yaml

from rrm.core.bounded import load_yaml_documents

STDIN = "-"
YAML_SUFFIXES = (".yaml", ".yml")


class ManifestError(Exception):
    """An input cannot be read or is not a list of YAML mappings; the message names the file and line."""


def _files_of(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in YAML_SUFFIXES)
        if not files:
            raise ManifestError(f"{source}: no .yaml or .yml files in this directory")
        return files
    if not path.exists():
        raise ManifestError(f"{source}: no such file or directory")
    return [path]


def parse_documents(text: str, origin: str) -> list[dict[str, Any]]:
    """Every non-empty document of a multi-document YAML text; each must be a mapping."""
    try:
        loaded = load_yaml_documents(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{origin}:{mark.line + 1}" if mark else origin
        problem = exc.problem or exc.context or "invalid YAML"
        raise ManifestError(f"{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{origin}: {exc}") from None
    documents = []
    for position, document in enumerate(loaded, start=1):
        if document is None:
            continue
        if not isinstance(document, dict):
            raise ManifestError(
                f"{origin}: document {position} is a {type(document).__name__}, not a mapping"
            )
        documents.append(document)
    return documents


def read_documents(sources: list[str], stdin: TextIO) -> list[dict[str, Any]]:
    """Documents in the order given: sources in order, directory files sorted by name."""
    documents: list[dict[str, Any]] = []
    for source in sources:
        if source == STDIN:
            documents.extend(parse_documents(stdin.read(), "<stdin>"))
            continue
        for path in _files_of(source):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ManifestError(f"{path}: cannot read: {exc}") from None
            documents.extend(parse_documents(text, str(path)))
    if not documents:
        raise ManifestError(f"no documents in {', '.join(sources)}")
    return documents
