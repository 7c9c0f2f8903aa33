"""HAP rules in KEB's syntax: parsing, refusal with the line named, and the most specific rule winning."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrm.server.provisioning.hap_rules import (
    RuleError,
    check_plans,
    default_rules,
    load_rules,
    parse_rules,
    select_pool,
)

PLANS = {"gardener-aws": "aws", "gardener-azure": "azure", "gardener-gcp": "gcp", "trial": "aws"}
KEB = """\
# KEB's initial configuration, pasted as it is in values.yaml
- aws
- aws(PR=cf-eu11) -> EU
- azure
- azure(PR=cf-ch20) -> EU
- gcp
- gcp(PR=cf-sa30)
- trial -> S
"""


def test_keb_rules_parse_with_keb_plan_names() -> None:
    rules = parse_rules(KEB)
    check_plans(rules, PLANS)
    assert [(r.line, r.plan, dict(r.inputs), r.shared, r.eu_access) for r in rules][:3] == [
        (2, "gardener-aws", {}, False, False),
        (3, "gardener-aws", {"PR": "cf-eu11"}, False, True),
        (4, "gardener-azure", {}, False, False),
    ]
    assert rules[-1].shared and rules[-1].plan == "trial"


def test_the_most_specific_rule_wins() -> None:
    rules = parse_rules(KEB + "gardener-gcp(PR=cf-sa30, HR=europe-west3) -> S\n")
    pool = select_pool(rules, "gardener-gcp", "gcp", "cf-sa30", "europe-west3")
    assert pool is not None and (pool.hyperscaler_type, pool.shared) == ("gcp_cf-sa30_europe-west3", True)
    pool = select_pool(rules, "gardener-gcp", "gcp", "cf-sa30", "us-central1")
    assert pool is not None and (pool.hyperscaler_type, pool.shared) == ("gcp_cf-sa30", False)
    pool = select_pool(rules, "gardener-gcp", "gcp", None, "us-central1")
    assert pool is not None and pool.hyperscaler_type == "gcp"


def test_eu_access_regions_use_eu_access_pools_even_without_the_output() -> None:
    rules = parse_rules("aws\n")
    pool = select_pool(rules, "gardener-aws", "aws", "cf-eu11", "eu-central-1")
    assert pool is not None and pool.eu_access
    pool = select_pool(rules, "gardener-aws", "aws", "cf-us10", "us-east-1")
    assert pool is not None and not pool.eu_access


def test_wildcards_take_the_request_value_and_need_one() -> None:
    rules = parse_rules("gardener-gcp(PR=*)\n")
    pool = select_pool(rules, "gardener-gcp", "gcp", "cf-jp30", None)
    assert pool is not None and pool.hyperscaler_type == "gcp_cf-jp30"
    assert select_pool(rules, "gardener-gcp", "gcp", None, None) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aws\naws -> S\n", "rules:2: 'aws -> S' applies to the same requests as line 1"),
        ("gcp\ngcp(PR=*)\n", "rules:2"),
        ("gcp(HR=europe-west3)\ngcp(PR=*, HR=europe-west3)\n", "rules:2"),
        ("gcp(PR=a)\ngcp(HR=b)\n", "rules:2"),
        ("aws\n\nazure(XR=1)\n", "rules:3: 'XR=1'"),
        ("aws -> SHARED\n", "rules:1: 'SHARED'"),
        ("aws(PR=a, PR=b)\n", "rules:1: PR given twice"),
        ("Aws!\n", "rules:1: 'Aws!' is not a rule"),
        ("aws -> S, S\n", "rules:1: an output attribute given twice"),
    ],
)
def test_a_bad_rule_set_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(RuleError) as refused:
        parse_rules(text)
    assert message in str(refused.value)


def test_different_values_do_not_clash() -> None:
    rules = parse_rules("gcp(PR=a)\ngcp(PR=b)\ngcp\n")
    assert len(rules) == 3


def test_every_plan_needs_a_rule_and_every_rule_a_plan(tmp_path: Path) -> None:
    path = tmp_path / "rules"
    path.write_text("aws\nazure\ngcp\n")
    with pytest.raises(RuleError, match=r"no rule for the plans trial"):
        load_rules(path, PLANS)
    path.write_text("aws\nazure\ngcp\ntrial -> S\nfree\n")
    with pytest.raises(RuleError, match=rf"{path}:5: unknown plan 'free'"):
        load_rules(path, PLANS)
    path.write_text(KEB)
    assert len(load_rules(path, PLANS)) == 7


def test_default_rules_give_each_plan_its_pool() -> None:
    rules = default_rules(PLANS, frozenset({"trial"}))
    trial = select_pool(rules, "trial", "aws", None, "eu-central-1")
    aws = select_pool(rules, "gardener-aws", "aws", None, "eu-central-1")
    assert trial is not None and trial.shared and trial.hyperscaler_type == "aws"
    assert aws is not None and not aws.shared
