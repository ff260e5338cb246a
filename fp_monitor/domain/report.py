"""The picture of a history that `fpmon report` draws: the time buckets, what each bucket
served, the change events with the diff a check printed, the error periods, the learning phase
and the state of the chain. Pure records and the arithmetic on them: the store fills them from
SQL aggregates, the output draws them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from fp_monitor.domain.detect import FINGERPRINT, MODEL, _change
from fp_monitor.domain.models import Change, LockEntry, Source, TargetFacts

BUCKET_SIZES = (1, 5, 15, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
"""Seconds per bucket, the smallest that keeps a range within MAX_BUCKETS wins."""
MAX_BUCKETS = 400
"""Enough to show hourly checks over two weeks hour by hour, few enough that 10 targets over
90 days (6-hour buckets) stay well within the report's size budget."""
CHANGE_LIMIT = 100
"""Change events listed per target, newest first (a flapping target has thousands)."""


@dataclass(frozen=True)
class Buckets:
    """Equal stretches of time from `start` (aligned to a multiple of `size` since the epoch,
    so that 6-hour buckets start at 00:00, 06:00...)."""

    start: datetime
    size: int
    """Seconds."""
    count: int

    def edge(self, index: int) -> datetime:
        """The start of bucket `index` (`count`: the end of the last one)."""
        return self.start + timedelta(seconds=index * self.size)

    @property
    def end(self) -> datetime:
        return self.edge(self.count)


def choose_buckets(start: datetime, end: datetime) -> Buckets:
    """The finest bucket size that covers [start, end] in at most MAX_BUCKETS buckets."""
    first = math.floor(start.timestamp())
    last = max(math.ceil(end.timestamp()), first + 1)
    for size in BUCKET_SIZES:
        aligned = first - first % size
        count = math.ceil((last - aligned) / size)
        if count <= MAX_BUCKETS:
            break
    else:  # years of history: whole days per bucket
        size = math.ceil((last - first) / MAX_BUCKETS / 86400) * 86400
        aligned = first - first % size
        count = math.ceil((last - aligned) / size)
    return Buckets(datetime.fromtimestamp(aligned, UTC), size, count)


class BandKind(StrEnum):
    """What a band of the timeline shows, in the order the timeline stacks them."""

    FINGERPRINT = "fingerprint"
    MODEL = "model"
    SIGNATURE = "signature"
    """A behaviour signature of the canary, where the history has them; its counts are the
    checks that matched it (a check's verdict lists its signatures, not each sample's)."""
    ERROR = "error"
    """Failed samples of one error kind."""


@dataclass(frozen=True)
class Run:
    """Consecutive buckets in which a band had samples."""

    first: int
    last: int
    """Bucket indexes, both included."""
    samples: int


@dataclass(frozen=True)
class Band:
    """One value's samples in each bucket."""

    kind: BandKind
    value: str
    """A token (see models.NULL, ABSENT), or the error kind."""
    counts: tuple[int, ...]
    locked: bool = False
    """The value is in the target's lock entry."""

    @property
    def samples(self) -> int:
        return sum(self.counts)

    def runs(self) -> tuple[Run, ...]:
        return runs(self.counts)


def runs(counts: Sequence[int]) -> tuple[Run, ...]:
    found: list[Run] = []
    start, samples = -1, 0
    for index, count in enumerate((*counts, 0)):
        if count and start < 0:
            start, samples = index, 0
        if count:
            samples += count
        elif start >= 0:
            found.append(Run(start, index - 1, samples))
            start = -1
    return tuple(found)


@dataclass(frozen=True)
class ServedSets:
    """What one check served, as the checks table keeps it."""

    fingerprints: frozenset[str]
    models: frozenset[str]
    headers: Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class ChangeEvent:
    """A check whose status moved the served set, with the diff that check printed."""

    checked_at: datetime
    status: str
    source: Source
    changes: tuple[Change, ...]


def check_diff(
    target: str,
    before: ServedSets | None,
    now: ServedSets,
    first_seen: Mapping[tuple[str, str], datetime],
) -> tuple[Change, ...]:
    """The rows of the diff table a check printed: one per field that gained a value since the
    previous successful check (detection's own rule, so the report shows what the check did)."""
    if before is None:
        return ()
    facts = TargetFacts(first_seen=dict(first_seen))
    changes = [
        *_change(target, FINGERPRINT, before.fingerprints, now.fingerprints, facts),
        *_change(target, MODEL, before.models, now.models, facts),
    ]
    for header, values in sorted(now.headers.items()):
        earlier = before.headers.get(header, frozenset())
        changes += _change(target, f"header {header}", earlier, values, facts)
    return tuple(changes)


@dataclass(frozen=True)
class ErrorPeriod:
    """Consecutive buckets with failed samples."""

    start: datetime
    end: datetime
    failed: int
    kinds: tuple[tuple[str, int], ...]
    """Failed samples per error kind, most first."""


def error_periods(buckets: Buckets, errors: Sequence[Band]) -> tuple[ErrorPeriod, ...]:
    """The stretches in which samples failed, from the error bands (one per kind)."""
    total = [sum(band.counts[i] for band in errors) for i in range(buckets.count)]
    periods = []
    for run in runs(total):
        kinds = [(band.value, sum(band.counts[run.first : run.last + 1])) for band in errors]
        periods.append(
            ErrorPeriod(
                buckets.edge(run.first),
                buckets.edge(run.last + 1),
                run.samples,
                tuple(sorted(((k, n) for k, n in kinds if n), key=lambda kn: (-kn[1], kn[0]))),
            )
        )
    return tuple(periods)


@dataclass(frozen=True)
class LearningPhase:
    """From the target's first learning check to the check that ended learning (None: it is
    still learning)."""

    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class TargetReport:
    name: str
    status: str | None
    """The status of the latest check in the range."""
    checks: int
    successful_checks: int
    new_events: int
    last_change_at: datetime | None
    """The latest check in the range whose status moved the served set."""
    ok: tuple[int, ...]
    """Successful samples per bucket: what the shares are of."""
    bands: tuple[Band, ...]
    """By kind (BandKind order), each kind's values in order of appearance."""
    changes: tuple[ChangeEvent, ...]
    """The newest CHANGE_LIMIT change events, newest first."""
    change_count: int
    learning: LearningPhase | None
    lock: LockEntry | None

    def of(self, kind: BandKind) -> tuple[Band, ...]:
        return tuple(band for band in self.bands if band.kind is kind)

    @property
    def failed(self) -> int:
        return sum(band.samples for band in self.of(BandKind.ERROR))

    @property
    def observations(self) -> int:
        return sum(self.ok) + self.failed


@dataclass(frozen=True)
class ChainState:
    """What `fpmon verify` says about the whole history."""

    records: int
    head_id: int
    head_hash: str
    checkpoints: int
    broken: str | None
    """Where the chain breaks (None: intact)."""


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    version: str
    """The fpmon that made it."""
    buckets: Buckets
    since: datetime | None
    until: datetime | None
    sources: frozenset[Source]
    targets: tuple[TargetReport, ...]
    idle: tuple[str, ...]
    """Targets asked for that have no check in the range."""
    records: int
    """Observations in the whole history."""
    chain: ChainState | None
    """None when the chain was not verified for this report."""
