"""Rendering: rich tables on a terminal, plain text when piped, and the JSON contract.

Every string that came from a server is data: it reaches the terminal as a rich Text (never
parsed as markup) with control characters made visible, so it can neither style nor move the
cursor.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fp_monitor.config import Config, Target
from fp_monitor.models import ABSENT, NULL, CheckResult, Recorded, Status, TargetResult
from fp_monitor.providers import Auth

if TYPE_CHECKING:
    from fp_monitor.accept import AcceptResult
    from fp_monitor.audit import Imported, Pruned, Verified
    from fp_monitor.learning import Trust
    from fp_monitor.stats import Share, TargetStats
    from fp_monitor.timeline import Run
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


def json_values(tokens: Iterable[str] | None) -> list[str | None] | None:
    return None if tokens is None else [json_value(t) for t in tokens]


def iso(moment: datetime) -> str:
    """A time in the JSON contract: ISO 8601, UTC, with a Z."""
    return moment.isoformat().replace("+00:00", "Z")


def check_json(result: CheckResult) -> dict[str, Any]:
    return {
        "version": 1,
        "exit_code": int(result.exit_code),
        "checked_at": iso(result.checked_at),
        "check_id": result.check_id,
        "recorded": result.recorded,
        "targets": [
            {
                "name": t.name,
                "status": t.status.value,
                "unexpected": t.unexpected,
                "fingerprints": json_values(t.fingerprints),
                "models": json_values(t.models),
                "previous": json_values(t.previous),
                "known": json_values(t.known),
                "previous_models": json_values(t.previous_models),
                "known_models": json_values(t.known_models),
                "headers": {k: list(v) for k, v in t.headers.items()},
                "samples": t.samples,
                "learning": bool(t.learning),
                "unseen_estimate": t.unseen_estimate,
                "errors": [
                    {"kind": e.kind.value, "status_code": e.status_code, "message": e.message}
                    for e in t.errors
                ],
                "latency_ms": _ms(t.latency_ms),
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


# --- reading the history ----------------------------------------------------------------

RUN_FIELDS = (
    "target",
    "fingerprints",
    "models",
    "first_seen",
    "last_seen",
    "checks",
    "observations",
    "errors",
)
OBSERVATION_FIELDS = (
    "id",
    "check_id",
    "source",
    "observed_at",
    "target",
    "provider",
    "base_url",
    "requested_model",
    "model",
    "fingerprint",
    "fingerprint_state",
    "response_id",
    "request_id",
    "status_code",
    "latency_ms",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "headers",
    "tags",
    "error",
    "request_shape",
    "raw_response",
)
TIMELINE_GLYPHS = {"served": "█", "not_served": "·", "no_check": " "}


def run_json(run: Run) -> dict[str, Any]:
    return {
        "target": run.target,
        "fingerprints": json_values(run.fingerprints),
        "models": json_values(run.models),
        "first_seen": iso(run.first_seen),
        "last_seen": iso(run.last_seen),
        "checks": run.checks,
        "observations": run.observations,
        "errors": run.errors,
    }


def observation_json(record: Recorded) -> dict[str, Any]:
    # Imported here: commands that never read the history do not load sqlite3.
    from fp_monitor.history import fingerprint_columns

    o = record.observation
    return {
        "id": record.id,
        "check_id": record.check_id,
        "source": record.source.value,
        "observed_at": iso(o.observed_at),
        "target": o.target,
        "provider": o.provider,
        "base_url": o.base_url,
        "requested_model": o.requested_model,
        "model": o.resolved_model,
        "fingerprint": None if o.fingerprint is None else json_value(o.fingerprint),
        "fingerprint_state": fingerprint_columns(o.fingerprint)[1],
        "response_id": o.response_id,
        "request_id": o.request_id,
        "status_code": o.http_status,
        "latency_ms": o.latency_ms,
        "attempts": o.attempts,
        "prompt_tokens": o.usage.prompt_tokens,
        "completion_tokens": o.usage.completion_tokens,
        "total_tokens": o.usage.total_tokens,
        "headers": o.headers,
        "tags": dict(o.tags),
        "error": None
        if o.error_kind is None
        else {"kind": o.error_kind.value, "status_code": o.http_status, "message": o.error_message},
        "request_shape": o.request_shape,
        "raw_response": o.raw_response,
    }


def runs_table(runs: Sequence[Run]) -> Table:
    table = _table(
        "target", "fingerprints", "models", "first seen", "last seen", "checks", "samples", "errors"
    )
    for run in runs:
        table.add_row(
            Text(clean(run.target)),
            Text(show_values(run.fingerprints), style="" if run.fingerprints else "red"),
            Text(show_values(run.models)),
            Text(_when(run.first_seen)),
            Text(_when(run.last_seen)),
            Text(str(run.checks)),
            Text(str(run.observations)),
            Text(str(run.errors), style="red" if run.errors else ""),
        )
    return table


def observations_table(records: Sequence[Recorded]) -> Table:
    table = _table("id", "time", "target", "fingerprint", "model", "http", "latency", "error")
    for record in records:
        o = record.observation
        error = f"{o.error_kind.value}: {clean(o.error_message or '')}" if o.error_kind else ""
        table.add_row(
            Text(str(record.id)),
            Text(o.observed_at.strftime("%Y-%m-%d %H:%M:%S")),
            Text(clean(o.target)),
            Text("-" if o.fingerprint is None else show_value(o.fingerprint)),
            Text(show_value(o.resolved_model) if o.resolved_model is not None else "-"),
            Text(str(o.http_status) if o.http_status is not None else "-"),
            Text(show_latency(o.latency_ms)),
            Text(shorten(error, 80), style="red"),
        )
    return table


def render_runs(runs: Sequence[Run], output_format: str, stdout: IO[str]) -> None:
    if output_format == "table":
        _print_table(runs_table(runs), bool(runs), "no checks in this range", stdout)
    else:
        records = [run_json(r) for r in runs]
        _print_records("runs", records, RUN_FIELDS, output_format, stdout)


def render_observations(records: Sequence[Recorded], output_format: str, stdout: IO[str]) -> None:
    if output_format == "table":
        table = observations_table(records)
        _print_table(table, bool(records), "no observations in this range", stdout)
    else:
        rows = [observation_json(r) for r in records]
        _print_records("observations", rows, OBSERVATION_FIELDS, output_format, stdout)


def _print_table(table: Table, rows: bool, empty: str, stdout: IO[str]) -> None:
    console = make_console(stdout)
    if rows:
        console.print(table)
    else:
        console.print(Text(empty, style="dim"))


def _print_records(
    name: str,
    records: list[dict[str, Any]],
    fields: tuple[str, ...],
    output_format: str,
    stdout: IO[str],
) -> None:
    """json: one document; jsonl: one object per line; csv: a header row, then one row per
    object, lists and objects as JSON text (so null, "" and "<absent>" stay distinct)."""
    if output_format == "json":
        stdout.write(json.dumps({"version": 1, name: records}, indent=2, ensure_ascii=False))
        stdout.write("\n")
    elif output_format == "jsonl":
        for record in records:
            stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        writer = csv.DictWriter(stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: _csv_cell(v) for k, v in record.items()})


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


def show_duration(delta: timedelta | None) -> str:
    """'3d 4h', '12m', '45s': the two largest units."""
    if delta is None:
        return "-"
    seconds = int(delta.total_seconds())
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


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


def timeline_title(stats: TargetStats) -> str:
    timeline = stats.timeline
    cells = len(timeline.rows[0].cells) if timeline.rows else 1
    per_cell = show_duration((timeline.end - timeline.start) / cells)
    return (
        f"{clean(stats.target)}: fingerprints from {_when(timeline.start)} to "
        f"{_when(timeline.end)}, {per_cell} per cell (█ served, · checked without it)"
    )


def timeline_table(stats: TargetStats) -> Table:
    """One row per fingerprint, time along the row."""
    table = _table("fingerprint", "timeline")
    table.show_header = False
    for row in stats.timeline.rows:
        glyphs = "".join(TIMELINE_GLYPHS[c.value] for c in row.cells)
        table.add_row(Text(show_value(row.value)), Text(glyphs, style="green"))
    return table


def render_stats(stats: Sequence[TargetStats], stdout: IO[str]) -> None:
    console = make_console(stdout)
    if not stats:
        console.print(Text("no checks in this range", style="dim"))
        return
    console.print(stats_table(stats))
    for target in stats:
        console.print()
        console.print(Text(timeline_title(target)))
        console.print(timeline_table(target))
        if target.trust is not None and target.trust.samples:
            console.print()
            for line in trust_lines(target.target, target.trust):
                console.print(Text(line))
            console.print(trust_table(target.trust))


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


def _trust_json(trust: Trust) -> dict[str, Any]:
    return {
        "learning": trust.learning,
        "samples": trust.samples,
        "unseen_estimate": _rate(trust.unseen_estimate),
        "values": [
            {
                "value": json_value(v.value),
                "samples": v.samples,
                "share": round(v.samples / trust.samples, 4),
                "interval": [round(v.low, 4), round(v.high, 4)],
            }
            for v in trust.values
        ],
        "still_unseen": [
            {"share": share, "probability": round(p, 6)} for share, p in trust.still_unseen
        ],
    }


def _share_json(shares: Sequence[Share]) -> list[dict[str, Any]]:
    return [{"value": json_value(s.value), "share": round(s.share, 4)} for s in shares]


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def stats_json(stats: Sequence[TargetStats], since: datetime, now: datetime) -> dict[str, Any]:
    return {
        "version": 1,
        "since": iso(since),
        "until": iso(now),
        "targets": [
            {
                "name": s.target,
                "first_check": iso(s.start),
                "checks": s.checks,
                "successful_checks": s.successful_checks,
                "observations": s.observations,
                "fingerprints": json_values(s.fingerprints),
                "models": json_values(s.models),
                "served": {
                    "checks": s.served_checks,
                    "fingerprints": _share_json(s.served_fingerprints),
                    "models": _share_json(s.served_models),
                },
                "new_events": s.new_events,
                "median_between_new_s": None
                if s.median_between_new is None
                else s.median_between_new.total_seconds(),
                "changed": s.changed,
                "flap_rate": _rate(s.flap_rate),
                "errors": s.errors,
                "error_rate": _rate(s.error_rate),
                "errors_by_kind": {
                    kind: {"count": count, "rate": _rate(count / s.observations)}
                    for kind, count in s.errors_by_kind
                },
                "latency_ms": {"p50": _ms(s.latency_p50_ms), "p95": _ms(s.latency_p95_ms)},
                "learning": None if s.trust is None else _trust_json(s.trust),
            }
            for s in stats
        ],
    }


# --- the audit trail --------------------------------------------------------------------


def render_verified(verified: Verified) -> None:
    print(f"verified {verified.records} records: the chain is intact")
    print(f"head: record {verified.head_id}, hash {verified.head_hash}")
    if verified.seal is not None:
        seal = verified.seal
        print(f"sealed: seal {seal.id} of {seal.created_at}, hash {seal.hash}")
    for c in verified.checkpoints:
        when = c.created_at.strftime("%Y-%m-%d %H:%M UTC")
        if c.kind.value == "prune":
            print(f"checkpoint: {when} prune deleted {c.records} records up to record {c.after_id}")
        else:
            print(f"checkpoint: {when} import continued another chain after record {c.after_id}")


def render_imported(source: Path, history: Path, imported: Imported) -> None:
    for problem in imported.invalid:
        print(clean(problem), file=sys.stderr)
    for line in imported.junctions:
        print(
            f"{source}:{line}: continues a chain that is not in this history (pruned, another "
            "machine's, or records missing from the file): recorded as an import checkpoint",
            file=sys.stderr,
        )
    print(
        f"imported {imported.appended} records ({imported.checks} checks) into {history}; "
        f"{imported.present} already present and {len(imported.invalid)} invalid lines skipped"
    )


def render_pruned(history: Path, pruned: Pruned) -> None:
    verb = "would prune" if pruned.dry_run else "pruned"
    print(
        f"{verb} {pruned.observations} observations and {pruned.checks} checks older than "
        f"{_when(pruned.cutoff)} from {history}; the known values and each target's latest "
        "successful check are kept"
    )
    if not pruned.dry_run:
        print(f"size: {_mib(pruned.size_before)} -> {_mib(pruned.size_after)}")


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def show_interval(seconds: float) -> str:
    """5m, 2h, 30s: a watch interval as it is written on the command line."""
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
        self.err(f"fpmon: watching {targets} every {show_interval(start.every)}{where}")

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
