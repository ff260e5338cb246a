"""An application's own traffic: `fpmon proxy` in its request path, `fpmon otlp` fed by its
OpenTelemetry instrumentation."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from fp_monitor.cli.app import app
from fp_monitor.cli.options import (
    ConfigOption,
    HistoryOption,
    stderr_line,
)
from fp_monitor.domain.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    from fp_monitor.traffic.recording import Recorder


@app.command()
def proxy(
    upstream: Annotated[
        str,
        typer.Option(help="The API to forward to, e.g. https://api.x.ai/v1.", show_default=False),
    ],
    target: Annotated[
        str,
        typer.Option(
            help="The target name the responses are recorded under: one from the config or "
            "the history, unless --new-target."
        ),
    ],
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:8787",
    config: ConfigOption = None,
    history: HistoryOption = None,
    new_target: Annotated[
        bool,
        typer.Option(
            "--new-target",
            help="Record under a --target that neither the config nor the history knows yet.",
        ),
    ] = False,
) -> int:
    """Record the fingerprints of an application's own traffic: a local reverse proxy."""
    from fp_monitor.config.settings import load_config
    from fp_monitor.net.urls import in_clear, is_loopback
    from fp_monitor.reading import require_known_target
    from fp_monitor.traffic.proxy import check_upstream, parse_listen, serve_proxy, shown_upstream

    check_upstream(upstream)  # before any warning about it: a refused URL is one line
    host = parse_listen(listen)[0]
    if not new_target:
        loaded = load_config(config, history=history, require_targets=False)
        require_known_target(loaded, target)
    if not is_loopback(host):
        stderr_line(
            f"fpmon: warning: {listen} is reachable from other machines: anyone there can use it"
        )
    shown = shown_upstream(upstream)
    if in_clear(upstream):
        stderr_line(
            f"fpmon: warning: {shown} is plain http: your application's key travels in clear"
        )

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


@app.command()
def otlp(
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:4318",
    target: Annotated[
        str | None,
        typer.Option(help="Record every call under this target.", show_default=False),
    ] = None,
    auto_targets: Annotated[
        bool,
        typer.Option(
            "--auto-targets",
            help="Make a target named HOST/MODEL of each unmatched host and model (in the "
            "config: auto_targets = true in the otlp table).",
        ),
    ] = False,
    token_env: Annotated[
        str | None,
        typer.Option(
            help="Environment variable holding the bearer token senders must present.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    history: HistoryOption = None,
) -> int:
    """Record the fingerprints in an application's OpenTelemetry traces and metrics: an OTLP/HTTP
    receiver (POST /v1/traces, /v1/metrics; GET /status, /metrics)."""
    from fp_monitor.config.settings import load_config
    from fp_monitor.traffic.otlp import IntakeOptions, check_listen, serve_otlp

    if not check_listen(listen):
        stderr_line(
            f"warning: {listen} is reachable from other machines: anyone there can send to it"
        )
    token = None
    if token_env is not None:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise ConfigError(f"--token-env {token_env}: that environment variable is not set")
    loaded = load_config(config, history=history, require_targets=False)
    options = IntakeOptions(
        target=target, auto_targets=auto_targets or loaded.otlp_auto_targets, token=token
    )

    def ready(url: str) -> None:
        print(
            f"fpmon otlp: {url} (POST /v1/traces, /v1/metrics; GET /status, /metrics; history "
            f"{loaded.history}); SIGTERM or Ctrl-C to stop",
            flush=True,
        )

    serve_otlp(listen, loaded, options, config=config, history=history, on_ready=ready)
    return ExitCode.OK
