"""What `rrm server --gardener-kubeconfig PATH --gardener-namespace garden-PROJECT` adds to the catalog: the
gardener backend, the Hyperscaler Account Pool `gardener` (with `--hap-rules FILE` and the cleanup job of
`--hap-cleanup-command CMD`), and the plans `gardener-aws`, `gardener-azure`, `gardener-gcp` and `trial`, with
parameters in the spirit of KEB's (name, machineType, autoScalerMin/Max, administrators, networking)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rrm.server.provisioning.backends.gardener import GardenerBackend, shoot_name
from rrm.server.provisioning.catalog import Catalog
from rrm.server.provisioning.garden import Garden, load_client
from rrm.server.provisioning.hap import HyperscalerAccountPool
from rrm.server.provisioning.hap_cleanup import CleanupJob, EventLog
from rrm.server.provisioning.hap_rules import default_rules, load_rules
from rrm.server.provisioning.plans import Plan
from rrm.server.settings import ServerSettings

POOL = "gardener"
REGIONS = {
    "aws": ("eu-central-1", "eu-west-2", "ca-central-1", "sa-east-1", "us-east-1", "us-west-2",
            "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2"),
    "azure": ("westeurope", "northeurope", "switzerlandnorth", "uksouth", "eastus", "centralus", "westus2",
              "brazilsouth", "japaneast", "southeastasia", "australiaeast", "centralindia"),
    "gcp": ("europe-west3", "europe-west4", "us-central1", "us-east4", "asia-south1", "asia-northeast1",
            "me-central2", "australia-southeast1", "southamerica-east1"),
}  # fmt: skip
MACHINES = {
    "aws": ("m6i.large", "m6i.xlarge", "m6i.2xlarge", "m6i.4xlarge", "m6i.8xlarge", "m5.large", "m5.xlarge"),
    "azure": ("Standard_D2s_v5", "Standard_D4s_v5", "Standard_D8s_v5", "Standard_D16s_v5", "Standard_D4_v3"),
    "gcp": ("n2-standard-2", "n2-standard-4", "n2-standard-8", "n2-standard-16"),
}
TRIAL_REGIONS = ("eu-central-1", "us-east-1", "ap-southeast-1")
NETWORKING = {"nodes": "10.250.0.0/16", "pods": "10.96.0.0/13", "services": "10.104.0.0/13"}
CIDR = {"type": "string", "pattern": r"^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$"}
UPDATABLE = frozenset({"name", "machineType", "autoScalerMin", "autoScalerMax", "administrators"})
EXPECTED = {"wait_for_cluster": 1800.0, "wait_for_deletion": 1800.0}


def parameter_schema(provider: str, machines: tuple[str, ...], nodes: dict[str, Any]) -> dict[str, Any]:
    """KEB's parameters; `provider` is the plan's own (its pool depends on it), so it cannot be changed."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "provider": {"const": provider, "description": "the hyperscaler (fixed by the plan)"},
            "name": {"type": "string", "pattern": "^[a-zA-Z0-9-]*$", "minLength": 1, "maxLength": 64},
            "machineType": {"enum": list(machines)},
            "autoScalerMin": {"type": "integer", **nodes},
            "autoScalerMax": {"type": "integer", **nodes},
            "administrators": {
                "type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1, "maxLength": 254}
            },
            "networking": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"nodes": CIDR, "pods": CIDR, "services": CIDR},
            },
            "namespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "targetNamespaces": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
    }  # fmt: skip


def autoscaler_problems(parameters: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Gardener refuses a worker pool whose maximum is below its minimum; say so before anything starts."""
    low, high = parameters.get("autoScalerMin"), parameters.get("autoScalerMax")
    if isinstance(low, int) and isinstance(high, int) and high < low:
        return [("parameters.autoScalerMax", f"must not be less than autoScalerMin ({low})")]
    return []


def gardener_plans() -> list[Plan]:
    """`gardener-aws`, `gardener-azure`, `gardener-gcp` (3..20 nodes by default, at most 300) and `trial`
    (one node on a shared AWS account)."""
    plans = [
        _plan(
            f"gardener-{provider}",
            provider,
            REGIONS[provider],
            MACHINES[provider],
            (3, 20),
            {"minimum": 3, "maximum": 300},
        )
        for provider in ("aws", "azure", "gcp")
    ]
    trial = _plan("trial", "aws", TRIAL_REGIONS, MACHINES["aws"][:1], (1, 1), {"const": 1})
    return [*plans, trial]


def _plan(
    name: str, provider: str, regions: tuple[str, ...], machines: tuple[str, ...], nodes: tuple[int, int],
    bounds: dict[str, Any],
) -> Plan:  # fmt: skip
    return Plan(
        name=name,
        backend="gardener",
        description=f"a Gardener Shoot on {provider.upper()}"
        + (" (shared account, one node)" if name == "trial" else ""),
        regions=regions,
        defaults={
            "provider": provider,
            "machineType": machines[0],
            "autoScalerMin": nodes[0],
            "autoScalerMax": nodes[1],
            "networking": dict(NETWORKING),
            "namespace": "rrm-system",
            "targetNamespaces": ["default"],
        },
        schema=parameter_schema(provider, machines, bounds),
        updatable=UPDATABLE if name != "trial" else frozenset({"name", "administrators"}),
        expected=EXPECTED,
        account_pool=POOL,
    )


def add_gardener(settings: ServerSettings, catalog: Catalog) -> None:
    """The catalog `Extension` of the gardener backend; ValueError naming the flag or file that is wrong."""
    if settings.gardener_kubeconfig is None:
        for flag, value in (
            ("--gardener-namespace", settings.gardener_namespace),
            ("--hap-rules", settings.hap_rules_file),
        ):
            if value is not None:
                raise ValueError(f"{flag} needs --gardener-kubeconfig")
        return
    namespace = settings.gardener_namespace or ""
    if not namespace.startswith("garden-") or namespace == "garden-":
        raise ValueError(
            f"--gardener-namespace: a Gardener project namespace garden-PROJECT, not {namespace!r}"
        )
    garden = Garden(load_client(settings.gardener_kubeconfig), namespace)
    shoot_name("check", garden.project)
    for plan in gardener_plans():
        catalog.add_plan(plan)
    mine = [p for p in catalog.plans.values() if p.backend == "gardener"]
    for plan in mine:
        if plan.account_pool != POOL or plan.defaults.get("provider") not in REGIONS:
            raise ValueError(
                f"plan {plan.name}: a gardener plan needs accountPool: {POOL} "
                "and defaults.provider (aws, azure, gcp)"
            )
        catalog.plans[plan.name] = dataclasses.replace(plan, checks=(autoscaler_problems,))  # file ones too
    providers = {p.name: str(p.defaults["provider"]) for p in mine}
    if settings.hap_rules_file is not None:
        rules = load_rules(settings.hap_rules_file, providers)
    else:
        rules = default_rules(providers, frozenset(p.name for p in mine if p.name == "trial"))
    pool = HyperscalerAccountPool(garden, rules, providers)
    events = EventLog(settings.resolved_database_url)
    cleanup = CleanupJob(pool, settings.hap_cleanup_command, settings.hap_cleanup_interval, events)
    catalog.add_account_pool(POOL, pool)
    catalog.add_backend(GardenerBackend(garden, cleanup))
