"""The Environment Broker's catalog: one service, `rrm-runtime`, with one plan per provisioning plan this
control plane can serve. Ids never change: the service's is fixed, a plan's is derived from its name."""

from __future__ import annotations

import uuid
from typing import Any

from rrm.core.names import DNS1123_MAX
from rrm.core.operations import PROVISION
from rrm.server.broker.models import Catalog, Offering, Plan
from rrm.server.provisioning.catalog import Catalog as Provisioning
from rrm.server.provisioning.plans import Plan as ProvisioningPlan
from rrm.server.provisioning.stages import planned_stages

SERVICE_ID = "6f1c2a3e-9b0d-4e5f-8a7b-52726d2d7274"
SERVICE_NAME = "rrm-runtime"
NAME_PARAMETER = "name"
REGION_PARAMETER = "region"
TRIAL_PLAN = "trial"


def plan_id(name: str) -> str:
    return str(uuid.uuid5(uuid.UUID(SERVICE_ID), name))


def broker_catalog(provisioning: Provisioning) -> Catalog:
    """Every plan whose backend can serve here (the local plan on PostgreSQL cannot)."""
    plans = tuple(
        _plan(provisioning, plan)
        for plan in provisioning.plans.values()
        if plan.backend not in provisioning.refusals
    )
    document = {
        "id": SERVICE_ID,
        "name": SERVICE_NAME,
        "description": "an rrm runtime: a cluster (or a local agent) with the rrm agent, connected",
        "bindable": any(p.bindable for p in plans),
        "instances_retrievable": True,
        "bindings_retrievable": True,
        "plan_updateable": False,
        "tags": ["rrm", "runtime"],
        "metadata": {"displayName": "rrm runtime", "providerDisplayName": "rrm"},
    }
    return Catalog((Offering(SERVICE_ID, document, plans),))


def _plan(provisioning: Provisioning, plan: ProvisioningPlan) -> Plan:
    backend = provisioning.backends[plan.backend]
    stages = planned_stages(PROVISION, plan, backend)
    polling = plan.operation_deadline or sum(s.deadline_seconds for s in stages)
    document = {
        "id": plan_id(plan.name),
        "name": plan.name,
        "description": plan.description or f"the {plan.name} plan",
        "free": True,
        "bindable": backend.mints_kubeconfigs,
        "plan_updateable": False,
        "maximum_polling_duration": int(polling),
        "metadata": {
            "displayName": plan.name,
            "supportedRegions": list(plan.regions),
            "backend": plan.backend,
        },
        "schemas": {
            "service_instance": {
                "create": {"parameters": create_schema(plan)},
                "update": {"parameters": update_schema(plan)},
            }
        },
    }
    return Plan(id=plan_id(plan.name), name=plan.name, document=document, bindable=backend.mints_kubeconfigs)


def create_schema(plan: ProvisioningPlan) -> dict[str, Any]:
    """The plan's parameters plus the environment's `name` (unless the plan has its own) and, where the plan
    has regions, `region`."""
    schema = dict(plan.schema)
    properties: dict[str, Any] = dict(schema.get("properties", {}))
    properties.setdefault(
        NAME_PARAMETER,
        {
            "type": "string",
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            "maxLength": DNS1123_MAX,
            "description": "the environment's and its runtime's name; default: the instance id",
        },
    )
    if plan.regions:
        properties[REGION_PARAMETER] = {
            "type": "string",
            "enum": list(plan.regions),
            "description": f"default: {plan.regions[0]}",
        }
    return {**schema, "properties": properties}


def update_schema(plan: ProvisioningPlan) -> dict[str, Any]:
    """Only what the plan marks updatable."""
    properties = dict(plan.schema.get("properties", {}))
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {k: v for k, v in properties.items() if k in plan.updatable},
    }


def is_trial(plan_name: str) -> bool:
    return plan_name == TRIAL_PLAN
