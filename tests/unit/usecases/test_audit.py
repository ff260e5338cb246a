"""The audit trail on real history files: verify catches edits, deletions and moves; export and
import round-trip every field, idempotently; prune keeps the chain, the known and the previous
sets; a history written before this schema migrates and verifies."""

from __future__ import annotations

import dataclasses
import io
import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fp_monitor.audit import export_history, import_history, prune_history, verify_history
from fp_monitor.config.settings import Config
from fp_monitor.domain.chain import GENESIS_HASH, chain_hash
from fp_monitor.domain.detect import detect
from fp_monitor.domain.errors import ChainBroken, ConfigError, ExitCode, HistoryError
from fp_monitor.domain.models import ABSENT, NULL, ErrorKind, Source, Status
from fp_monitor.store.history import History
from fp_monitor.store.migrations import MIGRATIONS
from fp_monitor.store.rows import observation_row
from tests.unit.store.test_history import (
    EXPECTED_INDEXES,
    EXPECTED_SCHEMA,
    T0,
    indexes,
    obs,
    record,
    rows,
    schema,
)

DAY = timedelta(days=1)
LATER = T0 + 365 * DAY
"""The clock of an import: after every record these tests write."""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "history.db"


def write_days(path: Path, days: int, *, target: str = "grok") -> None:
    """One check a day from T0: fp_a, then fp_b on odd days, two samples each."""
    with History.open(path) as history:
        for day in range(days):
            at = T0 + day * DAY
            value = "fp_b" if day % 2 else "fp_a"
            record(history, [obs(value, at=at, target=target)] * 2, target=target, at=at)


def execute(path: Path, sql: str, *args: Any) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute(sql, args)
        db.commit()


def swap_rows(path: Path, first: int, second: int) -> None:
    """Exchange the whole content of two records, hashes included, keeping their ids."""
    with closing(sqlite3.connect(path)) as db:
        columns = [c[1] for c in db.execute("PRAGMA table_info(observations)") if c[1] != "id"]
        select = f"SELECT {', '.join(columns)} FROM observations WHERE id = ?"
        one, two = db.execute(select, (first,)).fetchone(), db.execute(select, (second,)).fetchone()
        update = f"UPDATE observations SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"
        db.execute(update, (*two, first))
        db.execute(update, (*one, second))
        db.commit()


def config(path: Path) -> Config:
    return Config(targets=(), source=None, history=path, baseline=path.with_suffix(".lock"))


# --- verify -----------------------------------------------------------------------------


def test_verify_an_intact_history(path: Path) -> None:
    write_days(path, 3)
    verified = verify_history(path)
    assert verified.records == 6 and verified.head_id == 6
    assert verified.head_hash == rows(path, "SELECT hash FROM observations WHERE id = 6")[0]["hash"]
    assert verified.checkpoints == ()


def test_verify_an_empty_history_and_a_missing_one(path: Path) -> None:
    History.open(path).close()
    assert verify_history(path).records == 0
    with pytest.raises(HistoryError) as info:
        verify_history(path.with_name("missing.db"))
    assert info.value.exit_code == ExitCode.HISTORY


TAMPERING: dict[str, tuple[Callable[[Path], None], int, str]] = {
    "fingerprint edited": (
        lambda p: execute(p, "UPDATE observations SET fingerprint = 'fp_x' WHERE id = 3"),
        3,
        "was edited",
    ),
    "timestamp edited": (
        lambda p: execute(
            p, "UPDATE observations SET observed_at = '2026-01-01T00:00:00.000000Z' WHERE id = 4"
        ),
        4,
        "was edited",
    ),
    "latency edited": (
        lambda p: execute(p, "UPDATE observations SET latency_ms = 1.0 WHERE id = 5"),
        5,
        "was edited",
    ),
    "hash recomputed but not the next link": (
        lambda p: execute(p, "UPDATE observations SET hash = ? WHERE id = 2", "f" * 64),
        2,
        "was edited",
    ),
    "row deleted": (
        lambda p: execute(p, "DELETE FROM observations WHERE id = 3"),
        4,
        "a record between them was deleted",
    ),
    "first row deleted": (
        lambda p: execute(p, "DELETE FROM observations WHERE id = 1"),
        2,
        "does not follow the start of the chain",
    ),
    "rows swapped": (lambda p: swap_rows(p, 3, 4), 3, "moved out of order"),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_verify_names_the_first_tampered_record(path: Path, case: str) -> None:
    write_days(path, 3)
    tamper, record_id, problem = TAMPERING[case]
    tamper(path)
    with pytest.raises(ChainBroken) as info:
        verify_history(path)
    message = str(info.value)
    assert info.value.exit_code == ExitCode.UNEXPECTED == 1
    assert f"record {record_id} (grok, 2026-" in message
    assert problem in message and "\n" not in message


def test_deleting_the_newest_records_leaves_a_shorter_valid_chain(path: Path) -> None:
    """The limit of a chain kept beside the data: a newest check cut whole (its records, its
    row, its seal and the counts detection keeps) leaves a shorter history that verifies; only
    the head kept elsewhere reveals it."""
    write_days(path, 2)
    head = verify_history(path).seal
    assert head is not None
    execute(path, "DELETE FROM observations WHERE id = 4")
    with pytest.raises(ChainBroken, match="known_values_by_source"):
        verify_history(path)
    for table in ("known_values", "known_values_by_source"):
        execute(path, f"UPDATE {table} SET samples = samples - 1 WHERE value IN ('fp_b', 'm-1')")
    with pytest.raises(ChainBroken, match=r"seal 2 \(.*\) was written after record 4, which is"):
        verify_history(path)
    for table in ("known_values", "known_values_by_source"):
        execute(path, f"UPDATE {table} SET samples = samples - 1 WHERE value IN ('fp_b', 'm-1')")
        execute(path, f"DELETE FROM {table} WHERE samples = 0")
    for sql in (
        "DELETE FROM observations WHERE id = 3",
        "DELETE FROM checks WHERE id = 2",
        "DELETE FROM sealed_rows WHERE seal = 2",
        "DELETE FROM chain_seals WHERE id = 2",
    ):
        execute(path, sql)
    shorter = verify_history(path)
    assert shorter.seal is not None and shorter.seal.hash != head.hash
    with pytest.raises(ChainBroken, match=f"the head {head.hash} is not a seal of this history"):
        verify_history(path, head=head.hash)
    assert verify_history(path, head=shorter.seal.hash).records == 2


# --- export and import ------------------------------------------------------------------


def varied_history(path: Path) -> None:
    """Every kind of value a column can hold."""
    longest = dataclasses.replace(obs(ABSENT, latency=None), raw_response="x" * 16384)
    with History.open(path) as history:
        record(
            history,
            [
                obs(NULL, headers={"server": "nginx", "x-ünï": "çödé"}),
                longest,
                obs(""),
                obs("fp_a", "m-ü", latency=120),
                obs(error=ErrorKind.RATE_LIMITED),
            ],
        )
        record(history, [obs("fp_b", at=T0 + DAY, target="other")], target="other", at=T0 + DAY)


def export_to(path: Path, file: Path) -> int:
    return export_history(path, file, stdout=io.StringIO())


def test_export_import_round_trip_keeps_every_field(path: Path, tmp_path: Path) -> None:
    varied_history(path)
    verify_history(path)
    file = tmp_path / "export.jsonl"
    assert export_to(path, file) == 6
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    copy = tmp_path / "copy.db"
    imported = import_history(copy, file, LATER)
    assert (imported.appended, imported.present, imported.checks) == (6, 0, 2)
    assert imported.invalid == () and imported.junctions == ()
    everything = "SELECT * FROM observations ORDER BY id"
    assert rows(copy, everything) == rows(path, everything)
    assert verify_history(copy).head_hash == verify_history(path).head_hash
    known = "SELECT * FROM known_values ORDER BY target, field, value"
    assert rows(copy, known) == rows(path, known)
    checks = (
        "SELECT check_id, target, status, fingerprints, models, headers, samples, errors "
        "FROM checks ORDER BY id"
    )
    assert rows(copy, checks) == rows(path, checks)
    # and the re-export is the same file, byte for byte
    again = tmp_path / "again.jsonl"
    export_to(copy, again)
    assert again.read_bytes() == file.read_bytes()


def test_import_is_idempotent(path: Path, tmp_path: Path) -> None:
    write_days(path, 3)
    file = tmp_path / "export.jsonl"
    export_to(path, file)
    copy = tmp_path / "copy.db"
    import_history(copy, file, LATER)
    before = rows(copy, "SELECT * FROM observations"), rows(copy, "SELECT * FROM checks")
    again = import_history(copy, file, LATER)
    assert (again.appended, again.present, again.checks) == (0, 6, 0)
    assert (rows(copy, "SELECT * FROM observations"), rows(copy, "SELECT * FROM checks")) == before
    assert rows(copy, "SELECT count(*) AS n FROM chain_checkpoints") == [{"n": 0}]


def test_imported_checks_are_what_detection_reads(path: Path, tmp_path: Path) -> None:
    write_days(path, 2)  # fp_a, then fp_b
    file = tmp_path / "export.jsonl"
    export_to(path, file)
    copy = tmp_path / "copy.db"
    import_history(copy, file, LATER)
    assert [r["status"] for r in rows(copy, "SELECT status FROM checks ORDER BY id")] == [
        "first",
        "new",
    ]
    with History.open(copy) as history:
        assert record(history, [obs("fp_b", at=T0 + 2 * DAY)]).status is Status.SAME
        assert record(history, [obs("fp_a", at=T0 + 3 * DAY)]).status is Status.CHANGED
    verify_history(copy)


def test_imported_traffic_stays_traffic(path: Path, tmp_path: Path) -> None:
    """An exported history with an application's traffic imports with each check's source, so
    each is compared with its own kind again and the probe series stay the probes'."""
    with History.open(path) as history:
        record(history, [obs("fp_a"), obs("fp_b")], at=T0)
        record(history, [obs("fp_a")], at=T0 + DAY, source=Source.TRAFFIC)
        record(history, [obs("fp_b")], at=T0 + 2 * DAY, source=Source.TRAFFIC)
    file = tmp_path / "export.jsonl"
    export_to(path, file)
    copy = tmp_path / "copy.db"
    import_history(copy, file, LATER)
    checks = rows(copy, "SELECT source, status FROM checks ORDER BY id")
    assert [(c["source"], c["status"]) for c in checks] == [
        ("probe", "first"),
        ("traffic", "same"),
        ("traffic", "changed"),
    ]
    with History.open(copy) as history:
        assert history.facts("grok", frozenset({Source.TRAFFIC})).known_fingerprints == {
            "fp_a",
            "fp_b",
        }
        assert history.state("grok").status_counts == {"first": 1}  # no traffic `changed`


def test_an_unknown_source_is_refused_at_import(path: Path, tmp_path: Path) -> None:
    write_days(path, 1)
    file = tmp_path / "export.jsonl"
    export_to(path, file)
    lines = file.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["source"] = "manual"
    edited["hash"] = chain_hash(edited)
    file.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n")
    imported = import_history(tmp_path / "copy.db", file, LATER)
    (invalid,) = imported.invalid
    assert invalid.endswith(
        ":2: not a valid record, skipped: source: expected probe or traffic, got 'manual'"
    )
    stored = rows(tmp_path / "copy.db", "SELECT DISTINCT source FROM observations")
    assert [r["source"] for r in stored] == ["probe"]


def test_bad_lines_are_reported_with_their_number_and_the_rest_is_kept(
    path: Path, tmp_path: Path
) -> None:
    write_days(path, 3)
    file = tmp_path / "export.jsonl"
    export_to(path, file)
    lines = file.read_text().splitlines()
    edited = json.loads(lines[2])
    edited["fingerprint"] = "fp_forged"
    wrong_type = json.loads(lines[4])
    wrong_type["attempts"] = "1"
    missing = json.loads(lines[5])
    del missing["request_shape"]
    bad = [
        lines[0],
        "this is not json",
        lines[1],
        json.dumps(edited),
        "",
        lines[3],
        json.dumps(wrong_type),
        "[1, 2]",
        json.dumps(missing),
    ]
    file.write_text("\n".join(bad) + "\n")
    file.write_bytes(file.read_bytes() + b"\xff\xfe not utf-8\n")
    copy = tmp_path / "copy.db"
    imported = import_history(copy, file, LATER)
    assert imported.appended == 3
    problems = {line.split(":")[1]: line for line in imported.invalid}
    assert sorted(problems, key=int) == ["2", "4", "7", "8", "9", "10"]
    assert "its hash does not match its content" in problems["4"]
    assert "attempts: expected int, got str" in problems["7"]
    assert "expected a JSON object" in problems["8"]
    assert "missing field 'request_shape'" in problems["9"]
    assert all(line.startswith(f"{file}:") for line in imported.invalid)
    # The record after the edited one continues a record this history lacks: a junction.
    assert imported.junctions == (6,)
    assert verify_history(copy).records == 3


def test_import_into_a_history_with_records_joins_the_chains(path: Path, tmp_path: Path) -> None:
    write_days(path, 2, target="elsewhere")
    file = tmp_path / "export.jsonl"
    export_to(path, file)
    local = tmp_path / "local.db"
    write_days(local, 2)
    imported = import_history(local, file, LATER)
    assert (imported.appended, imported.junctions) == (4, (1,))
    verified = verify_history(local)
    assert verified.records == 8 and [c.kind.value for c in verified.checkpoints] == ["import"]
    # The imported (older) checks never become the previous check of the local target's.
    with History.open(local) as history:
        assert history.facts("grok").previous_fingerprints == {"fp_b"}
    execute(local, "UPDATE observations SET target = 'x' WHERE id = 6")
    with pytest.raises(ChainBroken, match="record 6"):
        verify_history(local)


def test_a_file_that_cannot_be_read_is_a_usage_error(path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as info:
        import_history(path, tmp_path / "missing.jsonl", LATER)
    assert info.value.exit_code == ExitCode.USAGE


# --- prune ------------------------------------------------------------------------------


def test_prune_keeps_the_chain_verifiable_and_edits_detectable(path: Path) -> None:
    write_days(path, 10)
    pruned = prune_history(config(path), 5.5 * 86400, T0 + 10 * DAY, dry_run=False)
    # checks of days 0-4 are older than day 4.5; observations of days 0-4 are the prefix
    assert (pruned.observations, pruned.checks) == (10, 5)
    assert rows(path, "SELECT min(id) AS first FROM observations") == [{"first": 11}]
    verified = verify_history(path)
    assert verified.records == 10 and verified.head_id == 20
    (checkpoint,) = verified.checkpoints
    assert (checkpoint.kind.value, checkpoint.after_id, checkpoint.records) == ("prune", 10, 10)
    assert checkpoint.from_hash == GENESIS_HASH

    execute(path, "UPDATE observations SET fingerprint = 'fp_x' WHERE id = 15")
    with pytest.raises(ChainBroken, match="record 15"):
        verify_history(path)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("DELETE FROM observations WHERE id = 11", "record 12"),
        ("DELETE FROM chain_checkpoints", "record 11"),
        ("UPDATE chain_checkpoints SET hash = '" + "a" * 64 + "'", "record 11"),
    ],
    ids=["first kept record deleted", "checkpoint deleted", "checkpoint edited"],
)
def test_after_a_prune_deletions_are_still_detected(path: Path, sql: str, message: str) -> None:
    write_days(path, 10)
    prune_history(config(path), 5.5 * 86400, T0 + 10 * DAY, dry_run=False)
    execute(path, sql)
    with pytest.raises(ChainBroken, match=message):
        verify_history(path)


def test_prune_everything_keeps_known_and_previous_sets(path: Path) -> None:
    write_days(path, 4)  # ends on fp_b; knows fp_a and fp_b
    pruned = prune_history(config(path), 0, T0 + 30 * DAY, dry_run=False)
    assert pruned.observations == 8 and pruned.checks == 3
    assert rows(path, "SELECT count(*) AS n FROM observations") == [{"n": 0}]
    assert verify_history(path).records == 0
    with History.open(path) as history:
        facts = history.facts("grok")
        assert facts.previous_fingerprints == {"fp_b"}
        assert facts.known_fingerprints == {"fp_a", "fp_b"}
        assert record(history, [obs("fp_b", at=T0 + 31 * DAY)]).status is Status.SAME
        assert record(history, [obs("fp_a", at=T0 + 32 * DAY)]).status is Status.CHANGED
        assert record(history, [obs("fp_z", at=T0 + 33 * DAY)]).status is Status.NEW
    # the chain goes on from the checkpoint, with ids after the pruned ones
    assert [r["id"] for r in rows(path, "SELECT id FROM observations ORDER BY id")] == [9, 10, 11]
    assert verify_history(path).records == 3


def test_prune_keeps_what_learning_reads(path: Path) -> None:
    with History.open(path) as history:
        for day in range(3):
            at, observations = T0 + day * DAY, [obs("fp_a", at=T0 + day * DAY)] * 2
            with history.write():
                result = detect("grok", observations, history.facts("grok"), samples=2)
                ended = dataclasses.replace(result, learning=day == 0)  # ends at the second
                history.append_check(f"c{day}", at, ended, observations)
        before = history.facts("grok")
    assert before.learning_ended and before.fingerprint_counts == {"fp_a": 6}
    prune_history(config(path), 0, T0 + 30 * DAY, dry_run=False)
    with History.open(path) as history:
        after = history.facts("grok")
    assert after.learning_ended
    assert after.fingerprint_counts == {"fp_a": 6} and after.first_success_at == T0


def test_prune_twice_chains_the_checkpoints(path: Path) -> None:
    write_days(path, 10)
    prune_history(config(path), 7.5 * 86400, T0 + 10 * DAY, dry_run=False)
    prune_history(config(path), 3.5 * 86400, T0 + 10 * DAY, dry_run=False)
    first, second = verify_history(path).checkpoints
    assert (first.after_id, second.after_id, second.from_hash) == (6, 14, first.hash)
    execute(path, "DELETE FROM chain_checkpoints WHERE id = 1")
    with pytest.raises(ChainBroken, match="checkpoint after record 14"):
        verify_history(path)


def test_prune_absorbs_the_junction_of_a_pruned_import(path: Path, tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    write_days(source, 2, target="elsewhere")
    file = tmp_path / "export.jsonl"
    export_to(source, file)
    with History.open(path) as history:
        record(history, [obs("fp_a", at=T0 - 30 * DAY)], at=T0 - 30 * DAY)
    import_history(path, file, LATER)
    write_days(path, 1)
    prune_history(config(path), 0.5 * 86400, T0 + DAY, dry_run=False)
    assert [c.kind.value for c in verify_history(path).checkpoints] == ["prune"]


def test_prune_refuses_a_broken_chain_and_deletes_nothing(path: Path) -> None:
    write_days(path, 4)
    execute(path, "UPDATE observations SET fingerprint = 'fp_x' WHERE id = 2")
    with pytest.raises(ChainBroken, match=r"refusing to prune.*record 2"):
        prune_history(config(path), 0, T0 + 10 * DAY, dry_run=False)
    assert rows(path, "SELECT count(*) AS n FROM observations") == [{"n": 8}]


def test_dry_run_deletes_nothing(path: Path) -> None:
    write_days(path, 4)
    pruned = prune_history(config(path), 0, T0 + 10 * DAY, dry_run=True)
    assert (pruned.observations, pruned.checks, pruned.dry_run) == (8, 3, True)
    assert rows(path, "SELECT count(*) AS n FROM observations") == [{"n": 8}]


def test_retention_from_the_config_and_no_age_at_all(path: Path) -> None:
    write_days(path, 4)
    with_retention = dataclasses.replace(config(path), retention=1.5 * 86400)
    # 1.5 days back from day 4 is day 2.5: the two samples of days 0, 1 and 2 go
    assert prune_history(with_retention, None, T0 + 4 * DAY, dry_run=True).observations == 6
    with pytest.raises(ConfigError, match="--older-than 90d") as info:
        prune_history(config(path), None, T0, dry_run=True)
    assert info.value.exit_code == ExitCode.USAGE


def test_prune_never_creates_a_history(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(HistoryError):
        prune_history(config(missing), 0, T0, dry_run=False)
    assert not missing.exists()


def test_vacuum_gives_the_space_back(path: Path) -> None:
    with History.open(path) as history:
        for n in range(200):
            at = T0 + n * timedelta(minutes=1)
            big = [dataclasses.replace(obs("fp_a", at=at), raw_response="r" * 8000)] * 3
            record(history, big, at=at)
    pruned = prune_history(config(path), 0, T0 + DAY, dry_run=False)
    assert pruned.size_after < pruned.size_before / 5


# --- the migration from an earlier schema -----------------------------------------------


def test_a_history_of_the_earlier_schema_migrates_and_verifies(path: Path) -> None:
    """Histories were chained from the first schema on: records written before the reading
    indexes and the checkpoints table existed verify after the migration."""
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        for name, sql in MIGRATIONS[:2]:
            db.executescript(sql)
            db.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (name,))
        previous = GENESIS_HASH
        for n in range(3):  # what append_check wrote under schema 2
            row = observation_row(f"c{n}", obs("fp_a", at=T0 + n * DAY), previous)
            del row["tags"], row["site"], row["canary"]  # schema 2 had none of these
            row["hash"] = previous = chain_hash(row)
            db.execute(
                f"INSERT INTO observations ({', '.join(row)}) VALUES "
                f"({', '.join('?' for _ in row)})",
                tuple(row.values()),
            )
        db.execute("PRAGMA user_version = 2")
        db.commit()
    with History.open(path) as history:
        assert history.count_observations() == 3
        record(history, [obs("fp_a", at=T0 + 3 * DAY)], at=T0 + 3 * DAY)
    assert schema(path) == EXPECTED_SCHEMA and indexes(path) == EXPECTED_INDEXES
    assert verify_history(path).records == 4
