"""`fpmon accept` as a new user meets it: the fix that the lock's error names works, and no
history is an error as for every command that reads it. In-process against the fake API."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI
from tests.conftest import Run

BROKEN_LOCKS = {
    "another version": "version = 2\n",
    "no version": "[targets.alpha]\nfingerprints = []\n",
    "not TOML": "version = \n",
}


@pytest.fixture
def configured(write_config: Callable[..., Path], fake: FakeAPI) -> FakeAPI:
    write_config(fake.base_url, alpha={"model": "model-a"}, beta={"model": "model-b"})
    return fake


def lock_of(path: Path) -> dict[str, object]:
    return tomllib.loads(path.read_text())


@pytest.mark.parametrize("broken", BROKEN_LOCKS.values(), ids=list(BROKEN_LOCKS))
def test_the_fix_named_by_the_lock_error_rewrites_the_lock(
    cli: Callable[..., Run], configured: FakeAPI, isolated: Path, broken: str
) -> None:
    lock = isolated / "fpmon.lock"
    lock.write_text(broken)
    refused = cli("check")
    assert refused.code == 2
    assert "fpmon accept --replace" in refused.err
    assert configured.requests() == []
    assert cli("accept").code == 2  # without --replace the lock is still read, and refused

    fixed = cli("accept", "--probe", "--replace")
    assert fixed.code == 0, fixed.err
    assert "writing it anew from what was observed" in fixed.err
    data = lock_of(lock)
    assert data["version"] == 1
    assert set(data["targets"]) == {"alpha", "beta"}  # type: ignore[arg-type]
    assert cli("check").code == 0


def test_replace_rewrites_an_unreadable_lock_from_the_history(
    cli: Callable[..., Run], configured: FakeAPI, isolated: Path
) -> None:
    assert cli("check").code == 0
    (isolated / "fpmon.lock").write_text("version = 2\n")
    configured.reset()
    run = cli("accept", "--replace", "alpha")
    assert run.code == 0, run.err
    assert configured.requests() == []  # nothing probed: the history has what was observed
    assert set(lock_of(isolated / "fpmon.lock")["targets"]) == {"alpha"}  # type: ignore[arg-type]
    assert "alpha: + fingerprint fp_aaaaaaaaaa" in run.out


def test_accept_without_a_history_exits_4_like_the_other_readers(
    cli: Callable[..., Run], configured: FakeAPI, isolated: Path
) -> None:
    run = cli("accept", "--history", "missing.db")
    assert run.code == 4
    [line] = run.err.splitlines()
    assert line == (
        "fpmon: error: no history at missing.db: run `fpmon check` to start one, or pass --history"
    )
    assert not (isolated / "missing.db").exists()
    assert not (isolated / "fpmon.lock").exists()
    assert cli("history", "--history", "missing.db").code == 4
