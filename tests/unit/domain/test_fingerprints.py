"""domain.fingerprints: the built-in grammars decode what vLLM, DeepSeek, llama.cpp and SGLang's
gateway send; a change says which parts moved; served values group by their parts; constant and
null-only values carry no signal; a team's own formats from fpmon.toml come first."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fp_monitor.config.settings import load_config
from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.fingerprints import (
    BUILTIN_GRAMMARS,
    DECODE_LIMIT,
    Grammar,
    decode,
    diff_parts,
    group_by_parts,
    no_signal,
)
from fp_monitor.domain.models import ABSENT, NULL


def parts(value: str) -> tuple[str, dict[str, str | None]] | None:
    decoded = decode(value)
    if decoded is None:
        return None
    return decoded.grammar, {part.name: found for part, found in decoded.parts}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "vllm-0.11.2-tp4-pp2-dp2-ep-a3b21f94",
            ("vllm", {"version": "0.11.2", "tp": "4", "pp": "2", "dp": "2", "ep": "on"}),
        ),
        (  # vLLM's hash mode, and full mode at degree 1: the parallelism is left out
            "vllm-0.12.0rc1-nohash",
            ("vllm", {"version": "0.12.0rc1", "tp": "1", "pp": "1", "dp": "1", "ep": "off"}),
        ),
        ("vllm-0.11.1.dev12+g1234abc-tp8-00ff00ff", ("vllm", {"version": "0.11.1.dev12+g1234abc"})),
        (
            "fp_feb633d1f5_prod0820_fp8_kvcache",
            ("deepseek", {"build_hash": "feb633d1f5", "deployment": "prod0820"}),
        ),
        ("fp_feb633d1f5_prod0820", ("deepseek", {"features": "none"})),
        ("b4567-1d1e6a9", ("llama.cpp", {"build": "4567", "commit": "1d1e6a9"})),
        ("default", ("sglang", {"weight_version": "default"})),
        ("v2.1-rc1", ("sglang", {"weight_version": "v2.1-rc1"})),
        ("2026-05-01T12:00", ("sglang", {"weight_version": "2026-05-01T12:00"})),
    ],
)
def test_builtin_grammars_decode(value: str, expected: tuple[str, dict[str, str]]) -> None:
    found = parts(value)
    assert found is not None
    assert found[0] == expected[0]
    assert expected[1].items() <= found[1].items()


def test_deepseek_features_are_one_part() -> None:
    found = parts("fp_feb633d1f5_prod0820_fp8_kvcache")
    assert found is not None and found[1]["features"] == "fp8_kvcache"


@pytest.mark.parametrize(
    "value",
    [
        "fp_44709d6fcb",  # OpenAI: opaque by design
        "fp_ollama",
        NULL,
        ABSENT,
        "",
        "vllm-0.11.2-tp4-A3B21F94",  # not a hash vLLM makes
        "vllm-0.11.2-" + "a" * DECODE_LIMIT,
        "b4567-",
        "version 2",
    ],
)
def test_other_values_stay_opaque(value: str) -> None:
    assert decode(value) is None


def test_a_vllm_upgrade_says_which_parts_moved() -> None:
    diff = diff_parts(["vllm-0.11.2-tp4-a3b21f94"], ["vllm-0.12.0-tp8-5c9e0d11"])
    assert diff is not None and diff.grammar == "vllm"
    assert diff.summary == "vllm 0.11.2 → 0.12.0, tp 4 → 8; config hash changed"
    assert [(c.part, c.before, c.now, c.opaque) for c in diff.changes] == [
        ("version", ("0.11.2",), ("0.12.0",), False),
        ("tp", ("4",), ("8",), False),
        ("config_hash", ("a3b21f94",), ("5c9e0d11",), True),
    ]


def test_a_new_config_hash_alone_is_only_a_changed_hash() -> None:
    diff = diff_parts(
        ["vllm-0.12.0-tp8-5c9e0d11"], ["vllm-0.12.0-tp8-5c9e0d11", "vllm-0.12.0-tp8-77777777"]
    )
    assert diff is not None and diff.summary == "config hash changed"


def test_a_deepseek_redeployment_names_the_deployments() -> None:
    diff = diff_parts(
        ["fp_feb633d1f5_prod0820_fp8_kvcache"], ["fp_0a1b2c3d4e_prod0911_fp8_kvcache"]
    )
    assert diff is not None
    assert diff.summary == "deployment prod0820 → prod0911; fingerprint hash changed"


def test_expert_parallel_and_a_degree_of_one_read_as_values() -> None:
    diff = diff_parts(["vllm-0.12.0-5c9e0d11"], ["vllm-0.12.0-tp2-ep-5c9e0d11"])
    assert diff is not None and diff.summary == "tp 1 → 2, expert parallel off → on"


@pytest.mark.parametrize(
    ("before", "now"),
    [
        (["fp_44709d6fcb"], ["fp_e9917c3b55"]),  # opaque, as today
        (["fp_44709d6fcb"], ["vllm-0.12.0-tp8-5c9e0d11"]),  # no decodable value before
        (["vllm-0.12.0-tp8-5c9e0d11"], ["b4567-1d1e6a9"]),  # another kind of server
        (["vllm-0.12.0-tp8-5c9e0d11"], ["vllm-0.12.0-tp8-77777777", NULL]),  # a null came too
    ],
)
def test_changes_that_do_not_decode_stay_opaque(before: list[str], now: list[str]) -> None:
    assert diff_parts(before, now) is None


def test_a_hostile_part_is_shown_escaped() -> None:
    diff = diff_parts(["vllm-0.11.2-a3b21f94"], ["vllm-0.1\x1b[2J\u202e-a3b21f94"])
    assert diff is not None
    assert "\x1b" not in diff.summary and "\u202e" not in diff.summary
    assert "\\x1b[2J" in diff.summary
    assert diff.changes[0].now == ("0.1\x1b[2J\u202e",)  # the data itself is kept whole


def test_served_values_group_under_their_version_and_topology() -> None:
    shares = [
        ("vllm-0.12.0-tp8-aaaaaaaa", 0.4),
        ("vllm-0.12.0-tp8-bbbbbbbb", 0.2),
        ("vllm-0.12.0-tp8-cccccccc", 0.1),
        ("vllm-0.11.2-tp4-dddddddd", 0.2),
        ("fp_44709d6fcb", 0.1),  # undecodable: not grouped
    ]
    first, second = group_by_parts(shares)
    assert (first.grammar, dict(first.parts)["vllm"], dict(first.parts)["tp"]) == (
        "vllm",
        "0.12.0",
        "8",
    )
    assert len(first.values) == 3 and first.share == pytest.approx(0.7)
    assert dict(second.parts)["vllm"] == "0.11.2" and second.share == pytest.approx(0.2)
    assert group_by_parts([("fp_44709d6fcb", 1.0)]) == ()


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ([NULL], "every response had a null fingerprint"),
        ([ABSENT], "no response had a system_fingerprint"),
        ([NULL, ""], "no response had a fingerprint value"),
        (["fp_ollama"], "fp_ollama is Ollama's constant"),
        (["fp_ollama", NULL], "fp_ollama is Ollama's constant"),
    ],
)
def test_values_without_signal_are_called_out(values: list[str], says: str) -> None:
    reason = no_signal(values)
    assert reason is not None and says in reason


@pytest.mark.parametrize("values", [[], ["fp_44709d6fcb"], ["fp_ollama", "fp_44709d6fcb"]])
def test_values_with_a_signal_are_not(values: list[str]) -> None:
    assert no_signal(values) is None


# --- a team's own formats ---------------------------------------------------------------------


def config(tmp_path: Path, formats: str) -> Path:
    path = tmp_path / "fpmon.toml"
    target = '[targets.t]\nprovider = "custom"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
    path.write_text(textwrap.dedent(formats) + "\n" + target)
    return path


def test_own_formats_decode_first(tmp_path: Path) -> None:
    loaded = load_config(
        config(
            tmp_path,
            """
            [fingerprint_formats.gateway]
            pattern = '(?P<version>\\d+\\.\\d+)-(?P<region>[a-z]+)-(?P<build_hash>[0-9a-f]{8})'
            opaque = ["build_hash"]
            labels = { version = "gateway" }
            """,
        )
    )
    assert loaded.grammars[0].name == "gateway"
    assert loaded.grammars[1:] == BUILTIN_GRAMMARS
    diff = diff_parts(["2.3-eu-0000aaaa"], ["2.4-us-1111bbbb"], loaded.grammars)
    assert diff is not None
    assert diff.summary == "gateway 2.3 → 2.4, region eu → us; build hash changed"


@pytest.mark.parametrize(
    ("formats", "message"),
    [
        (
            "[fingerprint_formats.g]\npattern = '(?P<v'\n",
            "[fingerprint_formats.g] pattern: not a valid regular expression",
        ),
        ("[fingerprint_formats.g]\npattern = '[0-9]+'\n", "has no named group"),
        ("[fingerprint_formats.g]\n", "pattern: expected a regular expression"),
        ("[fingerprint_formats.g]\npattern = '(?P<v>x)'\nopaque = ['w']\n", "no group named w"),
        (
            "[fingerprint_formats.g]\npattern = '(?P<v>x)'\nopaque = 'v'\n",
            "opaque: expected a list",
        ),
        ("[fingerprint_formats.g]\npattern = '(?P<v>x)'\nlabels = { v = 1 }\n", "labels: expected"),
        ("[fingerprint_formats.g]\npattern = '(?P<v>x)'\nregex = 'y'\n", "unknown key 'regex'"),
        ("fingerprint_formats = 1\n", "fingerprint_formats must be a table"),
        ("[fingerprint_formats]\ng = 'x'\n", "[fingerprint_formats.g] must be a table"),
    ],
)
def test_a_bad_format_is_one_line_naming_the_table_and_key(
    tmp_path: Path, formats: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config(tmp_path, formats))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_grammar_of_names_its_parts() -> None:
    grammar = Grammar.of("g", r"(?P<major>\d+)\.(?P<build_hash>[0-9a-f]+)", opaque=["build_hash"])
    assert [(p.name, p.label, p.opaque) for p in grammar.parts] == [
        ("major", "major", False),
        ("build_hash", "build hash", True),
    ]
