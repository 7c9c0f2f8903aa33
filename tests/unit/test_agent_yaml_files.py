"""The self-hosted target's YAML files: parsed once per content, and an edit from outside always seen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from rrm.agent.targets import yaml_files
from rrm.agent.targets.yaml_files import DocumentMemo, dump_yaml, load_yaml, parse_document

DOCUMENT = {
    "apiVersion": "dapr.io/v1alpha1",
    "kind": "Component",
    "metadata": {"name": "orders", "annotations": {"note": "true", "at": "2024-01-01", "empty": ""}},
    "spec": {"type": "state.redis", "version": "v1", "metadata": [{"name": "n", "value": "1.0"}]},
    "scopes": ["ünïcode", "yes", "null"],
}


def test_the_dump_reads_back_as_the_document_and_as_pyyaml_would_write_it() -> None:
    text = dump_yaml(DOCUMENT)

    assert load_yaml(text) == DOCUMENT
    assert yaml.safe_load(text) == DOCUMENT
    assert text == yaml.safe_dump(DOCUMENT, sort_keys=False, default_flow_style=False, allow_unicode=True)


@pytest.mark.parametrize("data", [b"\xff\xfe", b"a: [unclosed", b"- a list\n", b""])
def test_anything_but_a_mapping_reads_as_empty(data: bytes) -> None:
    assert parse_document(data) == {}


def test_unchanged_bytes_are_not_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rrm-orders.yaml"
    path.write_text(dump_yaml(DOCUMENT))
    memo = DocumentMemo()
    first = memo.read(path)
    parsed: list[bytes] = []
    monkeypatch.setattr(yaml_files, "parse_document", lambda data: parsed.append(data) or {})

    assert memo.read(path) is first
    assert parsed == []


def test_an_edit_from_outside_is_read_even_with_the_same_size_and_time(tmp_path: Path) -> None:
    path = tmp_path / "rrm-orders.yaml"
    memo = DocumentMemo()
    data = dump_yaml(DOCUMENT).encode()
    path.write_bytes(data)
    memo.wrote(path, data, DOCUMENT)
    stat = path.stat()
    path.write_bytes(data.replace(b"state.redis", b"state.rediz"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert memo.read(path)["spec"]["type"] == "state.rediz"


def test_a_written_document_is_taken_back_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "rrm-orders.yaml"
    memo = DocumentMemo()
    data = dump_yaml(DOCUMENT).encode()
    path.write_bytes(data)
    memo.wrote(path, data, DOCUMENT)

    assert memo.read(path) is DOCUMENT


def test_a_removed_file_reads_as_empty_and_forgotten_files_are_parsed_anew(tmp_path: Path) -> None:
    path = tmp_path / "rrm-orders.yaml"
    path.write_text(dump_yaml(DOCUMENT))
    memo = DocumentMemo()
    first = memo.read(path)
    memo.keep_only(set())

    assert memo.read(path) == first and memo.read(path) is not first
    path.unlink()
    assert memo.read(path) == {}
