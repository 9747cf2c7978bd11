"""Pure collection rules: table-driven per reason code, policy loading, cases, aging, and properties."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentcollect_pipeline.rules.aging import age_receivables
from agentcollect_pipeline.rules.cases import assign_case_ids, build_cases
from agentcollect_pipeline.rules.eligibility import (
    REASONS,
    CollectionState,
    Reason,
    customer_channels,
    evaluate_eligibility,
)
from agentcollect_pipeline.rules.policy import PolicyError, parse_policy

AS_OF = date(2026, 11, 26)
POLICY = parse_policy(
    """
overdue_threshold_days: 30
minimum_amount: {USD: 50.00, GBP: 40.00}
accounting_classes: {Intercompany: CLS-IC, Grants: CLS-GR}
tiers: {strategic: [C-TIER]}
exclude:
  customer_ids: [C-EXCL]
  invoice_numbers: [INV-EXCL]
  accounting_classes: [Intercompany]
  account_types: ["3"]
  parent_customer_ids: [C-PARENT]
  tiers: [strategic]
do_not_contact: [C-DNC]
"""
)


def customer(customer_id: str, **overrides) -> dict:
    row = {"customer_id": customer_id, "email": f"ap@{customer_id.lower()}.example.com", "phone_e164": "+14155550100",
           "account_type": "1", "parent_customer_id": None, "is_active": True, "validation_status": "valid",
           "validation_errors": None}
    row.update(overrides)
    return row


def invoice(invoice_id: str, customer_id: str = "C-OK", **overrides) -> dict:
    row = {"invoice_id": invoice_id, "invoice_number": f"N-{invoice_id}", "customer_id": customer_id,
           "invoice_date": pd.Timestamp(AS_OF - timedelta(days=90)), "due_date": pd.Timestamp(AS_OF - timedelta(days=45)),
           "amount_cents": 100_000, "amount_due_cents": 100_000, "currency": "USD", "payment_status": "1",
           "is_active": True, "actg_class_id": None, "has_auto_pay": False, "validation_status": "valid"}
    row.update(overrides)
    return row


CUSTOMERS = [
    customer("C-OK"), customer("C-EXCL"), customer("C-DNC"), customer("C-TIER"), customer("C-TYPE", account_type="3"),
    customer("C-CHILD", parent_customer_id="C-PARENT"), customer("C-INACTIVE", is_active=False),
    customer("C-NOCHAN", email=None, phone_e164=None), customer("C-BADMAIL", email="not-an-address", phone_e164=None,
                                                                validation_errors="email: not an address: 'x'"),
    customer("C-OPTED", phone_e164=None), customer("C-INVALID", validation_status="invalid"),
    customer("C-PAUSED"), customer("C-CONTACT", email=None, phone_e164=None),
]
CONTACTS = [{"contact_id": "K1", "customer_id": "C-CONTACT", "email": "clerk@c-contact.example.com",
             "phone_e164": None, "is_active": True, "validation_errors": None},
            {"contact_id": "K2", "customer_id": "C-NOCHAN", "email": "gone@c-nochan.example.com",
             "phone_e164": None, "is_active": False, "validation_errors": None}]


def frames(invoices: list[dict], customers: list[dict] = CUSTOMERS, contacts: list[dict] = CONTACTS):
    inv = pd.DataFrame(invoices).astype({"amount_due_cents": "Int64", "amount_cents": "Int64", "is_active": "boolean",
                                         "has_auto_pay": "boolean", "due_date": "datetime64[s]",
                                         "invoice_date": "datetime64[s]"})
    for column in ("invoice_id", "invoice_number", "customer_id", "currency", "payment_status", "actg_class_id",
                   "validation_status"):
        inv[column] = inv[column].astype("string")
    cust = pd.DataFrame(customers).astype({"is_active": "boolean"})
    cont = pd.DataFrame(contacts).astype({"is_active": "boolean"})
    return inv, cust, cont


def state(**frames_) -> CollectionState:
    empty = CollectionState.empty()
    return CollectionState(
        disputes=frames_.get("disputes", empty.disputes),
        promises_to_pay=frames_.get("promises_to_pay", empty.promises_to_pay),
        opt_outs=frames_.get("opt_outs", empty.opt_outs),
        customer_pauses=frames_.get("customer_pauses", empty.customer_pauses),
    )


STATE = state(
    disputes=pd.DataFrame({"invoice_id": ["I-DISPUTED", "I-CLOSED-DISPUTE"], "closed_at": [None, datetime(2026, 11, 1)]}),
    promises_to_pay=pd.DataFrame({"invoice_id": ["I-PROMISED", "I-OLD-PROMISE"], "customer_id": ["C-OK", "C-OK"],
                                  "currency": ["USD", "USD"],
                                  "promised_date": pd.to_datetime(["2026-12-01", "2026-10-01"]),
                                  "status": ["pending", "pending"]}),
    opt_outs=pd.DataFrame({"channel": ["email"], "address": ["AP@c-opted.example.com"]}),
    customer_pauses=pd.DataFrame({"customer_id": ["C-PAUSED"], "paused_until": pd.to_datetime(["2026-12-31"])}),
)

# (invoice overrides, expected first reason or None when eligible)
CASES = [
    (dict(invoice_id="I-OK"), None),
    (dict(invoice_id="I-PAID", amount_due_cents=0, payment_status="0"), Reason.PAID),
    (dict(invoice_id="I-PAID-STATUS", payment_status="0"), Reason.PAID),
    (dict(invoice_id="I-VOID", is_active=False), Reason.VOID_INACTIVE),
    (dict(invoice_id="I-RECENT", due_date=pd.Timestamp(AS_OF - timedelta(days=29))), Reason.NOT_YET_OVERDUE),
    (dict(invoice_id="I-EDGE", due_date=pd.Timestamp(AS_OF - timedelta(days=30))), None),
    (dict(invoice_id="I-FUTURE", due_date=pd.Timestamp(AS_OF + timedelta(days=3))), Reason.NOT_YET_OVERDUE),
    (dict(invoice_id="I-SMALL", amount_due_cents=4_999), Reason.BELOW_MINIMUM),
    (dict(invoice_id="I-MIN", amount_due_cents=5_000), None),
    (dict(invoice_id="I-GBP", amount_due_cents=4_000, currency="GBP"), None),
    (dict(invoice_id="I-EXCL", customer_id="C-EXCL"), Reason.CUSTOMER_EXCLUDED),
    (dict(invoice_id="I-DNC", customer_id="C-DNC"), Reason.CUSTOMER_EXCLUDED),
    (dict(invoice_id="I-TIER", customer_id="C-TIER"), Reason.CUSTOMER_EXCLUDED),
    (dict(invoice_id="I-TYPE", customer_id="C-TYPE"), Reason.CUSTOMER_EXCLUDED),
    (dict(invoice_id="I-CHILD", customer_id="C-CHILD"), Reason.CUSTOMER_EXCLUDED),
    (dict(invoice_id="I-PAUSED", customer_id="C-PAUSED"), Reason.CUSTOMER_EXCLUDED),
    (dict(invoice_id="I-NUMBER", invoice_number="INV-EXCL"), Reason.INVOICE_EXCLUDED),
    (dict(invoice_id="I-CLASS", actg_class_id="CLS-IC"), Reason.CLASS_EXCLUDED),
    (dict(invoice_id="I-OTHER-CLASS", actg_class_id="CLS-GR"), None),
    (dict(invoice_id="I-INACTIVE", customer_id="C-INACTIVE"), Reason.CUSTOMER_INACTIVE),
    (dict(invoice_id="I-NOCHAN", customer_id="C-NOCHAN"), Reason.NO_CONTACT_CHANNEL),
    (dict(invoice_id="I-BADMAIL", customer_id="C-BADMAIL"), Reason.NO_CONTACT_CHANNEL),
    (dict(invoice_id="I-CONTACT", customer_id="C-CONTACT"), None),
    (dict(invoice_id="I-DISPUTED"), Reason.DISPUTED),
    (dict(invoice_id="I-CLOSED-DISPUTE"), None),
    (dict(invoice_id="I-PROMISED"), Reason.PROMISE_TO_PAY_PENDING),
    (dict(invoice_id="I-OLD-PROMISE"), None),
    (dict(invoice_id="I-OPTED", customer_id="C-OPTED"), Reason.OPTED_OUT),
    (dict(invoice_id="I-SCHEDULED", payment_status="4"), Reason.PAYMENT_SCHEDULED),
    (dict(invoice_id="I-AUTOPAY", has_auto_pay=True), Reason.PAYMENT_SCHEDULED),
    (dict(invoice_id="I-PARTIAL", payment_status="2", amount_due_cents=40_000), None),
    (dict(invoice_id="I-INVALID", validation_status="invalid"), Reason.INVALID_RECORD),
    (dict(invoice_id="I-BADCUST", customer_id="C-INVALID"), Reason.INVALID_RECORD),
    (dict(invoice_id="I-ORPHAN", customer_id="C-NOWHERE"), Reason.INVALID_RECORD),
    (dict(invoice_id="I-NODUE", due_date=pd.NaT), Reason.NOT_YET_OVERDUE),
]


def evaluate(invoices, customers=CUSTOMERS, contacts=CONTACTS, policy=POLICY, st_=STATE):
    inv, cust, cont = frames(invoices, customers, contacts)
    channels = customer_channels(cust, cont, st_.opt_outs)
    return evaluate_eligibility(inv, cust, channels, policy, AS_OF, st_), channels


@pytest.mark.parametrize(("overrides", "expected"), CASES, ids=[c[0]["invoice_id"] for c in CASES])
def test_each_reason_code(overrides, expected):
    result, _ = evaluate([invoice(**overrides)])
    row = result.iloc[0]
    if expected is None:
        assert row["eligible"] and pd.isna(row["reason"]) and row["reasons"] == []
    else:
        assert not row["eligible"]
        assert row["reason"] == expected.value
        assert row["reasons"][0] == expected.value


def test_the_whole_table_at_once_matches_row_by_row():
    result, _ = evaluate([invoice(**o) for o, _ in CASES])
    expected = [None if e is None else e.value for _, e in CASES]
    assert [None if pd.isna(r) else r for r in result["reason"]] == expected


def test_first_reason_follows_the_documented_order_and_all_are_kept():
    result, _ = evaluate([invoice("I-MANY", customer_id="C-INACTIVE", amount_due_cents=100, payment_status="4",
                                  actg_class_id="CLS-IC")])
    row = result.iloc[0]
    assert row["reason"] == "below_minimum"
    assert row["reasons"] == ["below_minimum", "class_excluded", "customer_inactive", "payment_scheduled"]
    assert list(Reason)[0] == Reason.PAID and list(Reason)[-1] == Reason.INVALID_RECORD
    assert len(REASONS) == 14


def test_reason_detail_names_the_rule():
    result, _ = evaluate([invoice("A", customer_id="C-TIER"), invoice("B", actg_class_id="CLS-IC"),
                          invoice("C", customer_id="C-DNC")])
    assert list(result["reason_detail"]) == ["tier:strategic", "class:Intercompany", "do_not_contact"]


def test_channels_left_after_opt_outs():
    st_ = state(opt_outs=pd.DataFrame({"channel": ["sms"], "address": ["+14155550100"]}))
    result, channels = evaluate([invoice("A")], st_=st_)
    assert result.iloc[0]["channels"] == "email,voice"
    assert channels.loc["C-OK", "sms_contacts"] == 0 and channels.loc["C-OK", "voice_contacts"] == 1
    # Every channel opted out -> opted_out; one left -> still eligible.
    all_out = state(opt_outs=pd.DataFrame({"channel": ["sms", "voice", "email"],
                                           "address": ["+14155550100", "+14155550100", "ap@c-ok.example.com"]}))
    assert evaluate([invoice("A")], st_=all_out)[0].iloc[0]["reason"] == "opted_out"


def test_customer_level_promise_covers_only_that_currency():
    st_ = state(promises_to_pay=pd.DataFrame({"invoice_id": [None], "customer_id": ["C-OK"], "currency": ["USD"],
                                              "promised_date": pd.to_datetime(["2026-12-01"]), "status": ["pending"]}))
    result, _ = evaluate([invoice("A"), invoice("B", currency="GBP")], st_=st_)
    assert list(result["reason"].astype(object).where(result["reason"].notna(), None)) == ["promise_to_pay_pending", None]


def test_threshold_is_configurable():
    late = [invoice("A", due_date=pd.Timestamp(AS_OF - timedelta(days=50)))]
    assert evaluate(late, policy=parse_policy("overdue_threshold_days: 45"))[0].iloc[0]["eligible"]
    assert not evaluate(late, policy=parse_policy("overdue_threshold_days: 60"))[0].iloc[0]["eligible"]
    due_yesterday = [invoice("A", due_date=pd.Timestamp(AS_OF - timedelta(days=1)))]
    assert evaluate(due_yesterday, policy=parse_policy("overdue_threshold_days: 0"))[0].iloc[0]["eligible"]
    due_today = [invoice("A", due_date=pd.Timestamp(AS_OF))]
    assert not evaluate(due_today, policy=parse_policy("overdue_threshold_days: 0"))[0].iloc[0]["eligible"]


# -- policy loading -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("overdue_threshold_days: -1", "overdue_threshold_days"),
        ("overdue_treshold_days: 30", "overdue_treshold_days"),
        ("exclude: {acounting_classes: [X]}", "exclude.acounting_classes"),
        ("minimum_amount: {XYZ: 10}", "minimum_amount.XYZ"),
        ("minimum_amount: {USD: -5}", "minimum_amount.USD"),
        ("minimum_amount: {USD: 1.005}", "minimum_amount.USD"),
        ("accounting_classes: {A: CLS-A}\nexclude: {accounting_classes: [A, B]}", "exclude.accounting_classes[1]"),
        ("exclude: {tiers: [gold]}", "exclude.tiers[0]"),
        ("overdue_threshold_days: 30.5", "overdue_threshold_days"),
        ("priority: {age_exponent: 9}", "priority.age_exponent"),
        ("priority: {weight: 1}", "priority.weight"),
        ("version: 2", "version"),
    ],
)
def test_policy_errors_name_the_key(text, names):
    with pytest.raises(PolicyError, match=names.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(text)


def test_policy_amounts_are_exact_cents():
    policy = parse_policy("minimum_amount: {USD: 49.99, JPY: 500, KWD: 1.250}")
    assert dict(policy.minimum_amount_cents) == {"USD": 4999, "JPY": 500, "KWD": 1250}


def test_checked_in_policy_loads():
    from agentcollect_pipeline.collection_policy import CollectionPolicyResource

    policy = CollectionPolicyResource().load()
    assert policy.overdue_threshold_days >= 0 and "Intercompany" in policy.excluded_classes


# -- cases and aging ----------------------------------------------------------------------------------


def test_cases_consolidate_per_customer_and_currency_with_priority():
    result, channels = evaluate([invoice("A"), invoice("B", due_date=pd.Timestamp(AS_OF - timedelta(days=100)),
                                                       amount_due_cents=20_000),
                                 invoice("C", currency="GBP"), invoice("D", customer_id="C-CONTACT")])
    cases = build_cases(result, channels, POLICY.priority)
    by_key = cases.set_index(["customer_id", "currency"])
    usd = by_key.loc[("C-OK", "USD")]
    assert usd["invoice_count"] == 2 and usd["total_due_cents"] == 120_000
    assert usd["invoice_ids"] == "B,A" and usd["oldest_days_overdue"] == 100
    assert usd["priority_score"] == pytest.approx(1200.00 * 100)
    assert by_key.loc[("C-CONTACT", "USD"), "email_contacts"] == 1
    assert by_key.loc[("C-CONTACT", "USD"), "sms_contacts"] == 0
    assert list(cases["priority_score"]) == sorted(cases["priority_score"], reverse=True)


def test_case_ids_open_join_close():
    now = datetime(2026, 11, 26, 12, 0)
    current = pd.DataFrame({"customer_id": ["A", "B"], "currency": ["USD", "USD"]})
    ids = iter(["case_new_1", "case_new_2"])
    open_cases = pd.DataFrame({"case_id": ["case_a", "case_z"], "customer_id": ["A", "Z"], "currency": ["USD", "USD"],
                               "opened_at": [now - timedelta(days=3)] * 2})
    assignment = assign_case_ids(current, open_cases, now, new_id=lambda: next(ids))
    assert dict(zip(assignment.cases["customer_id"], assignment.cases["case_id"], strict=True)) == {
        "A": "case_a", "B": "case_new_1"}
    assert assignment.closed == ["case_z"] and assignment.continued == ["case_a"]
    assert list(assignment.opened["case_id"]) == ["case_new_1"]


def test_aging_buckets_and_totals():
    rows = [invoice("cur", due_date=pd.Timestamp(AS_OF)), invoice("d1", due_date=pd.Timestamp(AS_OF - timedelta(days=1))),
            invoice("d30", due_date=pd.Timestamp(AS_OF - timedelta(days=30))),
            invoice("d31", due_date=pd.Timestamp(AS_OF - timedelta(days=31))),
            invoice("d90", due_date=pd.Timestamp(AS_OF - timedelta(days=90))),
            invoice("d91", due_date=pd.Timestamp(AS_OF - timedelta(days=91))),
            invoice("paid", amount_due_cents=0), invoice("void", is_active=False),
            invoice("gbp", currency="GBP", customer_id="C-DNC")]
    inv, _, _ = frames(rows)
    per_customer, totals = age_receivables(inv, AS_OF)
    usd = per_customer.set_index(["currency", "customer_id"]).loc[("USD", "C-OK")]
    assert (usd["current_cents"], usd["days_1_30_cents"], usd["days_31_60_cents"], usd["days_61_90_cents"],
            usd["days_90_plus_cents"]) == (100_000, 200_000, 100_000, 100_000, 100_000)
    assert usd["invoice_count"] == 6
    assert totals.set_index("currency")["total_open_cents"].to_dict() == {"GBP": 100_000, "USD": 600_000}
    assert per_customer["total_open_cents"].dtype == np.int64


# -- properties -------------------------------------------------------------------------------------

CUSTOMER_IDS = ["C-OK", "C-EXCL", "C-DNC", "C-TIER", "C-INACTIVE", "C-NOCHAN", "C-CONTACT", "C-NOWHERE"]

invoice_rows = st.fixed_dictionaries(
    {
        "customer_id": st.sampled_from(CUSTOMER_IDS),
        "amount_due_cents": st.one_of(st.none(), st.integers(-10_000, 2_000_000)),
        "days_past_due": st.one_of(st.none(), st.integers(-90, 400)),
        "currency": st.sampled_from(["USD", "GBP", "JPY"]),
        "payment_status": st.sampled_from(["0", "1", "2", "4"]),
        "is_active": st.booleans(),
        "actg_class_id": st.sampled_from([None, "CLS-IC", "CLS-GR", "CLS-OTHER"]),
        "has_auto_pay": st.booleans(),
        "validation_status": st.sampled_from(["valid", "warning", "invalid"]),
        "excluded_number": st.booleans(),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(invoice_rows, min_size=1, max_size=40), threshold=st.integers(0, 120))
def test_no_generated_book_yields_an_ineligible_invoice_as_eligible(rows, threshold):
    policy = parse_policy(
        f"overdue_threshold_days: {threshold}\nminimum_amount: {{USD: 50.00, GBP: 40.00, JPY: 500}}\n"
        "accounting_classes: {Intercompany: CLS-IC}\ntiers: {strategic: [C-TIER]}\n"
        "exclude: {customer_ids: [C-EXCL], invoice_numbers: [INV-X], accounting_classes: [Intercompany], "
        "tiers: [strategic]}\ndo_not_contact: [C-DNC]"
    )
    invoices = [
        invoice(
            f"I{i}", customer_id=r["customer_id"], amount_due_cents=r["amount_due_cents"],
            due_date=pd.NaT if r["days_past_due"] is None else pd.Timestamp(AS_OF - timedelta(days=r["days_past_due"])),
            currency=r["currency"], payment_status=r["payment_status"], is_active=r["is_active"],
            actg_class_id=r["actg_class_id"], has_auto_pay=r["has_auto_pay"],
            validation_status=r["validation_status"], invoice_number="INV-X" if r["excluded_number"] else f"N{i}",
        )
        for i, r in enumerate(rows)
    ]
    result, channels = evaluate(invoices, policy=policy, st_=CollectionState.empty())
    chosen = pd.DataFrame(invoices)[result["eligible"].to_numpy()]
    minimum = chosen["currency"].map({"USD": 5000, "GBP": 4000, "JPY": 500})
    assert (chosen["amount_due_cents"] > 0).all() and (chosen["payment_status"] != "0").all()  # not paid
    assert chosen["is_active"].all()  # not void
    assert (chosen["payment_status"] != "4").all() and not chosen["has_auto_pay"].any()
    assert (chosen["amount_due_cents"] >= minimum).all()  # not below minimum
    days = (pd.Timestamp(AS_OF) - pd.to_datetime(chosen["due_date"])).dt.days
    assert (days >= max(threshold, 1)).all()  # overdue past the threshold
    assert not chosen["customer_id"].isin(["C-EXCL", "C-DNC", "C-TIER", "C-INACTIVE", "C-NOCHAN", "C-NOWHERE"]).any()
    assert (chosen["actg_class_id"] != "CLS-IC").all() and (chosen["invoice_number"] != "INV-X").all()
    assert (chosen["validation_status"] != "invalid").all()
    # Every ineligible row has its first reason at the head of its list, and the bitmask agrees.
    rejected = result[~result["eligible"]]
    assert all(r[0] == first for r, first in zip(rejected["reasons"], rejected["reason"], strict=True))
    cases = build_cases(result, channels, policy.priority)
    assert cases["total_due_cents"].sum() == chosen["amount_due_cents"].sum()
    _, totals = age_receivables(frames(invoices)[0], AS_OF)
    open_ = pd.DataFrame(invoices)
    open_ = open_[open_["is_active"] & (open_["amount_due_cents"].fillna(0) > 0)]
    assert int(totals["total_open_cents"].sum()) == int(open_["amount_due_cents"].sum())
