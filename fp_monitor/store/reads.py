"""The history's reads behind `fpmon history`, `stats`, the metrics and the watch: targets,
checks and observations in a time window, counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from fp_monitor.domain.models import (
    CheckRecord,
    Recorded,
    Sample,
    Source,
    Status,
    Window,
    fingerprint_token,
)
from fp_monitor.store.connection import Connected, history_errors
from fp_monitor.store.dialect import dict_rows
from fp_monitor.store.rows import (
    TRAFFIC_STATUSES_SQL,
    observation_from_row,
    optional_set,
    parse_timestamp,
    window_clause,
)


class Reads(Connected):
    """What `history`, `stats`, the metrics and the watch read."""

    def last_check_row(self) -> int:
        """The row id of the latest check (0 when there is none)."""
        with history_errors(self.path):
            return int(self._db.execute("SELECT coalesce(max(id), 0) FROM checks").fetchone()[0])

    def traffic_changes(self, after: int) -> tuple[list[tuple[str, Status, datetime]], int]:
        """The traffic checks after check row `after` with a status of TRAFFIC_STATUSES, as
        (target, status, checked_at), and the last check row they go up to (the next
        `after`)."""
        last = self.last_check_row()  # first: a check written meanwhile is read next time
        with history_errors(self.path):
            rows = self._db.execute(
                "SELECT target, status, checked_at FROM checks WHERE id > ? AND id <= ? "
                f"AND source = 'traffic' AND status IN ({TRAFFIC_STATUSES_SQL}) ORDER BY id",
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
        with history_errors(self.path):
            if target is None:
                row = self._db.execute("SELECT count(*) FROM observations").fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM observations WHERE target = ?", (target,)
                ).fetchone()
            return int(row[0])

    def targets(self) -> list[str]:
        """Every target with a check in the history, sorted."""
        with history_errors(self.path):
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
        where, params = window_clause("checked_at", window)
        with history_errors(self.path):
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
                    fingerprints=self._decode(row, "fingerprints", optional_set, fingerprints),
                    models=self._decode(row, "models", optional_set, models),
                    samples=samples,
                    errors=errors,
                )

    def observations(self, target: str | None, window: Window, limit: int) -> list[Recorded]:
        """The newest `limit` observations in `window` (of `target`, or of every target)."""
        where, params = window_clause("observed_at", window)
        if target is not None:
            where += " AND target = ?"
            params.append(target)
        with history_errors(self.path):
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
        where, params = window_clause("observed_at", window)
        with history_errors(self.path):
            cursor = self._db.execute(
                "SELECT check_id, fingerprint, fingerprint_state, resolved_model, error_kind,"
                f" latency_ms, site FROM observations WHERE target = ?{where}",
                (target, *params),
            )
            return [
                Sample(check_id, fingerprint_token(fp, state), model, kind, latency, site)
                for check_id, fp, state, model, kind, latency, site in cursor
            ]
