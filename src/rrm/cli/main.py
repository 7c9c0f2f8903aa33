"""The `rrm` command's entry point (also `python -m rrm`).

`rrm agent` goes straight to its own command line (`rrm.cli.agent_command`): an agent process runs for as
long as its runtime does, and typer, the admin commands, rich and the rest of the CLI would only cost it
memory. Every other command loads the full typer app, `rrm.cli.app`.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["agent"]:
        _skip_httpx_command_line()
        from rrm.cli import agent_command

        agent_command.main(args)
        return
    from rrm.cli.app import app

    app(prog_name="rrm")


def _skip_httpx_command_line() -> None:
    """httpx imports its own command-line client (click, rich and pygments: about 5 MB) whenever those are
    installed, and rrm's CLI installs them. The agent never runs it: a None entry in `sys.modules` makes that
    optional import fail, and httpx defines a stub `httpx.main` instead. Nothing else changes in httpx."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
