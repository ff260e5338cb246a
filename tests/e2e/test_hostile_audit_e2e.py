"""The installed fpmon on a history edited outside its records (issue 12, item 12): exit 4
naming the row, never a traceback, and verify finds it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.fake_api import FakeAPI
from tests.conftest import Run
from tests.test_audit import execute


@pytest.mark.parametrize(
    ("sql", "named", "commands"),
    [
        (
            "UPDATE checks SET fingerprints = 'not json'",
            "fingerprints is corrupt",
            ("check", "history"),
        ),
        # check orders by the time without reading it: only the reading commands parse it
        ("UPDATE checks SET checked_at = 'later'", "checked_at is corrupt", ("history",)),
    ],
    ids=["fingerprints", "timestamp"],
)
def test_check_and_history_exit_4_on_a_corrupt_check(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    sql: str,
    named: str,
    commands: tuple[str, ...],
) -> None:
    config = write_config(fake.base_url, beta={"model": "model-b"})
    config.write_text('history = "h.db"\n' + config.read_text())
    assert fpmon("check").code == 0
    execute(Path("h.db"), sql)
    for command in commands:
        run = fpmon(command)
        assert run.code == 4, run.err
        assert named in run.err and "check row 1" in run.err
        assert "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1
    run = fpmon("verify")
    assert run.code == 1 and "check row 1 (beta, " in run.err + run.out
