"""Tables on a narrow terminal and through a pipe. On a terminal too narrow for a table, each row
becomes a `key: value` block; a fingerprint or a resolved model is never cut, at any width. Piped
output carries no blanks at the ends of its lines. The installed command on a pseudo-terminal of
a fixed width (COLUMNS), as a user's terminal would be."""

from __future__ import annotations

import os
import pty
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import FPMON, Run

FINGERPRINTS = ["fp_0ba0d124f1", "fp_560af6e559", "fp_b8bc95a0ac"]
MODEL = "gpt-4o-mini-2024-07-18"
COMMANDS = [
    ("check",),
    ("history",),
    ("history", "--observations", "--limit", "4"),
    ("targets",),
    ("stats",),
]


def on_terminal(cwd: Path, columns: int, *args: str) -> str:
    """What `fpmon ARGS` shows on a terminal `columns` wide (plain: NO_COLOR)."""
    assert FPMON is not None
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "200", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [FPMON, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) in (0, 1), b"".join(chunks).decode()
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.fixture
def recorded(cli: Callable[..., Run], write_config: Callable[..., Path], isolated: Path) -> Path:
    # one model per target: the fake serves each model's values in turn, all in each check
    fleet = {m: ModelBehaviour(FINGERPRINTS, resolved_model=MODEL) for m in ("mini", "other")}
    with FakeAPI(fleet) as fake:
        write_config(fake.base_url, mini={"model": "mini"}, another={"model": "other"})
        for _ in range(2):
            assert cli("check").code == 0
        yield isolated


@pytest.mark.parametrize("columns", [40, 60, 80, 200])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_fingerprints_and_models_are_never_cut(
    recorded: Path, command: tuple[str, ...], columns: int
) -> None:
    screen = on_terminal(recorded, columns, *command)
    assert "…" not in screen, screen
    wanted = {("targets",): ["another", "mini"], ("stats",): FINGERPRINTS}.get(
        command, [*FINGERPRINTS, MODEL]
    )
    for token in wanted:
        assert token in screen, (token, screen)
    if columns <= 60:
        # one value per line in a record, or whole in a table cell: never split across lines
        assert all(len(line.rstrip()) <= columns for line in screen.splitlines()), screen


def test_below_a_readable_width_a_table_becomes_records(recorded: Path) -> None:
    narrow = on_terminal(recorded, 60, "history")
    assert "target: mini" in narrow.splitlines()
    assert f"models: {MODEL}" in narrow.splitlines()
    wide = on_terminal(recorded, 200, "history")
    assert wide.splitlines()[0].split() == [
        "target", "fingerprints", "models", "first", "seen", "last", "seen", "checks", "samples",
        "errors",
    ]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_piped_output_has_no_blanks_at_line_ends(
    cli: Callable[..., Run], recorded: Path, command: tuple[str, ...]
) -> None:
    run = cli(*command)
    assert run.code == 0, run.err
    assert run.out.strip()
    assert [line for line in run.out.splitlines() if line != line.rstrip()] == []
