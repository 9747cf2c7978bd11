"""The Twilio sandbox driven by the OFFICIAL twilio client over loopback HTTP, plus contract checks against
Twilio's OpenAPI description (/work/shared/reference/specs/twilio_api_v2010.json)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from agentcollect_pipeline.sandboxes.server import ServerHandle, serve_in_thread
from agentcollect_pipeline.sandboxes.twilio import SandboxClock, TwilioSandbox, twilio_signature
from agentcollect_pipeline.sandboxes.twilio.app import segment_count

SPEC_PATH = Path("/work/shared/reference/specs/twilio_api_v2010.json")
START = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
FROM = "+15005550006"
TO = "+14155550100"
ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "fedcba9876543210" * 2


# ---- the official client, pointed at the sandbox (reference 1.1, recommended form) ------------------------


class LoopbackTwilioHttpClient(TwilioHttpClient):
    """Sends every *.twilio.com request to a local server; the path stays the same."""

    def __init__(self, base_url: str, **kw: Any) -> None:
        super().__init__(**kw)
        self._base = urlsplit(base_url)

    def request(self, method, url, *args, **kw):  # type: ignore[no-untyped-def]
        u = urlsplit(url)
        if u.hostname and u.hostname.endswith(".twilio.com"):
            url = urlunsplit((self._base.scheme, self._base.netloc, u.path, u.query, u.fragment))
        return super().request(method, url, *args, **kw)


# ---- a webhook receiver that records what the sandbox sends ---------------------------------------------


@dataclass
class Received:
    method: str
    url: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass
class Receiver:
    requests: list[Received] = field(default_factory=list)
    reply: dict[str, tuple[int, str]] = field(default_factory=dict)  # path -> (status, body)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode()
        url = f"{self.url}{scope['path']}" + (f"?{query}" if query else "")
        with self.lock:
            self.requests.append(Received(scope["method"], url, scope["path"], headers, body))
        status, text = self.reply.get(scope["path"], (200, "<Response/>"))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/xml")]})
        await send({"type": "http.response.body", "body": text.encode()})

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


# ---- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_region(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_REGION", "TWILIO_EDGE", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def clock() -> SandboxClock:
    return SandboxClock(start=START)


@pytest.fixture
def sandbox(clock: SandboxClock) -> TwilioSandbox:
    return TwilioSandbox(account_sid=ACCOUNT, auth_token=TOKEN, clock=clock)


@pytest.fixture
def server(sandbox: TwilioSandbox) -> Iterator[ServerHandle]:
    with serve_in_thread(sandbox.app) as handle:
        yield handle


@pytest.fixture
def client(server: ServerHandle) -> Client:
    return Client(ACCOUNT, TOKEN, http_client=LoopbackTwilioHttpClient(server.url, timeout=10))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    app = Receiver()
    with serve_in_thread(app) as handle:
        app.url = handle.url
        yield app


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


def http(server: ServerHandle, token: str = TOKEN) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/2010-04-01/Accounts/{ACCOUNT}", auth=(ACCOUNT, token), timeout=10)


def assert_signed(request: Received, params: dict[str, str] | None = None) -> None:
    """The official validator accepts the signature for the URL the sandbox called."""
    signature = request.headers["x-twilio-signature"]
    form = request.form if params is None else params
    assert RequestValidator(TOKEN).validate(request.url, form, signature), request
    assert not RequestValidator("wrong-token").validate(request.url, form, signature)


# ---- client wiring --------------------------------------------------------------------------------------


def test_official_client_sends_sms_through_loopback_http_client(client: Client, sandbox: TwilioSandbox) -> None:
    message = client.messages.create(to=TO, from_=FROM, body="Invoice INV-1001 is overdue. Reply STOP to opt out.")
    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert message.status == "queued"
    assert message.to == TO and message.from_ == FROM
    assert message.direction == "outbound-api"
    assert message.account_sid == ACCOUNT
    assert message.num_segments == "1"
    assert message.date_created == START
    assert message.date_sent is None
    assert sandbox.stats["calls"]["POST Messages"] == 1


def test_base_url_override_also_works(server: ServerHandle) -> None:
    client = Client(ACCOUNT, TOKEN)
    client.api.base_url = server.url
    message = client.messages.create(to=TO, from_=FROM, body="hello")
    assert client.messages(message.sid).fetch().body == "hello"


def test_wrong_credentials_get_401_with_code_20003(server: ServerHandle) -> None:
    client = Client(ACCOUNT, "not-the-token", http_client=LoopbackTwilioHttpClient(server.url, timeout=10))
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=TO, from_=FROM, body="x")
    assert info.value.status == 401 and info.value.code == 20003
    response = httpx.post(f"{server.url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json", data={"To": TO})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert set(response.json()) == {"code", "message", "more_info", "status"}


# ---- validation and magic numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(("to", "from_", "code"), [
    ("+15005550001", FROM, 21211),
    ("+15005550002", FROM, 21612),
    ("+15005550003", FROM, 21408),
    ("+15005550004", FROM, 21610),
    ("+15005550009", FROM, 21614),
    ("not a phone", FROM, 21211),
    ("+1555", FROM, 21211),
    (TO, "+15005550001", 21212),
    (TO, "+15005550007", 21606),
    (TO, "+15005550008", 21611),
    (TO, TO, 21266),
])
def test_sms_errors_use_twilio_codes(client: Client, to: str, from_: str, code: int) -> None:
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=to, from_=from_, body="hello")
    assert info.value.status == 400
    assert info.value.code == code
    assert info.value.uri.endswith("/Messages.json")


@pytest.mark.parametrize(("form", "code"), [
    ({"From": FROM, "Body": "x"}, 21604),
    ({"To": TO, "Body": "x"}, 21603),
    ({"To": TO, "From": FROM}, 21602),
    ({"To": TO, "From": FROM, "Body": "x" * 1601}, 21617),
    ({"To": TO, "From": FROM, "Body": "x", "StatusCallback": "not a url"}, 21609),
    ({"To": TO, "MessagingServiceSid": "MG" + "0" * 32, "Body": "x"}, 21701),
])
def test_missing_or_bad_parameters(server: ServerHandle, form: dict[str, str], code: int) -> None:
    with http(server) as api:
        response = api.post("/Messages.json", data=form)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == code and body["status"] == 400
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"


def test_owned_numbers_are_enforced_when_configured(clock: SandboxClock) -> None:
    sandbox = TwilioSandbox(ACCOUNT, TOKEN, clock, phone_numbers=["+14155550199"])
    with serve_in_thread(sandbox.app) as server:
        client = Client(ACCOUNT, TOKEN, http_client=LoopbackTwilioHttpClient(server.url, timeout=10))
        client.messages.create(to=TO, from_="+14155550199", body="ok")
        client.messages.create(to=TO, from_=FROM, body="magic From always works")
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to=TO, from_="+14155550198", body="not ours")
    assert info.value.code == 21606


def test_segments_follow_gsm7_and_ucs2_limits() -> None:
    assert segment_count("a" * 160) == 1
    assert segment_count("a" * 161) == 2
    assert segment_count("a" * 306) == 2 and segment_count("a" * 307) == 3
    assert segment_count("€" * 80) == 1 and segment_count("€" * 81) == 2  # extension chars count double
    assert segment_count("é" * 160) == 1  # é is in the GSM-7 basic set
    assert segment_count("ł" * 70) == 1 and segment_count("ł" * 71) == 2
    assert segment_count("👍" * 35) == 1 and segment_count("👍" * 36) == 2


# ---- status progression and signed callbacks -------------------------------------------------------------


def test_status_callbacks_are_signed_and_follow_queued_sent_delivered(
        client: Client, sandbox: TwilioSandbox, receiver: Receiver) -> None:
    callback = f"{receiver.url}/twilio/status"
    message = client.messages.create(to=TO, from_=FROM, body="hi", status_callback=callback)
    assert sandbox.tick()[0].params["MessageStatus"] == "queued"
    assert client.messages(message.sid).fetch().status == "queued"
    sandbox.advance(1)
    fetched = client.messages(message.sid).fetch()
    assert fetched.status == "sent" and fetched.date_sent == START + timedelta(seconds=1)
    assert fetched.price is not None and fetched.price_unit == "USD"
    sandbox.advance(2)
    assert client.messages(message.sid).fetch().status == "delivered"

    posts = receiver.at("/twilio/status")
    assert [p.form["MessageStatus"] for p in posts] == ["queued", "sent", "delivered"]
    for post in posts:
        assert post.method == "POST"
        assert post.headers["content-type"].startswith("application/x-www-form-urlencoded")
        assert post.form["MessageSid"] == post.form["SmsSid"] == message.sid
        assert post.form["AccountSid"] == ACCOUNT and post.form["To"] == TO and post.form["From"] == FROM
        assert post.form["ApiVersion"] == "2010-04-01"
        assert "ErrorCode" not in post.form
        assert_signed(post)


def test_signature_matches_the_documented_algorithm_and_the_official_validator() -> None:
    url = "https://collect.example/twilio/status?x=1"

    class MultiDict(dict):  # what a web framework hands the validator for repeated fields
        def __init__(self, lists: dict[str, list[str]]) -> None:
            super().__init__({k: v[0] for k, v in lists.items()})
            self.lists = lists

        def getall(self, name: str) -> list[str]:
            return self.lists[name]

    repeated = {"To": ["+1"], "StatusCallbackEvent": ["ringing", "answered", "completed"]}
    ours = twilio_signature(TOKEN, url, {k: v if len(v) > 1 else v[0] for k, v in repeated.items()})
    assert ours == RequestValidator(TOKEN).compute_signature(url, MultiDict(repeated))
    flat = {"To": "+1", "MessageStatus": "sent"}
    assert twilio_signature(TOKEN, url, flat) == RequestValidator(TOKEN).compute_signature(url, flat)
    assert RequestValidator(TOKEN).validate(url, flat, twilio_signature(TOKEN, url, flat))


@pytest.mark.parametrize(("status", "code"), [("undelivered", 30003), ("failed", 30005)])
def test_scripted_delivery_failures_report_error_codes(
        client: Client, sandbox: TwilioSandbox, receiver: Receiver, status: str, code: int) -> None:
    sandbox.script_sms(TO, status)
    message = client.messages.create(to=TO, from_=FROM, body="hi", status_callback=f"{receiver.url}/s")
    sandbox.advance(10)
    fetched = client.messages(message.sid).fetch()
    assert fetched.status == status and fetched.error_code == code
    last = receiver.at("/s")[-1]
    assert last.form["MessageStatus"] == status and last.form["ErrorCode"] == str(code)
    assert_signed(last)


def test_control_call_forces_a_status(client: Client, sandbox: TwilioSandbox, receiver: Receiver) -> None:
    message = client.messages.create(to=TO, from_=FROM, body="hi", status_callback=f"{receiver.url}/s")
    sandbox.set_message_status(message.sid, "undelivered", 30007)
    assert client.messages(message.sid).fetch().error_code == 30007
    assert receiver.at("/s")[-1].form["ErrorCode"] == "30007"
    sandbox.advance(60)  # the forced status ends the plan
    assert client.messages(message.sid).fetch().status == "undelivered"


# ---- per-sender throughput, REST rate limit --------------------------------------------------------------


def test_long_code_sends_one_segment_per_second_toll_free_three(client: Client, sandbox: TwilioSandbox) -> None:
    long_code = [client.messages.create(to=TO, from_=FROM, body=f"m{i}").sid for i in range(3)]
    toll_free = [client.messages.create(to=TO, from_="+18005550100", body=f"t{i}").sid for i in range(6)]
    sandbox.advance(30)
    sent = [client.messages(sid).fetch().date_sent for sid in long_code]
    assert [(s - START).total_seconds() for s in sent] == [1, 2, 3]
    sent_tf = [(client.messages(sid).fetch().date_sent - START).total_seconds() for sid in toll_free]
    assert sent_tf == [1, 1, 1, 2, 2, 2]


def test_queue_overflow_fails_with_30001(clock: SandboxClock) -> None:
    sandbox = TwilioSandbox(ACCOUNT, TOKEN, clock, queue_hours=2 / 3600)  # 2 s of queue at 1 MPS
    with serve_in_thread(sandbox.app) as server:
        client = Client(ACCOUNT, TOKEN, http_client=LoopbackTwilioHttpClient(server.url, timeout=10))
        sids = [client.messages.create(to=TO, from_=FROM, body=f"m{i}").sid for i in range(4)]
        sandbox.advance(30)
        statuses = [(client.messages(s).fetch().status, client.messages(s).fetch().error_code) for s in sids]
    assert statuses[:2] == [("delivered", None), ("delivered", None)]
    assert ("failed", 30001) in statuses[2:]


def test_sender_overflow_reject_mode_answers_429(clock: SandboxClock) -> None:
    sandbox = TwilioSandbox(ACCOUNT, TOKEN, clock, sender_overflow="reject")
    with serve_in_thread(sandbox.app) as server:
        client = Client(ACCOUNT, TOKEN, http_client=LoopbackTwilioHttpClient(server.url, timeout=10))
        client.messages.create(to=TO, from_=FROM, body="first")
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to=TO, from_=FROM, body="second, same second")
        assert info.value.status == 429 and info.value.code == 20429
        client.messages.create(to=TO, from_="+14155550111", body="another sender is free")
        sandbox.advance(1)
        client.messages.create(to=TO, from_=FROM, body="next second")


def test_rest_rate_limit_answers_429_20429(clock: SandboxClock) -> None:
    sandbox = TwilioSandbox(ACCOUNT, TOKEN, clock, requests_per_second=2, burst=2)
    with serve_in_thread(sandbox.app) as server:
        client = Client(ACCOUNT, TOKEN, http_client=LoopbackTwilioHttpClient(server.url, timeout=10))
        client.messages.create(to=TO, from_=FROM, body="1")
        client.messages.create(to=TO, from_=FROM, body="2")
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to=TO, from_=FROM, body="3")
        assert info.value.status == 429 and info.value.code == 20429
        clock.advance(0.5)
        client.messages.create(to=TO, from_=FROM, body="4")
    assert sandbox.stats["rate_limited"] == 1
    assert sandbox.stats["messages_created"] == 3


# ---- faults ----------------------------------------------------------------------------------------------


def test_injected_faults(client: Client, sandbox: TwilioSandbox, server: ServerHandle) -> None:
    sandbox.inject("http_503", path="Messages.json")
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=TO, from_=FROM, body="x")
    assert info.value.status == 503
    assert sandbox.messages() == []

    sandbox.inject("http_500", path="Messages", after_processing=True)
    with pytest.raises(TwilioRestException):
        client.messages.create(to=TO, from_=FROM, body="ambiguous")
    assert [m["body"] for m in sandbox.messages()] == ["ambiguous"]  # created although the answer was 500

    sandbox.inject("http_429", path="Messages", method="GET")
    with pytest.raises(TwilioException) as page_error:  # list() reports page errors without parsing the code
        client.messages.list()
    assert '"code": 20429' in str(page_error.value)

    sandbox.inject("malformed")
    with http(server) as api:
        assert api.get("/Messages.json").status_code == 200
    sandbox.inject("delay", delay_s=0.2)
    assert len(client.messages.list()) == 1
    assert sandbox.stats["faults_injected"] == 5


# ---- listing and paging ----------------------------------------------------------------------------------


def test_list_pages_like_twilio_and_filters(client: Client, sandbox: TwilioSandbox, server: ServerHandle) -> None:
    for i in range(5):
        client.messages.create(to=TO, from_=FROM, body=f"a{i}")
        sandbox.advance(1)
    for i in range(2):
        client.messages.create(to="+14155550101", from_="+14155550199", body=f"b{i}")
    sandbox.advance(10)

    with http(server) as api:
        first = api.get("/Messages.json", params={"To": TO, "PageSize": 2}).json()
        assert [m["body"] for m in first["messages"]] == ["a4", "a3"]  # newest first
        assert first["page"] == 0 and first["page_size"] == 2 and first["start"] == 0 and first["end"] == 1
        assert first["previous_page_uri"] is None
        assert first["next_page_uri"].startswith(f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json?")
        assert "PageToken=PA" in first["next_page_uri"] and "Page=1" in first["next_page_uri"]
        second = api.get(first["next_page_uri"].split("/Messages.json")[1].join(["/Messages.json", ""])).json()
        assert [m["body"] for m in second["messages"]] == ["a2", "a1"]
        assert second["previous_page_uri"] is not None

    assert [m.body for m in client.messages.list(to=TO, page_size=2)] == ["a4", "a3", "a2", "a1", "a0"]
    assert {m.body for m in client.messages.list(from_="+14155550199")} == {"b0", "b1"}
    assert len(client.messages.list(limit=3)) == 3
    after = client.messages.list(date_sent_after=START + timedelta(seconds=3))
    assert {m.body for m in after} == {"a2", "a3", "a4", "b0", "b1"}
    before = client.messages.list(date_sent_before=START + timedelta(seconds=2))
    assert {m.body for m in before} == {"a0", "a1"}
    assert len(client.messages.list(date_sent=START)) == 7
    assert client.messages.list(date_sent=START + timedelta(days=1)) == []


# ---- Messaging Services, inbound SMS and opt-out ---------------------------------------------------------


def test_messaging_service_send_starts_accepted(client: Client, sandbox: TwilioSandbox, receiver: Receiver) -> None:
    service = sandbox.add_messaging_service(["+14155550180", "+14155550181"])
    first = client.messages.create(to=TO, messaging_service_sid=service, body="a",
                                   status_callback=f"{receiver.url}/s")
    second = client.messages.create(to="+14155550102", messaging_service_sid=service, body="b")
    assert first.status == "accepted" and first.messaging_service_sid == service
    assert {first.from_, second.from_} == {"+14155550180", "+14155550181"}  # spread over the pool
    sandbox.advance(10)
    assert [r.form["MessageStatus"] for r in receiver.at("/s")] == ["queued", "sent", "delivered"]
    assert receiver.at("/s")[0].form["MessagingServiceSid"] == service


def test_inbound_stop_blocks_the_pair_and_start_unblocks(
        client: Client, sandbox: TwilioSandbox, receiver: Receiver) -> None:
    sandbox.set_inbound_url(f"{receiver.url}/twilio/sms")
    client.messages.create(to=TO, from_=FROM, body="Invoice overdue")

    result = sandbox.inbound_sms(TO, FROM, "Stop please")  # not a keyword: the whole body must match
    assert result["opt_out_type"] is None
    client.messages.create(to=TO, from_=FROM, body="still allowed")

    result = sandbox.inbound_sms(TO, FROM, "  sToP ")
    assert result["opt_out_type"] == "STOP" and len(result["replies"]) == 1
    post = receiver.at("/twilio/sms")[-1]
    assert_signed(post)
    form = post.form
    assert form["Body"] == "  sToP " and form["From"] == TO and form["To"] == FROM
    assert form["SmsStatus"] == "received" and form["MessageSid"] == result["message_sid"]
    assert form["AccountSid"] == ACCOUNT and form["NumMedia"] == "0"
    assert "OptOutType" not in form  # only with Advanced Opt-Out on a Messaging Service

    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=TO, from_=FROM, body="blocked now")
    assert info.value.status == 400 and info.value.code == 21610
    client.messages.create(to=TO, from_="+14155550199", body="another sender is a different pair")
    assert sandbox.opt_outs == [{"sender": FROM, "recipient": TO}]

    sandbox.inbound_sms(TO, FROM, "START")
    client.messages.create(to=TO, from_=FROM, body="allowed again")
    inbound = [m for m in client.messages.list(to=FROM) if m.direction == "inbound"]
    assert len(inbound) == 3 and all(m.status == "received" for m in inbound)
    replies = [m for m in client.messages.list(to=TO) if m.direction == "outbound-reply"]
    assert len(replies) == 2  # Twilio's own STOP and START confirmations


def test_advanced_opt_out_adds_opt_out_type_and_blocks_the_service(
        client: Client, sandbox: TwilioSandbox, receiver: Receiver) -> None:
    service = sandbox.add_messaging_service(["+14155550180", "+14155550181"], advanced_opt_out=True)
    sandbox.set_inbound_url(f"{receiver.url}/sms", number="+14155550180")
    sandbox.inbound_sms(TO, "+14155550180", "unsubscribe")
    assert receiver.at("/sms")[-1].form["OptOutType"] == "STOP"
    assert receiver.at("/sms")[-1].form["MessagingServiceSid"] == service
    for kwargs in ({"messaging_service_sid": service}, {"from_": "+14155550181"}):
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to=TO, body="x", **kwargs)
        assert info.value.code == 21610


def test_twiml_reply_to_inbound_sms_is_recorded(client: Client, sandbox: TwilioSandbox, receiver: Receiver) -> None:
    reply = MessagingResponse()
    reply.message("Thanks, we received your message.")
    receiver.reply["/sms"] = (200, str(reply))
    result = sandbox.inbound_sms(TO, FROM, "I paid yesterday", url=f"{receiver.url}/sms")
    assert result["delivery"].ok
    (sid,) = result["replies"]
    assert client.messages(sid).fetch().body == "Thanks, we received your message."
    assert client.messages(sid).fetch().direction == "outbound-reply"


# ---- voice -------------------------------------------------------------------------------------------------


def test_call_progresses_and_posts_requested_events(client: Client, sandbox: TwilioSandbox, receiver: Receiver) -> None:
    twiml = VoiceResponse()
    twiml.say("This is Acme accounts receivable.")
    call = client.calls.create(to=TO, from_=FROM, twiml=str(twiml), machine_detection="DetectMessageEnd",
                               status_callback=f"{receiver.url}/call",
                               status_callback_event=["initiated", "ringing", "answered", "completed"],
                               status_callback_method="POST")
    assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid) and call.status == "queued"
    assert sandbox.call_request(call.sid)["MachineDetection"] == "DetectMessageEnd"
    sandbox.tick()
    sandbox.advance(1)
    assert client.calls(call.sid).fetch().status == "ringing"
    sandbox.advance(5)
    assert client.calls(call.sid).fetch().status == "in-progress"
    sandbox.advance(30)
    done = client.calls(call.sid).fetch()
    assert done.status == "completed" and done.duration == "30" and done.answered_by == "human"
    assert done.start_time == START and done.end_time == START + timedelta(seconds=36)

    posts = receiver.at("/call")
    assert [p.form["CallStatus"] for p in posts] == ["initiated", "ringing", "in-progress", "completed"]
    assert [p.form["SequenceNumber"] for p in posts] == ["0", "1", "2", "3"]
    assert posts[-1].form["CallDuration"] == "30" and posts[-1].form["AnsweredBy"] == "human"
    for post in posts:
        assert post.form["CallSid"] == call.sid and post.form["Direction"] == "outbound-api"
        assert post.form["CallbackSource"] == "call-progress-events"
        assert_signed(post)


@pytest.mark.parametrize("outcome", ["no-answer", "busy", "failed"])
def test_unanswered_calls_report_only_completed_by_default(
        client: Client, sandbox: TwilioSandbox, receiver: Receiver, outcome: str) -> None:
    sandbox.script_call(TO, outcome)
    call = client.calls.create(to=TO, from_=FROM, url=f"{receiver.url}/voice", status_callback=f"{receiver.url}/c")
    sandbox.advance(120)
    assert client.calls(call.sid).fetch().status == outcome
    posts = receiver.at("/c")
    assert [p.form["CallStatus"] for p in posts] == [outcome]
    assert posts[0].form["CallDuration"] == "0"
    assert receiver.at("/voice") == []  # never answered, so the TwiML URL was not fetched


def test_answered_call_fetches_twiml_from_url_signed(client: Client, sandbox: TwilioSandbox, receiver: Receiver) -> None:
    sandbox.script_call(TO, "completed", answered_by="machine_end_beep")
    call = client.calls.create(to=TO, from_=FROM, url=f"{receiver.url}/voice", machine_detection="Enable")
    sandbox.advance(10)
    (fetch,) = receiver.at("/voice")
    assert fetch.form["CallStatus"] == "in-progress" and fetch.form["AnsweredBy"] == "machine_end_beep"
    assert_signed(fetch)
    assert sandbox.call_twiml(call.sid) == "<Response/>"


@pytest.mark.parametrize(("to", "code"), [("+15005550001", 21217), ("+15005550002", 21214),
                                          ("+15005550003", 21215), ("+15005550004", 21216)])
def test_call_magic_numbers(client: Client, to: str, code: int) -> None:
    with pytest.raises(TwilioRestException) as info:
        client.calls.create(to=to, from_=FROM, twiml="<Response/>")
    assert info.value.code == code


def test_call_requires_url_or_twiml_and_lists(client: Client, server: ServerHandle) -> None:
    with http(server) as api:
        response = api.post("/Calls.json", data={"To": TO, "From": FROM})
    assert response.status_code == 400 and response.json()["code"] == 21205
    for _ in range(3):
        client.calls.create(to=TO, from_=FROM, twiml="<Response/>")
    assert len(client.calls.list(page_size=2)) == 3
    assert len(client.calls.list(status="queued")) == 3
    assert client.calls.list(to="+14155550109") == []


# ---- control API and CLI -----------------------------------------------------------------------------------


def test_control_api_over_http(server: ServerHandle, sandbox: TwilioSandbox, receiver: Receiver) -> None:
    with httpx.Client(base_url=f"{server.url}/sandbox", timeout=10) as control:
        result = control.post("/inbound-sms", json={"from": TO, "to": FROM, "body": "STOP",
                                                     "url": f"{receiver.url}/in"}).json()
        assert result["opt_out_type"] == "STOP" and result["delivery"]["ok"] is True
        assert control.get("/opt-outs").json() == [{"sender": FROM, "recipient": TO}]
        control.post("/inject", json={"kind": "http_500", "path": "Calls"})
        assert control.post("/clock", json={"advance_seconds": 5}).json()["now"].startswith("2026-11-24T15:00:05")
        stats = control.get("/stats").json()
        assert stats["inbound_messages"] == 1 and stats["webhooks_sent"] == 1
        assert control.get("/nope").status_code == 404
    assert sandbox.clock.now() == START + timedelta(seconds=5)


def test_cli_prints_listening_line() -> None:
    process = subprocess.Popen([sys.executable, "-m", "agentcollect_pipeline.cli", "sandbox", "twilio", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        match = re.fullmatch(r"twilio sandbox listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        url = match.group(1)
        response = httpx.get(f"{url}/2010-04-01/Accounts/{'AC' + '5a' * 16}/Messages.json",
                             auth=("AC" + "5a" * 16, "5a" * 16), timeout=10)
        assert response.status_code == 200 and response.json()["messages"] == []
    finally:
        process.terminate()
        process.wait(10)


# ---- contract checks against Twilio's OpenAPI description -------------------------------------------------


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def conforms(spec: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """A small OpenAPI 3.0 schema check: type/nullable, enum, pattern, lengths, required, properties, items."""
    schema = _resolve(spec, schema)
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null not allowed"]
    problems: list[str] = []
    kind = schema.get("type")
    types = {"string": str, "integer": int, "object": dict, "array": list, "boolean": bool, "number": (int, float)}
    if kind and not isinstance(value, types[kind]) or (kind == "integer" and isinstance(value, bool)):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in enum")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 10**9):
            problems.append(f"{where}: length {len(value)} out of bounds")
    if isinstance(value, dict):
        problems += [f"{where}.{name}: required" for name in schema.get("required", []) if name not in value]
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                problems += conforms(spec, sub, value[name], f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += conforms(spec, schema["items"], item, f"{where}[{index}]")
    return problems


def operation(spec: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return spec["paths"][path][method]


def response_schema(spec: dict[str, Any], op: dict[str, Any], status: int) -> dict[str, Any]:
    assert str(status) in op["responses"], f"{status} is not a documented response of {op['operationId']}"
    return op["responses"][str(status)]["content"]["application/json"]["schema"]


MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
MESSAGE = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"
CALLS = "/2010-04-01/Accounts/{AccountSid}/Calls.json"
CALL = "/2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json"


def test_contract_message_create_fetch_list(spec: dict[str, Any], client: Client, sandbox: TwilioSandbox,
                                            server: ServerHandle) -> None:
    create = operation(spec, MESSAGES, "post")
    request_props = _resolve(spec, create["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"])
    message = client.messages.create(to=TO, from_=FROM, body="spec", status_callback="https://collect.example/s")
    # Every field the official client sent is a documented request property.
    form = sandbox.message_request(message.sid)
    assert set(form) <= set(request_props["properties"]), set(form) - set(request_props["properties"])
    assert set(request_props["required"]) <= set(form)

    with http(server) as api:
        created = api.post("/Messages.json", data={"To": TO, "From": FROM, "Body": "raw"})
        schema = response_schema(spec, create, created.status_code)
        message_schema = _resolve(spec, schema)
        assert created.status_code == 201
        assert set(message_schema["properties"]) <= set(created.json())
        assert conforms(spec, schema, created.json()) == []

        sandbox.advance(10)
        fetched = api.get(f"/Messages/{message.sid}.json")
        assert conforms(spec, response_schema(spec, operation(spec, MESSAGE, "get"), fetched.status_code),
                        fetched.json()) == []

        listing = api.get("/Messages.json", params={"PageSize": 1})
        list_op = operation(spec, MESSAGES, "get")
        assert {p["name"] for p in list_op["parameters"]} >= {"To", "From", "DateSent", "DateSent<", "DateSent>",
                                                              "PageSize", "Page", "PageToken"}
        list_schema = _resolve(spec, response_schema(spec, list_op, listing.status_code))
        assert set(listing.json()) == set(list_schema["properties"])
        assert conforms(spec, list_schema, listing.json()) == []


def test_contract_call_create_fetch_list(spec: dict[str, Any], client: Client, sandbox: TwilioSandbox,
                                         server: ServerHandle) -> None:
    create = operation(spec, CALLS, "post")
    request_schema = _resolve(spec, create["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"])
    call = client.calls.create(to=TO, from_=FROM, twiml="<Response/>", machine_detection="Enable",
                               status_callback="https://collect.example/c",
                               status_callback_event=["initiated", "completed"], status_callback_method="POST")
    form = sandbox.call_request(call.sid)
    assert set(form) <= set(request_schema["properties"]), set(form) - set(request_schema["properties"])
    assert set(request_schema["required"]) <= set(form)
    assert form["StatusCallbackEvent"] == ["initiated", "completed"]  # repeated once per value

    with http(server) as api:
        created = api.post("/Calls.json", data={"To": TO, "From": FROM, "Url": "https://collect.example/v"})
        schema = response_schema(spec, create, created.status_code)
        assert set(_resolve(spec, schema)["properties"]) <= set(created.json())
        assert conforms(spec, schema, created.json()) == []
        sandbox.advance(60)
        fetched = api.get(f"/Calls/{call.sid}.json")
        assert conforms(spec, response_schema(spec, operation(spec, CALL, "get"), fetched.status_code),
                        fetched.json()) == []
        listing = api.get("/Calls.json")
        list_schema = _resolve(spec, response_schema(spec, operation(spec, CALLS, "get"), listing.status_code))
        assert set(listing.json()) == set(list_schema["properties"])
        assert conforms(spec, list_schema, listing.json()) == []


def test_contract_statuses_stay_within_the_spec_enums(spec: dict[str, Any], client: Client,
                                                      sandbox: TwilioSandbox) -> None:
    message_statuses = set(spec["components"]["schemas"]["message_enum_status"]["enum"])
    call_statuses = set(spec["components"]["schemas"]["call_enum_status"]["enum"])
    sandbox.script_sms("+14155550102", "undelivered")
    sandbox.script_call("+14155550102", "busy")
    service = sandbox.add_messaging_service(["+14155550180"])
    client.messages.create(to=TO, from_=FROM, body="x")
    client.messages.create(to="+14155550102", messaging_service_sid=service, body="x")
    client.calls.create(to=TO, from_=FROM, twiml="<Response/>")
    client.calls.create(to="+14155550102", from_=FROM, twiml="<Response/>")
    seen_messages, seen_calls = set(), set()
    for _ in range(60):
        seen_messages |= {m["status"] for m in sandbox.messages()}
        seen_calls |= {c["status"] for c in sandbox.calls()}
        sandbox.advance(1)
    assert seen_messages <= message_statuses and seen_calls <= call_statuses
    assert {"accepted", "queued", "sent", "delivered", "undelivered"} <= seen_messages
    assert {"queued", "ringing", "in-progress", "completed", "busy"} <= seen_calls
