"""Hostile edits of a history file outside its records (issue 12, items 3a and 12): what
detection reads beside the chain must follow from the chain, and a corrupt value is an exit 4
naming its row, not a crash. Crafted imports (item 8): a record whose hash matches its hostile
content is reported and skipped like a malformed line, and never aborts the import."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fp_monitor.audit import (
    MAX_LINE_BYTES,
    export_history,
    import_history,
    prune_history,
    verify_history,
)
from fp_monitor.chain import chain_hash
from fp_monitor.errors import ChainBroken, ExitCode, HistoryError
from fp_monitor.history import History
from fp_monitor.models import Status, Window
from tests.test_audit import DAY, LATER, config, execute, write_days
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


# --- crafted imports (item 8) ---------------------------------------------------------------


def rehashed(**fields: Any) -> Callable[[dict[str, Any]], str]:
    """The record with `fields` replaced and its hash made to match, as an attacker would."""

    def craft(record: dict[str, Any]) -> str:
        record.update(fields)
        record["hash"] = chain_hash(record)
        return json.dumps(record)

    return craft


def latency_beyond_a_float(record: dict[str, Any]) -> str:
    # JSON's 1e999 reads as infinity, which no NaN check catches
    return rehashed(latency_ms=float("inf"))(record).replace("Infinity", "1e999")


# name -> (the crafted line made from an exported record, why import skips it)
CRAFTED: dict[str, tuple[Callable[[dict[str, Any]], str], str]] = {
    "NaN latency": (rehashed(latency_ms=float("nan")), "NaN is not a number JSON allows"),
    "Infinity latency": (
        rehashed(latency_ms=float("inf")),
        "Infinity is not a number JSON allows",
    ),
    "1e999 latency": (
        latency_beyond_a_float,
        "latency_ms: expected a finite number of 0 or more, got inf",
    ),
    "negative latency": (
        rehashed(latency_ms=-1.0),
        "latency_ms: expected a finite number of 0 or more, got -1.0",
    ),
    "prompt_tokens 10^30": (
        rehashed(prompt_tokens=10**30),
        "prompt_tokens: 1000000000000000000000000000000 is out of range",
    ),
    "negative attempts": (rehashed(attempts=-1), "attempts: -1 is out of range"),
    "tags not JSON": (rehashed(tags="not json"), "tags: expected a JSON object of strings"),
    "tags not strings": (
        rehashed(tags='{"user": 42}'),
        "tags: expected a JSON object of strings",
    ),
    "headers nested deep": (rehashed(headers="[" * 100_000), "nested too deeply"),
    "line nested deep": (lambda record: "[" * 100_000, "nested too deeply"),
    "dated 2099": (
        rehashed(observed_at="2099-01-01T00:00:00.000000Z"),
        "observed_at: 2099-01-01T00:00:00.000000Z is in the future",
    ),
    "lone surrogate": (
        rehashed(fingerprint="\ud800"),
        "fingerprint: not valid Unicode (a lone surrogate)",
    ),
    "line over the bound": (
        lambda record: json.dumps(record) + " " * MAX_LINE_BYTES,
        "the line is longer than 16 MiB",
    ),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_a_crafted_record_is_skipped_and_the_rest_imports(
    path: Path, tmp_path: Path, case: str
) -> None:
    """Each of these imported (and then broke verify and prune) or aborted the whole import
    with exit 70."""
    write_days(path, 3)
    file = tmp_path / "export.jsonl"
    export_history(path, file, stdout=io.StringIO())
    lines = file.read_text().splitlines()
    craft, why = CRAFTED[case]
    lines[3] = craft(json.loads(lines[3]))
    file.write_text("\n".join(lines) + "\n")
    copy = tmp_path / "copy.db"
    imported = import_history(copy, file, LATER)
    (invalid,) = imported.invalid
    assert invalid.startswith(f"{file}:4: not a valid record, skipped: {why}"), invalid
    assert len(invalid) - len(str(file)) < 160  # one short line, whatever the record holds
    assert (imported.appended, imported.junctions) == (5, (5,))
    assert verify_history(copy).records == 5
    assert prune_history(config(copy), 0, LATER, dry_run=False).observations == 5


def test_a_record_dated_later_than_now_never_becomes_the_previous_check(
    path: Path, tmp_path: Path
) -> None:
    """The issue's repro: one record dated 2099 with another fingerprint made every later check
    of a stable backend `changed`, since a check compares with the latest one by time."""
    write_days(path, 3)  # fp_a, fp_b, fp_a
    file = tmp_path / "export.jsonl"
    export_history(path, file, stdout=io.StringIO())
    lines = file.read_text().splitlines()
    last = json.loads(lines[-1])
    forged = rehashed(
        check_id="forged",
        observed_at="2099-01-01T00:00:00.000000Z",
        fingerprint="fp_b",
        prev_hash=last["hash"],
    )(dict(last))
    file.write_text("\n".join([*lines, forged]) + "\n")
    copy = tmp_path / "copy.db"
    assert len(import_history(copy, file, LATER).invalid) == 1
    with History.open(copy) as history:
        assert record(history, [obs("fp_a", at=T0 + 3 * DAY)]).status is Status.SAME
    # a record just ahead of this machine's clock (another machine's runs ahead) is kept
    ahead = rehashed(check_id="ahead", observed_at="2027-11-29T10:04:00.000000Z")(dict(last))
    file.write_text(ahead + "\n")
    assert import_history(copy, file, LATER).invalid == ()
