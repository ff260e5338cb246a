"""`fpmon history` and `fpmon stats` as core functions: open the history read-only, read what
the time range needs through the indexes, and hand it to the pure computations."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from fp_monitor.config.history_url import HistoryLocation
from fp_monitor.config.settings import Config, did_you_mean
from fp_monitor.domain.drift import canary_stats
from fp_monitor.domain.errors import ConfigError, HistoryError
from fp_monitor.domain.fingerprints import BUILTIN_GRAMMARS, Grammar
from fp_monitor.domain.learning import trust
from fp_monitor.domain.models import ALL_SOURCES, Recorded, Source, Window
from fp_monitor.domain.stats import TargetStats, target_stats
from fp_monitor.domain.timeline import Run, newest_runs, runs_newest_first
from fp_monitor.store.canary import canary_signatures, canary_verdicts
from fp_monitor.store.history import History


def read_runs(path: HistoryLocation, target: str | None, window: Window, limit: int) -> list[Run]:
    """The `limit` most recently seen runs in `window`, oldest first."""
    with open_history(path) as history:
        names = targets(history, target)
        return newest_runs(
            (runs_newest_first(history.iter_checks(n, window)) for n in names), limit
        )


def read_observations(
    path: HistoryLocation, target: str | None, window: Window, limit: int
) -> list[Recorded]:
    """The newest `limit` observations in `window`, oldest first."""
    with open_history(path) as history:
        targets(history, target)
        return history.observations(target, window, limit)[::-1]


def read_stats(
    path: HistoryLocation,
    target: str | None,
    since: datetime,
    now: datetime,
    sources: frozenset[Source] = ALL_SOURCES,
    grammars: Sequence[Grammar] = BUILTIN_GRAMMARS,
) -> list[TargetStats]:
    """The figures of each target checked since `since` (of `target` only, when named); served
    fingerprints that `grammars` decode are grouped by their parts."""
    window = Window(since=since, sources=sources)
    found = []
    with open_history(path) as history:
        for name in targets(history, target):
            checks = list(history.iter_checks(name, window))[::-1]
            if checks:
                samples = history.samples(name, window)
                facts = history.facts(name, sources)
                figures = target_stats(
                    name,
                    checks,
                    samples,
                    start=checks[0].checked_at,
                    end=now,
                    trust=trust(facts.fingerprint_counts, facts.latest_learning),
                    grammars=grammars,
                )
                verdicts = [v for _, v in canary_verdicts(history, name, window)]
                canary = canary_stats(verdicts, canary_signatures(history, name))
                found.append(replace(figures, canary=canary))
    return found


@contextmanager
def open_history(path: HistoryLocation) -> Iterator[History]:
    """The history at `path`, read-only; a missing one is an error, not an empty history."""
    history = History.open_readonly(path)
    if history is None:
        raise missing_history(path)
    with history:
        yield history


def missing_history(path: HistoryLocation) -> HistoryError:
    return HistoryError(f"no history at {path}: run `fpmon check` to start one, or pass --history")


def targets(history: History, target: str | None) -> list[str]:
    """[target] when it is in the history (a ConfigError when not), else every target."""
    names = history.targets()
    if target is None:
        return names
    if target not in names:
        raise ConfigError(
            f"no target {target!r} in the history {history.path}{did_you_mean(target, names)}"
        )
    return [target]


def require_known_target(config: Config, name: str) -> None:
    """Refuse a target name that neither the configuration nor the history knows: a typo would
    quietly start the history of a new target (ConfigError, with the closest known name)."""
    names = {t.name for t in config.targets}
    history = History.open_readonly(config.history)
    if history is not None:
        with history:
            names.update(history.targets())
    if name not in names:
        raise ConfigError(
            f"unknown target {name!r}{did_you_mean(name, sorted(names))}: name one from the "
            "configuration or the history, or pass --new-target to record a new one"
        )
