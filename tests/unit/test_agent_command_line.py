"""`rrm agent` reads a plain command line without typer, and exactly as typer does; typer reads all others."""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

import pytest
import typer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import rrm.agent
from rrm.agent.config import AgentConfig
from rrm.cli import agent_command
from rrm.cli.agent_command import read_plainly

OPTIONS = [
    "--director",
    "--token",
    "--state-dir",
    "--target",
    "--resources-path",
    "--dapr-http-port",
    "--dapr-api-token",
    "--reload-command",
    "--wait",
    "--heartbeat-interval",
    "--reconcile-interval",
    "--load-deadline",
    "--health-port",
    "--kubeconfig",
    "--namespace",
    "--hot-reload",
    "--restart-min-interval",
    "--log-level",
]
ENVIRONMENT = ("RRM_PAIRING_TOKEN", "DAPR_API_TOKEN")

plain_values = st.sampled_from(["http://a:8080", "s", "./state dir", "kill -HUP 1", "0", "30", "007", "0.5"])
values = st.one_of(
    plain_values,
    st.sampled_from(["", "-1", "+3", " 3", "3.0", "1e3", "1_000", "inf", "nan", "--help", "=x", "3.", ".5"]),
    st.sampled_from(["9999999999", "0.0000000001", "٣", "3\n"]),
    st.text(st.characters(exclude_characters="\x00"), max_size=6),  # no NUL in a command line or environment
)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """Options in both forms and any order, now and then an unknown one, a bad value, a missing last value."""
    plain = draw(st.booleans())
    some = plain_values if plain else values
    names = st.sampled_from(OPTIONS if plain else [*OPTIONS, "--bogus", "--help", "-h", "agent"])
    units = [["--director", draw(some)], ["--state-dir", draw(some)]]
    for _ in range(draw(st.integers(0, 6))):
        name = draw(names)
        units.append([f"{name}={draw(some)}"] if draw(st.booleans()) else [name, draw(some)])
    args = [arg for unit in draw(st.permutations(units)) for arg in unit]
    return args[: len(args) - (0 if plain else draw(st.integers(0, 1)))]


environments = st.fixed_dictionaries({}, optional={name: values for name in ENVIRONMENT})


def read_by_typer(args: list[str]) -> AgentConfig | None:
    """The configuration the typer app hands to `run_agent`, or None when it refuses the command line."""
    seen: list[AgentConfig] = []

    def run_agent(config: AgentConfig) -> int:
        seen.append(config)
        return 0

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(agent_command._group)
    app.command("agent")(agent_command.agent)
    with mock.patch.object(rrm.agent, "run_agent", run_agent):
        try:
            app(["agent", *args], prog_name="rrm", standalone_mode=False)
        except Exception:
            return None
    return seen[0] if seen else None


def read_by_the_short_way(args: list[str]) -> AgentConfig | None:
    values = read_plainly(args)
    if values is None:
        return None
    seen: list[AgentConfig] = []
    with (
        mock.patch.object(rrm.agent, "run_agent", lambda config: seen.append(config) or 0),
        pytest.raises(typer.Exit),
    ):
        agent_command.agent(**values)
    return seen[0]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines(), environments)
def test_a_command_line_read_without_typer_is_read_as_typer_reads_it(
    args: list[str], environment: dict[str, str]
) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    with mock.patch.dict(os.environ, {**clean, **environment}, clear=True):
        plainly = read_by_the_short_way(args)
        by_typer = read_by_typer(args)

    event("read plainly" if plainly is not None else "left to typer")
    if plainly is not None:
        assert plainly == by_typer


@pytest.mark.parametrize(
    "args",
    [
        [
            "--director",
            "http://cp:8080",
            "--state-dir",
            "/var/lib/rrm",
            "--resources-path",
            "/dapr/components",
        ],
        [
            "--director=https://a",
            "--director=https://b",
            "--state-dir=s",
            "--target=kubernetes",
            "--namespace=apps",
            "--namespace=jobs",
            "--hot-reload=off",
            "--restart-min-interval=10",
            "--health-port=8081",
        ],
        [
            "--director",
            "http://127.0.0.1:8000",
            "--token",
            "pt-123",
            "--state-dir",
            "./edge",
            "--reload-command",
            "kill -HUP 1",
            "--dapr-http-port",
            "3500",
            "--wait",
            "0.5",
            "--heartbeat-interval",
            "15",
            "--reconcile-interval",
            "60",
            "--log-level",
            "warning",
        ],
    ],
)
def test_the_usual_command_lines_take_the_short_way_and_read_as_with_typer(args: list[str]) -> None:
    with mock.patch.dict(os.environ, {"RRM_PAIRING_TOKEN": "pt-env"}):
        plainly = read_by_the_short_way(args)
        by_typer = read_by_typer(args)

    assert plainly is not None
    assert plainly == by_typer


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--director", "http://a"],
        ["--director", "http://a", "--state-dir", "s", "--wait", "soon"],
        ["--director", "http://a", "--state-dir", "s", "--bogus", "x"],
        ["--director", "http://a", "--state-dir"],
        ["--director", "http://a", "--state-dir", "s", "--wait", "1e3"],
        ["--director", "http://a", "--state-dir", "s", "--wait", "5", "--wait", "6"],
    ],
)
def test_anything_else_is_left_to_typer(args: list[str]) -> None:
    assert read_plainly(args) is None


def test_an_empty_pairing_token_in_the_environment_is_left_to_typer() -> None:
    with mock.patch.dict(os.environ, {"RRM_PAIRING_TOKEN": ""}):
        assert read_plainly(["--director", "http://a", "--state-dir", "s"]) is None


def test_every_option_of_the_command_is_known_to_the_short_way() -> None:
    assert sorted(agent_command._options()) == sorted(OPTIONS)


def test_the_environment_gives_what_the_command_line_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRM_PAIRING_TOKEN", "from-env")
    monkeypatch.setenv("DAPR_API_TOKEN", "dapr-env")

    values: Any = read_plainly(["--director", "http://a", "--state-dir", "s", "--token", "from-args"])

    assert (values["token"], values["dapr_api_token"]) == ("from-args", "dapr-env")
