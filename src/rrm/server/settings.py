"""How a control-plane process is configured.

`ServerSettings` is the one definition of the server's settings: each one's default, its `rrm server` flag
and its environment variable. `ServerSettings.from_env` is the one place the environment is read; the
`rrm server` command and the README's server table read the same declarations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrm.core.settings import duration_seconds, read_environment, setting

DEFAULT_MAX_APPLY_BYTES = 4 * 1024 * 1024
TRIAL_LIFETIME_SECONDS = 14 * 86400


def default_data_dir() -> Path:
    """Where the data dir is when neither `--data-dir` nor `RRM_DATA_DIR` says."""
    return Path.home() / ".local" / "share" / "rrm"


def positive_bytes(value: str) -> int:
    """`RRM_MAX_APPLY_BYTES`: a positive number of bytes."""
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"RRM_MAX_APPLY_BYTES must be a positive number of bytes, not {value!r}")
    return int(value)


def switched_on(value: str) -> bool:
    return value == "1"


@dataclass
class ServerSettings:
    host: str = setting("127.0.0.1", flag="--host", help="the address to listen on")
    port: int = setting(8080, flag="--port", help="the port to listen on")
    data_dir: Path = setting(
        flag="--data-dir",
        env="RRM_DATA_DIR",
        parse=Path,
        factory=default_data_dir,
        shown="`~/.local/share/rrm`",
        help="the SQLite database, the secret key and the first admin token",
    )
    database_url: str | None = setting(
        None,
        flag="--database-url",
        env="RRM_DATABASE_URL",
        shown="`sqlite:///DATA_DIR/rrm.db` (WAL)",
        help="the database; `postgresql://…` for replicas",
    )
    log_level: str = setting("info", flag="--log-level", help="debug, info, warning or error")
    workers: int = setting(
        1,
        flag="--workers",
        minimum=1,
        help="control-plane processes sharing the port, each a replica; one leads (README, Workers)",
    )
    heartbeat_grace: float = 3.0
    max_wait_seconds: float = 300.0
    feed_poll_seconds: float = 1.0
    delivery_window_seconds: float = setting(
        1.0,
        flag="--delivery-window",
        minimum=0.0,
        help="seconds; a runtime gets at most one new state per window, the newest",
    )
    watch_keep_alive_seconds: float = setting(
        30.0,
        flag="--watch-keep-alive",
        minimum=1.0,
        help="seconds between keep-alive frames on a quiet watch stream (at most 1/16 more apart); keep it "
        "under the idle timeout of any proxy in between (README, Proxies and the watch stream)",
    )
    pairing_ttl_seconds: int = 3600
    max_apply_bytes: int = setting(
        DEFAULT_MAX_APPLY_BYTES,
        env="RRM_MAX_APPLY_BYTES",
        parse=positive_bytes,
        shown="4 MiB (`4194304`)",
        help="the largest `rrm apply` request body in bytes; larger ones are answered 413 "
        "(other limits: docs/api.md, Limits)",
    )
    secret_key: str | None = setting(
        None,
        env="RRM_SECRET_KEY",
        secret=True,
        shown="generated into `DATA_DIR/secret-key` (0600) on first start",
        help="the secret encryption key: urlsafe base64 of 32 bytes, the same on every replica",
    )
    bootstrap_admin_token: str | None = setting(
        None,
        env="RRM_BOOTSTRAP_ADMIN_TOKEN",
        secret=True,
        shown="generated into `DATA_DIR/admin-token` (0600) on first start",
        help="the first admin token",
    )
    access_log: bool = setting(
        False,
        env="RRM_ACCESS_LOG",
        parse=switched_on,
        shown="off",
        help="`1`: the HTTP access log (query strings are written as `?[redacted]`)",
    )
    plans_file: Path | None = setting(
        None, flag="--plans", shown="local, kubernetes", help="provisioning plans (YAML)"
    )
    public_url: str | None = setting(
        None, flag="--public-url", help="this control plane's URL as the agents it installs reach it"
    )
    gardener_kubeconfig: Path | None = setting(
        None, flag="--gardener-kubeconfig", help="the garden cluster; adds the gardener-* and trial plans"
    )
    gardener_namespace: str | None = setting(
        None, flag="--gardener-namespace", help="the Gardener project namespace, garden-PROJECT"
    )
    hap_rules_file: Path | None = setting(
        None,
        flag="--hap-rules",
        shown="one rule a plan",
        help="Hyperscaler Account Pool rules (KEB syntax)",
    )
    hap_cleanup_command: str | None = setting(
        None,
        flag="--hap-cleanup-command",
        shown="none: an operator cleans up",
        help="run with a dirty binding's name; exit 0 returns it to the pool",
    )
    hap_cleanup_interval: float = setting(
        600.0, flag="--hap-cleanup-interval", minimum=1.0, help="seconds between cleanup passes"
    )
    trial_lifetime_seconds: float = setting(
        float(TRIAL_LIFETIME_SECONDS),
        flag="--trial-lifetime",
        parse=duration_seconds,
        shown="`14d`",
        help="a trial environment is suspended for good after this (30m, 14d)",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: Any) -> ServerSettings:
        """Each setting from `given` (what the command line gave; None: not given), else from its
        environment variable (an empty one counts as unset), else its default."""
        environment = read_environment(cls, os.environ if environ is None else environ)
        return cls(**{**environment, **{name: value for name, value in given.items() if value is not None}})

    @property
    def resolved_database_url(self) -> str:
        """`--database-url` (or `RRM_DATABASE_URL`), else SQLite in the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'rrm.db'}"
