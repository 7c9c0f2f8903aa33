"""The `rrm` command's entry point (also `python -m rrm`).

`rrm agent` goes straight to its own command (`rrm.cli.agent_command`): an agent process runs for as long as
its runtime does, and the admin commands, rich and the rest of the CLI would only cost it memory. Every other
command loads the full typer app, `rrm.cli.app`.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["agent"]:
        from rrm.cli import agent_command

        agent_command.main(args)
        return
    from rrm.cli.app import app

    app(prog_name="rrm")
