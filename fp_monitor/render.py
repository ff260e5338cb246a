"""Rendering: rich tables on a terminal, plain text when piped, and the JSON contract.

Every string that came from a server is data: it reaches the terminal as a rich Text (never
parsed as markup) with control characters made visible, so it can neither style nor move the
cursor.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fp_monitor.config import Config, Target
from fp_monitor.models import ABSENT, NULL, CheckResult, Status, TargetResult
from fp_monitor.providers import Auth

if TYPE_CHECKING:
    from fp_monitor.accept import AcceptResult
    from fp_monitor.watch import WatchObserver, WatchRound, WatchStart

CELL_LIMIT = 64
RECENT_LINES = 8
_PIPED_WIDTH = 100_000  # piped output never wraps a row, whatever the terminal width
STATUS_STYLE = {
    Status.NEW: "bold red",
    Status.CHANGED: "yellow",
    Status.SAME: "green",
    Status.FIRST: "cyan",
    Status.ERROR: "red",
    Status.LEARNED: "blue",
}
STATUS_MEANING = {
    Status.FIRST: "first check of this target: its values are now known",
    Status.SAME: "every value was seen in the previous check",
    Status.CHANGED: "the served set moved among values seen before (a flap, not a rollout)",
    Status.NEW: "a value never seen (or accepted) before: the backend changed",
    Status.ERROR: "no sample succeeded",
    Status.LEARNED: "a value not seen before while the target is still learning its served set",
}


def make_console(file: IO[str] | None = None) -> Console:
    """Colour on a terminal; plain, unwrapped text when piped or NO_COLOR is set."""
    stream = file or sys.stdout
    terminal = stream.isatty()
    # NO_COLOR means no escape sequences at all: rich's no_color alone would keep bold.
    plain = bool(os.environ.get("NO_COLOR")) or not terminal
    return Console(
        file=stream,
        no_color=plain,
        force_terminal=not plain,
        width=None if terminal else _PIPED_WIDTH,
        highlight=False,
        emoji=False,
        markup=False,
    )


def clean(text: str) -> str:
    """Control and format characters (ESC, CR, bidi overrides...) shown as escapes."""
    return "".join(
        repr(ch)[1:-1] if ch != " " and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
        for ch in text
    )


def shorten(text: str, limit: int = CELL_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show_value(token: str) -> str:
    """How a fingerprint or model token reads in a table."""
    if token in (NULL, ABSENT):
        return token
    return '""' if token == "" else shorten(clean(token))


def describe(target: TargetResult) -> str:
    """One line: what changed (before -> now) or why the target failed; the accept hint."""
    if target.status is Status.ERROR:
        shown = sorted({f"{e.kind.value}: {clean(e.message)}" for e in target.errors})
        return "; ".join(shown)
    moves = [
        f"{c.field}: {show_values(c.before)} -> {show_values(c.now)}" for c in target.changes
    ] or [f"fingerprint: {show_values(target.fingerprints)}, model: {show_values(target.models)}"]
    text = "; ".join(moves)
    if target.unexpected and target.status is Status.NEW:
        text += f". If expected, accept it: fpmon accept {target.name}"
    return text


def show_values(tokens: Iterable[str] | None) -> str:
    shown = [show_value(t) for t in tokens or ()]
    return ", ".join(shown) if shown else "-"


def show_latency(latency_ms: float | None) -> str:
    return f"{latency_ms:.0f} ms" if latency_ms is not None else "-"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def _table(*headers: str, title: str | None = None) -> Table:
    return Table(
        *headers,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        title=title,
        title_justify="left",
    )


def result_table(result: CheckResult) -> Table:
    table = _table("target", "status", "fingerprints", "model", "latency")
    for target in result.targets:
        table.add_row(
            Text(clean(target.name)),
            Text(target.status.value, style=STATUS_STYLE[target.status]),
            Text(show_values(target.fingerprints)),
            Text(show_values(target.models)),
            Text(show_latency(target.latency_ms)),
        )
    return table


def diff_table(result: CheckResult) -> Table | None:
    changes = [c for t in result.targets for c in t.changes]
    if not changes:
        return None
    table = _table("target", "field", "before", "now", "before first seen", title="changes")
    for change in changes:
        table.add_row(
            Text(clean(change.target)),
            Text(change.field),
            Text(show_values(change.before)),
            Text(show_values(change.now)),
            Text(_when(change.before_first_seen)),
        )
    return table


def render_check(console: Console, result: CheckResult) -> None:
    console.print(result_table(result))
    if (diff := diff_table(result)) is not None:
        console.print()
        console.print(diff)
    for target in result.targets:
        _print_errors(console, target)
        if target.learning:
            estimate = target.unseen_estimate or 0.0
            console.print(
                Text(
                    f"{clean(target.name)}: learning its served set (unseen share estimated at "
                    f"{estimate:.1%}); values not seen before are `learned`, not alarms",
                    style="dim",
                )
            )
        if target.unexpected:
            hint = (
                f"; if expected: fpmon accept {target.name}" if target.status is Status.NEW else ""
            )
            console.print(
                Text(
                    f"{clean(target.name)}: {STATUS_MEANING[target.status]}{hint}", style="bold red"
                )
            )
    if not result.recorded:
        console.print(Text("dry run: nothing was recorded", style="dim"))


def _print_errors(console: Console, target: TargetResult) -> None:
    """`NAME: k of n samples failed: kind: message`, further kinds aligned below it."""
    if not target.errors:
        return
    lead = f"{clean(target.name)}: {len(target.errors)} of {target.samples} samples failed: "
    shown = {(e.kind, e.status_code, e.message) for e in target.errors}
    for kind, _status, message in sorted(shown, key=str):
        console.print(Text(f"{lead}{kind.value}: {shorten(clean(message), 200)}", style="red"))
        lead = " " * len(lead)


def json_value(token: str) -> str | None:
    """The JSON contract: a null fingerprint is JSON null; absent is the string "<absent>"."""
    return None if token == NULL else token


def _json_values(tokens: Iterable[str] | None) -> list[str | None] | None:
    return None if tokens is None else [json_value(t) for t in tokens]


def check_json(result: CheckResult) -> dict[str, Any]:
    return {
        "version": 1,
        "exit_code": int(result.exit_code),
        "checked_at": result.checked_at.isoformat().replace("+00:00", "Z"),
        "check_id": result.check_id,
        "recorded": result.recorded,
        "targets": [
            {
                "name": t.name,
                "status": t.status.value,
                "unexpected": t.unexpected,
                "fingerprints": _json_values(t.fingerprints),
                "models": _json_values(t.models),
                "previous": _json_values(t.previous),
                "known": _json_values(t.known),
                "previous_models": _json_values(t.previous_models),
                "known_models": _json_values(t.known_models),
                "headers": {k: list(v) for k, v in t.headers.items()},
                "samples": t.samples,
                "learning": bool(t.learning),
                "unseen_estimate": t.unseen_estimate,
                "errors": [
                    {"kind": e.kind.value, "status_code": e.status_code, "message": e.message}
                    for e in t.errors
                ],
                "latency_ms": None if t.latency_ms is None else round(t.latency_ms, 1),
            }
            for t in result.targets
        ],
    }


def _key_status(target: Target) -> str:
    from fp_monitor.probe import api_key, key_missing

    if target.api_key_env is None or target.auth is Auth.NONE:
        return "not needed"
    if key_missing(target):
        return "MISSING"
    return "set" if api_key(target) else "not set (optional)"


def targets_table(config: Config) -> Table:
    title = f"targets from {config.source or 'provider keys in the environment'}"
    table = _table(
        "target", "provider", "model", "endpoint", "key variable", "key", "samples", title=title
    )
    for target in config.targets:
        key = _key_status(target)
        table.add_row(
            Text(target.name + ("" if target.enabled else " (disabled)")),
            Text(target.provider),
            Text(target.model),
            Text(target.endpoint),
            Text(target.api_key_env or "-"),
            Text(key, style="bold red" if key == "MISSING" else ""),
            Text(str(target.samples)),
        )
    return table


def targets_json(config: Config) -> dict[str, Any]:
    return {
        "version": 1,
        "config": str(config.source) if config.source else None,
        "history": str(config.history),
        "baseline": str(config.baseline),
        "targets": [
            {
                "name": t.name,
                "provider": t.provider,
                "model": t.model,
                "endpoint": t.endpoint,
                "api_key_env": t.api_key_env,
                "key": _key_status(t),
                "samples": t.samples,
                "timeout": t.timeout,
                "retries": t.retries,
                "enabled": t.enabled,
            }
            for t in config.targets
        ],
    }


def render_accept(lock_path: Path, result: AcceptResult) -> None:
    """What accept added and removed per target (plain lines: people paste them in reviews)."""
    for change in result.changes:
        if not change.changed:
            print(f"{clean(change.target)}: unchanged")
            continue
        for label, values in (
            ("+ fingerprint", change.added),
            ("- fingerprint", change.removed),
            ("+ model", change.added_models),
            ("- model", change.removed_models),
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


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def show_duration(seconds: float) -> str:
    """5m, 2h, 30s: how durations are written on the command line."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds * 1000:g}ms" if 0 < seconds < 1 else f"{seconds:g}s"


def watch_lines(result: CheckResult) -> list[str]:
    """One plain line per target whose check changed something or had an error."""
    stamp = result.checked_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = []
    for target in result.targets:
        if target.status is Status.SAME and not target.errors:
            continue
        text = describe(target)
        if target.errors and target.status is not Status.ERROR:
            kinds = ", ".join(sorted({e.kind.value for e in target.errors}))
            text += f"; {len(target.errors)} of {target.samples} samples failed ({kinds})"
        lines.append(f"{stamp} {clean(target.name)} {target.status.value} {text}")
    return lines


def watch_view(
    start: WatchStart, round_: WatchRound | None, recent: Iterable[str] = ()
) -> RenderableType:
    """The live table: the latest check of every target and the latest changes and errors."""
    lead = f"fpmon watch: {', '.join(map(clean, start.targets))} every {show_duration(start.every)}"
    if start.metrics_url:
        lead += f"; metrics at {start.metrics_url}"
    parts: list[RenderableType] = [Text(lead, style="bold")]
    if round_ is None:
        parts.append(Text("first check running…", style="dim"))
    else:
        when = f"check {round_.number} at {round_.result.checked_at:%H:%M:%S} UTC"
        if round_.next_at is not None:
            when += f"; next at {round_.next_at:%H:%M:%S} UTC"
        parts += [Text(when, style="dim"), result_table(round_.result)]
    if shown := list(recent):
        parts += [Text(""), Text("recent changes and errors", style="bold")]
        parts += [Text(line) for line in shown]
    return Group(*parts)


class _Lines:
    """Piped (journald, a log file): a line per change or error, silence otherwise."""

    def __init__(self, console: Console, err: Callable[[str], None]) -> None:
        self.console = console
        self.err = err

    def started(self, start: WatchStart) -> None:
        where = f"; metrics at {start.metrics_url}" if start.metrics_url else ""
        targets = ", ".join(start.targets)
        self.err(f"fpmon: watching {targets} every {show_duration(start.every)}{where}")

    def checked(self, round_: WatchRound) -> None:
        for line in watch_lines(round_.result):
            self.console.print(Text(line))
        for failure in round_.failures:
            self.err(f"fpmon: warning: {failure}")


class _LiveTable:
    def __init__(self, live: Live, err: Callable[[str], None]) -> None:
        self.live = live
        self.err = err
        self.recent: deque[str] = deque(maxlen=RECENT_LINES)
        self.start: WatchStart | None = None

    def started(self, start: WatchStart) -> None:
        self.start = start
        self.live.update(watch_view(start, None), refresh=True)

    def checked(self, round_: WatchRound) -> None:
        assert self.start is not None  # the watch starts before it checks
        self.recent.extend(watch_lines(round_.result))
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
