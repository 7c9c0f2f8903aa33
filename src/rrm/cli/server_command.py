"""`rrm server`: the control plane's command line, read with argparse from the settings `ServerSettings`
declares, and the environment through `ServerSettings.from_env`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rrm.server.settings import ServerSettings

SUMMARY = "Run the control plane (blocks until SIGTERM or Ctrl-C)."


def main(args: list[str]) -> None:
    """Run `rrm server ARGS…`: exit code 2 for a command line it cannot read, 1 for a setting it cannot
    use."""
    from rrm.cli.settings_command_line import read_given
    from rrm.server.settings import ServerSettings

    given = read_given(ServerSettings, "rrm server", SUMMARY, args)
    try:
        settings = ServerSettings.from_env(**given)
    except ValueError as exc:
        raise SystemExit(f"rrm server: {exc}") from None
    from rrm.server.fd_limit import watch_open_files

    watch_open_files(forked_workers=settings.workers > 1)
    if settings.workers == 1:
        _serve(settings)
        return
    from rrm.server.workers import shared_metrics_directory

    with shared_metrics_directory():  # before the metrics are imported
        _serve(settings)
    _end_supervisor()


def _end_supervisor() -> None:
    """Once every worker has stopped, the supervisor ends at once rather than through the interpreter's
    teardown of everything it imported and built for its workers to inherit (about 0.45 CPU-s; 3 to 9 s on a
    loaded 2-core machine), during which it still held the listening socket: a restart waited for it, and
    agents reconnecting meanwhile queued there until it closed. It runs no work of its own to finish."""
    import logging
    import os

    logging.shutdown()
    os._exit(0)


def _serve(settings: ServerSettings) -> None:
    import rrm.server

    rrm.server.serve(settings)
