"""`fpmon proxy` as installed, in its own process: the official SDK through it gets the same
bytes as straight from the API, chunk by chunk; every chat completion is recorded; 100 streams
at once; SIGTERM lets open streams finish."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import FPMON, Run

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi"}]
KEY = "sk-proj-proxy-e2e-0123456789abcdef"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding"}
PIECE_DELAY = 0.2


def _event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-fixed",
        "object": "chat.completion.chunk",
        "created": 1_800_000_000,
        "model": "fixed-2026",
        "system_fingerprint": "fp_fixed00001",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


# The pieces a fixed upstream streams, PIECE_DELAY apart; the second event is cut in two.
CONTENT = _event({"content": "Bonjour, ça va ?"})
PIECES = [
    _event({"role": "assistant", "content": ""}),
    CONTENT[:37],
    CONTENT[37:],
    _event({}, "stop") + b"data: [DONE]\n\n",
]
COMPLETION = {
    "id": "chatcmpl-fixed-json",
    "object": "chat.completion",
    "created": 1_800_000_000,
    "model": "fixed-2026",
    "system_fingerprint": "fp_fixed00002",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class _Fixed(BaseHTTPRequestHandler):
    """An upstream whose answers are the same bytes every time: a stream sent chunked in
    pieces, and a gzip-compressed JSON completion."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.send_response_only(200)
        self.send_header("x-request-id", "req_fixed")
        self.send_header("x-custom", "kept")
        if body.get("stream"):
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for n, piece in enumerate(PIECES):
                if n:
                    time.sleep(PIECE_DELAY)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            packed = gzip.compress(json.dumps(COMPLETION).encode(), mtime=0)
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)


@pytest.fixture(scope="module")
def fixed() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fixed)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def api() -> Iterator[FakeAPI]:
    slow = ModelBehaviour(["fp_slow000001"], "slow-1", stream_delay=0.3)
    quick = ModelBehaviour(["fp_quick00001"], "quick-1", stream_delay=0.02)
    long = ModelBehaviour(["fp_long000001"], "long-1", stream_delay=1.0)
    with FakeAPI({"slow": slow, "quick": quick, "long": long}, api_keys=[KEY]) as fake:
        yield fake


class Proxy:
    """One `fpmon proxy` process with its own empty state directory."""

    def __init__(self, upstream: str, state: Path) -> None:
        assert FPMON is not None
        state.mkdir(parents=True, exist_ok=True)
        self.history = state / "history.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FPMON_")}
        env.update(
            FPMON_HISTORY=str(self.history),
            XDG_CONFIG_HOME=str(state / "config"),
            XDG_DATA_HOME=str(state / "data"),
        )
        command = [FPMON, "proxy", "--listen", "127.0.0.1:0", "--upstream", upstream]
        self.process = subprocess.Popen(
            [*command, "--target", "app", "--new-target"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=state,
            env=env,
        )
        assert self.process.stdout is not None
        self.banner = self.process.stdout.readline()
        self.url = self.banner.split()[2]

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit code and everything the proxy printed."""
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=15)
        return self.process.returncode, self.banner + out + err

    def records(self, count: int, where: str = "1") -> list[dict[str, Any]]:
        """The observations matching `where`, once there are `count` of them (written by the
        proxy's writer thread a moment after each response)."""
        deadline = time.monotonic() + 10
        found: list[dict[str, Any]] = []
        problem = ""
        while time.monotonic() < deadline:
            if self.history.exists():
                try:
                    with closing(sqlite3.connect(self.history)) as db:
                        db.row_factory = sqlite3.Row
                        query = f"SELECT * FROM observations WHERE {where} ORDER BY id"
                        found = [dict(row) for row in db.execute(query)]
                except sqlite3.OperationalError as exc:
                    problem = f" ({exc})"  # the file made, its tables not yet: read again
                if len(found) >= count:
                    return found
            time.sleep(0.05)
        raise AssertionError(f"{len(found)} records, not {count}{problem}")


@pytest.fixture(scope="module")
def fixed_proxy(fixed: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    proxy = Proxy(fixed, tmp_path_factory.mktemp("fixed-proxy"))
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def api_proxy(api: FakeAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    proxy = Proxy(api.base_url, tmp_path_factory.mktemp("api-proxy"))
    yield proxy
    proxy.stop()


def tagged(name: str) -> dict[str, str]:
    return {"X-Fpmon-Tags": f"test={name}"}


def where_tag(name: str) -> str:
    return f"json_extract(tags, '$.test') = '{name}'"


# --- the same bytes, chunk by chunk -------------------------------------------------------


def test_the_sdk_gets_the_same_stream_through_the_proxy_byte_for_byte(
    fixed: str, fixed_proxy: Proxy
) -> None:
    answers = {}
    for name, base_url in (("direct", fixed), ("proxied", fixed_proxy.url)):
        client = OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
        started = time.monotonic()
        with client.chat.completions.with_streaming_response.create(
            model="fixed", messages=MESSAGES, stream=True, extra_headers=tagged("bytes")
        ) as response:
            pieces, arrivals = [], []
            for piece in response.iter_bytes():
                pieces.append(piece)
                arrivals.append(time.monotonic() - started)
            headers = {k: v for k, v in response.headers.items() if k not in HOP_BY_HOP}
            answers[name] = (response.status_code, headers, b"".join(pieces), arrivals)
    assert answers["proxied"][:3] == answers["direct"][:3]
    assert answers["proxied"][2] == b"".join(PIECES)
    # chunk by chunk: the pieces came as the server sent them, PIECE_DELAY apart, not all at
    # once at the end (measured between arrivals, so a busy machine's slow start is no failure)
    arrivals = answers["proxied"][3]
    assert arrivals[-1] - arrivals[0] > 2 * PIECE_DELAY
    (row,) = fixed_proxy.records(1, where_tag("bytes"))
    assert (row["fingerprint"], row["resolved_model"]) == ("fp_fixed00001", "fixed-2026")
    assert (row["response_id"], row["request_id"]) == ("chatcmpl-fixed", "req_fixed")


def test_a_compressed_completion_passes_untouched_and_is_recorded(
    fixed: str, fixed_proxy: Proxy
) -> None:
    raw = {}
    with httpx2.Client(trust_env=False) as http:
        for name, base_url in (("direct", fixed), ("proxied", fixed_proxy.url)):
            with http.stream(
                "POST",
                base_url + "/chat/completions",
                json={"model": "fixed", "messages": MESSAGES},
                headers={"accept-encoding": "gzip", **tagged("gzip")},
            ) as response:
                raw[name] = (response.headers["content-encoding"], b"".join(response.iter_raw()))
    assert raw["proxied"] == raw["direct"]  # still compressed: not re-encoded
    client = OpenAI(base_url=fixed_proxy.url, api_key=KEY, max_retries=0)
    completion = client.chat.completions.create(model="fixed", messages=MESSAGES)
    assert completion.system_fingerprint == "fp_fixed00002"
    rows = fixed_proxy.records(1, where_tag("gzip"))
    assert [(r["fingerprint"], r["total_tokens"]) for r in rows] == [("fp_fixed00002", 4)]


# --- the SDK against the fake API through the proxy ---------------------------------------


def test_the_sdk_through_the_proxy_is_recorded_with_its_tags(
    api: FakeAPI, api_proxy: Proxy
) -> None:
    client = OpenAI(base_url=api_proxy.url, api_key=KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="quick",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Fpmon-Tags": "test=sdk,user=u-42"},
    )
    chunks = list(stream)
    assert {c.system_fingerprint for c in chunks} == {"fp_quick00001"}
    sent = [r for r in api.requests() if r.model == "quick"][-1]
    assert sent.key_ok and "x-fpmon-tags" not in sent.headers
    (row,) = api_proxy.records(1, where_tag("sdk"))
    assert json.loads(row["tags"]) == {"test": "sdk", "user": "u-42"}
    assert (row["source"], row["target"], row["base_url"]) == ("traffic", "app", api.base_url)
    assert row["response_id"] == chunks[0].id
    assert chunks[-1].usage is not None and row["total_tokens"] == chunks[-1].usage.total_tokens
    assert [m.id for m in client.models.list()] == ["long", "quick", "slow"]  # not recorded
    assert KEY.encode() not in api_proxy.history.read_bytes()


def test_100_concurrent_streams(api: FakeAPI, api_proxy: Proxy) -> None:
    async def main() -> list[str]:
        async with AsyncOpenAI(base_url=api_proxy.url, api_key=KEY, max_retries=0) as client:

            async def one(n: int) -> str:
                stream = await client.chat.completions.create(
                    model="quick",
                    messages=[{"role": "user", "content": f"stream {n}"}],
                    stream=True,
                    extra_headers=tagged("concurrent"),
                )
                return "".join([c.choices[0].delta.content or "" async for c in stream])

            return await asyncio.gather(*(one(n) for n in range(100)))

    started = time.monotonic()
    assert asyncio.run(main()) == ["Hi"] * 100
    assert time.monotonic() - started < 15
    rows = api_proxy.records(100, where_tag("concurrent"))
    assert len(rows) == 100
    assert {r["fingerprint"] for r in rows} == {"fp_quick00001"}
    assert len({r["response_id"] for r in rows}) == 100


def test_a_client_that_leaves_stops_the_upstream_and_is_recorded(api_proxy: Proxy) -> None:
    client = OpenAI(base_url=api_proxy.url, api_key=KEY, max_retries=0)
    with client.chat.completions.create(
        model="long", messages=MESSAGES, stream=True, extra_headers=tagged("leave")
    ) as stream:
        first = next(iter(stream))
    left = time.monotonic()
    (row,) = api_proxy.records(1, where_tag("leave"))
    # recorded when the client left, not when the upstream would have ended (2 s later)
    assert time.monotonic() - left < 1.5
    assert (row["fingerprint"], row["response_id"]) == ("fp_long000001", first.id)


# --- stopping -----------------------------------------------------------------------------


def test_sigterm_lets_an_open_stream_finish_then_exits_0(api: FakeAPI, tmp_path: Path) -> None:
    proxy = Proxy(api.base_url, tmp_path)
    events = []
    body = {"model": "slow", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {KEY}", **tagged("sigterm")}
    with (
        httpx2.Client(trust_env=False, timeout=10) as http,
        http.stream("POST", proxy.url + "/chat/completions", json=body, headers=headers) as answer,
    ):
        for line in answer.iter_lines():
            if line:
                events.append(line)
                if len(events) == 1:
                    proxy.process.send_signal(signal.SIGTERM)  # with 3 events still to come
    assert events[-1] == "data: [DONE]" and len(events) == 4
    code, output = proxy.stop()
    assert code == 0
    assert proxy.records(1)[0]["fingerprint"] == "fp_slow000001"
    assert KEY not in output and "POST" not in output  # no access log: a request line is data


def test_sigterm_cuts_a_stream_still_open_after_5_s_in_one_line(tmp_path: Path) -> None:
    glacial = ModelBehaviour(["fp_glacial001"], "glacial-1", stream_delay=2.5)  # 7.5 s long
    with FakeAPI({"glacial": glacial}) as fake:
        proxy = Proxy(fake.base_url, tmp_path)
        body = {"model": "glacial", "messages": MESSAGES, "stream": True}
        events = []
        with (
            httpx2.Client(trust_env=False, timeout=20) as http,
            http.stream("POST", proxy.url + "/chat/completions", json=body) as answer,
            pytest.raises(httpx2.RemoteProtocolError),  # cut: the body is incomplete
        ):
            for line in answer.iter_lines():
                if line:
                    events.append(line)
                    proxy.process.send_signal(signal.SIGTERM)
        code, output = proxy.stop()
    assert code == 0 and 1 <= len(events) < 4
    assert "1 stream(s) still open 5 s after the signal to stop were cut" in output
    assert "Traceback" not in output and "ERROR" not in output
    assert proxy.records(1)[0]["fingerprint"] == "fp_glacial001"  # recorded all the same


def test_a_bad_listen_address_is_a_usage_error(fpmon: Callable[..., Run]) -> None:
    result = fpmon("proxy", "--listen", "8787", "--upstream", "http://127.0.0.1:9", "--target", "a")
    assert result.code == 2
    assert "expected HOST:PORT" in result.err
