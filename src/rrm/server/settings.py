"""How a control-plane process is configured."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_APPLY_BYTES = 4 * 1024 * 1024


def default_data_dir() -> Path:
    return Path(os.environ.get("RRM_DATA_DIR") or Path.home() / ".local" / "share" / "rrm")


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    log_level: str = "info"
    heartbeat_grace: float = 3.0
    max_wait_seconds: float = 300.0
    feed_poll_seconds: float = 1.0
    delivery_window_seconds: float = 1.0  # a runtime is sent at most one state per window
    pairing_ttl_seconds: int = 3600
    max_apply_bytes: int = field(default_factory=lambda: max_apply_bytes(os.environ))
    plans_file: Path | None = None  # provisioning plans (YAML); None: the built-in ones
    public_url: str | None = None  # the control plane's URL as agents it installs reach it
    gardener_kubeconfig: Path | None = None  # the garden cluster; None: no gardener plans
    gardener_namespace: str | None = None  # the Gardener project namespace, garden-PROJECT
    hap_rules_file: Path | None = None  # Hyperscaler Account Pool rules; None: one rule a plan
    hap_cleanup_command: str | None = None  # run with a dirty binding's name; None: an operator cleans up
    hap_cleanup_interval: float = 600.0  # seconds between cleanup passes
    trial_lifetime_seconds: float = 14 * 86400  # a trial environment is suspended for good after this

    @property
    def resolved_database_url(self) -> str:
        """`--database-url`, else `RRM_DATABASE_URL`, else SQLite in the data dir."""
        return (
            self.database_url or os.environ.get("RRM_DATABASE_URL") or f"sqlite:///{self.data_dir / 'rrm.db'}"
        )


def max_apply_bytes(environ: Mapping[str, str]) -> int:
    """The largest `POST /api/v1/apply` body: `RRM_MAX_APPLY_BYTES`, else 4 MiB."""
    value = environ.get("RRM_MAX_APPLY_BYTES", "")
    if not value:
        return DEFAULT_MAX_APPLY_BYTES
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"RRM_MAX_APPLY_BYTES must be a positive number of bytes, not {value!r}")
    return int(value)
