"""The typer app. Each command parses, calls one core function and renders; `main` is the one
place where errors become exit codes and messages."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.exceptions import TyperException

from fp_monitor import __version__
from fp_monitor.domain.errors import ConfigError, ExitCode, FpmonError
from fp_monitor.domain.models import ALL_SOURCES, Event, FailOn, Source
from fp_monitor.domain.text import clean
from fp_monitor.net.redact import redact

if TYPE_CHECKING:
    from fp_monitor.config.settings import Target
    from fp_monitor.domain.models import CheckResult
    from fp_monitor.traffic.recording import Recorder

EXIT_CODES_HELP = (
    "Exit codes: 0 everything probed, nothing unexpected; 1 an unexpected change (per "
    "--fail-on); 2 usage or configuration error, nothing probed or written; 3 a target could "
    "not be probed; 4 the history could not be read or written; 70 internal error (--debug "
    "shows the traceback); 130 interrupted."
)

MAX_COUNT = 1_000_000_000
"""The largest count a flag takes: beyond it, SQLite's and Python's integers overflow."""

app = typer.Typer(
    name="fpmon",
    help=(
        "Monitor the backend fingerprints (system_fingerprint) of OpenAI-compatible LLM APIs.\n\n"
        "Start with `fpmon demo` (no keys needed), then `fpmon init` and `fpmon check`.\n\n"
        + EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $FPMON_CONFIG, ./fpmon.toml, then the user config dir).",
        show_default=False,
    ),
]
HistoryOption = Annotated[
    Path | None,
    typer.Option(
        "--history",
        help="History database (default: $FPMON_HISTORY, the config's `history`, then the user "
        "data dir).",
        show_default=False,
    ),
]
TargetsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Target names from the config (default: every enabled target).", show_default=False
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"fpmon {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of an internal error (any position)."),
    ] = False,
) -> None:
    """Monitor the backend fingerprints of OpenAI-compatible LLM APIs."""


BaselineOption = Annotated[
    Path | None,
    typer.Option(
        "--baseline",
        help="Lock file (default: $FPMON_BASELINE, the config's `baseline`, then fpmon.lock "
        "beside the config file).",
        show_default=False,
    ),
]
SamplesOption = Annotated[
    int | None,
    typer.Option(
        min=1, max=1000, help="Requests per target (overrides the config).", show_default=False
    ),
]


ConcurrencyOption = Annotated[
    int, typer.Option(min=1, max=1024, help="Requests in flight at once, over all targets.")
]
FailOnOption = Annotated[
    FailOn, typer.Option(help="What exits 1: a new value, any change, or never.")
]


class SourceChoice(StrEnum):
    PROBE = "probe"
    TRAFFIC = "traffic"
    ALL = "all"

    @property
    def sources(self) -> frozenset[Source]:
        return ALL_SOURCES if self is SourceChoice.ALL else frozenset({Source(self.value)})


SourceOption = Annotated[
    SourceChoice,
    typer.Option(
        "--source",
        help="Whose observations make the known set: fpmon's probes, the application's "
        "recorded traffic (fpmon proxy, recording_client), or all.",
    ),
]


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"


@app.command()
def check(
    targets: TargetsArgument = None,
    config: ConfigOption = None,
    history: HistoryOption = None,
    baseline: BaselineOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="How to print the result.")
    ] = OutputFormat.TABLE,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Print only when something changed or failed."),
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
) -> int:
    """Probe targets, record every observation, show what changed, exit with a code for CI."""
    from fp_monitor.check import CheckOptions, run_check
    from fp_monitor.config.settings import load_config
    from fp_monitor.notify.dispatch import notify_check
    from fp_monitor.output.metrics import check_textfile, write_textfile
    from fp_monitor.output.reports import publish

    loaded = load_config(config, history=history, baseline=baseline)
    _warn_insecure(loaded.select(targets or []))
    if metrics_file is not None:
        if no_record:
            raise ConfigError("--metrics-file reads the recorded history: drop --no-record")
        check_textfile(metrics_file)
    options = CheckOptions(
        samples=samples,
        fail_on=fail_on,
        exit_zero=exit_zero,
        record=not no_record,
        concurrency=concurrency,
        locked=locked,
        sources=source.sources,
    )
    result = run_check(loaded, targets or [], options)
    publish(result, junit=junit, environ=os.environ, stdout=sys.stdout)
    if metrics_file is not None:
        write_textfile(metrics_file, loaded, result)
    for failure in notify_check(loaded, result):
        _stderr(f"fpmon: warning: {failure}")
    if quiet and result.exit_code == ExitCode.OK:
        return result.exit_code
    _print_check(result, OutputFormat.JSON if as_json else output_format)
    return result.exit_code


def _print_check(result: CheckResult, output_format: OutputFormat) -> None:
    if output_format is OutputFormat.JSON:
        from fp_monitor.output.render import check_json

        print(json.dumps(check_json(result), indent=2))
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


def _duration(text: str) -> float:
    from fp_monitor.config.settings import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _percent(text: str) -> float:
    number = text.strip().removesuffix("%")
    try:
        share = float(number) / 100
    except ValueError:
        share = -1.0
    if not (text.strip().endswith("%") or share == 0) or not 0 <= share < 1:
        raise typer.BadParameter(f"{text!r}: expected a percentage from 0% to 99%, like 10%")
    return share


@app.command()
def watch(
    every: Annotated[
        float,
        typer.Option(
            parser=_duration,
            metavar="DURATION",
            help="From the start of one check to the next: 30s, 5m, 2h.",
            show_default=False,
        ),
    ],
    targets: TargetsArgument = None,
    count: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_COUNT,
            help="Stop after N checks; exit with the most severe code among them.",
            show_default=False,
        ),
    ] = None,
    jitter: Annotated[
        float,
        typer.Option(
            parser=_percent,
            metavar="PERCENT",
            help="Vary each interval by up to this much, so that watchers started together "
            "drift apart.",
        ),
    ] = "10%",  # type: ignore[assignment]  # typed as on the command line: _percent parses it
    config: ConfigOption = None,
    history: HistoryOption = None,
    baseline: BaselineOption = None,
    samples: SamplesOption = None,
    fail_on: FailOnOption = FailOn.NEW,
    concurrency: ConcurrencyOption = 32,
    source: SourceOption = SourceChoice.ALL,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus metrics on this port at /metrics (0: any free port).",
            show_default=False,
        ),
    ] = None,
    metrics_addr: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
) -> int:
    """Check repeatedly; notify on changes and errors, serve Prometheus metrics."""
    from fp_monitor.check import CheckOptions
    from fp_monitor.cli.display import watch_display
    from fp_monitor.config.settings import load_config
    from fp_monitor.domain.text import plural
    from fp_monitor.output.render import make_console
    from fp_monitor.watch import WatchOptions, run_watch

    loaded = load_config(config, history=history, baseline=baseline)
    _warn_insecure(loaded.select(targets or []))
    check_options = CheckOptions(
        samples=samples, fail_on=fail_on, concurrency=concurrency, sources=source.sources
    )
    options = WatchOptions(
        every=every,
        count=count,
        jitter=jitter,
        check=check_options,
        metrics_addr=metrics_addr,
        metrics_port=metrics_port,
    )
    with watch_display(make_console(), _stderr) as display:
        summary = run_watch(loaded, targets or [], options, display)
    if summary.stopped_by:
        done = plural(summary.checks, "check")
        _stderr(f"fpmon: watch stopped by {summary.stopped_by} after {done}")
    return summary.exit_code


notify_app = typer.Typer(
    help="Notifications: the notify.NAME tables of the config.", no_args_is_help=True
)
app.add_typer(notify_app, name="notify")


@notify_app.command("test")
def notify_test(
    name: Annotated[str, typer.Argument(help="The notifier: NAME of a notify.NAME table.")],
    config: ConfigOption = None,
    event: Annotated[Event, typer.Option(help="The kind of sample event.")] = Event.NEW,
) -> int:
    """Send a sample event through one notifier (exit 3 when it fails)."""
    from fp_monitor.config.settings import load_config
    from fp_monitor.notify.dispatch import send_test

    notifier = send_test(load_config(config), name, event)
    print(f"sent a sample {event.value} event through {clean(notifier.name)}")
    return ExitCode.OK


def _warn_insecure(targets: Sequence[Target]) -> None:
    from fp_monitor.probe.request import sends_key_in_clear

    for target in targets:
        if sends_key_in_clear(target):
            _stderr(f"warning: target {target.name} sends its API key over plain http")


@app.command()
def targets(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the targets as JSON.")] = False,
) -> int:
    """Show the resolved targets (preset + overrides) and which key variables are missing."""
    from fp_monitor.config.settings import load_config
    from fp_monitor.output.render import make_console, targets_json, targets_notes, targets_table

    loaded = load_config(config)
    if as_json:
        print(json.dumps(targets_json(loaded), indent=2))
    else:
        make_console().print(targets_table(loaded))
        for note in targets_notes(loaded):  # beside the table, not in it: stdout stays a table
            _stderr(f"note: {note}")
    return ExitCode.OK


@app.command()
def init(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Where to write the config.")
    ] = Path("fpmon.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> int:
    """Write a starter fpmon.toml with a target for each provider key found in the environment."""
    from fp_monitor.config.providers import realities
    from fp_monitor.config.starter import write_starter_config

    found = write_starter_config(config, force=force)
    names = ", ".join(found) if found else "none (an openai target to fill in)"
    print(f"wrote {config}; targets from provider keys in the environment: {names}")
    for name in found:
        print(f"  {name}: {realities(name).summary()}")
    print("next: `fpmon targets` to review them, then `fpmon check`")
    return ExitCode.OK


@app.command()
def demo() -> int:
    """See fpmon work with no keys and no network: a built-in fake API and a temporary history."""
    from fp_monitor.devtools.demo import run_demo
    from fp_monitor.output.render import make_console

    return run_demo(make_console())


@app.command("fake-api")
def fake_api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 0,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="A fleet file (TOML): the models, fingerprints and faults to serve.",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Serve the built-in OpenAI-compatible fake API on loopback, to rehearse alert pipelines."""
    from fp_monitor.devtools.fake_api import FakeAPI, default_fleet, load_config, serve

    fake = load_config(config) if config else FakeAPI(default_fleet(), host=host, port=port)

    def ready(base_url: str) -> None:
        print(f"fake API serving on {base_url} (Ctrl-C to stop)", flush=True)

    serve(fake, ready)
    return ExitCode.OK


ShownSourceOption = Annotated[
    SourceChoice,
    typer.Option(
        "--source",
        help="Whose records: fpmon's probes, your application's recorded traffic, or all.",
    ),
]


class ListFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"


def _moment(text: str) -> datetime:
    from fp_monitor.config.settings import parse_moment

    try:
        return parse_moment(text, datetime.now(UTC))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


TargetArgument = Annotated[
    str | None,
    typer.Argument(
        help="A target name (default: every target in the history).", show_default=False
    ),
]


def _when_option(help: str, default: str | None = None) -> Any:
    """An option that takes a time: a duration back from now, or an ISO date."""
    return typer.Option(
        parser=_moment,
        metavar="WHEN",
        help=f"{help}: a duration back from now (30d, 12h, 0s) or an ISO date.",
        # typer passes a default through the parser, so the default is the text
        default_factory=None if default is None else lambda: default,
        show_default=default or False,
    )


@app.command("history")
def history_command(
    target: TargetArgument = None,
    config: ConfigOption = None,
    history: HistoryOption = None,
    observations: Annotated[
        bool, typer.Option("--observations", help="List the raw observations, not runs.")
    ] = False,
    since: Annotated[datetime | None, _when_option("From this time on")] = None,
    until: Annotated[datetime | None, _when_option("Before this time")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_COUNT, help="Show the newest N (runs or rows).")
    ] = 50,
    output_format: Annotated[
        ListFormat, typer.Option("--format", help="How to print it.")
    ] = ListFormat.TABLE,
    source: ShownSourceOption = SourceChoice.ALL,
) -> int:
    """Show the timeline of fingerprint runs per target, or the raw observations."""
    from fp_monitor.config.settings import load_config
    from fp_monitor.domain.models import Window
    from fp_monitor.output.render import render_observations, render_runs
    from fp_monitor.reading import read_observations, read_runs

    loaded = load_config(config, history=history, require_targets=False)
    window = Window(since, until, source.sources)
    if observations:
        records = read_observations(loaded.history, target, window, limit)
        render_observations(records, output_format.value, sys.stdout)
    else:
        runs = read_runs(loaded.history, target, window, limit)
        render_runs(runs, output_format.value, sys.stdout)
    return ExitCode.OK


@app.command()
def stats(
    since: Annotated[datetime, _when_option("From this time on", default="30d")],
    target: TargetArgument = None,
    config: ConfigOption = None,
    history: HistoryOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    source: ShownSourceOption = SourceChoice.ALL,
) -> int:
    """Per target: values seen, the set served now with shares, changes, errors, latency."""
    from fp_monitor.config.settings import load_config
    from fp_monitor.output.render import render_stats, stats_json
    from fp_monitor.reading import read_stats

    loaded = load_config(config, history=history, require_targets=False)
    now = datetime.now(UTC)
    found = read_stats(loaded.history, target, since, now, source.sources, loaded.grammars)
    if as_json:
        print(json.dumps(stats_json(found, since, now), indent=2, ensure_ascii=False))
    else:
        render_stats(found, sys.stdout)
    return ExitCode.OK


@app.command()
def verify(config: ConfigOption = None, history: HistoryOption = None) -> int:
    """Check the tamper-evident chain of the history; exit 1 at the first broken record."""
    from fp_monitor.audit import verify_history
    from fp_monitor.cli.display import render_verified
    from fp_monitor.config.settings import load_config

    loaded = load_config(config, history=history, require_targets=False)
    render_verified(verify_history(loaded.history))
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

    loaded = load_config(config, history=history, require_targets=False)
    count = export_history(loaded.history, output, sys.stdout)
    if output is not None:
        print(f"exported {count} records to {output}")
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
    render_imported(file, loaded.history, import_history(loaded.history, file))
    return ExitCode.OK


@app.command()
def prune(
    config: ConfigOption = None,
    history: HistoryOption = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            parser=_duration,
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


@app.command()
def proxy(
    upstream: Annotated[
        str,
        typer.Option(help="The API to forward to, e.g. https://api.x.ai/v1.", show_default=False),
    ],
    target: Annotated[str, typer.Option(help="The target name the responses are recorded under.")],
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:8787",
    config: ConfigOption = None,
    history: HistoryOption = None,
) -> int:
    """Record the fingerprints of an application's own traffic: a local reverse proxy."""
    from fp_monitor.traffic.proxy import (
        check_upstream,
        in_clear,
        is_loopback,
        parse_listen,
        serve_proxy,
        shown_upstream,
    )

    check_upstream(upstream)  # before any warning about it: a refused URL is one line
    if not is_loopback(parse_listen(listen)[0]):
        _stderr(f"warning: {listen} is reachable from other machines: anyone there can use it")
    shown = shown_upstream(upstream)
    if in_clear(upstream):
        _stderr(f"warning: {shown} is plain http: your application's key travels in clear")

    def ready(url: str, recorder: Recorder) -> None:
        print(
            f"fpmon proxy: {url} -> {shown} (target {target}, history "
            f"{recorder.history_path}); SIGTERM or Ctrl-C to stop",
            flush=True,
        )

    serve_proxy(
        listen=listen,
        upstream=upstream,
        target=target,
        history=history,
        config=config,
        on_ready=ready,
    )
    return ExitCode.OK


def _stderr(message: str) -> None:
    print(redact(clean(message)), file=sys.stderr)


def _strip_debug(args: list[str]) -> tuple[list[str], bool]:
    """--debug may stand anywhere before a `--`; the commands never see it."""
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    return [a for i, a in enumerate(args) if not (i < end and a == "--debug")], debug


def main(argv: list[str] | None = None) -> int:
    """Run fpmon; every error becomes its documented exit code and one line on stderr."""
    args, debug = _strip_debug(list(sys.argv[1:] if argv is None else argv))
    try:
        code = int(app(args=args, prog_name="fpmon", standalone_mode=False) or 0)
        if code == ExitCode.INTERRUPTED:  # typer turns Ctrl-C inside a command into Exit(130)
            _stderr("fpmon: interrupted")
        return code
    except FpmonError as exc:
        _stderr(f"fpmon: error: {exc}")
        return exc.exit_code
    except TyperException as exc:
        # Usage errors: one line and where to read more; exit 2 like every usage error.
        message = exc.format_message().strip()
        if not message:  # `fpmon` alone: typer has printed the help already
            return ExitCode.USAGE
        if "\n" in message:
            print(message, file=sys.stderr)
        else:
            context = getattr(exc, "ctx", None)
            where = context.command_path if context is not None else "fpmon"
            _stderr(f"fpmon: error: {message} (see `{where} --help`)")
        return ExitCode.USAGE
    except (KeyboardInterrupt, typer.Abort):
        _stderr("fpmon: interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`fpmon history | head`): not an error worth a traceback.
        sys.stderr.close()
        return ExitCode.OK
    except Exception as exc:
        if debug:
            for line in "".join(traceback.format_exception(exc)).splitlines():
                _stderr(line)
        where = "the traceback is above" if debug else "rerun with --debug for the traceback"
        _stderr(f"fpmon: internal error: {type(exc).__name__}: {exc} (a bug; {where})")
        return ExitCode.INTERNAL
