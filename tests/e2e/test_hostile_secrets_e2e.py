"""Hostile servers and configurations against secrets, through the installed `fpmon`: a key
echoed in any field and any JSON encoding, credential headers read from the environment, a
base URL holding a password, a webhook receiver echoing its secret URL."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, Fault, ModelBehaviour
from tests.conftest import Run
from tests.unit.net.test_hostile_secrets import FORMS, KEY, answer

ENV = {"GW_KEY": KEY}


def written(root: Path) -> bytes:
    """Every byte fpmon left under `root` (history with its journal, lock, exports...)."""
    return b"".join(path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file())


def gateway_config(base_url: str, *, extra: str = "", notify: str = "") -> str:
    return f"""
[defaults]
retries = 0
learning = false
samples = 1

[targets.gw]
provider = "custom"
base_url = "{base_url}"
model = "m"
api_key_env = "GW_KEY"
track_headers = ["x-echo"]
{extra}
{notify}
"""


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_a_key_echoed_in_any_json_encoding_is_neither_shown_nor_stored(
    fpmon: Callable[..., Run], isolated: Path, form: str
) -> None:
    echo = {"x-echo": KEY, "x-request-id": KEY}
    with FakeAPI({"m": ModelBehaviour()}) as fake:
        (isolated / "fpmon.toml").write_text(gateway_config(fake.base_url))
        fake.add_faults([Fault("status", status=200, body=answer(form), headers=echo)])
        run = fpmon("check", "--json", env=ENV)
        shown = fpmon("history", "--observations", "--format", "jsonl", env=ENV)
    assert run.code == 0, run.err
    (result,) = run.json()["targets"]
    assert (result["fingerprints"], result["headers"]) == (["fp-***"], {"x-echo": ["***"]})
    (record,) = [json.loads(line) for line in shown.out.splitlines()]
    assert (record["fingerprint"], record["model"]) == ("fp-***", "m-***")
    assert (record["response_id"], record["request_id"]) == ("***", "***")
    assert '"id": "***"' in record["raw_response"]
    for text in (run.out + run.err, shown.out + shown.err, written(isolated).decode("latin-1")):
        assert KEY not in text and form not in text


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A webhook receiver that keeps every body it gets."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_a_key_served_as_fingerprint_and_model_reaches_nothing_downstream(
    fpmon: Callable[..., Run], isolated: Path, receiver: tuple[str, list[bytes]]
) -> None:
    """The history, stdout, --json, history, stats, export, the metrics label, the lock after
    accept, the webhook and command payloads and FPMON_NOW / FPMON_BEFORE."""
    url, received = receiver
    notify = f"""
[notify.hook]
type = "webhook"
url = "{url}"
on = ["new", "changed", "learned"]

[notify.cmd]
type = "command"
run = ["sh", "-c", "cat >> notified.json; env | grep ^FPMON_ >> notified.env"]
on = ["new", "changed", "learned"]
"""
    leaky = ModelBehaviour([KEY], resolved_model=KEY, headers={"x-echo": KEY})
    with FakeAPI({"m": ModelBehaviour(["fp_a"])}) as fake:
        (isolated / "fpmon.toml").write_text(gateway_config(fake.base_url, notify=notify))
        runs = [fpmon("check", env=ENV)]
        fake.set_model("m", leaky)
        runs += [
            fpmon("check", "--json", "--metrics-file", "m.prom", env=ENV),
            fpmon("accept", "gw", env=ENV),
        ]
        fake.set_model("m", ModelBehaviour(["fp_a"]))
        runs += [
            fpmon("check", "--format", "markdown", env=ENV),
            fpmon("history", env=ENV),
            fpmon("history", "--observations", "--format", "jsonl", env=ENV),
            fpmon("stats", "--json", env=ENV),
            fpmon("export", "--output", "export.jsonl", env=ENV),
        ]
    assert [r.code for r in runs[:4]] == [0, 1, 0, 1], [r.err for r in runs]
    assert runs[1].json()["targets"][0]["fingerprints"] == ["***"]
    assert 'fingerprint="***"' in (isolated / "m.prom").read_text()
    assert "FPMON_NOW=***" in (notified := (isolated / "notified.env").read_text())
    assert "FPMON_BEFORE=***" in notified
    assert len(received) == 2
    for run in runs:
        assert KEY not in run.out + run.err
    for body in received:
        assert KEY.encode() not in body and json.loads(body)
    assert KEY.encode() not in written(isolated)


def test_a_credential_header_is_sent_from_the_environment_and_hidden_when_echoed(
    fpmon: Callable[..., Run], isolated: Path
) -> None:
    token = "goog-3xA9/Zq+token-0042"
    escaped = token.replace("/", "\\/")
    echoed = ('{"error": {"message": "header ' + escaped + ' denied"}}').encode()
    with FakeAPI({"m": ModelBehaviour()}) as fake:
        (isolated / "fpmon.toml").write_text(
            gateway_config(fake.base_url, extra='headers = { X-Goog-Api-Key = "${GOOG_KEY}" }')
        )
        fake.add_faults([Fault("status", status=403, body=echoed)])
        run = fpmon("check", "--json", env={**ENV, "GOOG_KEY": token})
        (request,) = fake.requests()
    assert request.headers["x-goog-api-key"] == token
    assert run.code == 3
    (error,) = run.json()["targets"][0]["errors"]
    assert error["message"] == "HTTP 403: header *** denied"
    assert token not in run.out + run.err
    assert token.encode() not in written(isolated)


def test_an_unset_credential_header_variable_is_a_missing_key(
    fpmon: Callable[..., Run], isolated: Path
) -> None:
    with FakeAPI({"m": ModelBehaviour()}) as fake:
        (isolated / "fpmon.toml").write_text(
            gateway_config(fake.base_url, extra='headers = { Cookie = "session=${GW_COOKIE}" }')
        )
        run = fpmon("check", "--json", env=ENV)
        assert fake.requests() == []
    assert run.code == 3
    (error,) = run.json()["targets"][0]["errors"]
    assert error["kind"] == "missing_key"
    assert error["message"] == "not probed: GW_COOKIE (headers) is not set"


@pytest.mark.parametrize("command", [["targets"], ["targets", "--json"], ["check"]])
def test_a_base_url_with_a_password_is_refused_before_anything_runs(
    fpmon: Callable[..., Run], isolated: Path, command: list[str]
) -> None:
    (isolated / "fpmon.toml").write_text(gateway_config("http://user:s3cr3t-pw@127.0.0.1:9/v1"))
    run = fpmon(*command, env=ENV)
    assert (run.code, run.out) == (2, "")
    assert run.err.startswith("fpmon: error: fpmon.toml: [targets.gw] base_url: holds a user name")
    assert len(run.err.splitlines()) == 1 and "s3cr3t" not in run.err
    assert not (isolated / "xdg-data").exists()


HOOK_PATH = "/services/T0AAA1111/B0BBB2222/XyZsecretTOKEN123456"
HOOK_QUERY = "sig=abc%2Bdef12&api-version=2016-06-01"
HOOK_SECRETS = ("T0AAA1111", "B0BBB2222", "XyZsecretTOKEN123456", "abc+def12", "abc%2Bdef12")


@pytest.mark.parametrize(
    "echo",
    [
        f"no route for {HOOK_PATH}?{HOOK_QUERY}",
        json.dumps({"error": {"message": f"no route for {HOOK_PATH}"}}).replace("/", "\\/"),
        "bad token XyZsecretTOKEN123456 (team T0AAA1111)",
        json.dumps({"error": {"message": "bad signature abc+def12"}}),
    ],
    ids=["path-and-query", "json-escaped-path", "segments", "decoded-query-value"],
)
def test_a_webhook_answer_echoing_parts_of_its_url_is_hidden(
    fpmon: Callable[..., Run], isolated: Path, echo: str
) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(500)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(echo.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}{HOOK_PATH}?{HOOK_QUERY}"
        (isolated / "fpmon.toml").write_text(
            gateway_config("http://127.0.0.1:9/v1")
            + f'\n[notify.hook]\ntype = "webhook"\nurl = "{url}"\nretries = 0\n'
        )
        run = fpmon("notify", "test", "hook", env=ENV)
    finally:
        server.shutdown()
    assert run.code == 3
    assert "POST to 127.0.0.1 failed after 1 attempt: HTTP 500" in run.err
    assert "***" in run.err
    for secret in HOOK_SECRETS:
        assert secret not in run.out + run.err
