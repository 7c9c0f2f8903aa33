"""The control plane: admin API, agent API, the fleet's desired states, probes and metrics."""

from rrm.server.app import create_app, serve
from rrm.server.settings import ServerSettings, default_data_dir

__all__ = ["ServerSettings", "create_app", "default_data_dir", "serve"]
