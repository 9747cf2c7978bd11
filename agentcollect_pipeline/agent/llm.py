"""OpenAI-compatible chat-completions client (httpx) and the LLM reply classifier.

Configuration from the environment (nothing is configured by default: templates and rules are the default):
  AGENTCOLLECT_LLM_BASE_URL   e.g. http://127.0.0.1:8084 (the local sandbox) or https://api.openai.com
  AGENTCOLLECT_LLM_MODEL      model name sent as `model`
  AGENTCOLLECT_LLM_API_KEY    Bearer key (never logged, never put in a prompt, hidden from repr)
  AGENTCOLLECT_LLM_TIMEOUT_S  per-request timeout in seconds (default 20)
  AGENTCOLLECT_LLM_RETRIES    retries on 429/5xx/timeouts/connection errors (default 2), exponential backoff

`/v1` is appended to the base URL unless it already ends with it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import httpx

from agentcollect_pipeline.agent.replies import INTENTS, Classification, classify, is_stop

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}


class LLMError(RuntimeError):
    """The endpoint could not give a usable answer (after retries)."""


@dataclass(frozen=True)
class LLMConfig:
    base_url: str
    model: str
    api_key: str = field(repr=False)
    timeout_s: float = 20.0
    retries: int = 2
    backoff_s: float = 0.5

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> LLMConfig | None:
        env = os.environ if environ is None else environ
        base_url, model = env.get("AGENTCOLLECT_LLM_BASE_URL", "").strip(), env.get("AGENTCOLLECT_LLM_MODEL", "").strip()
        if not base_url or not model:
            return None
        return cls(base_url=base_url, model=model, api_key=env.get("AGENTCOLLECT_LLM_API_KEY", ""),
                   timeout_s=float(env.get("AGENTCOLLECT_LLM_TIMEOUT_S", "20")),
                   retries=int(env.get("AGENTCOLLECT_LLM_RETRIES", "2")))

    @property
    def api_base(self) -> str:
        base = self.base_url.rstrip("/")
        return base if base.endswith("/v1") else base + "/v1"


class ChatClient:
    """POST /v1/chat/completions with retries on 429/5xx (honouring Retry-After) and timeouts."""

    def __init__(self, config: LLMConfig, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.Client(base_url=config.api_base, headers=headers, timeout=config.timeout_s,
                                  transport=transport)

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.config.base_url!r}, model={self.config.model!r})"

    def close(self) -> None:
        self._http.close()

    def complete(self, messages: list[dict[str, str]], *, json_schema: dict[str, Any] | None = None,
                 max_tokens: int = 800) -> str:
        """The assistant message's content. Raises LLMError when no usable answer came back."""
        body: dict[str, Any] = {"model": self.config.model, "messages": messages, "temperature": 0,
                                "max_tokens": max_tokens}
        if json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": json_schema}
        last = "no attempt"
        last_retry_after: str | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                self._sleep(self._backoff(attempt, last_retry_after))
            last_retry_after = None
            try:
                response = self._http.post("/chat/completions", json=body)
            except httpx.TimeoutException:
                last = "timeout"
                log.warning("LLM request timed out (attempt %d)", attempt + 1)
                continue
            except httpx.TransportError as exc:
                last = f"transport error {type(exc).__name__}"
                log.warning("LLM request failed: %s (attempt %d)", type(exc).__name__, attempt + 1)
                continue
            if response.status_code in RETRY_STATUSES:
                last = f"HTTP {response.status_code}"
                last_retry_after = response.headers.get("Retry-After")
                log.warning("LLM answered %d (attempt %d)", response.status_code, attempt + 1)
                continue
            if response.status_code != 200:
                raise LLMError(f"HTTP {response.status_code}")
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise LLMError("malformed chat-completions response") from None
            if not isinstance(content, str) or not content.strip():
                raise LLMError("empty answer")
            return content
        raise LLMError(f"gave up after {self.config.retries + 1} attempts: {last}")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), 30.0)
            except ValueError:
                pass
        return self.config.backoff_s * (2 ** (attempt - 1))


CLASSIFY_SYSTEM = (
    "You classify a customer's reply to an invoice reminder. Answer only JSON: "
    '{"intent": one of ' + ", ".join(INTENTS) + ', "promised_date": "YYYY-MM-DD" or null, '
    '"dispute_reason": short text or null}. stop = any wish not to be contacted (it wins over everything). '
    "promise_to_pay needs a future payment; paid_already a past one. Resolve relative dates against received_on."
)
CLASSIFY_SCHEMA = {
    "name": "reply_intent", "strict": True,
    "schema": {"type": "object", "additionalProperties": False, "required": ["intent", "promised_date", "dispute_reason"],
               "properties": {"intent": {"type": "string", "enum": list(INTENTS)},
                              "promised_date": {"type": ["string", "null"]},
                              "dispute_reason": {"type": ["string", "null"]}}},
}


class LLMReplyClassifier:
    """Rules first for opt-outs (always), the LLM for the rest; any LLM failure falls back to the rules."""

    def __init__(self, config: LLMConfig, *, client: ChatClient | None = None) -> None:
        self._client = client or ChatClient(config)
        self.fallbacks = 0

    def close(self) -> None:
        self._client.close()

    def classify(self, text: str, received_at: datetime | date) -> Classification:
        if is_stop(text):
            return classify(text, received_at)
        day = received_at.date() if isinstance(received_at, datetime) else received_at
        try:
            content = self._client.complete(
                [{"role": "system", "content": CLASSIFY_SYSTEM},
                 {"role": "user", "content": json.dumps({"received_on": day.isoformat(), "reply": text})}],
                json_schema=CLASSIFY_SCHEMA, max_tokens=120)
            answer = json.loads(content)
            intent = answer["intent"]
            if intent not in INTENTS:
                raise LLMError(f"unknown intent {intent!r}")
            promised = date.fromisoformat(answer["promised_date"]) if answer.get("promised_date") else None
            reason = answer.get("dispute_reason") if intent == "dispute" else None
            return Classification(intent, promised if intent == "promise_to_pay" else None, reason, 0.7)
        except (LLMError, ValueError, KeyError, TypeError) as exc:
            self.fallbacks += 1
            log.warning("LLM reply classification failed (%s); using the rules", exc)
            return classify(text, received_at)
