"""The proxy's ASGI application in-process (httpx2's ASGITransport): what is forwarded, what
comes back, what is recorded. The served command is tested in tests/e2e/test_proxy_e2e.py."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx2
import pytest

from fp_monitor.devtools.fake_api import FakeAPI
from fp_monitor.domain.errors import ConfigError
from fp_monitor.net.urls import in_clear
from fp_monitor.traffic.proxy import ProxyApp, end_to_end, parse_listen, shown_upstream
from fp_monitor.traffic.recording import Recorder

CHAT = {"model": "model-a", "messages": [{"role": "user", "content": "hi"}]}


def through_proxy(
    fake: FakeAPI, history: Path, *requests: tuple[str, str, dict[str, Any]]
) -> tuple[list[httpx2.Response], Recorder]:
    """Send `requests` (method, path, httpx2 keywords) through a ProxyApp in front of `fake`."""
    recorder = Recorder("app", history=history)
    app = ProxyApp(fake.base_url, recorder)

    async def main() -> list[httpx2.Response]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://proxy") as client:
            answers = [await client.request(m, path, **kw) for m, path, kw in requests]
        await app.aclose()
        return answers

    return asyncio.run(main()), recorder


def rows(history: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(history)) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM observations ORDER BY id")]


@pytest.fixture
def history(isolated: Path) -> Path:
    return isolated / "history.db"


def test_a_chat_request_is_forwarded_and_recorded(fake: FakeAPI, history: Path) -> None:
    headers = {"authorization": "Bearer sk-test-proxy-0123456789", "x-fpmon-tags": "user=u-42"}
    (answer,), recorder = through_proxy(
        fake, history, ("POST", "/chat/completions", {"json": CHAT, "headers": headers})
    )
    assert answer.status_code == 200
    assert answer.json()["system_fingerprint"] == "fp_aaaaaaaaaa"
    (sent,) = fake.requests()
    assert (sent.path, sent.auth, sent.body) == ("/v1/chat/completions", "bearer", CHAT)
    assert "x-fpmon-tags" not in sent.headers
    (row,) = rows(history)
    assert row["source"] == "traffic" and row["fingerprint"] == "fp_aaaaaaaaaa"
    assert row["request_id"] == answer.headers["x-request-id"]
    assert json.loads(row["tags"]) == {"user": "u-42"}
    assert b"sk-test-proxy" not in history.read_bytes()
    assert (recorder.recorded, recorder.errors) == (1, 0)


def test_hop_by_hop_headers_stay_on_their_hop(fake: FakeAPI, history: Path) -> None:
    headers = {
        "connection": "keep-alive, x-hop",
        "x-hop": "only for the proxy",
        "keep-alive": "timeout=5",
        "te": "trailers",
        "proxy-authorization": "Basic Zm9vOmJhcg==",
        "x-app": "end to end",
    }
    (answer,), _ = through_proxy(fake, history, ("GET", "/models?b=2&a=%20", {"headers": headers}))
    assert answer.status_code == 200
    (sent,) = fake.requests()
    assert sent.query == "b=2&a=%20"
    assert sent.headers["x-app"] == "end to end"
    assert not {"x-hop", "keep-alive", "te", "proxy-authorization"} & set(sent.headers)
    assert sent.headers["host"] == fake.url.removeprefix("http://")
    assert not history.exists()  # not a chat completion: nothing recorded


def test_answers_come_back_unchanged(fake: FakeAPI, history: Path) -> None:
    (missing, wrong), _ = through_proxy(
        fake,
        history,
        ("POST", "/embeddings", {"json": {"input": "x"}}),
        ("POST", "/chat/completions", {"json": {"model": "model-a", "messages": []}}),
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (POST /v1/embeddings)"
    assert wrong.status_code == 400 and wrong.headers["openai-version"] == "2020-10-01"
    assert "server" not in missing.headers  # nothing of the proxy's own is added
    (row,) = rows(history)
    assert (row["error_kind"], row["http_status"]) == ("bad_request", 400)


def test_a_body_too_large_to_peek_at_is_still_forwarded(fake: FakeAPI, history: Path) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 1_500_000}]}
    (answer,), _ = through_proxy(fake, history, ("POST", "/chat/completions", {"json": big}))
    assert answer.status_code == 200
    assert fake.requests()[0].body == big
    (row,) = rows(history)
    assert row["requested_model"] == "" and row["resolved_model"] == "model-a-2026"


def test_an_unreachable_upstream_is_a_502_in_the_apis_shape(history: Path) -> None:
    app = ProxyApp("http://127.0.0.1:9/v1", Recorder("app", history=history))

    async def main() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://proxy") as client:
            answer = await client.post("/chat/completions", json=CHAT)
        await app.aclose()
        return answer

    answer = asyncio.run(main())
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["type"] == "fpmon_proxy_error"
    assert "could not be reached" in error["message"]


def test_a_history_that_cannot_be_written_does_not_stop_the_traffic(
    fake: FakeAPI, isolated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_directory = isolated / "file"
    not_a_directory.write_text("")
    with caplog.at_level(logging.WARNING, "fp_monitor.traffic.recording"):
        (answer,), recorder = through_proxy(
            fake, not_a_directory / "history.db", ("POST", "/chat/completions", {"json": CHAT})
        )
    assert answer.status_code == 200
    assert (recorder.recorded, recorder.errors) == (0, 1)
    assert "could not record a response of target app" in caplog.text


def test_end_to_end_drops_the_headers_that_connection_names() -> None:
    headers = [(b"Connection", b"close, X-Trace"), (b"x-trace", b"1"), (b"x-keep", b"2")]
    assert end_to_end(headers) == [(b"x-keep", b"2")]
    assert end_to_end([(b"host", b"h"), (b"a", b"1")], drop=frozenset({b"host"})) == [(b"a", b"1")]


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:8787", ("127.0.0.1", 8787)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_listen(listen: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(listen) == parsed


@pytest.mark.parametrize("listen", ["8787", ":8787", "host:port", "127.0.0.1:70000"])
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_listen(listen)


@pytest.mark.parametrize(
    ("upstream", "clear"),
    [
        ("http://api.example.com/v1", True),
        ("http://10.0.0.5:8000/v1", True),
        ("https://api.example.com/v1", False),
        ("http://127.0.0.1:8000/v1", False),
        ("http://localhost:11434/v1", False),
        ("http://[::1]:8000/v1", False),
    ],
)
def test_a_key_sent_in_clear_to_another_machine_is_noticed(upstream: str, clear: bool) -> None:
    assert in_clear(upstream) is clear


def test_a_key_the_server_echoes_is_not_stored(isolated: Path) -> None:
    key = "0123456789abcdef0123456789abcdef"
    with FakeAPI(api_keys=["the-right-key"], echo_key_in_errors=True) as fake:
        headers = {"authorization": f"Bearer {key}"}
        (answer,), _ = through_proxy(
            fake,
            isolated / "h.db",
            ("POST", "/chat/completions", {"json": CHAT, "headers": headers}),
        )
    assert answer.status_code == 401 and key in answer.text  # passed unchanged to the caller
    (row,) = rows(isolated / "h.db")
    assert "Incorrect API key provided: ***" in row["error_message"]
    assert key not in (isolated / "h.db").read_text(errors="replace")


@pytest.mark.parametrize(
    ("upstream", "shown"),
    [
        ("https://api.x.ai/v1", "https://api.x.ai/v1"),
        ("https://me:s3cret@gw.example/v1", "https://***@gw.example/v1"),
        ("https://r.openai.azure.com/openai?api-key=abc", "https://r.openai.azure.com/openai?***"),
    ],
)
def test_the_printed_upstream_holds_no_credentials(upstream: str, shown: str) -> None:
    assert shown_upstream(upstream) == shown
