"""Where the proxy's ASGI application would send a request, for hostile request targets
(issue 12); the served proxy is attacked over raw sockets in
tests/e2e/test_hostile_proxy_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fp_monitor.proxy import ProxyApp
from fp_monitor.recording import Recorder

UPSTREAM = "https://gw.example:8443/openai/v1?api-version=2024-10-21"


@pytest.fixture
def app(isolated: Path) -> ProxyApp:
    return ProxyApp(UPSTREAM, Recorder("px", history=isolated / "history.db"))


@pytest.mark.parametrize(
    ("target", "query", "url"),
    [
        (
            "/chat/completions",
            "",
            "https://gw.example:8443/openai/v1/chat/completions?api-version=2024-10-21",
        ),
        (
            "/chat/completions",
            "a=1",
            "https://gw.example:8443/openai/v1/chat/completions?api-version=2024-10-21&a=1",
        ),
        (
            "/%2F%2Fevil.example/x",
            "",
            "https://gw.example:8443/openai/v1/%2F%2Fevil.example/x?api-version=2024-10-21",
        ),
        (
            "/@evil.example/x",
            "",
            "https://gw.example:8443/openai/v1/@evil.example/x?api-version=2024-10-21",
        ),
        (  # escapes are sent as they came, on the upstream's origin whatever they decode to
            "/%2e%2e/%2e%2e/admin",
            "",
            "https://gw.example:8443/openai/v1/%2e%2e/%2e%2e/admin?api-version=2024-10-21",
        ),
        (
            "/x/../chat/completions",
            "",
            "https://gw.example:8443/openai/v1/chat/completions?api-version=2024-10-21",
        ),
    ],
)
def test_a_path_goes_under_the_upstream(app: ProxyApp, target: str, query: str, url: str) -> None:
    forwarded = app.upstream_url(target.encode(), target, query)
    assert str(forwarded) == url


@pytest.mark.parametrize(
    "target",
    [
        "*@evil.example/chat/completions",
        "*",
        "//evil.example/chat/completions",
        "http://evil.example/chat/completions",
        "evil.example:443",
        "",
        # a path, but one that climbs out of the upstream's own
        "/../../admin",
        "/..",
    ],
)
def test_anything_else_goes_nowhere(app: ProxyApp, target: str) -> None:
    assert app.upstream_url(target.encode(), target, "") is None
