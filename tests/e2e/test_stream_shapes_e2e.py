"""Every stream shape, through the official openai SDK, recorded right by both recording
clients and by `fpmon proxy` (its own process), with and without
`stream_options.include_usage`: the fingerprint, its state, the model, the id and the usage.
Chunks that disagree are recorded with the first value and shown by `fpmon history`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI, OpenAI
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

import fp_monitor
from fp_monitor import UnexpectedFingerprint
from fp_monitor.devtools.fake_api import STREAM_SHAPES, FakeAPI, ModelBehaviour
from fp_monitor.domain.models import LockEntry
from fp_monitor.store.lockfile import write_lock
from tests.conftest import Run
from tests.e2e.test_proxy_e2e import Proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi"}]
KEY = "sk-proj-shapes-0123456789abcdef"
API_VERSION = "2024-10-21"
# What each model streams, and what its record must hold: (fingerprint, state).
EXPECTED = {
    **{shape: (f"fp_{shape[:5]}", "value") for shape in STREAM_SHAPES},
    "vllm-none": (None, "null"),  # vLLM's none mode: null on every chunk
}
CLIENTS = ("sync", "async", "proxy")


def model_of(name: str) -> str:
    return f"{name}-2026"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAPI]:
    models = {
        shape: ModelBehaviour([EXPECTED[shape][0]], model_of(shape), stream_shape=shape)
        for shape in STREAM_SHAPES
    }
    models["vllm-none"] = ModelBehaviour([None], model_of("vllm-none"), stream_shape="terminal")
    with FakeAPI(models, api_keys=[KEY]) as api:
        yield api


@pytest.fixture(scope="module")
def proxy(fake: FakeAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    # Upstream at the server's root, so that both /v1/... and Azure's /openai/... pass.
    running = Proxy(fake.url, tmp_path_factory.mktemp("shapes-proxy"))
    yield running
    running.stop()


def rows(history: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(history)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM observations ORDER BY id")]


def sync_stream(client: OpenAI, shape: str, usage: bool, **extra: Any) -> list[ChatCompletionChunk]:
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if usage else {}
    created = client.chat.completions.create(
        model=shape, messages=MESSAGES, stream=True, **options, **extra
    )
    return list(created)


async def async_stream(
    client: AsyncOpenAI, shape: str, usage: bool, **extra: Any
) -> list[ChatCompletionChunk]:
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if usage else {}
    created = await client.chat.completions.create(
        model=shape, messages=MESSAGES, stream=True, **options, **extra
    )
    return [chunk async for chunk in created]


def sync_sdk(shape: str, base: str, http: Any = None) -> OpenAI:
    """The SDK a user of `shape` has: Azure's client for the Azure shape."""
    if shape == "azure":
        return AzureOpenAI(
            azure_endpoint=base, api_key=KEY, api_version=API_VERSION, http_client=http
        )
    return OpenAI(base_url=base + "/v1", api_key=KEY, http_client=http, max_retries=0)


def async_sdk(shape: str, base: str, http: Any) -> AsyncOpenAI:
    if shape == "azure":
        return AsyncAzureOpenAI(
            azure_endpoint=base, api_key=KEY, api_version=API_VERSION, http_client=http
        )
    return AsyncOpenAI(base_url=base + "/v1", api_key=KEY, http_client=http, max_retries=0)


def streamed_and_recorded(
    client: str, shape: str, usage: bool, fake: FakeAPI, proxy: Proxy, history: Path
) -> tuple[list[ChatCompletionChunk], dict[str, Any]]:
    """Stream one answer through `client`; what the application got, and its one record."""
    if client == "sync":
        http = fp_monitor.recording_client("app", history=history)
        chunks = sync_stream(sync_sdk(shape, fake.url, http), shape, usage)
        http.close()
        (record,) = rows(history)
    elif client == "async":

        async def run() -> list[ChatCompletionChunk]:
            http = fp_monitor.recording_async_client("app", history=history)
            async with async_sdk(shape, fake.url, http) as sdk:
                return await async_stream(sdk, shape, usage)

        chunks = asyncio.run(run())
        (record,) = rows(history)
    else:
        name = f"{shape}-{usage}"
        tags = {"X-Fpmon-Tags": f"test={name}"}
        chunks = sync_stream(sync_sdk(shape, proxy.url), shape, usage, extra_headers=tags)
        (record,) = proxy.records(1, f"json_extract(tags, '$.test') = '{name}'")
    return chunks, record


@pytest.mark.parametrize("usage", [False, True], ids=["plain", "include_usage"])
@pytest.mark.parametrize("shape", list(EXPECTED))
@pytest.mark.parametrize("client", CLIENTS)
def test_every_shape_is_recorded_with_its_fingerprint_model_and_id(
    client: str, shape: str, usage: bool, fake: FakeAPI, proxy: Proxy, isolated: Path
) -> None:
    chunks, record = streamed_and_recorded(
        client, shape, usage, fake, proxy, isolated / "history.db"
    )
    fingerprint, state = EXPECTED[shape]
    assert (record["fingerprint"], record["fingerprint_state"]) == (fingerprint, state)
    assert record["resolved_model"] == model_of(shape)
    assert record["response_id"] == next(c.id for c in chunks if c.id)
    assert record["error_kind"] is None and record["source"] == "traffic"
    last = chunks[-1]
    if usage:
        assert last.usage is not None and record["total_tokens"] == last.usage.total_tokens
    else:
        assert record["total_tokens"] is None
    assert "fpmon.chunks_disagree" not in json.loads(record["tags"])
    # the application got the whole answer, the Azure filter chunk included
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    assert (chunks[0].model == "") is (shape == "azure")


@pytest.mark.parametrize("shape", ["azure", "terminal", "first-chunk"])
def test_a_known_backend_is_not_taken_for_a_null_one(
    shape: str, fake: FakeAPI, isolated: Path
) -> None:
    """With on_unexpected="raise" and the lock holding the real value: judged by a chunk with
    null, as before, every stream of these shapes would have raised."""
    write_lock(
        isolated / "fpmon.lock",
        {"app": LockEntry(frozenset({EXPECTED[shape][0]}), frozenset({model_of(shape)}))},
    )
    http = fp_monitor.recording_client("app", history=isolated / "h.db", on_unexpected="raise")
    chunks = sync_stream(sync_sdk(shape, fake.url, http), shape, usage=True)
    http.close()
    assert len(chunks) >= 4 and http.fpmon.errors == 0


@pytest.mark.parametrize(("shape", "raised_before"), [("azure", 1), ("every-chunk", 0)])
def test_an_unexpected_stream_raises_at_the_chunk_that_shows_it(
    shape: str, raised_before: int, fake: FakeAPI, isolated: Path
) -> None:
    # events apart in time, as a model emits them, so that each reaches the tap on its own
    paced = f"{shape}-paced"
    fake.set_model(
        paced, ModelBehaviour([EXPECTED[shape][0]], stream_shape=shape, stream_delay=0.05)
    )
    write_lock(isolated / "fpmon.lock", {"app": LockEntry(frozenset({"fp_other"}), frozenset())})
    http = fp_monitor.recording_client("app", history=isolated / "h.db", on_unexpected="raise")
    got = []
    with pytest.raises(UnexpectedFingerprint) as raised:
        for chunk in sync_sdk(shape, fake.url, http).chat.completions.create(
            model=paced, messages=MESSAGES, stream=True
        ):
            got.append(chunk)
    http.close()
    assert len(got) == raised_before  # Azure's filter chunk passed; no content did
    assert EXPECTED[shape][0] in str(raised.value)


# --- chunks that disagree ----------------------------------------------------------------


def _disagreeing_stream() -> bytes:
    def event(fingerprint: str | None, content: str, finish: str | None = None) -> bytes:
        chunk = {
            "id": "chatcmpl-mixed",
            "object": "chat.completion.chunk",
            "created": 1_800_000_000,
            "model": "mixed-1",
            "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    return (
        event(None, "")
        + event("fp_first00001", "Hel")
        + event("fp_second0001", "lo")
        + event("fp_first00001", "", "stop")
        + b"data: [DONE]\n\n"
    )


class _Mixed(BaseHTTPRequestHandler):
    """An upstream whose stream changes its fingerprint halfway (a gateway that moved the
    request, or a bug): the case the record must not hide."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = _disagreeing_stream()
        self.send_response_only(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def mixed() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Mixed)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_disagreeing_chunks_are_kept_first_and_shown_in_history(
    mixed: str, tmp_path: Path, fpmon: Callable[..., Run]
) -> None:
    proxy = Proxy(mixed, tmp_path / "proxy")
    try:
        client = OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0)
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        )
        (record,) = proxy.records(1)
    finally:
        proxy.stop()
    assert text == "Hello"
    assert (record["fingerprint"], record["resolved_model"]) == ("fp_first00001", "mixed-1")
    assert json.loads(json.loads(record["tags"])["fpmon.chunks_disagree"]) == ["fp_second0001"]
    history = str(proxy.history)
    shown = fpmon("history", "--observations", "--history", history)
    assert shown.code == 0, shown.err
    assert "fp_first00001 (chunks disagree: also fp_second0001)" in shown.out
    listed = fpmon("history", "--observations", "--history", history, "--format", "json")
    (observation,) = listed.json()["observations"]
    assert observation["fingerprint"] == "fp_first00001"
    assert observation["tags"] == {"fpmon.chunks_disagree": '["fp_second0001"]'}
