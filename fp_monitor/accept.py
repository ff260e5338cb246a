"""`fpmon accept`: the latest observed values of each target, written into fpmon.lock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fp_monitor.check import CheckOptions, run_check
from fp_monitor.config.settings import Config
from fp_monitor.domain.errors import ExitCode
from fp_monitor.domain.models import Source
from fp_monitor.store.history import History
from fp_monitor.store.lockfile import Acceptance, accept_values, read_lock, write_lock


@dataclass(frozen=True)
class AcceptResult:
    changes: tuple[Acceptance, ...]
    never_succeeded: tuple[str, ...]
    """Targets with no successful observation: nothing to accept (exit 3 when named)."""
    exit_code: ExitCode


def run_accept(
    config: Config,
    names: Sequence[str],
    *,
    replace: bool,
    probe_first: bool,
    check_options: CheckOptions,
) -> AcceptResult:
    """Accept the values of each target's latest successful check (probing first on request)."""
    targets = config.select(list(names))
    lock = read_lock(config.baseline)  # a broken lock stops everything before any request
    if probe_first:
        run_check(config, names, check_options)
    history = History.open_readonly(config.history)
    now = datetime.now(UTC)
    changes, never = [], []
    try:
        for target in targets:
            # What fpmon's own probe saw last: one response of the application's traffic is
            # not the served set.
            facts = history.facts(target.name, frozenset({Source.PROBE})) if history else None
            if facts is None or facts.previous_fingerprints is None:
                never.append(target.name)
                continue
            lock[target.name], change = accept_values(
                target.name,
                lock.get(target.name),
                facts.previous_fingerprints,
                facts.previous_models or frozenset(),
                replace=replace,
                now=now,
            )
            changes.append(change)
    finally:
        if history is not None:
            history.close()
    if any(c.changed for c in changes):
        write_lock(config.baseline, lock)
    return AcceptResult(
        tuple(changes),
        tuple(never),
        ExitCode.PROBE_FAILED if never and names else ExitCode.OK,
    )
