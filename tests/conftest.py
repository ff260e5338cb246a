"""Shared fixtures: an isolated environment, the installed `fpmon` command, the fake API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fp_monitor.config.providers import PRESETS
from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour

FPMON = shutil.which("fpmon", path=str(Path(sys.executable).parent)) or shutil.which("fpmon")


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no config, no provider keys and private state dirs."""
    for preset in PRESETS.values():
        if preset.key_env:
            monkeypatch.delenv(preset.key_env, raising=False)
    for name in ("FPMON_CONFIG", "FPMON_HISTORY", "FPMON_BASELINE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fpmon(isolated: Path) -> Callable[..., Run]:
    """Run the installed `fpmon` command as a subprocess in the isolated directory."""
    if FPMON is None:
        pytest.fail("the fpmon command is not installed: pip install -e '.[dev]'")

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Run:
        proc = subprocess.run(
            [FPMON, *args],
            capture_output=True,
            text=True,
            cwd=isolated,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def fake() -> Iterator[FakeAPI]:
    """A fake API on loopback serving `model-a` (two fingerprints) and `model-b` (one)."""
    api = FakeAPI(
        {
            "model-a": ModelBehaviour(
                fingerprints=["fp_aaaaaaaaaa", "fp_bbbbbbbbbb"], resolved_model="model-a-2026"
            ),
            "model-b": ModelBehaviour(fingerprints=["fp_cccccccccc"], resolved_model="model-b-v1"),
        }
    )
    with api:
        yield api


def config_text(base_url: str, **targets: dict[str, Any]) -> str:
    """fpmon.toml text: one [targets.NAME] per keyword, provider custom at `base_url`.
    Learning is off by default here, so that tests of the core rule say what they mean; tests
    of learning turn it on per target."""
    return tomli_w.dumps(
        {
            "defaults": {"retries": 0, "timeout": "5s", "learning": False},
            "targets": {
                name: {"provider": "custom", "base_url": base_url, **keys}
                for name, keys in targets.items()
            },
        }
    )


@pytest.fixture
def write_config(isolated: Path) -> Callable[..., Path]:
    def write(base_url: str, **targets: dict[str, Any]) -> Path:
        path = isolated / "fpmon.toml"
        path.write_text(config_text(base_url, **targets))
        return path

    return write


@pytest.fixture
def cli(isolated: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Run the command line in this process (typer's app through `main`, as the installed
    command does), in the isolated directory: for the many cases that need no process of their
    own (signals, a terminal, a server in the background), it is several times quicker."""
    from fp_monitor.cli import main

    def run(*args: str) -> Run:
        capsys.readouterr()  # what earlier calls left
        code = main(list(args))
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run
