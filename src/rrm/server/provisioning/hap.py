"""The Hyperscaler Account Pool on Gardener's own SecretBindings and CredentialsBindings, labelled as KEB's
pool is (`hyperscalerType`, `tenantName`, `shared`, `euAccess`, `dirty`), so an existing KEB pool works as is.

Every change to a binding is a PUT with the resourceVersion it was decided on, so two replicas (or two
threads) never both take the same binding: the loser gets 409, reads again and decides again. Deciding on one
consistent list, always the tenant's first free binding in an order fixed per tenant (a hash of tenant and
binding name), means two claims of one tenant racing each other end on the same binding, while claims of
different tenants mostly try different bindings and seldom conflict. The environments using a binding are
kept on it (annotation `rrm.io/environments`), so a release never marks dirty a binding another environment
claimed a moment ago but has no Shoot on yet, and a dirty binding is never handed to anyone: only the
cleanup job returns it, after its command succeeded.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rrm.server.provisioning.accounts import AccountClaim
from rrm.server.provisioning.backends.base import BackendFailure, RetryLater
from rrm.server.provisioning.garden import (
    BINDING_KINDS,
    SHOOTS,
    Conflict,
    Garden,
    GardenError,
    Kind,
    classify,
)
from rrm.server.provisioning.hap_rules import Pool, Rule, select_pool

log = logging.getLogger("rrm.server.provisioning.hap")
HYPERSCALER_TYPE, TENANT, SHARED, EU_ACCESS, DIRTY = (
    "hyperscalerType",
    "tenantName",
    "shared",
    "euAccess",
    "dirty",
)
USERS = "rrm.io/environments"
CLEANUP_ERROR = "rrm.io/cleanup-error"
CLEANUP_AT = "rrm.io/cleanup-failed-at"
MAX_CONFLICTS = 50


@dataclass(frozen=True)
class Binding:
    """One binding as read, with the resourceVersion any change to it is conditional on."""

    kind: Kind
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def account(self) -> str:
        return f"{self.kind.kind}/{self.name}"

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.body["metadata"].get("labels") or {})

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.body["metadata"].get("annotations") or {})

    @property
    def users(self) -> list[str]:
        try:
            users = json.loads(self.annotations.get(USERS) or "[]")
        except ValueError:
            return []
        return [str(u) for u in users] if isinstance(users, list) else []

    @property
    def dirty(self) -> bool:
        """Any `dirty` label but an explicit false counts: better a binding waiting than one reused dirty."""
        return self.labels.get(DIRTY, "false").lower() != "false"

    @property
    def shared(self) -> bool:
        return self.labels.get(SHARED, "").lower() == "true"

    @property
    def eu_access(self) -> bool:
        return self.labels.get(EU_ACCESS, "").lower() == "true"

    def serves(self, pool: Pool) -> bool:
        return (
            self.labels.get(HYPERSCALER_TYPE) == pool.hyperscaler_type
            and self.shared == pool.shared
            and self.eu_access == pool.eu_access
            and not self.dirty
        )

    def changed(
        self, labels: Mapping[str, str | None], annotations: Mapping[str, str | None]
    ) -> dict[str, Any]:
        """The body to PUT: labels and annotations set (None removes one), the resourceVersion kept."""
        body = copy.deepcopy(self.body)
        metadata = body["metadata"]
        for key, values in (("labels", labels), ("annotations", annotations)):
            current = dict(metadata.get(key) or {})
            for name, value in values.items():
                if value is None:
                    current.pop(name, None)
                else:
                    current[name] = value
            metadata[key] = current
        return body


def account_parts(account: str) -> tuple[Kind, str]:
    kind, _, name = account.partition("/")
    if kind not in BINDING_KINDS or not name:
        raise BackendFailure(f"{account!r} is not an account of the Hyperscaler Account Pool (Kind/name)")
    return BINDING_KINDS[kind], name


def binding_of(shoot: dict[str, Any]) -> str | None:
    spec = shoot.get("spec") or {}
    if spec.get("credentialsBindingName"):
        return f"CredentialsBinding/{spec['credentialsBindingName']}"
    if spec.get("secretBindingName"):
        return f"SecretBinding/{spec['secretBindingName']}"
    return None


def shoot_user(shoot: dict[str, Any]) -> str:
    """Who a Shoot counts as: the environment rrm made it for, else the Shoot itself (one KEB made)."""
    annotations = shoot["metadata"].get("annotations") or {}
    return str(annotations.get("rrm.io/environment") or f"shoot/{shoot['metadata']['name']}")


class HyperscalerAccountPool:
    """`AccountPool` for the gardener backend's plans."""

    def __init__(self, garden: Garden, rules: list[Rule], providers: Mapping[str, str]) -> None:
        self.garden = garden
        self.rules = rules
        self.providers = providers  # plan → hyperscaler (aws, azure, gcp, …)

    def pool_for(self, claim: AccountClaim) -> Pool:
        provider = self.providers.get(claim.plan)
        pool = (
            None
            if provider is None
            else select_pool(self.rules, claim.plan, provider, claim.platform_region, claim.region)
        )
        if pool is None:
            raise BackendFailure(
                f"no HAP rule applies to plan {claim.plan} "
                f"(platform region {claim.platform_region or 'none'}, region {claim.region or 'none'})"
            )
        return pool

    def claim(self, claim: AccountClaim) -> str:
        if not claim.global_account:
            raise BackendFailure("claiming an account needs the tenant's global account")
        pool = self.pool_for(claim)
        for _ in range(MAX_CONFLICTS):
            # the tenant's own bindings first (a short list), the whole pool only when it has none
            tenant = None if pool.shared else claim.global_account
            own = self.bindings(pool.hyperscaler_type, tenant)
            mine = next((b for b in own if claim.environment in b.users and not b.dirty), None)
            if mine is not None:  # taken by the pass before, or before a crash
                if self._keeps(pool, own, mine, claim):
                    return mine.account
                continue
            serving = [b for b in own if b.serves(pool)]
            if not serving and tenant is not None:
                serving = [b for b in self.bindings(pool.hyperscaler_type) if b.serves(pool)]
            chosen = self._choose(pool, serving, claim.global_account)
            if chosen is None:
                raise RetryLater(
                    f"no unassigned provider accounts are available in the pool {describe(pool)}"
                )
            with contextlib.suppress(Conflict):
                self._take(chosen, claim, pool)
        raise RetryLater(f"the pool {describe(pool)} changed {MAX_CONFLICTS} times while claiming")

    def _keeps(self, pool: Pool, bindings: list[Binding], mine: Binding, claim: AccountClaim) -> bool:
        """Whether the binding taken is the tenant's first in the pool; if a binding was returned to the pool
        while two of the tenant's claims raced, one may have taken another: it gives its own back."""
        own = [b for b in bindings if b.serves(pool) and b.labels.get(TENANT) == claim.global_account]
        if pool.shared or not own or own[0].name == mine.name or mine.users != [claim.environment]:
            return True
        with contextlib.suppress(Conflict):
            self.garden.replace(mine.kind, mine.changed({TENANT: None}, {USERS: None}))
        return False

    def _choose(self, pool: Pool, eligible: list[Binding], tenant: str) -> Binding | None:
        if pool.shared:
            usage = self.usage()
            return min(
                eligible,
                key=lambda b: (len(set(b.users) | usage.get(b.account, set())), b.name),
                default=None,
            )
        own = [b for b in eligible if b.labels.get(TENANT) == tenant]
        free = sorted(
            (b for b in eligible if not b.labels.get(TENANT)), key=lambda b: preference(tenant, b.name)
        )
        choices = own or free
        return choices[0] if choices else None

    def _take(self, binding: Binding, claim: AccountClaim, pool: Pool) -> None:
        labels = {} if pool.shared else {TENANT: claim.global_account}
        users = json.dumps(sorted({*binding.users, claim.environment}))
        try:
            self.garden.replace(binding.kind, binding.changed(labels, {USERS: users}))
        except GardenError as exc:
            raise classify(exc, f"claiming {binding.account}") from exc
        log.info(
            "account %s claimed for %s (tenant %s)", binding.account, claim.environment, claim.global_account
        )

    def release(self, binding: str, environment: str) -> None:
        kind, name = account_parts(binding)
        for _ in range(MAX_CONFLICTS):
            body = self.garden.get(kind, name)
            if body is None:
                return  # gone: nothing to release
            current = Binding(kind, body)
            others = (set(current.users) | self.usage().get(current.account, set())) - {environment}
            mark = not current.shared and not others and not current.dirty
            if environment not in current.users and not mark:
                return
            users = json.dumps(sorted(set(current.users) - {environment}))
            labels = {DIRTY: "true"} if mark else {}
            try:
                self.garden.replace(kind, current.changed(labels, {USERS: users}))
            except Conflict:
                continue
            except GardenError as exc:
                raise classify(exc, f"releasing {binding}") from exc
            if mark:
                log.info("account %s released by %s and marked dirty for cleanup", binding, environment)
            return
        raise RetryLater(f"{binding} changed {MAX_CONFLICTS} times while releasing it")

    def bindings(self, hyperscaler_type: str | None = None, tenant: str | None = None) -> list[Binding]:
        """The bindings of both kinds, by name: of one hyperscalerType (and tenant), else all labelled with
        one."""
        selector = f"{HYPERSCALER_TYPE}={hyperscaler_type}" if hyperscaler_type else HYPERSCALER_TYPE
        selector += f",{TENANT}={tenant}" if tenant else ""
        try:
            found = [
                Binding(kind, body)
                for kind in BINDING_KINDS.values()
                for body in self.garden.list(kind, selector)
            ]
        except GardenError as exc:
            raise classify(exc, "listing the account pool") from exc
        return sorted(found, key=lambda b: (b.name, b.kind.kind))

    def usage(self) -> dict[str, set[str]]:
        """account → who uses it: the environments claiming it and the Shoots naming it."""
        try:
            shoots = self.garden.list(SHOOTS)
        except GardenError as exc:
            raise classify(exc, "listing Shoots") from exc
        usage: dict[str, set[str]] = {}
        for shoot in shoots:
            account = binding_of(shoot)
            if account is not None:
                usage.setdefault(account, set()).add(shoot_user(shoot))
        return usage

    def accounts(self) -> list[dict[str, Any]]:
        """Every binding of the pool, for `rrm get accounts`."""
        usage = self.usage()
        return [account_view(b, usage.get(b.account, set())) for b in self.bindings()]

    def clean(
        self, run: Callable[[Binding], str | None], now: datetime | None = None
    ) -> list[tuple[str, str | None]]:
        """Run the cleanup for each dirty binding nobody uses; return it to the pool only when `run` answered
        no error, else record the error on the binding. Answers (account, error) for each one tried."""
        usage = self.usage()
        results = []
        for binding in self.bindings():
            if not binding.dirty or binding.users or usage.get(binding.account):
                continue
            error = run(binding)
            results.append((binding.account, error))
            self._after_cleanup(binding, error, now or datetime.now(UTC))
        return results

    def _after_cleanup(self, binding: Binding, error: str | None, now: datetime) -> None:
        if error is None:
            labels: dict[str, str | None] = {DIRTY: None, TENANT: None}
            annotations: dict[str, str | None] = {CLEANUP_ERROR: None, CLEANUP_AT: None, USERS: None}
        else:
            labels, annotations = (
                {},
                {CLEANUP_ERROR: error[:1000], CLEANUP_AT: now.strftime("%Y-%m-%dT%H:%M:%SZ")},
            )
        current = binding
        for _ in range(MAX_CONFLICTS):
            try:
                self.garden.replace(current.kind, current.changed(labels, annotations))
                return
            except Conflict:
                body = self.garden.get(current.kind, current.name)
                if body is None:
                    return
                current = Binding(current.kind, body)
                if not current.dirty or current.users:
                    return  # an operator took it over meanwhile: leave it as they left it
            except GardenError as exc:
                log.warning("account %s: recording the cleanup failed: %s", binding.account, exc)
                return


def preference(tenant: str, binding: str) -> bytes:
    """The tenant's own order of the free bindings (rendezvous hashing)."""
    return hashlib.sha256(f"{tenant}/{binding}".encode()).digest()


def describe(pool: Pool) -> str:
    parts = [f"{HYPERSCALER_TYPE}={pool.hyperscaler_type}"]
    parts += [f"{SHARED}=true"] if pool.shared else []
    parts += [f"{EU_ACCESS}=true"] if pool.eu_access else []
    return ",".join(parts) + f" (rule {pool.rule!r})"


def account_view(binding: Binding, shoots: Iterable[str]) -> dict[str, Any]:
    labels, annotations = binding.labels, binding.annotations
    return {
        "name": binding.name,
        "kind": binding.kind.kind,
        "hyperscalerType": labels.get(HYPERSCALER_TYPE),
        "tenant": labels.get(TENANT),
        "shared": binding.shared,
        "euAccess": binding.eu_access,
        "dirty": binding.dirty,
        "environments": binding.users,
        "clusters": sorted(shoots),
        "cleanupError": annotations.get(CLEANUP_ERROR),
        "cleanupFailedAt": annotations.get(CLEANUP_AT),
    }
