"""The queries behind `fpmon report`: samples counted per time bucket and value, checks counted
per status, the change events with the check before each, and the learning phase.

SQLite does the counting, from the two indexes of migration 0011 alone (`observations_report`,
`checks_report`), never reading the rows: so a report over a million observations takes
seconds. The queries name them (INDEXED BY): without statistics (fpmon never runs ANALYZE)
SQLite would pick the (target, source, time) indexes and read every row for the rest. On
PostgreSQL the same queries run without the hint (History.index_hint), the planner choosing
from its statistics, and the time bucket comes from PostgreSQL's date functions
(History.epoch_seconds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from fp_monitor.domain.models import (
    CHANGE_STATUSES,
    LockEntry,
    Source,
    Status,
    Window,
    fingerprint_token,
)
from fp_monitor.domain.report import (
    Band,
    BandKind,
    Buckets,
    ChangeEvent,
    LearningPhase,
    ServedSets,
    check_diff,
)
from fp_monitor.store.canary import canary_verdicts
from fp_monitor.store.history import History
from fp_monitor.store.rows import parse_timestamp, window_clause

_CHANGE_STATUSES = tuple(status.value for status in CHANGE_STATUSES)
_IN_CHANGE_STATUSES = f"status IN ({', '.join('?' for _ in _CHANGE_STATUSES)})"


def first_observed(history: History, target: str, window: Window) -> datetime | None:
    """The time of the target's first observation in `window`."""
    where, params = window_clause("observed_at", window)
    rows = history.fetch_all(
        f"SELECT min(observed_at) FROM observations WHERE target = ?{where}",
        (target, *params),
    )
    return parse_timestamp(rows[0][0]) if rows[0][0] is not None else None


@dataclass(frozen=True)
class SampleCounts:
    ok: tuple[int, ...]
    """Successful samples per bucket."""
    bands: tuple[Band, ...]


def sample_counts(
    history: History, target: str, window: Window, buckets: Buckets, lock: LockEntry | None
) -> SampleCounts:
    """Per bucket: the successful samples of each fingerprint and resolved model, and the
    failed samples of each error kind. Bands come by kind, then in order of appearance."""
    where, params = window_clause("observed_at", window)
    start = int(buckets.start.timestamp())
    rows = history.fetch_all(
        f"SELECT ({history.epoch_seconds('observed_at')} - ?) / ? AS bucket, fingerprint,"
        " fingerprint_state, resolved_model, error_kind, count(*)"
        f" FROM observations{history.index_hint('observations_report')}"
        f" WHERE target = ?{where}"
        " GROUP BY bucket, fingerprint, fingerprint_state, resolved_model, error_kind",
        (start, buckets.size, target, *params),
    )
    ok = [0] * buckets.count
    counts: dict[tuple[BandKind, str], list[int]] = {}

    def add(kind: BandKind, value: str, bucket: int, count: int) -> None:
        band = counts.get((kind, value))
        if band is None:  # not setdefault: it would build a list of every bucket per row
            band = counts[kind, value] = [0] * buckets.count
        band[bucket] += count

    for bucket, fingerprint, state, model, error_kind, count in rows:
        # A sample recorded after the range's end (a clock that jumped) counts in the last one.
        index = min(max(bucket, 0), buckets.count - 1)
        if error_kind is not None:
            add(BandKind.ERROR, error_kind, index, count)
            continue
        ok[index] += count
        token = fingerprint_token(fingerprint, state)
        if token is not None:
            add(BandKind.FINGERPRINT, token, index, count)
        if model is not None:
            add(BandKind.MODEL, model, index, count)
    for bucket, signatures in _signature_matches(history, target, window, buckets):
        for signature in signatures:
            add(BandKind.SIGNATURE, signature, bucket, 1)
    kinds = list(BandKind)
    ordered = sorted(
        counts.items(),
        key=lambda item: (kinds.index(item[0][0]), _first(item[1]), item[0][1]),
    )
    return SampleCounts(
        tuple(ok),
        tuple(
            Band(kind, value, tuple(values), _locked(kind, value, lock))
            for (kind, value), values in ordered
        ),
    )


def _signature_matches(
    history: History, target: str, window: Window, buckets: Buckets
) -> list[tuple[int, list[str]]]:
    """(bucket, the behaviour signatures the check matched) of each check the canary judged:
    the history keeps a check's verdict, not which signature each sample matched, so a
    signature band counts checks, not samples."""
    found = []
    for checked_at, verdict in canary_verdicts(history, target, window):
        bucket = int((checked_at - buckets.start).total_seconds()) // buckets.size
        signatures = verdict.get("signatures")
        if isinstance(signatures, list):
            found.append((min(max(bucket, 0), buckets.count - 1), [str(s) for s in signatures]))
    return found


def _first(counts: list[int]) -> int:
    return next(i for i, count in enumerate(counts) if count)


def _locked(kind: BandKind, value: str, lock: LockEntry | None) -> bool:
    if lock is None:
        return False
    if kind is BandKind.FINGERPRINT:
        return value in lock.fingerprints
    if kind is BandKind.SIGNATURE:
        return any(signature.id == value for signature in lock.canary or ())
    return kind is BandKind.MODEL and value in lock.models


@dataclass(frozen=True)
class CheckCounts:
    checks: int
    successful: int
    new_events: int
    changes: int
    """Checks whose status moved the served set (CHANGE_STATUSES)."""
    latest_status: str | None
    last_change_at: datetime | None


def check_counts(history: History, target: str, window: Window) -> CheckCounts:
    """The target's checks in `window`: how many, how many succeeded, the `new` ones, the
    status of the latest and the time of the latest change."""
    where, params = window_clause("checked_at", window)
    per_status = history.fetch_all(
        "SELECT status, count(*), max(checked_at)"
        f" FROM checks{history.index_hint('checks_report')} WHERE target = ?{where}"
        " GROUP BY status",
        (target, *params),
    )
    latest = history.fetch_all(
        f"SELECT status FROM checks WHERE target = ?{where} ORDER BY checked_at DESC, id DESC"
        " LIMIT 1",
        (target, *params),
    )
    counts = {status: count for status, count, _ in per_status}
    changed = [at for status, _, at in per_status if status in _CHANGE_STATUSES]
    return CheckCounts(
        checks=sum(counts.values()),
        # A check has no successful sample exactly when its status is `error` (detection's
        # rule): counted from the index, without reading each check's values.
        successful=sum(counts.values()) - counts.get(Status.ERROR.value, 0),
        new_events=counts.get(Status.NEW.value, 0),
        changes=sum(counts.get(status, 0) for status in _CHANGE_STATUSES),
        latest_status=latest[0][0] if latest else None,
        last_change_at=parse_timestamp(max(changed)) if changed else None,
    )


def change_events(
    history: History, target: str, window: Window, limit: int
) -> tuple[ChangeEvent, ...]:
    """The newest `limit` checks in `window` whose status moved the served set, newest first,
    each with the diff against the successful check before it (check_counts counts them)."""
    where, params = window_clause("checked_at", window)
    # The newest ids first, from the index; then only those rows are read.
    newest = (
        f"SELECT id FROM checks{history.index_hint('checks_report')}"
        f" WHERE target = ? AND {_IN_CHANGE_STATUSES}{where}"
        " ORDER BY checked_at DESC, id DESC LIMIT ?"
    )
    rows = history.fetch_all(
        "SELECT id, checked_at, status, source, fingerprints, models, headers FROM checks"
        f" WHERE id IN ({newest}) ORDER BY checked_at DESC, id DESC",
        (target, *_CHANGE_STATUSES, *params, limit),
    )
    first_seen = {
        (field, value): parse_timestamp(at)
        for field, value, at in history.fetch_all(
            "SELECT field, value, first_seen FROM known_values WHERE target = ?",
            (target,),
        )
    }
    events = []
    for id_, checked_at, status, source, fingerprints, models, headers in rows:
        now = _served(fingerprints, models, headers)
        before = _previous(history, target, Source(source), checked_at, id_)
        events.append(
            ChangeEvent(
                parse_timestamp(checked_at),
                status,
                Source(source),
                check_diff(target, before, now, first_seen),
            )
        )
    return tuple(events)


def _previous(
    history: History, target: str, source: Source, checked_at: str, id_: int
) -> ServedSets | None:
    """The successful check a check was compared with: the one before it of its own source,
    else the one before it of any source (detection's rule, see History.facts)."""
    # `checked_at <= ?` on its own lets the (target[, source], checked_at) index start at the
    # check: inside the OR alone, the planner walked back from the newest check every time.
    earlier = (
        "SELECT fingerprints, models, headers FROM checks WHERE target = ?{}"
        " AND fingerprints IS NOT NULL AND checked_at <= ? AND (checked_at < ? OR id < ?)"
        " ORDER BY checked_at DESC, id DESC LIMIT 1"
    )
    order = (checked_at, checked_at, id_)
    row = history.fetch_all(earlier.format(" AND source = ?"), (target, source.value, *order)) or (
        history.fetch_all(earlier.format(""), (target, *order))
    )
    return _served(*row[0]) if row else None


def _served(fingerprints: str | None, models: str | None, headers: str | None) -> ServedSets:
    header_values: Mapping[str, list[str]] = json.loads(headers or "{}")
    return ServedSets(
        frozenset(json.loads(fingerprints or "[]")),
        frozenset(json.loads(models or "[]")),
        {name: frozenset(values) for name, values in header_values.items()},
    )


def learning_phase(history: History, target: str) -> LearningPhase | None:
    """From the target's first check that left it learning to the first later check that did
    not (learning ended, or a lock entry took over); None when it never learned."""
    started = history.fetch_all(
        "SELECT id, checked_at FROM checks WHERE target = ? AND learning = 1 ORDER BY id LIMIT 1",
        (target,),
    )
    if not started:
        return None
    start_id, start = started[0]
    ended = history.fetch_all(
        "SELECT checked_at FROM checks WHERE target = ? AND id > ?"
        " AND (learning IS NULL OR learning = 0) ORDER BY id LIMIT 1",
        (target, start_id),
    )
    return LearningPhase(parse_timestamp(start), parse_timestamp(ended[0][0]) if ended else None)
