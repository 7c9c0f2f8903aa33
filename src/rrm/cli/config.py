"""Where the CLI finds the control plane and its admin token, without importing the server."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8080"
ADMIN_TOKEN_FILE = "admin-token"


class ConfigError(Exception):
    """The CLI cannot tell where or how to reach the control plane."""


def default_data_dir() -> Path:
    """The same rule as `rrm.server.default_data_dir`, kept here so a CLI call never loads the server."""
    configured = os.environ.get("RRM_DATA_DIR")
    return Path(configured) if configured else Path.home() / ".local" / "share" / "rrm"


def control_plane_url() -> str:
    return (os.environ.get("RRM_URL") or DEFAULT_URL).rstrip("/")


def admin_token() -> str:
    """`RRM_TOKEN`, else the token file a local `rrm server` wrote on first start."""
    token = os.environ.get("RRM_TOKEN")
    if token:
        return token
    token_file = default_data_dir() / ADMIN_TOKEN_FILE
    try:
        token = token_file.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no admin token: set RRM_TOKEN, or start `rrm server` locally (it writes {token_file})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the admin token from {token_file}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"the admin token file {token_file} is empty")
    return token
