"""User errors are one line and their documented exit code, never "internal error (a bug)":
report paths that cannot be written, an export onto a directory, a fake API that cannot listen
or whose fleet file is wrong. Report paths are refused before anything is probed or recorded.

The check and export cases run in-process (the `cli` fixture); `fake-api` runs as the installed
command, since it serves until stopped when it does not fail."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI
from tests.conftest import Run


def one_error(run: Run) -> str:
    assert "internal error" not in run.err and "Traceback" not in run.err, run.err
    [line] = run.err.splitlines()
    assert line.startswith("fpmon: error: "), line
    return line


@pytest.fixture
def configured(write_config: Callable[..., Path], fake: FakeAPI) -> FakeAPI:
    write_config(fake.base_url, alpha={"model": "model-a"})
    return fake


def report_paths(root: Path) -> list[tuple[str, str, str]]:
    (root / "afile").write_text("a file, not a directory\n")
    (root / "adir").mkdir()
    return [
        ("--junit", "/proc/fpmon-x.xml", "cannot write in /proc"),
        ("--metrics-file", "/proc/fpmon-x.prom", "cannot write in /proc"),
        ("--junit", "afile/x.xml", "afile is a file, not a directory"),
        ("--metrics-file", "afile/deeper/x.prom", "afile is a file, not a directory"),
        ("--junit", "adir", "is a directory"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_a_report_path_that_cannot_be_written_is_refused_before_anything_is_spent(
    cli: Callable[..., Run], configured: FakeAPI, isolated: Path, case: int
) -> None:
    flag, path, problem = report_paths(isolated)[case]
    run = cli("check", flag, path, "--history", "history.db")
    assert run.code == 2
    line = one_error(run)
    assert f"{flag} {path}: " in line and problem in line
    assert configured.requests() == []
    assert not (isolated / "history.db").exists()
    assert run.out == ""


def test_a_writable_report_path_still_works(
    cli: Callable[..., Run], configured: FakeAPI, isolated: Path
) -> None:
    run = cli("check", "--junit", "reports/new/junit.xml", "--metrics-file", "m/fpmon.prom")
    assert run.code == 0, run.err
    assert (isolated / "reports/new/junit.xml").read_text().startswith("<?xml")
    assert "fpmon_" in (isolated / "m/fpmon.prom").read_text()
    assert [p.name for p in (isolated / "reports/new").iterdir()] == ["junit.xml"]


def test_export_onto_a_directory_is_a_usage_error(
    cli: Callable[..., Run], configured: FakeAPI, isolated: Path
) -> None:
    assert cli("check").code == 0
    (isolated / "out").mkdir()
    run = cli("export", "--output", "out")
    assert run.code == 2
    assert "--output out: is a directory" in one_error(run)
    assert list((isolated / "out").iterdir()) == []


def test_fake_api_on_a_port_in_use_is_a_usage_error(fpmon: Callable[..., Run]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        run = fpmon("fake-api", "--port", str(port), timeout=30)
    assert run.code == 2
    line = one_error(run)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line
    assert run.out == ""


@pytest.mark.parametrize(
    ("fleet", "problem"),
    [
        (None, "fleet.toml: No such file or directory"),
        ('[models.x]\nmode = "sometimes"\n', "models.x.mode: expected 'round-robin' or 'random'"),
        ("[models.x\n", "fleet.toml: "),
        ("[models.x]\nfingerprint = []\n", "unknown key 'fingerprint' (did you mean"),
    ],
)
def test_a_wrong_fleet_file_is_a_usage_error_naming_it(
    fpmon: Callable[..., Run], isolated: Path, fleet: str | None, problem: str
) -> None:
    if fleet is not None:
        (isolated / "fleet.toml").write_text(fleet)
    run = fpmon("fake-api", "--config", "fleet.toml", timeout=30)
    assert run.code == 2
    line = one_error(run)
    assert line.startswith("fpmon: error: --config fleet.toml: ") and problem in line, line
