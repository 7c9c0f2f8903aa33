"""The README's configuration tables of `rrm server` and `rrm agent` are the settings the code declares
(`ServerSettings`, `AgentConfig`). After changing a setting, rewrite them with
`.venv/bin/python tests/unit/test_readme_settings.py`."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from rrm.agent.config import AgentConfig
from rrm.core.settings import markdown_table, setting
from rrm.server.settings import ServerSettings

README = Path(__file__).resolve().parents[2] / "README.md"
TABLES = {"rrm server": ServerSettings, "rrm agent": AgentConfig}


def section(command: str) -> re.Pattern[str]:
    """The generated table of `command` between its two markers."""
    start = re.escape(f"<!-- settings of {command}: generated from the code, do not edit -->")
    return re.compile(f"(?s)({start}\n)(.*?)(<!-- end of the settings of {re.escape(command)} -->)")


@pytest.mark.parametrize("command", TABLES)
def test_the_readme_table_is_the_settings_the_code_declares(command: str) -> None:
    found = section(command).search(README.read_text())

    assert found is not None, f"README.md has no generated table of {command}"
    assert found.group(2) == markdown_table(TABLES[command]), (
        "README.md disagrees with the code: run .venv/bin/python tests/unit/test_readme_settings.py"
    )


def test_the_table_follows_a_changed_setting() -> None:
    @dataclass
    class Changed(ServerSettings):
        port: int = setting(9090, flag="--listen-port", help="the port to listen on")

    assert "| `--listen-port` |  | `9090` | the port to listen on |" in markdown_table(Changed)
    assert markdown_table(Changed) != markdown_table(ServerSettings)


def rewrite() -> None:
    text = README.read_text()
    for command, settings_class in TABLES.items():
        text, count = section(command).subn(
            lambda m, c=settings_class: m.group(1) + markdown_table(c) + m.group(3), text
        )
        if count != 1:
            sys.exit(f"README.md: no markers for the table of {command}")
    README.write_text(text)


if __name__ == "__main__":
    rewrite()
