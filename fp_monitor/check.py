"""`fpmon check` as one core function: probe, detect inside the history's write transaction,
record, and derive the exit code."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fp_monitor.config import Config, Target
from fp_monitor.detect import detect
from fp_monitor.errors import ConfigError, ExitCode, most_severe
from fp_monitor.history import History
from fp_monitor.lockfile import read_lock
from fp_monitor.models import (
    CheckResult,
    FailOn,
    LockEntry,
    Observation,
    Status,
    TargetFacts,
    TargetResult,
)
from fp_monitor.probe import DEFAULT_CONCURRENCY, probe


@dataclass(frozen=True)
class CheckOptions:
    samples: int | None = None
    fail_on: FailOn = FailOn.NEW
    exit_zero: bool = False
    record: bool = True
    concurrency: int = DEFAULT_CONCURRENCY
    locked: bool = False
    """A target without a lock entry is unexpected (the CI gate's strict mode)."""


def run_check(config: Config, names: Sequence[str], options: CheckOptions) -> CheckResult:
    """Probe the named targets (all enabled when none), record every observation, detect."""
    targets = config.select(list(names))
    if not targets:
        raise ConfigError("every target is disabled (enabled = false): nothing to check")
    lock = read_lock(config.baseline)  # a broken lock stops everything before any request
    # The history is opened before any request: when it cannot be used, nothing is spent.
    if options.record:
        history: History | None = History.open(config.history)
    else:
        history = History.open_readonly(config.history)
    try:
        observations = probe(targets, samples=options.samples, concurrency=options.concurrency)
        checked_at = datetime.now(UTC)
        check_id = uuid.uuid4().hex
        if options.record and history is not None:
            # Detection reads the facts inside the transaction that records its result, so
            # two processes checking one target at once see each other's values.
            with history.write():
                results = _detect_all(history, lock, targets, observations, options)
                for result, target_observations in zip(results, observations, strict=True):
                    history.append_check(check_id, checked_at, result, target_observations)
        else:
            results = _detect_all(history, lock, targets, observations, options)
    finally:
        if history is not None:
            history.close()
    return CheckResult(
        check_id=check_id,
        checked_at=checked_at,
        targets=tuple(results),
        exit_code=exit_code(results, exit_zero=options.exit_zero),
        recorded=options.record,
    )


def _detect_all(
    history: History | None,
    lock: Mapping[str, LockEntry],
    targets: Sequence[Target],
    observations: Sequence[Sequence[Observation]],
    options: CheckOptions,
) -> list[TargetResult]:
    return [
        detect(
            target.name,
            target_observations,
            history.facts(target.name) if history else TargetFacts(),
            samples=options.samples or target.samples,
            expect=target.expect,
            lock=lock.get(target.name),
            locked=options.locked,
            fail_on=options.fail_on,
        )
        for target, target_observations in zip(targets, observations, strict=True)
    ]


def exit_code(results: Sequence[TargetResult], *, exit_zero: bool) -> ExitCode:
    codes = [ExitCode.UNEXPECTED for r in results if r.unexpected]
    codes += [ExitCode.PROBE_FAILED for r in results if r.status is Status.ERROR]
    code = most_severe(codes)
    if exit_zero and code in (ExitCode.UNEXPECTED, ExitCode.PROBE_FAILED):
        return ExitCode.OK
    return code
