"""The history: named append-only migrations, append with a hash chain, and the facts
detection needs. In a SQLite file, or in a PostgreSQL database (store/postgres.py: the same
class over a connection that speaks sqlite3's parameter style, so the SQL here is written once,
in the subset both accept).

Every check writes inside one BEGIN IMMEDIATE transaction: concurrent fpmon processes queue on
SQLite's lock (busy timeout) instead of losing rows or forking the chain (on PostgreSQL, on an
advisory lock).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import os
import random
import sqlite3
import stat
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Self, TypeVar

from fp_monitor.config.history_url import HistoryLocation, PostgresURL
from fp_monitor.domain.canary import sample_column, sample_from_column, verdict_column
from fp_monitor.domain.chain import (
    GENESIS_HASH,
    RECORD_FIELDS,
    SEALED_COLUMNS,
    Checkpoint,
    CheckpointKind,
    Row,
    Seal,
    SealedRow,
    baseline_digest,
    chain_hash,
    row_hash,
    rows_digest,
    sealed_columns,
)
from fp_monitor.domain.errors import HistoryError
from fp_monitor.domain.models import (
    ABSENT,
    ALL_SOURCES,
    CHANGE_STATUSES,
    NULL,
    TRAFFIC_STATUSES,
    Announced,
    CheckRecord,
    ErrorKind,
    Observation,
    Recorded,
    Sample,
    Source,
    Status,
    TargetFacts,
    TargetResult,
    TargetState,
    Usage,
    Window,
    fingerprint_columns,
    fingerprint_token,
)
from fp_monitor.store.dialect import Cursor, Database, dict_rows

BUSY_TIMEOUT_SECONDS = 60.0
_T = TypeVar("_T")

# Append-only: never edit or reorder an entry; add a new one. Each runs once, in order.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_observations",
        """
        CREATE TABLE observations (
            id INTEGER PRIMARY KEY,
            check_id TEXT NOT NULL,
            observed_at TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT 'probe',
            target TEXT NOT NULL,
            provider TEXT NOT NULL,
            base_url TEXT NOT NULL,
            requested_model TEXT NOT NULL,
            resolved_model TEXT,
            fingerprint TEXT,
            fingerprint_state TEXT,
            response_id TEXT,
            request_id TEXT,
            http_status INTEGER,
            latency_ms REAL,
            attempts INTEGER NOT NULL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            headers TEXT NOT NULL DEFAULT '{}',
            error_kind TEXT,
            error_message TEXT,
            request_shape TEXT NOT NULL,
            raw_response TEXT,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX observations_target ON observations (target, id);
        CREATE INDEX observations_check ON observations (check_id);
        """,
    ),
    (
        "0002_checks_and_known_values",
        """
        CREATE TABLE checks (
            id INTEGER PRIMARY KEY,
            check_id TEXT NOT NULL,
            target TEXT NOT NULL,
            checked_at TEXT NOT NULL,
            status TEXT NOT NULL,
            fingerprints TEXT,
            models TEXT,
            headers TEXT,
            samples INTEGER NOT NULL,
            errors INTEGER NOT NULL
        );
        CREATE INDEX checks_target ON checks (target, id);
        CREATE TABLE known_values (
            target TEXT NOT NULL,
            field TEXT NOT NULL,
            value TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            PRIMARY KEY (target, field, value)
        ) WITHOUT ROWID;
        """,
    ),
    (
        "0003_learning",
        """
        ALTER TABLE checks ADD COLUMN learning INTEGER;
        ALTER TABLE known_values ADD COLUMN samples INTEGER NOT NULL DEFAULT 0;
        UPDATE known_values SET samples = (
            SELECT count(*) FROM observations AS o
            WHERE o.target = known_values.target AND o.error_kind IS NULL AND
                CASE known_values.field
                    WHEN 'model' THEN o.resolved_model
                    ELSE CASE o.fingerprint_state
                        WHEN 'null' THEN '<null>' WHEN 'absent' THEN '<absent>'
                        ELSE o.fingerprint END
                END = known_values.value
        );
        """,
    ),
    (
        # Reading by time (history, stats, prune) and import's "already present?" stay index
        # lookups however long the history grows.
        "0004_reading_indexes",
        """
        CREATE INDEX observations_time ON observations (observed_at);
        CREATE INDEX observations_target_time ON observations (target, observed_at);
        CREATE INDEX observations_hash ON observations (hash);
        CREATE INDEX checks_target_time ON checks (target, checked_at);
        """,
    ),
    (
        "0005_chain_checkpoints",
        """
        CREATE TABLE chain_checkpoints (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            after_id INTEGER NOT NULL,
            from_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            records INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        """,
    ),
    (
        # A target that never learns (locked, or `learning = false`) has no check with a
        # learning state: without this index, the facts' lookup of the latest one reads all of
        # the target's checks on every check, and an import (whose checks carry none) slows
        # down quadratically.
        "0006_checks_learning_index",
        """
        CREATE INDEX checks_target_learning ON checks (target, id) WHERE learning IS NOT NULL;
        """,
    ),
    (
        "0007_traffic",
        """
        ALTER TABLE observations ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE checks ADD COLUMN source TEXT NOT NULL DEFAULT 'probe';
        CREATE INDEX checks_target_source ON checks (target, source, id);
        CREATE TABLE known_values_by_source (
            target TEXT NOT NULL,
            source TEXT NOT NULL,
            field TEXT NOT NULL,
            value TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            samples INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (target, source, field, value)
        ) WITHOUT ROWID;
        INSERT INTO known_values_by_source
            SELECT target, 'probe', field, value, first_seen, samples FROM known_values;
        """,
    ),
    (
        "0008_previous_by_source",
        # A check's previous one is the latest of its own source (see History.facts).
        "CREATE INDEX checks_target_source_time ON checks (target, source, checked_at);",
    ),
    (
        # The known values of records no longer in the chain (pruned, or counted before the
        # known values were kept in step with the records): verify derives the known-value
        # tables from this and the chained records. Filled by History._migrate and by prune.
        "0009_known_baseline",
        """
        CREATE TABLE known_baseline (
            target TEXT NOT NULL,
            source TEXT NOT NULL,
            field TEXT NOT NULL,
            value TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            samples INTEGER NOT NULL,
            PRIMARY KEY (target, source, field, value)
        ) WITHOUT ROWID;
        """,
    ),
    (
        # Every write transaction ends with a seal (see fp_monitor.domain.chain): check rows,
        # checkpoints and the baseline join the tamper-evident chain. History._migrate seals
        # what a history already holds.
        "0010_seals",
        """
        CREATE TABLE chain_seals (
            id INTEGER PRIMARY KEY,
            prev_hash TEXT NOT NULL,
            after_id INTEGER NOT NULL,
            record_hash TEXT NOT NULL,
            rows INTEGER NOT NULL,
            rows_digest TEXT NOT NULL,
            baseline TEXT NOT NULL,
            pruned_before TEXT,
            trimmed_hash TEXT,
            created_at TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX chain_seals_hash ON chain_seals (hash);
        CREATE TABLE sealed_rows (
            seal INTEGER NOT NULL,
            tbl TEXT NOT NULL,
            row_id INTEGER NOT NULL,
            row_hash TEXT NOT NULL,
            checked_at TEXT,
            after_id INTEGER,
            PRIMARY KEY (tbl, row_id, seal)
        ) WITHOUT ROWID;
        CREATE INDEX sealed_rows_seal ON sealed_rows (seal, tbl, row_id);
        """,
    ),
    (
        # `fpmon report` counts samples per time bucket and value, and checks per status,
        # from these indexes alone, never reading the rows (an observation carries its raw
        # response): a million observations in about a second instead of three
        # (benchmarks/report.py).
        "0011_report_index",
        """
        CREATE INDEX observations_report ON observations (target, observed_at, source,
            fingerprint, fingerprint_state, resolved_model, error_kind);
        CREATE INDEX checks_report ON checks (target, status, checked_at, source);
        """,
    ),
    (
        # The canary (store/canary.py): each sample's top logprobs or sampled token (chained,
        # exported), each check's verdict (sealed when not null), the target's learned
        # signatures (one document, rewritten by each check) and what the provider refused
        # (logprobs: auto falls back for good).
        "0012_canary",
        """
        ALTER TABLE observations ADD COLUMN canary TEXT;
        ALTER TABLE checks ADD COLUMN canary TEXT;
        CREATE TABLE canary_signatures (
            target TEXT NOT NULL PRIMARY KEY,
            signatures TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE canary_refusals (
            target TEXT NOT NULL,
            refused TEXT NOT NULL,
            first_at TEXT NOT NULL,
            PRIMARY KEY (target, refused)
        );
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
_TRAFFIC_STATUSES = ", ".join(f"'{status.value}'" for status in TRAFFIC_STATUSES)


_COUNT_KNOWN = (
    "INSERT INTO known_values (target, field, value, first_seen, samples) VALUES (?, ?, ?, ?, 1)"
    # Qualified: PostgreSQL finds a bare `samples` ambiguous (the row, or EXCLUDED's).
    " ON CONFLICT (target, field, value) DO UPDATE SET samples = known_values.samples + 1"
)
_COUNT_KNOWN_BY_SOURCE = (
    "INSERT INTO known_values_by_source (target, source, field, value, first_seen, samples)"
    " VALUES (?, ?, ?, ?, ?, 1)"
    " ON CONFLICT (target, source, field, value)"
    " DO UPDATE SET samples = known_values_by_source.samples + 1"
)


def timestamp(moment: datetime) -> str:
    """UTC, fixed width, so that text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    # fromisoformat reads this fixed format over 20 times faster than strptime, which
    # matters when a timeline parses thousands of rows.
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # compared with aware times later: refuse it here, by name
        raise ValueError(f"{text[:40]!r} has no time zone")
    return moment


class History:
    """One open history: a SQLite file, or a PostgreSQL database (store/postgres.py)."""

    def __init__(self, connection: Database, path: HistoryLocation) -> None:
        self._db = connection
        self.path = path
        # What the write transaction under way leaves for its seal (see _seal).
        self._unsealed: list[tuple[str, int]] = []
        self._relisted: list[SealedRow] = []
        self._pruned_before: str | None = None
        self._trimmed_hash: str | None = None

    @classmethod
    def open(cls, path: HistoryLocation, *, any_thread: bool = False) -> History:
        """Open (creating, owner-only, and migrating as needed) the history at `path`.
        `any_thread`: the caller uses it from several threads, one at a time."""
        if isinstance(path, PostgresURL):
            # Imported here: the driver is an extra, and a SQLite history never needs it.
            from fp_monitor.store.postgres import PostgresHistory

            return PostgresHistory.connect(path)
        with _errors(path):
            _create_private(path)
            db = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=not any_thread,
            )
            history = cls(db, path)
            _enable_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
            history._migrate()
            return history

    @classmethod
    def open_readonly(cls, path: HistoryLocation) -> History | None:
        """Open without creating or migrating anything; None when there is no history yet."""
        if isinstance(path, PostgresURL):
            from fp_monitor.store.postgres import PostgresHistory

            return PostgresHistory.connect_readonly(path)
        if not path.exists():
            return None
        with _errors(path):
            _refuse_special(path)
            db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
            )
            history = cls(db, path)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise HistoryError(
                    f"history {path} has schema version {version}, this fpmon reads "
                    f"{SCHEMA_VERSION}: run a command that records (e.g. fpmon check) to migrate"
                )
            return history

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        if self._schema_version() == SCHEMA_VERSION:
            return
        # Under the write lock: writers that start on a new history at once migrate it once.
        with self.write():
            self._db.execute(
                self._migration_sql(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
            )
            done = {row[0] for row in self._db.execute("SELECT name FROM schema_migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in self._migration_sql(sql).split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                if name == "0009_known_baseline":
                    self._keep_unchained_known()
                if name == "0010_seals":  # the seal at the end of this transaction
                    self._unsealed = [
                        (table, row_id)
                        for table in SEALED_COLUMNS
                        for (row_id,) in self._db.execute(f"SELECT id FROM {table} ORDER BY id")
                    ]
                self._db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?)",
                    (name, timestamp(datetime.now(UTC))),
                )
            self._schema_migrated()

    # What differs between the stores in migrating (store/postgres.py overrides these).
    def _schema_version(self) -> int:
        """How many migrations the history has had (SQLite keeps it in the file's header)."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migration_sql(self, sql: str) -> str:
        """A migration's SQL (written for SQLite) as this store runs it."""
        return sql

    def _schema_migrated(self) -> None:
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # SQL text that differs between the stores (store/report_queries.py).
    def index_hint(self, index: str) -> str:
        """What follows a table's name to make SQLite read it through `index` (SQLite has no
        statistics unless ANALYZE ran, which fpmon never runs)."""
        return f" INDEXED BY {index}"

    def epoch_seconds(self, column: str) -> str:
        """An expression: the whole seconds since the epoch of a timestamp column."""
        return f"CAST(strftime('%s', {column}) AS INTEGER)"

    def _keep_unchained_known(self) -> None:
        """Move what the known values hold beyond the chained records into the baseline, and
        add what the records hold beyond the known values (a history of schema 2 counted none
        of its first records), so that each table is what verify derives."""
        derived, stored = self.derived_known(), self.stored_known()
        baseline = {}
        for key, (first_seen, samples) in stored.items():
            counted = derived.get(key, ("", 0))
            if samples > counted[1] or first_seen != counted[0]:
                baseline[key] = (first_seen, max(samples - counted[1], 0))
        self._db.executemany(
            "INSERT INTO known_baseline VALUES (?, ?, ?, ?, ?, ?)",
            [(*key, first_seen, samples) for key, (first_seen, samples) in baseline.items()],
        )
        for table, columns, stored_now, expected in (
            ("known_values_by_source", 6, stored, merge_known(baseline, derived)),
            ("known_values", 5, self.stored_known(by_source=False), self.expected_union()),
        ):
            unique = "target, source, field, value" if columns == 6 else "target, field, value"
            self._db.executemany(
                f"INSERT INTO {table} VALUES ({_marks(columns)}) ON CONFLICT ({unique})"
                " DO UPDATE SET first_seen = excluded.first_seen, samples = excluded.samples",
                [(*key, *count) for key, count in expected.items() if stored_now.get(key) != count],
            )

    def derived_known(
        self, through_id: int = 2**63 - 1, *, by_source: bool = True
    ) -> dict[KnownKey, KnownCount]:
        """(target, source, field, value) -> (first seen, samples) as the chained records up
        to `through_id` give them, every successful observation counting its values; without
        `by_source`, (target, field, value) over every source."""
        group = "target, source" if by_source else "target"
        found: dict[KnownKey, KnownCount] = {}
        for field, column in (("fingerprint", _FINGERPRINT_TOKEN), ("model", "resolved_model")):
            # First seen: the observed_at of the first record with the value (min(id)), joined
            # back (PostgreSQL has no bare columns beside an aggregate, as SQLite has).
            cursor = self._db.execute(
                f"SELECT {_qualified(group)}, k.value, o.observed_at, k.samples FROM ("
                f" SELECT {group}, value, min(id) AS first_id, count(*) AS samples FROM ("
                f"  SELECT {group}, {column} AS value, id FROM observations"
                "   WHERE error_kind IS NULL AND id <= ?"
                " ) AS v WHERE value IS NOT NULL"
                f" GROUP BY {group}, value"
                ") AS k JOIN observations AS o ON o.id = k.first_id",
                (through_id,),
            )
            for *owner, value, first_seen, samples in cursor:
                found[(*owner, field, value)] = (first_seen, samples)
        return found

    def stored_known(self, *, by_source: bool = True) -> dict[KnownKey, KnownCount]:
        """The known-value table detection reads (by source, or of every source)."""
        table, key = (
            ("known_values_by_source", "target, source")
            if by_source
            else ("known_values", "target")
        )
        return {
            tuple(row[:-2]): (row[-2], row[-1])
            for row in self._db.execute(
                f"SELECT {key}, field, value, first_seen, samples FROM {table}"
            )
        }

    def known_baseline(self) -> dict[KnownKey, KnownCount]:
        return {
            tuple(row[:-2]): (row[-2], row[-1])
            for row in self._db.execute(
                "SELECT target, source, field, value, first_seen, samples FROM known_baseline"
            )
        }

    def expected_union(self) -> dict[KnownKey, KnownCount]:
        """What the known_values table must hold: the baseline and the records, every source."""
        return merge_known(union_known(self.known_baseline()), self.derived_known(by_source=False))

    def write(self) -> AbstractContextManager[None]:
        """One write transaction that holds the history's write lock from its start, and seals
        what it wrote before it commits."""
        return self._transaction(write=True)

    def snapshot(self) -> AbstractContextManager[None]:
        """One read transaction: its queries see one state of the history, whatever is written
        meanwhile (verify reads the checkpoints and then every record)."""
        return self._transaction(write=False)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[None]:
        with _errors(self.path), self._begin(write=write):
            try:
                yield
                if write:
                    self._seal()
            finally:
                self._unsealed, self._relisted = [], []
                self._pruned_before = self._trimmed_hash = None

    @contextmanager
    def _begin(self, *, write: bool) -> Iterator[None]:
        """A transaction, committed when the block ends, rolled back when it raises (SQLite's:
        BEGIN IMMEDIATE takes the write lock at once; store/postgres.py overrides this)."""
        self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _seal(self) -> None:
        """Seal what this transaction wrote: the hash of each check row and checkpoint, the
        record the chain has reached, the baseline, chained to the seal before."""
        last = self._db.execute(
            f"SELECT {_SEAL_COLUMNS} FROM chain_seals ORDER BY id DESC LIMIT 1"
        ).fetchone()
        head_id, head_hash = self._head()
        written = self._unsealed or self._relisted or self._pruned_before is not None
        if not written and head_id == (last[2] if last else 0):
            return
        rows = [*self._relisted, *(self._sealed_row(t, i) for t, i in self._unsealed)]
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
            f"INSERT INTO chain_seals ({_SEAL_COLUMNS}) VALUES ({_marks(11)})",
            dataclasses.astuple(seal),
        )
        self._db.executemany(
            "INSERT INTO sealed_rows VALUES (?, ?, ?, ?, ?, ?)",
            [(seal.id, *row.content()) for row in rows],
        )

    def _sealed_row(self, table: str, row_id: int) -> SealedRow:
        """A row as its seal lists it (the seal's id is given when it is written)."""
        columns = sealed_columns(table)
        values = self._db.execute(
            f"SELECT {', '.join(columns)} FROM {table} WHERE id = ?", (row_id,)
        ).fetchone()
        row = dict(zip(columns, values, strict=True))
        import_after = row["after_id"] if row.get("kind") == CheckpointKind.IMPORT else None
        return SealedRow(
            0, table, row_id, row_hash(table, values), row.get("checked_at"), import_after
        )

    def baseline_digest(self) -> str:
        return baseline_digest(self._db.execute("SELECT * FROM known_baseline"))

    def facts(
        self, target: str, sources: frozenset[Source] = ALL_SOURCES, kind: Source = Source.PROBE
    ) -> TargetFacts:
        """The known values of `target`, as seen by the observations of `sources`, and the
        previous successful check of the `kind` of check being made: a probe's is compared with
        the last probe's, a response with the last response (a response is one sample: after
        it, a fleet serving two values would look `changed` to the next probe). Before any
        check of its kind, the latest check of `sources` is the previous one."""
        # Every source: the union table as it always was; fewer: the per-source table.
        only, names = "", tuple(source.value for source in sorted(sources))
        if sources >= ALL_SOURCES:
            names = ()
            known_sql = (
                "SELECT field, value, first_seen, samples FROM known_values WHERE target = ?"
            )
        else:
            only = f" AND source IN ({', '.join('?' for _ in names)})"
            known_sql = (
                "SELECT field, value, min(first_seen), sum(samples) FROM known_values_by_source "
                f"WHERE target = ?{only} GROUP BY field, value"
            )
        with _errors(self.path):
            # By time, then by id: records imported from an older history never become the
            # "previous" check of a newer one.
            latest = (
                "SELECT id, fingerprints, models, headers, checked_at FROM checks "
                "WHERE target = ? AND fingerprints IS NOT NULL{} "
                "ORDER BY checked_at DESC, id DESC LIMIT 1"
            )
            previous = (
                self._db.execute(latest.format(" AND source = ?"), (target, kind.value)).fetchone()
                or self._db.execute(latest.format(only), (target, *names)).fetchone()
            )
            known: dict[str, set[str]] = {"fingerprint": set(), "model": set()}
            first_seen = {}
            counts = {}
            for field, value, seen, samples in self._db.execute(known_sql, (target, *names)):
                known.setdefault(field, set()).add(value)
                where = f"the known {field} {value[:40]!r} of {target}"
                first_seen[(field, value)] = self._decode(
                    where, "first_seen", parse_timestamp, seen
                )
                if field == "fingerprint":
                    counts[value] = samples
            # The latest check that learns says whether learning is over (it never restarts).
            last_learning = self._db.execute(
                "SELECT learning FROM checks WHERE target = ? AND learning IS NOT NULL"
                f"{only} ORDER BY id DESC LIMIT 1",
                (target, *names),
            ).fetchone()
            # What the latest `new` check announced, whichever source made it: the
            # notifications of an unaccepted value go out once (see detect._news).
            last_new = self._db.execute(
                "SELECT id, fingerprints, models, checked_at FROM checks "
                "WHERE target = ? AND status = 'new' ORDER BY checked_at DESC, id DESC LIMIT 1",
                (target,),
            ).fetchone()
        common: dict[str, Any] = {
            "known_fingerprints": frozenset(known["fingerprint"]),
            "known_models": frozenset(known["model"]),
            "first_seen": first_seen,
            "fingerprint_counts": counts,
            "latest_learning": None if last_learning is None else bool(last_learning[0]),
            "last_new": None if last_new is None else self._announced(last_new),
        }
        if previous is None:
            return TargetFacts(**common)
        check = f"check row {previous[0]}"
        return TargetFacts(
            previous_fingerprints=self._decode(check, "fingerprints", _value_set, previous[1]),
            previous_models=self._decode(check, "models", _value_set, previous[2]),
            previous_headers=self._decode(check, "headers", _header_sets, previous[3]),
            previous_at=self._decode(check, "checked_at", parse_timestamp, previous[4]),
            **common,
        )

    def _announced(self, row: tuple[Any, ...]) -> Announced:
        where = f"check row {row[0]}"
        return Announced(
            fingerprints=self._decode(where, "fingerprints", _value_set, row[1]),
            models=self._decode(where, "models", _value_set, row[2]),
            at=self._decode(where, "checked_at", parse_timestamp, row[3]),
        )

    def _decode(self, where: str, column: str, decode: Callable[[Any], _T], value: Any) -> _T:
        """A stored value as its reader needs it; a corrupt one is a HistoryError naming the
        row, not a crash in whatever reads it next."""
        try:
            return decode(value)
        except (ValueError, TypeError, AttributeError) as exc:
            raise HistoryError(
                f"history {self.path}: {where}: {column} is corrupt ({str(exc)[:80]}): "
                "run `fpmon verify`, and restore the file from a copy or an export"
            ) from None

    def append_check(
        self,
        check_id: str,
        checked_at: datetime,
        result: TargetResult,
        observations: Iterable[Observation],
        source: Source = Source.PROBE,
    ) -> None:
        """Record one target's check; call inside `write()` so the chain cannot fork."""
        observations = list(observations)
        with _errors(self.path):
            head_id, prev_hash = self._head()
            for observation in observations:
                row = observation_row(check_id, observation, prev_hash, source)
                row["hash"] = prev_hash = chain_hash(row)
                head_id += 1
                self._insert({"id": head_id, **row})
        self.record_check(check_id, checked_at, result, observations, source)

    def record_check(
        self,
        check_id: str,
        checked_at: datetime,
        result: TargetResult,
        observations: Iterable[Observation],
        source: Source = Source.PROBE,
    ) -> None:
        """The facts detection reads next time: the check's sets and the values now known."""
        with _errors(self.path):
            known = [
                (result.name, field, value, timestamp(observation.observed_at))
                for observation in observations
                if observation.ok
                for field, value in (
                    ("fingerprint", observation.fingerprint),
                    ("model", observation.resolved_model),
                )
                if value is not None
            ]
            # One more sample of each value: in the union of every source, and in its own.
            self._db.executemany(_COUNT_KNOWN, known)
            self._db.executemany(
                _COUNT_KNOWN_BY_SOURCE, [(t, source.value, f, v, at) for t, f, v, at in known]
            )
            succeeded = bool(result.fingerprints or result.models)
            cursor = self._db.execute(
                "INSERT INTO checks (check_id, target, checked_at, status, fingerprints, models,"
                " headers, samples, errors, learning, source, canary)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    check_id,
                    result.name,
                    timestamp(checked_at),
                    result.status.value,
                    json.dumps(list(result.fingerprints)) if succeeded else None,
                    json.dumps(list(result.models)) if succeeded else None,
                    json.dumps({k: list(v) for k, v in result.headers.items()}),
                    result.samples,
                    len(result.errors),
                    None if result.learning is None else int(result.learning),
                    source.value,
                    verdict_column(result.canary),
                ),
            )
            self._unsealed.append(("checks", _rowid(cursor)))

    def append_records(self, rows: Sequence[Mapping[str, Any]]) -> list[Appended]:
        """Append records from another history as they are (their hash and prev_hash kept),
        except those whose hash is already here; call inside `write()`. Where a record does not
        follow this history's last one, an import checkpoint records the junction for verify."""
        with _errors(self.path):
            present: set[str] = set()
            for start in range(0, len(rows), _LOOKUP_CHUNK):
                chunk = [r["hash"] for r in rows[start : start + _LOOKUP_CHUNK]]
                present.update(
                    found
                    for (found,) in self._db.execute(
                        f"SELECT hash FROM observations WHERE hash IN ({_marks(len(chunk))})",
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
                f" VALUES (?, {_marks(len(RECORD_FIELDS))})",
                inserts,
            )
            return outcomes

    def _insert(self, row: Mapping[str, Any]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._db.execute(
            f"INSERT INTO observations ({columns}) VALUES ({marks})", tuple(row.values())
        )

    def head(self) -> tuple[int, str]:
        """The id and hash of the last record (see _head)."""
        with _errors(self.path):
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
        self._unsealed.append(("chain_checkpoints", _rowid(cursor)))

    def failed_before(self, target: str, check_id: str) -> int:
        """How many checks of `target` failed (status error) in a row just before `check_id`."""
        with _errors(self.path):
            # Walks the (target, id) index backwards: the check looked for is among the latest.
            row = self._db.execute(
                "SELECT id FROM checks WHERE target = ? AND check_id = ? ORDER BY id DESC LIMIT 1",
                (target, check_id),
            ).fetchone()
            if row is None:
                return 0
            (count,) = self._db.execute(
                "SELECT count(*) FROM checks WHERE target = :target AND id < :current AND id > "
                "coalesce((SELECT id FROM checks WHERE target = :target AND id < :current "
                "AND status != :error ORDER BY id DESC LIMIT 1), 0)",
                {"target": target, "current": row[0], "error": Status.ERROR.value},
            ).fetchone()
            return int(count)

    def served(self, target: str, check_id: str) -> frozenset[tuple[str, str]]:
        """(fingerprint, resolved model) tokens of one check's successful samples."""
        with _errors(self.path):
            rows = self._db.execute(
                "SELECT DISTINCT fingerprint, fingerprint_state, resolved_model FROM observations "
                "WHERE check_id = ? AND target = ? AND error_kind IS NULL",
                (check_id, target),
            ).fetchall()
        return frozenset(
            (token, model)
            for value, state, model in rows
            if (token := fingerprint_token(value, state)) is not None and model is not None
        )

    def state(self, target: str) -> TargetState:
        """The target's latest probe check, latest successful probe check, and status counts
        (of traffic checks, those of TRAFFIC_STATUSES)."""
        with _errors(self.path):
            last = self._db.execute(
                "SELECT check_id, checked_at, fingerprints IS NOT NULL FROM checks "
                "WHERE target = ? AND source = 'probe' ORDER BY id DESC LIMIT 1",
                (target,),
            ).fetchone()
            last_ok = self._db.execute(
                "SELECT check_id FROM checks WHERE target = ? AND source = 'probe' "
                "AND fingerprints IS NOT NULL ORDER BY id DESC LIMIT 1",
                (target,),
            ).fetchone()
            latencies = [
                latency
                for (latency,) in self._db.execute(
                    "SELECT latency_ms FROM observations WHERE check_id = ? AND target = ? "
                    "AND error_kind IS NULL AND latency_ms IS NOT NULL",
                    (last[0] if last else None, target),
                )
            ]
            counts = self._db.execute(
                "SELECT status, count(*), max(checked_at) FROM checks WHERE target = ? "
                f"AND (source = 'probe' OR status IN ({_TRAFFIC_STATUSES})) GROUP BY status",
                (target,),
            ).fetchall()
        changed_at = [at for status, _, at in counts if status in CHANGE_STATUSES]
        return TargetState(
            last_checked_at=(
                self._decode(f"check {last[0]}", "checked_at", parse_timestamp, last[1])
                if last
                else None
            ),
            last_ok=bool(last[2]) if last else None,
            latency_ms=statistics.median(latencies) if latencies else None,
            served=self.served(target, last_ok[0]) if last_ok else frozenset(),
            status_counts={status: count for status, count, _ in counts},
            last_change_at=(
                self._decode(
                    f"the checks of {target}", "checked_at", parse_timestamp, max(changed_at)
                )
                if changed_at
                else None
            ),
        )

    def last_check_row(self) -> int:
        """The row id of the latest check (0 when there is none)."""
        with _errors(self.path):
            return int(self._db.execute("SELECT coalesce(max(id), 0) FROM checks").fetchone()[0])

    def traffic_changes(self, after: int) -> tuple[list[tuple[str, Status, datetime]], int]:
        """The traffic checks after check row `after` with a status of TRAFFIC_STATUSES, as
        (target, status, checked_at), and the last check row they go up to (the next
        `after`)."""
        last = self.last_check_row()  # first: a check written meanwhile is read next time
        with _errors(self.path):
            rows = self._db.execute(
                "SELECT target, status, checked_at FROM checks WHERE id > ? AND id <= ? "
                f"AND source = 'traffic' AND status IN ({_TRAFFIC_STATUSES}) ORDER BY id",
                (after, last),
            ).fetchall()
        return [
            (
                target,
                self._decode(f"a check of {target}", "status", Status, status),
                self._decode(f"a check of {target}", "checked_at", parse_timestamp, at),
            )
            for target, status, at in rows
        ], last

    def count_observations(self, target: str | None = None) -> int:
        with _errors(self.path):
            if target is None:
                row = self._db.execute("SELECT count(*) FROM observations").fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM observations WHERE target = ?", (target,)
                ).fetchone()
            return int(row[0])

    # --- reading --------------------------------------------------------------------

    def targets(self) -> list[str]:
        """Every target with a check in the history, sorted."""
        with _errors(self.path):
            # One index step per target (a skip scan), not a pass over every check.
            found = self._db.execute(
                "WITH RECURSIVE t(name) AS ("
                " SELECT min(target) FROM checks"
                " UNION ALL"
                " SELECT (SELECT min(target) FROM checks WHERE target > t.name)"
                " FROM t WHERE t.name IS NOT NULL"
                ") SELECT name FROM t WHERE name IS NOT NULL"
            )
            return [name for (name,) in found]

    def iter_checks(self, target: str, window: Window) -> Iterator[CheckRecord]:
        """The checks of `target` in `window`, newest first, read as they are consumed."""
        where, params = _window("checked_at", window)
        with _errors(self.path):
            cursor = self._db.execute(
                "SELECT id, check_id, target, checked_at, status, fingerprints, models, samples,"
                f" errors FROM checks WHERE target = ?{where}"
                " ORDER BY checked_at DESC, id DESC",
                (target, *params),
            )
            for id_, check_id, name, at, status, fingerprints, models, samples, errors in cursor:
                row = f"check row {id_}"
                yield CheckRecord(
                    id=id_,
                    check_id=check_id,
                    target=name,
                    checked_at=self._decode(row, "checked_at", parse_timestamp, at),
                    status=status,
                    fingerprints=self._decode(row, "fingerprints", _optional_set, fingerprints),
                    models=self._decode(row, "models", _optional_set, models),
                    samples=samples,
                    errors=errors,
                )

    def observations(self, target: str | None, window: Window, limit: int) -> list[Recorded]:
        """The newest `limit` observations in `window` (of `target`, or of every target)."""
        where, params = _window("observed_at", window)
        if target is not None:
            where += " AND target = ?"
            params.append(target)
        with _errors(self.path):
            cursor = self._db.execute(
                f"SELECT * FROM observations WHERE 1 = 1{where}"
                " ORDER BY observed_at DESC, id DESC LIMIT ?",
                (*params, limit),
            )
            return [
                Recorded(
                    row["id"],
                    row["check_id"],
                    self._decode(f"record {row['id']}", "a column", observation_from_row, row),
                    self._decode(f"record {row['id']}", "source", Source, row["source"]),
                )
                for row in dict_rows(cursor)
            ]

    def samples(self, target: str, window: Window) -> list[Sample]:
        """Every observation of `target` in `window`, reduced to what stats read."""
        where, params = _window("observed_at", window)
        with _errors(self.path):
            cursor = self._db.execute(
                "SELECT check_id, fingerprint, fingerprint_state, resolved_model, error_kind,"
                f" latency_ms FROM observations WHERE target = ?{where}",
                (target, *params),
            )
            return [
                Sample(check_id, fingerprint_token(fp, state), model, kind, latency)
                for check_id, fp, state, model, kind, latency in cursor
            ]

    # --- the chain ------------------------------------------------------------------

    def iter_chain(self, through_id: int | None = None) -> Iterator[dict[str, Any]]:
        """Every record (id, the chained columns and hash) in chain order, read as consumed."""
        columns = ("id", *RECORD_FIELDS)
        with _errors(self.path):
            cursor = self._db.execute(
                f"SELECT {', '.join(columns)} FROM observations WHERE id <= ? ORDER BY id",
                (through_id if through_id is not None else 2**63 - 1,),
            )
            # Plain dicts: sqlite3.Row looks names up one by one, which triples the time of a
            # walk over a million records.
            for values in cursor:
                yield dict(zip(columns, values, strict=True))

    def check_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every check row as stored: id, check_id, target, source, checked_at, status,
        fingerprints, models, headers, errors."""
        with _errors(self.path):
            yield from self._db.execute(
                "SELECT id, check_id, target, source, checked_at, status, fingerprints, models,"
                " headers, errors FROM checks ORDER BY id"
            )

    def derived_checks(self) -> dict[tuple[str, str, str], CheckSets]:
        """(check_id, target, source) -> what the check's chained records give its row."""
        found: dict[tuple[str, str, str], CheckSets] = {}
        with _errors(self.path):
            cursor = self._db.execute(
                f"SELECT check_id, target, source, {_FINGERPRINT_TOKEN}, resolved_model, headers,"
                " error_kind FROM observations"
            )
            for check_id, target, source, token, model, headers, error in cursor:
                sets = found.setdefault((check_id, target, source), CheckSets())
                if error is not None:
                    sets.errors += 1
                    continue
                if token is not None:
                    sets.fingerprints.add(token)
                if model is not None:
                    sets.models.add(model)
                for name, value in self._decode("a record", "headers", json.loads, headers).items():
                    sets.headers.setdefault(name, set()).add(value)
        return found

    def seals(self) -> Iterator[Seal]:
        with _errors(self.path):
            for values in self._db.execute(f"SELECT {_SEAL_COLUMNS} FROM chain_seals ORDER BY id"):
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
        with _errors(self.path):
            for values in self._db.execute(
                "SELECT seal, tbl, row_id, row_hash, checked_at, after_id FROM sealed_rows"
                f" WHERE {where} ORDER BY {order}",
                params,
            ):
                yield SealedRow(*values)

    def row_hashes(self, table: str) -> Iterator[tuple[int, str, str]]:
        """(id, hash, how a message names it) of each row of a sealed table, in id order."""
        columns = sealed_columns(table)
        with _errors(self.path):
            for values in self._db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id"):
                row = dict(zip(columns, values, strict=True))
                name = (
                    f"check row {row['id']} ({row['target']}, {row['checked_at']})"
                    if table == "checks"
                    else f"the {row['kind']} checkpoint after record {row['after_id']}"
                )
                yield row["id"], row_hash(table, values), name

    def record_at(self, record_id: int) -> tuple[str, str] | None:
        """(hash, observed_at) of the record `record_id`, None when there is none."""
        with _errors(self.path):
            found = self._db.execute(
                "SELECT hash, observed_at FROM observations WHERE id = ?", (record_id,)
            ).fetchone()
        return None if found is None else (found[0], found[1])

    def first_record(self) -> tuple[int, str] | None:
        """(id, observed_at) of the first record, None when there is none."""
        with _errors(self.path):
            found = self._db.execute(
                "SELECT id, observed_at FROM observations ORDER BY id LIMIT 1"
            ).fetchone()
        return None if found is None else (found[0], found[1])

    def has_seal(self, seal_hash: str) -> bool:
        with _errors(self.path):
            return bool(
                self._db.execute(
                    "SELECT 1 FROM chain_seals WHERE hash = ?", (seal_hash,)
                ).fetchone()
            )

    def checkpoints(self) -> list[Checkpoint]:
        with _errors(self.path):
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
        with _errors(self.path):
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
        with _errors(self.path):
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
        with _errors(self.path):
            self._db.execute("VACUUM")
            # In WAL mode the compacted file first lands in the WAL; while another process
            # (a `fpmon watch`) keeps the history open, only a checkpoint shrinks the files.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


KnownKey = tuple[str, ...]
"""(target, source, field, value) of a known value; (target, field, value) of every source."""
KnownCount = tuple[str, int]
"""(first seen, as stored, and samples) of a known value."""
_FINGERPRINT_TOKEN = (
    f"CASE fingerprint_state WHEN 'null' THEN '{NULL}' WHEN 'absent' THEN '{ABSENT}'"
    " ELSE fingerprint END"
)


def merge_known(
    earlier: Mapping[KnownKey, KnownCount], later: Mapping[KnownKey, KnownCount]
) -> dict[KnownKey, KnownCount]:
    """Known values counted over two stretches of records, `earlier` before `later`."""
    merged = dict(earlier)
    for key, (first_seen, samples) in later.items():
        before = merged.get(key)
        merged[key] = (first_seen, samples) if before is None else (before[0], before[1] + samples)
    return merged


def union_known(known: Mapping[KnownKey, KnownCount]) -> dict[KnownKey, KnownCount]:
    """The known values of every source together, as the known_values table keeps them: first
    seen by the earliest source (timestamps sort as text), samples summed."""
    union: dict[KnownKey, KnownCount] = {}
    for (target, _, field, value), (first_seen, samples) in known.items():
        before = union.get((target, field, value))
        union[(target, field, value)] = (
            (first_seen, samples)
            if before is None
            else (min(before[0], first_seen), before[1] + samples)
        )
    return union


_LOOKUP_CHUNK = 500  # hashes per IN (...): well under SQLite's limit on parameters
_SEAL_COLUMNS = ", ".join(field.name for field in dataclasses.fields(Seal))


def _rowid(cursor: Cursor) -> int:
    """The id an INSERT ... RETURNING id gave its row (both stores; sqlite3's lastrowid only
    SQLite)."""
    (row_id,) = cursor.fetchone()
    return int(row_id)


def _qualified(columns: str) -> str:
    """`target, source` -> `k.target, k.source`."""
    return ", ".join(f"k.{column.strip()}" for column in columns.split(","))


def _marks(count: int) -> str:
    return ", ".join("?" * count)


class Appended(Enum):
    PRESENT = "present"
    """A record with this hash was already there: nothing was written."""
    APPENDED = "appended"
    SPLICED = "spliced"
    """Appended, and it continues another chain: an import checkpoint was recorded."""


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


def _window(column: str, window: Window) -> tuple[str, list[Any]]:
    where, params = "", []
    if window.since is not None:
        where += f" AND {column} >= ?"
        params.append(timestamp(window.since))
    if window.until is not None:
        where += f" AND {column} < ?"
        params.append(timestamp(window.until))
    if window.sources != ALL_SOURCES:
        where += f" AND source IN ({_marks(len(window.sources))})"
        params.extend(sorted(source.value for source in window.sources))
    return where, params


@functools.lru_cache(maxsize=4096)
def _value_set(text: str) -> frozenset[str]:
    """A stored JSON list of strings; ValueError when it is anything else."""
    # Cached: a timeline reads the same few sets thousands of times in a row.
    return _strings(json.loads(text))


def _strings(values: Any) -> frozenset[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("expected a JSON list of strings")
    return frozenset(values)


def _optional_set(text: str | None) -> frozenset[str] | None:
    return None if text is None else _value_set(text)


def _header_sets(text: str) -> dict[str, frozenset[str]]:
    headers = json.loads(text)
    if not isinstance(headers, dict):
        raise ValueError("expected a JSON object")
    return {name: _strings(values) for name, values in headers.items()}


def observation_from_row(row: Row) -> Observation:
    """A stored record -> the Observation it was made from (the inverse of observation_row)."""
    return Observation(
        target=row["target"],
        provider=row["provider"],
        base_url=row["base_url"],
        requested_model=row["requested_model"],
        observed_at=parse_timestamp(row["observed_at"]),
        attempts=row["attempts"],
        latency_ms=row["latency_ms"],
        request_shape=row["request_shape"],
        http_status=row["http_status"],
        fingerprint=fingerprint_token(row["fingerprint"], row["fingerprint_state"]),
        resolved_model=row["resolved_model"],
        response_id=row["response_id"],
        request_id=row["request_id"],
        usage=Usage(row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]),
        headers=json.loads(row["headers"]),
        error_kind=ErrorKind(row["error_kind"]) if row["error_kind"] else None,
        error_message=row["error_message"],
        raw_response=row["raw_response"],
        tags=json.loads(row["tags"]),
        canary=sample_from_column(
            row["canary"], fingerprint_token(row["fingerprint"], row["fingerprint_state"])
        ),
    )


def observation_row(
    check_id: str, obs: Observation, prev_hash: str, source: Source = Source.PROBE
) -> dict[str, Any]:
    """The chained columns of `obs` as stored (hash it with chain_hash)."""
    fingerprint, state = fingerprint_columns(obs.fingerprint)
    return {
        "check_id": check_id,
        "observed_at": timestamp(obs.observed_at),
        "source": source.value,
        "target": obs.target,
        "provider": obs.provider,
        "base_url": obs.base_url,
        "requested_model": obs.requested_model,
        "resolved_model": obs.resolved_model,
        "fingerprint": fingerprint,
        "fingerprint_state": state,
        "response_id": obs.response_id,
        "request_id": obs.request_id,
        "http_status": _int_or_none(obs.http_status),
        # REAL and INTEGER columns give back float and int: hash what a reader will see
        "latency_ms": None if obs.latency_ms is None else float(obs.latency_ms),
        "attempts": int(obs.attempts),
        "prompt_tokens": _int_or_none(obs.usage.prompt_tokens),
        "completion_tokens": _int_or_none(obs.usage.completion_tokens),
        "total_tokens": _int_or_none(obs.usage.total_tokens),
        "headers": json.dumps(obs.headers, sort_keys=True),
        "error_kind": obs.error_kind.value if obs.error_kind else None,
        "error_message": obs.error_message,
        "request_shape": obs.request_shape,
        "raw_response": obs.raw_response,
        "prev_hash": prev_hash,
        "tags": json.dumps(dict(obs.tags), sort_keys=True),
        "canary": sample_column(obs.canary),
    }


def _int_or_none(value: int | None) -> int | None:
    return None if value is None else int(value)


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL; SQLite does not apply the busy timeout to this pragma, so processes
    creating one history at the same moment wait here instead of failing."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.01, 0.05))


def _create_private(path: Path) -> None:
    """Create the file readable by its owner only, before SQLite creates it with the umask."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        _refuse_special(path)
    except FileNotFoundError:
        # Not O_EXCL, which refuses a symlink to nothing: SQLite then made its target 0644.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _refuse_special(path: Path) -> None:
    """HistoryError unless the history (FileNotFoundError when it is missing) and the -wal and
    -shm files SQLite keeps beside it are regular files: SQLite waits forever on a FIFO."""
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = file.stat().st_mode
        except FileNotFoundError:
            if file == path:
                raise
            continue
        if not stat.S_ISREG(mode):
            kind = next((kind for test, kind in _SPECIAL_FILES if test(mode)), "a special file")
            what = "it" if file == path else f"{file} beside it"
            raise HistoryError(
                f"history {path}: {what} is {kind}, not a regular file: "
                "pass --history with the path of a history file"
            )


def _why_unwritable(path: Path, problem: str) -> str:
    """SQLite says "read-only" or "unable to open" when it cannot create its -wal and -shm
    files beside the history, however writable the history itself is: name the directory."""
    directory = path.resolve().parent
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError:
        return (
            f"the directory {directory} is read-only, and SQLite keeps its -wal and -shm files "
            "beside the history: make the directory writable, or pass --history"
        )
    if "readonly" in problem:
        return "the file is read-only: check its permissions or pass --history"
    return problem


@contextmanager
def _errors(path: HistoryLocation) -> Iterator[None]:
    """sqlite3 and OS errors -> HistoryError naming the file and what to do (PostgreSQL's
    connection turns its driver's errors into HistoryError itself)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "not a database" in text:
            text = "the file is not an fpmon history (not a SQLite database)"
        elif "locked" in text or "busy" in text:
            text = "locked by another process; try again, or pass another --history"
        elif isinstance(path, Path) and ("readonly" in text or "unable to open" in text):
            text = _why_unwritable(path, text)
        raise HistoryError(f"history {path}: {text}") from exc
    except OSError as exc:
        text = exc.strerror or str(exc)
        if isinstance(path, Path) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            text = _why_unwritable(path, text)
        raise HistoryError(f"history {path}: {text}") from exc


def history_exists(path: HistoryLocation) -> bool:
    """Whether there is a history at `path` (a PostgreSQL database: with fpmon's tables)."""
    if not isinstance(path, PostgresURL):
        return path.exists()
    found = History.open_readonly(path)
    if found is not None:
        found.close()
    return found is not None


def database_size(url: PostgresURL) -> int:
    """The bytes a PostgreSQL history's tables and indexes take."""
    from fp_monitor.store.postgres import PostgresHistory

    with PostgresHistory.connect(url) as history:
        return history.size()
