"""The dashboard: server-rendered pages at /ui, live through the admin event stream."""

from rrm.server.ui.routes import STATIC_PATH, SignInRequired, router, sign_in_required, static_files

__all__ = ["STATIC_PATH", "SignInRequired", "router", "sign_in_required", "static_files"]
