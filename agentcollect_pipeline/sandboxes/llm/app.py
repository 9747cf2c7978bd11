"""A local stand-in for an OpenAI-compatible chat-completions endpoint, for the collection agent (issue 7).

`LLMSandbox(api_key).app` is a raw ASGI app:
- `POST /v1/chat/completions`: Bearer auth (401 without or with a wrong key), body checked (`model`,
  `messages`), answers `{"object": "chat.completion", "choices": [{"message": {"role": "assistant",
  "content": ...}}], "usage": ...}`.
- Answers come from a script queue (`script(...)`), else a deterministic default: for a drafting brief
  (JSON with "channel") a correct draft built from the brief's facts; for a reply to classify (JSON with
  "reply") the rules classifier's answer; otherwise "OK".
- Scripted answers are raw content strings or variants of the correct draft: "good", "wrong_amount",
  "wrong_invoice", "foreign_link", "discount", "waiver", "legal_threat", "missing_opt_out", "too_long",
  "plain_text".
- Faults (shared `FaultQueue`): http_500/502/503/429 (429 with Retry-After: 0), malformed (200 with a body
  that is not a completion), delay (sleeps `delay_s` before answering: a client timeout).
- `GET /v1/models`; `/sandbox/...` JSON control API: `POST script`, `POST faults`, `GET requests`, `POST reset`.
Every request body is kept (`requests`) so tests can check what the model was shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hmac
import json
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from agentcollect_pipeline.asgi import read_body
from agentcollect_pipeline.sandboxes.common import FaultQueue, serve_lifespan

__all__ = ["DEFAULT_API_KEY", "FAULT_KINDS", "VARIANTS", "LLMSandbox", "main"]

DEFAULT_API_KEY = "sk-sandbox-llm-key"
DEFAULT_MODEL = "sandbox-drafter"
FAULT_KINDS = ("http_500", "http_502", "http_503", "http_429", "malformed", "delay")
VARIANTS = ("good", "wrong_amount", "wrong_invoice", "foreign_link", "discount", "waiver", "legal_threat",
            "missing_opt_out", "too_long", "plain_text")
MAX_BODY = 1024 * 1024


def _op(path: str) -> str:
    return path.strip("/").removeprefix("v1/")


def good_draft(brief: dict[str, Any]) -> dict[str, Any]:
    """A draft that states exactly the brief's facts, with the opt-out: what a well-behaved model writes."""
    if brief.get("purpose") == "voicemail":  # limited content: the brief has no amounts, and none is said
        return {"subject": None, "text": f"This is an automated message from {brief['organisation']} for "
                                         f"{brief['customer']}. Please call us back. Thank you."}
    org, total, invoices = brief["organisation"], brief["total_due"], brief["invoices"]
    oldest = invoices[0]
    channel = brief["channel"]
    if channel == "email":
        lines = "\n".join(f"- {i['number']}: {i['amount_due']}, due {i['due_date']}" for i in invoices)
        text = (f"Dear {brief['customer']},\n\nThis is a {brief['tone']} reminder from {org}: your balance of {total} "
                f"is past due.\n\n{lines}\n\nYou can pay securely here: {brief['payment_link']}\n\n"
                f"If you have already paid or have a question, simply reply.\n\n{brief['opt_out_line']}\n"
                f"Ref {brief['reference']}")
        return {"subject": f"{org}: balance of {total} past due", "text": text}
    if channel == "sms":
        return {"subject": None, "text": f"{org}: {total} is past due (invoice {oldest['number']}, due {oldest['due_date']}). "
                                         f"Pay: {brief['payment_link']} Ref {brief['reference']}. {brief['opt_out_line']}"}
    return {"subject": None, "text": f"This is an automated call from {org}. Your balance of {total} is past due; "
                                     f"invoice {oldest['number']} was due on {oldest['due_date']}."}


def variant_draft(variant: str, brief: dict[str, Any]) -> str:
    """The content string for a scripted variant of the correct draft."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    draft = good_draft(brief)
    text = draft["text"]
    if variant == "wrong_amount":
        if "total_due" in brief:
            text = text.replace(brief["total_due"], "9,876.54 " + brief["currency"], 1)
        else:
            text += " Your balance is 9,876.54."
    elif variant == "wrong_invoice" and "invoices" in brief:
        text = text.replace(brief["invoices"][0]["number"], "INV-999999", 1)
    elif variant == "foreign_link" and "payment_link" in brief:
        text = text.replace(brief["payment_link"], "https://pay-now.example.net/checkout", 1)
    elif variant == "discount":
        text += " Pay this week and we will give you a 20% discount."
    elif variant == "waiver":
        text += " We will waive the late fees if you pay today."
    elif variant == "legal_threat":
        text += " If this is not paid we will take legal action and report you to the credit bureaus."
    elif variant == "missing_opt_out" and "opt_out_line" in brief:
        text = text.replace(brief["opt_out_line"], "", 1).strip()
    elif variant == "too_long":
        text = text + " " + " ".join(["We really value your business and appreciate your prompt attention."] * 6)
    elif variant == "plain_text":
        return text
    return json.dumps({**draft, "text": text})


class LLMSandbox:
    """In-memory chat-completions server. Thread-safe for test-side calls."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, model: str = DEFAULT_MODEL) -> None:
        self.api_key = api_key
        self.model = model
        self._lock = threading.Lock()
        self._script: deque[str | dict[str, Any]] = deque()
        self._faults = FaultQueue(FAULT_KINDS, _op)
        self._requests: list[dict[str, Any]] = []

        async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
            await self._asgi(scope, receive, send)

        self._app = app

    def __repr__(self) -> str:
        return f"LLMSandbox(model={self.model!r})"

    @property
    def app(self) -> Callable[..., Any]:
        return self._app

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._requests)

    def script(self, *answers: str | dict[str, Any]) -> None:
        """Queue answers: a content string, or {"variant": name} (see VARIANTS)."""
        with self._lock:
            for answer in answers:
                if isinstance(answer, dict) and answer.get("variant") not in VARIANTS:
                    raise ValueError(f"unknown variant {answer.get('variant')!r}; expected one of {VARIANTS}")
                self._script.append(answer)

    def inject(self, kind: str, times: int = 1, delay_s: float = 0.0) -> None:
        with self._lock:
            self._faults.add(kind, "chat/completions", times, delay_s)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._faults.clear()
            self._requests.clear()

    # ---- ASGI -----------------------------------------------------------------------------------------
    async def _asgi(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        body = await read_body(receive, MAX_BODY)
        if body is None:
            await _respond(send, 413, {"error": {"message": "body too large", "type": "invalid_request_error"}})
            return
        if path.startswith("/sandbox/"):
            await self._control(method, path, body, send)
            return
        if path not in ("/v1/chat/completions", "/v1/models"):
            await _respond(send, 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error"}})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        token = headers.get("authorization", "")
        if not (token.startswith("Bearer ") and hmac.compare_digest(token[7:].encode(), self.api_key.encode())):
            await _respond(send, 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                                 "code": "invalid_api_key"}})
            return
        if path == "/v1/models":
            await _respond(send, 200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "sandbox"}]})
            return
        if method != "POST":
            await _respond(send, 405, {"error": {"message": "use POST", "type": "invalid_request_error"}})
            return
        try:
            request = json.loads(body)
            messages = request["messages"]
            if not isinstance(request.get("model"), str) or not isinstance(messages, list) or not messages:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            await _respond(send, 400, {"error": {"message": "body must be JSON with model and messages", "type": "invalid_request_error"}})
            return
        with self._lock:
            self._requests.append(request)
            fault = self._faults.take("chat/completions", "POST")
            scripted = self._script.popleft() if self._script else None
        if fault is not None:
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay_s)
            elif fault.kind == "malformed":
                await _respond(send, 200, {"id": "x", "object": "chat.completion", "choices": []})
                return
            else:
                status = 429 if fault.kind == "http_429" else int(fault.kind[5:])
                extra = {"retry-after": "0"} if status == 429 else {}
                await _respond(send, status, {"error": {"message": f"sandbox fault {fault.kind}", "type": "server_error"}}, extra)
                return
        content = self._answer(messages, scripted)
        await _respond(send, 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in messages),
                      "completion_tokens": len(content.split()), "total_tokens": 0},
        })

    def _answer(self, messages: list[dict[str, Any]], scripted: str | dict[str, Any] | None) -> str:
        user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "") or ""
        try:
            brief = json.loads(user)
        except (ValueError, TypeError):
            brief = None
        if isinstance(scripted, str):
            return scripted
        if isinstance(brief, dict) and "channel" in brief:
            if isinstance(scripted, dict):
                return variant_draft(scripted["variant"], brief)
            return json.dumps(good_draft(brief))
        if isinstance(brief, dict) and "reply" in brief:
            from datetime import date

            from agentcollect_pipeline.agent.replies import classify

            result = classify(brief["reply"], date.fromisoformat(brief.get("received_on") or date.today().isoformat()))
            return json.dumps({"intent": result.intent,
                               "promised_date": result.promised_date.isoformat() if result.promised_date else None,
                               "dispute_reason": result.dispute_reason})
        return "OK"

    async def _control(self, method: str, path: str, body: bytes, send: Callable[..., Any]) -> None:
        try:
            data = json.loads(body) if body else {}
            if path == "/sandbox/requests" and method == "GET":
                await _respond(send, 200, {"requests": self.requests})
            elif path == "/sandbox/script" and method == "POST":
                self.script(*data.get("answers", []))
                await _respond(send, 200, {"queued": len(self._script)})
            elif path == "/sandbox/faults" and method == "POST":
                self.inject(data["kind"], int(data.get("times", 1)), float(data.get("delay_s", 0.0)))
                await _respond(send, 200, {"queued": len(self._faults)})
            elif path == "/sandbox/reset" and method == "POST":
                self.reset()
                await _respond(send, 200, {"ok": True})
            else:
                await _respond(send, 404, {"error": f"no route {method} {path}"})
        except (ValueError, KeyError, TypeError) as exc:
            await _respond(send, 400, {"error": str(exc)})


async def _respond(send: Callable[..., Any], status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    with contextlib.suppress(Exception):  # the client may have given up (timeout) before we answer
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    """Serve an LLM sandbox until killed; prints one "listening on" line once the port is live."""
    from ..server import serve_forever

    parser = argparse.ArgumentParser(prog="llm-sandbox", description="Local OpenAI-compatible chat-completions sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    sandbox = LLMSandbox(args.api_key, args.model)

    def announce(url: str) -> None:
        print(f"llm sandbox listening on {url}", flush=True)
        print(f"AGENTCOLLECT_LLM_BASE_URL={url} AGENTCOLLECT_LLM_MODEL={args.model}", file=sys.stderr, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        serve_forever(sandbox.app, host=args.host, port=args.port, on_started=announce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
