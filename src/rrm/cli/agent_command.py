"""`rrm agent`: the agent's own command line, read with argparse from the settings `AgentConfig` declares.

An agent runs on every runtime for as long as the runtime lives, so what its process holds in memory
matters: this entry point loads neither typer (which reads every value through pydantic, about 10 MB kept
for the agent's lifetime) nor the admin commands, rich, the server or its libraries. The full CLI's
`rrm agent` hands its arguments here, so both read a command line the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from rrm.agent.config import AgentConfig
from rrm.cli.settings_command_line import parser as settings_parser
from rrm.cli.settings_command_line import read_given
from rrm.core.settings import read_environment

SUMMARY = "Run the agent of one runtime (blocks until SIGTERM or Ctrl-C)."


def main(args: list[str]) -> None:
    """Run `rrm agent ARGS…` (`args` start with "agent") and exit with the agent's exit code: 2 for a
    command line or configuration it cannot run with, 1 when stopped with Ctrl-C before it started."""
    from rrm.agent import run_agent

    config = read_command_line(args[1:], os.environ)
    try:
        code = run_agent(config)
    except KeyboardInterrupt:
        print("\nAborted!", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)


def read_command_line(args: list[str], environ: Mapping[str, str]) -> AgentConfig:
    """The configuration `args` and the environment give (the command line wins over the environment, an
    empty variable counts as unset); argparse prints usage and exits 2 on a mistake, 0 after `--help`."""
    given = read_given(AgentConfig, "rrm agent", SUMMARY, args)
    return AgentConfig(**{**read_environment(AgentConfig, environ), **given})


def parser() -> argparse.ArgumentParser:
    """`rrm agent`'s options, one for each setting `AgentConfig` declares with a flag."""
    return settings_parser(AgentConfig, "rrm agent", SUMMARY)
