"""Stream shapes: which chunk of a streamed answer carries the fingerprint, model and id (every
chunk, an Azure prompt-filter chunk first, vLLM's terminal chunks, SGLang's first chunk), and
the one rule of `domain.streams` that records each of them right, through the response tap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fp_monitor.domain.models import ABSENT, NULL, Usage
from fp_monitor.domain.streams import (
    DISAGREEMENT_TAG,
    MAX_DISAGREEING,
    StreamFields,
    disagreeing,
)
from fp_monitor.traffic.recording import Exchange, Recorder, RequestInfo, ResponseTap

SSE = httpx2.Headers({"content-type": "text/event-stream"})
USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def chunk(
    fingerprint: Any = ABSENT,
    *,
    model: Any = "m-1",
    id: Any = "chatcmpl-1",
    choices: Any = "delta",
    finish: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {"id": id, "object": "chat.completion.chunk", "created": 1, **extra}
    if model is not ABSENT:
        data["model"] = model
    if choices == "delta":
        data["choices"] = [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": finish}]
    elif choices is not ABSENT:
        data["choices"] = choices
    if fingerprint is not ABSENT:
        data["system_fingerprint"] = fingerprint
    return data


def azure_filter() -> dict[str, Any]:
    """Azure OpenAI's first chunk: the prompt's content-filter results, nothing else."""
    return {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "system_fingerprint": None,
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }


def sse(*chunks: dict[str, Any]) -> bytes:
    events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return events + b"data: [DONE]\n\n"


def tapped(*chunks: dict[str, Any]) -> tuple[ResponseTap, dict[str, Any]]:
    tap = ResponseTap(SSE)
    tap.feed(sse(*chunks))
    fields = tap.finish()
    assert isinstance(fields, dict), fields
    return tap, fields


def usage_chunk(fingerprint: Any) -> dict[str, Any]:
    return chunk(fingerprint, choices=[], usage=USAGE)


SHAPES = {
    "every chunk": [chunk("fp_a"), chunk("fp_a"), chunk("fp_a", finish="stop")],
    "every chunk, usage": [
        chunk("fp_a", usage=None),
        chunk("fp_a", finish="stop", usage=None),
        usage_chunk("fp_a"),
    ],
    "azure prompt filter first": [
        azure_filter(),
        chunk("fp_a"),
        chunk("fp_a", finish="stop"),
    ],
    "azure, usage": [
        azure_filter(),
        chunk("fp_a", usage=None),
        chunk("fp_a", finish="stop", usage=None),
        usage_chunk("fp_a"),
    ],
    "vllm terminal chunk": [chunk(None), chunk(None), chunk("fp_a", finish="stop")],
    "vllm usage chunk only": [
        chunk(None, usage=None),
        chunk(None, finish="stop", usage=None),
        usage_chunk("fp_a"),
    ],
    "vllm finish and usage chunks": [
        chunk(None, usage=None),
        chunk("fp_a", finish="stop", usage=None),
        usage_chunk("fp_a"),
    ],
    "sglang first chunk": [chunk("fp_a"), chunk(None), chunk(None, finish="stop")],
    "sglang, usage": [
        chunk("fp_a", usage=None),
        chunk(None, finish="stop", usage=None),
        usage_chunk(None),
    ],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_records_the_value_the_model_and_the_id(shape: str) -> None:
    tap, fields = tapped(*SHAPES[shape])
    assert fields["fingerprint"] == "fp_a"
    assert fields["resolved_model"] == "m-1"
    assert fields["response_id"] == "chatcmpl-1"
    assert fields["usage"] == (Usage(7, 2, 9) if "usage" in shape else Usage())
    assert tap.disagreeing == ()


@pytest.mark.parametrize(
    ("shape", "decided_after"),
    [
        ("every chunk", 1),
        ("azure prompt filter first", 2),  # the filter chunk tells nothing
        ("vllm terminal chunk", 3),
        ("vllm usage chunk only", 3),
        ("sglang first chunk", 1),
    ],
)
def test_a_stream_is_judged_at_the_chunk_that_shows_its_backend(
    shape: str, decided_after: int
) -> None:
    tap = ResponseTap(SSE)
    decided = [tap.feed(sse(c).removesuffix(b"data: [DONE]\n\n")) for c in SHAPES[shape]]
    assert decided.index(True) == decided_after - 1 and decided.count(True) == 1
    assert tap.fields is not None and tap.fields["fingerprint"] == "fp_a"


def test_an_azure_filter_chunk_alone_is_decided_at_done_with_its_states() -> None:
    _, fields = tapped(azure_filter())
    assert (fields["fingerprint"], fields["resolved_model"]) == (NULL, "")
    assert fields["response_id"] is None  # an empty id is no id


@pytest.mark.parametrize(
    ("values", "token"),
    [
        ([None, None, None], NULL),  # vLLM's none mode
        ([ABSENT, ABSENT], ABSENT),
        ([ABSENT, None, ABSENT], NULL),  # null if any chunk had null
        ([None, "", None], NULL),  # null if any chunk had null
        (["", ABSENT, ""], ""),
        (["", "fp_a", ""], "fp_a"),
    ],
)
def test_without_a_value_the_state_comes_from_the_chunks(values: list[Any], token: str) -> None:
    _, fields = tapped(*(chunk(v) for v in values))
    assert fields["fingerprint"] == token


def test_chunks_that_disagree_keep_the_first_and_note_the_others() -> None:
    tap, fields = tapped(
        chunk("fp_a"), chunk("fp_b"), chunk(None), chunk("fp_a"), chunk("fp_c"), chunk("fp_b")
    )
    assert fields["fingerprint"] == "fp_a"
    assert tap.disagreeing == ("fp_b", "fp_c")


def test_the_noted_values_are_bounded() -> None:
    tap, _ = tapped(chunk("fp_first"), *(chunk(f"fp_{n}") for n in range(50)))
    assert len(tap.disagreeing) == MAX_DISAGREEING


def test_chunks_without_choices_or_with_empty_fields_never_overwrite() -> None:
    _, fields = tapped(
        chunk("fp_a", model="m-1", id="chatcmpl-1"),
        chunk(None, model="", id="", choices=[]),
        chunk(ABSENT, model=None, id=None, choices=ABSENT),  # a gateway's metadata chunk
        usage_chunk("fp_a"),
    )
    assert (fields["fingerprint"], fields["resolved_model"]) == ("fp_a", "m-1")
    assert fields["response_id"] == "chatcmpl-1" and fields["usage"] == Usage(7, 2, 9)


def test_a_chunk_without_a_choices_list_can_still_carry_the_value() -> None:
    _, fields = tapped(chunk(None), chunk("fp_meta", model="m-1", choices=ABSENT))
    assert fields["fingerprint"] == "fp_meta"


def test_an_event_that_is_no_chunk_is_not_counted() -> None:
    ping = {"type": "ping"}
    assert tapped(ping, chunk("fp_a"))[1]["fingerprint"] == "fp_a"
    tap = ResponseTap(SSE)
    tap.feed(sse(ping))
    assert tap.finish() == "the stream ended before any chat-completion chunk"


def test_an_escaped_spelling_of_the_same_value_is_no_disagreement() -> None:
    same = b'data: {"id": "c", "model": "m", "choices": [], "system_fingerprint": "fp\\u005fa"}\n\n'
    tap = ResponseTap(SSE)
    tap.feed(sse(chunk("fp_a")).removesuffix(b"data: [DONE]\n\n") + same)
    assert tap.finish()["fingerprint"] == "fp_a"  # type: ignore[index]
    assert tap.disagreeing == ()


def test_a_key_inside_a_string_is_not_a_fingerprint() -> None:
    tricky = chunk("fp_a")
    tricky["choices"][0]["delta"]["content"] = '"system_fingerprint": "fp_fake"'
    tap, fields = tapped(chunk("fp_a"), tricky, chunk(None))
    assert fields["fingerprint"] == "fp_a" and tap.disagreeing == ()


# --- the rule against a model of it --------------------------------------------------------

TOKENS = st.sampled_from(["fp_a", "fp_b", "fp_c", "", None, ABSENT])
MODELS = st.sampled_from(["m-1", "m-2", "", None, ABSENT])
CHUNKS = st.lists(
    st.tuples(TOKENS, MODELS, st.sampled_from(["c-1", "c-2", "", None]), st.booleans()),
    min_size=1,
    max_size=12,
)


def expected(values: list[Any]) -> Any:
    """The rule, written plainly: the first real value, else the strongest state seen."""
    real = [v for v in values if v not in ("", None, ABSENT)]
    if real:
        return real[0]
    for state in (None, ""):
        if state in values:
            return NULL if state is None else state
    return ABSENT


@given(CHUNKS, st.integers(min_value=1, max_value=60))
def test_the_tap_follows_the_rule_whatever_the_chunks_and_cuts(
    chunks: list[tuple[Any, Any, Any, bool]], size: int
) -> None:
    body = sse(
        *(
            chunk(fp, model=model, id=id, choices="delta" if choices else [])
            for fp, model, id, choices in chunks
        )
    )
    tap = ResponseTap(SSE)
    for start in range(0, len(body), size):
        tap.feed(body[start : start + size])
    fields = tap.finish()
    assert isinstance(fields, dict)
    assert fields["fingerprint"] == expected([c[0] for c in chunks])
    assert fields["resolved_model"] == expected([c[1] for c in chunks])
    ids = [c[2] for c in chunks if c[2]]
    assert fields["response_id"] == (ids[0] if ids else None)
    real = [c[0] for c in chunks if c[0] not in ("", None, ABSENT)]
    later = list(dict.fromkeys(v for v in real[1:] if v != real[0])) if real else []
    assert list(tap.disagreeing) == later[:MAX_DISAGREEING]


def test_stream_fields_alone() -> None:
    stream = StreamFields()
    base = {"response_id": None, "usage": Usage()}
    stream.take({**base, "fingerprint": NULL, "resolved_model": ""})
    assert not stream.complete and stream.is_known(NULL) and not stream.is_known("fp_a")
    stream.take({**base, "fingerprint": "fp_a", "resolved_model": "m"})
    assert stream.complete and stream.is_known(NULL) and stream.is_known("fp_a")
    assert not stream.is_known("fp_b")


# --- the record of a disagreement ------------------------------------------------------------


def test_the_noted_values_are_redacted_and_cut_like_every_server_string(isolated: Path) -> None:
    key = "0123456789abcdef0123456789abcdef"
    info = RequestInfo.of(
        "http://127.0.0.1:9/v1/chat/completions", b"{}", {}, [("authorization", f"Bearer {key}")]
    )
    exchange = Exchange(Recorder("app", history=isolated / "h.db"), info, 200, SSE)
    exchange.feed(sse(chunk("fp_a"), chunk(f"fp_{key}"), chunk("fp_" + "x" * 500)))
    observation = exchange.conclude()
    assert observation is not None and observation.fingerprint == "fp_a"
    noted = observation.tags[DISAGREEMENT_TAG]
    assert key not in noted
    values = json.loads(noted)
    assert values[0] == "fp_***" and len(values[1]) <= 64
    assert disagreeing(observation.tags) == tuple(values)


@pytest.mark.parametrize("tag", ["not json", '{"a": 1}', "[1, null]", '["fp_b", 2]', "[" * 10_000])
def test_a_tag_from_elsewhere_is_data(tag: str) -> None:
    """An imported record may carry anything under the tag's name."""
    shown = disagreeing({DISAGREEMENT_TAG: tag})
    assert shown == (("fp_b",) if tag == '["fp_b", 2]' else ())
