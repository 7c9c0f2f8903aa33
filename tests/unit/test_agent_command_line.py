"""`rrm agent` reads its command line with argparse from `AgentConfig`'s declarations, exactly as the typer
command it replaced read it: the same flags, values, environment variables and refusals."""

from __future__ import annotations

import math
import os
from pathlib import Path
from unittest import mock

import pytest
import typer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rrm.agent.config import AgentConfig
from rrm.cli import agent_command

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
    "--delivery",
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
    # no NUL (in no command line or environment), no lone surrogate (os.environ cannot hold one)
    st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=6),
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


def documented_agent(
    director: list[str] = typer.Option(..., "--director"),
    token: str = typer.Option(None, "--token", envvar="RRM_PAIRING_TOKEN"),
    state_dir: Path = typer.Option(..., "--state-dir"),
    target: str = typer.Option("selfhosted", "--target"),
    resources_path: Path = typer.Option(None, "--resources-path"),
    dapr_http_port: int = typer.Option(None, "--dapr-http-port"),
    dapr_api_token: str = typer.Option(None, "--dapr-api-token", envvar="DAPR_API_TOKEN"),
    reload_command: str = typer.Option(None, "--reload-command"),
    wait: float = typer.Option(30.0, "--wait"),
    delivery: str = typer.Option("auto", "--delivery"),
    heartbeat_interval: float = typer.Option(60.0, "--heartbeat-interval"),
    reconcile_interval: float = typer.Option(60.0, "--reconcile-interval"),
    load_deadline: float = typer.Option(60.0, "--load-deadline"),
    health_port: int = typer.Option(None, "--health-port"),
    kubeconfig: Path = typer.Option(None, "--kubeconfig"),
    namespace: list[str] = typer.Option([], "--namespace"),
    hot_reload: str = typer.Option("auto", "--hot-reload"),
    restart_min_interval: float = typer.Option(30.0, "--restart-min-interval"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """The typer command `rrm agent` was, kept as the reference for the command line it documents."""
    raise typer.Exit(
        TYPER_READ.append(
            AgentConfig(
                director_urls=director,
                state_dir=state_dir,
                target=target,
                token=token,
                resources_path=resources_path,
                dapr_http_port=dapr_http_port,
                dapr_api_token=dapr_api_token,
                reload_command=reload_command,
                wait_seconds=wait,
                delivery=delivery,  # type: ignore[arg-type]
                heartbeat_interval=heartbeat_interval,
                reconcile_interval=reconcile_interval,
                load_deadline=load_deadline,
                health_port=health_port,
                kubeconfig=kubeconfig,
                namespaces=namespace,
                hot_reload=hot_reload,  # type: ignore[arg-type]
                restart_min_interval=restart_min_interval,
                log_level=log_level,
            )
        )
        or 0
    )


TYPER_READ: list[AgentConfig] = []


def read_by_typer(args: list[str]) -> AgentConfig | None:
    """The configuration the former typer command read, or None when it refused the command line."""
    TYPER_READ.clear()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    app.command("agent")(documented_agent)
    try:
        app(["agent", *args], prog_name="rrm", standalone_mode=False)
    except Exception:
        return None
    return TYPER_READ[0] if TYPER_READ else None


def read_by_argparse(args: list[str]) -> AgentConfig | None:
    """The configuration `rrm agent` reads now, or None when it exits (refused, or `--help`)."""
    try:
        with mock.patch("sys.stderr"), mock.patch("sys.stdout"):
            return agent_command.read_command_line(args, os.environ)
    except SystemExit:
        return None


def same(one: AgentConfig | None, other: AgentConfig | None) -> bool:
    """Equal, counting a NaN read on both sides as the same value."""
    if one is None or other is None:
        return one is other
    nan = {name for name, value in vars(one).items() if isinstance(value, float) and math.isnan(value)}
    return {k: v for k, v in vars(one).items() if k not in nan} == {
        k: v for k, v in vars(other).items() if k not in nan
    } and all(math.isnan(vars(other)[name]) for name in nan)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines(), environments)
def test_a_command_line_is_read_as_the_typer_command_read_it(
    args: list[str], environment: dict[str, str]
) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    with mock.patch.dict(os.environ, {**clean, **environment}, clear=True):
        by_argparse = read_by_argparse(args)
        by_typer = read_by_typer(args)

    event("read" if by_argparse is not None else "refused")
    assert same(by_argparse, by_typer)


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
def test_the_usual_command_lines_read_as_with_typer(args: list[str]) -> None:
    with mock.patch.dict(os.environ, {"RRM_PAIRING_TOKEN": "pt-env"}):
        by_argparse = read_by_argparse(args)
        by_typer = read_by_typer(args)

    assert by_argparse is not None
    assert by_argparse == by_typer


@pytest.mark.parametrize(
    "args",
    [
        ["--director", "http://a"],
        ["--director", "http://a", "--state-dir", "s", "--wait", "soon"],
        ["--director", "http://a", "--state-dir", "s", "--bogus", "x"],
        ["--director", "http://a", "--state-dir"],
        ["--director", "http://a", "--state-dir", "s", "--wai", "5"],
        ["--director", "http://a", "--state-dir", "s", "extra"],
        ["-h"],
    ],
)
def test_a_mistake_is_refused_with_usage_and_exit_code_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        agent_command.read_command_line(args, {})

    assert exited.value.code == 2
    assert "usage: rrm agent" in capsys.readouterr().err
    assert read_by_typer(args) is None


def test_help_lists_every_option_with_its_default_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        agent_command.read_command_line(["--help"], {})

    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert all(option in shown for option in OPTIONS)
    assert "long-poll wait in seconds (default: 30)" in shown


def test_an_option_takes_the_next_word_even_one_starting_with_a_dash() -> None:
    config = agent_command.read_command_line(
        ["--director", "http://a", "--state-dir", "s", "--token", "-x"], {}
    )

    assert config.token == "-x"


def test_an_empty_pairing_token_in_the_environment_counts_as_unset() -> None:
    config = agent_command.read_command_line(
        ["--director", "http://a", "--state-dir", "s"], {"RRM_PAIRING_TOKEN": ""}
    )

    assert config.token is None


def test_every_option_of_the_command_comes_from_the_agent_config() -> None:
    flags = [action.option_strings[0] for action in agent_command.parser()._actions if action.dest != "help"]

    assert sorted(flags) == sorted(OPTIONS)


def test_the_environment_gives_what_the_command_line_does_not() -> None:
    environment = {"RRM_PAIRING_TOKEN": "from-env", "DAPR_API_TOKEN": "dapr-env"}

    config = agent_command.read_command_line(
        ["--director", "http://a", "--state-dir", "s", "--token", "from-args"], environment
    )

    assert (config.token, config.dapr_api_token) == ("from-args", "dapr-env")
