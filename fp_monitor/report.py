"""`fpmon report` as core functions: read what the picture needs from the history (counts per
time bucket that SQLite aggregates, never every row), walk the chain for the audit block, and
write one self-contained HTML file."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from fp_monitor import __version__
from fp_monitor.config.settings import Config
from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.models import LockEntry, Window
from fp_monitor.domain.report import (
    CHANGE_LIMIT,
    Buckets,
    ChainState,
    Report,
    TargetReport,
    choose_buckets,
)
from fp_monitor.fileio import write_atomic
from fp_monitor.output.html_report import render_report
from fp_monitor.reading import open_history, targets
from fp_monitor.store.history import History
from fp_monitor.store.lockfile import read_lock
from fp_monitor.store.report_queries import (
    change_events,
    check_counts,
    first_observed,
    learning_phase,
    sample_counts,
)


def build_report(
    config: Config, names: Sequence[str], window: Window, now: datetime, *, verify: bool = True
) -> Report:
    """The report of the named targets (every target in the history when none) in `window`;
    `verify`: walk the whole chain for the audit block (linear in the history's size)."""
    lock = read_lock(config.baseline)
    with open_history(config.history) as history, history.snapshot():
        chosen = _chosen(history, names)
        first = {name: first_observed(history, name, window) for name in chosen}
        active = [name for name in chosen if first[name] is not None]
        start = window.since or min((first[name] or now for name in active), default=now)
        buckets = choose_buckets(start, max(window.until or now, start))
        reports = tuple(_target(history, name, window, buckets, lock.get(name)) for name in active)
        return Report(
            generated_at=now,
            version=__version__,
            buckets=buckets,
            since=window.since,
            until=window.until,
            sources=window.sources,
            targets=reports,
            idle=tuple(name for name in chosen if first[name] is None),
            records=history.count_observations(),
            chain=_chain(history) if verify else None,
        )


def _chosen(history: History, names: Sequence[str]) -> list[str]:
    if not names:
        return targets(history, None)
    # Each name must be in the history (a ConfigError naming the closest one otherwise).
    return list(dict.fromkeys(name for named in names for name in targets(history, named)))


def _target(
    history: History, name: str, window: Window, buckets: Buckets, lock: LockEntry | None
) -> TargetReport:
    counts = sample_counts(history, name, window, buckets, lock)
    checks = check_counts(history, name, window)
    return TargetReport(
        name=name,
        status=checks.latest_status,
        checks=checks.checks,
        successful_checks=checks.successful,
        new_events=checks.new_events,
        last_change_at=checks.last_change_at,
        ok=counts.ok,
        bands=counts.bands,
        changes=change_events(history, name, window, CHANGE_LIMIT),
        change_count=checks.changes,
        learning=learning_phase(history, name),
        lock=lock,
    )


def _chain(history: History) -> ChainState:
    """`fpmon verify`'s walk, inside the report's read transaction."""
    checkpoints = history.checkpoints()
    walked = history.walk_chain(checkpoints)
    return ChainState(
        records=walked.records,
        head_id=walked.head_id,
        head_hash=walked.head_hash,
        checkpoints=len(checkpoints),
        broken=walked.broken.describe() if walked.broken else None,
    )


def save_report(path: Path, report: Report) -> None:
    """Write the report's HTML atomically: a CI artifact is the old file or the new one."""
    try:
        write_atomic(path, render_report(report))
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report to {path}: {exc.strerror or exc} (pass another --output)"
        ) from None
