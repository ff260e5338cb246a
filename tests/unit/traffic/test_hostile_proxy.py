"""Hostile input to the proxy's parts, in-process (issue 12): where its ASGI application would
send a request for hostile request targets; server JSON holding lone surrogates; the writer's
batch with a record it cannot store. The served proxy is attacked over raw sockets in
tests/e2e/test_hostile_proxy_e2e.py."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from fp_monitor.domain.models import Observation, Usage
from fp_monitor.net.untrusted import parse_json
from fp_monitor.probe.request import completion_fields
from fp_monitor.traffic.proxy import ProxyApp
from fp_monitor.traffic.recording import Recorder, recording_client

UPSTREAM = "https://gw.example:8443/openai/v1?api-version=2024-10-21"


@pytest.fixture
def app(isolated: Path) -> ProxyApp:
    return ProxyApp(UPSTREAM, Recorder("px", history=isolated / "history.db"))


@pytest.mark.parametrize(
    ("target", "query", "url"),
    [
        (
            "/chat/completions",
            "",
            "https://gw.example:8443/openai/v1/chat/completions?api-version=2024-10-21",
        ),
        (
            "/chat/completions",
            "a=1",
            "https://gw.example:8443/openai/v1/chat/completions?api-version=2024-10-21&a=1",
        ),
        (
            "/%2F%2Fevil.example/x",
            "",
            "https://gw.example:8443/openai/v1/%2F%2Fevil.example/x?api-version=2024-10-21",
        ),
        (
            "/@evil.example/x",
            "",
            "https://gw.example:8443/openai/v1/@evil.example/x?api-version=2024-10-21",
        ),
        (  # escapes are sent as they came, on the upstream's origin whatever they decode to
            "/%2e%2e/%2e%2e/admin",
            "",
            "https://gw.example:8443/openai/v1/%2e%2e/%2e%2e/admin?api-version=2024-10-21",
        ),
        (
            "/x/../chat/completions",
            "",
            "https://gw.example:8443/openai/v1/chat/completions?api-version=2024-10-21",
        ),
    ],
)
def test_a_path_goes_under_the_upstream(app: ProxyApp, target: str, query: str, url: str) -> None:
    forwarded = app.upstream_url(target.encode(), target, query)
    assert str(forwarded) == url


@pytest.mark.parametrize(
    "target",
    [
        "*@evil.example/chat/completions",
        "*",
        "//evil.example/chat/completions",
        "http://evil.example/chat/completions",
        "evil.example:443",
        "",
        # a path, but one that climbs out of the upstream's own
        "/../../admin",
        "/..",
    ],
)
def test_anything_else_goes_nowhere(app: ProxyApp, target: str) -> None:
    assert app.upstream_url(target.encode(), target, "") is None


def _observation(fingerprint: str) -> Observation:
    return Observation(
        target="px",
        provider="custom",
        base_url="http://127.0.0.1:9/v1",
        requested_model="m",
        observed_at=datetime.now(UTC),
        attempts=1,
        latency_ms=1.0,
        request_shape="shape",
        fingerprint=fingerprint,
        resolved_model="m-1",
    )


def test_a_record_that_cannot_be_stored_costs_only_its_own(
    isolated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy's writer takes what queued up in one transaction: a record it cannot store
    (here a lone surrogate that reached it unescaped) is written alone and lost alone."""
    history = isolated / "history.db"
    recorder = Recorder("px", history=history)
    for fingerprint in ("fp_one", "\ud800", "fp_two"):
        recorder.record(_observation(fingerprint))
    recorder.flush()
    assert (recorder.recorded, recorder.errors) == (2, 1)
    with closing(sqlite3.connect(history)) as db:
        stored = [row[0] for row in db.execute("SELECT fingerprint FROM observations ORDER BY id")]
    assert stored == ["fp_one", "fp_two"]
    assert caplog.text.count("could not record a response of target px") == 1


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (b'{"system_fingerprint": "\\ud800"}', {"system_fingerprint": "\\ud800"}),
        (
            b'{"k\\udfff": ["\\udc00", {"x": "\\uD83D"}]}',
            {"k\\udfff": ["\\udc00", {"x": "\\ud83d"}]},
        ),
        (b'"\xed\xa0\x80"', "\\ud800"),  # the surrogate as UTF-8 bytes, which json.loads allows
        (b'"\\ud83d\\ude00 fine"', "\U0001f600 fine"),  # a pair is one character: left alone
    ],
)
def test_every_string_of_decoded_json_is_safe_to_store(raw: bytes, parsed: object) -> None:
    assert parse_json(raw) == parsed
    json.dumps(parsed, ensure_ascii=False).encode()  # would raise on a lone surrogate


def test_a_token_count_beyond_sqlites_integers_is_no_count() -> None:
    body = {"choices": [], "model": "m", "usage": {"prompt_tokens": 10**30, "total_tokens": 7}}
    fields = completion_fields(body)
    assert isinstance(fields, dict)
    assert fields["usage"] == Usage(prompt_tokens=None, total_tokens=7)


@pytest.mark.parametrize("stream", [False, True])
def test_the_recording_client_stores_a_lone_surrogate_escaped(isolated: Path, stream: bool) -> None:
    history = isolated / "history.db"
    with FakeAPI({"bad": ModelBehaviour(["\ud800"], "bad-\udfff")}) as fake:
        with recording_client("app", history=history) as client:
            body = {"model": "bad", "messages": [{"role": "user", "content": "hi"}]}
            answer = client.post(
                fake.base_url + "/chat/completions", json={**body, "stream": stream}
            )
            assert answer.status_code == 200
            answer.read()
        assert (client.fpmon.recorded, client.fpmon.errors) == (1, 0)
    with closing(sqlite3.connect(history)) as db:
        stored = db.execute("SELECT fingerprint, resolved_model, tags FROM observations").fetchall()
    assert stored == [("\\ud800", "bad-\\udfff", '{"fpmon.escaped": "fingerprint,resolved_model"}')]
