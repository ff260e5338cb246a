"""`history --source` and `stats --source`: an application's recorded traffic and fpmon's
probes, read apart or together, from one history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from openai import OpenAI

import fp_monitor
from fp_monitor.fake_api import FakeAPI
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
