"""Fixtures for long-running commands: the installed `fpmon` started in the background."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
