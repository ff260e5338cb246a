"""Reading and keeping the history: `fpmon history`, `stats`, `report`, `verify`, `export`,
`import`, `prune`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from fp_monitor.cli.app import app
from fp_monitor.cli.options import (
    MAX_COUNT,
    BaselineOption,
    ConfigOption,
    FormatOption,
    HistoryOption,
    JsonOption,
    OutputFormat,
    ShownSourceOption,
    SourceChoice,
    TargetArgument,
    chosen_format,
    duration,
    when_option,
)
from fp_monitor.domain.errors import ExitCode


@app.command("history")
def history_command(
    ctx: typer.Context,
    target: TargetArgument = None,
    config: ConfigOption = None,
    history: HistoryOption = None,
    observations: Annotated[
        bool, typer.Option("--observations", help="List the raw observations, not runs.")
    ] = False,
    since: Annotated[datetime | None, when_option("From this time on")] = None,
    until: Annotated[datetime | None, when_option("Before this time")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_COUNT, help="Show the newest N (runs or rows).")
    ] = 50,
    output_format: FormatOption = OutputFormat.TABLE,
    as_json: JsonOption = False,
    source: ShownSourceOption = SourceChoice.ALL,
) -> int:
    """Show the timeline of fingerprint runs per target, or the raw observations."""
    from fp_monitor.config.settings import load_config
    from fp_monitor.domain.models import Window
    from fp_monitor.output.render import render_observations, render_runs
    from fp_monitor.reading import read_observations, read_runs

    shown = chosen_format(ctx, as_json, output_format)
    loaded = load_config(config, history=history, require_targets=False)
    window = Window(since, until, source.sources)
    if observations:
        records = read_observations(loaded.history, target, window, limit)
        render_observations(records, shown.value, sys.stdout)
    else:
        runs = read_runs(loaded.history, target, window, limit)
        render_runs(runs, shown.value, sys.stdout)
    return ExitCode.OK


StatsSinceOption = Annotated[datetime, when_option("From this time on", has_default=True)]


@app.command()
def stats(
    ctx: typer.Context,
    target: TargetArgument = None,
    since: StatsSinceOption = "30d",  # type: ignore[assignment]  # text: `moment` parses it
    config: ConfigOption = None,
    history: HistoryOption = None,
    as_json: JsonOption = False,
    output_format: FormatOption = OutputFormat.TABLE,
    source: ShownSourceOption = SourceChoice.ALL,
) -> int:
    """Per target: values seen, the set served now with shares, changes, errors, latency."""
    from fp_monitor.config.settings import load_config
    from fp_monitor.output.contracts import STATS_FIELDS, stats_json
    from fp_monitor.output.formats import markdown_table, print_document
    from fp_monitor.output.render import render_stats, stats_table
    from fp_monitor.reading import read_stats

    shown = chosen_format(ctx, as_json, output_format)
    loaded = load_config(config, history=history, require_targets=False)
    now = datetime.now(UTC)
    found = read_stats(loaded.history, target, since, now, source.sources, loaded.grammars)
    if shown is OutputFormat.TABLE:
        render_stats(found, sys.stdout)
    elif shown is OutputFormat.MARKDOWN:
        print(markdown_table(stats_table(found)), end="")
    else:
        print_document(shown, stats_json(found, since, now), "targets", STATS_FIELDS, sys.stdout)
    return ExitCode.OK


@app.command()
def report(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The HTML file to write.", show_default=False),
    ],
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="Target names (default: every target in the history).", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
    history: HistoryOption = None,
    baseline: BaselineOption = None,
    since: Annotated[datetime | None, when_option("From this time on")] = None,
    until: Annotated[datetime | None, when_option("Before this time")] = None,
    source: ShownSourceOption = SourceChoice.ALL,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Walk the hash chain for the audit block, as `fpmon verify` does (it hashes "
            "every record: about 5 s per million).",
        ),
    ] = True,
) -> int:
    """Write one self-contained HTML page of the history: what was served when, shares,
    changes, errors, learning, the lock, and the chain's state (exit 1 if it is broken)."""
    from fp_monitor.config.settings import load_config
    from fp_monitor.domain.errors import ChainBroken
    from fp_monitor.domain.models import Window
    from fp_monitor.output.html_report import report_line
    from fp_monitor.report import build_report, save_report

    loaded = load_config(config, history=history, baseline=baseline, require_targets=False)
    window = Window(since, until, source.sources)
    made = build_report(loaded, targets or [], window, datetime.now(UTC), verify=verify)
    save_report(output, made)
    print(report_line(str(output), made))
    if made.chain is not None and made.chain.broken:
        raise ChainBroken(f"the chain is broken: {made.chain.broken} (the report shows it)")
    return ExitCode.OK


@app.command()
def verify(
    config: ConfigOption = None,
    history: HistoryOption = None,
    head: Annotated[
        str | None,
        typer.Option(
            metavar="HASH",
            help="The `sealed:` hash an earlier verify printed, kept elsewhere: exit 1 unless "
            "it is still in the chain (nothing up to it was rewritten or cut).",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Check the tamper-evident chain of the history and its seals; exit 1 at the first broken
    record, row or seal."""
    from fp_monitor.audit import verify_history
    from fp_monitor.cli.display import render_verified
    from fp_monitor.config.settings import load_config

    loaded = load_config(config, history=history, require_targets=False)
    render_verified(verify_history(loaded.history, head))
    return ExitCode.OK


@app.command()
def export(
    config: ConfigOption = None,
    history: HistoryOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write to this file (default: stdout).", show_default=False
        ),
    ] = None,
) -> int:
    """Write the whole history as JSON lines, one observation with its chain fields per line."""
    from fp_monitor.audit import export_history
    from fp_monitor.config.settings import load_config
    from fp_monitor.domain.text import plural
    from fp_monitor.fileio import check_writable

    if output is not None:
        check_writable(output, "--output")
    loaded = load_config(config, history=history, require_targets=False)
    count = export_history(loaded.history, output, sys.stdout)
    if output is not None:
        print(f"exported {plural(count, 'record')} to {output}")
    return ExitCode.OK


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="A file written by `fpmon export` (- for stdin).")],
    config: ConfigOption = None,
    history: HistoryOption = None,
) -> int:
    """Append the records of an export file that the history does not hold yet (idempotent)."""
    from fp_monitor.audit import import_history
    from fp_monitor.cli.display import render_imported
    from fp_monitor.config.settings import load_config

    loaded = load_config(config, history=history, require_targets=False)
    imported = import_history(loaded.history, file, datetime.now(UTC))
    render_imported(file, loaded.history, imported)
    return ExitCode.OK


@app.command()
def prune(
    config: ConfigOption = None,
    history: HistoryOption = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            parser=duration,
            metavar="DURATION",
            help="Delete observations older than this (90d); default: the config's `retention`.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")
    ] = False,
) -> int:
    """Delete old observations; the chain, the known values and the previous sets survive."""
    from fp_monitor.audit import prune_history
    from fp_monitor.cli.display import render_pruned
    from fp_monitor.config.settings import load_config

    loaded = load_config(config, history=history, require_targets=False)
    pruned = prune_history(loaded, older_than, datetime.now(UTC), dry_run)
    render_pruned(loaded.history, pruned)
    return ExitCode.OK
