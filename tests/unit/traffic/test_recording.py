"""recording: the response tap (streams parsed as they pass, in bounded memory), tags,
check_response, and what one recorded response looks like."""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
import time
import zlib
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fp_monitor.config.providers import provider_for_url
from fp_monitor.domain.errors import ConfigError, UnexpectedFingerprint
from fp_monitor.domain.models import ABSENT, NULL, LockEntry, Observation, Usage
from fp_monitor.store.history import History
from fp_monitor.store.lockfile import write_lock
from fp_monitor.traffic import recording
from fp_monitor.traffic.recording import (
    MAX_EVENT_BYTES,
    Exchange,
    Recorder,
    RequestInfo,
    ResponseTap,
    check_response,
    is_chat_completion,
    parse_tags,
)

SSE = {"content-type": "text/event-stream; charset=utf-8"}
JSON = {"content-type": "application/json"}


def chunk(fingerprint: Any = "fp_a", content: str = "Hi", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m-1",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
        **extra,
    }
    if fingerprint is not ABSENT:
        data["system_fingerprint"] = fingerprint
    return data


def sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return events + (b"data: [DONE]\n\n" if done else b"")


def completion(fingerprint: Any = "fp_a") -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1,
        "model": "m-1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    if fingerprint is not ABSENT:
        data["system_fingerprint"] = fingerprint
    return data


def tap_all(headers: dict[str, str], *pieces: bytes) -> tuple[ResponseTap, Any]:
    tap = ResponseTap(httpx2.Headers(headers))
    for piece in pieces:
        tap.feed(piece)
    return tap, tap.finish()


# --- streams ------------------------------------------------------------------------------


def test_a_stream_gives_the_first_chunks_fields_and_the_last_usage() -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    body = sse(
        chunk(content="", usage=None),
        chunk(content="Hi", usage=None),
        {**chunk(), "choices": [], "usage": usage},
    )
    _, fields = tap_all(SSE, body)
    assert fields["fingerprint"] == "fp_a"
    assert fields["resolved_model"] == "m-1"
    assert fields["response_id"] == "chatcmpl-1"
    assert fields["usage"] == Usage(7, 2, 9)


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_a_stream_cut_anywhere_gives_the_same_record(cuts: list[int]) -> None:
    body = sse(chunk("fp_a", content="é\r\n"), chunk("fp_a"), {**chunk(), "usage": None})
    pieces, rest = [], body
    for size in cuts:
        pieces.append(rest[:size])
        rest = rest[size:]
    _, whole = tap_all(SSE, body)
    _, cut = tap_all(SSE, *pieces, rest)
    assert cut == whole


def test_feed_says_when_the_fingerprint_shows_first() -> None:
    tap = ResponseTap(httpx2.Headers(SSE))
    first = b"data: " + json.dumps(chunk("fp_a")).encode()
    assert tap.feed(first[:30]) is False
    assert tap.feed(first[30:]) is False  # the event is not complete before its blank line
    assert tap.feed(b"\n\n") is True
    assert tap.fields is not None and tap.fields["fingerprint"] == "fp_a"
    assert tap.feed(sse(chunk("fp_a"))) is False  # only the first time


def test_crlf_lines_multiline_data_and_other_fields_are_understood() -> None:
    data = json.dumps(chunk("fp_crlf"), indent=1).encode().split(b"\n")
    event = b"".join(b"data: " + line + b"\r\n" for line in data)
    body = b": keep-alive comment\r\nevent: message\r\nid: 1\r\n" + event + b"\r\n"
    _, fields = tap_all(SSE, body, b"data: [DONE]\r\n\r\n")
    assert fields["fingerprint"] == "fp_crlf"


@pytest.mark.parametrize(("value", "token"), [(None, NULL), ("", ""), (ABSENT, ABSENT)])
def test_null_empty_and_absent_fingerprints_of_a_stream(value: Any, token: str) -> None:
    _, fields = tap_all(SSE, sse(chunk(value), chunk(value)))
    assert fields["fingerprint"] == token


def test_a_later_chunk_that_carries_the_key_decides() -> None:
    # some providers leave the fingerprint out of the first chunks
    tap = ResponseTap(httpx2.Headers(SSE))
    assert tap.feed(sse(chunk(ABSENT), done=False)) is False
    assert tap.feed(sse(chunk("fp_late"), done=False)) is True
    assert tap.finish()["fingerprint"] == "fp_late"


def test_an_error_event_or_an_empty_stream_is_not_a_completion() -> None:
    error = {"error": {"message": "overloaded", "type": "server_error"}}
    assert "overloaded" in tap_all(SSE, sse(error))[1]
    assert "before any chat-completion chunk" in tap_all(SSE, b"")[1]


def test_a_stream_cut_before_its_blank_line_still_counts() -> None:
    body = b"data: " + json.dumps(chunk("fp_cut")).encode()
    assert tap_all(SSE, body)[1]["fingerprint"] == "fp_cut"


def test_memory_stays_bounded_however_long_the_stream() -> None:
    tap = ResponseTap(httpx2.Headers(SSE))
    tap.feed(sse(chunk("fp_a"), done=False))
    token = sse(chunk("fp_a", content="x" * 200), done=False)
    for _ in range(20_000):  # 6 MB of tokens
        tap.feed(token)
    assert len(tap._line) < len(token) and len(tap._body) == 0 and tap._event == []
    huge_line = b"data: " + b"y" * (3 * MAX_EVENT_BYTES)
    for start in range(0, len(huge_line), 65536):
        tap.feed(huge_line[start : start + 65536])
        assert len(tap._line) <= MAX_EVENT_BYTES
    tap.feed(b"\n\n" + sse({**chunk(), "choices": [], "usage": {"total_tokens": 3}}))
    fields = tap.finish()
    assert fields["fingerprint"] == "fp_a" and fields["usage"] == Usage(total_tokens=3)


def test_compressed_bodies_are_decoded() -> None:
    body = sse(chunk("fp_gz"))
    compressor = zlib.compressobj(wbits=31)
    packed = compressor.compress(body) + compressor.flush()
    gz_stream = {**SSE, "content-encoding": "gzip"}
    assert tap_all(gz_stream, packed[:10], packed[10:])[1]["fingerprint"] == "fp_gz"
    deflated = {**JSON, "content-encoding": "deflate"}
    assert tap_all(deflated, zlib.compress(json.dumps(completion()).encode()))[1]["usage"] == (
        Usage(5, 1, 6)
    )
    unknown = {**JSON, "content-encoding": "snappy"}
    assert "cannot be decoded" in tap_all(unknown, gzip.compress(b"{}"))[1]


# --- JSON answers -------------------------------------------------------------------------


def test_a_json_answer_is_parsed_whole() -> None:
    body = json.dumps(completion("fp_json")).encode()
    tap = ResponseTap(httpx2.Headers(JSON))
    assert tap.feed(body[:20]) is False and tap.feed(body[20:]) is False
    fields = tap.finish()
    assert (fields["fingerprint"], fields["usage"]) == ("fp_json", Usage(5, 1, 6))


def test_a_json_answer_over_the_limit_is_dropped_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fp_monitor.traffic.recording.MAX_BODY_BYTES", 1000)
    tap, fields = tap_all(JSON, b"{" + b" " * 600, b" " * 600 + b"}")
    assert "larger than" in fields and tap.body == b""


# --- tags, routes, providers --------------------------------------------------------------


def test_parse_tags() -> None:
    assert parse_tags("user=u-42,team=search") == {"user": "u-42", "team": "search"}
    assert parse_tags(" user = u 1 , bad , =x, note=a%2Cb%3Dc") == {"user": "u 1", "note": "a,b=c"}
    assert parse_tags("") == {}


@pytest.mark.parametrize(
    ("method", "path", "chat"),
    [
        ("POST", "/v1/chat/completions", True),
        ("post", "/openai/deployments/d/chat/completions", True),
        ("POST", "/chat/completions/", True),
        ("GET", "/v1/chat/completions", False),
        ("POST", "/v1/completions", False),
        ("POST", "/v1/embeddings", False),
    ],
)
def test_only_chat_completions_are_recorded(method: str, path: str, chat: bool) -> None:
    assert is_chat_completion(method, path) is chat


@pytest.mark.parametrize(
    ("url", "provider"),
    [
        ("https://api.openai.com/v1/chat/completions", "openai"),
        ("https://api.x.ai/v1/chat/completions", "xai"),
        ("https://res.openai.azure.com/openai/deployments/d/chat/completions", "azure"),
        ("http://127.0.0.1:11434/v1/chat/completions", "ollama"),
        ("http://127.0.0.1:5000/v1/chat/completions", "custom"),
    ],
)
def test_the_provider_comes_from_the_url(url: str, provider: str) -> None:
    assert provider_for_url(url) == provider


# --- check_response -----------------------------------------------------------------------


def test_check_response_accepts_an_expected_fingerprint() -> None:
    check_response(completion("fp_a"), expected=["fp_a", "fp_b"])
    check_response(completion(None), expected=[None])
    check_response(completion(ABSENT), expected={ABSENT})


def test_check_response_raises_with_before_and_now() -> None:
    with pytest.raises(UnexpectedFingerprint) as info:
        check_response(completion("fp_new"), expected=["fp_b", "fp_a"])
    assert (info.value.field, info.value.before, info.value.now) == (
        "fingerprint",
        ("fp_a", "fp_b"),
        "fp_new",
    )
    assert info.value.target is None
    assert "fp_new" in str(info.value) and info.value.exit_code == 1
    with pytest.raises(UnexpectedFingerprint):  # null is not ""
        check_response(completion(None), expected=[""])


def test_check_response_reads_sdk_objects_and_tells_absent_from_null() -> None:
    sdk = ChatCompletion.model_validate(completion(ABSENT))
    with pytest.raises(UnexpectedFingerprint) as info:
        check_response(sdk, expected=[None])
    assert info.value.now == ABSENT
    check_response(ChatCompletion.model_validate(completion(None)), expected=[None])
    check_response(ChatCompletionChunk.model_validate(chunk("fp_c")), expected=["fp_c"])


def test_check_response_against_the_lock_file(tmp_path: Path) -> None:
    lock = tmp_path / "fpmon.lock"
    write_lock(lock, {"grok": LockEntry(frozenset({"fp_a"}), frozenset({"m-1"}))})
    check_response(completion("fp_a"), expected=lock, target="grok")
    with pytest.raises(UnexpectedFingerprint) as info:
        check_response({**completion("fp_a"), "model": "m-2"}, expected=lock, target="grok")
    assert (info.value.target, info.value.field, info.value.now) == ("grok", "model", "m-2")
    with pytest.raises(ConfigError, match="no entry for target 'other'"):
        check_response(completion(), expected=lock, target="other")
    with pytest.raises(ValueError, match="target="):
        check_response(completion(), expected=lock)


def test_check_response_refuses_what_it_cannot_check() -> None:
    with pytest.raises(TypeError, match="for one, write"):
        check_response(completion(), expected="fp_a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a chat completion"):
        check_response({"object": "list"}, expected=["fp_a"])
    with pytest.raises(TypeError):
        check_response(42, expected=["fp_a"])


def observation(response_id: str) -> Observation:
    return Observation(
        target="app",
        provider="custom",
        base_url="http://127.0.0.1:9/v1",
        requested_model="m",
        observed_at=datetime.now(UTC),
        attempts=1,
        latency_ms=1.0,
        request_shape="s",
        http_status=200,
        fingerprint="fp_a",
        resolved_model="m-1",
        response_id=response_id,
    )


def test_a_flush_racing_a_new_record_neither_hangs_nor_loses_it(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first writer is held inside its write while flush() marks the end of its queue and
    a new response starts another writer: each writer must see only its own end mark."""
    monkeypatch.setattr(recording, "_WRITER_IDLE_SECONDS", 60.0)  # a hang would show
    recorder = Recorder("app", history=isolated / "history.db")
    writing, release = threading.Event(), threading.Event()
    write = Recorder._write

    def held_write(self: Recorder, history: History, observations: list[Observation]) -> bool:
        if not release.is_set():
            writing.set()
            release.wait(10)
        return write(self, history, observations)

    monkeypatch.setattr(Recorder, "_write", held_write)
    recorder.record(observation("r-1"))
    assert writing.wait(10)
    flushing = threading.Thread(target=recorder.flush)
    flushing.start()
    while recorder._writer is not None:  # flush() has taken the writer and marked its end
        time.sleep(0.001)
    recorder.record(observation("r-2"))  # a second writer starts
    release.set()
    flushing.join(10)
    assert not flushing.is_alive()
    recorder.flush()
    with closing(sqlite3.connect(isolated / "history.db")) as db:
        ids = [row[0] for row in db.execute("SELECT response_id FROM observations ORDER BY 1")]
    assert ids == ["r-1", "r-2"] and (recorder.recorded, recorder.errors) == (2, 0)


def test_a_stream_without_a_fingerprint_is_decided_at_its_done() -> None:
    tap = ResponseTap(httpx2.Headers(SSE))
    assert tap.feed(sse(chunk(ABSENT), chunk(ABSENT), done=False)) is False
    assert tap.feed(b"data: [DONE]\n\n") is True  # before the caller reads the end
    assert tap.fields is not None and tap.fields["fingerprint"] == ABSENT


@pytest.mark.parametrize("status", [200, 401])
def test_the_requests_own_key_is_hidden_from_any_stored_message(
    status: int, isolated: Path
) -> None:
    """An error event in a 200 stream or a 401 body that echoes the key: hidden whatever its
    shape; a credential too short to hide safely is not hunted for in the text."""
    key = "0123456789abcdef0123456789abcdef"
    headers = [("authorization", f"Bearer {key}"), ("api-key", "ab")]
    info = RequestInfo.of("http://127.0.0.1:9/v1/chat/completions", b"{}", {}, headers)
    assert key not in repr(info)
    echoed = json.dumps({"error": {"message": f"Incorrect API key provided: {key}; a b c"}})
    body, kind = (f"data: {echoed}\n\n", SSE) if status == 200 else (echoed, JSON)
    recorder = Recorder("app", history=isolated / "h.db")
    exchange = Exchange(recorder, info, status, httpx2.Headers(kind))
    exchange.feed(body.encode())
    observation = exchange.conclude()
    assert observation is not None and observation.error_message is not None
    assert key not in observation.error_message
    assert "Incorrect API key provided: ***; a b c" in observation.error_message
