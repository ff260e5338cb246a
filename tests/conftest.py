"""Shared fixtures: an isolated environment, the installed `fpmon` command, the fake API."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
    for name in ("FPMON_CONFIG", "FPMON_HISTORY", "FPMON_BASELINE", "FPMON_SITE", "NO_COLOR"):
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
    Learning and the canary are off by default here, so that tests of the core rule say what
    they mean; tests of learning or the canary turn them on per target."""
    return tomli_w.dumps(
        {
            "defaults": {"retries": 0, "timeout": "5s", "learning": False, "canary": "off"},
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


# --- both stores ---------------------------------------------------------------------------
# FPMON_TEST_POSTGRES: the URL of a PostgreSQL server's database that may create databases
# (.ci/postgres.sh starts one). Without it the PostgreSQL half of `history_url` skips, unless
# FPMON_REQUIRE_POSTGRES is set (CI), where it fails.


def postgres_server() -> str:
    """The test server's URL, or skip (fail when FPMON_REQUIRE_POSTGRES is set)."""
    url = os.environ.get("FPMON_TEST_POSTGRES")
    if url:
        return url
    reason = "no PostgreSQL server: set FPMON_TEST_POSTGRES (`. .ci/postgres.sh` starts one)"
    if os.environ.get("FPMON_REQUIRE_POSTGRES"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new empty database on the test server, dropped afterwards: its URL."""
    import psycopg

    server = postgres_server()
    name = f"fpmon_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        parts = urlsplit(server)
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def history_url(
    request: pytest.FixtureRequest, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The history of one test on each store: a SQLite file, then a PostgreSQL database. Set as
    FPMON_HISTORY, so that every `fpmon` the test runs uses it."""
    if request.param == "sqlite":
        url = str(isolated / "state" / "history.db")
        monkeypatch.setenv("FPMON_HISTORY", url)
        yield url
        return
    with postgres_database() as url:
        monkeypatch.setenv("FPMON_HISTORY", url)
        yield url


def stored_rows(history: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on either store's history (the test's own look, not through fpmon)."""
    if history.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(history) as db:
            return [tuple(row) for row in db.execute(sql).fetchall()]
    with closing(sqlite3.connect(history)) as db:
        return db.execute(sql).fetchall()


def edit_stored(history: str, sql: str) -> None:
    """Change a history behind fpmon's back (committed), on either store."""
    if history.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(history) as db:
            db.execute(sql)
        return
    with closing(sqlite3.connect(history)) as db, db:
        db.execute(sql)
