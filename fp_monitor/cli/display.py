"""What the use cases' results look like on the command line: accept's changes, verify, import
and prune summaries, and the watch display (a live table on a terminal, plain lines when piped).

They belong to the CLI because they show results of the use cases; the generic tables and the
JSON contracts they build on are in `fp_monitor.output`.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from fp_monitor.accept import AcceptResult
from fp_monitor.audit import Imported, Pruned, Verified
from fp_monitor.config.history_url import HistoryLocation
from fp_monitor.domain.models import CheckResult, Status
from fp_monitor.domain.text import clean, describe, plural, show_interval, show_value
from fp_monitor.output.layout import Fitted
from fp_monitor.output.render import result_table, show_when
from fp_monitor.watch import WatchObserver, WatchRound, WatchStart


def render_accept(lock_path: Path, result: AcceptResult) -> None:
    """What accept added and removed per target (plain lines: people paste them in reviews)."""
    if result.unreadable_lock is not None:
        print(
            f"fpmon: warning: {clean(result.unreadable_lock)}; writing it anew from what was "
            "observed, as --replace does (entries of targets not accepted now are not kept)",
            file=sys.stderr,
        )
    for change in result.changes:
        if not change.changed:
            print(f"{clean(change.target)}: unchanged")
            continue
        for label, values in (
            ("+ fingerprint", change.added),
            ("- fingerprint", change.removed),
            ("+ model", change.added_models),
            ("- model", change.removed_models),
            ("+ behaviour", change.added_signatures),
            ("- behaviour", change.removed_signatures),
        ):
            for value in values:
                print(f"{clean(change.target)}: {label} {show_value(value)}")
    for name in result.never_succeeded:
        print(
            f"{clean(name)}: no successful check in the history yet: nothing to accept "
            "(run `fpmon check` or `fpmon accept --probe`)",
            file=sys.stderr,
        )
    if any(c.changed for c in result.changes):
        print(f"wrote {lock_path}: review and commit it")


def render_verified(verified: Verified) -> None:
    print(f"verified {plural(verified.records, 'record')}: the chain is intact")
    print(f"head: record {verified.head_id}, hash {verified.head_hash}")
    if verified.seal is not None:
        seal = verified.seal
        print(f"sealed: seal {seal.id} of {seal.created_at}, hash {seal.hash}")
    for c in verified.checkpoints:
        when = c.created_at.strftime("%Y-%m-%d %H:%M UTC")
        if c.kind.value == "prune":
            deleted = plural(c.records, "record")
            print(f"checkpoint: {when} prune deleted {deleted} up to record {c.after_id}")
        else:
            print(f"checkpoint: {when} import continued another chain after record {c.after_id}")


def render_imported(source: Path, history: HistoryLocation, imported: Imported) -> None:
    for problem in imported.invalid:
        print(clean(problem), file=sys.stderr)
    for line in imported.junctions:
        print(
            f"{source}:{line}: continues a chain that is not in this history (pruned, another "
            "machine's, or records missing from the file): recorded as an import checkpoint",
            file=sys.stderr,
        )
    print(
        f"imported {plural(imported.appended, 'record')} ({plural(imported.checks, 'check')}) "
        f"into {history}; {imported.present} already present and "
        f"{plural(len(imported.invalid), 'invalid line')} skipped"
    )


def render_pruned(history: HistoryLocation, pruned: Pruned) -> None:
    verb = "would prune" if pruned.dry_run else "pruned"
    print(
        f"{verb} {plural(pruned.observations, 'observation')} and "
        f"{plural(pruned.checks, 'check')} older than "
        f"{show_when(pruned.cutoff)} from {history}; the known values and each target's latest "
        "successful check are kept"
    )
    if not pruned.dry_run:
        print(f"size: {_mib(pruned.size_before)} -> {_mib(pruned.size_after)}")


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


RECENT_LINES = 8


class WatchLines:
    """One plain line per target whose check changed something, had an error, or recovered
    from the failed checks before it (a recovery is news even when the values are the same)."""

    def __init__(self) -> None:
        self.failed: dict[str, int] = {}
        """Checks failed in a row so far, per target."""

    def of(self, result: CheckResult) -> list[str]:
        stamp = result.checked_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = []
        for target in result.targets:
            if target.status is Status.ERROR:
                self.failed[target.name] = self.failed.get(target.name, 0) + 1
            failed = 0 if target.status is Status.ERROR else self.failed.pop(target.name, 0)
            if target.status is Status.SAME and not target.errors and not failed:
                continue
            text = describe(target)
            if failed:
                text = f"recovered after {plural(failed, 'failed check')}; {text}"
            if target.errors and target.status is not Status.ERROR:
                kinds = ", ".join(sorted({e.kind.value for e in target.errors}))
                text += f"; {len(target.errors)} of {target.samples} samples failed ({kinds})"
            lines.append(f"{stamp} {clean(target.name)} {target.status.value} {text}")
        return lines


def watch_view(
    start: WatchStart, round_: WatchRound | None, recent: Iterable[str] = ()
) -> RenderableType:
    """The live table: the latest check of every target and the latest changes and errors."""
    lead = f"fpmon watch: {', '.join(map(clean, start.targets))} every {show_interval(start.every)}"
    if start.metrics_url:
        lead += f"; metrics at {start.metrics_url}"
    parts: list[RenderableType] = [Text(lead, style="bold")]
    if round_ is None:
        parts.append(Text("first check running…", style="dim"))
    else:
        when = f"check {round_.number} at {round_.result.checked_at:%H:%M:%S} UTC"
        if round_.next_at is not None:
            when += f"; next at {round_.next_at:%H:%M:%S} UTC"
        parts += [Text(when, style="dim"), Fitted(result_table(round_.result))]
    if shown := list(recent):
        parts += [Text(""), Text("recent changes and errors", style="bold")]
        parts += [Text(line) for line in shown]
    return Group(*parts)


class _Lines:
    """Piped (journald, a log file): a line per change or error, silence otherwise."""

    def __init__(self, console: Console, err: Callable[[str], None]) -> None:
        self.console = console
        self.err = err
        self.lines = WatchLines()

    def started(self, start: WatchStart) -> None:
        where = f"; metrics at {start.metrics_url}" if start.metrics_url else ""
        targets = ", ".join(start.targets)
        self.err(f"fpmon: watching {targets} every {show_interval(start.every)}{where}")

    def checked(self, round_: WatchRound) -> None:
        for line in self.lines.of(round_.result):
            self.console.print(Text(line))
        for failure in round_.failures:
            self.err(f"fpmon: warning: {failure}")


class _LiveTable:
    def __init__(self, live: Live, err: Callable[[str], None]) -> None:
        self.live = live
        self.err = err
        self.recent: deque[str] = deque(maxlen=RECENT_LINES)
        self.lines = WatchLines()
        self.start: WatchStart | None = None

    def started(self, start: WatchStart) -> None:
        self.start = start
        self.live.update(watch_view(start, None), refresh=True)

    def checked(self, round_: WatchRound) -> None:
        assert self.start is not None  # the watch starts before it checks
        self.recent.extend(self.lines.of(round_.result))
        self.live.update(watch_view(self.start, round_, self.recent), refresh=True)
        for failure in round_.failures:
            self.err(f"fpmon: warning: {failure}")  # Live prints stderr above the table


@contextmanager
def watch_display(console: Console, err: Callable[[str], None]) -> Iterator[WatchObserver]:
    """A live table on a terminal, plain lines otherwise; `err` prints a line on stderr."""
    if not console.is_terminal:
        yield _Lines(console, err)
        return
    with Live(console=console, auto_refresh=False) as live:
        yield _LiveTable(live, err)
