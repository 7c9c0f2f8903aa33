"""The control plane: admin API, agent API, the fleet's desired states, probes and metrics.

`create_app` and `serve` are imported on first use, so `rrm server` can read its settings (and set up the
workers' shared metrics) before the app and its metrics are imported."""

from typing import Any

from rrm.server.settings import ServerSettings, default_data_dir

__all__ = ["ServerSettings", "create_app", "default_data_dir", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "serve"):
        from rrm.server import app

        return getattr(app, name)
    raise AttributeError(f"module 'rrm.server' has no attribute {name!r}")
