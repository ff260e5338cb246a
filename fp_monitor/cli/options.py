"""What the commands share: the common options and arguments, the parsers of durations,
percentages and times, and the one way to print a line on stderr (cleaned and redacted)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer._click.core import ParameterSource
from typer._click.exceptions import UsageError

from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.models import ALL_SOURCES, FailOn, Source
from fp_monitor.domain.shards import Shard, parse_shard, take_shard
from fp_monitor.domain.text import clean
from fp_monitor.net.redact import redact

if TYPE_CHECKING:
    from fp_monitor.config.settings import Config, Target


EXIT_CODES_HELP = (
    "Exit codes: 0 everything probed, nothing unexpected; 1 an unexpected change (per "
    "--fail-on); 2 usage or configuration error, nothing probed or written; 3 a target could "
    "not be probed; 4 the history could not be read or written; 70 internal error (--debug "
    "shows the traceback); 130 interrupted."
)


class Reported(Exception):
    """A command has printed why it ended: `main` exits with `code` and adds no line of its own
    (a watch stopped by Ctrl-C says so itself, with how many checks it made)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


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
    """How a command prints its data: the same records and field names in every format."""

    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"
    MARKDOWN = "markdown"


FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        help="How to print it: a table (plain when piped), one JSON document, JSON lines (one "
        "record a line), CSV, or a markdown table.",
    ),
]


JsonOption = Annotated[bool, typer.Option("--json", help="Same as --format json.")]


def chosen_format(ctx: typer.Context, as_json: bool, output_format: OutputFormat) -> OutputFormat:
    """--format, or json for --json; both at once must agree."""
    if not as_json:
        return output_format
    given = ctx.get_parameter_source("output_format")
    if output_format is not OutputFormat.JSON and given is not ParameterSource.DEFAULT:
        raise UsageError(
            f"--json means --format json, which disagrees with --format {output_format.value}: "
            "give one of them",
            ctx=ctx,
        )
    return OutputFormat.JSON


ShownSourceOption = Annotated[
    SourceChoice,
    typer.Option(
        "--source",
        help="Whose records: fpmon's probes, your application's recorded traffic, or all.",
    ),
]


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


def shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


ShardOption = Annotated[
    Shard | None,
    typer.Option(
        parser=shard,
        metavar="I/N",
        help="Only shard I of N: the targets whose name hashes to it (SHA-256 of the name, "
        "mod N), stable across runs and machines, so N machines split the targets with no "
        "coordinator. A shard that holds none: check says so and exits 0, watch exits 2.",
        show_default=False,
    ),
]


def sharded(config: Config, targets: list[str] | None, shard: Shard | None) -> list[str]:
    """The target names a command probes: those named (default: every enabled target), of
    `shard` only; empty when the shard holds none of them."""
    if shard is None:
        return targets or []
    return take_shard((t.name for t in config.select(targets or [])), shard)


def percent(text: str) -> float:
    number = text.strip().removesuffix("%")
    try:
        share = float(number) / 100
    except ValueError:
        share = -1.0
    if not (text.strip().endswith("%") or share == 0) or not 0 <= share < 1:
        raise typer.BadParameter(f"{text!r}: expected a percentage from 0% to 99%, like 10%")
    return share


@dataclass(frozen=True)
class Jitter:
    """--jitter as written: a share of the interval (10%) or a duration (5s); 0 is none."""

    text: str
    share: float | None = None
    seconds: float | None = None

    def share_of(self, every: float) -> float:
        """The share of an interval of `every` seconds that this jitter varies it by."""
        if self.share is not None:
            return self.share
        assert self.seconds is not None  # parse_jitter gives one or the other
        if self.seconds == 0:
            return 0.0
        if every <= 0 or self.seconds >= every:
            raise UsageError(
                f"--jitter {self.text}: must be shorter than --every, or a share like 10%"
            )
        return self.seconds / every


def parse_jitter(text: str) -> Jitter:
    """`10%` (of the interval) or `5s` (a duration); a bare number other than 0 says neither,
    so it is refused with both readings."""
    stripped = text.strip()
    if stripped.endswith("%") or stripped in ("0", "0.0"):
        return Jitter(stripped, share=percent(stripped))
    try:
        return Jitter(stripped, seconds=duration(stripped))
    except typer.BadParameter:
        try:
            float(stripped)
        except ValueError:
            problem = "is neither a share of the interval (10%) nor a duration (5s)"
        else:
            problem = f"has no unit: write {stripped}% (a share of the interval) or {stripped}s"
        raise typer.BadParameter(f"{text!r} {problem}") from None


def moment(text: str) -> datetime:
    from fp_monitor.config.settings import parse_moment

    try:
        return parse_moment(text, datetime.now(UTC))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def when_option(help: str, *, has_default: bool = False) -> Any:
    """An option that takes a time: a duration back from now, or an ISO date. A default is
    written as text in the signature (`= "30d"`): typer passes it through the parser when the
    command runs, so it counts back from then, and the help shows it as written."""
    return typer.Option(
        parser=moment,
        metavar="WHEN",
        help=f"{help}: a duration back from now (30d, 12h, 0s) or an ISO date.",
        show_default=has_default,
    )


def require_baseline(path: Path | None) -> None:
    """An explicit --baseline names a lock to check against: a missing file is a mistake, not
    an empty lock (`fpmon accept` writes a new one)."""
    if path is not None and not path.exists():
        raise ConfigError(
            f"--baseline {path}: no such file (`fpmon accept --baseline {path}` writes one; "
            "without --baseline, the default lock is used and may not exist yet)"
        )


def warn_insecure(targets: Sequence[Target]) -> None:
    from fp_monitor.probe.request import sends_key_in_clear

    for target in targets:
        if sends_key_in_clear(target):
            stderr_line(f"fpmon: warning: target {target.name} sends its API key over plain http")


def stderr_line(message: str) -> None:
    print(redact(clean(message)), file=sys.stderr)
