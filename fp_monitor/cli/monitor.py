"""`fpmon watch` and `fpmon notify test`: monitoring over time and its notifications."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from fp_monitor.cli.app import app
from fp_monitor.cli.options import (
    MAX_COUNT,
    BaselineOption,
    ConcurrencyOption,
    ConfigOption,
    FailOnOption,
    HistoryOption,
    Jitter,
    Reported,
    SamplesOption,
    ShardOption,
    SourceChoice,
    SourceOption,
    TargetsArgument,
    duration,
    parse_jitter,
    require_baseline,
    sharded,
    stderr_line,
    warn_insecure,
)
from fp_monitor.cli.usage import FlagGroup
from fp_monitor.domain.errors import ConfigError, ExitCode
from fp_monitor.domain.models import Event, FailOn
from fp_monitor.domain.text import clean

if TYPE_CHECKING:
    pass


@app.command()
def watch(
    every: Annotated[
        float,
        typer.Option(
            parser=duration,
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
        Jitter,
        typer.Option(
            parser=parse_jitter,
            metavar="SHARE|DURATION",
            help="Vary each interval by up to this much, a share of it (10%) or a duration "
            "(5s), so that watchers started together drift apart; 0 for none.",
        ),
    ] = "10%",  # type: ignore[assignment]  # typed as on the command line: the parser reads it
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
    shard: ShardOption = None,
) -> int:
    """Check repeatedly; notify on changes and errors, serve Prometheus metrics."""
    from fp_monitor.check import CheckOptions
    from fp_monitor.cli.display import watch_display
    from fp_monitor.config.settings import load_config
    from fp_monitor.domain.text import plural
    from fp_monitor.output.render import make_console
    from fp_monitor.watch import WatchOptions, run_watch

    jitter_share = jitter.share_of(every)
    require_baseline(baseline)
    loaded = load_config(config, history=history, baseline=baseline)
    names = sharded(loaded, targets, shard)
    if shard is not None and not names:
        # A watcher would wait for ever on nothing: the shard count is wrong for this fleet.
        raise ConfigError(
            f"--shard {shard}: holds none of the targets; use fewer shards than targets"
        )
    warn_insecure(loaded.select(names))
    check_options = CheckOptions(
        samples=samples, fail_on=fail_on, concurrency=concurrency, sources=source.sources
    )
    options = WatchOptions(
        every=every,
        count=count,
        jitter=jitter_share,
        check=check_options,
        metrics_addr=metrics_addr,
        metrics_port=metrics_port,
    )
    with watch_display(make_console(), stderr_line) as display:
        summary = run_watch(loaded, names, options, display)
    if summary.stopped_by:
        done = plural(summary.checks, "check")
        stderr_line(f"fpmon: watch stopped by {summary.stopped_by} after {done}")
        raise Reported(summary.exit_code)  # that line is all: no "interrupted" after it
    return summary.exit_code


notify_app = typer.Typer(
    help="Notifications: the notify.NAME tables of the config.",
    no_args_is_help=True,
    cls=FlagGroup,
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
