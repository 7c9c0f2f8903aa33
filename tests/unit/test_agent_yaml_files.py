"""The self-hosted target's YAML files: parsed once per content, and an edit from outside always seen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

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


def pyyaml_dump(document: Any) -> str:
    return yaml.dump(
        document, Dumper=yaml_files.SafeDumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


TEXT = st.one_of(
    st.sampled_from(
        ["true", "yes", "On", "null", "~", "1", "1.0", "0x1F", "1:20", "2024-01-01", "1e5", "=", "<<"]
    ),
    st.sampled_from(
        ["v1", "a:b", "a:", "https://x.example/p?q=1&r=2", "a,b", "x#y", "-x", "é", "a b", "it's"]
    ),
    st.text(alphabet="abz09.:/-_ #'\"?,&%@~\n", max_size=12),
)
# what dump_yaml writes itself: strings without spaces or quotes, some of which PyYAML reads as other types
SIMPLE_TEXT = st.one_of(
    st.sampled_from(["0b11", "1_000", "190:20:30", "Off", "y", "NO", "a~b", "x%y", "a@b", "a=b", "1.0"]),
    st.text(alphabet="abzAZ09.:/-_?,&%@~=+", min_size=1, max_size=10),
)


def documents(text: st.SearchStrategy[str], *scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(
        text,
        st.recursive(
            st.one_of(text, st.integers(), st.booleans(), st.none(), *scalars),
            lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
            max_leaves=12,
        ),
        max_size=4,
    )


@settings(max_examples=300, deadline=None)
@given(documents(TEXT, st.floats(allow_nan=False)))
def test_any_document_is_written_as_pyyaml_writes_it(document: dict[str, Any]) -> None:
    assert dump_yaml(document) == pyyaml_dump(document)


@settings(max_examples=300, deadline=None)
@given(documents(SIMPLE_TEXT))
def test_a_simple_document_is_written_as_pyyaml_writes_it(document: dict[str, Any]) -> None:
    assert dump_yaml(document) == pyyaml_dump(document)


def test_a_component_is_written_without_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    component = {**DOCUMENT, "scopes": ["orders", "billing"]}
    component["metadata"] = {"name": "orders", "annotations": {"note": "true", "at": "2024-01-01"}}
    expected = pyyaml_dump(component)
    monkeypatch.setattr(yaml, "dump", None)

    assert dump_yaml(component) == expected
