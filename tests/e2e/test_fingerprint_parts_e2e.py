"""Fingerprints that explain themselves, through the installed `fpmon` against the fake API: a
vLLM upgrade and a DeepSeek redeployment say which parts changed in the diff table, the JSON
and the markdown report; `stats` groups config hashes under one version; a team's own format
from fpmon.toml decodes; constant and null-only fingerprints are called out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import Run

VLLM_OLD, VLLM_NEW = "vllm-0.11.2-tp4-a3b21f94", "vllm-0.12.0-tp8-5c9e0d11"
DEEPSEEK_OLD = "fp_feb633d1f5_prod0820_fp8_kvcache"
DEEPSEEK_NEW = "fp_0a1b2c3d4e_prod0911_fp8_kvcache"


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    models = {
        "vllm-m": ModelBehaviour([VLLM_OLD], "Qwen3-32B"),
        "deepseek-chat": ModelBehaviour([DEEPSEEK_OLD], "deepseek-chat"),
        "opaque": ModelBehaviour(["fp_44709d6fcb"], "gpt-4o-mini-2024-07-18"),
        "fleet": ModelBehaviour(
            [
                "vllm-0.12.0-tp8-aaaaaaaa",
                "vllm-0.12.0-tp8-bbbbbbbb",
                "vllm-0.12.0-tp8-cccccccc",
                "vllm-0.11.2-tp4-dddddddd",
            ],
            "Qwen3-32B",
        ),
        "ollama": ModelBehaviour(["fp_ollama"], "llama3.2"),
        "vllm-none": ModelBehaviour([None], "Qwen3-32B"),
        "gateway": ModelBehaviour(["2.3-eu-0000aaaa"], "g-1"),
    }
    with FakeAPI(models) as fake:
        yield fake


def write(path: Path, base_url: str, targets: dict[str, str], **top: Any) -> None:
    path.write_text(
        tomli_w.dumps(
            {
                **top,
                "defaults": {"retries": 0, "timeout": "5s", "learning": False, "samples": 4},
                "targets": {
                    name: {"provider": "custom", "base_url": base_url, "model": model}
                    for name, model in targets.items()
                },
            }
        )
    )


def test_a_change_says_which_parts_moved(
    fpmon: Callable[..., Run], api: FakeAPI, isolated: Path
) -> None:
    targets = {"vllm": "vllm-m", "deepseek": "deepseek-chat", "openai": "opaque"}
    write(isolated / "fpmon.toml", api.base_url, targets)
    assert fpmon("check").code == 0
    api.rotate("vllm-m", [VLLM_NEW])
    api.rotate("deepseek-chat", [DEEPSEEK_NEW])
    api.rotate("opaque", ["fp_e9917c3b55"])

    table = fpmon("check", "--no-record")
    assert table.code == 1
    lines = table.out.splitlines()
    assert any("what changed" in line for line in lines)
    vllm = next(line for line in lines if line.startswith("vllm") and "fingerprint" in line)
    assert vllm.rstrip().endswith("vllm 0.11.2 → 0.12.0, tp 4 → 8; config hash changed")
    deepseek = next(line for line in lines if line.startswith("deepseek") and "fingerprint" in line)
    assert deepseek.rstrip().endswith("deployment prod0820 → prod0911; fingerprint hash changed")
    opaque = next(line for line in lines if line.startswith("openai") and "fingerprint" in line)
    assert opaque.rstrip().endswith("UTC")  # an opaque value: nothing to explain

    markdown = fpmon("check", "--no-record", "--format", "markdown")
    assert "(vllm 0.11.2 → 0.12.0, tp 4 → 8; config hash changed)" in markdown.out

    data = fpmon("check", "--json").json()
    by_name = {t["name"]: t for t in data["targets"]}
    (change,) = [c for c in by_name["vllm"]["changes"] if c["field"] == "fingerprint"]
    assert (change["before"], change["now"]) == ([VLLM_OLD], [VLLM_NEW])
    parts = change["parts"]
    assert parts["format"] == "vllm"
    assert parts["summary"] == "vllm 0.11.2 → 0.12.0, tp 4 → 8; config hash changed"
    assert [(c["part"], c["before"], c["now"], c["opaque"]) for c in parts["changes"]] == [
        ("version", ["0.11.2"], ["0.12.0"], False),
        ("tp", ["4"], ["8"], False),
        ("config_hash", ["a3b21f94"], ["5c9e0d11"], True),
    ]
    (opaque_change,) = [c for c in by_name["openai"]["changes"] if c["field"] == "fingerprint"]
    assert opaque_change["parts"] is None


def test_a_teams_own_format_decodes(
    fpmon: Callable[..., Run], api: FakeAPI, isolated: Path
) -> None:
    formats = {
        "gateway": {
            "pattern": r"(?P<version>\d+\.\d+)-(?P<region>[a-z]+)-(?P<build_hash>[0-9a-f]{8})",
            "opaque": ["build_hash"],
            "labels": {"version": "gateway"},
        }
    }
    write(isolated / "fpmon.toml", api.base_url, {"gw": "gateway"}, fingerprint_formats=formats)
    assert fpmon("check").code == 0
    api.rotate("gateway", ["2.4-us-1111bbbb"])
    (target,) = fpmon("check", "--json").json()["targets"]
    (change,) = [c for c in target["changes"] if c["field"] == "fingerprint"]
    assert change["parts"]["format"] == "gateway"
    assert change["parts"]["summary"] == "gateway 2.3 → 2.4, region eu → us; build hash changed"


def test_stats_group_config_hashes_under_one_version(
    fpmon: Callable[..., Run], api: FakeAPI, isolated: Path
) -> None:
    write(isolated / "fpmon.toml", api.base_url, {"fleet": "fleet"})
    assert fpmon("check").code == 0
    shown = fpmon("stats")
    assert shown.code == 0, shown.err
    assert "fleet: served now, by the parts of the fingerprints" in shown.out
    rows = [line.split("   ") for line in shown.out.splitlines() if line.startswith("vllm ")]
    assert [(row[1].strip(), row[-1].strip()) for row in rows] == [
        ("vllm 0.12.0, tp 8", "75%"),
        ("vllm 0.11.2, tp 4", "25%"),
    ]
    assert "3: vllm-0.12.0-tp8-aaaaaaaa, vllm-0.12.0-tp8-bbbbbbbb, vllm-0.12.0-tp8-cccccccc" in (
        shown.out
    )
    (target,) = fpmon("stats", "--json").json()["targets"]
    first, second = target["served"]["groups"]
    assert first["format"] == "vllm" and first["share"] == 0.75
    assert first["parts"] == {"vllm": "0.12.0", "tp": "8"}
    assert len(first["fingerprints"]) == 3 and second["parts"]["tp"] == "4"
    assert target["no_signal"] is None


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("ollama", "fp_ollama is Ollama's constant"),
        ("vllm-none", "every response had a null fingerprint"),
    ],
)
def test_fingerprints_without_signal_are_called_out(
    fpmon: Callable[..., Run], api: FakeAPI, isolated: Path, model: str, reason: str
) -> None:
    write(isolated / "fpmon.toml", api.base_url, {"local": model})
    first = fpmon("check")
    assert first.code == 0, first.err
    line = next(x for x in first.out.splitlines() if "no usable fingerprint" in x)
    assert line.startswith(f"local: this server sends no usable fingerprint: {reason}")
    assert "the canary watches its behaviour" in line
    same = fpmon("check")  # said at the first check, where it explains what was found
    assert "no usable fingerprint" not in same.out
    (target,) = fpmon("check", "--json").json()["targets"]
    assert reason in target["no_signal"]
    stats = fpmon("stats")
    assert f"local: this server sends no usable fingerprint: {reason}" in stats.out
    (figures,) = fpmon("stats", "--json").json()["targets"]
    assert reason in figures["no_signal"] and figures["served"]["groups"] == []


def test_a_useful_fingerprint_is_not_called_out(
    fpmon: Callable[..., Run], api: FakeAPI, isolated: Path
) -> None:
    write(isolated / "fpmon.toml", api.base_url, {"openai": "opaque"})
    first = fpmon("check")
    assert first.code == 0 and "no usable fingerprint" not in first.out
    (target,) = fpmon("check", "--json").json()["targets"]
    assert target["no_signal"] is None
