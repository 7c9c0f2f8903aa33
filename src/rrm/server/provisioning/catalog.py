"""What this control plane can provision: its plans, the backends behind them and the account pools they
claim from. Built once at start from the settings; other backends join through `EXTENSIONS`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rrm.server.provisioning.accounts import AccountPool
from rrm.server.provisioning.backends.base import Backend
from rrm.server.provisioning.plans import Plan, builtin_plans, load_plans
from rrm.server.settings import ServerSettings


@dataclass
class Catalog:
    plans: dict[str, Plan] = field(default_factory=dict)
    backends: dict[str, Backend] = field(default_factory=dict)
    account_pools: dict[str, AccountPool] = field(default_factory=dict)
    # backend name → why it cannot serve on this control plane (the local backend on PostgreSQL)
    refusals: dict[str, str] = field(default_factory=dict)

    def add_backend(self, backend: Backend) -> None:
        self.backends[backend.name] = backend

    def add_plan(self, plan: Plan) -> None:
        """A plan from the plans file wins over a built-in or an extension's plan of the same name."""
        self.plans.setdefault(plan.name, plan)

    def add_account_pool(self, name: str, pool: AccountPool) -> None:
        self.account_pools[name] = pool

    def check(self) -> None:
        """Every plan names a known backend and pool; raises ValueError naming the plan."""
        for plan in self.plans.values():
            if plan.backend not in self.backends:
                known = ", ".join(sorted(self.backends))
                raise ValueError(f"plan {plan.name}: unknown backend {plan.backend!r} (known: {known})")
            if plan.account_pool is not None and plan.account_pool not in self.account_pools:
                raise ValueError(f"plan {plan.name}: unknown account pool {plan.account_pool!r}")


# A function that adds backends, plans and account pools for its settings (the gardener backend adds
# `gardener-aws`, … and the Hyperscaler Account Pool when `--gardener-kubeconfig` is given).
Extension = Callable[[ServerSettings, Catalog], None]
EXTENSIONS: list[Extension] = []


def build_catalog(
    settings: ServerSettings, is_sqlite: bool, extensions: Sequence[Extension] | None = None
) -> Catalog:
    """Plans from `--plans FILE` first, then the extensions', then the built-in `local` and `kubernetes`."""
    from rrm.server.provisioning.backends.kubernetes import KubernetesBackend
    from rrm.server.provisioning.backends.local import LocalBackend
    from rrm.server.provisioning.gardener_plans import add_gardener

    catalog = Catalog()
    if settings.plans_file is not None:
        for plan in load_plans(settings.plans_file):
            catalog.add_plan(plan)
    catalog.add_backend(KubernetesBackend())
    catalog.add_backend(LocalBackend(settings.data_dir / "environments"))
    if not is_sqlite:
        catalog.refusals["local"] = (
            "the local plan runs each agent as a process of the control plane and needs a single replica: "
            "this control plane uses PostgreSQL (several replicas); use the kubernetes plan"
        )
    for extension in [add_gardener, *EXTENSIONS] if extensions is None else extensions:
        extension(settings, catalog)
    for plan in builtin_plans():
        catalog.add_plan(plan)
    catalog.check()
    return catalog
