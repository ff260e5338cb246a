"""The installed fpmon on a hostile history: edited outside its records (items 12 and 3b of
issue 12), exit 4 naming the row, never a traceback, and verify finds it; anything but a
writable regular file at its path (item 9), exit 4 at once, naming what is there; crafted
imports (item 8), each record reported and skipped."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI
from tests.conftest import FPMON, Run
from tests.unit.traffic.test_traffic import read_only
from tests.unit.usecases.test_audit import execute
from tests.unit.usecases.test_hostile_audit import rehashed


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


# --- seals (item 3b) ----------------------------------------------------------------------


def test_verify_prints_the_seal_to_keep_and_proves_it_later(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    config = write_config(fake.base_url, beta={"model": "model-b"})
    config.write_text('history = "h.db"\n' + config.read_text())
    assert fpmon("check").code == 0
    first = fpmon("verify")
    assert first.code == 0, first.err
    (sealed,) = [line for line in first.out.splitlines() if line.startswith("sealed: seal 1 of ")]
    kept = sealed.rsplit("hash ", 1)[1]
    assert fpmon("check").code == 0
    later = fpmon("verify", "--head", kept)
    assert later.code == 0 and "sealed: seal 2 of " in later.out
    unknown = fpmon("verify", "--head", "0" * 64)
    assert unknown.code == 1 and f"the head {'0' * 64} is not a seal of this history" in unknown.err
    malformed = fpmon("verify", "--head", "52f3e08d")
    assert malformed.code == 2 and "expected the 64 hex digits of a seal's hash" in malformed.err
    # setting a check's status by hand, as someone who can write the file could
    execute(Path("h.db"), "UPDATE checks SET status = 'learned' WHERE id = 2")
    edited = fpmon("verify")
    assert edited.code == 1
    assert "check row 2 (beta, " in edited.err and "is not what seal 2 sealed" in edited.err
    assert len(edited.err.strip().splitlines()) == 1 and "Traceback" not in edited.err


# --- what lies at the history's path (issue 12, item 9) -----------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))


def _directory(path: Path) -> None:
    path.mkdir()


NOT_A_FILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (_fifo, "is a named pipe (FIFO), not a regular file"),
    "socket": (_socket, "is a socket, not a regular file"),
    "directory": (_directory, "is a directory, not a regular file"),
}


@pytest.mark.parametrize("command", ["check", "verify", "history", "stats", "export"])
@pytest.mark.parametrize("kind", NOT_A_FILE)
def test_anything_but_a_regular_file_at_the_history_path_is_refused(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    isolated: Path,
    kind: str,
    command: str,
) -> None:
    """A FIFO made verify and history hang forever: every command says what is there, at once."""
    write_config(fake.base_url, beta={"model": "model-b"})
    make, named = NOT_A_FILE[kind]
    make(isolated / "h.db")
    run = fpmon(command, "--history", "h.db", timeout=20)
    assert run.code == 4, run.err
    assert (
        run.err.strip()
        == f"fpmon: error: history h.db: it {named}: pass --history with the path of a history file"
    )
    assert not fake.requests()  # refused before anything was probed


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_a_fifo_beside_the_history_is_refused(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    isolated: Path,
    suffix: str,
) -> None:
    write_config(fake.base_url, beta={"model": "model-b"})
    assert fpmon("check", "--history", "h.db").code == 0
    os.mkfifo(isolated / f"h.db{suffix}")
    for command in ("check", "verify"):
        run = fpmon(command, "--history", "h.db", timeout=20)
        assert run.code == 4, run.err
        assert f"history h.db: h.db{suffix} beside it is a named pipe (FIFO), not a" in run.err


def test_a_dangling_symlink_at_the_history_path_makes_an_owner_only_file(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, beta={"model": "model-b"})
    (isolated / "data").mkdir()
    (isolated / "h.db").symlink_to(isolated / "data" / "history.db")
    previous = os.umask(0o022)  # the usual umask, which SQLite's own creation follows
    try:
        assert fpmon("check", "--history", "h.db").code == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((isolated / "data" / "history.db").stat().st_mode) == 0o600
    assert fpmon("verify", "--history", "data/history.db").code == 0


@pytest.mark.parametrize("command", ["check", "history", "verify"])
def test_a_history_in_a_read_only_directory_names_the_directory(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    isolated: Path,
    command: str,
) -> None:
    """SQLite keeps its -wal and -shm files beside the history: the file being writable is not
    enough, and the message said "the file is read-only" all the same."""
    write_config(fake.base_url, beta={"model": "model-b"})
    (isolated / "data").mkdir()
    assert fpmon("check", "--history", "data/h.db").code == 0
    with read_only(isolated / "data"):
        run = fpmon(command, "--history", "data/h.db")
    assert run.code == 4, run.err
    assert f"the directory {isolated / 'data'} is read-only" in run.err
    assert "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1


# --- crafted imports (item 8) ---------------------------------------------------------------


# Runs a command and writes its peak memory (KiB) to a file. A fresh, small process: the peak
# of a process forked from pytest counts pytest's memory too, until it execs.
MEASURE = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(code)"
)


def run_measured(cwd: Path, *args: str) -> tuple[Run, int]:
    """fpmon ARGS, and its peak memory in KiB."""
    assert FPMON is not None
    peak = cwd / "peak.txt"
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, peak, FPMON, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr), int(peak.read_text())


def test_crafted_records_and_a_100_mb_line_are_skipped_in_bounded_memory(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    isolated: Path,
) -> None:
    """NaN latency imported and then broke verify and prune; tags that are not JSON and
    prompt_tokens of 10^30 exited 70 and imported nothing; a 100 MB line took 529 MB."""
    write_config(fake.base_url, beta={"model": "model-b", "samples": 2})
    assert fpmon("check").code == 0
    lines = fpmon("export").out.splitlines()
    crafted = [
        rehashed(**fields)(json.loads(lines[0]))
        for fields in ({"latency_ms": float("nan")}, {"tags": "x"}, {"prompt_tokens": 10**30})
    ]
    with (isolated / "crafted.jsonl").open("w") as file:
        file.write("\n".join([*crafted, lines[0]]) + "\n")
        for _ in range(100):  # 100 MiB, never in this process's memory at once
            file.write(" " * 2**20)
        file.write("\n")
        file.write(lines[1] + "\n")
    run, peak_kib = run_measured(isolated, "import", "crafted.jsonl", "--history", "copy.db")
    assert run.code == 0, run.err
    assert run.err.splitlines() == [
        "crafted.jsonl:1: not a valid record, skipped: NaN is not a number JSON allows",
        "crafted.jsonl:2: not a valid record, skipped: tags: expected a JSON object of strings",
        "crafted.jsonl:3: not a valid record, skipped: prompt_tokens: "
        "1000000000000000000000000000000 is out of range (0 to 9223372036854775807)",
        "crafted.jsonl:5: not a valid record, skipped: the line is longer than 16 MiB",
    ]
    assert "imported 2 records" in run.out and "4 invalid lines skipped" in run.out
    assert peak_kib < 150 * 1024, f"{peak_kib} KiB"  # 246 MiB and more before
    assert fpmon("verify", "--history", "copy.db").code == 0
    assert fpmon("prune", "--older-than", "0s", "--history", "copy.db").code == 0
