"""Fixtures for long-running commands: the installed `fpmon` started in the background."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FPMON

Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def spawn(isolated: Path) -> Iterator[Spawn]:
    """Start `fpmon ARGS...` in the isolated directory, its output piped; killed at teardown
    if a test left it running."""
    if FPMON is None:
        pytest.fail("the fpmon command is not installed: pip install -e '.[dev]'")
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [FPMON, *args],
            cwd=isolated,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def wait_for(condition: Callable[[], object], timeout: float = 30, what: str = "it") -> object:
    """Poll `condition` until it returns something true; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture
def recorder(isolated: Path) -> tuple[str, Path]:
    """A command notifier: its `run = [...]` line, and the file where it appends one JSON line
    per event: {"env": the FPMON_* variables fpmon sets, "stdin": the event it read}."""
    script = isolated / "record.py"
    out = isolated / "events.jsonl"
    script.write_text(
        "import json, os, sys\n"
        "names = ['FPMON_EVENT', 'FPMON_TARGET', 'FPMON_STATUS', 'FPMON_BEFORE', 'FPMON_NOW']\n"
        "env = {k: os.environ[k] for k in names if k in os.environ}\n"
        "with open(sys.argv[1], 'a') as out:\n"
        "    out.write(json.dumps({'env': env, 'stdin': json.load(sys.stdin)}) + '\\n')\n"
    )
    return f'run = ["{sys.executable}", "{script}", "{out}"]', out


def recorded(path: Path) -> list[dict[str, Any]]:
    """What the recorder's command notifier received, in order."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def report_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fpmon.toml of a history recorded for `fpmon report` (see report_history.py), once per
    test module; a test that alters the history works on a copy."""
    from tests.e2e.report_history import record_history

    return record_history(tmp_path_factory.mktemp("report"))
