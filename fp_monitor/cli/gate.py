"""`fpmon check` and `fpmon accept`: the probe and the CI gate, and the lock it reads."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fp_monitor.cli.app import app
from fp_monitor.cli.options import (
    BaselineOption,
    ConcurrencyOption,
    ConfigOption,
    FailOnOption,
    FormatOption,
    HistoryOption,
    JsonOption,
    OutputFormat,
    SamplesOption,
    ShardOption,
    SourceChoice,
    SourceOption,
    TargetsArgument,
    chosen_format,
    require_baseline,
    sharded,
    stderr_line,
    warn_insecure,
)
from fp_monitor.domain.errors import ConfigError, ExitCode
from fp_monitor.domain.models import FailOn, Status

if TYPE_CHECKING:
    from fp_monitor.domain.models import CheckResult


@app.command()
def check(
    ctx: typer.Context,
    targets: TargetsArgument = None,
    config: ConfigOption = None,
    history: HistoryOption = None,
    baseline: BaselineOption = None,
    as_json: JsonOption = False,
    output_format: FormatOption = OutputFormat.TABLE,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Print only the targets that are unexpected or could not be probed (nothing "
            "when there are none), whatever the exit code.",
        ),
    ] = False,
    samples: SamplesOption = None,
    fail_on: FailOnOption = FailOn.NEW,
    exit_zero: Annotated[
        bool, typer.Option("--exit-zero", help="Report only: exit 0 instead of 1 or 3.")
    ] = False,
    no_record: Annotated[
        bool, typer.Option("--no-record", help="Dry run: probe and compare, record nothing.")
    ] = False,
    locked: Annotated[
        bool, typer.Option("--locked", help="A target with no lock entry is unexpected (exit 1).")
    ] = False,
    junit: Annotated[
        Path | None,
        typer.Option(help="Also write a JUnit XML report here.", show_default=False),
    ] = None,
    concurrency: ConcurrencyOption = 32,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            help="Also write Prometheus metrics here (node-exporter textfile, e.g. fpmon.prom).",
            show_default=False,
        ),
    ] = None,
    source: SourceOption = SourceChoice.ALL,
    shard: ShardOption = None,
) -> int:
    """Probe targets, record every observation, show what changed, exit with a code for CI."""
    from fp_monitor.check import CheckOptions
    from fp_monitor.config.settings import load_config
    from fp_monitor.fileio import check_writable
    from fp_monitor.output.metrics import check_textfile
    from fp_monitor.pipeline import Reports, check_round, send

    shown_format = chosen_format(ctx, as_json, output_format)
    require_baseline(baseline)
    loaded = load_config(config, history=history, baseline=baseline)
    names = sharded(loaded, targets, shard)
    if shard is not None and not names:
        # A CI matrix may have more shards than targets: an empty one has nothing to fail.
        stderr_line(f"fpmon: shard {shard} holds none of the targets: nothing to check")
        if shown_format is not OutputFormat.TABLE:  # a step that parses it gets a document
            from fp_monitor.domain.models import CheckResult

            nothing = CheckResult(uuid.uuid4().hex, datetime.now(UTC), (), ExitCode.OK, False)
            _print_check(nothing, shown_format)
        return ExitCode.OK
    warn_insecure(loaded.select(names))
    if metrics_file is not None:
        if no_record:
            raise ConfigError("--metrics-file reads the recorded history: drop --no-record")
        check_textfile(metrics_file)
    if junit is not None:
        check_writable(junit, "--junit")
    options = CheckOptions(
        samples=samples,
        fail_on=fail_on,
        exit_zero=exit_zero,
        record=not no_record,
        concurrency=concurrency,
        locked=locked,
        sources=source.sources,
    )
    reports = Reports(os.environ, sys.stdout, junit=junit, metrics_file=metrics_file)
    round_ = check_round(loaded, names, options, reports=reports)
    for failure in send(loaded, round_):
        stderr_line(f"fpmon: warning: {failure}")
    result = round_.result
    if quiet:
        # Report-only mode (--exit-zero) must still report: what is shown depends on the
        # targets, not on the exit code.
        worth = tuple(t for t in result.targets if t.unexpected or t.status is Status.ERROR)
        if not worth:
            return result.exit_code
        result = dataclasses.replace(result, targets=worth)
    _print_check(result, shown_format)
    return result.exit_code


def _print_check(result: CheckResult, output_format: OutputFormat) -> None:
    if output_format is OutputFormat.JSON:
        from fp_monitor.output.contracts import check_json

        print(json.dumps(check_json(result), indent=2))
    elif output_format in (OutputFormat.JSONL, OutputFormat.CSV):
        from fp_monitor.output.contracts import CHECK_TARGET_FIELDS, check_json
        from fp_monitor.output.formats import print_document

        document = check_json(result)
        print_document(output_format, document, "targets", CHECK_TARGET_FIELDS, sys.stdout)
    elif output_format is OutputFormat.MARKDOWN:
        from fp_monitor.output.reports import markdown

        print(markdown(result), end="")
    else:
        from fp_monitor.output.render import make_console, render_check

        render_check(make_console(), result)


@app.command()
def accept(
    targets: TargetsArgument = None,
    config: ConfigOption = None,
    history: HistoryOption = None,
    baseline: BaselineOption = None,
    probe: Annotated[
        bool, typer.Option("--probe", help="Run a check first and accept what it saw.")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="Make the lock equal to what was observed (default: add to it)."
        ),
    ] = False,
    samples: SamplesOption = None,
) -> int:
    """Write the latest observed fingerprints and resolved models into the lock file."""
    from fp_monitor.accept import run_accept
    from fp_monitor.check import CheckOptions
    from fp_monitor.cli.display import render_accept
    from fp_monitor.config.settings import load_config

    loaded = load_config(config, history=history, baseline=baseline)
    result = run_accept(
        loaded,
        targets or [],
        replace=replace,
        probe_first=probe,
        check_options=CheckOptions(samples=samples),
    )
    render_accept(loaded.baseline, result)
    return result.exit_code
