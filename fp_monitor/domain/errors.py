"""Exit codes and the typed errors that core code raises; cli.main turns them into exits."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """fpmon's exit codes. When several apply, the first listed here wins."""

    OK = 0
    """Everything probed, nothing unexpected."""
    UNEXPECTED = 1
    """An unexpected change (per --fail-on) in at least one target; for verify and prune, a
    broken chain."""
    USAGE = 2
    """Usage or configuration error: nothing was probed or written."""
    PROBE_FAILED = 3
    """At least one target could not be probed (after retries), and no unexpected change."""
    HISTORY = 4
    """The history could not be read or written."""
    INTERNAL = 70
    """An internal error (a bug)."""
    INTERRUPTED = 130
    """Interrupted by the user."""


# Precedence for combining per-target outcomes: earlier wins.
PRECEDENCE = (
    ExitCode.USAGE,
    ExitCode.HISTORY,
    ExitCode.UNEXPECTED,
    ExitCode.PROBE_FAILED,
    ExitCode.OK,
)


def most_severe(codes: list[ExitCode]) -> ExitCode:
    """The code that wins among `codes` by the documented precedence (OK when empty)."""
    for code in PRECEDENCE:
        if code in codes:
            return code
    return ExitCode.OK


class FpmonError(Exception):
    """An error with a one-line message for the user and the exit code it maps to."""

    exit_code = ExitCode.INTERNAL


class ConfigError(FpmonError):
    """The configuration, a flag or an input file is wrong: nothing was probed or written."""

    exit_code = ExitCode.USAGE


class HistoryError(FpmonError):
    """The history database could not be read or written."""

    exit_code = ExitCode.HISTORY


class ChainBroken(FpmonError):
    """The history's hash chain does not hold: a record was edited, deleted or moved."""

    exit_code = ExitCode.UNEXPECTED


class NotifyError(FpmonError):
    """A notifier could not deliver: a warning during a check, the failure of `notify test`."""

    exit_code = ExitCode.PROBE_FAILED


class UnexpectedFingerprint(FpmonError):
    """A response came from a backend configuration outside the expected set.

    `target`: the target the response was checked for (None when checked against a plain set);
    `field`: "fingerprint" or "model"; `before`: the expected values; `now`: the response's
    value. Values are fpmon's tokens: a null fingerprint is "<null>", a missing one "<absent>".
    """

    exit_code = ExitCode.UNEXPECTED

    def __init__(self, target: str | None, field: str, before: tuple[str, ...], now: str) -> None:
        self.target = target
        self.field = field
        self.before = before
        self.now = now
        expected = ", ".join(before) if before else "nothing yet"
        where = f"{target}: " if target else ""
        super().__init__(f"{where}unexpected {field} {now} (expected: {expected})")
