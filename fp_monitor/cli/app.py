"""The typer app: the root options, and `main`, the one place where errors become exit codes
and messages. The commands live one group per module beside it (gate, monitor, setup, history,
traffic): each parses, calls one use case and renders."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer
from typer._click.exceptions import UsageError
from typer.exceptions import TyperException

from fp_monitor import __version__
from fp_monitor.cli.options import EXIT_CODES_HELP, Reported, stderr_line
from fp_monitor.cli.usage import FlagGroup, usage_error
from fp_monitor.domain.errors import ExitCode, FpmonError

app = typer.Typer(
    name="fpmon",
    cls=FlagGroup,
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
            stderr_line("fpmon: interrupted")
        return code
    except Reported as exc:
        return exc.code
    except FpmonError as exc:
        stderr_line(f"fpmon: error: {exc}")
        return exc.exit_code
    except TyperException as exc:
        # Usage errors: one line and where to read more; exit 2 like every usage error.
        message = usage_error(exc) if isinstance(exc, UsageError) else exc.format_message()
        message = message.strip()
        if not message:  # `fpmon` alone: typer has printed the help already
            return ExitCode.USAGE
        if "\n" in message:
            print(message, file=sys.stderr)
        else:
            context = getattr(exc, "ctx", None)
            where = context.command_path if context is not None else "fpmon"
            stderr_line(f"fpmon: error: {message} (see `{where} --help`)")
        return ExitCode.USAGE
    except (KeyboardInterrupt, typer.Abort):
        stderr_line("fpmon: interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`fpmon history | head`): not an error worth a traceback.
        sys.stderr.close()
        return ExitCode.OK
    except Exception as exc:
        if debug:
            for line in "".join(traceback.format_exception(exc)).splitlines():
                stderr_line(line)
        where = "the traceback is above" if debug else "rerun with --debug for the traceback"
        stderr_line(f"fpmon: internal error: {type(exc).__name__}: {exc} (a bug; {where})")
        return ExitCode.INTERNAL


# Registered in this order, which is the order of `fpmon --help`.
from fp_monitor.cli import gate, monitor, setup, history, traffic  # noqa: E402, F401, I001
