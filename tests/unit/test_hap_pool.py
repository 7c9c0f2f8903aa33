"""The Hyperscaler Account Pool against the Gardener API stand-in (in this process): claims, concurrency,
shared pools, EU access, release and cleanup. The stand-in enforces Gardener's optimistic concurrency."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "standins"))

import gardener_apiserver as gardener

from rrm.server.provisioning.accounts import AccountClaim
from rrm.server.provisioning.backends.base import BackendFailure, RetryLater
from rrm.server.provisioning.garden import SECRET_BINDINGS, SHOOTS, Garden
from rrm.server.provisioning.hap import Binding, HyperscalerAccountPool
from rrm.server.provisioning.hap_rules import default_rules, parse_rules

NS = "garden-dev"
PROVIDERS = {"gardener-aws": "aws", "trial": "aws"}


@pytest.fixture
def garden() -> Iterator[Garden]:
    server = gardener.GardenerApiServer(0, "t", create_seconds=0.0, delete_seconds=0.0, tick=0.01).start()
    api = config.new_client_from_config_dict(server.kubeconfig())
    try:
        yield Garden(api, NS)
    finally:
        api.close()
        server.stop()


def pool_of(garden: Garden, rules: str | None = None) -> HyperscalerAccountPool:
    parsed = parse_rules(rules) if rules else default_rules(PROVIDERS, frozenset({"trial"}))
    return HyperscalerAccountPool(garden, parsed, PROVIDERS)


def binding(garden: Garden, name: str, **labels: str) -> None:
    body = {
        "apiVersion": "core.gardener.cloud/v1beta1",
        "kind": "SecretBinding",
        "metadata": {"name": name, "labels": {"hyperscalerType": "aws", **labels}},
        "secretRef": {"name": f"{name}-secret"},
    }
    garden.create(SECRET_BINDINGS, body)


def labels(garden: Garden, name: str) -> dict[str, str]:
    body = garden.get(SECRET_BINDINGS, name)
    assert body is not None
    return dict(body["metadata"].get("labels") or {})


def claim(environment: str, tenant: str, plan: str = "gardener-aws", pr: str | None = None) -> AccountClaim:
    return AccountClaim(plan, pr, "eu-central-1", tenant, environment)


def shoot(garden: Garden, name: str, binding_name: str, environment: str) -> None:
    body: dict[str, Any] = {
        "apiVersion": "core.gardener.cloud/v1beta1",
        "kind": "Shoot",
        "metadata": {
            "name": name,
            "annotations": {
                "rrm.io/environment": environment,
                "confirmation.gardener.cloud/deletion": "true",
            },
        },
        "spec": {
            "cloudProfile": {"name": "aws"},
            "kubernetes": {"version": "1.32"},
            "region": "eu-central-1",
            "provider": {
                "type": "aws",
                "workers": [{"name": "w", "machine": {"type": "m"}, "minimum": 1, "maximum": 1}],
            },
            "networking": {"type": "calico"},
            "secretBindingName": binding_name,
        },
    }
    garden.create(SHOOTS, body)


def test_a_tenant_reuses_its_binding_and_others_get_their_own(garden: Garden) -> None:
    for name in ("aws-1", "aws-2", "aws-3"):
        binding(garden, name)
    pool = pool_of(garden)
    a = pool.claim(claim("a1", "ga-a")).removeprefix("SecretBinding/")
    b = pool.claim(claim("b1", "ga-b")).removeprefix("SecretBinding/")
    assert a != b
    assert pool.claim(claim("a2", "ga-a")) == f"SecretBinding/{a}"
    assert pool.claim(claim("a1", "ga-a")) == f"SecretBinding/{a}"  # a resumed claim: the same
    assert labels(garden, a)["tenantName"] == "ga-a"
    (rest,) = {"aws-1", "aws-2", "aws-3"} - {a, b}
    assert "tenantName" not in labels(garden, rest)
    view = {x["name"]: x for x in pool.accounts()}
    assert view[a]["environments"] == ["a1", "a2"] and view[b]["tenant"] == "ga-b"


def test_tenants_start_from_different_free_bindings(garden: Garden) -> None:
    """Each tenant has its own order of the free bindings, so new tenants claiming at once seldom meet."""
    for index in range(8):
        binding(garden, f"aws-{index}")
    pool = pool_of(garden)
    first = {pool.claim(claim(f"e{t}", f"ga-{t}")) for t in range(4)}
    assert first != {f"SecretBinding/aws-{i}" for i in range(4)}, "claimed in name order"


def test_none_free_is_retried_later_naming_the_pool(garden: Garden) -> None:
    binding(garden, "aws-1")
    pool = pool_of(garden)
    pool.claim(claim("a1", "ga-a"))
    with pytest.raises(RetryLater, match=r"no unassigned provider accounts .* hyperscalerType=aws"):
        pool.claim(claim("b1", "ga-b"))


def test_concurrent_claims_of_two_replicas_take_one_binding_per_tenant(garden: Garden) -> None:
    for index in range(12):
        binding(garden, f"aws-{index:02d}")
    replicas = [pool_of(garden), pool_of(garden)]
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def provision(index: int) -> None:
        tenant, environment = f"ga-{index % 10}", f"env-{index}"
        try:
            results[environment] = replicas[index % 2].claim(claim(environment, tenant))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=provision, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    by_tenant: dict[str, set[str]] = {}
    for index in range(20):
        by_tenant.setdefault(f"ga-{index % 10}", set()).add(results[f"env-{index}"])
    assert all(len(accounts) == 1 for accounts in by_tenant.values()), by_tenant
    assert len({a for accounts in by_tenant.values() for a in accounts}) == 10


def test_trial_takes_the_least_used_shared_binding(garden: Garden) -> None:
    binding(garden, "shared-1", shared="true")
    binding(garden, "shared-2", shared="true")
    binding(garden, "own-1")
    shoot(garden, "keb-1", "shared-1", "made-by-keb")
    pool = pool_of(garden)
    assert pool.claim(claim("t1", "ga-a", "trial")) == "SecretBinding/shared-2"
    assert pool.claim(claim("t2", "ga-b", "trial")) == "SecretBinding/shared-1"  # 1 user each: by name
    assert pool.claim(claim("t3", "ga-c", "trial")) == "SecretBinding/shared-2"
    assert pool.claim(claim("t4", "ga-d", "trial")) == "SecretBinding/shared-1"
    assert "tenantName" not in labels(garden, "shared-1")
    assert "tenantName" not in labels(garden, "own-1")


def test_eu_access_regions_claim_only_eu_access_bindings(garden: Garden) -> None:
    binding(garden, "aws-1")
    binding(garden, "aws-eu", euAccess="true")
    pool = pool_of(garden, "gardener-aws\ntrial -> S\n")
    assert pool.claim(claim("eu", "ga-a", pr="cf-eu11")) == "SecretBinding/aws-eu"
    assert pool.claim(claim("us", "ga-a", pr="cf-us10")) == "SecretBinding/aws-1"


def test_no_rule_for_the_request_is_a_failure(garden: Garden) -> None:
    pool = pool_of(garden, "gardener-aws(PR=cf-eu11) -> EU\ntrial -> S\n")
    with pytest.raises(BackendFailure, match="no HAP rule applies to plan gardener-aws"):
        pool.claim(claim("x", "ga-a", pr="cf-us10"))


def test_dirty_bindings_are_never_claimed_even_by_their_tenant(garden: Garden) -> None:
    binding(garden, "aws-1", dirty="true", tenantName="ga-a")
    binding(garden, "aws-2", dirty="yes")
    pool = pool_of(garden)
    with pytest.raises(RetryLater):
        pool.claim(claim("a1", "ga-a"))
    binding(garden, "aws-3")
    assert pool.claim(claim("a1", "ga-a")) == "SecretBinding/aws-3"


def test_release_marks_dirty_only_when_nobody_else_uses_it(garden: Garden) -> None:
    binding(garden, "aws-1")
    pool = pool_of(garden)
    pool.claim(claim("a1", "ga-a"))
    pool.claim(claim("a2", "ga-a"))  # claimed, no Shoot yet
    pool.release("SecretBinding/aws-1", "a1")
    assert "dirty" not in labels(garden, "aws-1")
    shoot(garden, "keb-1", "aws-1", "made-by-keb")
    pool.release("SecretBinding/aws-1", "a2")
    assert "dirty" not in labels(garden, "aws-1")  # KEB's Shoot still uses it
    garden.delete(SHOOTS, "keb-1")
    deadline = time.monotonic() + 10
    while garden.get(SHOOTS, "keb-1") is not None:
        assert time.monotonic() < deadline, "the stand-in did not delete the Shoot"
        time.sleep(0.02)
    pool.release("SecretBinding/aws-1", "a2")  # a retried release
    assert labels(garden, "aws-1")["dirty"] == "true"
    pool.release("SecretBinding/aws-1", "a2")
    assert labels(garden, "aws-1")["dirty"] == "true"


def test_cleanup_returns_a_binding_only_after_it_succeeded(garden: Garden) -> None:
    binding(garden, "aws-1")
    binding(garden, "aws-2")
    pool = pool_of(garden)
    account = pool.claim(claim("a1", "ga-a"))
    released, used = ("aws-1", "aws-2") if account.endswith("aws-1") else ("aws-2", "aws-1")
    pool.claim(claim("b1", "ga-b"))
    pool.release(account, "a1")
    tried: list[str] = []

    def failing(b: Binding) -> str | None:
        tried.append(b.name)
        return "the account still has volumes"

    assert pool.clean(failing) == [(account, "the account still has volumes")]
    view = {a["name"]: a for a in pool.accounts()}
    assert view[released]["dirty"] and view[released]["cleanupError"] == "the account still has volumes"
    with pytest.raises(RetryLater):
        pool.claim(claim("c1", "ga-c"))
    assert pool.clean(lambda b: None) == [(account, None)]
    after = labels(garden, released)
    assert "dirty" not in after and "tenantName" not in after
    assert {a["name"]: a for a in pool.accounts()}[released]["cleanupError"] is None
    assert pool.claim(claim("c1", "ga-c")) == account
    assert tried == [released]  # the other one is in use: never handed to the cleanup
    assert labels(garden, used)["tenantName"] == "ga-b"


def test_a_tenant_that_got_two_bindings_in_a_race_keeps_the_first(garden: Garden) -> None:
    """What a claim racing another of its tenant while a binding came back to the pool could leave: the
    tenant on aws-1 (another environment's) and on aws-2 (this one's). This claim gives aws-2 back."""
    binding(garden, "aws-1", tenantName="ga-a")
    binding(garden, "aws-2")
    pool = pool_of(garden)
    pool.claim(claim("a0", "ga-a"))  # reuses aws-1
    body = garden.get(SECRET_BINDINGS, "aws-2")
    assert body is not None
    raced = Binding(SECRET_BINDINGS, body).changed({"tenantName": "ga-a"}, {"rrm.io/environments": '["a1"]'})
    garden.replace(SECRET_BINDINGS, raced)
    assert pool.claim(claim("a1", "ga-a")) == "SecretBinding/aws-1"
    assert "tenantName" not in labels(garden, "aws-2")
    assert pool.claim(claim("b1", "ga-b")) == "SecretBinding/aws-2"
