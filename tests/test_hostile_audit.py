"""Hostile edits of a history file outside its records (issue 12, items 3a and 12): what
detection reads beside the chain must follow from the chain, and a corrupt value is an exit 4
naming its row, not a crash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.audit import prune_history, verify_history
from fp_monitor.errors import ChainBroken, ExitCode, HistoryError
from fp_monitor.history import History
from fp_monitor.models import Status, Window
from tests.test_audit import DAY, config, execute, write_days
from tests.test_audit import path as path
from tests.test_history import T0, obs, record

EVIL_KNOWN = (
    "INSERT INTO known_values VALUES ('grok', 'fingerprint', 'fp_evil', "
    "'2026-11-29T10:00:00.000000Z', 1)",
    "INSERT INTO known_values_by_source VALUES ('grok', 'probe', 'fingerprint', 'fp_evil', "
    "'2026-11-29T10:00:00.000000Z', 1)",
)

# name -> (SQL statements run on a history of 3 days, what verify names)
CACHE_EDITS: dict[str, tuple[tuple[str, ...], str]] = {
    "a known value inserted in both tables": (EVIL_KNOWN, "known_values_by_source"),
    "a known value's samples raised": (
        ("UPDATE known_values SET samples = 99 WHERE value = 'fp_a'",),
        "the table known_values does not follow",
    ),
    "a known value deleted": (
        ("DELETE FROM known_values_by_source WHERE value = 'fp_b'",),
        "'grok probe fingerprint fp_b' was deleted",
    ),
    "a check's fingerprints edited": (
        ("UPDATE checks SET fingerprints = '[\"fp_evil\"]' WHERE id = 3",),
        "check row 3 (grok, 2026-12-01",
    ),
    "a check's errors edited": (
        ("UPDATE checks SET errors = 2 WHERE id = 2",),
        "check row 2 (grok, 2026-11-30",
    ),
    "a check inserted": (
        (
            "INSERT INTO checks (check_id, target, checked_at, status, fingerprints, models,"
            " headers, samples, errors, source) VALUES ('forged', 'grok',"
            " '2027-01-01T00:00:00.000000Z', 'same', '[\"fp_evil\"]', '[\"m-1\"]', '{}', 2, 0,"
            " 'probe')",
        ),
        "check row 4 (grok, 2027-01-01T00:00:00.000000Z) has no records in the chain",
    ),
    "a check's fingerprints corrupt": (
        ("UPDATE checks SET fingerprints = 'not json' WHERE id = 1",),
        "check row 1 (grok, 2026-11-29T10:00:00.000000Z) is corrupt",
    ),
    "a check's time corrupt": (
        ("UPDATE checks SET checked_at = 'yesterday' WHERE id = 2",),
        "check row 2 (grok, yesterday) is corrupt",
    ),
}


@pytest.mark.parametrize("case", CACHE_EDITS)
def test_verify_fails_on_any_edit_of_what_detection_reads(path: Path, case: str) -> None:
    write_days(path, 3)
    verify_history(path)
    statements, named = CACHE_EDITS[case]
    for sql in statements:
        execute(path, sql)
    with pytest.raises(ChainBroken) as info:
        verify_history(path)
    assert info.value.exit_code == ExitCode.UNEXPECTED
    assert named in str(info.value) and "\n" not in str(info.value)


def test_the_inserted_known_value_of_the_issue_is_caught(path: Path) -> None:
    """The repro: fp_evil made known turns a rollout from `new` into `changed`; verify, which
    passed on this history before, now names the table."""
    write_days(path, 3)
    for sql in EVIL_KNOWN:
        execute(path, sql)
    with History.open(path) as history:
        assert record(history, [obs("fp_evil", at=T0 + 3 * DAY)]).status is Status.CHANGED
    with pytest.raises(ChainBroken, match="'grok probe fingerprint fp_evil' was edited"):
        verify_history(path)


def test_known_values_survive_a_prune_and_still_verify(path: Path) -> None:
    write_days(path, 6)
    prune_history(config(path), 2.5 * 86400, T0 + 6 * DAY, dry_run=False)
    verify_history(path)
    execute(path, "UPDATE known_values_by_source SET samples = samples + 1 WHERE value = 'fp_a'")
    with pytest.raises(ChainBroken, match="known_values_by_source"):
        verify_history(path)


def test_everything_pruned_still_verifies_and_detects(path: Path) -> None:
    write_days(path, 4)
    prune_history(config(path), 0, T0 + 30 * DAY, dry_run=False)
    verify_history(path)
    with History.open(path) as history:
        assert record(history, [obs("fp_z", at=T0 + 31 * DAY)]).status is Status.NEW
    verify_history(path)


READERS: dict[str, Callable[[History], object]] = {
    "facts": lambda h: h.facts("grok"),
    "timeline": lambda h: list(h.iter_checks("grok", Window())),
    "state": lambda h: h.state("grok"),
}
BAD_JSON = "UPDATE checks SET fingerprints = '{{' WHERE id = 3"
NOT_A_LIST = "UPDATE checks SET fingerprints = '\"fp\"' WHERE id = 3"
BAD_TIME = "UPDATE checks SET checked_at = 'soon' WHERE id = 3"
NAIVE_TIME = "UPDATE checks SET checked_at = '2026-12-01' WHERE id = 3"
BAD_FIRST_SEEN = "UPDATE known_values SET first_seen = 'then'"


@pytest.mark.parametrize(
    ("reader", "sql", "named"),
    [
        ("facts", BAD_JSON, "check row 3: fingerprints is corrupt"),
        ("facts", NOT_A_LIST, "check row 3: fingerprints is corrupt"),
        ("facts", BAD_FIRST_SEEN, "first_seen is corrupt"),
        ("timeline", BAD_JSON, "check row 3: fingerprints is corrupt"),
        ("timeline", BAD_TIME, "check row 3: checked_at is corrupt"),
        ("timeline", NAIVE_TIME, "check row 3: checked_at is corrupt"),
        ("state", BAD_TIME, "checked_at is corrupt"),
    ],
)
def test_a_corrupt_stored_value_is_a_history_error_naming_it(
    path: Path, reader: str, sql: str, named: str
) -> None:
    write_days(path, 3)
    execute(path, sql)
    with History.open(path) as history, pytest.raises(HistoryError) as info:
        READERS[reader](history)
    assert info.value.exit_code == ExitCode.HISTORY
    assert named in str(info.value) and "fpmon verify" in str(info.value)
