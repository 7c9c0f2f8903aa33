"""Name rules shared by every resource (Kubernetes' DNS-1123 label)."""

from __future__ import annotations

import re

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_MAX = 63
RESERVED_PREFIX = "rrm-"


def dns1123_label_error(name: object) -> str | None:
    """None when `name` is a valid DNS-1123 label, else why not."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > DNS1123_MAX:
        return f"must be at most {DNS1123_MAX} characters"
    if not DNS1123_LABEL.fullmatch(name):
        return (
            "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending alphanumeric"
        )
    return None
