"""Provider keys as a new user sets them: a key that an HTTP header cannot carry is a usage
error naming the variable (never the key), and a missing key is one recorded fact, not a
bootstrap's worth of failed samples. In-process (the `cli` fixture) against the fake API."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI
from tests.conftest import Run

KEYS = {
    "trailing newline": ("xai-abc\n", "XAI_API_KEY contains whitespace"),
    "inner space": ("xai-abc def", "XAI_API_KEY contains whitespace"),
    "non-ASCII": ("xai-abcé", "XAI_API_KEY contains a line break, a control character or a non"),
    "escape": ("xai-abc\x1b[2J", "XAI_API_KEY contains a line break, a control character or a"),
}


@pytest.mark.parametrize(("key", "message"), KEYS.values(), ids=list(KEYS))
def test_a_key_that_a_header_cannot_carry_is_a_usage_error_that_never_shows_it(
    cli: Callable[..., Run],
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    message: str,
) -> None:
    monkeypatch.setenv("XAI_API_KEY", key)  # no config: the xai target comes from the key
    run = cli("check", "--history", "history.db")
    assert run.code == 2
    [line] = run.err.splitlines()
    assert line.startswith(f"fpmon: error: {message}"), line
    assert "xai-abc" not in run.err + run.out and "abc" not in line
    assert not (isolated / "history.db").exists()


def test_a_header_variable_with_a_line_break_is_refused_naming_it(
    cli: Callable[..., Run],
    write_config: Callable[..., Path],
    fake: FakeAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_config(fake.base_url, gw={"model": "model-a", "headers": {"X-Token": "${GW_TOKEN}"}})
    monkeypatch.setenv("GW_TOKEN", "tok-123\r\nX-Evil: 1")
    run = cli("check")
    assert run.code == 2
    assert "GW_TOKEN (headers of target gw) contains a line break" in run.err
    assert "tok-123" not in run.err and fake.requests() == []


def test_a_missing_key_is_one_recorded_fact_not_twenty_failed_samples(
    cli: Callable[..., Run],
    write_config: Callable[..., Path],
    fake: FakeAPI,
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FPMON_TEST_UNSET_KEY", raising=False)
    write_config(
        fake.base_url,
        # a learning target: its first check would bootstrap 20 samples
        keyed={
            "model": "model-a",
            "provider": "openai",
            "api_key_env": "FPMON_TEST_UNSET_KEY",
            "learning": True,
        },
        free={"model": "model-b"},
    )
    table = cli("check", "keyed", "--no-record")
    assert table.code == 3
    assert "keyed: not probed: FPMON_TEST_UNSET_KEY is not set" in table.out.splitlines()
    assert "samples failed" not in table.out

    run = cli("check", "--json")
    assert run.code == 3
    keyed = next(t for t in json.loads(run.out)["targets"] if t["name"] == "keyed")
    assert keyed["samples"] == 1
    assert keyed["errors"] == [
        {
            "kind": "missing_key",
            "status_code": None,
            "message": "not probed: FPMON_TEST_UNSET_KEY is not set",
        }
    ]
    assert all(r.model == "model-b" for r in fake.requests())
    history = isolated / "xdg-data" / "fpmon" / "history.db"
    with closing(sqlite3.connect(history)) as db:
        rows = db.execute("SELECT error_kind FROM observations WHERE target = 'keyed'").fetchall()
    assert rows == [("missing_key",)]
