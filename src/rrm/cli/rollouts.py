"""`rrm rollout status|pause|resume|abort|promote` and `rrm get rollouts|rolloutpolicies`: follow and steer
progressive rollouts."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import typer
import yaml
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rrm.cli.client import AdminClient
from rrm.cli.common import EXIT_API_ERROR, OUTPUT_OPTION, OutputFormat, admin_api, emit, show, stdout
from rrm.cli.views import age

ENDED = ("succeeded", "rolled-back", "aborted", "superseded")
FAILED_ENDS = ("rolled-back", "aborted")
STATE_STYLES = {
    "progressing": "cyan",
    "paused": "yellow",
    "succeeded": "green",
    "rolled-back": "red",
    "aborted": "red",
    "superseded": "dim",
    "done": "green",
    "baking": "cyan",
    "updating": "yellow",
    "ready": "green",
    "failed": "red",
    "pending": "dim",
    "skipped": "dim",
}
WATCH_INTERVAL = 1.0
BAR_WIDTH = 24
NAMES_SHOWN = 6

rollout_app = typer.Typer(
    help="Follow and steer the progressive rollout of a component.", no_args_is_help=True
)


def _styled(state: str | None) -> Text:
    return Text(state or "-", style=STATE_STYLES.get(state or "", ""))


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _revisions(rollout: Mapping[str, Any]) -> str:
    start = rollout.get("from_revision")
    return f"{start if start is not None else '-'} → {rollout.get('to_revision')}"


def _policy_line(spec: Mapping[str, Any]) -> str:
    groups = " → ".join(g["selector"] for g in spec.get("groups") or []) or "none"
    return (
        f"groups {groups}; maxConcurrency {spec.get('maxConcurrency')}; "
        f"minSuccessTime {spec.get('minSuccessTime')}; maxFailures {spec.get('maxFailures')}; "
        f"progressDeadline {spec.get('progressDeadline')}; onFailure {spec.get('onFailure')}"
    )


def _wave_names(wave: Mapping[str, Any]) -> str:
    names = [r["name"] for r in wave.get("runtimes") or []]
    more = len(names) - NAMES_SHOWN
    return ", ".join(names[:NAMES_SHOWN]) + (f" +{more}" if more > 0 else "")


def rollout_status(rollout: Mapping[str, Any]) -> RenderableType:
    """The rollout as an operator follows it: one progress bar per wave, then what is failing or awaited."""
    parts: list[RenderableType] = [_status_fields(rollout), _waves_table(rollout)]
    failures = rollout.get("failures") or []
    if failures:
        failing = _table("RUNTIME", "MESSAGE", title="\nFailed runtimes")
        for failure in failures:
            failing.add_row(Text(failure["runtime"], style="red"), Text(failure.get("message") or ""))
        parts.append(failing)
    if rollout.get("state") == "progressing":
        awaited = _table("RUNTIME", "STATE", "MESSAGE", title="\nAwaited in the current wave")
        for wave in rollout.get("waves") or []:
            if wave.get("number") != rollout.get("current_wave"):
                continue
            for runtime in wave.get("runtimes") or []:
                if runtime.get("state") == "updating":
                    awaited.add_row(
                        Text(runtime["name"]), _styled(runtime["state"]), Text(runtime.get("message") or "")
                    )
        if awaited.row_count:
            parts.append(awaited)
    return Group(*parts)


def _status_fields(rollout: Mapping[str, Any]) -> Table:
    """The rollout's summary as label: value lines."""
    bake, deadline = rollout.get("bake") or {}, rollout.get("deadline") or {}
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("Component", rollout["component"]),
        ("State", _styled(rollout.get("state"))),
        ("Revisions", _revisions(rollout)),
        ("Policy", f"{rollout.get('policy')}: {_policy_line(rollout.get('policy_spec') or {})}"),
        (
            "Progress",
            f"wave {rollout.get('current_wave')}/{rollout.get('wave_count')}, "
            f"{rollout.get('ready')}/{rollout.get('targets')} runtimes ready, "
            f"{rollout.get('failed')} failed (maxFailures allows {rollout['max_failures']['allowed']})",
        ),
    ]
    if bake.get("remaining_seconds") is not None:
        rows.append(("Bake", f"{bake['remaining_seconds']:.0f}s of {bake.get('min_success_time')} left"))
    if deadline.get("at"):
        rows.append(("Deadline", f"{deadline.get('progress_deadline')} per wave, at {deadline['at'][:19]}Z"))
    if rollout.get("message"):
        rows.append(("Message", rollout["message"]))
    for label, value in rows:
        fields.add_row(f"{label}:", value if isinstance(value, Text) else Text(value))
    return fields


def _waves_table(rollout: Mapping[str, Any]) -> Table:
    """One row per wave with a progress bar, red once a runtime of it failed."""
    waves = _table("WAVE", "GROUP", "STATE", "PROGRESS", "READY", "STARTED", "RUNTIMES", title="\nWaves")
    for wave in rollout.get("waves") or []:
        total, ready, failed = wave.get("total", 0), wave.get("ready", 0), wave.get("failed", 0)
        bar = ProgressBar(
            total=max(total, 1),
            completed=ready + failed,
            width=BAR_WIDTH,
            complete_style="red" if failed else "green",
            finished_style="red" if failed else "green",
        )
        waves.add_row(
            Text(str(wave.get("number"))),
            Text(wave.get("group", "")),
            _styled(wave.get("state")),
            bar,
            Text(f"{ready}/{total}" + (f" ({failed} failed)" if failed else "")),
            Text(age(wave.get("started_at"), missing="-")),
            Text(_wave_names(wave)),
        )
    return waves


def rollouts_table(rollouts: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("COMPONENT", "STATE", "REVISIONS", "POLICY", "WAVE", "READY", "FAILED", "UPDATED")
    for rollout in rollouts:
        failed = rollout.get("failed", 0)
        table.add_row(
            Text(rollout["component"]),
            _styled(rollout.get("state")),
            Text(_revisions(rollout)),
            Text(rollout.get("policy", "")),
            Text(f"{rollout.get('current_wave')}/{rollout.get('wave_count')}"),
            Text(f"{rollout.get('ready')}/{rollout.get('targets')}"),
            Text(str(failed), style="red" if failed else ""),
            Text(age(rollout.get("updated_at"))),
        )
    return table


def policies_table(policies: Sequence[Mapping[str, Any]]) -> Table:
    table = _table(
        "NAME", "GROUPS", "MAX-CONCURRENCY", "BAKE", "MAX-FAILURES", "DEADLINE", "ON-FAILURE", "USED-BY"
    )
    for policy in policies:
        spec = policy.get("spec") or {}
        table.add_row(
            Text(policy["name"]),
            Text(" → ".join(g["selector"] for g in spec.get("groups") or []) or "-"),
            Text(str(spec.get("maxConcurrency"))),
            Text(str(spec.get("minSuccessTime"))),
            Text(str(spec.get("maxFailures"))),
            Text(str(spec.get("progressDeadline"))),
            Text(str(spec.get("onFailure"))),
            Text(",".join(policy.get("used_by") or []) or "-"),
        )
    return table


def _document(rollout: Mapping[str, Any], output: OutputFormat) -> str:
    if output is OutputFormat.json:
        return json.dumps(rollout)
    return "---\n" + yaml.safe_dump(dict(rollout), sort_keys=False, allow_unicode=True).rstrip()


def _watch(api: AdminClient, component: str, output: OutputFormat, interval: float) -> str:
    """Show the rollout until it ends (its final state is returned): a live view on a terminal, else each
    change as it happens (a JSON line or a YAML document with `-o json|yaml`)."""
    rollout = api.get_rollout(component)
    if output is OutputFormat.table and stdout.is_terminal:
        with Live(rollout_status(rollout), console=stdout, refresh_per_second=4) as live:
            while rollout.get("state") not in ENDED:
                time.sleep(interval)
                rollout = api.get_rollout(component)
                live.update(rollout_status(rollout))
        return str(rollout.get("state"))
    shown = None
    while True:
        fingerprint = json.dumps({k: v for k, v in rollout.items() if k != "bake"}, sort_keys=True)
        if fingerprint != shown:
            shown = fingerprint
            if output is OutputFormat.table:
                show(rollout_status(rollout))
                typer.echo("")
            else:
                typer.echo(_document(rollout, output))
        if rollout.get("state") in ENDED:
            return str(rollout.get("state"))
        time.sleep(interval)
        rollout = api.get_rollout(component)


@rollout_app.command("status")
def status(
    ctx: typer.Context,
    component: str,
    watch: bool = typer.Option(False, "--watch", "-w", help="follow it until it ends (or Ctrl-C)"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """The component's current (else latest) rollout: waves, progress, failing runtimes.

    With --watch the exit code says how it ended: 0 succeeded or superseded, 1 rolled back or aborted.
    """
    with admin_api(ctx) as api:
        if not watch:
            emit(api.get_rollout(component), output, rollout_status)
            return
        try:
            final = _watch(api, component, output, WATCH_INTERVAL)
        except KeyboardInterrupt:
            return
    if final in FAILED_ENDS:
        raise typer.Exit(EXIT_API_ERROR)


def _add_steer_command(action: str, done: str, help: str) -> None:
    """Adds `rrm rollout ACTION COMPONENT`, which posts the action and shows the rollout it leaves."""

    def steer(ctx: typer.Context, component: str, output: OutputFormat = OUTPUT_OPTION) -> None:
        with admin_api(ctx) as api:
            rollout = api.steer_rollout(component, action)
        emit(rollout, output, lambda r: _steered_text(component, done, r))

    rollout_app.command(action, help=help)(steer)


def _steered_text(component: str, done: str, rollout: Mapping[str, Any]) -> str:
    return (
        f"component/{component}: rollout of revision {rollout.get('to_revision')} {done} "
        f"(wave {rollout.get('current_wave')}/{rollout.get('wave_count')}, state {rollout.get('state')})"
    )


for _action, _done, _help in (
    ("pause", "paused", "Stop starting waves; runtimes keep what they have."),
    (
        "resume",
        "resumed",
        "Continue a paused rollout; recorded failures are cleared and the wave's deadline starts again.",
    ),
    (
        "abort",
        "aborted",
        "Stop and roll every runtime back to the revision before the rollout (stored as a new revision).",
    ),
    ("promote", "promoted", "Skip the remaining bake and waves: every runtime gets the new revision now."),
):
    _add_steer_command(_action, _done, _help)
