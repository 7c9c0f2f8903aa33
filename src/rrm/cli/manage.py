"""Commands that change the control plane: runtimes and their labels, apply, delete, rollback."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import typer

from rrm.cli.arguments import parse_duration, parse_label_changes, parse_labels
from rrm.cli.client import format_field_error
from rrm.cli.common import EXIT_USAGE, OUTPUT_OPTION, OutputFormat, admin_api, emit, fail
from rrm.cli.install import KUBERNETES_KINDS
from rrm.cli.manifests import ManifestError, read_documents

DEFAULT_TOKEN_TTL = "1h"

runtime_app = typer.Typer(help="Register runtimes and manage their pairing.", no_args_is_help=True)
label_app = typer.Typer(help="Set (k=v) or remove (k-) labels.", no_args_is_help=True)
delete_app = typer.Typer(help="Delete a runtime, component or secret.", no_args_is_help=True)
rollback_app = typer.Typer(help="Restore an earlier revision as a new one.", no_args_is_help=True)

TTL_OPTION = typer.Option(DEFAULT_TOKEN_TTL, "--ttl", help="pairing token lifetime: 3600, 30m, 1h, 7d")


def agent_command(url: str, name: str, kind: str, token: str) -> str:
    """What to run on the runtime's host so its agent pairs with this control plane."""
    if kind == "selfhosted":
        return (
            f"rrm agent --director {url} --token {token} --state-dir ./rrm-agent-{name}"
            " --target selfhosted --resources-path ./components"
        )
    return f"--director {url} --token {token}"


def next_steps(url: str, name: str, kind: str, token: str) -> list[str]:
    """What a person does next with a pairing token, by the runtime's kind."""
    if kind == "selfhosted":
        return ["Run the agent on the runtime's host:", f"  {agent_command(url, name, kind, token)}"]
    if kind in KUBERNETES_KINDS:
        return [
            "Install the agent in the cluster (the manifests carry a pairing token of their own):",
            f"  rrm runtime manifest {name} --director {url} | kubectl apply -f -",
            "or give an agent you install yourself:",
            f"  {agent_command(url, name, kind, token)}",
        ]
    return [
        f"A {kind} runtime reaches rrm through its marketplace; register the System Broker with it:",
        f"  rrm runtime broker-credentials {name}",
    ]


def pairing_text(url: str, name: str, kind: str, pairing: Mapping[str, Any]) -> list[str]:
    token = pairing["pairing_token"]
    return [
        f"pairing token:  {token}",
        f"expires at:     {pairing['expires_at']}",
        "",
        *next_steps(url, name, kind, token),
    ]


def registration_text(url: str, answer: Mapping[str, Any]) -> str:
    runtime = answer["runtime"]
    effective = (answer.get("scenarios") or {}).get("effective") or []
    return "\n".join(
        [
            f"runtime/{runtime['name']} registered",
            f"runtime id:     {runtime['id']}",
            f"scenarios:      {', '.join(effective) or 'none (it sees no applications)'}",
            *pairing_text(url, runtime["name"], runtime["kind"], answer),
        ]
    )


def result_line(result: Mapping[str, Any]) -> str:
    """`component/logging created (revision 1)`."""
    revision = f" (revision {result['revision']})" if result.get("revision") is not None else ""
    return f"{result['kind'].lower()}/{result['name']} {result['action']}{revision}"


@runtime_app.command("register")
def register_runtime(
    ctx: typer.Context,
    name: str,
    kind: str = typer.Option(
        ..., "--kind", help="selfhosted, kubernetes, kyma-managed, kyma-standalone, cloudfoundry"
    ),
    label: list[str] = typer.Option([], "--label", "-l", help="k=v, repeatable"),
    scenario: list[str] = typer.Option(
        [], "--scenario", help="put it in this scenario instead of DEFAULT; repeatable"
    ),
    ttl: str = TTL_OPTION,
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Register a runtime (in DEFAULT unless --scenario says otherwise); print its one-time pairing token."""
    labels = parse_labels(label)
    ttl_seconds = parse_duration(ttl)
    with admin_api(ctx) as api:
        answer = api.register_runtime(name, kind, labels, ttl_seconds, scenario or None)
    emit(answer, output, lambda registered: registration_text(api.url, registered))


@runtime_app.command("token")
def new_token(
    ctx: typer.Context, name: str, ttl: str = TTL_OPTION, output: OutputFormat = OUTPUT_OPTION
) -> None:
    """Issue a new pairing token (for a new agent, or after revoking)."""
    ttl_seconds = parse_duration(ttl)
    with admin_api(ctx) as api:
        runtime = api.get_runtime(name)
        pairing = api.new_pairing_token(name, ttl_seconds)
    emit(pairing, output, lambda issued: "\n".join(pairing_text(api.url, name, runtime["kind"], issued)))


@runtime_app.command("revoke")
def revoke_runtime(ctx: typer.Context, name: str) -> None:
    """Remove the runtime's credentials; its agent is refused until paired again."""
    with admin_api(ctx) as api:
        api.revoke_runtime(name)
        typer.echo(f"runtime/{name} revoked; issue a new token with `rrm runtime token {name}`")


def labeled_text(runtime: Mapping[str, Any]) -> str:
    labels = ",".join(f"{k}={v}" for k, v in sorted((runtime.get("labels") or {}).items())) or "none"
    return f"runtime/{runtime['name']} labeled: {labels}"


@label_app.command("runtime")
def label_runtime(
    ctx: typer.Context,
    name: str,
    changes: list[str] = typer.Argument(..., help="k=v or k-"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Change a runtime's labels; placement follows at once."""
    set_labels, remove = parse_label_changes(changes)
    with admin_api(ctx) as api:
        runtime = api.update_labels(name, set_labels, remove)
    emit(runtime, output, labeled_text)


def apply(
    ctx: typer.Context,
    filenames: list[str] = typer.Option(
        ..., "--filename", "-f", help="file, directory or - for stdin; repeatable"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and report, store nothing"),
    strict: bool = typer.Option(False, "--strict", help="treat warnings as errors"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Create or update components and secrets from YAML manifests, all in one transaction."""
    try:
        documents = read_documents(filenames, sys.stdin)
    except ManifestError as exc:
        fail(str(exc), EXIT_USAGE)
    with admin_api(ctx) as api:
        answer = api.apply(documents, dry_run=dry_run, strict=strict)
    suffix = " (dry run)" if dry_run else ""
    emit(
        answer,
        output,
        lambda applied: "\n".join(result_line(r) + suffix for r in applied.get("results") or []),
    )
    for warning in answer.get("warnings") or []:
        typer.echo(f"warning: {format_field_error(warning)}", err=True)


@rollback_app.command("component")
def rollback_component(
    ctx: typer.Context,
    name: str,
    to_revision: int = typer.Option(
        ..., "--to-revision", min=1, help="the revision whose content to restore"
    ),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Store revision N's content as a new revision."""
    with admin_api(ctx) as api:
        answer = api.rollback_component(name, to_revision)
    restored = f"revision {to_revision}'s content"
    emit(
        answer, output, lambda a: f"component/{name} rolled back to {restored} (new revision {a['revision']})"
    )
