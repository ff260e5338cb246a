"""Which events a check sets off: a pure function of its result and of the error streaks in
the history; and the sample events of `fpmon notify test`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from fp_monitor.config.history_url import HistoryLocation
from fp_monitor.config.settings import (
    Config,
)
from fp_monitor.domain.canary import CanaryMode, CanaryStatus, CanaryVerdict
from fp_monitor.domain.drift import with_verdict
from fp_monitor.domain.models import (
    TRAFFIC_STATUSES,
    Change,
    CheckResult,
    ErrorKind,
    Event,
    FailOn,
    ProbeError,
    Status,
    TargetResult,
)
from fp_monitor.store.history import History

STATUS_EVENTS = {
    Status.NEW: Event.NEW,
    Status.CHANGED: Event.CHANGED,
    Status.LEARNED: Event.LEARNED,
    Status.DRIFT: Event.DRIFT,
}


@dataclass(frozen=True)
class Notification:
    """One event of one target in one check."""

    event: Event
    target: TargetResult
    check_id: str
    checked_at: datetime
    history: HistoryLocation
    failed_checks: int = 0
    """error: the checks failed in a row so far; recovered: how many failed before it."""
    site: str | None = None
    """Where the check was made from (the target's `site`)."""


def events(
    result: CheckResult,
    failed_before: Mapping[str, int],
    error_after: Mapping[str, int],
    history: HistoryLocation,
    sites: Mapping[str, str | None] | None = None,
) -> list[Notification]:
    """The notifications one check calls for. `failed_before`: per target, the checks that
    failed in a row just before this one (from the history, so that separate `fpmon check`
    runs share the streak). `sites`: per target, where it was probed from."""
    notifications = []
    for target in result.targets:
        failed = failed_before.get(target.name, 0)
        threshold = error_after[target.name]
        found: list[tuple[Event, int]] = []
        if target.status is Status.ERROR:
            # Once per streak: when it reaches the threshold, not on every failure after that.
            if failed + 1 == threshold:
                found.append((Event.ERROR, failed + 1))
        else:
            # Only a streak that was notified is worth a `recovered`.
            if failed >= threshold:
                found.append((Event.RECOVERED, failed))
            if (event := STATUS_EVENTS.get(target.status)) is not None and target.news:
                found.append((event, 0))
        notifications += [
            Notification(
                event,
                target,
                result.check_id,
                result.checked_at,
                history,
                count,
                (sites or {}).get(target.name),
            )
            for event, count in found
        ]
    return notifications


def traffic_events(
    target: TargetResult,
    check_id: str,
    checked_at: datetime,
    history: HistoryLocation,
    site: str | None = None,
) -> list[Notification]:
    """The notifications of one recorded response of an application's traffic: only `new` and
    `learned` (TRAFFIC_STATUSES), and a `new` only when it is news. Not `changed`, `error` or
    `recovered`: an application's own requests say little of the backend's flaps and failures,
    so these stay the probes'."""
    if target.status not in TRAFFIC_STATUSES or not target.news:
        return []
    event = STATUS_EVENTS.get(target.status)
    if event is None:
        return []
    return [Notification(event, target, check_id, checked_at, history, site=site)]


def pending(history: History, config: Config, result: CheckResult) -> list[Notification]:
    """The notifications of a recorded check, its error streaks read from `history`."""
    if not config.notifiers or not result.recorded:
        return []  # a dry run sends nothing
    error_after = {t.name: t.error_after for t in config.targets}
    failed = {t.name: history.failed_before(t.name, result.check_id) for t in result.targets}
    sites = {t.name: t.site for t in config.targets}
    return events(result, failed, error_after, history.path, sites)


def sample(event: Event, history: HistoryLocation) -> Notification:
    """A realistic event for `fpmon notify test`, on a target named fpmon-test."""
    status, previous, now = _SAMPLES[event]
    model = ("gpt-4o-mini-2024-07-18",)
    moved = bool(now) and not set(now) <= set(previous)
    target = TargetResult(
        name="fpmon-test",
        status=status,
        unexpected=status is Status.NEW,
        fingerprints=now,
        models=model if now else (),
        previous=previous,
        previous_models=model,
        known=tuple(sorted({*previous, *now})),
        known_models=model,
        samples=3,
        errors=() if now else (ProbeError(ErrorKind.TIMEOUT, None, "no answer within 30s"),) * 3,
        latency_ms=412.0 if now else None,
        changes=(Change("fpmon-test", "fingerprint", previous, now, None),) if moved else (),
    )
    if status is Status.DRIFT:  # as a check makes it: known values, a verdict on top
        target = with_verdict(replace(target, status=Status.SAME), _SAMPLE_DRIFT, FailOn.NEW)
    failed = 3 if event in (Event.ERROR, Event.RECOVERED) else 0
    return Notification(event, target, "0" * 32, datetime.now(UTC), history, failed)


_OLD, _OTHER, _NEW = "fp_0ba0d124f1", "fp_560af6e559", "fp_e9917c3b55"
_SAMPLE_DRIFT = CanaryVerdict(
    mode=CanaryMode.LOGPROBS,
    status=CanaryStatus.DRIFT,
    signatures=("5d41402abc",),
    known=("0cc175b9c0", "92eb5ffee6"),
    p_value=3.2e-12,
    distance=0.412,
    noise=0.021,
    samples=3,
    drifted="5d41402abc",
)


# event -> (status, previous fingerprints, fingerprints now) of the sample
_SAMPLES: dict[Event, tuple[Status, tuple[str, ...], tuple[str, ...]]] = {
    Event.NEW: (Status.NEW, (_OLD, _OTHER), (_NEW,)),
    Event.CHANGED: (Status.CHANGED, (_OLD,), (_OTHER,)),
    Event.LEARNED: (Status.LEARNED, (_OLD,), (_NEW,)),
    Event.DRIFT: (Status.DRIFT, (_OLD, _OTHER), (_OLD, _OTHER)),
    Event.ERROR: (Status.ERROR, (_OLD, _OTHER), ()),
    Event.RECOVERED: (Status.SAME, (_OLD, _OTHER), (_OLD, _OTHER)),
}
