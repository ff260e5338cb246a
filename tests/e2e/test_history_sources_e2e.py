"""`history --source` and `stats --source`: an application's recorded traffic and fpmon's
probes, read apart or together, from one history."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from unittest.mock import ANY

from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

import fp_monitor
from fp_monitor.devtools.fake_api import FakeAPI
from tests.conftest import Run

A, B = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb"


def test_history_and_stats_read_each_source_apart(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, app={"model": "model-a", "samples": 2})
    history = isolated / "xdg-data/fpmon/history.db"
    fake.rotate("model-a", [A])
    assert fpmon("check").code == 0  # two probe samples of fp_a
    fake.rotate("model-a", [B])
    with fp_monitor.recording_client("app", history=history) as http:
        client = OpenAI(base_url=fake.base_url, api_key="unused", http_client=http, max_retries=0)
        client.chat.completions.create(model="model-a", messages=[{"role": "user", "content": "x"}])

    def fingerprints(*args: str) -> list[list[str]]:
        result = fpmon("history", "--format", "json", *args)
        assert result.code == 0, result.err
        return [run["fingerprints"] for run in result.json()["runs"]]

    assert fingerprints("--source", "probe") == [[A]]
    assert fingerprints("--source", "traffic") == [[B]]
    assert fingerprints() == [[A], [B]]
    observed = fpmon("history", "--observations", "--format", "json", "--source", "traffic")
    assert [o["fingerprint"] for o in observed.json()["observations"]] == [B]

    def stats(source: str) -> dict:
        result = fpmon("stats", "--json", "--source", source)
        assert result.code == 0, result.err
        (target,) = result.json()["targets"]
        return target

    assert (stats("probe")["observations"], stats("probe")["fingerprints"]) == (2, [A])
    assert (stats("traffic")["observations"], stats("traffic")["fingerprints"]) == (1, [B])
    assert stats("traffic")["learning"]["samples"] == 1
    assert stats("all")["observations"] == 3


def test_the_audit_record_is_one_jsonl_line_per_response(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    """The issue's audit command: timestamp, request id, model, fingerprint and tags of each
    response, a streamed one included (one line however many chunks), and no probe."""
    write_config(fake.base_url, app={"model": "model-a"})
    history = isolated / "xdg-data/fpmon/history.db"
    fake.rotate("model-a", [A])
    assert fpmon("check").code == 0
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x"}]
    with fp_monitor.recording_client("app", history=history, tags={"team": "search"}) as http:
        client = OpenAI(base_url=fake.base_url, api_key="unused", http_client=http, max_retries=0)
        plain = client.chat.completions.with_raw_response.create(
            model="model-a", messages=messages, extra_headers={"X-Fpmon-Tags": "user=u-42"}
        )
        streamed = list(
            client.chat.completions.create(model="model-a", messages=messages, stream=True)
        )
    assert len(streamed) > 1
    result = fpmon("history", "--source", "traffic", "--observations", "--format", "jsonl")
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    audit = [
        (r["source"], r["request_id"], r["model"], r["fingerprint"], r["tags"], r["response_id"])
        for r in lines
    ]
    plain_line = (
        "traffic",
        plain.headers["x-request-id"],
        "model-a-2026",
        A,
        {"team": "search", "user": "u-42"},
        plain.parse().id,
    )
    streamed_line = ("traffic", ANY, "model-a-2026", A, {"team": "search"}, streamed[0].id)
    assert audit == [plain_line, streamed_line]  # in the order they were made
    assert lines[1]["request_id"].startswith("req_") and lines[1]["total_tokens"] is None
    assert all(r["observed_at"].endswith("Z") for r in lines)


def test_watch_takes_the_source_of_the_known_set(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    """A value the traffic saw first: known to a watch of every source (the event was the
    traffic's), new to a watch of the probes alone."""
    write_config(fake.base_url, app={"model": "model-a"})
    history = isolated / "xdg-data/fpmon/history.db"
    fake.rotate("model-a", [A])
    assert fpmon("check").code == 0
    fake.rotate("model-a", [B])
    with fp_monitor.recording_client("app", history=history) as http:
        client = OpenAI(base_url=fake.base_url, api_key="unused", http_client=http, max_retries=0)
        client.chat.completions.create(model="model-a", messages=[{"role": "user", "content": "x"}])
    probes = fpmon("watch", "--every", "0s", "--count", "1", "--source", "probe")
    assert probes.code == 1 and f"new fingerprint: {A} -> {B}" in probes.out
    every = fpmon("watch", "--every", "0s", "--count", "1")
    assert every.code == 0 and "new" not in every.out
