"""Bounded decoding of JSON bodies and YAML (`rrm.core.bounded`): depth, alias expansion, encodings."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rrm.cli.app import app
from rrm.core.bounded import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    DecodeError,
    decode_json,
    load_yaml,
    load_yaml_documents,
)


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def test_json_within_the_depth_limit_decodes() -> None:
    text = nested(MAX_DEPTH)
    assert decode_json(text.encode()) == json.loads(text)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 100_000])
def test_json_deeper_than_the_limit_is_refused_naming_the_field(depth: int) -> None:
    body = '{"documents": [{"spec": {"metadata": [{"name": "x", "value": ' + nested(depth) + "}]}}]}"
    with pytest.raises(DecodeError) as raised:
        decode_json(body.encode())
    assert raised.value.path[:6] == ("documents", 0, "spec", "metadata", 0, "value")
    assert str(raised.value).startswith("documents[0].spec.metadata[0].value[0]")
    assert f"nested deeper than {MAX_DEPTH} levels" in str(raised.value)


@pytest.mark.parametrize("body", ["[" * 5000, '{"a": ' * 5000, '{"token": ' + "[" * 5000 + "0"])
def test_brackets_left_open_beyond_the_limit_are_refused_naming_the_field(body: str) -> None:
    # a body cut short: its brackets never close, so they form no pairs to count
    with pytest.raises(DecodeError) as raised:
        decode_json(body.encode())
    assert raised.value.message == f"nested deeper than {MAX_DEPTH} levels"
    assert len(raised.value.path) == MAX_DEPTH


def test_brackets_inside_strings_do_not_count() -> None:
    value = {"a": "[" * 500 + '\\"{' * 100, "b": [[{"c": "]]]"}]]}
    assert decode_json(json.dumps(value).encode()) == value


def test_escaped_quotes_in_keys_are_named_correctly() -> None:
    body = '{"we\\"ird": ' + nested(MAX_DEPTH) + "}"
    with pytest.raises(DecodeError) as raised:
        decode_json(body)
    assert raised.value.path[0] == 'we"ird'


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": [1e400]}', "1e400 is beyond a 64-bit floating-point number"),
        (b'{"a": -1.5e999}', "-1.5e999 is beyond a 64-bit floating-point number"),
        (b"{", "not valid JSON"),
        (b"1" * 5000, "not valid JSON"),  # beyond Python's digit limit: a ValueError, not a JSONDecodeError
    ],
)
def test_bodies_that_are_not_json_name_the_body(body: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError) as raised:
        decode_json(body)
    assert raised.value.path == ()
    assert str(raised.value).startswith("body: ")
    assert fragment in str(raised.value)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_what_json_decodes_within_the_limit_decodes_the_same(value: object) -> None:
    assert decode_json(json.dumps(value)) == value


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet='[]{}",:\\ 1a', max_size=200))
def test_any_input_decodes_or_raises_decode_error(body: bytes | str) -> None:
    with contextlib.suppress(DecodeError):  # anything else (RecursionError, ...) fails the test
        decode_json(body)


# --- YAML ------------------------------------------------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    lines = ["apiVersion: v1", "kind: Secret", "metadata: {name: bomb}", "stringData:"]
    lines.append('  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
    previous = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        lines.append(f"  {name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
        previous = name
    return "\n".join(lines) + "\n"


def test_a_nine_level_alias_bomb_is_refused_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(yaml.MarkedYAMLError) as raised:
        load_yaml_documents(alias_bomb())
    assert time.monotonic() - started < 0.5
    assert f"aliases expand to more than {MAX_ALIAS_NODES} nodes" in str(raised.value)
    assert raised.value.problem_mark is not None and raised.value.problem_mark.line == 8  # the 5th level


def test_ordinary_aliases_and_merge_keys_still_work() -> None:
    text = "base: &base {image: x, replicas: 2}\none: *base\ntwo:\n  <<: *base\n  replicas: 3\n"
    assert load_yaml(text) == {
        "base": {"image": "x", "replicas": 2},
        "one": {"image": "x", "replicas": 2},
        "two": {"image": "x", "replicas": 3},
    }


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(yaml.MarkedYAMLError, match="refers to a node that contains it"):
        load_yaml("a: &a [1, *a]")


def test_yaml_deeper_than_the_limit_is_refused_with_its_line() -> None:
    with pytest.raises(yaml.MarkedYAMLError, match=f"nested deeper than {MAX_DEPTH} levels"):
        load_yaml("ok: 1\nvalue: " + nested(MAX_DEPTH))  # the mapping is one level more
    assert load_yaml("value: " + nested(MAX_DEPTH - 1)) == {"value": json.loads(nested(MAX_DEPTH - 1))}


def test_an_alias_cannot_nest_a_document_beyond_the_limit() -> None:
    text = f"a: &deep {nested(MAX_DEPTH - 1)}\nb: [*deep]\n"  # a is at the limit, b one beyond
    with pytest.raises(yaml.MarkedYAMLError, match="nests deeper than"):
        load_yaml(text)


def test_every_document_gets_its_own_alias_budget() -> None:
    one = "a: &a [" + ",".join(["x"] * 100) + "]\nb: [" + ",".join(["*a"] * 90) + "]\n"
    assert len(load_yaml_documents("---\n".join([one] * 3))) == 3


def test_rrm_apply_refuses_an_alias_bomb_at_once_naming_the_file_and_line(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    started = time.monotonic()
    result = CliRunner().invoke(app, ["apply", "-f", str(bomb)])  # refused before any server is contacted
    assert time.monotonic() - started < 1.0
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {bomb}:9: aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?)"
    )
