"""A canary API key, echoed back whole by the server, appears nowhere fpmon writes: stdout and
stderr of every command (with --debug), the history, the lock, JUnit, metrics, exports and
notifier payloads. Canaries: a provider-shaped key, one with `/` and `+`, and one long enough
to straddle the cut of the stored raw response."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import Run

CANARIES = {
    "provider-shaped": "sk-proj-CANARY" + "7" * 40,
    "slash-plus": "sk-CANARY/7+7/" + "7" * 30,
    # Not key-shaped, so that only its registration hides it; it starts inside the first 16 KiB
    # of the 401 body that echoes it and ends beyond.
    "straddles-the-cut": "tok-CANARY-"
    + "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(270)),
}


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A local webhook receiver: every body it gets, with its headers."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(str(self.headers).encode() + body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


@pytest.mark.parametrize("canary", CANARIES.values(), ids=CANARIES.keys())
def test_canary_key_appears_nowhere(
    fpmon: Callable[..., Run], isolated: Path, receiver: tuple[str, list[bytes]], canary: str
) -> None:
    url, received = receiver
    fleet = {"good": ModelBehaviour(["fp_good00001"]), "other": ModelBehaviour(["fp_o"])}
    # Two keys: the good one is accepted, the canary is refused and echoed back whole.
    with FakeAPI(fleet, api_keys=["sk-good-0000000000"], echo_key_in_errors=True) as fake:
        (isolated / "fpmon.toml").write_text(
            f"""
[defaults]
retries = 0
learning = false
error_after = 1

[targets.leaky]
provider = "openai"
base_url = "{fake.base_url}"
model = "good"
api_key_env = "CANARY_KEY"

[targets.fine]
provider = "openai"
base_url = "{fake.base_url}"
model = "other"
api_key_env = "GOOD_KEY"

[notify.hook]
type = "webhook"
url = "{url}"
on = ["new", "changed", "error", "recovered"]

[notify.cmd]
type = "command"
run = ["sh", "-c", "cat > notified.json; env > notified.env"]
on = ["error"]
"""
        )
        env = {"CANARY_KEY": canary, "GOOD_KEY": "sk-good-0000000000"}
        runs = [
            fpmon("check", "--debug", env=env),
            fpmon("check", "--json", "--junit", "junit.xml", "--metrics-file", "m.prom", env=env),
            fpmon("check", "--format", "markdown", env={**env, "GITHUB_ACTIONS": "true"}),
            fpmon("accept", "--probe", env=env),
            fpmon("targets", "--json", env=env),
            fpmon("history", "--observations", "--format", "jsonl", env=env),
            fpmon("stats", "--json", env=env),
            fpmon("export", "--output", "export.jsonl", env=env),
            fpmon("verify", env=env),
            fpmon("watch", "--every", "0s", "--count", "2", env=env),
            fpmon("notify", "test", "hook", env=env),
        ]
        assert any(not r.key_ok for r in fake.requests())  # the canary really was sent
    assert [r.code for r in runs][:2] == [3, 3]
    assert received, "the webhook got no event"
    assert (isolated / "notified.json").exists()
    part = canary[8:30]  # a recognisable part of it: no half key either
    for run in runs:
        assert part not in run.out + run.err
    for body in received:
        assert part.encode() not in body
    leaked = [
        path
        for path in isolated.rglob("*")
        if path.is_file() and path.name != "notified.env" and part.encode() in path.read_bytes()
    ]
    assert leaked == []
    # The command notifier inherits the environment (its own business), not the payload.
    assert part not in (isolated / "notified.json").read_text()
    json.loads((isolated / "notified.json").read_text())
