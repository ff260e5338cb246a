"""Hostile edits of a history file outside its records (issue 12, items 3a and 12): what
detection reads beside the chain must follow from the chain, and a corrupt value is an exit 4
naming its row, not a crash. Forged checkpoints and edited check rows (item 3b): what is
written beside the records is sealed, and verify names what no seal vouches for. Crafted
imports (item 8): a record whose hash matches its hostile content is reported and skipped like
a malformed line, and never aborts the import."""

from __future__ import annotations

import dataclasses
import io
import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
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
from fp_monitor.domain.chain import Seal, SealedRow, chain_hash, row_hash, rows_digest
from fp_monitor.domain.errors import ChainBroken, ExitCode, HistoryError
from fp_monitor.domain.models import Status, Window
from fp_monitor.store.history import History
from tests.unit.store.test_history import T0, obs, record, rows
from tests.unit.usecases.test_audit import DAY, LATER, config, execute, write_days
from tests.unit.usecases.test_audit import path as path

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


# --- forged checkpoints, edited check rows (item 3b) --------------------------------------
# write_days(path, 120): records 1 to 240, two a day; day d's check wrote records 2d+1 and
# 2d+2, check row d+1 and seal d+1 (after record 2d+2).


def delete_record(path: Path, record_id: int) -> str:
    """Delete a record and lower the counts detection keeps to match; returns its hash."""
    (deleted,) = rows(path, "SELECT * FROM observations WHERE id = ?", record_id)
    execute(path, "DELETE FROM observations WHERE id = ?", record_id)
    for table in ("known_values", "known_values_by_source"):
        execute(
            path,
            f"UPDATE {table} SET samples = samples - 1 WHERE value IN (?, ?)",
            deleted["fingerprint"],
            deleted["resolved_model"],
        )
    return str(deleted["hash"])


def edit_record(path: Path, record_id: int) -> str:
    """Edit a record and recompute its own hash only; returns the hash it had."""
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM observations WHERE id = ?", (record_id,)).fetchone())
        old, row["latency_ms"] = row["hash"], 1.0
        db.execute(
            "UPDATE observations SET latency_ms = 1.0, hash = ? WHERE id = ?",
            (chain_hash(row), record_id),
        )
        db.commit()
    return str(old)


def bridge(path: Path, after_id: int, to_hash: str) -> int:
    """The issue's forged checkpoint: the walk crosses from record `after_id` to `to_hash`."""
    (head,) = rows(path, "SELECT hash FROM observations WHERE id = ?", after_id)
    execute(
        path,
        "INSERT INTO chain_checkpoints (kind, after_id, from_hash, hash, records, created_at)"
        " VALUES ('import', ?, ?, ?, 0, '2026-12-01T00:00:00.000000Z')",
        after_id,
        head["hash"],
        to_hash,
    )
    (checkpoint,) = rows(path, "SELECT max(id) AS id FROM chain_checkpoints")
    return int(checkpoint["id"])


def bridged_deletion(path: Path) -> int:
    """Record 101 deleted, and the walk made to cross from record 100 to record 102."""
    return bridge(path, 100, delete_record(path, 101))


def sealed_at_the_end(path: Path) -> None:
    """The bridge listed in a seal appended by fpmon's own code, as the next write would."""
    checkpoint = bridged_deletion(path)
    with History.open(path) as history, history.write():
        history._unsealed.append(history._sealed_row("chain_checkpoints", checkpoint))


def baseline_forged(path: Path) -> None:
    """The inserted known value of item 3a, made to follow from a forged baseline."""
    for sql in EVIL_KNOWN:
        execute(path, sql)
    execute(
        path,
        "INSERT INTO known_baseline VALUES ('grok', 'probe', 'fingerprint', 'fp_evil', "
        "'2026-11-29T10:00:00.000000Z', 1)",
    )


def baseline_forged_then_checked(path: Path) -> None:
    """... and sealed by the next check, which takes the baseline as it finds it."""
    baseline_forged(path)
    with History.open(path) as history:
        record(history, [obs("fp_a", at=T0 + 120 * DAY)], at=T0 + 120 * DAY)


def oldest_pruned_by_hand(path: Path) -> None:
    """Records 1 to 10 deleted with a prune checkpoint and the baseline they leave, as a prune
    would write them, but outside fpmon."""
    with History.open(path) as history:
        left = history.derived_known(10)
        (last,) = rows(path, "SELECT hash FROM observations WHERE id = 10")
    execute(path, "DELETE FROM observations WHERE id <= 10")
    execute(
        path,
        "INSERT INTO chain_checkpoints (kind, after_id, from_hash, hash, records, created_at)"
        " VALUES ('prune', 10, ?, ?, 10, '2028-01-01T00:00:00.000000Z')",
        "0" * 64,
        last["hash"],
    )
    for (target, source, field, value), (first_seen, samples) in left.items():
        execute(
            path,
            "INSERT INTO known_baseline VALUES (?, ?, ?, ?, ?, ?)",
            target,
            source,
            field,
            value,
            first_seen,
            samples,
        )


def relisted_status_edit(path: Path) -> None:
    """A status edited, and the seal's list changed to the edited row's hash."""
    execute(path, "UPDATE checks SET status = 'learned' WHERE id = 60")
    with closing(sqlite3.connect(path)) as db:
        values = db.execute(
            "SELECT id, check_id, target, source, checked_at, status, fingerprints, models,"
            " headers, samples, errors, learning FROM checks WHERE id = 60"
        ).fetchone()
        db.execute(
            "UPDATE sealed_rows SET row_hash = ? WHERE tbl = 'checks' AND row_id = 60",
            (row_hash("checks", values),),
        )
        db.commit()


# name -> (the attack on a history of 120 days, what verify names)
SEAL_ATTACKS: dict[str, tuple[Callable[[Path], object], str]] = {
    "record 101 deleted and bridged (the issue)": (
        bridged_deletion,
        "the import checkpoint after record 100 is not sealed: it was added after the fact",
    ),
    "record 201 edited and bridged (the issue)": (
        lambda p: bridge(p, 201, edit_record(p, 201)),
        "the import checkpoint after record 201 is not sealed: it was added after the fact",
    ),
    "the bridge sealed by a later write": (
        sealed_at_the_end,
        "the import checkpoint after record 100 was sealed by seal 121",
    ),
    "a check's status edited": (
        lambda p: execute(p, "UPDATE checks SET status = 'learned' WHERE id = 60"),
        "check row 60 (grok, 2027-01-27T10:00:00.000000Z) is not what seal 60 sealed",
    ),
    "a check's learning state set": (
        lambda p: execute(p, "UPDATE checks SET learning = 1 WHERE id = 60"),
        "check row 60 (grok, 2027-01-27T10:00:00.000000Z) is not what seal 60 sealed",
    ),
    "a check row deleted": (
        lambda p: execute(p, "DELETE FROM checks WHERE id = 60"),
        "check row 60, sealed by seal 60, is missing: it was deleted",
    ),
    "a status edited and its seal's list too": (
        relisted_status_edit,
        "seal 60 (",
    ),
    "a known value forged in the baseline too (bypassed 3a)": (
        baseline_forged,
        "the table known_baseline was edited after seal 120",
    ),
    "the forged baseline sealed by the next check": (
        baseline_forged_then_checked,
        "changed the known values of pruned records, which only a prune that deletes records",
    ),
    "the oldest records pruned by hand": (
        oldest_pruned_by_hand,
        "the table known_baseline was edited after seal 120",
    ),
    "a seal deleted": (
        lambda p: execute(p, "DELETE FROM chain_seals WHERE id = 60"),
        "does not follow seal 59",
    ),
    "a seal edited": (
        lambda p: execute(p, "UPDATE chain_seals SET after_id = 117 WHERE id = 59"),
        "seal 59 (",
    ),
}


@pytest.fixture(scope="module")
def sealed_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sealed") / "history.db"
    write_days(path, 120)
    return path


@pytest.mark.parametrize("case", SEAL_ATTACKS)
def test_verify_names_what_no_seal_vouches_for(
    sealed_history: Path, tmp_path: Path, case: str
) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(sealed_history.read_bytes())
    verify_history(path)
    attack, named = SEAL_ATTACKS[case]
    attack(path)
    with pytest.raises(ChainBroken) as info:
        verify_history(path)
    assert named in str(info.value) and "\n" not in str(info.value)


def rewrite_seals(path: Path, first: int, listed: SealedRow) -> None:
    """Add `listed` to seal `first` and recompute every seal from there, as someone who knows
    the format would."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("INSERT INTO sealed_rows VALUES (?, ?, ?, ?, ?, ?)", (first, *listed.content()))
        (prev,) = db.execute("SELECT hash FROM chain_seals WHERE id = ?", (first - 1,)).fetchone()
        seals = db.execute("SELECT * FROM chain_seals WHERE id >= ? ORDER BY id", (first,))
        for values in seals.fetchall():
            seal = Seal(*values)
            entries = [
                SealedRow(*r)
                for r in db.execute(
                    "SELECT seal, tbl, row_id, row_hash, checked_at, after_id FROM sealed_rows"
                    " WHERE seal = ?",
                    (seal.id,),
                )
            ]
            seal = dataclasses.replace(
                seal, prev_hash=prev, rows=len(entries), rows_digest=rows_digest(entries)
            )
            prev = seal.computed_hash()
            db.execute(
                "UPDATE chain_seals SET prev_hash = ?, rows = ?, rows_digest = ?, hash = ?"
                " WHERE id = ?",
                (seal.prev_hash, seal.rows, seal.rows_digest, prev, seal.id),
            )
        db.commit()


def test_the_forgery_passes_only_by_rewriting_the_seals_which_changes_the_head(
    sealed_history: Path, tmp_path: Path
) -> None:
    """What verify cannot prove alone: the seals can be rewritten too. Their last hash then
    changes, so the head printed before (kept elsewhere) is no longer a seal: --head fails."""
    path = tmp_path / "history.db"
    path.write_bytes(sealed_history.read_bytes())
    kept = verify_history(path).seal
    assert kept is not None
    checkpoint = bridged_deletion(path)
    (values,) = [
        tuple(r.values())
        for r in rows(
            path,
            "SELECT id, kind, after_id, from_hash, hash, records, created_at"
            " FROM chain_checkpoints WHERE id = ?",
            checkpoint,
        )
    ]
    listed = SealedRow(
        51, "chain_checkpoints", checkpoint, row_hash("chain_checkpoints", values), None, 100
    )
    rewrite_seals(path, 51, listed)
    forged = verify_history(path)
    assert forged.seal is not None and forged.seal.hash != kept.hash
    assert [c.kind.value for c in forged.checkpoints] == ["import"]  # shown by verify
    with pytest.raises(ChainBroken, match=f"the head {kept.hash} is not a seal of this history"):
        verify_history(path, head=kept.hash)


def test_a_history_without_seals_is_sealed_when_migrated(
    sealed_history: Path, tmp_path: Path
) -> None:
    """A history of schema 9 (before seals): the migration seals what it holds, once."""
    path = tmp_path / "history.db"
    path.write_bytes(sealed_history.read_bytes())
    for sql in (
        "DROP TABLE chain_seals",
        "DROP TABLE sealed_rows",
        "DELETE FROM schema_migrations WHERE name = '0010_seals'",
        "PRAGMA user_version = 9",
    ):
        execute(path, sql)
    with History.open(path):
        pass
    (seal,) = rows(path, "SELECT id, after_id, rows FROM chain_seals")
    assert seal == {"id": 1, "after_id": 240, "rows": 120}
    assert verify_history(path).seal is not None
    execute(path, "UPDATE checks SET status = 'learned' WHERE id = 60")
    with pytest.raises(ChainBroken, match=r"check row 60 .* is not what seal 1 sealed"):
        verify_history(path)


def test_seals_survive_prunes_and_imports(path: Path, tmp_path: Path) -> None:
    """A prune deletes the seals before what it deletes and lists their rows again; a row kept
    by a prune (each target's latest successful check) and an import's checkpoint stay
    sealed, and editing either is still found."""
    other = tmp_path / "other.db"
    write_days(other, 3, target="elsewhere")
    file = tmp_path / "export.jsonl"
    export_history(other, file, stdout=io.StringIO())
    with History.open(path) as history:
        record(
            history, [obs("fp_a", at=T0 - 30 * DAY, target="old")], target="old", at=T0 - 30 * DAY
        )
    write_days(path, 6)
    prune_history(config(path), 2.5 * 86400, T0 + 6 * DAY, dry_run=False)
    import_history(path, file, LATER)
    write_days(path, 1)
    prune_history(config(path), 1.5 * 86400, T0 + 6 * DAY, dry_run=False)
    verified = verify_history(path)
    assert [c.kind.value for c in verified.checkpoints] == ["prune", "import", "prune"]
    with History.open(path) as history:  # and it goes on
        record(history, [obs("fp_a", at=T0 + 7 * DAY)], at=T0 + 7 * DAY)
    verify_history(path)
    (kept,) = rows(path, "SELECT id FROM checks WHERE target = 'old'")
    for sql, named in (
        (f"UPDATE checks SET learning = 0 WHERE id = {kept['id']}", f"check row {kept['id']}"),
        (
            "UPDATE chain_checkpoints SET created_at = '2026-01-01T00:00:00.000000Z'"
            " WHERE kind = 'import'",
            r"the import checkpoint after record \d+ is not what seal \d+ sealed: it was edited$",
        ),
    ):
        copy = tmp_path / "copy.db"
        copy.write_bytes(path.read_bytes())
        execute(copy, sql)
        with pytest.raises(ChainBroken, match=named):
            verify_history(copy)
