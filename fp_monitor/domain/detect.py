"""Detection: a pure function of one target's new observations, its history facts and its lock
entry. No I/O, no clock: the same inputs always give the same result."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime

from fp_monitor.domain.models import (
    Change,
    FailOn,
    LockEntry,
    Observation,
    ProbeError,
    Status,
    TargetFacts,
    TargetResult,
)

FINGERPRINT = "fingerprint"
MODEL = "model"


def detect(
    name: str,
    observations: Sequence[Observation],
    facts: TargetFacts,
    *,
    samples: int,
    expect: frozenset[str] = frozenset(),
    lock: LockEntry | None = None,
    locked: bool = False,
    learning: bool = False,
    fail_on: FailOn = FailOn.NEW,
    remind: float | None = None,
    checked_at: datetime | None = None,
) -> TargetResult:
    """Classify one target's check (docs: Explanation, How detection decides). `learning`: the
    target is still learning its served set (decided from the state before this check), so a value
    outside the known set is `learned`, not `new`; a target with a lock entry never learns."""
    ok = [o for o in observations if o.ok]
    errors = tuple(
        ProbeError(o.error_kind, o.http_status, o.error_message or "")
        for o in observations
        if o.error_kind is not None
    )
    fingerprints = frozenset(o.fingerprint for o in ok if o.fingerprint is not None)
    models = frozenset(o.resolved_model for o in ok if o.resolved_model is not None)
    headers: dict[str, set[str]] = {}
    for observation in ok:
        for header, value in observation.headers.items():
            headers.setdefault(header, set()).add(value)

    if lock is not None:
        known, known_models = lock.fingerprints | expect, lock.models
    else:
        known, known_models = facts.known_fingerprints | expect, facts.known_models
    previous, previous_models = facts.previous_fingerprints, facts.previous_models
    if previous is None and lock is not None:
        previous, previous_models = lock.fingerprints, lock.models

    status = _status(
        bool(ok),
        fingerprints,
        models,
        previous,
        previous_models or frozenset(),
        known,
        known_models,
        has_lock=lock is not None,
        locked=locked,
        learning=learning and lock is None,
    )
    changes: list[Change] = []
    if ok and previous is not None:
        changes += _change(name, FINGERPRINT, previous, fingerprints, facts)
        changes += _change(name, MODEL, previous_models or frozenset(), models, facts)
        for header, values in sorted(headers.items()):
            before = facts.previous_headers.get(header, frozenset())
            changes += _change(name, f"header {header}", before, frozenset(values), facts)
    latencies = [o.latency_ms for o in ok if o.latency_ms is not None]
    unexpected_values = {(FINGERPRINT, v) for v in fingerprints - known} | {
        (MODEL, v) for v in models - known_models
    }
    if locked and lock is None:  # nothing is accepted: every value is the news
        unexpected_values = {(FINGERPRINT, v) for v in fingerprints} | {(MODEL, v) for v in models}
    return TargetResult(
        name=name,
        status=status,
        unexpected=_unexpected(status, fail_on),
        fingerprints=tuple(sorted(fingerprints)),
        models=tuple(sorted(models)),
        previous=None if previous is None else tuple(sorted(previous)),
        previous_models=None if previous_models is None else tuple(sorted(previous_models)),
        known=tuple(sorted(known)),
        known_models=tuple(sorted(known_models)),
        samples=samples,
        errors=errors,
        latency_ms=statistics.median(latencies) if latencies else None,
        changes=tuple(changes),
        headers={h: tuple(sorted(v)) for h, v in sorted(headers.items())},
        in_lock=lock is not None,
        news=_news(unexpected_values, facts, lock, remind, checked_at),
    )


def _news(
    values: set[tuple[str, str]],
    facts: TargetFacts,
    lock: LockEntry | None,
    remind: float | None,
    checked_at: datetime | None,
) -> bool:
    """Whether the unexpected `values` are news. Not when the target's latest `new` check held
    them all and the lock was not accepted since (each check of an unaccepted value is `new`:
    one notification is enough), unless `remind` seconds (a multiple of them) have passed since
    the last of them was first recorded, between the previous check and this one."""
    last = facts.last_new
    if last is None or not values:
        return True
    if lock is not None and lock.accepted_at is not None and lock.accepted_at > last.at:
        return True
    announced_values = {(FINGERPRINT, v) for v in last.fingerprints} | {
        (MODEL, v) for v in last.models
    }
    if not values <= announced_values:
        return True
    seen = [facts.first_seen.get(value) for value in values]
    if remind is None or checked_at is None or facts.previous_at is None or None in seen:
        return False
    announced = max(at for at in seen if at is not None)
    periods_then = (facts.previous_at - announced).total_seconds() // remind
    return (checked_at - announced).total_seconds() // remind > periods_then


def _status(
    succeeded: bool,
    fingerprints: frozenset[str],
    models: frozenset[str],
    previous: frozenset[str] | None,
    previous_models: frozenset[str],
    known: frozenset[str],
    known_models: frozenset[str],
    *,
    has_lock: bool,
    locked: bool,
    learning: bool,
) -> Status:
    if not succeeded:
        return Status.ERROR
    if locked and not has_lock:
        return Status.NEW
    if previous is None:
        return Status.FIRST
    if fingerprints - known or models - known_models:
        return Status.LEARNED if learning else Status.NEW
    if fingerprints <= previous and models <= previous_models:
        return Status.SAME
    return Status.CHANGED


def _unexpected(status: Status, fail_on: FailOn) -> bool:
    if status in (Status.NEW, Status.DRIFT):
        return fail_on is not FailOn.NEVER
    if status is Status.CHANGED:
        return fail_on is FailOn.CHANGE
    return False


def _change(
    name: str, field: str, before: frozenset[str], now: frozenset[str], facts: TargetFacts
) -> list[Change]:
    """A diff row when `now` holds a value that `before` did not (a subset is no change)."""
    if now <= before:
        return []
    seen = [facts.first_seen[(field, v)] for v in before if (field, v) in facts.first_seen]
    return [Change(name, field, tuple(sorted(before)), tuple(sorted(now)), min(seen, default=None))]
