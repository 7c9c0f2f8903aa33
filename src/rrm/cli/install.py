"""`rrm runtime manifest NAME`: everything a cluster needs to run the agent of one Kubernetes runtime.

The objects are `rrm.install.agent_objects`, with a fresh pairing token; `deploy/agent/` and the Helm chart
are generated from the same function.
"""

from __future__ import annotations

from typing import Any

import typer

from rrm.cli.arguments import parse_duration
from rrm.cli.common import EXIT_USAGE, admin_api, fail
from rrm.core.names import dns1123_label_error
from rrm.install import AgentInstallValues, agent_objects, dump_documents
from rrm.install.pods import DEFAULT_IMAGE

KUBERNETES_KINDS = ("kubernetes", "kyma-managed", "kyma-standalone")


def render_yaml(objects: list[dict[str, Any]], header: str) -> str:
    return f"# {header}\n---\n" + dump_documents(objects)


def runtime_manifest(
    ctx: typer.Context,
    name: str,
    namespace: str = typer.Option("rrm-system", "--namespace", help="where the agent runs"),
    target_namespace: list[str] = typer.Option(
        [], "--target-namespace", help="namespace the agent writes to, repeatable; the first is its default"
    ),
    image: str = typer.Option(DEFAULT_IMAGE, "--image", help="the agent image (built from this repository)"),
    restarts: bool = typer.Option(
        True,
        "--restarts/--no-restarts",
        help="let the agent restart workloads whose sidecars do not hot reload",
    ),
    director: str = typer.Option(None, "--director", help="control-plane URL as the cluster reaches it"),
    ttl: str = typer.Option("1h", "--ttl", help="pairing token lifetime"),
) -> None:
    """Print the manifests that install the agent of runtime NAME in a cluster, with a fresh pairing token."""
    for value in [namespace, *target_namespace]:
        problem = dns1123_label_error(value)
        if problem:
            fail(f"namespace {value!r}: {problem}", EXIT_USAGE)
    ttl_seconds = parse_duration(ttl)
    with admin_api(ctx) as api:
        runtime = api.get_runtime(name)
        if runtime.get("kind") not in KUBERNETES_KINDS:
            fail(
                f"runtime {name} is of kind {runtime.get('kind')}; "
                f"manifests are for {', '.join(KUBERNETES_KINDS)}"
            )
        pairing = api.new_pairing_token(name, ttl_seconds)
        values = AgentInstallValues(
            runtime=name,
            director_url=director or api.url,
            pairing_token=pairing["pairing_token"],
            namespace=namespace,
            target_namespaces=tuple(target_namespace) or ("default",),
            image=image,
            restarts=restarts,
        )
    objects = agent_objects(values)
    header = (
        f"rrm agent for runtime {name}; pairing token expires at {pairing['expires_at']}. kubectl apply -f -"
    )
    typer.echo(render_yaml(objects, header), nl=False)
