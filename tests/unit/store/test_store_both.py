"""The history on both stores (the `history_url` fixture: SQLite, then PostgreSQL): the same
records, facts, chain, checkpoints and prune; and what only PostgreSQL has (the URL rules, the
advisory lock, reconnecting)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from fp_monitor.audit import verify_history
from fp_monitor.config.history_url import PostgresURL, history_location
from fp_monitor.domain.errors import ChainBroken, ConfigError, ExitCode, HistoryError
from fp_monitor.domain.models import ALL_SOURCES, ErrorKind, Status, Window
from fp_monitor.store.history import History
from fp_monitor.store.migrations import MIGRATIONS
from fp_monitor.store.postgres import migration_sql
from tests.conftest import edit_stored, postgres_database, stored_rows
from tests.unit.store.test_history import T0, obs, record


def location(url: str) -> Path | PostgresURL:
    return history_location(url, "test")


@pytest.fixture
def history(history_url: str) -> Iterator[History]:
    with History.open(location(history_url)) as opened:
        yield opened


def test_records_facts_and_reads_are_the_same_on_both_stores(history: History) -> None:
    first = record(history, [obs("fp_a"), obs("fp_b", latency=0.1 + 0.2)], at=T0)
    second = record(history, [obs("fp_c", at=T0 + timedelta(minutes=1))], at=T0 + timedelta(1))
    failed = record(
        history, [obs(error=ErrorKind.SERVER, at=T0 + timedelta(2))], at=T0 + timedelta(2)
    )
    assert (first.status, second.status, failed.status) == (
        Status.FIRST,
        Status.NEW,
        Status.ERROR,
    )
    facts = history.facts("grok")
    assert facts.known_fingerprints == {"fp_a", "fp_b", "fp_c"}
    assert facts.fingerprint_counts == {"fp_a": 1, "fp_b": 1, "fp_c": 1}
    assert facts.previous_fingerprints == {"fp_c"}
    assert history.targets() == ["grok"]
    checks = list(history.iter_checks("grok", Window(None, None, ALL_SOURCES)))
    assert [c.status for c in checks] == ["error", "new", "first"]
    latest = history.observations("grok", Window(None, None, ALL_SOURCES), 10)
    assert [r.observation.fingerprint for r in latest] == [None, "fp_c", "fp_b", "fp_a"]
    # a double precision column: the float comes back bit for bit (the chain hashes it)
    assert latest[2].observation.latency_ms == 0.1 + 0.2
    assert history.failed_before("grok", checks[0].check_id) == 0
    result = history.walk_chain(history.checkpoints())
    assert result.broken is None and result.records == 4


def test_prune_leaves_a_checkpoint_that_verifies_on_both_stores(history: History) -> None:
    for day in range(3):
        record(history, [obs("fp_a", at=T0 + timedelta(day))], at=T0 + timedelta(day))
    with history.write():
        plan = history.prune_plan(T0 + timedelta(days=2))
        history.prune(plan)
    history.vacuum()
    assert (plan.observations, plan.checks) == (2, 2)
    result = history.walk_chain(history.checkpoints())
    assert result.broken is None and (result.records, result.head_id) == (1, 3)


def test_the_walk_crosses_a_prune_and_stops_at_an_edit_on_both_stores(
    history: History, history_url: str
) -> None:
    """walk_chain (SQLite's encoding on SQLite, fpmon's on PostgreSQL) across a prune's
    checkpoint, and when a record was edited."""
    for day in range(6):
        record(history, [obs("fp_a", at=T0 + timedelta(day))] * 2, at=T0 + timedelta(day))
    with history.write():
        history.prune(history.prune_plan(T0 + timedelta(days=2)))
    for edited in (False, True):
        if edited:
            edit_stored(history_url, "UPDATE observations SET fingerprint = 'fp_x' WHERE id = 9")
        with history.snapshot():
            walked = history.walk_chain(history.checkpoints())
        # records 5 to 12 after the prune; the walk stops at the edited one, 9
        assert (walked.records, walked.head_id) == ((5, 8) if edited else (8, 12))
        assert (walked.broken is not None) is edited


def test_seals_and_the_derived_tables_verify_and_an_edit_is_caught_on_both_stores(
    history: History, history_url: str
) -> None:
    """verify (seals, and the known values and check rows derived from the records) after
    records and a prune, on either store (import: tests/e2e/test_shared_history_e2e.py)."""
    for day in range(3):
        record(history, [obs(f"fp_{day}", at=T0 + timedelta(day))], at=T0 + timedelta(day))
    with history.write():
        history.prune(history.prune_plan(T0 + timedelta(days=1)))
    verified = verify_history(location(history_url))
    assert verified.seal is not None and verified.records == 2
    edit_stored(history_url, "UPDATE checks SET status = 'same' WHERE status = 'new'")
    with pytest.raises(ChainBroken, match="check row"):
        verify_history(location(history_url))


def test_targets_sort_byte_by_byte_on_both_stores(history: History) -> None:
    for name in ("b", "B", "a", "_x"):
        record(history, [obs(target=name)], target=name)
    assert history.targets() == ["B", "_x", "a", "b"]


def test_every_sqlite_migration_translates_for_postgres() -> None:
    for _name, sql in MIGRATIONS:
        translated = migration_sql(sql)
        assert "WITHOUT ROWID" not in translated and " REAL" not in translated


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://fpmon:hunter2-canary@db.example/fpmon",
        "postgresql://fpmon@db.example/fpmon?sslmode=require&password=hunter2-canary",
    ],
)
def test_a_password_in_the_url_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        history_location(url, "--history")
    assert caught.value.exit_code == ExitCode.USAGE
    assert "PGPASSWORD" in str(caught.value) and "hunter2" not in str(caught.value)


def test_tls_settings_pass_through_unchanged() -> None:
    url = "postgresql://fpmon@db.example/fpmon?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert history_location(url, "--history") == PostgresURL(url)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database of its own, for what only PostgreSQL has (not parametrized by store)."""
    with postgres_database() as url:
        yield url


def test_writers_queue_on_the_advisory_lock(pg_url: str) -> None:
    """A second writer waits until the first one's transaction ends, then sees its check."""
    url = PostgresURL(pg_url)
    with History.open(url) as first, History.open(url) as second:
        seen: list[frozenset[str] | None] = []

        def other() -> None:
            with second.write():
                seen.append(second.facts("grok").previous_fingerprints)

        with first.write():
            facts = first.facts("grok")
            assert facts.previous_fingerprints is None
            waiting = threading.Thread(target=other)
            waiting.start()
            time.sleep(0.5)
            assert seen == []  # still waiting for the lock
            from fp_monitor.domain.detect import detect

            result = detect("grok", [obs("fp_a")], facts, samples=1)
            first.append_check("c1", T0, result, [obs("fp_a")])
        waiting.join(10)
    assert seen == [frozenset({"fp_a"})]


def test_a_dropped_connection_is_reopened_and_loses_nothing_committed(pg_url: str) -> None:
    with History.open(PostgresURL(pg_url)) as history:
        record(history, [obs("fp_a")])
        stored_rows(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid != pg_backend_pid()",
        )
        record(history, [obs("fp_a", at=T0 + timedelta(1))], at=T0 + timedelta(1))
    assert stored_rows(pg_url, "SELECT count(*) FROM checks") == [(2,)]


def test_an_unreachable_server_is_one_history_error_after_retries() -> None:
    url = PostgresURL("postgresql://fpmon@127.0.0.1:1/fpmon?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(HistoryError) as caught:
        History.open(url)
    assert caught.value.exit_code == ExitCode.HISTORY
    assert "cannot connect after 5 attempts" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert time.monotonic() - started > 2  # it waited between the attempts
