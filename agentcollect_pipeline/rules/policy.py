"""The collection policy: `collection_policy.yaml`, loaded strictly into a frozen `CollectionPolicy`.

Every problem is reported as `PolicyError` naming the file and the key path (`exclude.accounting_classes[1]`),
so a finance lead editing the file sees exactly what to fix. Unknown keys are refused, never ignored: a
typo such as `exlude:` must not silently collect from everyone. Amounts are written in major units
(`USD: 50.00`) and held as integer minor units; YAML floats are read as Decimal, never as float.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from agentcollect_pipeline.money import MoneyError, exponent, to_minor_units
from agentcollect_pipeline.rules.messaging_policy import MessagingPolicy, parse_messaging
from agentcollect_pipeline.rules.outreach_policy import OutreachPolicy, parse_outreach


class PolicyError(ValueError):
    """The policy file is invalid; the message names the key path."""


@dataclass(frozen=True)
class PriorityWeights:
    """priority_score = (total_due in major units) ** amount_exponent * (oldest_days_overdue) ** age_exponent."""

    amount_exponent: float = 1.0
    age_exponent: float = 1.0


@dataclass(frozen=True)
class CollectionPolicy:
    overdue_threshold_days: int = 30
    minimum_amount_cents: Mapping[str, int] = field(default_factory=dict)  # currency -> minor units
    promise_grace_days: int = 2
    accounting_classes: Mapping[str, str] = field(default_factory=dict)  # class name -> actgClassId
    tiers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # tier name -> customer ids
    excluded_customer_ids: frozenset[str] = frozenset()
    excluded_invoice_numbers: frozenset[str] = frozenset()
    excluded_classes: tuple[str, ...] = ()  # class names, each a key of accounting_classes
    excluded_account_types: frozenset[str] = frozenset()
    excluded_parent_customer_ids: frozenset[str] = frozenset()  # children of these (and the parents)
    excluded_tiers: tuple[str, ...] = ()
    do_not_contact: frozenset[str] = frozenset()
    priority: PriorityWeights = PriorityWeights()
    outreach: OutreachPolicy = OutreachPolicy()  # cadence, caps, windows, consumers (issue 5)
    messaging: MessagingPolicy = MessagingPolicy()  # how the composer may write (issue 7)

    @property
    def excluded_class_ids(self) -> dict[str, str]:
        """actgClassId -> class name, for the excluded classes."""
        return {self.accounting_classes[name]: name for name in self.excluded_classes}

    @property
    def excluded_tier_members(self) -> dict[str, str]:
        """customer id -> the first excluded tier naming it."""
        members: dict[str, str] = {}
        for tier in self.excluded_tiers:
            for customer_id in self.tiers[tier]:
                members.setdefault(customer_id, tier)
        return members


# -- loading ------------------------------------------------------------------------------------------


class _DecimalLoader(yaml.SafeLoader):
    """SafeLoader that reads YAML floats as Decimal: `50.10` must be exactly 5010 cents."""


def _decimal_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = loader.construct_scalar(node).replace("_", "")
    lowered = text.lower()
    if lowered in (".inf", "+.inf", "-.inf", ".nan"):
        return Decimal("NaN")
    return Decimal(text)


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _decimal_float)

_TOP_KEYS = {
    "version", "overdue_threshold_days", "minimum_amount", "promise_grace_days", "accounting_classes",
    "tiers", "exclude", "do_not_contact", "priority", "outreach", "messaging",
}
_EXCLUDE_KEYS = {"customer_ids", "invoice_numbers", "accounting_classes", "account_types", "parent_customer_ids", "tiers"}
_PRIORITY_KEYS = {"amount_exponent", "age_exponent"}


def load_policy(path: str | Path) -> CollectionPolicy:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the collection policy: {exc.strerror or exc}") from None
    return parse_policy(text, source=str(path), base_dir=path.parent)


def parse_policy(text: str, *, source: str = "collection_policy.yaml", base_dir: Path | None = None) -> CollectionPolicy:
    try:
        raw = yaml.load(text, Loader=_DecimalLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    return policy_from_mapping({} if raw is None else raw, source=source, base_dir=base_dir)


def policy_from_mapping(raw: Any, *, source: str = "collection_policy", base_dir: Path | None = None) -> CollectionPolicy:
    """`base_dir`: where relative paths in the policy (messaging.templates_dir) start; the file's folder."""
    def fail(key: str, problem: str) -> PolicyError:
        return PolicyError(f"{source}: {key}: {problem}")

    _mapping(raw, "(top level)", fail)
    _known_keys(raw, _TOP_KEYS, "", fail)
    version = raw.get("version", 1)
    if version != 1:
        raise fail("version", f"unsupported version {version!r} (this pipeline reads version 1)")

    threshold = _int(raw.get("overdue_threshold_days", 30), "overdue_threshold_days", fail)
    grace = _int(raw.get("promise_grace_days", 2), "promise_grace_days", fail)

    minimums: dict[str, int] = {}
    for currency, amount in _mapping(raw.get("minimum_amount", {}), "minimum_amount", fail).items():
        key = f"minimum_amount.{currency}"
        try:
            exponent(str(currency))
        except MoneyError:
            raise fail(key, f"unknown currency {currency!r} (ISO 4217 code with a known exponent)") from None
        if isinstance(amount, bool) or not isinstance(amount, int | Decimal | str):
            raise fail(key, f"expected an amount such as 50.00, got {amount!r}")
        try:
            cents = to_minor_units(amount, str(currency))
        except MoneyError as exc:
            raise fail(key, str(exc)) from None
        if cents < 0:
            raise fail(key, f"must not be negative, got {amount}")
        minimums[str(currency)] = cents

    classes: dict[str, str] = {}
    for name, class_id in _mapping(raw.get("accounting_classes", {}), "accounting_classes", fail).items():
        if not isinstance(class_id, str) or not class_id.strip():
            raise fail(f"accounting_classes.{name}", f"expected the Bill.com actgClassId, got {class_id!r}")
        classes[str(name)] = class_id.strip()
    if len(set(classes.values())) != len(classes):
        raise fail("accounting_classes", "two class names map to the same actgClassId")

    tiers: dict[str, tuple[str, ...]] = {}
    for name, members in _mapping(raw.get("tiers", {}), "tiers", fail).items():
        tiers[str(name)] = tuple(_strings(members, f"tiers.{name}", fail))

    exclude = _mapping(raw.get("exclude", {}), "exclude", fail)
    _known_keys(exclude, _EXCLUDE_KEYS, "exclude.", fail)
    excluded_classes = _strings(exclude.get("accounting_classes", []), "exclude.accounting_classes", fail)
    for index, name in enumerate(excluded_classes):
        if name not in classes:
            known = ", ".join(sorted(classes)) or "none defined"
            raise fail(
                f"exclude.accounting_classes[{index}]",
                f"unknown class name {name!r} (define it under accounting_classes; known: {known})",
            )
    excluded_tiers = _strings(exclude.get("tiers", []), "exclude.tiers", fail)
    for index, name in enumerate(excluded_tiers):
        if name not in tiers:
            raise fail(f"exclude.tiers[{index}]", f"unknown tier {name!r} (define it under tiers)")

    priority_raw = _mapping(raw.get("priority", {}), "priority", fail)
    _known_keys(priority_raw, _PRIORITY_KEYS, "priority.", fail)
    weights = {}
    for key in _PRIORITY_KEYS:
        value = priority_raw.get(key, 1)
        finite = not isinstance(value, Decimal) or value.is_finite()
        if isinstance(value, bool) or not isinstance(value, int | Decimal) or not finite or not 0 <= value <= 3:
            raise fail(f"priority.{key}", f"expected a number between 0 and 3, got {value!r}")
        weights[key] = float(value)  # an exponent, not money

    return CollectionPolicy(
        overdue_threshold_days=threshold,
        minimum_amount_cents=minimums,
        promise_grace_days=grace,
        accounting_classes=classes,
        tiers=tiers,
        excluded_customer_ids=frozenset(_strings(exclude.get("customer_ids", []), "exclude.customer_ids", fail)),
        excluded_invoice_numbers=frozenset(
            _strings(exclude.get("invoice_numbers", []), "exclude.invoice_numbers", fail)
        ),
        excluded_classes=tuple(excluded_classes),
        excluded_account_types=frozenset(_strings(exclude.get("account_types", []), "exclude.account_types", fail)),
        excluded_parent_customer_ids=frozenset(
            _strings(exclude.get("parent_customer_ids", []), "exclude.parent_customer_ids", fail)
        ),
        excluded_tiers=tuple(excluded_tiers),
        do_not_contact=frozenset(_strings(raw.get("do_not_contact", []), "do_not_contact", fail)),
        priority=PriorityWeights(**weights),
        outreach=(outreach := parse_outreach(raw.get("outreach"), fail)),
        messaging=parse_messaging(raw.get("messaging"), fail, outreach=outreach, base_dir=base_dir),
    )


def _mapping(value: Any, key: str, fail) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(key, f"expected a mapping, got {type(value).__name__}")
    return value


def _known_keys(mapping: dict, known: set[str], prefix: str, fail) -> None:
    for key in mapping:
        if key not in known:
            raise fail(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(sorted(known))})")


def _int(value: Any, key: str, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(key, f"expected a whole number of days, got {value!r}")
    if value < 0:
        raise fail(key, f"must not be negative, got {value}")
    return value


def _strings(value: Any, key: str, fail) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(key, f"expected a list, got {type(value).__name__}")
    out = []
    for index, item in enumerate(value):
        # Ids such as accountType "1" are often written unquoted; accept whole numbers as their text.
        if isinstance(item, bool) or not isinstance(item, str | int) or str(item).strip() == "":
            raise fail(f"{key}[{index}]", f"expected an id or name, got {item!r}")
        out.append(str(item).strip())
    return out
