"""The local LLM sandbox's HTTP surface: auth, completion shape, control API, default answers."""

import json

import httpx
import pytest

from agentcollect_pipeline.cli import main as cli_main
from agentcollect_pipeline.sandboxes.llm import DEFAULT_API_KEY, LLMSandbox
from agentcollect_pipeline.sandboxes.server import serve_in_thread

AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}


@pytest.fixture(scope="module")
def served():
    box = LLMSandbox()
    with serve_in_thread(box.app) as handle, httpx.Client(base_url=handle.url, timeout=5) as http:
        yield box, http


def test_auth_is_required(served):
    _, http = served
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert http.post("/v1/chat/completions", json=body).status_code == 401
    wrong = http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_completion_shape_and_bad_bodies(served):
    box, http = served
    box.reset()
    answer = http.post("/v1/chat/completions", headers=AUTH,
                       json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}).json()
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"] == {"role": "assistant", "content": "OK"}
    assert http.post("/v1/chat/completions", headers=AUTH, json={"model": "m"}).status_code == 400
    assert http.get("/v1/models", headers=AUTH).json()["data"][0]["id"] == "sandbox-drafter"


def test_control_api_scripts_and_faults(served):
    box, http = served
    box.reset()
    assert http.post("/sandbox/script", json={"answers": ["first", "second"]}).status_code == 200
    assert http.post("/sandbox/faults", json={"kind": "http_503"}).status_code == 200
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert http.post("/v1/chat/completions", headers=AUTH, json=body).status_code == 503
    contents = [http.post("/v1/chat/completions", headers=AUTH, json=body).json()["choices"][0]["message"]["content"]
                for _ in range(2)]
    assert contents == ["second", "OK"]  # the 503 request consumed "first"
    assert len(http.get("/sandbox/requests").json()["requests"]) == 3
    assert http.post("/sandbox/faults", json={"kind": "nope"}).status_code == 400
    with pytest.raises(ValueError):
        box.script({"variant": "nope"})


def test_default_classification_answer(served):
    box, http = served
    box.reset()
    content = json.dumps({"received_on": "2026-03-11", "reply": "Will pay Friday"})
    answer = http.post("/v1/chat/completions", headers=AUTH,
                       json={"model": "m", "messages": [{"role": "user", "content": content}]}).json()
    assert json.loads(answer["choices"][0]["message"]["content"])["promised_date"] == "2026-03-13"


def test_cli_knows_the_llm_sandbox(capsys):
    with pytest.raises(SystemExit):
        cli_main(["sandbox", "llm", "--help"])
    assert "chat-completions" in capsys.readouterr().out
