"""What follows a check, the same for `fpmon check` and each round of `fpmon watch`: record,
then read what notifications, metrics and CI reports need from the same open history, then
send the notifications. The traffic paths share its notification rules (`traffic_events`).

One history open per round: the check's transaction records and detects, and the reads that
follow (error streaks, served pairs, traffic since the last round) use the same connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from fp_monitor.check import CheckOptions, plan_check, run_check, run_plan
from fp_monitor.config.settings import Config, Target
from fp_monitor.domain.models import CheckResult
from fp_monitor.notify.dispatch import deliver
from fp_monitor.notify.events import Notification, pending
from fp_monitor.output.metrics import (
    Snapshot,
    advance,
    snapshot_of,
    with_traffic,
    write_textfile,
)
from fp_monitor.output.reports import publish
from fp_monitor.store.canary import with_canary_state
from fp_monitor.store.history import History
from fp_monitor.store.sites import samples_by_site


@dataclass(frozen=True)
class Reports:
    """The files and streams a check reports to besides its table (the CI reports)."""

    environ: Mapping[str, str]
    stdout: TextIO
    junit: Path | None = None
    metrics_file: Path | None = None


@dataclass(frozen=True)
class Round:
    result: CheckResult
    notifications: tuple[Notification, ...]
    """What the check calls for, to send once its history is closed (see `send`)."""
    metrics: Snapshot | None = None
    """The metrics after this check, when a snapshot was given to advance."""


def check_round(
    config: Config,
    names: Sequence[str],
    options: CheckOptions,
    *,
    reports: Reports | None = None,
    metrics: Snapshot | None = None,
) -> Round:
    """Check, record, and prepare all that follows, with the history opened once."""
    if not options.record:  # a dry run: nothing recorded, so nothing to notify or count
        result = run_check(config, names, options)
        if reports is not None:
            publish(result, junit=reports.junit, environ=reports.environ, stdout=reports.stdout)
        return Round(result, (), metrics)
    plan = plan_check(config, names, options)
    with History.open(config.history) as history:
        result = run_plan(plan, options, history)
        notifications = tuple(pending(history, config, result))
        if metrics is not None:
            served = {t.name: history.served(t.name, result.check_id) for t in result.targets}
            metrics = with_traffic_since(history, advance(metrics, result, served))
        if reports is not None and reports.metrics_file is not None:
            checked = config.select([t.name for t in result.targets])
            write_textfile(reports.metrics_file, read_metrics(history, checked))
    if reports is not None:
        publish(result, junit=reports.junit, environ=reports.environ, stdout=reports.stdout)
    return Round(result, notifications, metrics)


def send(config: Config, round_: Round) -> tuple[str, ...]:
    """Send a round's notifications; one line per notifier that failed. After the history is
    closed: a slow receiver holds no connection to it."""
    return tuple(deliver(config, round_.notifications))


def read_metrics(
    history: History, targets: Sequence[Target], interval: float | None = None
) -> Snapshot:
    """Where each target stands according to the history (reads every check of each once)."""
    with history.snapshot():  # the counts and the row they go up to, from one state
        states = {t.name: with_canary_state(history, t.name) for t in targets}
        last_row = history.last_check_row()
        samples = samples_by_site(history, [t.name for t in targets])
    return replace(snapshot_of(targets, states, last_row, interval), samples=samples)


def with_traffic_since(history: History, snapshot: Snapshot) -> Snapshot:
    """The snapshot with the traffic recorded since it was taken."""
    changes, last_row = history.traffic_changes(snapshot.traffic_after)
    samples = samples_by_site(history, [t.name for t in snapshot.targets])
    return replace(with_traffic(snapshot, changes, last_row), samples=samples)
