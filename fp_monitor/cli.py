"""The typer app. Each command parses, calls one core function and renders; `main` is the one
place where errors become exit codes and messages."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.exceptions import TyperException

from fp_monitor import __version__
from fp_monitor.errors import ExitCode, FpmonError
from fp_monitor.models import ALL_SOURCES, FailOn, Source
from fp_monitor.redact import redact
from fp_monitor.render import clean

if TYPE_CHECKING:
    from fp_monitor.config import Target
    from fp_monitor.models import CheckResult
    from fp_monitor.recording import Recorder

EXIT_CODES_HELP = (
    "Exit codes: 0 everything probed, nothing unexpected; 1 an unexpected change (per "
    "--fail-on); 2 usage or configuration error, nothing probed or written; 3 a target could "
    "not be probed; 4 the history could not be read or written; 70 internal error (--debug "
    "shows the traceback); 130 interrupted."
)

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
        help="Whose observations make the known and previous sets: fpmon's probes, the "
        "application's recorded traffic (fpmon proxy, recording_client), or all.",
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
    fail_on: Annotated[
        FailOn, typer.Option(help="What exits 1: a new value, any change, or never.")
    ] = FailOn.NEW,
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
    concurrency: Annotated[
        int, typer.Option(min=1, max=1024, help="Requests in flight at once, over all targets.")
    ] = 32,
    source: SourceOption = SourceChoice.ALL,
) -> int:
    """Probe targets, record every observation, show what changed, exit with a code for CI."""
    from fp_monitor.check import CheckOptions, run_check
    from fp_monitor.config import load_config
    from fp_monitor.reports import publish

    loaded = load_config(config, history=history, baseline=baseline)
    _warn_insecure(loaded.select(targets or []))
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
    if quiet and result.exit_code == ExitCode.OK:
        return result.exit_code
    _print_check(result, OutputFormat.JSON if as_json else output_format)
    return result.exit_code


def _print_check(result: CheckResult, output_format: OutputFormat) -> None:
    if output_format is OutputFormat.JSON:
        from fp_monitor.render import check_json

        print(json.dumps(check_json(result), indent=2))
    elif output_format is OutputFormat.MARKDOWN:
        from fp_monitor.reports import markdown

        print(markdown(result), end="")
    else:
        from fp_monitor.render import make_console, render_check

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
    from fp_monitor.config import load_config
    from fp_monitor.render import render_accept

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


def _warn_insecure(targets: Sequence[Target]) -> None:
    from fp_monitor.probe import sends_key_in_clear

    for target in targets:
        if sends_key_in_clear(target):
            _stderr(f"warning: target {target.name} sends its API key over plain http")


@app.command()
def targets(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the targets as JSON.")] = False,
) -> int:
    """Show the resolved targets (preset + overrides) and which key variables are missing."""
    from fp_monitor.config import load_config
    from fp_monitor.render import make_console, targets_json, targets_table

    loaded = load_config(config)
    if as_json:
        print(json.dumps(targets_json(loaded), indent=2))
    else:
        make_console().print(targets_table(loaded))
    return ExitCode.OK


@app.command()
def init(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Where to write the config.")
    ] = Path("fpmon.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> int:
    """Write a starter fpmon.toml with a target for each provider key found in the environment."""
    from fp_monitor.starter import write_starter_config

    found = write_starter_config(config, force=force)
    names = ", ".join(found) if found else "none (an openai target to fill in)"
    print(f"wrote {config}; targets from provider keys in the environment: {names}")
    print("next: `fpmon targets` to review them, then `fpmon check`")
    return ExitCode.OK


@app.command()
def demo() -> int:
    """See fpmon work with no keys and no network: a built-in fake API and a temporary history."""
    from fp_monitor.demo import run_demo
    from fp_monitor.render import make_console

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
            help="Fake fleet TOML (see fp_monitor/fake_api.py).",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Serve the built-in OpenAI-compatible fake API on loopback, to rehearse alert pipelines."""
    from fp_monitor.fake_api import FakeAPI, default_fleet, load_config, serve

    fake = load_config(config) if config else FakeAPI(default_fleet(), host=host, port=port)

    def ready(base_url: str) -> None:
        print(f"fake API serving on {base_url} (Ctrl-C to stop)", flush=True)

    serve(fake, ready)
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
    from fp_monitor.proxy import in_clear, is_loopback, parse_listen, serve_proxy

    if not is_loopback(parse_listen(listen)[0]):
        _stderr(f"warning: {listen} is reachable from other machines: anyone there can use it")
    if in_clear(upstream):
        _stderr(f"warning: {upstream} is plain http: your application's key travels in clear")

    def ready(url: str, recorder: Recorder) -> None:
        print(
            f"fpmon proxy: {url} -> {upstream} (target {target}, history "
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
