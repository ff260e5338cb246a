"""An application's own traffic: `fpmon proxy`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from fp_monitor.cli.app import app
from fp_monitor.cli.options import (
    ConfigOption,
    HistoryOption,
    stderr_line,
)
from fp_monitor.domain.errors import ExitCode

if TYPE_CHECKING:
    from fp_monitor.traffic.recording import Recorder


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
    from fp_monitor.net.urls import in_clear, is_loopback
    from fp_monitor.traffic.proxy import check_upstream, parse_listen, serve_proxy, shown_upstream

    check_upstream(upstream)  # before any warning about it: a refused URL is one line
    if not is_loopback(parse_listen(listen)[0]):
        stderr_line(f"warning: {listen} is reachable from other machines: anyone there can use it")
    shown = shown_upstream(upstream)
    if in_clear(upstream):
        stderr_line(f"warning: {shown} is plain http: your application's key travels in clear")

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
