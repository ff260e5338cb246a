"""Recording into the history: records appended to the hash chain, check rows and the known
values they count, checkpoints, and the seal every write transaction ends with.

Checks are appended in batches, in one transaction: a probe's check is a batch of one; the
traffic paths, where every recorded response is its own check (traffic/recording.py), read the
facts once at the start and carry them from check to check in memory (running_facts), and write
the records, the known values and the check rows of the whole batch with one statement each. The
rows and the chain are those of appending the checks one by one."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from fp_monitor.domain.canary import verdict_column
from fp_monitor.domain.chain import (
    GENESIS_HASH,
    RECORD_FIELDS,
    CheckpointKind,
    Seal,
    SealedRow,
    baseline_digest,
    chain_hash,
    row_hash,
    rows_digest,
    sealed_columns,
)
from fp_monitor.domain.models import Observation, Source, TargetResult
from fp_monitor.domain.running_facts import RunningFacts
from fp_monitor.store.connection import history_errors
from fp_monitor.store.dialect import Cursor, Database
from fp_monitor.store.facts import Facts
from fp_monitor.store.rows import JSON, observation_row, placeholders, timestamp

# Qualified: PostgreSQL finds a bare `samples` ambiguous (the row, or EXCLUDED's).
_COUNT_KNOWN = (
    "INSERT INTO known_values (target, field, value, first_seen, samples) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (target, field, value)"
    " DO UPDATE SET samples = known_values.samples + excluded.samples"
)
_COUNT_KNOWN_BY_SOURCE = (
    "INSERT INTO known_values_by_source (target, source, field, value, first_seen, samples)"
    " VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (target, source, field, value)"
    " DO UPDATE SET samples = known_values_by_source.samples + excluded.samples"
)


@dataclass(frozen=True)
class PendingCheck:
    """One check to append (Recording.append_checks)."""

    check_id: str
    checked_at: datetime
    result: TargetResult
    observations: tuple[Observation, ...]


class Recording(Facts):
    """Appends to the chain and the facts, sealed by the write transaction."""

    def _seal(self) -> None:
        """Seal what this transaction wrote: the hash of each check row and checkpoint, the
        record the chain has reached, the baseline, chained to the seal before."""
        last = self._db.execute(
            f"SELECT {SEAL_COLUMNS} FROM chain_seals ORDER BY id DESC LIMIT 1"
        ).fetchone()
        head_id, head_hash = self._head()
        written = self._unsealed or self._relisted or self._pruned_before is not None
        if not written and head_id == (last[2] if last else 0):
            return
        rows = [*self._relisted, *self._unsealed]
        seal = Seal(
            id=last[0] + 1 if last else 1,
            prev_hash=last[-1] if last else GENESIS_HASH,
            after_id=head_id,
            record_hash=head_hash,
            rows=len(rows),
            rows_digest=rows_digest(rows),
            baseline=self.baseline_digest(),
            pruned_before=self._pruned_before,
            trimmed_hash=self._trimmed_hash,
            created_at=timestamp(datetime.now(UTC)),
            hash="",
        )
        seal = dataclasses.replace(seal, hash=seal.computed_hash())
        self._db.execute(
            f"INSERT INTO chain_seals ({SEAL_COLUMNS}) VALUES ({placeholders(11)})",
            dataclasses.astuple(seal),
        )
        self._db.executemany(
            "INSERT INTO sealed_rows VALUES (?, ?, ?, ?, ?, ?)",
            [(seal.id, *row.content()) for row in rows],
        )

    def _sealed_row(
        self, table: str, row_id: int, columns: Sequence[str] | None = None
    ) -> SealedRow:
        """A row as its seal lists it, read back (the seal's id is given when it is written);
        `columns`: the sealed columns that exist yet (a migration's), when not all of them."""
        columns = columns or sealed_columns(table)
        values = self._db.execute(
            f"SELECT {', '.join(columns)} FROM {table} WHERE id = ?", (row_id,)
        ).fetchone()
        return _listed(table, row_id, dict(zip(columns, values, strict=True)))

    def baseline_digest(self) -> str:
        return baseline_digest(self._db.execute("SELECT * FROM known_baseline"))

    def append_check(
        self,
        check_id: str,
        checked_at: datetime,
        result: TargetResult,
        observations: Iterable[Observation],
        source: Source = Source.PROBE,
    ) -> None:
        """Record one target's check; call inside `write()` so the chain cannot fork."""
        check = PendingCheck(check_id, checked_at, result, tuple(observations))
        self.append_checks([check], source)

    def append_checks(self, checks: Sequence[PendingCheck], source: Source) -> None:
        """Append `checks` in order, as append_check would one by one: their records to the
        chain, then their check rows (record_checks); call inside `write()`."""
        with history_errors(self.path):
            head_id, prev_hash = self._head()
            columns: list[str] = []
            records: list[tuple[Any, ...]] = []
            for check in checks:
                for observation in check.observations:
                    row = observation_row(check.check_id, observation, prev_hash, source)
                    row["hash"] = prev_hash = chain_hash(row)
                    head_id += 1
                    columns = ["id", *row]
                    records.append((head_id, *row.values()))
            if records:
                self._db.executemany(
                    f"INSERT INTO observations ({', '.join(columns)})"
                    f" VALUES ({placeholders(len(columns))})",
                    records,
                )
        self.record_checks(checks, source)

    def record_check(
        self,
        check_id: str,
        checked_at: datetime,
        result: TargetResult,
        observations: Iterable[Observation],
        source: Source = Source.PROBE,
    ) -> None:
        """The facts detection reads next time: the check's sets and the values now known."""
        check = PendingCheck(check_id, checked_at, result, tuple(observations))
        self.record_checks([check], source)

    def record_checks(self, checks: Sequence[PendingCheck], source: Source) -> None:
        """The check rows of `checks` and the values they count, for the seal listed from the
        values written (the hash of a row as it will be read back: verify reads it so)."""
        with history_errors(self.path):
            count_known(
                self._db,
                [k for c in checks for k in known_samples(c.result.name, c.observations)],
                source,
            )
            # executemany gives no RETURNING rows: the ids are those after the last one before,
            # since nothing else writes until this transaction ends (write() holds the lock).
            (before,) = self._db.execute("SELECT coalesce(max(id), 0) FROM checks").fetchone()
            values = [check_values(c.check_id, c.checked_at, c.result, source) for c in checks]
            self._db.executemany(CHECK_INSERT, values)
            ids = self._db.execute(
                "SELECT id FROM checks WHERE id > ? ORDER BY id", (int(before),)
            ).fetchall()
            for (row_id,), row in zip(ids, values, strict=True):
                columns = dict(zip(_CHECK_FIELDS, row, strict=True), id=int(row_id))
                self._unsealed.append(_listed("checks", int(row_id), columns))

    def running_facts(self, target: str, kind: Source) -> RunningFacts:
        """The facts a batch of checks of `kind` starts from: `facts`, and whether its previous
        check is of that kind (when it is not, the batch's first successful check replaces it
        whatever its time). Call inside the batch's `write()`, so that nothing else is recorded
        until the batch commits."""
        facts = self.facts(target, kind=kind)
        with history_errors(self.path):
            own = self._db.execute(
                "SELECT 1 FROM checks WHERE target = ? AND source = ?"
                " AND fingerprints IS NOT NULL ORDER BY checked_at DESC LIMIT 1",
                (target, kind.value),
            ).fetchone()
        return RunningFacts(facts, own_previous=own is not None)

    def append_records(self, rows: Sequence[Mapping[str, Any]]) -> list[Appended]:
        """Append records from another history as they are (their hash and prev_hash kept),
        except those whose hash is already here; call inside `write()`. Where a record does not
        follow this history's last one, an import checkpoint records the junction for verify."""
        with history_errors(self.path):
            present: set[str] = set()
            for start in range(0, len(rows), _LOOKUP_CHUNK):
                chunk = [r["hash"] for r in rows[start : start + _LOOKUP_CHUNK]]
                present.update(
                    found
                    for (found,) in self._db.execute(
                        f"SELECT hash FROM observations WHERE hash IN ({placeholders(len(chunk))})",
                        chunk,
                    )
                )
            head_id, head_hash = self._head()
            outcomes, inserts = [], []
            for row in rows:
                if row["hash"] in present:
                    outcomes.append(Appended.PRESENT)
                    continue
                present.add(row["hash"])  # the same line twice in one file
                spliced = row["prev_hash"] != head_hash
                if spliced:
                    self._add_checkpoint(
                        CheckpointKind.IMPORT, head_id, head_hash, row["prev_hash"], records=0
                    )
                head_id, head_hash = head_id + 1, row["hash"]
                inserts.append((head_id, *(row[c] for c in RECORD_FIELDS)))
                outcomes.append(Appended.SPLICED if spliced else Appended.APPENDED)
            self._db.executemany(
                f"INSERT INTO observations (id, {', '.join(RECORD_FIELDS)})"
                f" VALUES (?, {placeholders(len(RECORD_FIELDS))})",
                inserts,
            )
            return outcomes

    def head(self) -> tuple[int, str]:
        """The id and hash of the last record (see _head)."""
        with history_errors(self.path):
            return self._head()

    def _head(self) -> tuple[int, str]:
        """The id and hash the next record follows: the last record, else the last prune
        checkpoint (everything was pruned: ids go on from there), else the genesis."""
        last = self._db.execute(
            "SELECT id, hash FROM observations ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if last is None:
            last = self._db.execute(
                "SELECT after_id, hash FROM chain_checkpoints WHERE kind = ? "
                "ORDER BY id DESC LIMIT 1",
                (CheckpointKind.PRUNE.value,),
            ).fetchone()
        return (int(last[0]), str(last[1])) if last else (0, GENESIS_HASH)

    def _add_checkpoint(
        self, kind: CheckpointKind, after_id: int, from_hash: str, hash_: str, *, records: int
    ) -> None:
        cursor = self._db.execute(
            "INSERT INTO chain_checkpoints (kind, after_id, from_hash, hash, records, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (kind.value, after_id, from_hash, hash_, records, timestamp(datetime.now(UTC))),
        )
        self._unsealed.append(self._sealed_row("chain_checkpoints", _rowid(cursor)))


_LOOKUP_CHUNK = 500  # hashes per IN (...): well under SQLite's limit on parameters
SEAL_COLUMNS = ", ".join(field.name for field in dataclasses.fields(Seal))


def _rowid(cursor: Cursor) -> int:
    """The id an INSERT ... RETURNING id gave its row (both stores; sqlite3's lastrowid only
    SQLite)."""
    (row_id,) = cursor.fetchone()
    return int(row_id)


def _listed(table: str, row_id: int, row: Mapping[str, Any]) -> SealedRow:
    """`row` ({column: value as stored}: its sealed columns, those that exist yet) as its seal
    lists it."""
    values = [row[column] for column in sealed_columns(table) if column in row]
    import_after = row["after_id"] if row.get("kind") == CheckpointKind.IMPORT else None
    return SealedRow(0, table, row_id, row_hash(table, values), row.get("checked_at"), import_after)


class Appended(Enum):
    PRESENT = "present"
    """A record with this hash was already there: nothing was written."""
    APPENDED = "appended"
    SPLICED = "spliced"
    """Appended, and it continues another chain: an import checkpoint was recorded."""


CHECK_COLUMNS = (
    "check_id, target, checked_at, status, fingerprints, models, headers, samples, errors,"
    " learning, source, canary"
)
_CHECK_FIELDS = tuple(CHECK_COLUMNS.split(", "))
CHECK_INSERT = f"INSERT INTO checks ({CHECK_COLUMNS}) VALUES ({placeholders(len(_CHECK_FIELDS))})"


def check_values(
    check_id: str, checked_at: datetime, result: TargetResult, source: Source
) -> tuple[Any, ...]:
    """The CHECK_COLUMNS of a check row."""
    succeeded = bool(result.fingerprints or result.models)
    return (
        check_id,
        result.name,
        timestamp(checked_at),
        result.status.value,
        JSON.encode(list(result.fingerprints)) if succeeded else None,
        JSON.encode(list(result.models)) if succeeded else None,
        JSON.encode({k: list(v) for k, v in result.headers.items()}),
        result.samples,
        len(result.errors),
        None if result.learning is None else int(result.learning),
        source.value,
        verdict_column(result.canary),
    )


def known_samples(target: str, observations: Iterable[Observation]) -> list[tuple[str, ...]]:
    """(target, field, value, observed at) of each value of the successful `observations`:
    one sample each in the known values (count_known)."""
    return [
        (target, field, value, timestamp(observation.observed_at))
        for observation in observations
        if observation.ok
        for field, value in (
            ("fingerprint", observation.fingerprint),
            ("model", observation.resolved_model),
        )
        if value is not None
    ]


def count_known(db: Database, known: Sequence[tuple[str, ...]], source: Source) -> None:
    """One more sample of each of the `known` (see known_samples): in the union of every
    source, and in its own. One statement per value, with its count: a value not known yet is
    first seen at its first sample in `known`, as when counted one sample at a time."""
    samples = Counter((t, f, v) for t, f, v, _ in known)
    first: dict[tuple[str, str, str], str] = {}
    for t, f, v, at in known:
        first.setdefault((t, f, v), at)
    db.executemany(_COUNT_KNOWN, [(*key, at, samples[key]) for key, at in first.items()])
    db.executemany(
        _COUNT_KNOWN_BY_SOURCE,
        [(t, source.value, f, v, at, samples[(t, f, v)]) for (t, f, v), at in first.items()],
    )
