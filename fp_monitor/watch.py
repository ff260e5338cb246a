"""`fpmon watch`: the check round (see pipeline.py) on a schedule, with notifications and
Prometheus metrics.

Stopping: SIGTERM and SIGINT raise `Stop` in the main thread wherever it is, so a probe in
flight is abandoned at once (a write transaction it had begun rolls back) and every check
already committed stays. The watch then exits 0 on SIGTERM (how systemd stops a service) and
130 on SIGINT.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Protocol

from fp_monitor.check import CheckOptions
from fp_monitor.config.settings import Config
from fp_monitor.domain.errors import ExitCode, HistoryError, most_severe
from fp_monitor.domain.models import CheckResult
from fp_monitor.domain.text import plural
from fp_monitor.output.metrics import Snapshot, SnapshotCollector, serve
from fp_monitor.pipeline import check_round, read_metrics, send
from fp_monitor.stopping import on_stop
from fp_monitor.store.history import History


@dataclass(frozen=True, kw_only=True)
class WatchOptions:
    """The command line's flags (their defaults are the CLI's)."""

    every: float
    """Seconds from the start of one check to the start of the next."""
    count: int | None
    jitter: float
    """Each interval is stretched or shrunk by up to this share, so that many watchers
    started together do not hit a provider in step."""
    check: CheckOptions
    metrics_addr: str
    metrics_port: int | None


@dataclass(frozen=True)
class WatchStart:
    targets: tuple[str, ...]
    every: float
    metrics_url: str | None


@dataclass(frozen=True)
class WatchRound:
    number: int
    result: CheckResult
    failures: tuple[str, ...]
    """Notifiers that failed, one line each."""
    next_at: datetime | None
    """None after the last check of --count."""


@dataclass(frozen=True)
class WatchSummary:
    exit_code: ExitCode
    checks: int
    stopped_by: str | None = None
    """The signal that ended the watch (SIGTERM, SIGINT), if one did."""


class WatchObserver(Protocol):
    """What shows the watch: a live table on a terminal, plain lines when piped."""

    def started(self, start: WatchStart) -> None: ...

    def checked(self, round_: WatchRound) -> None: ...


class Stop(KeyboardInterrupt):
    """A stop signal. A KeyboardInterrupt, because asyncio lets that through wherever it is
    raised (it would log and swallow another exception raised inside one of its callbacks)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal = signal.Signals(signum)


def run_watch(
    config: Config, names: Sequence[str], options: WatchOptions, observer: WatchObserver
) -> WatchSummary:
    """Check the named targets (all enabled when none) every `options.every` until --count
    checks are done or a stop signal comes; a probe failure never stops the loop, a history
    that cannot be written does (HistoryError)."""
    targets = config.select(list(names))
    collector = SnapshotCollector(Snapshot(targets, {}, interval=options.every))
    checks, worst = 0, ExitCode.OK
    with _stop_signals():
        try:
            with _metrics_server(collector, options) as url:
                # Opened for writing before the first probe: an unusable history stops the
                # watch at once instead of after a round of requests.
                with History.open(config.history) as history:
                    collector.snapshot = read_metrics(history, targets, options.every)
                observer.started(WatchStart(tuple(t.name for t in targets), options.every, url))
                next_start = time.monotonic()
                while options.count is None or checks < options.count:
                    time.sleep(max(0.0, next_start - time.monotonic()))
                    started = time.monotonic()
                    round_ = check_round(config, names, options.check, metrics=collector.snapshot)
                    collector.snapshot = round_.metrics or collector.snapshot
                    # Counted once recorded: a stop during the notifications that follow must
                    # not say this check did not happen.
                    checks += 1
                    worst = most_severe([worst, ExitCode(round_.result.exit_code)])
                    failures = send(config, round_)
                    # Start to start: a slow check does not push every later one back.
                    next_start = started + jittered(options.every, options.jitter)
                    last = options.count is not None and checks >= options.count
                    next_at = None if last else _at(next_start)
                    observer.checked(WatchRound(checks, round_.result, failures, next_at))
        except Stop as stop:
            code = ExitCode.OK if stop.signal is signal.SIGTERM else ExitCode.INTERRUPTED
            return WatchSummary(code, checks, stop.signal.name)
        except HistoryError as exc:
            raise HistoryError(f"{exc}; the watch stopped after {plural(checks, 'check')}") from exc
    return WatchSummary(worst, checks)


@contextmanager
def _metrics_server(collector: SnapshotCollector, options: WatchOptions) -> Iterator[str | None]:
    """Serve /metrics while the watch runs (when --metrics-port is given); its URL."""
    if options.metrics_port is None:
        yield None
        return
    server, url = serve(collector, options.metrics_addr, options.metrics_port)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def jittered(every: float, jitter: float) -> float:
    return every * (1 + random.uniform(-jitter, jitter))


def _at(moment: float) -> datetime:
    """A time.monotonic() moment as wall-clock time."""
    return datetime.now(UTC) + timedelta(seconds=moment - time.monotonic())


@contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise Stop (once: a second signal lets the first one's cleanup end)."""
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise Stop(signum)

    with on_stop(handler):
        yield
