"""The canary's explanation page: its TOML and JSON examples say what the code does (its shell
example is run by test_examples.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fp_monitor.config.settings import load_config, target_canary
from fp_monitor.domain.canary import (
    CanaryMode,
    CanaryStatus,
    CanaryVerdict,
    verdict_data,
)
from fp_monitor.store.lockfile import read_lock
from tests.docs.markdown import ROOT

PAGE = ROOT / "docs" / "explanation" / "canary.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), re.S)


def test_the_page_has_its_examples() -> None:
    assert [len(blocks(k)) for k in ("toml", "json", "console")] == [2, 1, 1]


def test_the_config_example_picks_the_modes_it_says(tmp_path: Path) -> None:
    path = tmp_path / "fpmon.toml"
    path.write_text(blocks("toml")[0])
    modes = {t.name: target_canary(t)[0] for t in load_config(path).targets}
    assert modes == {
        "openai": CanaryMode.LOGPROBS,
        "local": CanaryMode.LOGPROBS,
        "groq": CanaryMode.SAMPLED,
        "reasoning": CanaryMode.OFF,
    }


def test_the_lock_example_is_read_with_its_signature(tmp_path: Path) -> None:
    path = tmp_path / "fpmon.lock"
    path.write_text(blocks("toml")[1])
    entry = read_lock(path)["openai"]
    assert entry.canary is not None
    (signature,) = entry.canary
    assert signature.kind is CanaryMode.LOGPROBS and signature.samples == 250
    assert [t for t, _ in signature.center] == ["Blue", "Red", "Green"]


def test_the_json_example_has_exactly_the_fields_check_json_writes() -> None:
    (example,) = (json.loads(b) for b in blocks("json"))
    written = verdict_data(
        CanaryVerdict(CanaryMode.LOGPROBS, CanaryStatus.DRIFT, ("a",), ("b",), 0.1, 0.2, 0.3, 3)
    )
    assert list(example) == list(written)
    assert example["status"] in {s.value for s in CanaryStatus}


def test_the_measured_table_is_filled_in() -> None:
    assert "BENCHMARK_TABLE" not in PAGE.read_text()
    assert "| change |" in PAGE.read_text()
