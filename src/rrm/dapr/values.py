"""Metadata value types as Dapr decodes them: a value may be typed JSON or a quoted string that parses.

An empty value is always accepted: Dapr treats it as unset and uses the field's default.
"""

from __future__ import annotations

import json
import re

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
# Go's time.ParseDuration; components-contrib also accepts a bare integer as seconds.
_GO_DURATION = re.compile(r"^[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")
# Kubernetes resource.Quantity, which Dapr uses for byte sizes ("100Mi", "1k", "1e3").
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
_BOOLS = frozenset({"true", "false", "t", "f", "1", "0"})

EXPECTED = {
    "number": 'a number, e.g. 3 or "3"',
    "bool": 'a boolean: true, false, "true" or "false"',
    "duration": 'a duration, e.g. "10s", "1m30s", "500ms" (or whole seconds)',
    "bytesize": 'a byte size, e.g. "100", "1k", "10Ki", "100Mi", "1G"',
}


def value_text(value: object) -> str:
    """The string Dapr hands to a component for a metadata `value`."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def value_type_error(field_type: str, value: object) -> str | None:
    """None when `value` decodes as `field_type` (string, number, bool, duration, bytesize), else what is
    expected."""
    if field_type not in EXPECTED or value in (None, ""):
        return None
    if isinstance(value, bool):
        ok = field_type == "bool"
    elif isinstance(value, int):
        ok = field_type in ("number", "duration", "bytesize") or (field_type == "bool" and value in (0, 1))
    elif isinstance(value, float):
        ok = field_type == "number"
    elif isinstance(value, str):
        ok = _parses(field_type, value.strip())
    else:
        ok = False
    return None if ok else f"must be {EXPECTED[field_type]}, got {value_text(value)!r}"


def _parses(field_type: str, text: str) -> bool:
    if field_type == "number":
        return bool(_NUMBER.match(text))
    if field_type == "bool":
        return text.lower() in _BOOLS
    if field_type == "duration":
        return bool(_GO_DURATION.match(text) or _INTEGER.match(text))
    return bool(_QUANTITY.match(text))
