"""The `messaging:` section of collection_policy.yaml: how the composer may write messages.

Parsed as strictly as the rest of the policy (rules/policy.py, rules/outreach_policy.py): an unknown key, a
wrong type, a tone a ladder step may not use, or a templates folder that does not exist stops the run with
the key path.

    messaging:
      sms_max_segments: 2            # 1-10; an SMS draft longer than this is refused (GSM-7 160/153, UCS-2 70/67)
      llm: true                      # false: templates only, even when AGENTCOLLECT_LLM_* is configured
      templates_dir: templates/ar    # overrides files of agent/templates/ (relative to the policy file)
      allowed_tones:                 # per ladder step: the tones it may use (its own tone must be one)
        reminder_email: [friendly]
      allow:                         # what a message may offer; all false by default
        discounts: false
        waivers: false
        settlement_offers: false

Legal threats are not a switch: no message may threaten (FDCPA §807/§808 style wording is refused always).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentcollect_pipeline.rules.outreach_policy import TONES, OutreachPolicy

MAX_SEGMENTS = 10

_KEYS = {"sms_max_segments", "llm", "templates_dir", "allowed_tones", "allow"}
_ALLOW_KEYS = {"discounts", "waivers", "settlement_offers"}

Fail = Callable[[str, str], Exception]


@dataclass(frozen=True)
class MessagingPolicy:
    sms_max_segments: int = 2
    use_llm: bool = True
    templates_dir: str | None = None  # absolute path of the override folder, checked to exist at load
    allowed_tones: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # step name -> tones
    allow_discounts: bool = False
    allow_waivers: bool = False
    allow_settlement_offers: bool = False

    def tone_for(self, step: str, tone: str | None) -> str:
        """The tone a message of `step` is written in: the step's own if allowed, else its first allowed one
        (steps outside the ladder, such as a requested copy, keep theirs)."""
        allowed = self.allowed_tones.get(step)
        chosen = tone or "friendly"
        if allowed and chosen not in allowed:
            return allowed[0]
        return chosen


def parse_messaging(raw: Any, fail: Fail, *, outreach: OutreachPolicy, base_dir: Path | None = None) -> MessagingPolicy:
    if raw is None:
        return MessagingPolicy()
    if not isinstance(raw, dict):
        raise fail("messaging", f"expected a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in _KEYS:
            raise fail(f"messaging.{key}", f"unknown key (expected one of: {', '.join(sorted(_KEYS))})")

    segments = raw.get("sms_max_segments", 2)
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= MAX_SEGMENTS:
        raise fail("messaging.sms_max_segments", f"expected a whole number from 1 to {MAX_SEGMENTS}, got {segments!r}")

    use_llm = raw.get("llm", True)
    if not isinstance(use_llm, bool):
        raise fail("messaging.llm", f"expected true or false, got {use_llm!r}")

    templates_dir = raw.get("templates_dir")
    if templates_dir is not None:
        if not isinstance(templates_dir, str) or not templates_dir.strip():
            raise fail("messaging.templates_dir", f"expected a folder path, got {templates_dir!r}")
        folder = Path(templates_dir.strip()).expanduser()
        if not folder.is_absolute():
            folder = (base_dir or Path.cwd()) / folder
        if not folder.is_dir():
            raise fail("messaging.templates_dir", f"folder {str(folder)!r} does not exist")
        templates_dir = str(folder.resolve())

    steps = {step.name: step for step in outreach.ladder}
    tones: dict[str, tuple[str, ...]] = {}
    raw_tones = raw.get("allowed_tones") or {}
    if not isinstance(raw_tones, dict):
        raise fail("messaging.allowed_tones", "expected a mapping of ladder step -> list of tones")
    for name, allowed in raw_tones.items():
        key = f"messaging.allowed_tones.{name}"
        if name not in steps:
            raise fail(key, f"unknown ladder step (steps: {', '.join(steps)})")
        if not isinstance(allowed, list) or not allowed:
            raise fail(key, f"expected a non-empty list of tones ({', '.join(TONES)})")
        for index, tone in enumerate(allowed):
            if tone not in TONES:
                raise fail(f"{key}[{index}]", f"expected one of {', '.join(TONES)}, got {tone!r}")
        if steps[name].tone not in allowed:
            raise fail(key, f"the step's own tone {steps[name].tone!r} (outreach.ladder) is not allowed here")
        tones[str(name)] = tuple(allowed)

    allow = raw.get("allow") or {}
    if not isinstance(allow, dict):
        raise fail("messaging.allow", f"expected a mapping, got {type(allow).__name__}")
    for key, value in allow.items():
        if key not in _ALLOW_KEYS:
            raise fail(f"messaging.allow.{key}", f"unknown key (expected one of: {', '.join(sorted(_ALLOW_KEYS))}; "
                       "legal threats are never allowed)")
        if not isinstance(value, bool):
            raise fail(f"messaging.allow.{key}", f"expected true or false, got {value!r}")

    return MessagingPolicy(
        sms_max_segments=segments, use_llm=use_llm, templates_dir=templates_dir, allowed_tones=tones,
        allow_discounts=allow.get("discounts", False), allow_waivers=allow.get("waivers", False),
        allow_settlement_offers=allow.get("settlement_offers", False),
    )
