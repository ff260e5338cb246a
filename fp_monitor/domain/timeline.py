"""The timeline of a target: consecutive checks that served the same fingerprints and models,
collapsed into runs. Pure: checks in, runs out."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from fp_monitor.domain.models import CheckRecord


@dataclass(frozen=True)
class Run:
    """Consecutive checks of one target with equal fingerprint and model sets.

    Checks in which every sample failed do not end a run: they count in the run that was
    being served when they happened (before the first success in view, in a run with no
    values)."""

    target: str
    fingerprints: tuple[str, ...]
    models: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    """The first and last check that served these values (or failed, in a run with none)."""
    checks: int
    observations: int
    """Samples that returned these values."""
    errors: int
    """Samples that failed during the run."""


def runs_newest_first(checks: Iterable[CheckRecord]) -> Iterator[Run]:
    """The runs of one target's checks, given and returned newest first; lazy, so that reading
    the newest runs reads only their checks."""
    current: list[CheckRecord] = []  # the run being collected, newest check first
    values = _values(None)  # what the run being collected served
    failed: list[CheckRecord] = []  # all-failed checks newer than the next success
    for check in checks:
        if not check.succeeded:
            failed.append(check)
            continue
        if current and _values(check) != values:
            yield _run(current)
            current = []
        values = _values(check)
        current += failed
        current.append(check)
        failed = []
    if current:
        yield _run(current)
    if failed:
        yield _run(failed)


def newest_runs(streams: Iterable[Iterator[Run]], limit: int) -> list[Run]:
    """The `limit` most recently seen runs over several targets' newest-first streams, oldest
    first (the order a timeline reads in)."""
    merged = heapq.merge(*streams, key=lambda run: run.last_seen, reverse=True)
    return list(itertools.islice(merged, limit))[::-1]


def _values(check: CheckRecord | None) -> tuple[frozenset[str], frozenset[str]]:
    if check is None:
        return frozenset(), frozenset()
    return check.fingerprints or frozenset(), check.models or frozenset()


def _run(checks: list[CheckRecord]) -> Run:
    served = [c for c in checks if c.succeeded] or checks
    fingerprints, models = _values(served[0])
    return Run(
        target=checks[0].target,
        fingerprints=tuple(sorted(fingerprints)),
        models=tuple(sorted(models)),
        first_seen=served[-1].checked_at,
        last_seen=served[0].checked_at,
        checks=len(checks),
        observations=sum(c.samples - c.errors for c in checks if c.succeeded),
        errors=sum(c.errors for c in checks),
    )
