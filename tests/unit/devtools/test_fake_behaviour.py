"""The fake API's behaviour for the canary: top logprobs in OpenAI's shape (the official SDK
parses every shape strictly), noise between responses, configurations under one fingerprint,
sampling at a temperature, the two failure shapes, and the silent perturbation."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterator

import httpx2
import openai
import pytest
from openai import OpenAI

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour

MESSAGES = [{"role": "user", "content": "Name a colour. One word."}]


@pytest.fixture
def fake() -> Iterator[FakeAPI]:
    with FakeAPI(
        {
            "m": ModelBehaviour(["fp_one"], resolved_model="m-1", noise=0.02, seed=1),
            "pair": ModelBehaviour(["fp_one", "fp_one"], numerics=0.5, noise=0.0, seed=1),
            "rejects": ModelBehaviour(["fp_r"], logprobs="rejected"),
            "ignores": ModelBehaviour(["fp_i"], logprobs="ignored"),
            "o-think": ModelBehaviour(["fp_o"], reasoning=True),
        }
    ) as api:
        yield api


def sdk(fake: FakeAPI) -> OpenAI:
    return OpenAI(
        base_url=fake.base_url, api_key="k", max_retries=0, _strict_response_validation=True
    )


def top(fake: FakeAPI, model: str = "m", **extra: object) -> dict[str, float]:
    completion = sdk(fake).chat.completions.create(
        model=model,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=1,
        logprobs=True,
        top_logprobs=20,
        **extra,  # type: ignore[arg-type]
    )
    assert completion.choices[0].logprobs is not None
    content = completion.choices[0].logprobs.content
    assert content is not None
    return {t.token: t.logprob for t in content[0].top_logprobs}


def test_the_sdk_parses_top_logprobs(fake: FakeAPI) -> None:
    completion = sdk(fake).chat.completions.create(
        model="m",
        messages=MESSAGES,
        max_tokens=1,
        logprobs=True,
        top_logprobs=20,  # type: ignore[arg-type]
    )
    choice = completion.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    (first,) = choice.logprobs.content
    assert first.token == choice.message.content  # the answer is the sampled first token
    assert len(first.top_logprobs) == 20
    values = [t.logprob for t in first.top_logprobs]
    assert values == sorted(values, reverse=True) and values[0] < 0
    assert first.top_logprobs[0].bytes == list(first.top_logprobs[0].token.encode())
    assert completion.system_fingerprint == "fp_one" and completion.model == "m-1"


def test_the_sdk_parses_logprobs_in_a_stream(fake: FakeAPI) -> None:
    chunks = list(
        sdk(fake).chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=1,
            logprobs=True,
            top_logprobs=5,
            stream=True,
        )
    )
    with_logprobs = [c for c in chunks if c.choices and c.choices[0].logprobs is not None]
    assert len(with_logprobs) == 1
    content = with_logprobs[0].choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content[0].top_logprobs) == 5


def test_logprobs_without_top_logprobs_has_an_empty_top_list(fake: FakeAPI) -> None:
    completion = sdk(fake).chat.completions.create(
        model="m",
        messages=MESSAGES,
        max_tokens=1,
        logprobs=True,  # type: ignore[arg-type]
    )
    assert completion.choices[0].logprobs is not None
    content = completion.choices[0].logprobs.content
    assert content is not None and content[0].top_logprobs == []


def test_a_plain_request_still_answers_hi(fake: FakeAPI) -> None:
    completion = sdk(fake).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Hi"
    assert completion.choices[0].logprobs is None


def test_responses_differ_by_the_noise_and_are_deterministic_per_prompt(fake: FakeAPI) -> None:
    first, second = top(fake), top(fake)
    shared = set(first) & set(second)
    gaps = [abs(first[t] - second[t]) for t in shared]
    assert 0 < statistics.mean(gaps) < 0.1  # noise 0.02 on each logit
    other_prompt = sdk(fake).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Name an animal."}],
        max_tokens=1,
        logprobs=True,
        top_logprobs=20,
    )
    assert other_prompt.choices[0].logprobs is not None
    content = other_prompt.choices[0].logprobs.content
    assert content is not None
    assert [t.token for t in content[0].top_logprobs][:5] != list(first)[:5]


def test_two_configurations_under_one_fingerprint_differ_in_numerics(fake: FakeAPI) -> None:
    a, b = top(fake, "pair"), top(fake, "pair")  # round-robin: one of each, no noise
    assert a != b and a == top(fake, "pair")
    gaps = [abs(a[t] - b[t]) for t in set(a) & set(b)]
    assert statistics.mean(gaps) > 0.1


def test_sampling_follows_the_temperature(fake: FakeAPI) -> None:
    client = sdk(fake)

    def tokens(temperature: float) -> Counter[str]:
        return Counter(
            client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                max_tokens=1,
                temperature=temperature,  # type: ignore[arg-type]
            )
            .choices[0]
            .message.content
            or ""
            for _ in range(40)
        )

    assert len(tokens(0)) == 1  # greedy
    assert len(tokens(1.0)) > 3  # the uncertain first token the canary wants


def test_a_provider_that_rejects_logprobs(fake: FakeAPI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        top(fake, "rejects")
    assert caught.value.status_code == 400
    assert "logprobs" in caught.value.message
    assert sdk(fake).chat.completions.create(model="rejects", messages=MESSAGES)  # type: ignore[arg-type]


def test_a_provider_that_ignores_logprobs(fake: FakeAPI) -> None:
    completion = sdk(fake).chat.completions.create(
        model="ignores",
        messages=MESSAGES,
        max_tokens=1,
        logprobs=True,
        top_logprobs=20,  # type: ignore[arg-type]
    )
    assert completion.choices[0].logprobs is None
    assert completion.choices[0].message.content  # a visible sampled token all the same


def test_a_reasoning_model_rejects_logprobs(fake: FakeAPI) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk(fake).chat.completions.create(
            model="o-think",
            messages=MESSAGES,
            max_completion_tokens=1,
            logprobs=True,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("value", [21, -1, "5", True])
def test_top_logprobs_out_of_range_is_a_400(fake: FakeAPI, value: object) -> None:
    response = httpx2.post(
        fake.base_url + "/chat/completions",
        json={"model": "m", "messages": MESSAGES, "logprobs": True, "top_logprobs": value},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "top_logprobs"


def test_a_silent_perturbation_keeps_the_fingerprint(fake: FakeAPI) -> None:
    quiet = FakeAPI({"z": ModelBehaviour(["fp_z"], noise=0.02, seed=3)})
    with quiet:
        before = [top(quiet, "z") for _ in range(5)]
        response = httpx2.post(
            quiet.url + "/_fake/perturb", json={"model": "z", "configuration": 0, "size": 50}
        )
        assert response.status_code == 200
        after = [top(quiet, "z") for _ in range(5)]
        completion = sdk(quiet).chat.completions.create(model="z", messages=MESSAGES)  # type: ignore[arg-type]
        assert completion.system_fingerprint == "fp_z"
        bad = httpx2.post(
            quiet.url + "/_fake/perturb", json={"model": "z", "configuration": 3, "size": 1}
        )
        assert bad.status_code == 400 and "configuration" in bad.json()["error"]["message"]

    def spread(a: dict[str, float], b: dict[str, float]) -> float:
        return statistics.mean(abs(a[t] - b[t]) for t in set(a) & set(b))

    within = statistics.mean(spread(before[0], b) for b in before[1:])
    across = statistics.mean(spread(before[0], a) for a in after)
    assert across > 10 * within  # 50x the noise on each logit
