"""The installed fpmon on both stores (the `history_url` fixture: SQLite, then PostgreSQL):
every history command, moving a history between stores, concurrent writers with a SIGKILL,
and what is refused or never shown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import FPMON, Run, postgres_database, stored_rows

CANARY = "pg-password-canary-7f3a"


def test_every_history_command_works_on_both_stores(
    history_url: str, fake: FakeAPI, write_config: Callable[..., Path], fpmon: Callable[..., Run]
) -> None:
    write_config(
        fake.base_url, a={"model": "model-a", "samples": 2}, b={"model": "model-b", "samples": 1}
    )
    env = {"PGPASSWORD": CANARY}  # libpq's: fpmon neither needs nor shows it
    runs = [fpmon("check", "--json", env=env) for _ in range(2)]
    assert [r.code for r in runs] == [0, 0], runs[0].err + runs[1].err
    assert {t["status"] for t in runs[1].json()["targets"]} == {"same"}
    history = fpmon("history", env=env)
    shown = {line.split()[0] for line in history.out.splitlines()[2:] if line.strip()}
    assert history.code == 0 and shown == {"a", "b"}
    stats = fpmon("stats", "a", env=env)
    assert stats.code == 0 and "fp_aaaaaaaaaa" in stats.out
    verify = fpmon("verify", env=env)
    assert verify.code == 0 and "verified 6 records: the chain is intact" in verify.out
    report = fpmon("report", "--output", "report.html", env=env)
    assert report.code == 0, report.err
    assert "fp_aaaaaaaaaa" in Path("report.html").read_text()
    exported = fpmon("export", "--output", "all.jsonl", env=env)
    assert exported.code == 0 and len(Path("all.jsonl").read_text().splitlines()) == 6
    pruned = fpmon("prune", "--older-than", "0s", env=env)
    assert pruned.code == 0 and "pruned 6 observations" in pruned.out
    assert fpmon("verify", env=env).code == 0
    assert stored_rows(history_url, "SELECT count(*) FROM observations") == [(0,)]
    everything = [*runs, history, stats, verify, report, exported, pruned]
    assert not any(CANARY in r.out + r.err for r in everything)
    assert CANARY not in Path("all.jsonl").read_text()


def test_export_to_postgresql_and_back_keeps_every_record_and_the_chain(
    fake: FakeAPI, write_config: Callable[..., Path], fpmon: Callable[..., Run], isolated: Path
) -> None:
    write_config(fake.base_url, a={"model": "model-a", "samples": 3}, b={"model": "model-b"})
    sqlite_history = str(isolated / "one.db")
    for _ in range(3):
        assert fpmon("check", "--history", sqlite_history).code == 0
    assert fpmon("export", "--history", sqlite_history, "-o", "from-sqlite.jsonl").code == 0
    with postgres_database() as shared:
        imported = fpmon("import", "from-sqlite.jsonl", "--history", shared)
        assert imported.code == 0, imported.err
        assert fpmon("verify", "--history", shared).code == 0
        assert fpmon("export", "--history", shared, "-o", "from-pg.jsonl").code == 0
        # the check after the move is detected against the moved history
        after = fpmon("check", "--json", "--history", shared)
        assert {t["status"] for t in after.json()["targets"]} == {"same"}
        sources = stored_rows(shared, "SELECT DISTINCT source FROM observations")
    assert sources == [("probe",)]
    lines = Path("from-sqlite.jsonl").read_text().splitlines()
    assert len(lines) == 18 and Path("from-pg.jsonl").read_text().splitlines() == lines
    back = str(isolated / "back.db")
    assert fpmon("import", "from-pg.jsonl", "--history", back).code == 0
    assert fpmon("verify", "--history", back).code == 0
    assert fpmon("export", "--history", back, "-o", "back.jsonl").code == 0
    assert Path("back.jsonl").read_text().splitlines() == lines


def test_16_concurrent_checks_on_postgresql_and_a_sigkill_lose_no_finished_check(
    write_config: Callable[..., Path], fpmon: Callable[..., Run], isolated: Path
) -> None:
    fleet = {"slow": ModelBehaviour(["fp_s", "fp_t"], latency=0.2)}
    with FakeAPI(fleet) as api, postgres_database() as shared:
        write_config(api.base_url, a={"model": "slow", "samples": 3}, b={"model": "slow"})
        assert fpmon("check", "--history", shared).code == 0  # the tables exist: a race on them
        # is another test (they migrate under the lock)
        procs = [
            subprocess.Popen(
                [FPMON or "fpmon", "check", "--json", "--history", shared],
                cwd=isolated,
                env=dict(os.environ),
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(16)
        ]
        time.sleep(0.3)
        procs[7].send_signal(signal.SIGKILL)
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        codes = [p.returncode for p in procs]
        assert codes[7] == -signal.SIGKILL and codes[:7] + codes[8:] == [0] * 15
        finished = {json.loads(out)["check_id"] for i, out in enumerate(outputs) if i != 7}
        recorded = {c for (c,) in stored_rows(shared, "SELECT DISTINCT check_id FROM checks")}
        assert finished <= recorded and len(recorded - finished) <= 2  # the first, the killed
        per_check = stored_rows(shared, "SELECT count(*) FROM observations GROUP BY check_id")
        assert {count for (count,) in per_check} == {6}  # no half-written check
        verify = fpmon("verify", "--history", shared)
        assert verify.code == 0, verify.out + verify.err


def test_writers_starting_on_an_empty_database_migrate_it_once(
    fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, a={"model": "model-b"})
    with postgres_database() as shared:
        procs = [
            subprocess.Popen(
                [FPMON or "fpmon", "check", "--history", shared],
                cwd=isolated,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
        assert stored_rows(shared, "SELECT count(*) FROM checks") == [(4,)]


def test_a_password_in_the_url_is_refused_and_never_shown(
    fake: FakeAPI, write_config: Callable[..., Path], fpmon: Callable[..., Run]
) -> None:
    write_config(fake.base_url, a={"model": "model-b"})
    url = f"postgresql://fpmon:{CANARY}@db.example/fpmon"
    for run in (
        fpmon("check", "--history", url),
        fpmon("history", env={"FPMON_HISTORY": url}),
    ):
        assert run.code == 2
        assert "contains a password" in run.err and "PGPASSWORD" in run.err
        assert CANARY not in run.out + run.err and len(run.err.strip().splitlines()) == 1
    assert fake.requests() == []  # refused before anything was probed


def test_an_unreachable_database_is_exit_4_in_one_line(
    fake: FakeAPI, write_config: Callable[..., Path], fpmon: Callable[..., Run]
) -> None:
    write_config(fake.base_url, a={"model": "model-b"})
    run = fpmon("check", "--history", "postgresql://fpmon@127.0.0.1:1/fpmon?connect_timeout=1")
    assert run.code == 4
    assert "cannot connect after 5 attempts" in run.err
    assert len(run.err.strip().splitlines()) == 1
    assert fake.requests() == []  # the history is opened before anything is spent


def test_without_the_driver_fpmon_says_how_to_install_it(isolated: Path) -> None:
    program = (
        "import sys; sys.modules['psycopg'] = None; from fp_monitor.cli import main; "
        "sys.argv = ['fpmon', 'history', '--history', 'postgresql://fpmon@db.example/fpmon']; "
        "raise SystemExit(main())"
    )
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=isolated
    )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "fpmon: error: a postgresql:// history needs the PostgreSQL driver: "
        "pip install 'fpmon[postgres]'"
    )
