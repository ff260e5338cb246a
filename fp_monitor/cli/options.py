"""What the commands share: the common options and arguments, the parsers of durations,
percentages and times, and the one way to print a line on stderr (cleaned and redacted)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fp_monitor.domain.models import ALL_SOURCES, FailOn, Source
from fp_monitor.domain.text import clean
from fp_monitor.net.redact import redact

if TYPE_CHECKING:
    from fp_monitor.config.settings import Target


EXIT_CODES_HELP = (
    "Exit codes: 0 everything probed, nothing unexpected; 1 an unexpected change (per "
    "--fail-on); 2 usage or configuration error, nothing probed or written; 3 a target could "
    "not be probed; 4 the history could not be read or written; 70 internal error (--debug "
    "shows the traceback); 130 interrupted."
)


MAX_COUNT = 1_000_000_000
"""The largest count a flag takes: beyond it, SQLite's and Python's integers overflow."""


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
    # A string: a PostgreSQL URL is not a path (a Path would fold its "//").
    str | None,
    typer.Option(
        "--history",
        help="History database: a SQLite file or a postgresql:// URL (default: $FPMON_HISTORY, "
        "the config's `history`, then the user data dir).",
        show_default=False,
    ),
]


TargetsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Target names from the config (default: every enabled target).", show_default=False
    ),
]


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


TargetArgument = Annotated[
    str | None,
    typer.Argument(
        help="A target name (default: every target in the history).", show_default=False
    ),
]


def duration(text: str) -> float:
    from fp_monitor.config.settings import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def percent(text: str) -> float:
    number = text.strip().removesuffix("%")
    try:
        share = float(number) / 100
    except ValueError:
        share = -1.0
    if not (text.strip().endswith("%") or share == 0) or not 0 <= share < 1:
        raise typer.BadParameter(f"{text!r}: expected a percentage from 0% to 99%, like 10%")
    return share


def moment(text: str) -> datetime:
    from fp_monitor.config.settings import parse_moment

    try:
        return parse_moment(text, datetime.now(UTC))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def when_option(help: str, default: str | None = None) -> Any:
    """An option that takes a time: a duration back from now, or an ISO date."""
    return typer.Option(
        parser=moment,
        metavar="WHEN",
        help=f"{help}: a duration back from now (30d, 12h, 0s) or an ISO date.",
        # typer passes a default through the parser, so the default is the text
        default_factory=None if default is None else lambda: default,
        show_default=default or False,
    )


def warn_insecure(targets: Sequence[Target]) -> None:
    from fp_monitor.probe.request import sends_key_in_clear

    for target in targets:
        if sends_key_in_clear(target):
            stderr_line(f"warning: target {target.name} sends its API key over plain http")


def stderr_line(message: str) -> None:
    print(redact(clean(message)), file=sys.stderr)
