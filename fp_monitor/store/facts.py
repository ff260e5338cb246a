"""The facts detection reads from the history: the known values (and the baseline of
those no longer in the chain), the previous check, a target's state for metrics."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from fp_monitor.domain.models import (
    ALL_SOURCES,
    CHANGE_STATUSES,
    Announced,
    Source,
    Status,
    TargetFacts,
    TargetState,
    fingerprint_token,
)
from fp_monitor.store.connection import Connected, history_errors
from fp_monitor.store.rows import (
    FINGERPRINT_TOKEN,
    TRAFFIC_STATUSES_SQL,
    header_sets,
    parse_timestamp,
    value_set,
)


class Facts(Connected):
    """The known values and the previous checks detection compares a check with."""

    def derived_known(
        self, through_id: int = 2**63 - 1, *, by_source: bool = True
    ) -> dict[KnownKey, KnownCount]:
        """(target, source, field, value) -> (first seen, samples) as the chained records up
        to `through_id` give them, every successful observation counting its values; without
        `by_source`, (target, field, value) over every source."""
        group = "target, source" if by_source else "target"
        found: dict[KnownKey, KnownCount] = {}
        for field, column in (("fingerprint", FINGERPRINT_TOKEN), ("model", "resolved_model")):
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
        with history_errors(self.path):
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
            previous_fingerprints=self._decode(check, "fingerprints", value_set, previous[1]),
            previous_models=self._decode(check, "models", value_set, previous[2]),
            previous_headers=self._decode(check, "headers", header_sets, previous[3]),
            previous_at=self._decode(check, "checked_at", parse_timestamp, previous[4]),
            **common,
        )

    def _announced(self, row: tuple[Any, ...]) -> Announced:
        where = f"check row {row[0]}"
        return Announced(
            fingerprints=self._decode(where, "fingerprints", value_set, row[1]),
            models=self._decode(where, "models", value_set, row[2]),
            at=self._decode(where, "checked_at", parse_timestamp, row[3]),
        )

    def failed_before(self, target: str, check_id: str) -> int:
        """How many checks of `target` failed (status error) in a row just before `check_id`."""
        with history_errors(self.path):
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
        with history_errors(self.path):
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
        with history_errors(self.path):
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
                f"AND (source = 'probe' OR status IN ({TRAFFIC_STATUSES_SQL})) GROUP BY status",
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


KnownKey = tuple[str, ...]
"""(target, source, field, value) of a known value; (target, field, value) of every source."""
KnownCount = tuple[str, int]
"""(first seen, as stored, and samples) of a known value."""


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


def _qualified(columns: str) -> str:
    """`target, source` -> `k.target, k.source`."""
    return ", ".join(f"k.{column.strip()}" for column in columns.split(","))
