"""Notifications from the installed `fpmon check`: webhook payloads as a real HTTP server
receives them (json, slack, discord), the command notifier, the error streak across separate
runs, failing notifiers, `fpmon notify test`, and secrets that stay secret."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, Fault
from tests.conftest import Run
from tests.e2e.conftest import recorded

A, B, C = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"
TOKEN = "tok-5c1e7a9d3b"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    """A webhook endpoint on loopback: records every POST, answers with `status`."""

    status: int = 204
    received: list[Received] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.received.append(Received(self.path, headers, json.loads(raw)))
            # An unhappy endpoint that echoes what it got, as some do: fpmon must redact it.
            body = json.dumps({"error": f"no: {headers.get('authorization')}"}).encode()
            self.send_response(state.status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    yield state
    server.shutdown()
    server.server_close()


def with_notify(config: Path, text: str) -> None:
    config.write_text(config.read_text() + text)


@pytest.fixture
def logged(
    fake: FakeAPI, write_config: Callable[..., Path], recorder: tuple[str, Path]
) -> Callable[..., Path]:
    """Target alpha (model-a) and the recorder as notifier `log` for the events `on`; the file
    that collects what it received."""

    def setup(on: list[str], **alpha: object) -> Path:
        run, out = recorder
        config = write_config(fake.base_url, alpha={"model": "model-a", "samples": 2, **alpha})
        with_notify(config, f'[notify.log]\ntype = "command"\n{run}\non = {json.dumps(on)}\n')
        return out

    return setup


def test_webhook_payloads_in_each_format(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    receiver: Receiver,
) -> None:
    config = write_config(fake.base_url, alpha={"model": "model-a", "samples": 2})
    with_notify(
        config,
        f'[notify.json]\ntype = "webhook"\nurl = "{receiver.url}/json"\n'
        'headers = { Authorization = "Bearer ${HOOK_TOKEN}", X-Team = "llm" }\n'
        f'[notify.slack]\ntype = "webhook"\nformat = "slack"\nurl = "{receiver.url}/slack"\n'
        '[notify.discord]\ntype = "webhook"\nformat = "discord"\nurl = "${DISCORD_URL}"\n',
    )
    env = {"HOOK_TOKEN": TOKEN, "DISCORD_URL": f"{receiver.url}/discord", "FPMON_SITE": "eu-1"}
    first = fpmon("check", "--history", "h.db", env=env)
    assert first.code == 0 and receiver.received == []  # `first` is not an event
    fake.rotate("model-a", [C])
    new = fpmon("check", "--history", "h.db", env=env)
    assert new.code == 1 and new.err == ""
    by_path = {r.path: r for r in receiver.received}
    assert sorted(by_path) == ["/discord", "/json", "/slack"]

    hook = by_path["/json"]
    assert hook.headers["authorization"] == f"Bearer {TOKEN}"
    assert hook.headers["x-team"] == "llm"
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["user-agent"].startswith("fpmon/")
    data = hook.body
    assert {k: data[k] for k in ("version", "event", "target", "status", "unexpected")} == {
        "version": 1,
        "event": "new",
        "target": "alpha",
        "status": "new",
        "unexpected": True,
    }
    assert (data["before"], data["now"]) == ([A, B], [C])
    assert (data["models_before"], data["models"]) == (["model-a-2026"], ["model-a-2026"])
    assert data["history"] == str(Path("h.db").absolute())
    assert data["checked_at"].endswith("Z") and len(data["check_id"]) == 32
    assert data["errors"] == [] and data["failed_checks"] == 0
    assert data["site"] == "eu-1"
    assert data["summary"] == f"alpha (site eu-1) new: fingerprint: {A}, {B} -> {C}. " + (
        "If expected, accept it: fpmon accept alpha"
    )

    # Slack shows &gt; as >; a bare < or > would start a link or a mention
    slack = "fpmon: " + data["summary"].replace(">", "&gt;")
    assert by_path["/slack"].body == {"text": slack}
    discord = by_path["/discord"].body
    assert discord["allowed_mentions"] == {"parse": []}
    assert discord["content"] == "fpmon: " + data["summary"].replace("_", "\\_")
    assert TOKEN not in new.out + new.err + first.out + first.err


def test_the_command_notifier_gets_the_event_on_stdin_and_in_its_environment(
    fpmon: Callable[..., Run], fake: FakeAPI, logged: Callable[..., Path]
) -> None:
    out = logged(["new", "changed"])
    assert fpmon("check").code == 0
    fake.rotate("model-a", [C])
    assert fpmon("check").code == 1
    fake.rotate("model-a", [A])
    assert fpmon("check").code == 0
    new, changed = recorded(out)
    assert new["env"] == {
        "FPMON_EVENT": "new",
        "FPMON_TARGET": "alpha",
        "FPMON_STATUS": "new",
        "FPMON_BEFORE": f"{A},{B}",
        "FPMON_NOW": C,
    }
    assert new["stdin"]["version"] == 1 and new["stdin"]["now"] == [C]
    assert changed["env"]["FPMON_EVENT"] == "changed"
    assert (changed["env"]["FPMON_BEFORE"], changed["env"]["FPMON_NOW"]) == (C, A)


def test_the_error_streak_holds_across_separate_check_runs(
    fpmon: Callable[..., Run], fake: FakeAPI, logged: Callable[..., Path]
) -> None:
    out = logged(["error", "recovered"])

    def check(fail: bool) -> int:
        if fail:
            fake.add_faults([Fault("status", status=503, times=2)])
        return fpmon("check").code

    # cron-like: every check is its own process; the streak lives in the history
    assert [check(f) for f in (False, True, True, True, False)] == [0, 3, 3, 3, 0]
    events = [(e["stdin"]["event"], e["stdin"]["failed_checks"]) for e in recorded(out)]
    assert events == [("error", 2), ("recovered", 3)]  # once each, not once per failure
    error = recorded(out)[0]["stdin"]
    assert error["now"] == [] and error["errors"][0]["kind"] == "server"
    # A streak shorter than error_after was never announced: its end is not either.
    assert [check(f) for f in (True, False)] == [3, 0]
    assert len(recorded(out)) == 2


def test_error_after_is_a_target_key(
    fpmon: Callable[..., Run], fake: FakeAPI, logged: Callable[..., Path]
) -> None:
    out = logged(["error"], samples=1, error_after=1)
    fake.add_faults([Fault("status", status=500)])
    assert fpmon("check").code == 3
    assert [e["stdin"]["failed_checks"] for e in recorded(out)] == [1]


def test_a_failing_notifier_changes_neither_the_record_nor_the_exit_code(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    receiver: Receiver,
    isolated: Path,
) -> None:
    receiver.status = 500
    failing = isolated / "fail.py"
    failing.write_text("import sys\nprint('paging service down', file=sys.stderr)\nsys.exit(2)\n")
    config = write_config(fake.base_url, alpha={"model": "model-a", "samples": 2})
    with_notify(
        config,
        f'[notify.hook]\ntype = "webhook"\nurl = "{receiver.url}/x"\nretries = 1\n'
        'headers = { Authorization = "Bearer ${HOOK_TOKEN}" }\n'
        f'[notify.page]\ntype = "command"\nrun = ["{sys.executable}", "{failing}"]\n'
        '[notify.gone]\ntype = "command"\nrun = ["/nonexistent/notify"]\n',
    )
    assert fpmon("check", "--history", "h.db").code == 0
    fake.rotate("model-a", [C])
    result = fpmon("check", "--history", "h.db", "--json", env={"HOOK_TOKEN": TOKEN})
    assert result.code == 1  # new, as without notifiers
    assert result.json()["targets"][0]["status"] == "new" and result.json()["recorded"]
    assert len(receiver.received) == 2  # retried once
    warnings = result.err.splitlines()
    assert warnings == [
        "fpmon: warning: notify hook: POST to 127.0.0.1 failed after 2 attempts: "
        "HTTP 500: no: Bearer ***",
        "fpmon: warning: notify page: " + f"{sys.executable} exited with status 2: "
        "paging service down",
        "fpmon: warning: notify gone: cannot run /nonexistent/notify: No such file or directory",
    ]
    assert TOKEN not in result.out + result.err
    # --quiet keeps the warnings: a broken notifier is worth a cron mail
    fake.rotate("model-a", ["fp_dddddddddd"])
    quiet = fpmon("check", "--history", "h.db", "--quiet", env={"HOOK_TOKEN": TOKEN})
    assert quiet.code == 1 and len(quiet.err.splitlines()) == 3


def test_notify_test_sends_a_sample_event(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    receiver: Receiver,
) -> None:
    config = write_config(fake.base_url, alpha={"model": "model-a"})
    with_notify(
        config,
        f'[notify.hook]\ntype = "webhook"\nurl = "{receiver.url}/hook"\non = ["new"]\n'
        'targets = ["alpha"]\nretries = 0\n',
    )
    sent = fpmon("notify", "test", "hook")
    assert (sent.code, sent.out) == (0, "sent a sample new event through hook\n")
    error = fpmon("notify", "test", "hook", "--event", "error")  # whatever `on` says
    assert error.code == 0
    bodies = [r.body for r in receiver.received]
    assert [(b["event"], b["target"], b["status"]) for b in bodies] == [
        ("new", "fpmon-test", "new"),
        ("error", "fpmon-test", "error"),
    ]
    assert fake.requests() == []  # nothing probed

    unknown = fpmon("notify", "test", "hok")
    assert unknown.code == 2 and "no [notify.hok] table (did you mean 'hook'?)" in unknown.err
    receiver.status = 502
    failed = fpmon("notify", "test", "hook")
    assert failed.code == 3
    assert failed.err == (
        "fpmon: error: notify hook: POST to 127.0.0.1 failed after 1 attempt: HTTP 502: no: None\n"
    )


def test_a_dry_run_notifies_nobody(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    receiver: Receiver,
) -> None:
    config = write_config(fake.base_url, alpha={"model": "model-a"})
    with_notify(config, f'[notify.hook]\ntype = "webhook"\nurl = "{receiver.url}/h"\n')
    assert fpmon("check").code == 0
    fake.rotate("model-a", [C])
    assert fpmon("check", "--no-record").code == 1
    assert receiver.received == []


ROLLED = "fp_rolled0001"


@pytest.mark.parametrize("how", ["check", "watch"])
def test_an_unaccepted_value_is_announced_once_and_ci_keeps_failing(
    fpmon: Callable[..., Run], fake: FakeAPI, logged: Callable[..., Path], how: str
) -> None:
    out = logged(["new"])
    assert fpmon("check").code == 0
    assert fpmon("accept").code == 0  # the lock holds A and B
    fake.rotate("model-a", [ROLLED])
    if how == "check":
        assert [fpmon("check").code for _ in range(3)] == [1, 1, 1]
    else:
        assert fpmon("watch", "--every", "1s", "--count", "3").code == 1
    events = [e["env"] for e in recorded(out)]
    assert [(e["FPMON_EVENT"], e["FPMON_BEFORE"], e["FPMON_NOW"]) for e in events] == [
        ("new", f"{A},{B}", ROLLED)
    ]


def test_remind_announces_an_unaccepted_value_again_after_its_interval(
    fpmon: Callable[..., Run], fake: FakeAPI, logged: Callable[..., Path]
) -> None:
    out = logged(["new"], remind="1s")
    assert fpmon("check").code == 0
    assert fpmon("accept").code == 0
    fake.rotate("model-a", [ROLLED])
    assert fpmon("check").code == 1
    time.sleep(1.1)  # a whole interval passes before the next check: the reminder is due
    assert fpmon("check").code == 1
    assert [e["env"]["FPMON_NOW"] for e in recorded(out)] == [ROLLED, ROLLED]


def test_an_apprise_url_reaches_its_service(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], receiver: Receiver
) -> None:
    """Apprise's json:// service posts to the receiver: the event's title and summary arrive."""
    config = write_config(fake.base_url, alpha={"model": "model-a", "samples": 2})
    with_notify(config, '[notify.team]\ntype = "apprise"\nurl = "${APPRISE_URL}"\n')
    env = {"APPRISE_URL": receiver.url.replace("http://", "json://") + "/hook"}
    assert fpmon("check", env=env).code == 0
    fake.rotate("model-a", [C])
    assert fpmon("check", env=env).code == 1
    (sent,) = receiver.received
    assert sent.path == "/hook"
    assert sent.body["title"] == "fpmon: new on alpha"
    assert C in sent.body["message"] and "fpmon accept alpha" in sent.body["message"]


def test_an_apprise_url_written_in_the_file_is_refused(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    config = write_config(fake.base_url, alpha={"model": "model-a"})
    with_notify(config, '[notify.team]\ntype = "apprise"\nurl = "tgram://bottoken/ChatID"\n')
    run = fpmon("check")
    assert run.code == 2 and "bottoken" not in run.err
    assert 'url = "${APPRISE_URL}"' in run.err and len(run.err.strip().splitlines()) == 1
