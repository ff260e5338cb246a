"""The installed `fpmon` command beyond `check`: the demo, help and usage errors, configuration
errors end to end, `targets`, `init`, and how internal errors and interrupts end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.cli.app import app
from fp_monitor.devtools.fake_api import FakeAPI
from tests.conftest import Run

STATUSES = ("error", "first", "new", "changed", "same", "learned", "drift")
COMMANDS = sorted(
    [
        c.name or (c.callback.__name__.replace("_", "-") if c.callback else "")
        for c in app.registered_commands
    ]
    + [g.name or "" for g in app.registered_groups]
)
CANARY = "canary-0123456789abcdef"  # not shaped like a provider key: only registration hides it


def rows(output: str) -> list[list[str]]:
    """The table rows of plain output, each split into its cells."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines() if line.strip()]


def row_of(output: str, first_cell: str) -> list[str]:
    return next(r for r in rows(output) if r[0] == first_cell)


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# --- fpmon demo ------------------------------------------------------------------------------


def test_demo_shows_learning_and_the_statuses_in_order_and_leaves_nothing_behind(
    fpmon: Callable[..., Run], isolated: Path
) -> None:
    tmp = isolated / "tmp"
    tmp.mkdir()
    result = fpmon("demo", env={"TMPDIR": str(tmp)})
    assert result.code == 0, result.err
    assert "\x1b" not in result.out
    table = rows(result.out)
    status_rows = [i for i, r in enumerate(table) if r[0] == "demo" and r[1] in STATUSES]
    assert [table[i][1] for i in status_rows] == [
        "first",
        "learned",
        "same",
        "new",
        "changed",
        "drift",
    ]
    explained = [line.split(":")[0] for line in result.out.splitlines() if line.startswith("-> ")]
    assert explained == ["-> first", "-> learned", "-> same", "-> new", "-> changed", "-> drift"]
    # the learning note when learning starts and when it ends, not at every check in between
    assert result.out.count("demo: learning its served set") == 1
    assert result.out.count("demo: learning is over") == 1
    assert result.out.index("demo: learning is over") < result.out.index("-> same")
    behaviour = [r for r in table[status_rows[5] :] if r[:2] == ["demo", "behaviour"]]
    assert len(behaviour) == 1 and "x the noise" in " ".join(behaviour[0])
    new_at, changed_at = status_rows[3], status_rows[4]
    diff = [r for r in table[new_at:changed_at] if r[:2] == ["demo", "fingerprint"]]
    assert len(diff) == 1
    assert diff[0][2:4] == ["fp_4f1c2a9e07, fp_71d0c9e2aa, fp_b83d5e6a10", "fp_e9917c3b55"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", diff[0][4])
    assert "changes" in [r[0] for r in table[new_at:changed_at]]
    # Its temporary history is gone, and nothing was written to the user's data or cwd.
    history_dir = re.search(r"a history in (\S+)", result.out)
    assert history_dir and not Path(history_dir.group(1)).exists()
    assert files_under(isolated) == []


# --- help and usage errors -------------------------------------------------------------------


def test_no_arguments_prints_help_and_exits_2(fpmon: Callable[..., Run]) -> None:
    result = fpmon()
    assert result.code == 2
    both = result.out + result.err
    assert "Usage: fpmon" in both and "Exit codes" in both
    # No error line with an empty message (and a pointless `fpmon  --help` hint).
    assert not re.search(r"error:\s*(\(|$)", result.err, re.M), result.err


def test_main_help_lists_every_command_and_the_exit_codes(fpmon: Callable[..., Run]) -> None:
    result = fpmon("--help")
    assert result.code == 0 and result.err == ""
    words = " ".join(result.out.split())
    assert "Exit codes" in words
    for code in ("0", "1", "2", "3", "4", "70", "130"):
        assert re.search(rf"[:;] {code} [a-z]", words), code
    for command in COMMANDS:
        assert re.search(rf"│ {re.escape(command)}\s", result.out), command


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(fpmon: Callable[..., Run], command: str) -> None:
    result = fpmon(command, "--help")
    assert result.code == 0, result.err
    assert f"Usage: fpmon {command}" in result.out


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("check", "--fail-on", "bogus"), "--fail-on"),
        (("check", "--samples", "0"), "--samples"),
        (("bogus",), "bogus"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    fpmon: Callable[..., Run], isolated: Path, args: tuple[str, ...], names: str
) -> None:
    result = fpmon(*args)
    assert result.code == 2
    assert result.out == ""
    line = one_line(result.err)
    assert line.startswith("fpmon: error: ") and names in line
    assert "Traceback" not in result.err
    assert files_under(isolated) == []
    hint = re.search(r"`(fpmon [^`]*)`", line)
    if hint and args[0] == "check":
        assert hint.group(1) == "fpmon check --help"


def test_unknown_command_hint_names_a_help_that_works(fpmon: Callable[..., Run]) -> None:
    result = fpmon("bogus")
    assert result.code == 2
    hint = re.search(r"`fpmon ([^`]*)`", result.err)
    if hint:
        helped = fpmon(*hint.group(1).split())
        assert helped.code == 0, f"the hint `fpmon {hint.group(1)}` fails: {helped.err}"


# --- configuration errors end to end ---------------------------------------------------------


def test_unknown_key_is_exit_2_naming_file_target_key_and_nothing_probed(
    fpmon: Callable[..., Run], fake: FakeAPI, isolated: Path
) -> None:
    (isolated / "fpmon.toml").write_text(
        f'[targets.alpha]\nprovider = "custom"\nbase_url = "{fake.base_url}"\n'
        'model = "model-a"\nsampels = 2\n'
    )
    result = fpmon("check")
    assert result.code == 2
    line = one_line(result.err)
    for part in ("fpmon.toml", "alpha", "sampels", "did you mean 'samples'"):
        assert part in line
    assert result.out == ""
    assert fake.requests() == []
    assert files_under(isolated) == [isolated / "fpmon.toml"]


@pytest.mark.parametrize(
    "line",
    [
        'api_key = "sk-proj-abcdefghijklmnopqrstuvwxyz012345"',
        f'token = "{CANARY}"',
        f'api_key_env = "{CANARY}-with spaces"',
        f'headers = {{ Authorization = "Bearer {CANARY}" }}',
    ],
    ids=["api_key", "token", "api_key_env", "auth-header"],
)
def test_literal_key_in_the_config_is_refused_and_not_echoed(
    fpmon: Callable[..., Run], fake: FakeAPI, isolated: Path, line: str
) -> None:
    (isolated / "fpmon.toml").write_text(
        f'[targets.alpha]\nprovider = "openai"\nbase_url = "{fake.base_url}"\n'
        f'model = "model-a"\n{line}\n'
    )
    result = fpmon("check")
    assert result.code == 2
    message = one_line(result.err)
    assert "fpmon.toml" in message and "alpha" in message and "api_key_env" in message
    secret = line.split('"')[1].removeprefix("Bearer ")
    assert secret not in result.out + result.err
    assert CANARY not in result.out + result.err
    assert fake.requests() == []
    assert files_under(isolated) == [isolated / "fpmon.toml"]


def test_no_config_and_no_keys_says_how_to_start(fpmon: Callable[..., Run], isolated: Path) -> None:
    result = fpmon("check")
    assert result.code == 2
    line = one_line(result.err)
    assert "fpmon init" in line and "fpmon demo" in line
    assert files_under(isolated) == []


@pytest.mark.parametrize("how", ["flag", "env"])
def test_missing_config_file_is_exit_2(fpmon: Callable[..., Run], isolated: Path, how: str) -> None:
    args, env = (
        (("--config", "missing.toml"), {})
        if how == "flag"
        else ((), {"FPMON_CONFIG": "missing.toml"})
    )
    result = fpmon("check", *args, env={**env, "OPENAI_API_KEY": "sk-unused-0123456789"})
    assert result.code == 2
    assert "missing.toml" in one_line(result.err)
    assert files_under(isolated) == []


# --- fpmon targets ---------------------------------------------------------------------------


def test_targets_from_the_environment_without_a_config(fpmon: Callable[..., Run]) -> None:
    env = {"OPENAI_API_KEY": CANARY}
    result = fpmon("targets", env=env)
    assert result.code == 0, result.err
    assert "environment" in result.out.splitlines()[0]
    assert row_of(result.out, "openai")[:6] == [
        "openai",
        "openai",
        "gpt-4o-mini",
        "https://api.openai.com/v1/chat/completions",
        "OPENAI_API_KEY",
        "set",
    ]
    as_json = fpmon("targets", "--json", env=env).json()
    assert as_json["config"] is None
    assert [t["name"] for t in as_json["targets"]] == ["openai"]
    assert CANARY not in result.out + json.dumps(as_json)


TARGETS_TOML = """\
[targets.gone]
provider = "openai"
model = "gpt-4o"
api_key_env = "FPMON_TEST_UNSET_KEY"

[targets.keyed]
provider = "custom"
base_url = "https://llm.example.com/v1/"
model = "m-1"
api_key_env = "FPMON_TEST_KEY"

[targets.local]
provider = "ollama"
model = "llama3.2"
enabled = false

[targets.az]
provider = "azure"
base_url = "https://res.openai.azure.com"
deployment = "prod-4o"
samples = 5
"""


def test_targets_table_and_json(fpmon: Callable[..., Run], isolated: Path) -> None:
    (isolated / "fpmon.toml").write_text(TARGETS_TOML)
    env = {"FPMON_TEST_KEY": CANARY}
    result = fpmon("targets", env=env)
    assert result.code == 0, result.err
    assert "\x1b" not in result.out
    assert "fpmon.toml" in result.out.splitlines()[0]
    table = rows(result.out)
    assert table[1][:6] == ["target", "provider", "model", "endpoint", "key variable", "key"]
    expected = [
        [
            "gone",
            "openai",
            "gpt-4o",
            "https://api.openai.com/v1/chat/completions",
            "FPMON_TEST_UNSET_KEY",
            "MISSING",
        ],
        [
            "keyed",
            "custom",
            "m-1",
            "https://llm.example.com/v1/chat/completions",
            "FPMON_TEST_KEY",
            "set",
        ],
        [
            "local (disabled)",
            "ollama",
            "llama3.2",
            "http://127.0.0.1:11434/v1/chat/completions",
            "-",
            "not needed",
        ],
        [
            "az",
            "azure",
            "prod-4o",
            "https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions"
            "?api-version=2024-10-21",
            "AZURE_OPENAI_API_KEY",
            "MISSING",
        ],
    ]
    assert [r[:6] for r in table[3:]] == expected

    data = fpmon("targets", "--json", env=env)
    assert data.code == 0
    parsed = data.json()
    assert parsed["version"] == 1 and parsed["config"] == "fpmon.toml"
    by_name = {t["name"]: t for t in parsed["targets"]}
    assert list(by_name) == ["gone", "keyed", "local", "az"]
    for row in expected:
        item = by_name[row[0].removesuffix(" (disabled)")]
        shown = [item["provider"], item["model"], item["endpoint"], item["api_key_env"] or "-"]
        assert [*shown, item["key"]] == row[1:]
    assert by_name["local"]["enabled"] is False and by_name["az"]["samples"] == 5
    assert by_name["gone"]["samples"] == 3 and by_name["gone"]["timeout"] == 30.0
    assert CANARY not in result.out + data.out


# --- fpmon init ------------------------------------------------------------------------------


def test_init_writes_a_target_per_key_present_and_refuses_to_overwrite(
    fpmon: Callable[..., Run], isolated: Path
) -> None:
    keys = {"XAI_API_KEY": "xai-" + CANARY, "GROQ_API_KEY": "gsk_" + CANARY}
    result = fpmon("init", env=keys)
    assert result.code == 0, result.err
    assert "xai" in result.out and "groq" in result.out
    path = isolated / "fpmon.toml"
    written = path.read_text()
    assert CANARY not in written
    targets = tomllib.loads(written)["targets"]
    assert targets == {
        "xai": {"provider": "xai", "model": "grok-4", "api_key_env": "XAI_API_KEY"},
        "groq": {
            "provider": "groq",
            "model": "llama-3.1-8b-instant",
            "api_key_env": "GROQ_API_KEY",
        },
    }
    loaded = fpmon("targets", env=keys)
    assert loaded.code == 0, loaded.err
    assert [row_of(loaded.out, name)[5] for name in ("xai", "groq")] == ["set", "set"]

    path.write_text(written + "\n# my own edit\n")
    edited = path.read_bytes()
    again = fpmon("init", env=keys)
    assert again.code == 2
    assert "--force" in one_line(again.err)
    assert path.read_bytes() == edited

    forced = fpmon("init", "--force", env={"GROQ_API_KEY": "gsk_" + CANARY})
    assert forced.code == 0, forced.err
    rewritten = path.read_text()
    assert "# my own edit" not in rewritten and CANARY not in rewritten
    assert list(tomllib.loads(rewritten)["targets"]) == ["groq"]


def test_init_without_keys_writes_an_openai_target_to_fill_in(
    fpmon: Callable[..., Run], isolated: Path
) -> None:
    result = fpmon("init", "--config", "sub.toml")
    assert result.code == 0, result.err
    targets = tomllib.loads((isolated / "sub.toml").read_text())["targets"]
    assert list(targets) == ["openai"]
    listed = fpmon("targets", "--config", "sub.toml")
    assert listed.code == 0 and row_of(listed.out, "openai")[5] == "MISSING"


# --- internal errors and interrupts ----------------------------------------------------------

FAILING_CHECK = """\
import os, sys
import fp_monitor.check

def run_plan(*args, **kwargs):
    raise {exception}("bug while holding " + os.environ["FPMON_TEST_KEY"])

fp_monitor.check.run_plan = run_plan
from fp_monitor.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def run_failing_check(
    isolated: Path, base_url: str, exception: str, *args: str
) -> subprocess.CompletedProcess[str]:
    (isolated / "fpmon.toml").write_text(
        f'[targets.alpha]\nprovider = "custom"\nbase_url = "{base_url}"\n'
        'model = "model-a"\napi_key_env = "FPMON_TEST_KEY"\n'
    )
    return subprocess.run(
        [sys.executable, "-c", FAILING_CHECK.format(exception=exception), *args],
        capture_output=True,
        text=True,
        cwd=isolated,
        env={**os.environ, "FPMON_TEST_KEY": CANARY},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_internal_error_is_exit_70_one_line_without_traceback_or_key(
    isolated: Path, fake: FakeAPI
) -> None:
    proc = run_failing_check(isolated, fake.base_url, "RuntimeError", "check")
    assert proc.returncode == 70
    line = one_line(proc.stderr)
    assert line.startswith("fpmon: internal error: RuntimeError") and "--debug" in line
    assert "Traceback" not in proc.stderr
    assert CANARY not in proc.stderr + proc.stdout
    assert fake.requests() == []


@pytest.mark.parametrize("where", ["after", "before"])
def test_debug_shows_the_traceback_without_the_key(
    isolated: Path, fake: FakeAPI, where: str
) -> None:
    args = ("check", "--debug") if where == "after" else ("--debug", "check")
    proc = run_failing_check(isolated, fake.base_url, "RuntimeError", *args)
    assert proc.returncode == 70
    lines = proc.stderr.splitlines()
    assert "Traceback (most recent call last):" in lines
    assert any(re.match(r'\s+File ".*cli/gate\.py", line \d+, in check$', line) for line in lines)
    assert any(line.startswith("RuntimeError: bug while holding") for line in lines)
    assert lines[-1].startswith("fpmon: internal error: RuntimeError")
    assert CANARY not in proc.stderr + proc.stdout
    assert proc.stdout == ""


def test_keyboard_interrupt_is_exit_130(isolated: Path, fake: FakeAPI) -> None:
    proc = run_failing_check(isolated, fake.base_url, "KeyboardInterrupt", "check")
    assert proc.returncode == 130
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() in ("", "fpmon: interrupted")
    assert proc.stdout == ""
