"""Kubernetes label rules, so runtime labels and selectors mean exactly what they mean in Kubernetes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

NAME_MAX = 63
PREFIX_MAX = 253
VALUE_MAX = 63

_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_CHARSET = "alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"


def label_key_error(key: object) -> str | None:
    """None when `key` is a valid label key (`[prefix/]name`), else why not."""
    if not isinstance(key, str):
        return "must be a string"
    parts = key.split("/")
    if len(parts) > 2:
        return "must be a name with an optional DNS subdomain prefix and '/', e.g. 'example.com/my-name'"
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            return "prefix must not be empty"
        if len(prefix) > PREFIX_MAX:
            return f"prefix must be at most {PREFIX_MAX} characters"
        if not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            return "prefix must be a DNS-1123 subdomain: lower-case alphanumeric labels separated by '.'"
    name = parts[-1]
    if not name:
        return "name must not be empty"
    if len(name) > NAME_MAX:
        return f"name must be at most {NAME_MAX} characters"
    if not _NAME.fullmatch(name):
        return f"name must consist of {_CHARSET}"
    return None


def label_value_error(value: object) -> str | None:
    """None when `value` is a valid label value (the empty string is one), else why not."""
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > VALUE_MAX:
        return f"must be at most {VALUE_MAX} characters"
    if value and not _NAME.fullmatch(value):
        return f"must be empty or consist of {_CHARSET}"
    return None


def validate_labels(labels: Mapping[Any, Any]) -> list[tuple[str, str]]:
    """Every problem with a labels mapping as (field, message), field being `labels.<key>`."""
    problems: list[tuple[str, str]] = []
    for key, value in labels.items():
        field = f"labels.{key}"
        if (error := label_key_error(key)) is not None:
            problems.append((field, f"invalid label key: {error}"))
        if (error := label_value_error(value)) is not None:
            problems.append((field, f"invalid label value: {error}"))
    return problems


def parse_label_args(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """CLI label arguments, as in `kubectl label`: `key=value` sets a label, `key-` removes it.

    Returns (labels to set, keys to remove). A key named twice is an error rather than a silent overwrite.
    """
    to_set: dict[str, str] = {}
    to_remove: list[str] = []
    for arg in args:
        if "=" in arg:
            key, _, value = arg.partition("=")
        elif arg.endswith("-"):
            key, value = arg[:-1], None
        else:
            raise ValueError(f"invalid label argument {arg!r}: expected KEY=VALUE to set or KEY- to remove")
        if (error := label_key_error(key)) is not None:
            raise ValueError(f"invalid label argument {arg!r}: key {error}")
        if key in to_set or key in to_remove:
            raise ValueError(f"invalid label argument {arg!r}: label {key!r} is given more than once")
        if value is None:
            to_remove.append(key)
            continue
        if (error := label_value_error(value)) is not None:
            raise ValueError(f"invalid label argument {arg!r}: value {error}")
        to_set[key] = value
    return to_set, to_remove
