"""The history's audit operations: the chain, the seals and the checkpoints as verify walks
them, the check rows as the records derive them, and pruning."""

from __future__ import annotations

import dataclasses
import json
import operator
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fp_monitor.domain.chain import (
    CHAINED_COLUMNS,
    GENESIS_HASH,
    NO_TAGS,
    RECORD_FIELDS,
    Checkpoint,
    CheckpointKind,
    Link,
    Seal,
    SealedRow,
    Walk,
    encoded_matches,
    row_hash,
    row_links,
    sealed_columns,
    walk,
)
from fp_monitor.store.connection import history_errors
from fp_monitor.store.facts import merge_known
from fp_monitor.store.recording import SEAL_COLUMNS, Recording
from fp_monitor.store.rows import FINGERPRINT_TOKEN, parse_timestamp, timestamp

_LAST_ID = 2**63 - 1  # SQLite's largest INTEGER

_DECODED_HEADERS = 10_000
"""Distinct header sets derived_checks keeps decoded (a bound on its memory)."""

# The columns of observations that are not TEXT: a TEXT column converts any number it is given
# to text, so only these can hold a float. json_array writes a float with 15 significant
# digits, which two floats can share: the record is then left to chain_hash (NULL below), and
# the latency, a float in every record, is checked against Python's repr.
_NUMBERS = ("http_status", "attempts", "prompt_tokens", "completion_tokens", "total_tokens")


_SITE = "json_array('site', site)"


def _json_array(*extra: str) -> str:
    return f"json_array({', '.join((*CHAINED_COLUMNS, *extra))})"


def _with_site(*extra: str) -> str:
    # chain_hash's later columns: the site, as a ["site", name] pair, when there is one
    return (
        f"CASE WHEN site IS NULL THEN {_json_array(*extra)} ELSE {_json_array(*extra, _SITE)} END"
    )


# chain_hash's encoding, as SQLite writes it: the tags and canary data when chain_hash takes
# them; NULL for a record with a float outside latency_ms.
_ENCODED_RECORDS = f"""
SELECT id, prev_hash, hash,
    CAST(CASE WHEN {" OR ".join(f"typeof({c}) = 'real'" for c in _NUMBERS)} THEN NULL
        WHEN canary IS NOT NULL THEN {_with_site("tags", "canary")}
        WHEN tags IS NOT '{NO_TAGS}' THEN {_with_site("tags")}
        ELSE {_with_site()} END AS BLOB),
    latency_ms,
    CASE WHEN typeof(latency_ms) = 'real' THEN CAST(latency_ms AS TEXT) END
FROM observations WHERE id BETWEEN ? AND ? ORDER BY id"""


class Audit(Recording):
    """What verify, export and prune read and change."""

    def iter_chain(
        self, through_id: int | None = None, *, from_id: int = 0
    ) -> Iterator[dict[str, Any]]:
        """Every record (id, the chained columns and hash) in chain order, read as consumed."""
        columns = ("id", *RECORD_FIELDS)
        with history_errors(self.path):
            cursor = self._db.execute(
                f"SELECT {', '.join(columns)} FROM observations WHERE id BETWEEN ? AND ?"
                " ORDER BY id",
                (from_id, through_id if through_id is not None else _LAST_ID),
            )
            # Plain dicts: sqlite3.Row looks names up one by one, which triples the time of a
            # walk over a million records.
            for values in cursor:
                yield dict(zip(columns, values, strict=True))

    def chain_links(self, from_id: int = 0, through_id: int = _LAST_ID) -> Iterator[Link]:
        """Each record from `from_id` through `through_id` as the walk reads it, in id order.
        SQLite encodes each record's chained values as JSON in C (json_array: chain_hash's
        bytes whenever `encoded_matches` says so); a record it encodes otherwise (non-ASCII
        text, a float json_array rounds) is read whole and hashed as chain_hash does."""
        resume = from_id
        try:
            cursor = self._db.execute(_ENCODED_RECORDS, (from_id, through_id))
            for id_, prev_hash, hash_, encoded, latency, shown in cursor:
                if (
                    encoded is None
                    or (shown is not None and repr(latency) != shown)
                    or not encoded_matches(encoded, hash_)
                ):
                    yield from row_links(self.iter_chain(id_, from_id=id_))
                else:
                    yield id_, prev_hash, hash_, True
                resume = id_ + 1
        except sqlite3.Error:
            # json_array refuses a BLOB (fpmon never writes one): the rest the slow way, which
            # finds the record edited, or fails as any read does (a HistoryError).
            yield from row_links(self.iter_chain(through_id, from_id=resume))

    def walk_chain(self, checkpoints: Sequence[Checkpoint], through_id: int = _LAST_ID) -> Walk:
        """verify's walk of the records through `through_id`, crossing `checkpoints`."""
        return walk(self.chain_links(0, through_id), checkpoints, self.record_place)

    def record_place(self, record_id: int) -> tuple[str, str]:
        """(target, observed_at) of the record `record_id`, as a broken walk names it."""
        with history_errors(self.path):
            found = self._db.execute(
                "SELECT target, observed_at FROM observations WHERE id = ?", (record_id,)
            ).fetchone()
        return ("?", "?") if found is None else (found[0], found[1])

    def check_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every check row as stored: id, check_id, target, source, checked_at, status,
        fingerprints, models, headers, errors."""
        with history_errors(self.path):
            yield from self._db.execute(
                "SELECT id, check_id, target, source, checked_at, status, fingerprints, models,"
                " headers, errors FROM checks ORDER BY id"
            )

    def derived_checks(self) -> dict[tuple[str, str, str], CheckSets]:
        """(check_id, target, source) -> what the check's chained records give its row."""
        found: dict[tuple[str, str, str], CheckSets] = {}
        with history_errors(self.path):
            cursor = self._db.execute(
                f"SELECT check_id, target, source, {FINGERPRINT_TOKEN}, resolved_model, headers,"
                " error_kind FROM observations"
            )
            # The records of a history repeat a few header sets: each is decoded once.
            decoded: dict[str, dict[str, str]] = {}
            for check_id, target, source, token, model, headers, error in cursor:
                sets = found.get((check_id, target, source))
                if sets is None:  # not setdefault: it would build a CheckSets for every record
                    sets = found[check_id, target, source] = CheckSets()
                if error is not None:
                    sets.errors += 1
                    continue
                if token is not None:
                    sets.fingerprints.add(token)
                if model is not None:
                    sets.models.add(model)
                named = decoded.get(headers)
                if named is None:
                    named = self._decode("a record", "headers", json.loads, headers)
                    if len(decoded) < _DECODED_HEADERS:
                        decoded[headers] = named
                for name, value in named.items():
                    sets.headers.setdefault(name, set()).add(value)
        return found

    def seals(self) -> Iterator[Seal]:
        with history_errors(self.path):
            for values in self._db.execute(f"SELECT {SEAL_COLUMNS} FROM chain_seals ORDER BY id"):
                yield Seal(*values)

    def sealed_rows(
        self, *, through_seal: int = 2**63 - 1, table: str | None = None
    ) -> Iterator[SealedRow]:
        """What the seals list: in seal order (up to `through_seal`), or, of one `table`, in
        row order."""
        where, order = "seal <= ?", "seal, tbl, row_id"
        params: list[Any] = [through_seal]
        if table is not None:
            where, order = where + " AND tbl = ?", "row_id, seal"
            params.append(table)
        with history_errors(self.path):
            for values in self._db.execute(
                "SELECT seal, tbl, row_id, row_hash, checked_at, after_id FROM sealed_rows"
                f" WHERE {where} ORDER BY {order}",
                params,
            ):
                yield SealedRow(*values)

    def row_hashes(self, table: str) -> Iterator[tuple[int, str, str]]:
        """(id, hash, how a message names it) of each row of a sealed table, in id order."""
        columns = sealed_columns(table)
        # By position, not as a dict per row: verify reads every check row.
        if table == "checks":
            name = "check row {0} ({1}, {2})"
            named = operator.itemgetter(0, columns.index("target"), columns.index("checked_at"))
        else:
            name = "the {1} checkpoint after record {2}"
            named = operator.itemgetter(0, columns.index("kind"), columns.index("after_id"))
        with history_errors(self.path):
            for values in self._db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id"):
                yield values[0], row_hash(table, values), name.format(*named(values))

    def record_at(self, record_id: int) -> tuple[str, str] | None:
        """(hash, observed_at) of the record `record_id`, None when there is none."""
        with history_errors(self.path):
            found = self._db.execute(
                "SELECT hash, observed_at FROM observations WHERE id = ?", (record_id,)
            ).fetchone()
        return None if found is None else (found[0], found[1])

    def first_record(self) -> tuple[int, str] | None:
        """(id, observed_at) of the first record, None when there is none."""
        with history_errors(self.path):
            found = self._db.execute(
                "SELECT id, observed_at FROM observations ORDER BY id LIMIT 1"
            ).fetchone()
        return None if found is None else (found[0], found[1])

    def has_seal(self, seal_hash: str) -> bool:
        with history_errors(self.path):
            return bool(
                self._db.execute(
                    "SELECT 1 FROM chain_seals WHERE hash = ?", (seal_hash,)
                ).fetchone()
            )

    def checkpoints(self) -> list[Checkpoint]:
        with history_errors(self.path):
            return [
                Checkpoint(
                    self._decode(f"checkpoint {id_}", "kind", CheckpointKind, kind),
                    after_id,
                    from_hash,
                    hash_,
                    records,
                    self._decode(f"checkpoint {id_}", "created_at", parse_timestamp, created),
                )
                for id_, kind, after_id, from_hash, hash_, records, created in self._db.execute(
                    "SELECT id, kind, after_id, from_hash, hash, records, created_at"
                    " FROM chain_checkpoints ORDER BY id"
                )
            ]

    def prune_plan(self, cutoff: datetime) -> PrunePlan:
        """What pruning before `cutoff` deletes: the records from the start of the chain up to
        the first one observed at or after `cutoff`, and the checks before `cutoff` except each
        target's latest successful one (detection's previous set)."""
        with history_errors(self.path):
            first_kept = self._db.execute(
                "SELECT id FROM observations WHERE observed_at >= ? ORDER BY id LIMIT 1",
                (timestamp(cutoff),),
            ).fetchone()
            last, count = self._db.execute(
                "SELECT max(id), count(*) FROM observations WHERE id < ?",
                (first_kept[0] if first_kept else 2**63 - 1,),
            ).fetchone()
            (checks,) = self._db.execute(
                f"SELECT count(*) FROM checks WHERE {_PRUNABLE_CHECKS}", (timestamp(cutoff),)
            ).fetchone()
        return PrunePlan(cutoff, last or 0, count, checks)

    def prune(self, plan: PrunePlan) -> None:
        """Delete what `plan` names and leave a checkpoint; call inside `write()`."""
        with history_errors(self.path):
            if plan.observations:
                (last_hash,) = self._db.execute(
                    "SELECT hash FROM observations WHERE id = ?", (plan.last_id,)
                ).fetchone()
                previous = self._db.execute(
                    "SELECT hash FROM chain_checkpoints WHERE kind = ? ORDER BY id DESC LIMIT 1",
                    (CheckpointKind.PRUNE.value,),
                ).fetchone()
                self._add_checkpoint(
                    CheckpointKind.PRUNE,
                    plan.last_id,
                    previous[0] if previous else GENESIS_HASH,
                    last_hash,
                    records=plan.observations,
                )
                # The junctions of imports whose records are now gone are inside the pruned
                # part; the prune checkpoint stands for all of it.
                self._db.execute(
                    "DELETE FROM chain_checkpoints WHERE kind = ? AND after_id < ?",
                    (CheckpointKind.IMPORT.value, plan.last_id),
                )
                baseline = merge_known(self.known_baseline(), self.derived_known(plan.last_id))
                self._db.execute("DELETE FROM known_baseline")
                self._db.executemany(
                    "INSERT INTO known_baseline VALUES (?, ?, ?, ?, ?, ?)",
                    [(*key, first, samples) for key, (first, samples) in baseline.items()],
                )
                self._db.execute("DELETE FROM observations WHERE id <= ?", (plan.last_id,))
            self._db.execute(
                f"DELETE FROM checks WHERE {_PRUNABLE_CHECKS}", (timestamp(plan.cutoff),)
            )
            if plan.observations or plan.checks:
                self._prune_seals(plan)

    def _prune_seals(self, plan: PrunePlan) -> None:
        """Delete the seals written before the last deleted record, listing again in this
        prune's seal the rows they sealed that are still there; the rows of the seals kept that
        are gone stay listed, explained by the cutoff."""
        (earlier_cutoff, trimmed_hash) = self._db.execute(
            "SELECT max(pruned_before), (SELECT trimmed_hash FROM chain_seals"
            " WHERE trimmed_hash IS NOT NULL ORDER BY id DESC LIMIT 1) FROM chain_seals"
        ).fetchone()
        self._pruned_before = max(timestamp(plan.cutoff), earlier_cutoff or "")
        self._trimmed_hash = trimmed_hash or GENESIS_HASH
        # after_id never decreases from one seal to the next: the seals before are a prefix
        trimmed = self._db.execute(
            "SELECT id, hash FROM chain_seals WHERE after_id < ? ORDER BY id DESC LIMIT 1",
            (plan.last_id,),
        ).fetchone()
        if trimmed is None:
            return
        self._trimmed_hash = trimmed[1]
        for row in self.sealed_rows(through_seal=trimmed[0]):
            present = self._db.execute(
                f"SELECT 1 FROM {row.table} WHERE id = ?", (row.row_id,)
            ).fetchone()
            # The same row, not another that took the id of a pruned one
            if present and self._sealed_row(row.table, row.row_id).row_hash == row.row_hash:
                self._relisted.append(row)
        self._db.execute("DELETE FROM sealed_rows WHERE seal <= ?", (trimmed[0],))
        self._db.execute("DELETE FROM chain_seals WHERE id <= ?", (trimmed[0],))

    def vacuum(self) -> None:
        """Give the space of deleted rows back to the file system (outside any transaction)."""
        with history_errors(self.path):
            self._db.execute("VACUUM")
            # In WAL mode the compacted file first lands in the WAL; while another process
            # (a `fpmon watch`) keeps the history open, only a checkpoint shrinks the files.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@dataclass
class CheckSets:
    """What a check row must say, gathered from its records one by one."""

    fingerprints: set[str] = dataclasses.field(default_factory=set)
    models: set[str] = dataclasses.field(default_factory=set)
    headers: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    errors: int = 0


@dataclass(frozen=True)
class PrunePlan:
    cutoff: datetime
    last_id: int
    """The last record to delete (0: none)."""
    observations: int
    checks: int


# Checks before the cutoff, except each target's latest successful one.
_PRUNABLE_CHECKS = """checked_at < ? AND id NOT IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (
            PARTITION BY target ORDER BY checked_at DESC, id DESC
        ) AS newest
        FROM checks WHERE fingerprints IS NOT NULL
    ) AS ranked WHERE newest = 1
)"""
# (The subquery is named: PostgreSQL before 16 requires it.)
