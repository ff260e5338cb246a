"""What a target's history says, in figures: the values seen, the set served now and in what
shares, how often the backend changes, errors and latency, and a timeline of each fingerprint.
Pure: checks and samples in, a frozen record out."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from fp_monitor.domain.drift import CanaryStats
from fp_monitor.domain.fingerprints import (
    BUILTIN_GRAMMARS,
    Grammar,
    PartsGroup,
    group_by_parts,
    no_signal,
)
from fp_monitor.domain.learning import Trust
from fp_monitor.domain.models import CheckRecord, Sample, Status

SERVED_CHECKS = 10
"""'Served now' is the values of the samples of this many latest successful checks."""
TIMELINE_CELLS = 60


@dataclass(frozen=True)
class Share:
    value: str
    share: float
    """Of the successful samples counted (0 to 1)."""


class Cell(Enum):
    SERVED = "served"
    """A successful check in this stretch of time returned the value."""
    NOT_SERVED = "not_served"
    """The target was checked successfully in this stretch, without the value."""
    NO_CHECK = "no_check"
    """No successful check in this stretch."""


@dataclass(frozen=True)
class TimelineRow:
    value: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Timeline:
    """One row per fingerprint (in order of appearance), time along the row."""

    start: datetime
    end: datetime
    rows: tuple[TimelineRow, ...]


@dataclass(frozen=True)
class SiteShares:
    """What one site is served now: the shares of its own latest successful checks."""

    site: str | None
    """None: records made before observations had a site."""
    samples: int
    """Successful samples counted (of the site's latest SERVED_CHECKS successful checks)."""
    fingerprints: tuple[Share, ...]
    models: tuple[Share, ...]
    only_here: tuple[str, ...]
    """Fingerprints served now at this site and at no other: one region on another backend."""


@dataclass(frozen=True)
class TargetStats:
    """One target's figures over a time range. Extend it with new fields (with defaults)."""

    target: str
    start: datetime
    end: datetime
    checks: int
    successful_checks: int
    observations: int
    fingerprints: tuple[str, ...]
    """Distinct values seen in the range, in order of appearance (models likewise)."""
    models: tuple[str, ...]
    served_checks: int
    """How many latest successful checks the shares come from (up to SERVED_CHECKS)."""
    served_fingerprints: tuple[Share, ...]
    served_models: tuple[Share, ...]
    new_events: int
    median_between_new: timedelta | None
    """None with fewer than two `new` events."""
    changed: int
    flap_rate: float | None
    """`changed` checks among the successful ones; None without a successful check."""
    errors: int
    error_rate: float | None
    """Failed samples among all samples; None without a sample."""
    errors_by_kind: tuple[tuple[str, int], ...]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    timeline: Timeline
    trust: Trust | None = None
    """Learning and the trust in the known set, over the target's whole history."""
    served_groups: tuple[PartsGroup, ...] = ()
    """The served fingerprints that decode, grouped by their parts (see `fingerprints`)."""
    no_signal: str | None = None
    """Why the fingerprints served now carry no signal, when they carry none."""
    sites: tuple[SiteShares, ...] = ()
    """What each site is served now (sites in name order, records without one last)."""
    canary: CanaryStats | None = None
    """The behaviour canary's verdicts in the range; None when it never judged."""


def target_stats(
    target: str,
    checks: Sequence[CheckRecord],
    samples: Sequence[Sample],
    *,
    start: datetime,
    end: datetime,
    cells: int = TIMELINE_CELLS,
    trust: Trust | None = None,
    grammars: Sequence[Grammar] = BUILTIN_GRAMMARS,
) -> TargetStats:
    """The figures of `target` from its checks (oldest first) and samples in [start, end]."""
    succeeded = [c for c in checks if c.succeeded]
    latest = {c.check_id for c in succeeded[-SERVED_CHECKS:]}
    served = [s for s in samples if s.check_id in latest and s.error_kind is None]
    news = [c.checked_at for c in checks if c.status == Status.NEW.value]
    failed = Counter(s.error_kind for s in samples if s.error_kind is not None)
    latencies = sorted(
        s.latency_ms for s in samples if s.error_kind is None and s.latency_ms is not None
    )
    changed = sum(1 for c in succeeded if c.status == Status.CHANGED.value)
    served_fingerprints = _shares(s.fingerprint for s in served)
    return TargetStats(
        target=target,
        start=start,
        end=end,
        checks=len(checks),
        successful_checks=len(succeeded),
        observations=len(samples),
        fingerprints=_in_order_of_appearance(c.fingerprints or () for c in succeeded),
        models=_in_order_of_appearance(c.models or () for c in succeeded),
        served_checks=len(latest),
        served_fingerprints=served_fingerprints,
        served_models=_shares(s.model for s in served),
        new_events=len(news),
        median_between_new=_median_gap(news),
        changed=changed,
        flap_rate=changed / len(succeeded) if succeeded else None,
        errors=sum(failed.values()),
        error_rate=sum(failed.values()) / len(samples) if samples else None,
        errors_by_kind=tuple(sorted(failed.items(), key=lambda kv: (-kv[1], kv[0]))),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        timeline=timeline(succeeded, start, end, cells),
        trust=trust,
        served_groups=group_by_parts(((s.value, s.share) for s in served_fingerprints), grammars),
        no_signal=no_signal(s.value for s in served_fingerprints),
        sites=site_shares(checks, samples),
    )


def site_shares(checks: Sequence[CheckRecord], samples: Sequence[Sample]) -> tuple[SiteShares, ...]:
    """Per site, the shares of the successful samples of its latest SERVED_CHECKS successful
    checks (`checks` oldest first): each site's "served now", even when another site checks
    more often."""
    order = {c.check_id: i for i, c in enumerate(checks)}
    succeeded = [s for s in samples if s.error_kind is None]
    by_site: dict[str | None, list[Sample]] = {}
    for sample in succeeded:
        by_site.setdefault(sample.site, []).append(sample)
    served: dict[str | None, list[Sample]] = {}
    for site, found in by_site.items():
        latest = sorted({s.check_id for s in found}, key=lambda c: order.get(c, -1))
        kept = set(latest[-SERVED_CHECKS:])
        served[site] = [s for s in found if s.check_id in kept]
    values = {site: {s.fingerprint for s in found} for site, found in served.items()}
    return tuple(
        SiteShares(
            site=site,
            samples=len(found),
            fingerprints=_shares(s.fingerprint for s in found),
            models=_shares(s.model for s in found),
            only_here=tuple(
                sorted(
                    v
                    for v in values[site]
                    if v is not None
                    and len(values) > 1
                    and not any(v in other for o, other in values.items() if o != site)
                )
            ),
        )
        for site, found in sorted(served.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    )


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def timeline(checks: Sequence[CheckRecord], start: datetime, end: datetime, cells: int) -> Timeline:
    """Split [start, end] into `cells` equal stretches; mark where each fingerprint was served."""
    span = max((end - start).total_seconds(), 1e-6)
    served: dict[str, set[int]] = {}
    checked: set[int] = set()
    for check in checks:
        offset = (check.checked_at - start).total_seconds()
        cell = min(cells - 1, max(0, int(offset / span * cells)))
        checked.add(cell)
        for value in sorted(check.fingerprints or ()):
            served.setdefault(value, set()).add(cell)
    rows = tuple(
        TimelineRow(
            value,
            tuple(
                Cell.SERVED if i in where else Cell.NOT_SERVED if i in checked else Cell.NO_CHECK
                for i in range(cells)
            ),
        )
        for value, where in served.items()
    )
    return Timeline(start, end, rows)


def _in_order_of_appearance(groups: Iterable[Iterable[str]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        seen.update(dict.fromkeys(sorted(group)))
    return tuple(seen)


def _shares(values: Iterable[str | None]) -> tuple[Share, ...]:
    counts = Counter(v for v in values if v is not None)
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(Share(value, count / total) for value, count in ranked)


def _median_gap(moments: Sequence[datetime]) -> timedelta | None:
    if len(moments) < 2:
        return None
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(moments)]
    return timedelta(seconds=statistics.median(gaps))
