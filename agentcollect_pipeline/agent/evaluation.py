"""The reply evaluation set (replies_eval/): loading, the frozen-hash check and scoring."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from agentcollect_pipeline.agent.replies import INTENTS, Classification

EVAL_DIR = Path(__file__).parent / "replies_eval"
PARTS = ("dev", "test")


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    intent: str
    received_at: datetime
    promised_date: date | None


def part_path(part: str) -> Path:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
    return EVAL_DIR / f"{part}.jsonl"


def load(part: str) -> list[Example]:
    examples = []
    for line in part_path(part).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        examples.append(Example(
            id=row["id"], text=row["text"], intent=row["intent"],
            received_at=datetime.fromisoformat(row["received_at"]),
            promised_date=date.fromisoformat(row["promised_date"]) if row.get("promised_date") else None,
        ))
    return examples


def recorded_test_hash() -> str:
    return (EVAL_DIR / "test.sha256").read_text(encoding="utf-8").split()[0]


def actual_test_hash() -> str:
    return hashlib.sha256(part_path("test").read_bytes()).hexdigest()


def score(examples: Iterable[Example], classifier: Callable[[str, datetime], Classification]) -> dict[str, Any]:
    """Accuracy, per-intent precision/recall, promise-date accuracy and the misclassified ids."""
    examples = list(examples)
    tp = dict.fromkeys(INTENTS, 0)
    predicted = dict.fromkeys(INTENTS, 0)
    actual = dict.fromkeys(INTENTS, 0)
    correct, dated, dated_right = 0, 0, 0
    errors: list[dict[str, Any]] = []
    for example in examples:
        result = classifier(example.text, example.received_at)
        predicted[result.intent] = predicted.get(result.intent, 0) + 1
        actual[example.intent] += 1
        if result.intent == example.intent:
            correct += 1
            tp[example.intent] += 1
        else:
            errors.append({"id": example.id, "expected": example.intent, "got": result.intent})
        if example.promised_date is not None:
            dated += 1
            if result.intent == "promise_to_pay" and result.promised_date == example.promised_date:
                dated_right += 1
    per_intent = {
        intent: {
            "precision": round(tp[intent] / predicted[intent], 4) if predicted[intent] else None,
            "recall": round(tp[intent] / actual[intent], 4) if actual[intent] else None,
            "support": actual[intent],
        }
        for intent in INTENTS
    }
    return {
        "replies": len(examples),
        "accuracy": round(correct / len(examples), 4) if examples else None,
        "per_intent": per_intent,
        "promise_date_accuracy": round(dated_right / dated, 4) if dated else None,
        "errors": errors,
    }
