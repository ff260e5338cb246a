"""Getting started: `fpmon targets`, `init`, `demo` and `fake-api`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fp_monitor.cli.app import app
from fp_monitor.cli.options import (
    ConfigOption,
    FormatOption,
    JsonOption,
    OutputFormat,
    chosen_format,
    stderr_line,
)
from fp_monitor.domain.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    pass


@app.command()
def targets(
    ctx: typer.Context,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    output_format: FormatOption = OutputFormat.TABLE,
) -> int:
    """Show the resolved targets (preset + overrides) and which key variables are missing."""
    from fp_monitor.config.settings import load_config
    from fp_monitor.output.contracts import TARGET_FIELDS, targets_json
    from fp_monitor.output.formats import markdown_table, print_document
    from fp_monitor.output.layout import Fitted
    from fp_monitor.output.render import make_console, targets_notes, targets_table

    shown = chosen_format(ctx, as_json, output_format)
    loaded = load_config(config)
    if shown is OutputFormat.JSON:
        print(json.dumps(targets_json(loaded), indent=2))
    elif shown is OutputFormat.TABLE:
        make_console().print(Fitted(targets_table(loaded)))
        for note in targets_notes(loaded):  # beside the table, not in it: stdout stays a table
            stderr_line(f"note: {note}")
    elif shown is OutputFormat.MARKDOWN:
        print(markdown_table(targets_table(loaded)), end="")
    else:
        print_document(shown, targets_json(loaded), "targets", TARGET_FIELDS, sys.stdout)
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
    from fp_monitor.devtools.fake_api import (
        CONTROL_ENDPOINTS,
        FakeAPI,
        default_fleet,
        load_config,
        serve,
    )

    try:
        fake = load_config(config) if config else FakeAPI(default_fleet(), host=host, port=port)
    except ValueError as exc:  # the fleet file: missing, not TOML, or a key it cannot take
        raise ConfigError(f"--config {exc}") from None

    def ready(base_url: str) -> None:
        models = ", ".join(fake.models()) or "none by name"
        print(f"fake API serving on {base_url} (Ctrl-C to stop)")
        print(f"models: {models} (any other model: the default behaviour)")
        print(f"control endpoints: {', '.join(CONTROL_ENDPOINTS)}", flush=True)

    try:
        serve(fake, ready)
    except OSError as exc:  # only binding can fail: once it listens, it serves until stopped
        where = "{}:{}".format(*fake.address)
        raise ConfigError(
            f"cannot listen on {where}: {exc.strerror or exc} (another --port, or 0 for any "
            "free port)"
        ) from None
    return ExitCode.OK
