"""Rendering: rich tables on a terminal, plain text when piped, and the JSON contract.

Every string that came from a server is data: it reaches the terminal as a rich Text (never
parsed as markup) with control characters made visible, so it can neither style nor move the
cursor.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, cast

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fp_monitor.config.providers import realities
from fp_monitor.config.settings import Config, key_status, target_canary
from fp_monitor.domain.fingerprints import NO_SIGNAL_ADVICE, no_signal
from fp_monitor.domain.models import (
    CheckResult,
    ErrorKind,
    Observation,
    Recorded,
    Status,
    TargetResult,
)
from fp_monitor.domain.streams import disagreeing
from fp_monitor.domain.text import (
    clean,
    shorten,
    show_duration,
    show_latency,
    show_value,
    show_values,
)
from fp_monitor.output.contracts import (
    OBSERVATION_FIELDS,
    RUN_FIELDS,
    observation_json,
    run_json,
)
from fp_monitor.output.formats import markdown_table, print_document
from fp_monitor.output.layout import Fitted, TrimmedLines

if TYPE_CHECKING:
    from fp_monitor.domain.drift import CanaryStats
    from fp_monitor.domain.learning import Trust
    from fp_monitor.domain.stats import Share, TargetStats
    from fp_monitor.domain.timeline import Run

_PIPED_WIDTH = 100_000  # piped output never wraps a row, whatever the terminal width
STATUS_STYLE = {
    Status.NEW: "bold red",
    Status.CHANGED: "yellow",
    Status.SAME: "green",
    Status.FIRST: "cyan",
    Status.ERROR: "red",
    Status.LEARNED: "blue",
    Status.DRIFT: "bold magenta",
}
STATUS_MEANING = {
    Status.FIRST: "first check of this target: its values are now known",
    Status.SAME: "every value was seen in the previous check",
    Status.CHANGED: "the served set moved among values seen before (a flap, not a rollout)",
    Status.NEW: "a value never seen (or accepted) before: the backend changed",
    Status.ERROR: "no sample succeeded",
    Status.LEARNED: "a value not seen before while the target is still learning its served set",
    Status.DRIFT: "every fingerprint and model is known, but the behaviour is not: the model "
    "behind them changed silently",
}


def make_console(file: IO[str] | None = None) -> Console:
    """Colour on a terminal; plain, unwrapped text when piped or NO_COLOR is set."""
    stream = file or sys.stdout
    terminal = stream.isatty()
    # NO_COLOR means no escape sequences at all: rich's no_color alone would keep bold.
    plain = bool(os.environ.get("NO_COLOR")) or not terminal
    return Console(
        file=stream if terminal else cast(IO[str], TrimmedLines(stream)),
        no_color=plain,
        force_terminal=not plain,
        width=None if terminal else _PIPED_WIDTH,
        highlight=False,
        emoji=False,
        markup=False,
    )


def show_when(moment: datetime | None) -> str:
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
    table = _table("target", "status", "fingerprints", "models", "latency")
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
    # The parts column only when a change decodes: opaque values read as they always did.
    explained = any(c.parts is not None for c in changes)
    parts = ("what changed",) if explained else ()
    # "before seen since": when the values before were first recorded (the earliest of them),
    # i.e. how long the configuration that changed had been in place.
    table = _table("target", "field", "before", "now", "before seen since", *parts, title="changes")
    for change in changes:
        summary = (Text(change.parts.summary if change.parts else ""),) if explained else ()
        table.add_row(
            Text(clean(change.target)),
            Text(change.field),
            Text(show_values(change.before)),
            Text(show_values(change.now)),
            Text(show_when(change.before_first_seen)),
            *summary,
        )
    return table


def render_check(console: Console, result: CheckResult) -> None:
    console.print(Fitted(result_table(result)))
    if (diff := diff_table(result)) is not None:
        console.print()
        console.print(Fitted(diff))
    for target in result.targets:
        _print_errors(console, target)
        if (note := learning_note(target)) is not None:
            console.print(Text(note, style="dim"))
        if target.status is Status.FIRST and (reason := no_signal(target.fingerprints)):
            console.print(
                Text(
                    f"{clean(target.name)}: this server sends no usable fingerprint: {reason}; "
                    f"{NO_SIGNAL_ADVICE}",
                    style="yellow",
                )
            )
        if (line := explanation(target)) is not None:
            console.print(Text(line, style="bold red"))
    if not result.recorded:
        console.print(Text("dry run: nothing was recorded", style="dim"))


def explanation(target: TargetResult) -> str | None:
    """What an unexpected target's status means, and how to accept a new value (None when the
    target is as expected)."""
    if not target.unexpected:
        return None
    accepts = target.status in (Status.NEW, Status.DRIFT)
    hint = f"; if expected: fpmon accept {target.name}" if accepts else ""
    return clean(f"{target.name}: {STATUS_MEANING[target.status]}{hint}")


def learning_note(target: TargetResult) -> str | None:
    """A line when the target's learning starts (its first check) and when it ends, nothing in
    between. Not on a `new` first check: `--locked` makes a target without a lock entry `new`
    even while it learns, and then its values are not `learned`."""
    estimate = (
        "not estimated yet"
        if target.unseen_estimate is None
        else f"estimated at {target.unseen_estimate:.1%}"
    )
    name = clean(target.name)
    if target.learning and target.status is Status.FIRST:
        return (
            f"{name}: learning its served set (unseen share {estimate}); until it ends, values "
            "not seen before are `learned`, not alarms"
        )
    if target.learning_ended:
        return (
            f"{name}: learning is over (unseen share {estimate}): from now on a value never "
            "seen is `new`, an alarm"
        )
    return None


def _print_errors(console: Console, target: TargetResult) -> None:
    """`NAME: k of n samples failed: kind: message`, further kinds aligned below it."""
    if not target.errors:
        return
    if all(e.kind is ErrorKind.MISSING_KEY for e in target.errors):
        # Nothing was sent: the message says why ("not probed: XAI_API_KEY is not set").
        for message in sorted({e.message for e in target.errors}):
            console.print(Text(f"{clean(target.name)}: {clean(message)}", style="red"))
        return
    lead = f"{clean(target.name)}: {len(target.errors)} of {target.samples} samples failed: "
    shown = {(e.kind, e.status_code, e.message) for e in target.errors}
    for kind, _status, message in sorted(shown, key=str):
        console.print(Text(f"{lead}{kind.value}: {shorten(clean(message), 200)}", style="red"))
        lead = " " * len(lead)


def targets_table(config: Config) -> Table:
    title = f"targets from {config.source or 'provider keys in the environment'}"
    table = _table(
        "target",
        "provider",
        "model",
        "endpoint",
        "key variable",
        "key",
        "samples",
        "fingerprint",
        "canary",
        title=title,
    )
    for target in config.targets:
        key = key_status(target)
        facts = realities(target.provider)
        mode, why = target_canary(target)
        table.add_row(
            Text(target.name + ("" if target.enabled else " (disabled)")),
            Text(target.provider),
            Text(target.model),
            Text(target.endpoint),
            Text(target.api_key_env or "-"),
            Text(key, style="bold red" if key == "MISSING" else ""),
            Text(str(target.samples)),
            Text(facts.fingerprint + ("" if facts.signal else " (no signal)")),
            Text(f"{mode.value}: {why}"),
        )
    return table


def targets_notes(config: Config) -> list[str]:
    """A line for each target whose provider sends no usable fingerprint."""
    return [
        f"{clean(t.name)}: {t.provider} {realities(t.provider).summary()}"
        for t in config.targets
        if not realities(t.provider).signal
    ]


# --- reading the history ----------------------------------------------------------------

TIMELINE_GLYPHS = {"served": "█", "not_served": "·", "no_check": " "}


def runs_table(runs: Sequence[Run]) -> Table:
    table = _table(
        "target", "fingerprints", "models", "first seen", "last seen", "checks", "samples", "errors"
    )
    for run in runs:
        table.add_row(
            Text(clean(run.target)),
            Text(show_values(run.fingerprints), style="" if run.fingerprints else "red"),
            Text(show_values(run.models)),
            Text(show_when(run.first_seen)),
            Text(show_when(run.last_seen)),
            Text(str(run.checks)),
            Text(str(run.observations)),
            Text(str(run.errors), style="red" if run.errors else ""),
        )
    return table


def observations_table(records: Sequence[Recorded]) -> Table:
    table = _table(
        "id", "time", "target", "site", "fingerprint", "resolved model", "http", "latency", "error"
    )
    for record in records:
        o = record.observation
        error = f"{o.error_kind.value}: {clean(o.error_message or '')}" if o.error_kind else ""
        table.add_row(
            Text(str(record.id)),
            Text(o.observed_at.strftime("%Y-%m-%d %H:%M:%S")),
            Text(clean(o.target)),
            Text(shorten(clean(o.site)) if o.site is not None else "-"),
            Text(_fingerprint_cell(o)),
            Text(show_value(o.resolved_model) if o.resolved_model is not None else "-"),
            Text(str(o.http_status) if o.http_status is not None else "-"),
            Text(show_latency(o.latency_ms)),
            Text(shorten(error, 80), style="red"),
        )
    return table


def _fingerprint_cell(o: Observation) -> str:
    """The recorded fingerprint, and the others a stream's chunks carried when they disagreed."""
    if o.fingerprint is None:
        return "-"
    others = disagreeing(o.tags)
    if not others:
        return show_value(o.fingerprint)
    return f"{show_value(o.fingerprint)} (chunks disagree: also {show_values(others)})"


def render_runs(runs: Sequence[Run], output_format: str, stdout: IO[str]) -> None:
    if output_format == "table":
        _print_table(runs_table(runs), bool(runs), "no checks in this range", stdout)
    elif output_format == "markdown":
        stdout.write(markdown_table(runs_table(runs)))
    else:
        records = [run_json(r) for r in runs]
        _print_records("runs", records, RUN_FIELDS, output_format, stdout)


def render_observations(records: Sequence[Recorded], output_format: str, stdout: IO[str]) -> None:
    if output_format == "table":
        table = observations_table(records)
        _print_table(table, bool(records), "no observations in this range", stdout)
    elif output_format == "markdown":
        stdout.write(markdown_table(observations_table(records)))
    else:
        rows = [observation_json(r) for r in records]
        _print_records("observations", rows, OBSERVATION_FIELDS, output_format, stdout)


def _print_table(table: Table, rows: bool, empty: str, stdout: IO[str]) -> None:
    console = make_console(stdout)
    if rows:
        console.print(Fitted(table))
    else:
        console.print(Text(empty, style="dim"))


def _print_records(
    name: str,
    records: list[dict[str, Any]],
    fields: tuple[str, ...],
    output_format: str,
    stdout: IO[str],
) -> None:
    print_document(output_format, {"version": 1, name: records}, name, fields, stdout)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _shares(shares: Sequence[Share]) -> str:
    return ", ".join(f"{show_value(s.value)} {s.share:.0%}" for s in shares) or "-"


def stats_table(stats: Sequence[TargetStats]) -> Table:
    table = _table(
        "target",
        "checks",
        "fingerprints",
        "models",
        "served now (share of samples)",
        "new",
        "between new",
        "flap rate",
        "errors",
        "p50",
        "p95",
    )
    for s in stats:
        kinds = ", ".join(f"{kind} {count}" for kind, count in s.errors_by_kind)
        table.add_row(
            Text(clean(s.target)),
            Text(str(s.checks)),
            Text(str(len(s.fingerprints))),
            Text(str(len(s.models))),
            Text(_shares(s.served_fingerprints)),
            Text(str(s.new_events), style="bold red" if s.new_events else ""),
            Text(show_duration(s.median_between_new)),
            Text(_percent(s.flap_rate)),
            Text(_percent(s.error_rate) + (f" ({kinds})" if kinds else "")),
            Text(show_latency(s.latency_p50_ms)),
            Text(show_latency(s.latency_p95_ms)),
        )
    return table


def sites_table(stats: TargetStats) -> Table:
    """What each site is served now: a region served what the others are not stands out."""
    title = f"{clean(stats.target)}: served now, by site"
    table = _table(
        "site", "samples", "fingerprints (share)", "models (share)", "only here", title=title
    )
    for site in stats.sites:
        table.add_row(
            Text(shorten(clean(site.site)) if site.site is not None else "-"),
            Text(str(site.samples)),
            Text(_shares(site.fingerprints)),
            Text(_shares(site.models)),
            Text(show_values(site.only_here) if site.only_here else "-", style="bold red"),
        )
    return table


def groups_table(stats: TargetStats) -> Table:
    """The served fingerprints that decode, one row per set of parts (hashes aside)."""
    title = f"{clean(stats.target)}: served now, by the parts of the fingerprints"
    table = _table("format", "parts", "fingerprints", "share", title=title)
    for group in stats.served_groups:
        parts = ", ".join(f"{label} {shorten(clean(value), 40)}" for label, value in group.parts)
        table.add_row(
            Text(group.grammar),
            Text(parts or "-"),
            Text(f"{len(group.values)}: {show_values(group.values)}"),
            Text(f"{group.share:.0%}"),
        )
    return table


def timeline_title(stats: TargetStats) -> str:
    timeline = stats.timeline
    cells = len(timeline.rows[0].cells) if timeline.rows else 1
    per_cell = show_duration((timeline.end - timeline.start) / cells)
    return (
        f"{clean(stats.target)}: fingerprints from {show_when(timeline.start)} to "
        f"{show_when(timeline.end)}, {per_cell} per cell (█ served, · checked without it)"
    )


def timeline_table(stats: TargetStats) -> Table:
    """One row per fingerprint, time along the row."""
    table = _table("fingerprint", "timeline")
    table.show_header = False
    table.columns[1].no_wrap = True  # a row of time: wrapped, it would read as another row
    for row in stats.timeline.rows:
        glyphs = "".join(TIMELINE_GLYPHS[c.value] for c in row.cells)
        table.add_row(Text(show_value(row.value)), Text(glyphs, style="green"))
    return table


def render_stats(stats: Sequence[TargetStats], stdout: IO[str]) -> None:
    console = make_console(stdout)
    if not stats:
        console.print(Text("no checks in this range", style="dim"))
        return
    console.print(Fitted(stats_table(stats)))
    for target in stats:
        console.print()
        if target.no_signal:
            console.print(
                Text(
                    f"{clean(target.target)}: this server sends no usable fingerprint: "
                    f"{target.no_signal}; {NO_SIGNAL_ADVICE}",
                    style="yellow",
                )
            )
        if target.served_groups:
            console.print(groups_table(target))
            console.print()
        if len(target.sites) > 1:  # one site's shares are the table's "served now"
            console.print(Fitted(sites_table(target)))
            console.print()
        console.print(Text(timeline_title(target)))
        console.print(Fitted(timeline_table(target)))
        if target.trust is not None and target.trust.samples:
            console.print()
            for line in trust_lines(target.target, target.trust):
                console.print(Text(line))
            console.print(Fitted(trust_table(target.trust)))
        if target.canary is not None:
            console.print()
            console.print(Text(canary_line(target.target, target.canary)))


def canary_line(name: str, canary: CanaryStats) -> str:
    """The behaviour canary over the range, in one line."""
    counts = ", ".join(f"{status} {n}" for status, n in sorted(canary.statuses.items()))
    figures = [f"p {canary.latest_p:.1e}"] if canary.latest_p is not None else []
    if canary.latest_distance is not None:
        figures.append(f"distance {canary.latest_distance:.3f}")
    latest = canary.latest + (f" ({', '.join(figures)})" if figures else "")
    return (
        f"{clean(name)}: canary ({canary.mode}): {canary.known} known behaviours; "
        f"{canary.checks} checks: {counts}; latest {latest}"
    )


def trust_lines(name: str, trust: Trust) -> list[str]:
    """How far to trust the known set, in words: the learning state and the unseen risk."""
    state = {True: "still learning", False: "learned", None: "not learning"}[trust.learning]
    estimate = "-" if trust.unseen_estimate is None else f"{trust.unseen_estimate:.1%}"
    risks = ", ".join(f"{share:.0%}: {p:.2%}" for share, p in trust.still_unseen)
    return [
        f"{clean(name)}: served set {state}; {trust.samples} samples; unseen share "
        f"estimated at {estimate} (Good-Turing)",
        f"chance that a configuration serving s of the calls is still unseen: {risks}",
    ]


def trust_table(trust: Trust) -> Table:
    """Each value's share over the whole history, with its 95% interval."""
    table = _table("fingerprint", "samples", "share", "95% interval")
    for value in trust.values:
        share = value.samples / trust.samples
        table.add_row(
            Text(show_value(value.value)),
            Text(str(value.samples)),
            Text(f"{share:.1%}"),
            Text(f"{value.low:.1%} - {value.high:.1%}"),
        )
    return table


# --- the audit trail --------------------------------------------------------------------
