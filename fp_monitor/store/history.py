"""The history: named append-only migrations, append with a hash chain, and the facts
detection needs. In a SQLite file, or in a PostgreSQL database (store/postgres.py: the same
class over a connection that speaks sqlite3's parameter style, so the SQL is written once, in
the subset both accept).

History is the one class callers use; here are opening, migrating and the transactions, and
each part of it is a module of its own: connection.py (opening a file safely, errors),
migrations.py (the schema), rows.py (how a value is stored in its column), facts.py (what
detection reads), recording.py (appending, sealing), reads.py (history, stats, metrics) and
audit.py (verify, export, prune).

Every check writes inside one BEGIN IMMEDIATE transaction: concurrent fpmon processes queue on
SQLite's lock (busy timeout) instead of losing rows or forking the chain (on PostgreSQL, on an
advisory lock).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime

from fp_monitor.config.history_url import HistoryLocation, PostgresURL
from fp_monitor.domain.chain import SEALED_COLUMNS
from fp_monitor.domain.errors import HistoryError
from fp_monitor.store.audit import Audit
from fp_monitor.store.connection import (
    BUSY_TIMEOUT_SECONDS,
    create_private,
    enable_wal,
    history_errors,
    refuse_special,
)
from fp_monitor.store.facts import merge_known
from fp_monitor.store.migrations import MIGRATIONS, SCHEMA_VERSION
from fp_monitor.store.reads import Reads
from fp_monitor.store.rows import placeholders, timestamp


class History(Audit, Reads):
    """One open history: a SQLite file, or a PostgreSQL database (store/postgres.py)."""

    @classmethod
    def open(cls, path: HistoryLocation, *, any_thread: bool = False) -> History:
        """Open (creating, owner-only, and migrating as needed) the history at `path`.
        `any_thread`: the caller uses it from several threads, one at a time."""
        if isinstance(path, PostgresURL):
            # Imported here: the driver is an extra, and a SQLite history never needs it.
            from fp_monitor.store.postgres import PostgresHistory

            return PostgresHistory.connect(path)
        with history_errors(path):
            create_private(path)
            db = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=not any_thread,
            )
            history = cls(db, path)
            enable_wal(db)
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
        with history_errors(path):
            refuse_special(path)
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
                    # The columns sealed then: later ones are null in the rows written before
                    # them, which hash as rows without them.
                    self._unsealed = [
                        self._sealed_row(table, row_id, SEALED_COLUMNS[table])
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
                f"INSERT INTO {table} VALUES ({placeholders(columns)}) ON CONFLICT ({unique})"
                " DO UPDATE SET first_seen = excluded.first_seen, samples = excluded.samples",
                [(*key, *count) for key, count in expected.items() if stored_now.get(key) != count],
            )

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
        with history_errors(self.path), self._begin(write=write):
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
