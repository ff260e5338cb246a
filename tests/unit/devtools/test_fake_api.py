"""fake_api: faithful enough for the official SDK, and every promised behaviour and fault."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai import AzureOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from fp_monitor.devtools import fake_api
from fp_monitor.devtools.fake_api import (
    ABSENT,
    FakeAPI,
    Fault,
    ModelBehaviour,
    Rollout,
    default_fleet,
    load_config,
    serve,
)

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi"}]
KEY = "sk-test-0123456789abcdef"

Start = Callable[..., FakeAPI]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start FakeAPIs for a test and stop them after it."""
    started: list[FakeAPI] = []

    def make(models: dict[str, ModelBehaviour] | None = None, **kwargs: Any) -> FakeAPI:
        fake = FakeAPI(models, **kwargs).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx2.Client]:
    """One client for the file: building one costs ~80 ms of TLS setup."""
    with httpx2.Client(timeout=10, trust_env=False) as client:
        yield client


def sdk(fake: FakeAPI, key: str = KEY) -> OpenAI:
    # strict validation makes the SDK reject any field of the wrong type or shape
    return OpenAI(
        base_url=fake.base_url, api_key=key, max_retries=0, _strict_response_validation=True
    )


def post(
    http: httpx2.Client, fake: FakeAPI, model: str, key: str | None = None, **extra: Any
) -> httpx2.Response:
    body = {"model": model, "messages": MESSAGES, **extra}
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return http.post(fake.base_url + "/chat/completions", json=body, headers=headers)


def served(http: httpx2.Client, fake: FakeAPI, model: str, n: int) -> list[str | None]:
    return [post(http, fake, model).json().get("system_fingerprint", ABSENT) for _ in range(n)]


# --- the official SDK parses every success shape -------------------------------------------


def test_sdk_parses_a_completion_with_resolved_model_and_headers(start: Start) -> None:
    behaviour = ModelBehaviour(
        ["fp_aaaaaaaaaa"], resolved_model="gpt-4o-2024-08-06", headers={"server": "fake/1"}
    )
    fake = start({"gpt-4o": behaviour})
    raw = sdk(fake).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_completion_tokens=1
    )
    completion = raw.parse()
    assert completion.system_fingerprint == "fp_aaaaaaaaaa"
    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "Hi"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 1
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 1
    assert completion.service_tier == "default"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["openai-version"] == "2020-10-01"
    assert int(raw.headers["openai-processing-ms"]) >= 0
    assert raw.headers["server"] == "fake/1"


def test_unconfigured_model_uses_default_and_echoes_its_name(start: Start) -> None:
    fake = start(default=ModelBehaviour(["fp_dddddddddd"]))
    completion = sdk(fake).chat.completions.create(model="anything-1", messages=MESSAGES)
    assert (completion.model, completion.system_fingerprint) == ("anything-1", "fp_dddddddddd")


@pytest.mark.parametrize(("value", "parsed"), [(None, None), ("", ""), (ABSENT, None)])
def test_sdk_parses_null_empty_and_absent(start: Start, value: str | None, parsed: Any) -> None:
    fake = start({"m": ModelBehaviour([value])})
    raw = sdk(fake).chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.parse().system_fingerprint == parsed
    body = json.loads(raw.text)
    if value == ABSENT:
        assert "system_fingerprint" not in body
    else:
        assert body["system_fingerprint"] == value


def test_sdk_stream_carries_the_fingerprint_on_every_chunk(start: Start) -> None:
    fake = start({"m": ModelBehaviour(["fp_aaaaaaaaaa", "fp_bbbbbbbbbb"], resolved_model="m-1")})
    client = sdk(fake)
    client.chat.completions.create(model="m", messages=MESSAGES)  # the stream gets the 2nd value
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert len(chunks) == 4
    assert {c.system_fingerprint for c in chunks} == {"fp_bbbbbbbbbb"}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {"m-1"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    assert [c.usage is not None for c in chunks] == [False, False, False, True]


def test_stream_with_absent_fingerprint_omits_the_key_on_every_chunk(
    start: Start, http: httpx2.Client
) -> None:
    fake = start({"m": ModelBehaviour([ABSENT])})
    response = post(http, fake, "m", stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len(chunks) == 3  # no usage chunk without include_usage
    assert not any("system_fingerprint" in chunk for chunk in chunks)


def test_azure_client_reaches_the_deployment(start: Start) -> None:
    fake = start({"prod-4o": ModelBehaviour(["fp_azure0001"])}, api_keys=[KEY])
    client = AzureOpenAI(
        azure_endpoint=fake.url, api_key=KEY, api_version="2024-10-21", max_retries=0
    )
    completion = client.chat.completions.create(model="prod-4o", messages=MESSAGES)
    assert completion.system_fingerprint == "fp_azure0001"
    assert completion.model == "prod-4o"
    (request,) = fake.requests()
    assert request.path == "/openai/deployments/prod-4o/chat/completions"
    assert request.query == "api-version=2024-10-21"
    assert (request.model, request.auth, request.key_ok) == ("prod-4o", "api-key", True)
    assert "api-key" not in request.headers


def test_azure_without_api_version_is_not_found(start: Start, http: httpx2.Client) -> None:
    fake = start()
    response = http.post(
        fake.url + "/openai/deployments/d/chat/completions", json={"messages": MESSAGES}
    )
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_sdk_lists_models(start: Start) -> None:
    fake = start(default_fleet())
    assert sorted(m.id for m in sdk(fake).models.list()) == sorted(default_fleet())


def test_default_fleet_is_realistic(start: Start, http: httpx2.Client) -> None:
    fake = start(default_fleet())
    assert set(served(http, fake, "gpt-4o-mini", 6)) == {
        "fp_0ba0d124f1",
        "fp_560af6e559",
        "fp_b8bc95a0ac",
    }
    assert post(http, fake, "gpt-4o-mini").json()["model"] == "gpt-4o-mini-2024-07-18"
    assert post(http, fake, "grok-4").json()["model"] == "grok-4-0709"
    assert len(set(served(http, fake, "grok-4", 4))) == 2
    assert served(http, fake, "legacy", 1) == [None]
    assert served(http, fake, "claude-sonnet-4", 1) == [ABSENT]
    assert post(http, fake, "o4-mini", max_tokens=1).status_code == 400


# --- auth and request validation ------------------------------------------------------------


def test_wrong_key_is_rejected_with_the_key_masked(start: Start) -> None:
    fake = start(api_keys=[KEY])
    wrong = "sk-wrong-key-123456wxyz"
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(fake, key=wrong).chat.completions.create(model="m", messages=MESSAGES)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "invalid_api_key"
    assert f"sk-{'*' * (len(wrong) - 7)}wxyz." in error["message"]
    assert wrong not in error["message"]
    (request,) = fake.requests()
    assert (request.auth, request.key_ok) == ("bearer", False)
    assert "authorization" not in request.headers


def test_echo_key_in_errors_shows_the_whole_key(start: Start) -> None:
    fake = start(api_keys=[KEY], echo_key_in_errors=True)
    with pytest.raises(openai.AuthenticationError, match="sk-wrong-key-123456wxyz"):
        sdk(fake, key="sk-wrong-key-123456wxyz").models.list()


def test_missing_key_is_rejected(start: Start, http: httpx2.Client) -> None:
    fake = start(api_keys=[KEY])
    response = post(http, fake, "m")
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith("You didn't provide an API key.")
    assert fake.requests()[0].auth is None


def test_right_key_in_either_header_is_accepted(start: Start, http: httpx2.Client) -> None:
    fake = start(api_keys=["k1", KEY])
    body = {"model": "m", "messages": MESSAGES}
    url = fake.base_url + "/chat/completions"
    assert http.post(url, json=body, headers={"authorization": f"Bearer {KEY}"}).is_success
    assert http.post(url, json=body, headers={"api-key": KEY}).is_success
    assert [(r.auth, r.key_ok) for r in fake.requests()] == [("bearer", True), ("api-key", True)]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{not json", None, None),
        (b"[]", None, None),
        (json.dumps({"messages": MESSAGES}).encode(), None, None),
        (json.dumps({"model": 4, "messages": MESSAGES}).encode(), "model", "invalid_type"),
        (json.dumps({"model": "m"}).encode(), "messages", "missing_required_parameter"),
        (json.dumps({"model": "m", "messages": "hi"}).encode(), "messages", "invalid_type"),
        (json.dumps({"model": "m", "messages": []}).encode(), "messages", "empty_array"),
    ],
)
def test_malformed_requests_get_openai_400s(
    start: Start, http: httpx2.Client, body: bytes, param: str | None, code: str | None
) -> None:
    fake = start()
    response = http.post(
        fake.base_url + "/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)
    assert error["message"]


def test_reasoning_model_rejects_max_tokens_and_temperature(start: Start) -> None:
    fake = start({"o4-mini": ModelBehaviour(["fp_reason0001"], reasoning=True)})
    client = sdk(fake)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="o4-mini", messages=MESSAGES, max_tokens=1)
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == "max_tokens"
    assert "Use 'max_completion_tokens' instead." in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="o4-mini", messages=MESSAGES, temperature=0)
    assert caught.value.code == "unsupported_value"
    assert "'temperature' does not support 0 with this model" in caught.value.message
    ok = client.chat.completions.create(
        model="o4-mini", messages=MESSAGES, max_completion_tokens=1, temperature=1
    )
    assert ok.system_fingerprint == "fp_reason0001"
    assert ok.choices[0].message.content == ""  # the one token went to reasoning


def test_unknown_route_is_not_found(start: Start, http: httpx2.Client) -> None:
    fake = start()
    response = http.get(fake.base_url + "/chat/completions")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /v1/chat/completions)"


def test_path_without_v1_prefix_is_served(start: Start, http: httpx2.Client) -> None:
    fake = start({"m": ModelBehaviour(["fp_novprefix1"])})
    body = {"model": "m", "messages": MESSAGES}
    response = http.post(fake.url + "/chat/completions", json=body)
    assert response.json()["system_fingerprint"] == "fp_novprefix1"


# --- fingerprint choice ---------------------------------------------------------------------


def test_round_robin_is_exact_under_concurrency(start: Start, http: httpx2.Client) -> None:
    values: list[str | None] = ["fp_a", "fp_b", None, ABSENT]
    fake = start({"m": ModelBehaviour(values)})
    results: list[str | None] = []

    def worker() -> None:
        results.extend(served(http, fake, "m", 50))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(results) == dict.fromkeys(values, 50)


def test_round_robin_serves_in_turn_and_by_weight(start: Start, http: httpx2.Client) -> None:
    fake = start(
        {
            "turns": ModelBehaviour(["a", "b", "c"]),
            "weighted": ModelBehaviour(["a", "b"], weights=[3, 1]),
        }
    )
    assert served(http, fake, "turns", 6) == ["a", "b", "c", "a", "b", "c"]
    assert served(http, fake, "weighted", 8) == ["a", "a", "b", "a"] * 2


def test_weighted_random_shares_are_seeded(start: Start, http: httpx2.Client) -> None:
    behaviour = ModelBehaviour(["a", "b", "c"], mode="random", weights=[0.7, 0.2, 0.1], seed=7)
    fake = start({"m": behaviour})
    first = served(http, fake, "m", 2000)
    shares = {value: count / len(first) for value, count in Counter(first).items()}
    assert shares == pytest.approx({"a": 0.7, "b": 0.2, "c": 0.1}, abs=0.03)
    fake.set_model("m", behaviour)  # restarts the generator
    assert served(http, fake, "m", 50) == first[:50]


def test_rollout_starts_after_n_requests(start: Start, http: httpx2.Client) -> None:
    rollout = Rollout("fp_new", share=0.5, after_requests=4)
    fake = start({"m": ModelBehaviour(["fp_old"], rollouts=[rollout])})
    assert served(http, fake, "m", 8) == ["fp_old"] * 4 + ["fp_old", "fp_new"] * 2


def test_rollout_starts_after_seconds(start: Start, http: httpx2.Client) -> None:
    rollout = Rollout(None, share=1.0, after_seconds=0.5)
    fake = start({"m": ModelBehaviour(["fp_old"], rollouts=[rollout])})
    assert served(http, fake, "m", 2) == ["fp_old", "fp_old"]
    time.sleep(0.5)
    assert served(http, fake, "m", 2) == [None, None]


def test_rotate_keeps_other_settings(start: Start, http: httpx2.Client) -> None:
    fake = start({"m": ModelBehaviour(["fp_a"], resolved_model="m-2025")})
    assert served(http, fake, "m", 1) == ["fp_a"]
    fake.rotate("m", ["fp_b", ""])
    assert served(http, fake, "m", 4) == ["fp_b", "", "fp_b", ""]
    assert post(http, fake, "m").json()["model"] == "m-2025"


def test_reset_clears_counters_faults_and_log(start: Start, http: httpx2.Client) -> None:
    fake = start({"m": ModelBehaviour(["fp_a", "fp_b"])})
    assert served(http, fake, "m", 1) == ["fp_a"]
    fake.add_faults([Fault("status", status=500)])
    fake.reset()
    assert fake.requests() == []
    assert served(http, fake, "m", 2) == ["fp_a", "fp_b"]


# --- faults ---------------------------------------------------------------------------------


def test_rate_limit_fault_raises_rate_limit_error_once(start: Start) -> None:
    fake = start({"m": ModelBehaviour(["fp_a"])})
    fake.add_faults([Fault("status", status=429, headers={"retry-after-ms": "10"})])
    client = sdk(fake)
    with pytest.raises(openai.RateLimitError, match=r"Please try again in 6\.596s\.") as caught:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.response.headers["retry-after-ms"] == "10"
    assert client.chat.completions.create(model="m", messages=MESSAGES).system_fingerprint == "fp_a"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, None, {"message": "The server had an error while processing your request."}),
        (503, None, {"code": 503, "message": "Loading model", "type": "unavailable_error"}),
        (502, {"detail": "custom"}, None),
    ],
)
def test_status_fault_bodies(
    start: Start, http: httpx2.Client, status: int, body: Any, expected: dict[str, Any] | None
) -> None:
    fake = start()
    fake.add_faults([Fault("status", status=status, body=body)])
    response = post(http, fake, "m")
    assert response.status_code == status
    if expected is None:
        assert response.json() == body
    else:
        error = response.json()["error"]
        for key, value in expected.items():
            assert str(error[key]).startswith(str(value))


def test_status_fault_with_text_body(start: Start, http: httpx2.Client) -> None:
    fake = start()
    fake.add_faults([Fault("status", status=418, body="no tea")])
    response = post(http, fake, "m")
    assert (response.status_code, response.text) == (418, "no tea")
    assert response.headers["content-type"].startswith("text/plain")


def test_html_fault(start: Start, http: httpx2.Client) -> None:
    fake = start()
    fake.add_faults([Fault("html")])
    response = post(http, fake, "m")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text


def test_truncated_fault_is_json_cut_with_honest_length(start: Start, http: httpx2.Client) -> None:
    fake = start()
    fake.add_faults([Fault("truncated")])
    response = post(http, fake, "m")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content) > 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_not_chat_fault(start: Start, http: httpx2.Client) -> None:
    fake = start()
    fake.add_faults([Fault("not_chat")])
    response = post(http, fake, "m")
    assert response.status_code == 200
    assert "choices" not in response.json()


@pytest.mark.parametrize("kind", ["drop", "drop_mid_body"])
def test_dropped_connections_are_connection_errors(
    start: Start, http: httpx2.Client, kind: str
) -> None:
    fake = start()
    fake.add_faults([Fault(kind)])
    with pytest.raises(httpx2.TransportError):
        post(http, fake, "m")
    assert post(http, fake, "m").is_success  # the server survives


def test_drop_is_an_sdk_connection_error(start: Start) -> None:
    fake = start()
    fake.add_faults([Fault("drop")])
    with pytest.raises(openai.APIConnectionError):
        sdk(fake).chat.completions.create(model="m", messages=MESSAGES)


def test_redirect_fault(start: Start, http: httpx2.Client) -> None:
    fake = start()
    fake.add_faults([Fault("redirect", location="http://127.0.0.1:9/v1/chat/completions")])
    response = post(http, fake, "m")
    assert response.status_code == 307
    assert response.headers["location"] == "http://127.0.0.1:9/v1/chat/completions"


def test_slow_fault_delays_a_normal_answer(start: Start, http: httpx2.Client) -> None:
    fake = start({"m": ModelBehaviour(["fp_a"])})
    fake.add_faults([Fault("slow", delay=0.3)])
    began = time.monotonic()
    response = post(http, fake, "m")
    assert time.monotonic() - began >= 0.3
    assert response.json()["system_fingerprint"] == "fp_a"


def test_latency_delays_every_answer(start: Start, http: httpx2.Client) -> None:
    fake = start({"m": ModelBehaviour(latency=0.2)})
    began = time.monotonic()
    served(http, fake, "m", 2)
    assert time.monotonic() - began >= 0.4


def test_stream_delay_spaces_the_events_of_a_stream(start: Start, http: httpx2.Client) -> None:
    fake = start({"m": ModelBehaviour(["fp_a"], stream_delay=0.15)})
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    arrivals, events = [], []
    began = time.monotonic()
    with http.stream("POST", fake.base_url + "/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line:
                arrivals.append(time.monotonic() - began)
                events.append(line)
    assert events[-1] == "data: [DONE]" and len(events) == 4
    assert arrivals[0] < 0.15 * 0.9  # the first event is not held back
    assert all(at >= n * 0.15 * 0.95 for n, at in enumerate(arrivals)), arrivals  # nor rushed
    assert post(http, fake, "m").json()["system_fingerprint"] == "fp_a"  # no delay unstreamed


def test_drip_fault_sends_a_normal_answer_slowly(start: Start, http: httpx2.Client) -> None:
    fake = start({"m": ModelBehaviour(["fp_a"])})
    fake.add_faults([Fault("drip", delay=0.001)])
    began = time.monotonic()
    response = post(http, fake, "m")
    assert time.monotonic() - began >= len(response.content) * 0.001
    assert response.json()["system_fingerprint"] == "fp_a"


def test_drip_stops_when_the_client_leaves(start: Start, http: httpx2.Client) -> None:
    fake = start()
    before = set(threading.enumerate())
    fake.add_faults([Fault("drip", delay=0.05)])  # the whole answer would take ~40 s
    request = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    with socket.create_connection(("127.0.0.1", int(fake.url.rsplit(":", 1)[1]))) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(request), request)
        )
        assert conn.recv(100).startswith(b"HTTP/1.1 200")
    (handler,) = set(threading.enumerate()) - before
    handler.join(timeout=3)
    assert not handler.is_alive()
    assert post(http, fake, "m").is_success


def test_huge_fault_is_a_10_mb_completion(start: Start) -> None:
    fake = start({"m": ModelBehaviour(["fp_a"])})
    fake.add_faults([Fault("huge")])
    completion = sdk(fake).chat.completions.create(model="m", messages=MESSAGES)
    assert len(completion.choices[0].message.content or "") >= 10_000_000
    assert completion.system_fingerprint == "fp_a"


def test_model_scoped_fault_waits_for_its_model(start: Start, http: httpx2.Client) -> None:
    fake = start()
    fake.add_faults([Fault("status", status=500, model="b")])
    assert post(http, fake, "a").status_code == 200
    assert post(http, fake, "a").status_code == 200
    assert post(http, fake, "b").status_code == 500
    assert post(http, fake, "b").status_code == 200


def test_faults_apply_times_in_fifo_order(start: Start, http: httpx2.Client) -> None:
    fake = start()
    fake.add_faults([Fault("status", status=500, times=2), Fault("status", status=503)])
    assert [post(http, fake, "m").status_code for _ in range(4)] == [500, 500, 503, 200]


def test_failed_requests_are_recorded(start: Start, http: httpx2.Client) -> None:
    fake = start(api_keys=[KEY])
    fake.add_faults([Fault("drop")])
    with pytest.raises(httpx2.TransportError):
        post(http, fake, "m")
    post(http, fake, "m")
    http.get(fake.url + "/_fake/requests")  # admin calls are not recorded
    first, second = fake.requests()
    assert (first.method, first.path, first.model) == ("POST", "/v1/chat/completions", "m")
    assert first.body == {"model": "m", "messages": MESSAGES}
    assert (second.auth, second.key_ok) == (None, False)
    assert first.at <= second.at


def test_stop_ends_kept_alive_connections(start: Start, http: httpx2.Client) -> None:
    fake = start()
    url = fake.base_url + "/chat/completions"
    assert http.post(url, json={"model": "m", "messages": MESSAGES}).is_success
    fake.stop()
    with pytest.raises(httpx2.TransportError):
        http.post(url, json={"model": "m", "messages": MESSAGES})


# --- admin API, config file and serve() -----------------------------------------------------


def test_admin_endpoints_drive_the_server(start: Start, http: httpx2.Client) -> None:
    fake = start()
    behaviour = ModelBehaviour(["fp_a", None], resolved_model="m-1", rollouts=[Rollout("x", 1)])
    assert http.post(fake.url + "/_fake/models/org/m", json=asdict(behaviour)).json() == {
        "ok": True
    }
    assert post(http, fake, "org/m").json()["model"] == "m-1"
    assert served(http, fake, "org/m", 1) == ["x"]
    http.post(fake.url + "/_fake/models/m", json={"fingerprints": ["fp_a", "<null>"]})
    assert served(http, fake, "m", 2) == ["fp_a", None]
    http.post(fake.url + "/_fake/rotate", json={"model": "m", "fingerprints": ["<absent>"]})
    assert served(http, fake, "m", 1) == [ABSENT]
    http.post(fake.url + "/_fake/faults", json=[{"kind": "status", "status": 429, "model": "m"}])
    assert post(http, fake, "m").status_code == 429
    log = http.get(fake.url + "/_fake/requests").json()
    assert [entry["model"] for entry in log] == ["org/m", "org/m", "m", "m", "m", "m"]
    assert log[-1]["body"]["messages"] == MESSAGES
    http.post(fake.url + "/_fake/reset")
    assert http.get(fake.url + "/_fake/requests").json() == []


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/_fake/models/m", {"fingerprint": ["a"]}, "unknown key 'fingerprint'"),
        ("/_fake/models/m", {"weights": [1.0, 2.0]}, "weights: expected one"),
        ("/_fake/faults", [{"kind": "explode"}], "faults[0].kind: expected one of"),
        ("/_fake/faults", [{"kind": "slow", "delay": "1s"}], "faults[0].delay: expected a number"),
        ("/_fake/rotate", {"fingerprints": []}, "model: missing"),
    ],
)
def test_admin_rejects_bad_input(
    start: Start, http: httpx2.Client, path: str, body: Any, message: str
) -> None:
    fake = start()
    response = http.post(fake.url + path, json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def documented_toml() -> str:
    """The example in the module docstring, so that the documentation cannot rot."""
    assert fake_api.__doc__ is not None
    return textwrap.dedent(fake_api.__doc__.rsplit("::\n", 1)[1])


def test_load_config_reads_the_documented_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: httpx2.Client
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    path = tmp_path / "fake.toml"
    path.write_text(documented_toml())
    expected = ModelBehaviour(
        ["fp_aaaaaaaaaa", "fp_bbbbbbbbbb"],
        resolved_model="gpt-4o-2024-08-06",
        mode="random",
        weights=[0.8, 0.2],
        seed=1,
        latency=0.05,
        stream_delay=0.1,
        headers={"server": "fake/1"},
        rollouts=[Rollout("fp_cccccccccc", 0.2, after_requests=100)],
        noise=0.02,
        outliers=0.01,
        outlier_scale=5.0,
        numerics=0.1,
        logprobs="supported",
        perturbations={"0": 10.0},
    )
    configured = load_config(path)
    assert configured._models == {"gpt-4o": expected}
    assert configured._default == ModelBehaviour(["fp_0000000001"])
    with configured:
        assert configured.url.startswith("http://127.0.0.1:")
        assert post(http, configured, "gpt-4o").status_code == 401
        response = post(http, configured, "gpt-4o", key=KEY)
        assert response.json()["model"] == "gpt-4o-2024-08-06"
        assert response.headers["server"] == "fake/1"
        other = post(http, configured, "other", key=KEY)
        assert other.json()["system_fingerprint"] == "fp_0000000001"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[models."gpt-4o"]\nfingerprint = ["a"]', "unknown key 'fingerprint' (did you mean"),
        ('[models."gpt-4.1"]\nlatency = "fast"', 'models."gpt-4.1".latency: expected a number'),
        ("[models.m]\nseed = true", "models.m.seed: expected an integer"),
        ('[models.m]\nmode = "sticky"', "models.m.mode: expected 'round-robin' or 'random'"),
        ("[models.m]\nrollouts = [{ share = 0.2 }]", "models.m.rollouts[0].fingerprint: missing"),
        ("port = 80.5", "port: expected an integer"),
        ("[models.m\n", "fake.toml: "),
        ('api_keys_env = ["FPMON_TEST_UNSET_VARIABLE"]', "FPMON_TEST_UNSET_VARIABLE is not set"),
    ],
)
def test_load_config_errors_name_the_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "fake.toml"
    path.write_text(toml)
    with pytest.raises(ValueError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_serve_runs_quietly_until_sigterm(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    code = (
        "from fp_monitor.devtools.fake_api import FakeAPI, serve\n"
        "serve(FakeAPI(), lambda url: print(url, flush=True))\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        body = {"model": "m", "messages": MESSAGES}
        response = httpx2.post(base_url + "/chat/completions", json=body, trust_env=False)
        assert response.json()["system_fingerprint"] == "fp_fake000001"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr.read() == ""  # no access log


def test_serve_calls_on_ready_then_stops_on_interrupt() -> None:
    fake = FakeAPI()
    ready: list[str] = []

    def on_ready(base_url: str) -> None:
        ready.append(base_url)
        raise KeyboardInterrupt  # what Ctrl-C does while serve() waits

    serve(fake, on_ready)
    assert ready[0].endswith("/v1")
    with pytest.raises(RuntimeError):
        fake.url  # noqa: B018 - stopped: there is no URL any more
