"""What each provider's API does with fingerprints, streams and logprobs, as `fpmon targets`
and `fpmon init` say it: a provider that sends no usable fingerprint is called out, with the
advice to watch behaviour instead."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.config.providers import (
    PRESETS,
    REALITIES,
    FingerprintSupport,
    StreamShape,
    realities,
)
from tests.conftest import Run

TARGETS = """\
[targets.gpt]
provider = "openai"
model = "gpt-4o-mini"

[targets.llama]
provider = "together"
model = "meta-llama/Llama-3.3-70B-Instruct-Turbo"

[targets.local]
provider = "ollama"
model = "llama3.2"

[targets.qwen]
provider = "vllm"
model = "Qwen3-32B"

[targets.own]
provider = "custom"
base_url = "http://127.0.0.1:9/v1"
model = "m"
"""


def test_every_preset_has_its_facts_and_they_agree() -> None:
    assert set(REALITIES) == set(PRESETS)
    for name, facts in REALITIES.items():
        if facts.fingerprint is FingerprintSupport.NOT_SENT:
            assert facts.stream is StreamShape.NONE, name
        if facts.stream is StreamShape.NONE:
            assert facts.fingerprint is FingerprintSupport.NOT_SENT, name
    assert realities("no-such-provider") == REALITIES["custom"]


@pytest.mark.parametrize("name", ["together", "mistral", "anthropic", "gemini", "ollama"])
def test_providers_without_a_usable_fingerprint(name: str) -> None:
    assert not realities(name).signal
    assert "the canary watches its behaviour" in realities(name).summary()


def test_targets_says_what_each_fingerprint_is_worth(
    fpmon: Callable[..., Run], isolated: Path
) -> None:
    (isolated / "fpmon.toml").write_text(TARGETS)
    shown = fpmon("targets")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    # the last two columns: the fingerprint's worth, and the canary's mode and why
    cells = {
        line.split()[0]: re.split(r"\s{2,}", line.strip())[-2:]
        for line in lines[2:]
        if line and line[0] != "─"
    }
    assert cells["gpt"] == ["sent", "logprobs: the openai API returns the top 20 logprobs"]
    assert cells["llama"][0] == "not sent (no signal)"
    assert cells["local"][0] == "constant (no signal)"
    assert cells["local"][1].startswith("logprobs: ")  # where the fingerprint says nothing
    assert cells["qwen"][0] == "sent"
    assert cells["own"][0] == "undocumented"
    assert "no usable fingerprint" not in shown.out  # the table alone on stdout
    notes = shown.err.splitlines()
    assert [note.split(":")[1].strip() for note in notes] == ["llama", "local"]
    assert all(note.startswith("note: ") for note in notes)
    assert "sends no system_fingerprint" in notes[0]
    assert "always fp_ollama" in notes[1] and "the canary watches its behaviour" in notes[1]

    by_name = {t["name"]: t for t in fpmon("targets", "--json").json()["targets"]}
    assert by_name["qwen"]["provider_facts"] == {
        "fingerprint": "sent",
        "signal": True,
        "stream": "the last chunk only",
        "logprobs": "supported",
        "note": "decoded: version, parallelism, config hash; null in its none mode",
    }
    assert by_name["llama"]["provider_facts"]["signal"] is False
    assert by_name["local"]["provider_facts"]["fingerprint"] == "constant"


def test_init_says_so_for_each_key_it_finds(fpmon: Callable[..., Run], isolated: Path) -> None:
    keys = {"OPENAI_API_KEY": "sk-x", "MISTRAL_API_KEY": "m-x", "GROQ_API_KEY": "gsk_x"}
    result = fpmon("init", env=keys)
    assert result.code == 0, result.err
    said = {
        line.split(":")[0].strip(): line for line in result.out.splitlines() if line[:2] == "  "
    }
    assert set(said) == {"openai", "mistral", "groq"}
    assert "sends system_fingerprint (streams it on every chunk)" in said["openai"]
    assert "logprobs supported" in said["openai"]
    assert "sends no system_fingerprint" in said["mistral"]
    assert "the canary watches its behaviour" in said["mistral"]
    assert "logprobs refused" in said["groq"]
    written = (isolated / "fpmon.toml").read_text()
    assert "# sends no system_fingerprint" in written  # the file says it where one decides
    assert set(tomllib.loads(written)["targets"]) == {"openai", "mistral", "groq"}
    assert fpmon("targets", env=keys).code == 0
