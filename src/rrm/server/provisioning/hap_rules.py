"""Hyperscaler Account Pool rules, in KEB's syntax: which pool of bindings a plan and region draw from.

One rule a line (`#` starts a comment; a leading `- ` is allowed, so KEB's `hap.rule` list can be pasted):

    PLAN[(PR=platform-region|*, HR=hyperscaler-region|*)] [-> S, EU]

A rule applies when its plan matches and each attribute it names equals the request's value (`*`: any value
the request has). The pool it selects is `hyperscalerType: TYPE[_PR][_HR]` (TYPE is the plan's provider; a
named attribute appends the request's value), `shared: true` with `S`, `euAccess: true` with `EU`. The most
specific rule (the most attributes that are not `*`) wins; two rules that could apply to the same request with
the same specificity are refused, as is a plan that needs an account and has no rule, when the set is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

RULE = re.compile(
    r"^(?P<plan>[a-z0-9]([-a-z0-9_]*[a-z0-9])?)\s*(\((?P<inputs>[^()]*)\))?\s*(->\s*(?P<outputs>.*))?$"
)
INPUTS = ("PR", "HR")
OUTPUTS = ("S", "EU")
# Platform regions whose clusters must run on EU-access accounts, whatever the rule says (KEB's EU access).
EU_ACCESS_PLATFORM_REGIONS = frozenset({"cf-eu11", "cf-ch20"})
# KEB's plan names, so a KEB rule set works unchanged for the built-in Gardener plans.
KEB_PLAN_NAMES = {"aws": "gardener-aws", "azure": "gardener-azure", "gcp": "gardener-gcp"}


class RuleError(ValueError):
    """A rule set that cannot be used; the message names the line."""


@dataclass(frozen=True)
class Rule:
    line: int
    text: str
    plan: str
    inputs: Mapping[str, str]  # "PR"/"HR" → value or "*"
    shared: bool = False
    eu_access: bool = False

    @property
    def specificity(self) -> int:
        return sum(1 for value in self.inputs.values() if value != "*")

    def applies(self, plan: str, values: Mapping[str, str | None]) -> bool:
        return plan == self.plan and all(
            values.get(key) is not None and value in ("*", values.get(key))
            for key, value in self.inputs.items()
        )

    def overlaps(self, other: Rule) -> bool:
        """Whether one request could trigger both with the same priority."""
        if self.plan != other.plan or self.specificity != other.specificity:
            return False
        return not any(
            self.inputs[key] != other.inputs[key] and "*" not in (self.inputs[key], other.inputs[key])
            for key in set(self.inputs) & set(other.inputs)
        )


@dataclass(frozen=True)
class Pool:
    """The labels a binding of the pool carries."""

    hyperscaler_type: str
    shared: bool
    eu_access: bool
    rule: str


def parse_rules(text: str, source: str = "rules") -> list[Rule]:
    """Every rule of `text`; RuleError naming `source:line` for the first that is wrong or overlaps."""
    rules: list[Rule] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip().removeprefix("- ").strip()
        if line:
            rules.append(_rule(f"{source}:{number}", number, line))
    for index, rule in enumerate(rules):
        clash = next((r for r in rules[:index] if r.overlaps(rule)), None)
        if clash is not None:
            raise RuleError(
                f"{source}:{rule.line}: {rule.text!r} applies to the same requests as line {clash.line} "
                f"({clash.text!r}); make one more specific"
            )
    return rules


def _rule(where: str, number: int, line: str) -> Rule:
    match = RULE.match(line)
    if match is None:
        raise RuleError(f"{where}: {line!r} is not a rule; expected PLAN[(PR=…, HR=…)] [-> S, EU]")
    inputs: dict[str, str] = {}
    for item in _items(match["inputs"]):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key not in INPUTS or not value:
            raise RuleError(f"{where}: {item!r}: an input attribute is PR=VALUE or HR=VALUE (or =*)")
        if key in inputs:
            raise RuleError(f"{where}: {key} given twice")
        inputs[key] = value
    outputs = _items(match["outputs"])
    for item in outputs:
        if item not in OUTPUTS:
            raise RuleError(f"{where}: {item!r}: an output attribute is S (shared) or EU (euAccess)")
    if len(set(outputs)) != len(outputs):
        raise RuleError(f"{where}: an output attribute given twice")
    plan = KEB_PLAN_NAMES.get(match["plan"], match["plan"])
    return Rule(number, line, plan, inputs, shared="S" in outputs, eu_access="EU" in outputs)


def _items(text: str | None) -> list[str]:
    if text is None:
        return []
    items = [item.strip() for item in text.split(",")]
    return [] if items == [""] else items


def check_plans(rules: list[Rule], plans: Mapping[str, str], source: str = "rules") -> None:
    """Every rule names a plan that claims accounts (`plans`: name → provider), every such plan has a rule."""
    for rule in rules:
        if rule.plan not in plans:
            known = ", ".join(sorted(plans)) or "none"
            raise RuleError(
                f"{source}:{rule.line}: unknown plan {rule.plan!r} (plans with an account pool: {known})"
            )
    covered = {rule.plan for rule in rules}
    missing = sorted(set(plans) - covered)
    if missing:
        raise RuleError(f"{source}: no rule for the plans {', '.join(missing)}; every plan needs one")


def load_rules(path: Path, plans: Mapping[str, str]) -> list[Rule]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RuleError(f"{path}: {exc}") from exc
    rules = parse_rules(text, str(path))
    check_plans(rules, plans, str(path))
    return rules


def default_rules(plans: Mapping[str, str], shared: frozenset[str]) -> list[Rule]:
    """Without `--hap-rules`: one rule a plan (`trial -> S` for the shared ones)."""
    return [
        Rule(0, f"{name}{' -> S' if name in shared else ''}", name, {}, shared=name in shared)
        for name in sorted(plans)
    ]


def select_pool(
    rules: list[Rule],
    plan: str,
    provider: str,
    platform_region: str | None,
    region: str | None,
) -> Pool | None:
    """The pool of the most specific rule that applies, or None when none does."""
    values = {"PR": platform_region, "HR": region}
    applicable = [r for r in rules if r.applies(plan, values)]
    if not applicable:
        return None
    rule = max(applicable, key=lambda r: r.specificity)
    suffix = "".join(f"_{values[key]}" for key in INPUTS if key in rule.inputs)
    eu_access = rule.eu_access or platform_region in EU_ACCESS_PLATFORM_REGIONS
    return Pool(f"{provider}{suffix}", rule.shared, eu_access, rule.text)
