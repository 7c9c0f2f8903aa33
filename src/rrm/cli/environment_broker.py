"""`rrm environment-broker credentials NAME [--rotate]`: HTTP Basic credentials for a platform (a Cloud
Foundry marketplace, a Service Catalog) to order environments through the Environment Broker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import typer

from rrm.cli.common import OUTPUT_OPTION, OutputFormat, admin_api, broker_fields, emit, shown_once

environment_broker_app = typer.Typer(
    help="The Environment Broker: platforms order environments through the Open Service Broker API.",
    no_args_is_help=True,
)


@environment_broker_app.command("credentials")
def credentials(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the platform's name (a DNS-1123 label); it is the username"),
    rotate: bool = typer.Option(
        False, "--rotate", help="replace existing credentials (the old ones stop working)"
    ),
    platform_region: str = typer.Option(
        None, "--platform-region", help="where the platform runs (cf-eu11 …): the HAP rules' PR"
    ),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Credentials for platform NAME to call the Environment Broker; shown only this once."""
    path = f"/api/v1/environment-broker/platforms/{quote(name, safe='')}/credentials"
    with admin_api(ctx) as api:
        answer = api._request("POST", path, json={"rotate": rotate, "region": platform_region})
    emit(answer, output, credentials_text)


def credentials_text(answer: Mapping[str, Any]) -> str:
    user, url = answer["username"], answer["broker_url"]
    register = f"cf create-service-broker rrm-environments {user} PASSWORD {url}"
    return shown_once(
        broker_fields(answer),
        "Shown only this once. Register the broker with the platform, for example:",
        f"  {register}",
    )
