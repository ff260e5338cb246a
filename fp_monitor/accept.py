"""`fpmon accept`: the latest observed values of each target, written into fpmon.lock."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fp_monitor.check import CheckOptions, run_check
from fp_monitor.config.settings import Config, target_canary
from fp_monitor.domain.canary import CanaryMode
from fp_monitor.domain.errors import ConfigError, ExitCode
from fp_monitor.domain.models import Source
from fp_monitor.reading import missing_history
from fp_monitor.store.canary import canary_signatures
from fp_monitor.store.history import History
from fp_monitor.store.lockfile import Acceptance, accept_values, read_lock, write_lock


@dataclass(frozen=True)
class AcceptResult:
    changes: tuple[Acceptance, ...]
    never_succeeded: tuple[str, ...]
    """Targets with no successful observation: nothing to accept (exit 3 when named)."""
    exit_code: ExitCode
    unreadable_lock: str | None = None
    """Why the lock could not be read, when --replace wrote it anew."""


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
    unreadable = None
    try:
        lock = read_lock(config.baseline)  # a broken lock stops everything before any request
    except ConfigError as exc:
        if not replace:
            raise
        # --replace writes the lock from what was observed: it need not read the old one,
        # which is how a lock of another version, or a broken one, is regenerated.
        lock, unreadable = {}, str(exc)
        check_options = dataclasses.replace(check_options, read_lock=False)
    if probe_first:
        run_check(config, names, check_options)
    history = History.open_readonly(config.history)
    if history is None:  # as for every command that reads the history: exit 4, not "nothing"
        raise missing_history(config.history)
    now = datetime.now(UTC)
    changes, never = [], []
    try:
        for target in targets:
            # What fpmon's own probe saw last: one response of the application's traffic is
            # not the served set.
            facts = history.facts(target.name, frozenset({Source.PROBE}))
            if facts.previous_fingerprints is None:
                never.append(target.name)
                continue
            signatures = None
            if target_canary(target)[0] is not CanaryMode.OFF:
                signatures = canary_signatures(history, target.name)
            lock[target.name], change = accept_values(
                target.name,
                lock.get(target.name),
                facts.previous_fingerprints,
                facts.previous_models or frozenset(),
                replace=replace,
                now=now,
                signatures=signatures,
            )
            changes.append(change)
    finally:
        history.close()
    if any(c.changed for c in changes):
        write_lock(config.baseline, lock)
    return AcceptResult(
        tuple(changes),
        tuple(never),
        ExitCode.PROBE_FAILED if never and names else ExitCode.OK,
        unreadable if changes else None,
    )
