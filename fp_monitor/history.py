"""The SQLite history: named append-only migrations, append with a hash chain, and the facts
detection needs.

Every check writes inside one BEGIN IMMEDIATE transaction: concurrent fpmon processes queue on
SQLite's lock (busy timeout) instead of losing rows or forking the chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fp_monitor.errors import HistoryError
from fp_monitor.models import (
    ABSENT,
    ALL_SOURCES,
    NULL,
    Observation,
    Source,
    TargetFacts,
    TargetResult,
)

BUSY_TIMEOUT_SECONDS = 60.0
GENESIS_HASH = "0" * 64
NO_TAGS = "{}"

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
    # 0004 to 0006 are taken by work on other branches; names, not positions, say what ran.
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
)
SCHEMA_VERSION = len(MIGRATIONS)

# The chained content of an observation: every column but id and hash, in this order.
CHAINED_COLUMNS = (
    "check_id",
    "observed_at",
    "source",
    "target",
    "provider",
    "base_url",
    "requested_model",
    "resolved_model",
    "fingerprint",
    "fingerprint_state",
    "response_id",
    "request_id",
    "http_status",
    "latency_ms",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "headers",
    "error_kind",
    "error_message",
    "request_shape",
    "raw_response",
    "prev_hash",
)


_COUNT_KNOWN = (
    "INSERT INTO known_values (target, field, value, first_seen, samples) VALUES (?, ?, ?, ?, 1)"
    " ON CONFLICT (target, field, value) DO UPDATE SET samples = samples + 1"
)
_COUNT_KNOWN_BY_SOURCE = (
    "INSERT INTO known_values_by_source (target, source, field, value, first_seen, samples)"
    " VALUES (?, ?, ?, ?, ?, 1)"
    " ON CONFLICT (target, source, field, value) DO UPDATE SET samples = samples + 1"
)


def timestamp(moment: datetime) -> str:
    """UTC, fixed width, so that text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def fingerprint_columns(token: str | None) -> tuple[str | None, str | None]:
    """Token -> (fingerprint, state): a person querying the file sees real NULLs and ''."""
    if token is None:
        return None, None
    if token == NULL:
        return None, "null"
    if token == ABSENT:
        return None, "absent"
    return token, "empty" if token == "" else "value"


def chain_hash(row: dict[str, Any]) -> str:
    values = [row[c] for c in CHAINED_COLUMNS]
    # Tags came with 0007: hashed only when there are some, so that every row written before
    # keeps its hash, and adding or removing tags later still breaks the chain.
    if row.get("tags", NO_TAGS) != NO_TAGS:
        values.append(row["tags"])
    canonical = json.dumps(values, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class History:
    """One open history file."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path, *, any_thread: bool = False) -> History:
        """Open (creating, owner-only, and migrating as needed) the history at `path`.
        `any_thread`: the caller uses it from several threads, one at a time."""
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
    def open_readonly(cls, path: Path) -> History | None:
        """Open without creating or migrating anything; None when there is no history yet."""
        if not path.exists():
            return None
        with _errors(path):
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

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        if self._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        with self.write():
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in self._db.execute("SELECT name FROM schema_migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?)",
                    (name, timestamp(datetime.now(UTC))),
                )
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction that holds SQLite's write lock from its start."""
        with _errors(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def facts(self, target: str, sources: frozenset[Source] = ALL_SOURCES) -> TargetFacts:
        """The previous successful check and the known values of `target`, as seen by the
        observations of `sources`."""
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
            previous = self._db.execute(
                "SELECT fingerprints, models, headers FROM checks "
                f"WHERE target = ? AND fingerprints IS NOT NULL{only} ORDER BY id DESC LIMIT 1",
                (target, *names),
            ).fetchone()
            known: dict[str, set[str]] = {"fingerprint": set(), "model": set()}
            first_seen = {}
            counts = {}
            for field, value, seen, samples in self._db.execute(known_sql, (target, *names)):
                known.setdefault(field, set()).add(value)
                first_seen[(field, value)] = parse_timestamp(seen)
                if field == "fingerprint":
                    counts[value] = samples
            # The latest check that learns says whether learning is over (it never restarts).
            last_learning = self._db.execute(
                "SELECT learning FROM checks WHERE target = ? AND learning IS NOT NULL"
                f"{only} ORDER BY id DESC LIMIT 1",
                (target, *names),
            ).fetchone()
        common: dict[str, Any] = {
            "known_fingerprints": frozenset(known["fingerprint"]),
            "known_models": frozenset(known["model"]),
            "first_seen": first_seen,
            "fingerprint_counts": counts,
            "learning_ended": last_learning is not None and last_learning[0] == 0,
        }
        if previous is None:
            return TargetFacts(**common)
        return TargetFacts(
            previous_fingerprints=frozenset(json.loads(previous[0])),
            previous_models=frozenset(json.loads(previous[1])),
            previous_headers={k: frozenset(v) for k, v in json.loads(previous[2]).items()},
            **common,
        )

    def append_check(
        self,
        check_id: str,
        checked_at: datetime,
        result: TargetResult,
        observations: Iterable[Observation],
        source: Source = Source.PROBE,
    ) -> None:
        """Record one target's check; call inside `write()` so the chain cannot fork."""
        with _errors(self.path):
            last = self._db.execute("SELECT hash FROM observations ORDER BY id DESC LIMIT 1")
            prev_hash = (last.fetchone() or (GENESIS_HASH,))[0]
            for observation in observations:
                row = _observation_row(check_id, observation, source, prev_hash)
                row["hash"] = prev_hash = chain_hash(row)
                columns = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                self._db.execute(
                    f"INSERT INTO observations ({columns}) VALUES ({marks})", tuple(row.values())
                )
                for field, value in (
                    ("fingerprint", observation.fingerprint),
                    ("model", observation.resolved_model),
                ):
                    if observation.ok and value is not None:
                        self._count_known(result.name, source, field, value, row["observed_at"])
            succeeded = bool(result.fingerprints or result.models)
            self._db.execute(
                "INSERT INTO checks (check_id, target, checked_at, status, fingerprints, models,"
                " headers, samples, errors, learning, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                ),
            )

    def _count_known(self, target: str, source: Source, field: str, value: str, at: str) -> None:
        """One more sample of a value: in the union of every source, and in its own source's."""
        self._db.execute(_COUNT_KNOWN, (target, field, value, at))
        self._db.execute(_COUNT_KNOWN_BY_SOURCE, (target, source.value, field, value, at))

    def count_observations(self, target: str | None = None) -> int:
        with _errors(self.path):
            if target is None:
                row = self._db.execute("SELECT count(*) FROM observations").fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM observations WHERE target = ?", (target,)
                ).fetchone()
            return int(row[0])


def _observation_row(
    check_id: str, obs: Observation, source: Source, prev_hash: str
) -> dict[str, Any]:
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
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


@contextmanager
def _errors(path: Path) -> Iterator[None]:
    """sqlite3 and OS errors -> HistoryError naming the file and what to do."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "not a database" in text:
            text = "the file is not an fpmon history (not a SQLite database)"
        elif "locked" in text or "busy" in text:
            text = "locked by another process; try again, or pass another --history"
        elif "readonly" in text:
            text = "the file is read-only: check its permissions or pass --history"
        raise HistoryError(f"history {path}: {text}") from exc
    except OSError as exc:
        raise HistoryError(f"history {path}: {exc.strerror or exc}") from exc
