"""The fake API's stream shapes (`stream_shape`): which chunks carry the fingerprint, as the
official openai SDK receives them, with and without `stream_options.include_usage`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from fp_monitor.devtools.fake_api import ABSENT, STREAM_SHAPES, FakeAPI, ModelBehaviour

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAPI]:
    models = {
        shape: ModelBehaviour(["fp_shape00001"], resolved_model="m-1", stream_shape=shape)
        for shape in STREAM_SHAPES
    }
    models["vllm-none"] = ModelBehaviour([None], resolved_model="m-1", stream_shape="terminal")
    models["absent"] = ModelBehaviour([ABSENT], resolved_model="m-1", stream_shape="first-chunk")
    with FakeAPI(models) as api:
        yield api


def stream(fake: FakeAPI, model: str, usage: bool, strict: bool) -> list[ChatCompletionChunk]:
    client = OpenAI(
        base_url=fake.base_url, api_key="k", max_retries=0, _strict_response_validation=strict
    )
    options = {"stream_options": {"include_usage": True}} if usage else {}
    return list(
        client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **options)  # type: ignore[call-overload]
    )


# (shape, include_usage) -> which chunks carry the value; the others carry null
CARRIERS = {
    ("every-chunk", False): [True, True, True],
    ("every-chunk", True): [True, True, True, True],
    ("azure", False): [False, True, True, True],
    ("azure", True): [False, True, True, True, True],
    ("terminal", False): [False, False, True],
    ("terminal", True): [False, False, False, True],
    ("first-chunk", False): [True, False, False],
    ("first-chunk", True): [True, False, False, False],
}


@pytest.mark.parametrize(("shape", "usage"), CARRIERS)
def test_each_shape_reaches_the_sdk_as_promised(fake: FakeAPI, shape: str, usage: bool) -> None:
    # Azure's prompt-filter chunk has an empty `object`, which the SDK's strict mode refuses
    # (as it would refuse Azure's own): the SDK's default mode parses it, as it does Azure's.
    chunks = stream(fake, shape, usage, strict=shape != "azure")
    assert [c.system_fingerprint == "fp_shape00001" for c in chunks] == CARRIERS[shape, usage]
    assert {c.system_fingerprint for c in chunks} <= {"fp_shape00001", None}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    assert (chunks[-1].usage is not None) is usage
    if shape == "azure":
        first = chunks[0]
        assert (first.id, first.model, first.choices) == ("", "", [])
        assert {c.model for c in chunks[1:]} == {"m-1"}
    else:
        assert {c.model for c in chunks} == {"m-1"}


def test_none_mode_sends_null_everywhere_and_absent_stays_absent(fake: FakeAPI) -> None:
    assert {c.system_fingerprint for c in stream(fake, "vllm-none", True, strict=True)} == {None}
    with httpx2.Client(trust_env=False) as http:
        body = {"model": "absent", "messages": MESSAGES, "stream": True}
        text = http.post(fake.base_url + "/chat/completions", json=body).text
    assert "system_fingerprint" not in text


def test_an_unknown_shape_is_refused_by_name(fake: FakeAPI) -> None:
    with httpx2.Client(trust_env=False) as http:
        answer = http.post(fake.url + "/_fake/models/x", json={"stream_shape": "sometimes"})
    assert answer.status_code == 400
    assert "stream_shape: expected one of every-chunk, azure" in answer.json()["error"]["message"]
