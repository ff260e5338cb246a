"""The SQLite history: file mode, schema and migrations, recording, facts, chain, concurrency."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fp_monitor.domain.chain import CHAINED_COLUMNS, GENESIS_HASH, chain_hash
from fp_monitor.domain.detect import detect
from fp_monitor.domain.errors import ExitCode, HistoryError
from fp_monitor.domain.models import (
    ABSENT,
    NULL,
    ErrorKind,
    Observation,
    Source,
    Status,
    TargetResult,
    Usage,
)
from fp_monitor.store.history import History
from fp_monitor.store.migrations import MIGRATIONS

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def obs(
    fingerprint: str | None = "fp_a",
    model: str | None = "m-1",
    *,
    target: str = "grok",
    at: datetime = T0,
    error: ErrorKind | None = None,
    latency: float | None = 123.5,
    headers: dict[str, str] | None = None,
) -> Observation:
    """A successful sample, or a failed one when `error` is given."""
    failed = error is not None
    return Observation(
        target=target,
        provider="xai",
        base_url="https://api.x.ai/v1",
        requested_model="grok-4",
        observed_at=at,
        attempts=3 if failed else 1,
        latency_ms=latency,
        request_shape="shape-1",
        http_status=503 if failed else 200,
        fingerprint=None if failed else fingerprint,
        resolved_model=None if failed else model,
        response_id=None if failed else "chatcmpl-1",
        request_id="req-1",
        usage=Usage() if failed else Usage(5, 1, 6),
        headers=headers or {},
        error_kind=error,
        error_message="overloaded" if failed else None,
        raw_response='{"error": "overloaded"}' if failed else '{"id": "chatcmpl-1"}',
    )


def record(
    history: History,
    observations: list[Observation],
    *,
    target: str = "grok",
    at: datetime = T0,
    check_id: str | None = None,
    source: Source = Source.PROBE,
) -> TargetResult:
    """What `fpmon check` does for one target: facts and detection inside the write."""
    with history.write():
        facts = history.facts(target, kind=source)
        result = detect(target, observations, facts, samples=len(observations))
        history.append_check(check_id or uuid.uuid4().hex, at, result, observations, source)
    return result


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "history.db"


@pytest.fixture
def history(path: Path) -> Iterator[History]:
    with History.open(path) as opened:
        yield opened


def rows(path: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql, args)]


# --- the file ---------------------------------------------------------------------------


def test_open_creates_the_file_owner_only_whatever_the_umask(path: Path) -> None:
    old = os.umask(0)
    try:
        with History.open(path) as history:
            record(history, [obs()])
            for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                if file.exists():
                    assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_open_uses_wal_mode(history: History, path: Path) -> None:
    assert rows(path, "PRAGMA journal_mode")[0]["journal_mode"] == "wal"


def test_not_sqlite_is_a_history_error(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    path.write_text("this is my shopping list, not a database\n" * 50)
    with pytest.raises(HistoryError) as info:
        History.open(path)
    message = str(info.value)
    assert info.value.exit_code == ExitCode.HISTORY == 4
    assert "\n" not in message
    assert str(path) in message
    assert "not" in message and "SQLite" in message


def test_not_sqlite_read_only_is_a_history_error(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"\x00garbage" * 500)
    with pytest.raises(HistoryError) as info:
        History.open_readonly(path)
    assert info.value.exit_code == 4
    assert "\n" not in str(info.value)


def test_open_readonly_on_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "history.db"
    assert History.open_readonly(path) is None
    assert not path.exists()
    assert not path.parent.exists()


def test_open_readonly_reads_what_was_recorded(path: Path) -> None:
    with History.open(path) as history:
        record(history, [obs("fp_a")])
    readonly = History.open_readonly(path)
    assert readonly is not None
    with readonly:
        assert readonly.facts("grok").previous_fingerprints == {"fp_a"}
        assert readonly.count_observations() == 1


def test_open_readonly_refuses_an_unmigrated_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 1")
    with pytest.raises(HistoryError) as info:
        History.open_readonly(path)
    assert info.value.exit_code == 4


# --- schema and migrations --------------------------------------------------------------

# (name, declared type, not null, default, primary key) per column, as PRAGMA table_info says.
EXPECTED_SCHEMA: dict[str, list[tuple[str, str, int, str | None, int]]] = {
    "schema_migrations": [
        ("name", "TEXT", 0, None, 1),
        ("applied_at", "TEXT", 1, None, 0),
    ],
    "observations": [
        ("id", "INTEGER", 0, None, 1),
        ("check_id", "TEXT", 1, None, 0),
        ("observed_at", "TEXT", 1, None, 0),
        ("source", "TEXT", 1, "'probe'", 0),
        ("target", "TEXT", 1, None, 0),
        ("provider", "TEXT", 1, None, 0),
        ("base_url", "TEXT", 1, None, 0),
        ("requested_model", "TEXT", 1, None, 0),
        ("resolved_model", "TEXT", 0, None, 0),
        ("fingerprint", "TEXT", 0, None, 0),
        ("fingerprint_state", "TEXT", 0, None, 0),
        ("response_id", "TEXT", 0, None, 0),
        ("request_id", "TEXT", 0, None, 0),
        ("http_status", "INTEGER", 0, None, 0),
        ("latency_ms", "REAL", 0, None, 0),
        ("attempts", "INTEGER", 1, None, 0),
        ("prompt_tokens", "INTEGER", 0, None, 0),
        ("completion_tokens", "INTEGER", 0, None, 0),
        ("total_tokens", "INTEGER", 0, None, 0),
        ("headers", "TEXT", 1, "'{}'", 0),
        ("error_kind", "TEXT", 0, None, 0),
        ("error_message", "TEXT", 0, None, 0),
        ("request_shape", "TEXT", 1, None, 0),
        ("raw_response", "TEXT", 0, None, 0),
        ("prev_hash", "TEXT", 1, None, 0),
        ("hash", "TEXT", 1, None, 0),
        ("tags", "TEXT", 1, "'{}'", 0),
        ("site", "TEXT", 0, None, 0),
        ("canary", "TEXT", 0, None, 0),
    ],
    "checks": [
        ("id", "INTEGER", 0, None, 1),
        ("check_id", "TEXT", 1, None, 0),
        ("target", "TEXT", 1, None, 0),
        ("checked_at", "TEXT", 1, None, 0),
        ("status", "TEXT", 1, None, 0),
        ("fingerprints", "TEXT", 0, None, 0),
        ("models", "TEXT", 0, None, 0),
        ("headers", "TEXT", 0, None, 0),
        ("samples", "INTEGER", 1, None, 0),
        ("errors", "INTEGER", 1, None, 0),
        ("learning", "INTEGER", 0, None, 0),
        ("source", "TEXT", 1, "'probe'", 0),
        ("canary", "TEXT", 0, None, 0),
    ],
    "known_values": [
        ("target", "TEXT", 1, None, 1),
        ("field", "TEXT", 1, None, 2),
        ("value", "TEXT", 1, None, 3),
        ("first_seen", "TEXT", 1, None, 0),
        ("samples", "INTEGER", 1, "0", 0),
    ],
    "chain_checkpoints": [
        ("id", "INTEGER", 0, None, 1),
        ("kind", "TEXT", 1, None, 0),
        ("after_id", "INTEGER", 1, None, 0),
        ("from_hash", "TEXT", 1, None, 0),
        ("hash", "TEXT", 1, None, 0),
        ("records", "INTEGER", 1, None, 0),
        ("created_at", "TEXT", 1, None, 0),
    ],
    "known_values_by_source": [
        ("target", "TEXT", 1, None, 1),
        ("source", "TEXT", 1, None, 2),
        ("field", "TEXT", 1, None, 3),
        ("value", "TEXT", 1, None, 4),
        ("first_seen", "TEXT", 1, None, 0),
        ("samples", "INTEGER", 1, "0", 0),
    ],
    "known_baseline": [
        ("target", "TEXT", 1, None, 1),
        ("source", "TEXT", 1, None, 2),
        ("field", "TEXT", 1, None, 3),
        ("value", "TEXT", 1, None, 4),
        ("first_seen", "TEXT", 1, None, 0),
        ("samples", "INTEGER", 1, None, 0),
    ],
    "chain_seals": [
        ("id", "INTEGER", 0, None, 1),
        ("prev_hash", "TEXT", 1, None, 0),
        ("after_id", "INTEGER", 1, None, 0),
        ("record_hash", "TEXT", 1, None, 0),
        ("rows", "INTEGER", 1, None, 0),
        ("rows_digest", "TEXT", 1, None, 0),
        ("baseline", "TEXT", 1, None, 0),
        ("pruned_before", "TEXT", 0, None, 0),
        ("trimmed_hash", "TEXT", 0, None, 0),
        ("created_at", "TEXT", 1, None, 0),
        ("hash", "TEXT", 1, None, 0),
    ],
    "sealed_rows": [
        ("seal", "INTEGER", 1, None, 3),
        ("tbl", "TEXT", 1, None, 1),
        ("row_id", "INTEGER", 1, None, 2),
        ("row_hash", "TEXT", 1, None, 0),
        ("checked_at", "TEXT", 0, None, 0),
        ("after_id", "INTEGER", 0, None, 0),
    ],
    "canary_signatures": [
        ("target", "TEXT", 1, None, 1),
        ("signatures", "TEXT", 1, None, 0),
        ("updated_at", "TEXT", 1, None, 0),
    ],
    "canary_refusals": [
        ("target", "TEXT", 1, None, 1),
        ("refused", "TEXT", 1, None, 2),
        ("first_at", "TEXT", 1, None, 0),
    ],
}
EXPECTED_INDEXES = {
    ("observations_target", "observations", ("target", "id")),
    ("observations_check", "observations", ("check_id",)),
    ("checks_target", "checks", ("target", "id")),
    ("observations_time", "observations", ("observed_at",)),
    ("observations_target_time", "observations", ("target", "observed_at")),
    ("observations_hash", "observations", ("hash",)),
    ("checks_target_time", "checks", ("target", "checked_at")),
    ("checks_target_learning", "checks", ("target", "id")),
    ("checks_target_source", "checks", ("target", "source", "id")),
    ("checks_target_source_time", "checks", ("target", "source", "checked_at")),
    ("chain_seals_hash", "chain_seals", ("hash",)),
    ("sealed_rows_seal", "sealed_rows", ("seal", "tbl", "row_id")),
    (
        "observations_report",
        "observations",
        (
            "target",
            "observed_at",
            "source",
            "fingerprint",
            "fingerprint_state",
            "resolved_model",
            "error_kind",
        ),
    ),
    ("checks_report", "checks", ("target", "status", "checked_at", "source")),
    ("observations_site", "observations", ("target", "site")),
    ("checks_target_status_time", "checks", ("target", "status", "checked_at", "id")),
}


def schema(path: Path) -> dict[str, list[tuple[str, str, int, str | None, int]]]:
    tables = rows(path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    return {
        t["name"]: [
            (c["name"], c["type"], c["notnull"], c["dflt_value"], c["pk"])
            for c in rows(path, f"PRAGMA table_info({t['name']})")
        ]
        for t in tables
    }


def indexes(path: Path) -> set[tuple[str, str, tuple[str, ...]]]:
    found = rows(
        path,
        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    result = set()
    for index in found:
        columns = rows(path, f"PRAGMA index_info({index['name']})")
        result.add((index["name"], index["tbl_name"], tuple(c["name"] for c in columns)))
    return result


def test_migrating_an_empty_database_gives_the_schema(path: Path) -> None:
    History.open(path).close()
    assert schema(path) == EXPECTED_SCHEMA
    assert indexes(path) == EXPECTED_INDEXES
    assert rows(path, "PRAGMA user_version")[0]["user_version"] == len(MIGRATIONS)
    applied = rows(path, "SELECT name FROM schema_migrations ORDER BY name")
    assert [r["name"] for r in applied] == [name for name, _ in MIGRATIONS]


def test_known_values_has_no_rowid(path: Path) -> None:
    History.open(path).close()
    (table,) = rows(path, "SELECT sql FROM sqlite_master WHERE name = 'known_values'")
    assert "WITHOUT ROWID" in table["sql"]


def test_reopening_does_not_rerun_migrations(path: Path) -> None:
    with History.open(path) as history:
        record(history, [obs()])
    before = rows(path, "SELECT * FROM schema_migrations ORDER BY name")
    with History.open(path) as history:
        assert history.count_observations() == 1
    assert rows(path, "SELECT * FROM schema_migrations ORDER BY name") == before
    assert schema(path) == EXPECTED_SCHEMA


def test_forward_migration_from_version_1_keeps_the_data(path: Path) -> None:
    path.parent.mkdir(parents=True)
    first_name, first_sql = MIGRATIONS[0]
    with closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL);"
            + first_sql
        )
        db.execute(
            "INSERT INTO schema_migrations VALUES (?, '2026-01-01T00:00:00.000000Z')", (first_name,)
        )
        db.execute(
            "INSERT INTO observations (check_id, observed_at, target, provider, base_url,"
            " requested_model, attempts, request_shape, prev_hash, hash)"
            " VALUES ('c', 't', 'old', 'xai', 'u', 'm', 1, 's', ?, 'h')",
            (GENESIS_HASH,),
        )
        db.execute("PRAGMA user_version = 1")
        db.commit()
    with History.open(path) as history:
        assert history.count_observations("old") == 1
    assert schema(path) == EXPECTED_SCHEMA
    assert rows(path, "PRAGMA user_version")[0]["user_version"] == len(MIGRATIONS)
    applied = rows(path, "SELECT * FROM schema_migrations ORDER BY name")
    assert applied[0] == {"name": first_name, "applied_at": "2026-01-01T00:00:00.000000Z"}
    assert [r["name"] for r in applied] == [name for name, _ in MIGRATIONS]


# --- recording and facts ----------------------------------------------------------------


def test_every_observation_is_stored_failures_included(history: History, path: Path) -> None:
    observations = [
        obs("fp_a", headers={"server": "nginx"}),
        obs(error=ErrorKind.SERVER),
        obs("fp_b", at=T0 + timedelta(seconds=1)),
    ]
    record(history, observations, check_id="check-1")
    assert history.count_observations() == 3
    assert history.count_observations("grok") == 3
    stored = rows(path, "SELECT * FROM observations ORDER BY id")
    assert [r["check_id"] for r in stored] == ["check-1"] * 3
    ok, failed = stored[0], stored[1]
    assert ok["observed_at"] == "2026-11-29T10:00:00.000000Z"
    assert (ok["target"], ok["provider"], ok["base_url"]) == ("grok", "xai", "https://api.x.ai/v1")
    assert (ok["requested_model"], ok["resolved_model"]) == ("grok-4", "m-1")
    assert (ok["fingerprint"], ok["fingerprint_state"]) == ("fp_a", "value")
    assert (ok["response_id"], ok["request_id"], ok["http_status"]) == ("chatcmpl-1", "req-1", 200)
    assert (ok["latency_ms"], ok["attempts"]) == (123.5, 1)
    assert (ok["prompt_tokens"], ok["completion_tokens"], ok["total_tokens"]) == (5, 1, 6)
    assert ok["headers"] == '{"server": "nginx"}'
    assert (ok["request_shape"], ok["raw_response"]) == ("shape-1", '{"id": "chatcmpl-1"}')
    assert ok["error_kind"] is None
    assert (failed["error_kind"], failed["error_message"]) == ("server", "overloaded")
    assert (failed["http_status"], failed["attempts"]) == (503, 3)
    assert (failed["fingerprint"], failed["fingerprint_state"]) == (None, None)
    (check,) = rows(path, "SELECT * FROM checks")
    assert (check["check_id"], check["target"], check["samples"], check["errors"]) == (
        "check-1",
        "grok",
        3,
        1,
    )


def test_an_all_failed_check_is_recorded(history: History, path: Path) -> None:
    result = record(history, [obs(error=ErrorKind.TIMEOUT), obs(error=ErrorKind.TIMEOUT)])
    assert result.status is Status.ERROR
    assert history.count_observations() == 2
    (check,) = rows(path, "SELECT status, errors FROM checks")
    assert check == {"status": "error", "errors": 2}


def test_facts_of_an_unknown_target_are_empty(history: History) -> None:
    record(history, [obs("fp_a", target="other")], target="other")
    facts = history.facts("grok")
    assert facts.previous_fingerprints is None
    assert facts.previous_models is None
    assert facts.known_fingerprints == frozenset()
    assert facts.known_models == frozenset()
    assert facts.first_seen == {}


def test_facts_give_previous_known_and_first_seen(history: History) -> None:
    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    first = record(history, [obs("fp_a", "m-1", at=t1, headers={"server": "s1"})], at=t1)
    assert first.status is Status.FIRST

    facts = history.facts("grok")
    assert facts.previous_fingerprints == {"fp_a"}
    assert facts.previous_models == {"m-1"}
    assert facts.previous_headers == {"server": {"s1"}}
    assert facts.known_fingerprints == {"fp_a"}
    assert facts.known_models == {"m-1"}
    assert facts.first_seen == {("fingerprint", "fp_a"): t1, ("model", "m-1"): t1}

    # A check where every sample failed is not a previous check, and teaches nothing.
    record(history, [obs(error=ErrorKind.SERVER, at=t2)], at=t2)
    assert history.facts("grok") == facts

    new = record(history, [obs("fp_b", "m-2", at=t3), obs("fp_a", "m-1", at=t3)], at=t3)
    assert new.status is Status.NEW
    assert new.previous == ("fp_a",)
    facts = history.facts("grok")
    assert facts.previous_fingerprints == {"fp_a", "fp_b"}
    assert facts.previous_models == {"m-1", "m-2"}
    assert facts.known_fingerprints == {"fp_a", "fp_b"}
    assert facts.known_models == {"m-1", "m-2"}
    assert facts.first_seen[("fingerprint", "fp_a")] == t1
    assert facts.first_seen[("fingerprint", "fp_b")] == t3
    assert facts.first_seen[("model", "m-2")] == t3


def test_recorded_values_are_known_next_time(history: History) -> None:
    record(history, [obs("fp_a")])
    assert record(history, [obs("fp_a")]).status is Status.SAME
    assert record(history, [obs("fp_b")]).status is Status.NEW
    # fp_b joined the known set: flapping back and forth is a change, not an alarm.
    assert record(history, [obs("fp_a")]).status is Status.CHANGED
    assert record(history, [obs("fp_b")]).status is Status.CHANGED


def test_facts_are_per_target(history: History) -> None:
    record(history, [obs("fp_a", target="one")], target="one")
    record(history, [obs("fp_b", target="two")], target="two")
    assert history.facts("one").known_fingerprints == {"fp_a"}
    assert history.facts("two").known_fingerprints == {"fp_b"}


@pytest.mark.parametrize(
    ("token", "columns"),
    [
        (NULL, (None, "null")),
        (ABSENT, (None, "absent")),
        ("", ("", "empty")),
        ("fp_x", ("fp_x", "value")),
    ],
    ids=["null", "absent", "empty", "value"],
)
def test_fingerprint_states_are_stored_distinctly(
    history: History, path: Path, token: str, columns: tuple[str | None, str]
) -> None:
    record(history, [obs(token)])
    (row,) = rows(path, "SELECT fingerprint, fingerprint_state FROM observations")
    assert (row["fingerprint"], row["fingerprint_state"]) == columns
    assert history.facts("grok").known_fingerprints == {token}
    assert history.facts("grok").previous_fingerprints == {token}


def test_the_four_states_round_trip_through_facts(history: History) -> None:
    record(history, [obs(NULL), obs(ABSENT), obs(""), obs("fp_x")])
    facts = history.facts("grok")
    assert facts.known_fingerprints == {NULL, ABSENT, "", "fp_x"}
    assert record(history, [obs(ABSENT), obs("")]).status is Status.SAME


# --- the chain --------------------------------------------------------------------------


def assert_chain_unbroken(path: Path) -> list[dict[str, Any]]:
    stored = rows(path, "SELECT * FROM observations ORDER BY id")
    previous_hash = GENESIS_HASH
    for row in stored:
        assert row["prev_hash"] == previous_hash, row["id"]
        assert chain_hash(row) == row["hash"], row["id"]
        previous_hash = row["hash"]
    return stored


def test_each_row_chains_to_the_previous_one(path: Path) -> None:
    with History.open(path) as history:
        record(history, [obs("fp_a"), obs(error=ErrorKind.SERVER)])
        record(history, [obs(NULL, at=T0 + timedelta(minutes=1))], target="grok")
    with History.open(path) as history:  # a new connection continues the chain
        record(history, [obs("", target="other"), obs(ABSENT, target="other")], target="other")
    stored = assert_chain_unbroken(path)
    assert len(stored) == 5
    assert len({row["hash"] for row in stored}) == 5


def test_a_tampered_row_breaks_the_chain(history: History, path: Path) -> None:
    record(history, [obs("fp_a"), obs("fp_a")])
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE observations SET fingerprint = 'fp_forged' WHERE id = 1")
        db.commit()
    first = rows(path, "SELECT * FROM observations ORDER BY id")[0]
    assert chain_hash(first) != first["hash"]


def test_chain_hash_survives_a_whole_number_latency(history: History, path: Path) -> None:
    # An untampered record must verify, whatever Python number type carried the latency.
    record(history, [obs("fp_a", latency=120)])
    assert_chain_unbroken(path)


# --- concurrency ------------------------------------------------------------------------

WORKERS = 6
CHECKS_PER_WORKER = 20


def _append_checks(path: str, worker: int, start: Any) -> None:
    """Child process: one fpmon-like process appending checks to the shared history."""
    start.wait()
    target = f"worker-{worker}"
    with History.open(Path(path)) as history:
        for n in range(CHECKS_PER_WORKER):
            at = T0 + timedelta(seconds=n)
            observations = [
                obs(f"fp_{n % 3}", target=target, at=at),
                obs(error=ErrorKind.RATE_LIMITED, target=target, at=at),
            ]
            record(history, observations, target=target, at=at, check_id=f"{worker}-{n}")


def test_concurrent_processes_lose_nothing_and_keep_the_chain(path: Path) -> None:
    History.open(path).close()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WORKERS)
    processes = [
        context.Process(target=_append_checks, args=(str(path), worker, start))
        for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * WORKERS

    checks = rows(path, "SELECT check_id, target FROM checks")
    assert len(checks) == WORKERS * CHECKS_PER_WORKER
    expected_ids = {f"{w}-{n}" for w in range(WORKERS) for n in range(CHECKS_PER_WORKER)}
    assert {c["check_id"] for c in checks} == expected_ids
    per_check = rows(path, "SELECT check_id, count(*) AS n FROM observations GROUP BY check_id")
    assert {r["check_id"]: r["n"] for r in per_check} == dict.fromkeys(expected_ids, 2)

    stored = assert_chain_unbroken(path)
    assert len(stored) == WORKERS * CHECKS_PER_WORKER * 2
    with History.open(path) as history:
        for worker in range(WORKERS):
            facts = history.facts(f"worker-{worker}")
            assert facts.known_fingerprints == {"fp_0", "fp_1", "fp_2"}


OPEN_ROUNDS = 500


def _open_new_histories(directory: str, start: Any, failures: Any) -> None:
    """Child process: in each round, open a history that none of the processes created yet."""
    errors = []
    for round_ in range(OPEN_ROUNDS):
        start.wait()
        try:
            History.open(Path(directory) / f"history-{round_}.db").close()
        except HistoryError as exc:
            errors.append(str(exc))
    failures.put(errors)


def test_processes_opening_a_new_history_at_once_all_succeed(tmp_path: Path) -> None:
    # Cron jobs on a fresh machine: several fpmon processes create the same history at once.
    context = multiprocessing.get_context("spawn")
    start, failures = context.Barrier(WORKERS), context.Queue()
    processes = [
        context.Process(target=_open_new_histories, args=(str(tmp_path), start, failures))
        for _ in range(WORKERS)
    ]
    for process in processes:
        process.start()
    errors = [error for _ in processes for error in failures.get(timeout=120)]
    for process in processes:
        process.join(timeout=30)
    assert errors == []


def test_migration_0003_counts_the_samples_of_known_values(path: Path) -> None:
    """A history written before learning gets its per-value sample counts from its rows."""
    path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL);"
            + MIGRATIONS[0][1]
            + MIGRATIONS[1][1]
        )
        for name, _ in MIGRATIONS[:2]:
            db.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (name,))
        rows_in = [("fp_a", "value"), ("fp_a", "value"), (None, "null"), (None, None)]
        for fingerprint, state in rows_in:
            db.execute(
                "INSERT INTO observations (check_id, observed_at, target, provider, base_url,"
                " requested_model, resolved_model, fingerprint, fingerprint_state, attempts,"
                " request_shape, prev_hash, hash, error_kind)"
                " VALUES ('c', 't', 'x', 'p', 'u', 'm', 'm-1', ?, ?, 1, 's', '', '', ?)",
                (fingerprint, state, None if state else "timeout"),
            )
        db.executemany(
            "INSERT INTO known_values VALUES ('x', ?, ?, '2026-01-01T00:00:00.000000Z')",
            [("fingerprint", "fp_a"), ("fingerprint", "<null>"), ("model", "m-1")],
        )
        db.execute("PRAGMA user_version = 2")
        db.commit()
    with History.open(path) as history:
        facts = history.facts("x")
    assert facts.fingerprint_counts == {"fp_a": 2, "<null>": 1}
    counts = rows(path, "SELECT value, samples FROM known_values WHERE field = 'model'")
    assert [(r["value"], r["samples"]) for r in counts] == [("m-1", 3)]


# --- sources: probe and traffic in one history -------------------------------------------

PROBE, TRAFFIC = frozenset({Source.PROBE}), frozenset({Source.TRAFFIC})


def test_facts_can_be_limited_to_one_source(history: History) -> None:
    record(history, [obs("fp_a"), obs("fp_a")], at=T0)
    later, latest = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    record(history, [obs("fp_b", "m-2", at=later)], at=later, source=Source.TRAFFIC)
    record(history, [obs("fp_a", at=latest)], at=latest, source=Source.TRAFFIC)

    everything = history.facts("grok")
    assert everything.known_fingerprints == {"fp_a", "fp_b"}
    assert everything.fingerprint_counts == {"fp_a": 3, "fp_b": 1}
    assert everything.previous_fingerprints == {"fp_a"}

    probes = history.facts("grok", PROBE)
    assert probes.known_fingerprints == {"fp_a"}
    assert probes.known_models == {"m-1"}
    assert probes.fingerprint_counts == {"fp_a": 2}

    traffic = history.facts("grok", TRAFFIC)
    assert traffic.known_fingerprints == {"fp_a", "fp_b"}
    assert traffic.fingerprint_counts == {"fp_a": 1, "fp_b": 1}
    # first seen by this source, not by any
    assert traffic.first_seen[("fingerprint", "fp_a")] == latest
    assert everything.first_seen[("fingerprint", "fp_a")] == T0


def test_known_and_learning_follow_the_chosen_source_previous_the_kind(
    history: History, path: Path
) -> None:
    record(history, [obs("fp_a")], at=T0)
    record(history, [obs("fp_b")], at=T0 + timedelta(minutes=1), source=Source.TRAFFIC)
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE checks SET learning = CASE source WHEN 'probe' THEN 0 ELSE 1 END")
        db.commit()
    assert history.facts("grok").known_fingerprints == {"fp_a", "fp_b"}
    assert history.facts("grok", PROBE).known_fingerprints == {"fp_a"}
    assert history.facts("grok", TRAFFIC).known_fingerprints == {"fp_b"}
    assert history.facts("grok", TRAFFIC).previous_fingerprints == {"fp_a"}  # a probe's
    assert history.facts("grok", kind=Source.TRAFFIC).previous_fingerprints == {"fp_b"}
    assert history.facts("grok", PROBE).learning_ended
    assert not history.facts("grok", TRAFFIC).learning_ended
    sources = rows(path, "SELECT source FROM checks ORDER BY id")
    assert [r["source"] for r in sources] == ["probe", "traffic"]


def test_tags_are_stored_as_json_and_chained(history: History, path: Path) -> None:
    tagged = replace(obs("fp_a"), tags={"user": "u-42", "team": "search"})
    record(history, [obs("fp_a"), tagged], source=Source.TRAFFIC)
    stored = assert_chain_unbroken(path)
    assert [json.loads(r["tags"]) for r in stored] == [{}, {"team": "search", "user": "u-42"}]
    assert {r["source"] for r in stored} == {"traffic"}
    with closing(sqlite3.connect(path)) as db:
        db.execute("""UPDATE observations SET tags = '{"user": "u-1"}' WHERE id = 2""")
        db.execute("""UPDATE observations SET tags = '{"user": "u-1"}' WHERE id = 1""")
        db.commit()
    for row in rows(path, "SELECT * FROM observations ORDER BY id"):
        assert chain_hash(row) != row["hash"], row["id"]


def test_a_row_without_tags_hashes_as_before_migration_0007(history: History, path: Path) -> None:
    record(history, [obs("fp_a")])
    (row,) = rows(path, "SELECT * FROM observations")
    before_0007 = json.dumps([row[c] for c in CHAINED_COLUMNS], separators=(",", ":"))
    assert row["hash"] == hashlib.sha256(before_0007.encode()).hexdigest()


def test_migration_0007_keeps_the_known_values_as_seen_by_probes(path: Path) -> None:
    path.parent.mkdir(parents=True)
    names = [name for name, _ in MIGRATIONS]
    before = MIGRATIONS[: names.index("0007_traffic")]
    with closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL);"
            + "".join(sql.rstrip().rstrip(";") + ";" for _, sql in before)
        )
        for name, _ in before:
            db.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (name,))
        db.executemany(
            "INSERT INTO known_values VALUES ('x', ?, ?, '2026-01-01T00:00:00.000000Z', ?)",
            [("fingerprint", "fp_a", 4), ("model", "m-1", 4)],
        )
        db.execute(
            "INSERT INTO checks (check_id, target, checked_at, status, fingerprints, models,"
            " headers, samples, errors) VALUES ('c', 'x', '2026-01-01T00:00:00.000000Z',"
            " 'first', '[\"fp_a\"]', '[\"m-1\"]', '{}', 4, 0)"
        )
        db.execute(f"PRAGMA user_version = {len(before)}")
        db.commit()
    with History.open(path) as history:
        probes = history.facts("x", PROBE)
        assert history.facts("x", TRAFFIC).known_fingerprints == frozenset()
    assert probes.known_fingerprints == {"fp_a"}
    assert probes.known_models == {"m-1"}
    assert probes.fingerprint_counts == {"fp_a": 4}
    assert probes.previous_fingerprints == {"fp_a"}


def test_a_check_is_compared_with_the_previous_check_of_its_own_kind(history: History) -> None:
    """One response is one sample: after it, a probe that sees the fleet's two values is not
    `changed`, and a response is compared with the last response."""
    minute = timedelta(minutes=1)
    both = [obs("fp_a"), obs("fp_b")]
    statuses = [
        record(history, both, at=T0).status,
        record(history, [obs("fp_a")], at=T0 + minute, source=Source.TRAFFIC).status,
        record(history, both, at=T0 + 2 * minute).status,
        record(history, [obs("fp_b")], at=T0 + 3 * minute, source=Source.TRAFFIC).status,
    ]
    assert statuses == [Status.FIRST, Status.SAME, Status.SAME, Status.CHANGED]
    assert history.facts("grok", kind=Source.TRAFFIC).previous_fingerprints == {"fp_b"}
    assert history.facts("grok").previous_fingerprints == {"fp_a", "fp_b"}
