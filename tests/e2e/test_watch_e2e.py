"""The installed `fpmon watch` against the fake API: --count and its exit code, a rotation
mid-run, probe failures that do not stop it, stop signals with the history intact, a history
that breaks mid-run, and the live table on a terminal."""

from __future__ import annotations

import os
import pty
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, Fault, ModelBehaviour
from tests.conftest import FPMON, Run
from tests.e2e.conftest import Spawn, recorded, wait_for

A, B, C = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def statuses(path: Path) -> list[object]:
    return [s for (s,) in query(path, "SELECT status FROM checks ORDER BY id")]


def count(path: Path, table: str) -> int:
    """Rows in `table`, 0 while the history does not exist yet (read by another process)."""
    if not path.exists():
        return 0
    try:
        return int(query(path, f"SELECT count(*) FROM {table}")[0][0])  # type: ignore[call-overload]
    except sqlite3.OperationalError:  # created but not migrated yet
        return 0


def test_count_with_a_rotation_mid_run(
    spawn: Spawn,
    fake: FakeAPI,
    write_config: Callable[..., Path],
    recorder: tuple[str, Path],
) -> None:
    run, events = recorder
    config = write_config(fake.base_url, alpha={"model": "model-a", "samples": 2})
    config.write_text(config.read_text() + f'[notify.log]\ntype = "command"\n{run}\n')
    proc = spawn("watch", "--every", "300ms", "--jitter", "0", "--count", "4", "--history", "h.db")
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.split()[1:4] == ["alpha", "first", "fingerprint:"]
    fake.rotate("model-a", [C])  # while the watch waits for its second check
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err  # the new value: the most severe code of the four checks
    (line,) = out.splitlines()  # `same` checks print nothing when piped
    assert line.split()[1:3] == ["alpha", "new"]
    assert f"fingerprint: {A}, {B} -> {C}" in line and "fpmon accept alpha" in line
    history = Path("h.db")
    found = statuses(history)
    assert len(found) == 4 and found[0] == "first" and found.count("new") == 1
    assert found[-1] == "same"
    assert count(history, "observations") == 8
    assert err.startswith("fpmon: watching alpha every 300ms")
    sent = [event["env"]["FPMON_EVENT"] for event in recorded(events)]
    assert sent == ["new"]  # the watch notifies like check does


def test_a_probe_failure_does_not_stop_the_loop(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a", "samples": 2})
    fake.add_faults([Fault("status", status=500, times=2)])
    result = fpmon("watch", "--every", "0s", "--count", "3", "--history", "h.db")
    assert result.code == 3  # a target could not be probed, and nothing unexpected
    assert statuses(Path("h.db")) == ["error", "first", "same"]
    lines = result.out.splitlines()
    assert [line.split()[1:3] for line in lines] == [["alpha", "error"], ["alpha", "first"]]
    assert "server: HTTP 500" in lines[0]


def test_an_unusable_history_stops_the_watch_before_any_probe(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"})
    (isolated / "junk.db").write_text("not sqlite " * 100)
    result = fpmon("watch", "--every", "0s", "--history", "junk.db")
    assert result.code == 4
    assert "not an fpmon history" in result.err and "stopped after 0 checks" in result.err
    assert fake.requests() == []


def test_a_history_broken_mid_run_stops_the_watch_loudly(
    spawn: Spawn, fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"})
    proc = spawn("watch", "--every", "200ms", "--history", "h.db")
    assert proc.stdout is not None
    assert " alpha first " in proc.stdout.readline()
    # A directory where the history was: no later check can open it. (Overwriting the file
    # would race with the watch's own checkpoint, which can write valid pages back.)
    (isolated / "h.db").rename(isolated / "h.db.moved")
    (isolated / "h.db").mkdir()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 4
    last = err.strip().splitlines()[-1]
    assert last.startswith("fpmon: error: history h.db: ") and "the watch stopped after" in last


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_stop_signal_abandons_the_probe_in_flight_and_keeps_the_history(
    spawn: Spawn,
    fake: FakeAPI,
    write_config: Callable[..., Path],
    signum: signal.Signals,
    code: int,
) -> None:
    fake.set_model("slow", ModelBehaviour(["fp_slow000001"], latency=1.0))
    write_config(fake.base_url, slow={"model": "slow", "samples": 2})
    history = Path("h.db")
    proc = spawn("watch", "--every", "0s", "--history", str(history))
    wait_for(lambda: count(history, "checks") >= 1, what="a first check")
    # The next check's requests are out; their answers take a second.
    recorded = count(history, "observations")
    wait_for(lambda: len(fake.requests()) > recorded, what="a probe in flight")
    started = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=10)
    elapsed = time.monotonic() - started
    assert proc.returncode == code, err
    assert elapsed < 2, f"took {elapsed:.2f}s to stop"
    assert f"fpmon: watch stopped by {signum.name} after" in err
    assert query(history, "PRAGMA integrity_check") == [("ok",)]
    checks = count(history, "checks")
    assert checks >= 1
    # Whole checks only: the abandoned one left no observation behind.
    assert count(history, "observations") == 2 * checks
    assert len(fake.requests()) > 2 * checks


def test_a_stop_signal_while_waiting_ends_at_once(
    spawn: Spawn, fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"})
    proc = spawn("watch", "--every", "1h", "--history", "h.db")
    assert proc.stdout is not None
    assert " alpha first " in proc.stdout.readline()
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert (proc.returncode, time.monotonic() - started < 2) == (0, True)
    assert statuses(Path("h.db")) == ["first"]


def test_usage_errors(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"})
    for args, message in [
        ((), "Missing option '--every'"),
        (("--every", "often"), "'often' is not a duration"),
        (("--every", "1s", "--jitter", "150%"), "expected a percentage from 0% to 99%"),
        (("--every", "1s", "--count", "0"), "--count"),
        (("--every", "1s", "alhpa"), "unknown target 'alhpa' (did you mean 'alpha'?)"),
    ]:
        result = fpmon("watch", *args)
        assert result.code == 2, args
        assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert fake.requests() == []


def test_on_a_terminal_the_watch_shows_a_live_table(
    fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    assert FPMON is not None
    write_config(fake.base_url, alpha={"model": "model-a"})
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [FPMON, "watch", "--every", "0s", "--count", "2", "--history", "h.db"],
        cwd=isolated,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
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
    assert proc.wait(timeout=30) == 0
    screen = b"".join(chunks).decode()
    assert "\x1b[" in screen  # colour and cursor movement: a live display
    assert "fpmon watch: alpha every 0s" in screen
    assert "check 2 at" in screen and "recent changes and errors" in screen
    assert "target" in screen and "status" in screen and A in screen
