"""Docs examples that the shell runner of test_examples.py does not run, run as written:

- every cron line (examples/crontab and the `cron` blocks of the docs) under `env -i`, the bare
  environment cron gives a job, with its keys in the env file the page describes;
- the Python examples of each page, in order, as one program, against the fake API (the
  provider's URL is the one thing replaced) with a provider key in the environment;
- no docs example starts the fake API on the port that `fpmon proxy` listens on by default, so
  that a reader following one page after another never meets "Address already in use".

Like the rest of tests/docs, it drives the installed `fpmon` (the fake API included) and
imports nothing from fp_monitor.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.markdown import ROOT, SHELL, all_blocks, blocks, commands, pages

BIN = str(Path(sys.executable).parent)
KEY = "xai-docs-0123456789"
CRON_LINE = re.compile(r"^(?:\S+\s+){5}(?P<command>\S.*)$")


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[str]:
    """`fpmon fake-api` on a free port, requiring KEY, serving grok-4 as its default fleet
    does (the values the pages show): its base URL."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        'api_keys_env = ["FAKE_KEY"]\n[models."grok-4"]\n'
        'fingerprints = ["fp_6ca29cf396", "fp_9a1b2c3d4e"]\nresolved_model = "grok-4-0709"\n'
    )
    env = {**os.environ, "FAKE_KEY": KEY}
    proc = subprocess.Popen(
        ["fpmon", "fake-api", "--config", str(fleet)],
        env={**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    started = proc.stdout.readline()
    match = re.match(r"fake API serving on (\S+) ", started)
    assert match, started
    try:
        yield match[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """What cron gives a job (HOME, LOGNAME, SHELL, a short PATH), with fpmon on it."""
    return {
        "HOME": str(home),
        "LOGNAME": "fpmon",
        "SHELL": "/bin/sh",
        "PATH": f"{BIN}:/usr/bin:/bin",
        **extra,
    }


def cron_lines() -> list[tuple[str, str]]:
    """(where, command) of every cron line, commented-out alternatives included."""
    found = []
    crontab = ROOT / "examples" / "crontab"
    for number, line in enumerate(crontab.read_text().splitlines(), start=1):
        text = line.removeprefix("# ")
        if (match := CRON_LINE.match(text)) and re.match(r"^[*\d/,-]+\s", text):
            found.append((f"examples/crontab:{number}", match["command"]))
    for block in all_blocks("cron"):
        for line in block.text.splitlines():
            if match := CRON_LINE.match(line):
                found.append((block.where, match["command"]))
    return found


CRON = cron_lines()


def test_there_are_cron_lines_to_run() -> None:
    assert len(CRON) >= 3, CRON


@pytest.mark.parametrize(("where", "command"), CRON, ids=[w for w, _ in CRON])
def test_a_cron_line_works_in_crons_bare_environment(
    tmp_path: Path, fake_api: str, where: str, command: str
) -> None:
    home = tmp_path / "home"
    (home / ".config" / "fpmon").mkdir(parents=True)
    (home / ".config" / "fpmon" / "env").write_text(f"XAI_API_KEY={KEY}\n")
    (home / "fpmon").mkdir()
    (home / "fpmon" / "fpmon.toml").write_text(
        f'[targets.grok]\nprovider = "xai"\nbase_url = "{fake_api}"\nmodel = "grok-4"\n'
    )
    # A path outside this scratch directory (node-exporter's) is written under it instead.
    command = command.replace("/var/lib/node_exporter/textfile/", f"{home}/textfile/")
    proc = subprocess.run(
        ["env", "-i", *(f"{k}={v}" for k, v in bare_env(home).items()), "/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{where}: {proc.stdout}{proc.stderr}"
    assert proc.stdout == "", f"{where}: a quiet check printed: cron would mail it"
    checks = subprocess.run(
        ["fpmon", "history", "--format", "json"],
        cwd=home / "fpmon",
        env=bare_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    [run] = json.loads(checks.stdout)["runs"]
    assert run["errors"] == 0 and run["fingerprints"], f"{where}: {run}"


PYTHON_PAGES = [p for p in pages() if any(b.lang == "python" and not b.not_run for b in blocks(p))]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[str(p.relative_to(ROOT)) for p in PYTHON_PAGES])
def test_the_python_examples_of_a_page_run(tmp_path: Path, fake_api: str, page: Path) -> None:
    """The page's Python blocks in order, as one program; the reader has a configuration with
    the target the examples name and the lock that `fpmon accept` writes for it."""
    env = bare_env(
        tmp_path,
        XAI_API_KEY=KEY,
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
    )
    (tmp_path / "fpmon.toml").write_text(
        f'[targets.grok]\nprovider = "xai"\nbase_url = "{fake_api}"\nmodel = "grok-4"\n'
    )
    for command in (["check"], ["accept"]):
        done = subprocess.run(
            ["fpmon", *command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    program = "\n".join(b.text for b in blocks(page) if b.lang == "python" and not b.not_run)
    program = program.replace("https://api.x.ai/v1", fake_api)
    proc = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{page.name}:\n{program}\n--- stderr\n{proc.stderr}"
    traffic = subprocess.run(
        ["fpmon", "history", "--source", "traffic", "--observations", "--format", "jsonl"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    sent = [json.loads(line) for line in traffic.stdout.splitlines()]
    if "recording_client(" in program:  # what the page shows was recorded, with no error
        assert sent and all(r["error"] is None for r in sent), traffic.stdout + traffic.stderr


def test_no_example_starts_the_fake_api_on_the_proxys_default_port() -> None:
    help_text = subprocess.run(
        ["fpmon", "proxy", "--help"],
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
    ).stdout
    default = re.search(r"\[default:\s*[\d.]+:(\d+)\]", re.sub(r"[\s│]+", " ", help_text))
    assert default, help_text
    ports = {
        (b.where, port)
        for page in pages()
        for b in blocks(page)
        if b.lang in SHELL
        for port in re.findall(r"fpmon fake-api\b[^\n]*--port (\d+)", commands(b))
    }
    assert ports, "the docs start the fake API somewhere"
    assert [(where, p) for where, p in ports if p == default[1]] == []
