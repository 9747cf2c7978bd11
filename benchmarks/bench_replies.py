"""Reply classification figures on the evaluation set (issue 7): `make bench-replies`.

Prints per-part figures for the rules classifier (dev: where rules are tuned; test: frozen, reported), then,
when an LLM is configured (AGENTCOLLECT_LLM_BASE_URL/_MODEL/_API_KEY), the LLM classifier's test figures.
The LAST line is JSON for the rules classifier on the test part:
{"replies": n, "accuracy": a, "per_intent": {intent: {"precision": p, "recall": r}}, ...}
"""

from __future__ import annotations

import json
import sys
import time

from agentcollect_pipeline.agent import evaluation
from agentcollect_pipeline.agent.replies import classify


def _line(name: str, figures: dict) -> str:
    per = ", ".join(f"{i} P={v['precision']} R={v['recall']} n={v['support']}" for i, v in figures["per_intent"].items())
    return (f"{name}: {figures['replies']} replies, accuracy {figures['accuracy']}, "
            f"promise dates {figures['promise_date_accuracy']}\n  {per}")


def _summary(figures: dict) -> dict:
    return {
        "replies": figures["replies"],
        "accuracy": figures["accuracy"],
        "per_intent": {i: {"precision": v["precision"], "recall": v["recall"]} for i, v in figures["per_intent"].items()},
        "promise_date_accuracy": figures["promise_date_accuracy"],
    }


def main() -> int:
    if evaluation.actual_test_hash() != evaluation.recorded_test_hash():
        print("test part changed since it was frozen (test.sha256): figures would not be comparable", file=sys.stderr)
        return 1
    started = time.perf_counter()
    dev = evaluation.score(evaluation.load("dev"), classify)
    test = evaluation.score(evaluation.load("test"), classify)
    elapsed = time.perf_counter() - started
    print(_line("rules/dev", dev))
    for error in dev["errors"]:  # dev only: the test part's mistakes are not looked at while tuning
        print(f"  dev miss {error}")
    print(_line("rules/test", test))
    print(f"rules: {dev['replies'] + test['replies']} replies in {elapsed * 1000:.1f} ms")
    result = {"classifier": "rules", "part": "test", **_summary(test)}

    from agentcollect_pipeline.agent.llm import LLMConfig, LLMReplyClassifier

    config = LLMConfig.from_env()
    if config is not None:
        classifier = LLMReplyClassifier(config)
        try:
            llm_test = evaluation.score(evaluation.load("test"), classifier.classify)
        finally:
            classifier.close()
        print(_line(f"llm({config.model})/test", llm_test))
        print(f"llm calls falling back to rules: {classifier.fallbacks}")
        result["llm"] = _summary(llm_test)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
