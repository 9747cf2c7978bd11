"""Issue 7: the reply evaluation set is frozen, and the rules classifier meets its targets on it."""

from datetime import UTC, date, datetime

import pytest

from agentcollect_pipeline.agent import evaluation
from agentcollect_pipeline.agent.dates import extract_date
from agentcollect_pipeline.agent.replies import INTENTS, classify, is_stop

WED = datetime(2026, 3, 11, 14, 30, tzinfo=UTC)


def test_test_part_is_frozen():
    # Changing test.jsonl means a new set: record the new hash in test.sha256 and say so in the commit.
    assert evaluation.actual_test_hash() == evaluation.recorded_test_hash()


@pytest.mark.parametrize("part", evaluation.PARTS)
def test_eval_set_is_well_formed(part):
    examples = evaluation.load(part)
    assert len(examples) >= 100
    assert {e.intent for e in examples} == set(INTENTS)
    assert all(e.promised_date is None or e.intent == "promise_to_pay" for e in examples)
    ids = [e.id for e in examples]
    assert len(ids) == len(set(ids))


def test_parts_do_not_overlap_and_hold_at_least_220():
    dev, test = evaluation.load("dev"), evaluation.load("test")
    assert not {e.text for e in dev} & {e.text for e in test}
    assert len(dev) + len(test) >= 220


@pytest.mark.parametrize("part", evaluation.PARTS)
def test_stop_recall_is_one(part):
    figures = evaluation.score(evaluation.load(part), classify)
    assert figures["per_intent"]["stop"]["recall"] == 1.0, figures["errors"]


def test_accuracy_target_on_test_part():
    figures = evaluation.score(evaluation.load("test"), classify)
    assert figures["accuracy"] >= 0.9


@pytest.mark.parametrize(("text", "expected"), [
    ("I'll pay Friday", date(2026, 3, 13)),
    ("next Friday", date(2026, 3, 20)),
    ("by the end of the month", date(2026, 3, 31)),
    ("on the 5th", date(2026, 4, 5)),
    ("3/20", date(2026, 3, 20)),
    ("25/03/2026", date(2026, 3, 25)),
    ("am 20.03.", date(2026, 3, 20)),
    ("le 20 mars", date(2026, 3, 20)),
    ("in two weeks", date(2026, 3, 25)),
    ("Friday March 20", date(2026, 3, 20)),
    ("2026-04-15", date(2026, 4, 15)),
    ("no date here", None),
])
def test_dates(text, expected):
    assert extract_date(text, WED.date()) == expected


def test_classify_contract():
    intent, promised, reason, confidence = classify("We will pay on 3/20.", WED).as_tuple()
    assert (intent, promised, reason) == ("promise_to_pay", date(2026, 3, 20), None)
    assert 0 < confidence <= 1
    result = classify("The goods arrived damaged, we dispute this.", WED)
    assert (result.intent, result.dispute_reason) == ("dispute", "damaged_or_defective")
    assert classify("", WED).intent == "other"


@pytest.mark.parametrize("text", ["STOP", "sToP", "Stop please", "Already paid. Stop texting me.", "unsubscribe",
                                  "please take me off this list", "Dejen de escribirme", "Bitte keine Nachrichten mehr"])
def test_stop_wins(text):
    assert is_stop(text)
    assert classify(text, WED).intent == "stop"
