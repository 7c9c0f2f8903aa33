"""`rrm environment …` helpers: how `--param` values are read and how an operation's progress reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from rrm.cli.environments import parse_labels, parse_pairs, progress_line


def test_param_values_are_yaml_and_at_file_reads_a_file(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    pairs = parse_pairs(
        ["size=3", "zones=[a, b]", "name='x: y'", f"kubeconfig=@{kubeconfig}", "empty="], "--param"
    )
    assert pairs == {
        "size": 3,
        "zones": ["a", "b"],
        "name": "x: y",
        "kubeconfig": "apiVersion: v1\nkind: Config\n",
        "empty": "",
    }


def test_labels_stay_strings_as_typed() -> None:
    assert parse_labels(["tier=1", "team=shop"]) == {"tier": "1", "team": "shop"}


@pytest.mark.parametrize("bad", ["novalue", "=3"])
def test_a_pair_without_key_or_equals_is_a_usage_error(bad: str) -> None:
    with pytest.raises(typer.Exit) as exited:
        parse_pairs([bad], "--param")
    assert exited.value.exit_code == 2


def test_an_unreadable_param_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(typer.Exit) as exited:
        parse_pairs([f"kubeconfig=@{tmp_path / 'missing'}"], "--param")
    assert exited.value.exit_code == 2


def test_progress_names_the_stage_its_place_and_its_last_error() -> None:
    operation = {
        "type": "provision",
        "state": "in progress",
        "description": "",
        "stages": [
            {"name": "validate", "state": "succeeded", "description": "", "lastError": None},
            {"name": "wait_for_cluster", "state": "retrying", "description": "", "lastError": "503"},
            {"name": "install_agent", "state": "pending", "description": "", "lastError": None},
        ],
    }
    assert progress_line(operation) == "provision 2/3 wait_for_cluster: retrying (last error: 503)"
    ended = {**operation, "state": "failed", "description": "stage wait_for_cluster failed: gone"}
    assert progress_line(ended) == "provision failed: stage wait_for_cluster failed: gone"
