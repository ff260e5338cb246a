"""Hostile input against secrets, at unit level: a server echoing a key in any JSON encoding
of it, through every field it controls; credential headers, userinfo and webhook URLs in the
configuration."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from fp_monitor import redact as redact_module
from fp_monitor.models import RAW_RESPONSE_LIMIT, Observation
from fp_monitor.recording import Exchange, Recorder, RequestInfo
from fp_monitor.redact import redact, register, scrub

KEY = "gw/CANARY+" + "0123456789abcdef" * 2
"""Not shaped like a provider's key: only its registration can hide it."""


def json_forms(key: str) -> dict[str, str]:
    """The key as the inside of a JSON string, in the encodings JSON allows."""
    plain = json.dumps(key)[1:-1]
    return {
        "plain": plain,
        "escaped-slash": plain.replace("/", "\\/"),
        "all-u-lower": "".join(f"\\u{ord(c):04x}" for c in key),
        "all-u-upper": "".join(f"\\u{ord(c):04X}" for c in key),
        "mixed": "".join(
            f"\\u{ord(c):04x}" if i % 3 == 0 else "\\/" if c == "/" else c
            for i, c in enumerate(key)
        ),
    }


FORMS = json_forms(KEY)


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact_module, "_registered", set())


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_a_registered_key_is_hidden_in_every_json_encoding(form: str) -> None:
    register(KEY)
    body = f'{{"error": {{"message": "bad key {form} given"}}}}'
    hidden = redact(body)
    assert json.loads(hidden) == {"error": {"message": "bad key *** given"}}


def test_a_key_outside_the_bmp_is_hidden_as_a_surrogate_pair() -> None:
    key = "gw-\U0001f511-secret"
    register(key)
    assert redact(json.dumps({"k": key})) == '{"k": "***"}'  # ensure_ascii: \ud83d\udd11


def test_half_of_a_key_at_the_cut_of_the_raw_response_is_not_kept() -> None:
    register(KEY)
    raw = "x" * (RAW_RESPONSE_LIMIT - 10) + FORMS["escaped-slash"] + "tail"
    now = datetime.now(UTC)
    observation = Observation("t", "custom", "http://h", "m", now, 1, 1.0, "s", raw_response=raw)
    kept = scrub(observation).raw_response
    assert kept == "x" * (RAW_RESPONSE_LIMIT - 10) + "***tail"[:10]
    assert KEY[:8] not in (kept or "")


def answer(form: str) -> bytes:
    return (
        f'{{"id": "{form}", "model": "m-{form}", "system_fingerprint": "fp-{form}", '
        '"choices": [{"index": 0, "message": {"content": "Hi"}}]}'
    ).encode()


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_a_recorded_answer_echoing_the_requests_key_keeps_none_of_it(
    form: str, streaming: bool, isolated: Path
) -> None:
    """The recording clients and the proxy decode answers here: the request's own key, never
    registered, is hidden from the fingerprint, model, response id and tracked headers."""
    sent = [("authorization", f"Bearer {KEY}")]
    info = RequestInfo.of("http://127.0.0.1:9/v1/chat/completions", b"{}", {}, sent)
    recorder = Recorder("app", history=isolated / "h.db")
    recorder.track_headers = ("x-echo",)
    kind = "text/event-stream" if streaming else "application/json"
    headers = httpx2.Headers({"content-type": kind, "x-echo": KEY, "x-request-id": KEY})
    exchange = Exchange(recorder, info, 200, headers)
    body = answer(form)
    exchange.feed(b"data: " + body + b"\n\ndata: [DONE]\n\n" if streaming else body)
    observation = exchange.conclude()
    assert observation is not None and observation.ok
    assert (observation.fingerprint, observation.resolved_model) == ("fp-***", "m-***")
    assert (observation.response_id, observation.request_id) == ("***", "***")
    assert observation.headers == {"x-echo": "***"}
