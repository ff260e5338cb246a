"""Notifications: the [notify.NAME] tables, which events a check sets off (the error streak),
the payload contract, chat formats, and secrets that never leave the process."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fp_monitor.config.settings import (
    DEFAULT_NOTIFY_ON,
    Command,
    Config,
    Webhook,
    WebhookFormat,
    load_config,
)
from fp_monitor.domain.errors import ConfigError, ExitCode, NotifyError
from fp_monitor.domain.models import (
    ABSENT,
    NULL,
    CheckResult,
    ErrorKind,
    Event,
    ProbeError,
    Status,
    TargetResult,
)
from fp_monitor.net.redact import redact
from fp_monitor.notify.dispatch import send
from fp_monitor.notify.events import Notification, events, sample
from fp_monitor.notify.payload import payload
from fp_monitor.notify.webhook import webhook_body
from fp_monitor.store.history import History
from tests.unit.store.test_history import obs, record

AT = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
HISTORY = Path("/var/lib/fpmon/history.db")


def target(status: Status, name: str = "grok", **changes: object) -> TargetResult:
    failed = status is Status.ERROR
    base = TargetResult(
        name=name,
        status=status,
        unexpected=status is Status.NEW,
        fingerprints=() if failed else ("fp_b",),
        models=() if failed else ("m-1",),
        previous=("fp_a",),
        previous_models=("m-1",),
        known=("fp_a",),
        known_models=("m-1",),
        samples=3,
        errors=(ProbeError(ErrorKind.SERVER, 503, "HTTP 503: overloaded"),) * 3 if failed else (),
        latency_ms=None if failed else 100.0,
        changes=(),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def check(*targets: TargetResult) -> CheckResult:
    return CheckResult("c" * 32, AT, tuple(targets), 0, True)


def fired(status: Status, failed_before: int, error_after: int = 2) -> list[tuple[str, int]]:
    found = events(check(target(status)), {"grok": failed_before}, {"grok": error_after}, HISTORY)
    return [(n.event.value, n.failed_checks) for n in found]


# --- which events a check sets off ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "failed_before", "error_after", "expected"),
    [
        (Status.ERROR, 0, 2, []),  # the first failure is not worth a message yet
        (Status.ERROR, 1, 2, [("error", 2)]),  # the streak reaches error_after: one message
        (Status.ERROR, 2, 2, []),  # and not again while it goes on
        (Status.ERROR, 7, 2, []),
        (Status.ERROR, 0, 1, [("error", 1)]),
        (Status.SAME, 1, 2, []),  # a streak nobody was told about ends silently
        (Status.SAME, 2, 2, [("recovered", 2)]),
        (Status.SAME, 9, 2, [("recovered", 9)]),
        (Status.SAME, 0, 2, []),
        (Status.FIRST, 0, 2, []),
        (Status.NEW, 0, 2, [("new", 0)]),
        (Status.CHANGED, 0, 2, [("changed", 0)]),
        (Status.LEARNED, 0, 2, [("learned", 0)]),
        (Status.NEW, 3, 2, [("recovered", 3), ("new", 0)]),  # back, on another backend
    ],
)
def test_events_follow_the_status_and_the_error_streak(
    status: Status, failed_before: int, error_after: int, expected: list[tuple[str, int]]
) -> None:
    assert fired(status, failed_before, error_after) == expected


def test_events_are_per_target() -> None:
    result = check(target(Status.ERROR, "a"), target(Status.SAME, "b"), target(Status.NEW, "c"))
    found = events(result, {"a": 1, "b": 5}, {"a": 2, "b": 2, "c": 2}, HISTORY)
    assert [(n.target.name, n.event) for n in found] == [
        ("a", Event.ERROR),
        ("b", Event.RECOVERED),
        ("c", Event.NEW),
    ]
    assert {n.check_id for n in found} == {"c" * 32}


def test_each_notification_says_where_its_target_was_probed_from() -> None:
    (found,) = events(check(target(Status.NEW)), {}, {"grok": 2}, HISTORY, {"grok": "eu-west"})
    assert found.site == "eu-west"
    assert payload(found)["site"] == "eu-west"
    assert "grok (site eu-west) new: " in payload(found)["summary"]


def test_notifier_wants_its_events_and_targets() -> None:
    hook = Webhook(
        name="h",
        on=frozenset({Event.NEW}),
        targets=frozenset({"grok"}),
        timeout=1,
        url="https://x",
        format=WebhookFormat.JSON,
        headers={},
        retries=0,
    )
    assert hook.wants(Event.NEW, "grok")
    assert not hook.wants(Event.NEW, "other")
    assert not hook.wants(Event.ERROR, "grok")
    assert replace(hook, targets=None).wants(Event.NEW, "other")


# --- the streak comes from the history ----------------------------------------------------


def test_failed_before_counts_the_errors_just_before_a_check(tmp_path: Path) -> None:
    with History.open(tmp_path / "h.db") as history:
        ids = []
        for ok in (True, False, False, True, False, False, False, True):
            check_id = f"{len(ids):032d}"
            record(history, [obs() if ok else obs(error=ErrorKind.SERVER)], check_id=check_id)
            ids.append(check_id)
        # other targets in between change nothing
        record(history, [obs(error=ErrorKind.SERVER, target="other")], target="other")
        assert [history.failed_before("grok", i) for i in ids] == [0, 0, 1, 2, 0, 1, 2, 3]
        assert history.failed_before("grok", "unknown") == 0


# --- the payload ----------------------------------------------------------------------------


def test_payload_contract() -> None:
    tr = target(Status.NEW, fingerprints=(NULL, ABSENT, ""), previous=None, previous_models=None)
    data = payload(Notification(Event.NEW, tr, "c" * 32, AT, HISTORY))
    assert data == {
        "version": 1,
        "event": "new",
        "target": "grok",
        "status": "new",
        "unexpected": True,
        "before": None,
        "now": [None, "<absent>", ""],
        "models_before": None,
        "models": ["m-1"],
        "errors": [],
        "failed_checks": 0,
        "checked_at": "2026-11-29T10:00:00Z",
        "check_id": "c" * 32,
        "history": str(HISTORY),
        "summary": data["summary"],
        "site": None,
        "canary": None,  # the canary was off
    }
    assert data["summary"].startswith("grok new: ")
    json.dumps(data)  # serialisable as it is


def test_payload_names_the_site_escaped_in_its_summary() -> None:
    tr = target(Status.NEW, fingerprints=("fp_b",), previous=("fp_a",))
    data = payload(Notification(Event.NEW, tr, "c" * 32, AT, HISTORY, site="eu\x1b[31m"))
    assert data["site"] == "eu\x1b[31m"
    assert data["summary"].startswith("grok (site eu\\x1b[31m) new: ")


def test_error_and_recovered_payloads_say_how_long() -> None:
    error = payload(Notification(Event.ERROR, target(Status.ERROR), "c", AT, HISTORY, 2))
    assert error["failed_checks"] == 2 and error["now"] == []
    assert error["errors"][0] == {
        "kind": "server",
        "status_code": 503,
        "message": "HTTP 503: overloaded",
    }
    assert "failed 2 checks in a row" in error["summary"]
    recovered = payload(Notification(Event.RECOVERED, target(Status.SAME), "c", AT, HISTORY, 4))
    assert "recovered after 4 failed checks" in recovered["summary"]


def test_slack_text_cannot_mention_or_link() -> None:
    tr = target(Status.NEW, fingerprints=("<!channel> & <https://evil|click>",))
    body = webhook_body(WebhookFormat.SLACK, Notification(Event.NEW, tr, "c", AT, HISTORY))
    assert set(body) == {"text"}
    assert "<" not in body["text"] and ">" not in body["text"]
    assert "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;" in body["text"]


def test_discord_content_cannot_mention_or_format() -> None:
    tr = target(Status.NEW, fingerprints=("@everyone **bold**",))
    body = webhook_body(WebhookFormat.DISCORD, Notification(Event.NEW, tr, "c", AT, HISTORY))
    assert body["allowed_mentions"] == {"parse": []}
    assert "\\*\\*bold\\*\\*" in body["content"]
    long = target(Status.NEW, errors=(ProbeError(ErrorKind.SERVER, 500, "x" * 5000),))
    cut = webhook_body(WebhookFormat.DISCORD, Notification(Event.NEW, long, "c", AT, HISTORY))
    assert len(cut["content"]) <= 2000


@pytest.mark.parametrize("event", list(Event))
def test_the_sample_of_every_event_is_a_valid_event(event: Event) -> None:
    data = payload(sample(event, HISTORY))
    assert data["event"] == event.value and data["target"] == "fpmon-test"
    assert (data["status"] == "error") == (event is Event.ERROR)


# --- secrets --------------------------------------------------------------------------------


def test_a_missing_variable_is_named_and_an_expanded_one_is_redacted(tmp_path: Path) -> None:
    hook = Webhook(
        name="h",
        on=DEFAULT_NOTIFY_ON,
        targets=None,
        timeout=1,
        url="http://127.0.0.1:9/${HOOK_PATH}",
        format=WebhookFormat.JSON,
        headers={"Authorization": "Bearer ${HOOK_TOKEN}"},
        retries=0,
    )
    config = Config((), None, tmp_path / "h.db", tmp_path / "fpmon.lock", (hook,))
    note = sample(Event.NEW, HISTORY)
    with pytest.raises(NotifyError, match="url: environment variable HOOK_PATH is not set"):
        send(config, hook, note, environ={})
    env = {"HOOK_PATH": "services/T0/B0/s3cr3tpath", "HOOK_TOKEN": "tok-9f8e7d6c5b"}
    with pytest.raises(NotifyError) as failed:  # nothing listens on port 9
        send(config, hook, note, environ=env)
    message = str(failed.value)
    assert message.startswith("notify h: POST to 127.0.0.1 failed after 1 attempt: ")
    assert "s3cr3t" not in message and "tok-9f8e" not in message
    assert redact("Bearer tok-9f8e7d6c5b") == "Bearer ***"


@pytest.mark.parametrize(
    ("url", "headers", "message"),
    [
        ("http://[::1/${HOOK_PATH}", {}, "notify h: url is not an http:// or https:// URL"),
        ("http://host:abc/${HOOK_PATH}", {}, "notify h: url is not a valid URL"),
        ("http://" + "a" * 70 + ".invalid/${HOOK_PATH}", {}, "notify h: url is not a valid URL"),
        ("${HOOK_PATH}", {}, "notify h: url is not an http:// or https:// URL"),
        (
            "http://127.0.0.1:9/",
            {"X-Name": "${HOOK_NAME}"},
            "notify h: header X-Name: the value is not ASCII",
        ),
    ],
)
def test_a_webhook_that_cannot_be_sent_says_why_without_the_url(
    tmp_path: Path, url: str, headers: dict[str, str], message: str
) -> None:
    hook = Webhook(
        name="h",
        on=DEFAULT_NOTIFY_ON,
        targets=None,
        timeout=1,
        url=url,
        format=WebhookFormat.JSON,
        headers=headers,
        retries=0,
    )
    config = Config((), None, tmp_path / "h.db", tmp_path / "fpmon.lock", (hook,))
    env = {"HOOK_PATH": "secret-path", "HOOK_NAME": "Zoë"}
    with pytest.raises(NotifyError) as failed:
        send(config, hook, sample(Event.NEW, HISTORY), environ=env)
    assert str(failed.value) == message


def test_a_command_does_not_get_the_providers_keys(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    script = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"
    command = Command(
        name="c",
        on=DEFAULT_NOTIFY_ON,
        targets=None,
        timeout=10,
        run=(sys.executable, "-c", script, str(out)),
    )
    toml = tmp_path / "fpmon.toml"
    toml.write_text(
        '[targets.grok]\nprovider = "xai"\nmodel = "grok-4"\n'
        '[targets.mine]\nprovider = "custom"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'model = "m"\napi_key_env = "MY_OWN_KEY"\n'
    )
    config = replace(load_config(toml), notifiers=(command,))
    env = {"XAI_API_KEY": "xai-secret", "MY_OWN_KEY": "own-secret", "PATH": "/usr/bin"}
    send(config, command, sample(Event.NEW, HISTORY), environ=env)
    seen = json.loads(out.read_text())
    assert "XAI_API_KEY" not in seen and "MY_OWN_KEY" not in seen
    assert seen["PATH"] == "/usr/bin"
    assert seen["FPMON_TARGET"] == "fpmon-test" and seen["FPMON_EVENT"] == "new"


# --- configuration ----------------------------------------------------------------------


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FPMON_CONFIG", raising=False)
    return tmp_path


TARGETS = '[targets.grok]\nprovider = "xai"\nmodel = "grok-4"\n'


def load(cwd: Path, text: str) -> Config:
    (cwd / "fpmon.toml").write_text(TARGETS + text)
    return load_config()


def test_notifiers_load_with_their_defaults(cwd: Path) -> None:
    config = load(
        cwd,
        "[defaults]\nerror_after = 3\n"
        '[notify.slack]\ntype = "webhook"\nurl = "${SLACK_WEBHOOK_URL}"\nformat = "slack"\n'
        '[notify.pager]\ntype = "command"\nrun = ["/usr/local/bin/page", "--team", "llm"]\n'
        'on = ["error", "recovered"]\ntargets = ["grok"]\ntimeout = "5s"\n'
        '[notify.hook]\ntype = "webhook"\nurl = "https://example.com/hook"\n'
        'headers = { Authorization = "Bearer ${HOOK_TOKEN}", X-Team = "llm" }\n'
        'retries = 0\ntimeout = "2s"\n',
    )
    assert config.targets[0].error_after == 3
    slack, pager, hook = config.notifiers
    assert slack == Webhook(
        name="slack",
        on=frozenset({Event.NEW, Event.DRIFT, Event.ERROR, Event.RECOVERED}),
        targets=None,
        timeout=10.0,
        url="${SLACK_WEBHOOK_URL}",
        format=WebhookFormat.SLACK,
        headers={},
        retries=2,
    )
    assert pager == Command(
        name="pager",
        on=frozenset({Event.ERROR, Event.RECOVERED}),
        targets=frozenset({"grok"}),
        timeout=5.0,
        run=("/usr/local/bin/page", "--team", "llm"),
    )
    assert isinstance(hook, Webhook) and hook.format is WebhookFormat.JSON
    assert hook.headers == {"Authorization": "Bearer ${HOOK_TOKEN}", "X-Team": "llm"}
    assert (hook.retries, hook.timeout) == (0, 2.0)
    assert config.notifier("pager") is pager


def test_error_after_defaults_to_2(cwd: Path) -> None:
    assert load(cwd, "").targets[0].error_after == 2


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[notify.x]\nurl = "https://a"\n', "[notify.x] type: missing; one of: webhook, command"),
        (
            '[notify.x]\ntype = "webhok"\n',
            "[notify.x] type: unknown type 'webhok' (did you mean 'webhook'?)",
        ),
        (
            '[notify.x]\ntype = "webhook"\nurll = "https://a"\n',
            "[notify.x] unknown key 'urll' (did you mean 'url'?)",
        ),
        (
            '[notify.x]\ntype = "command"\nrun = ["a"]\nurl = "https://a"\n',
            "[notify.x] unknown key 'url'",
        ),
        ('[notify.x]\ntype = "webhook"\n', "[notify.x] url: missing"),
        (
            '[notify.x]\ntype = "webhook"\nurl = "ftp://a"\n',
            "[notify.x] url: expected an http:// or https:// URL",
        ),
        (
            '[notify.x]\ntype = "webhook"\nurl = "${1BAD}"\n',
            "[notify.x] url: ${1BAD} does not name an environment variable",
        ),
        (
            '[notify.x]\ntype = "webhook"\nurl = "https://a"\nformat = "slak"\n',
            "format: unknown value 'slak' (did you mean 'slack'?); one of: json, slack, discord",
        ),
        (
            '[notify.x]\ntype = "webhook"\nurl = "https://a"\non = ["chnaged"]\n',
            "[notify.x] on: unknown value 'chnaged' (did you mean 'changed'?)",
        ),
        (
            '[notify.x]\ntype = "webhook"\nurl = "https://a"\ntargets = ["grk"]\n',
            "[notify.x] targets: unknown target 'grk' (did you mean 'grok'?)",
        ),
        (
            '[notify.x]\ntype = "webhook"\nurl = "https://a"\nretries = 11\n',
            "[notify.x] retries: expected a whole number from 0 to 10",
        ),
        (
            '[notify.x]\ntype = "webhook"\nurl = "https://a"\ntimeout = "0s"\n',
            "[notify.x] timeout: must be longer than 0s",
        ),
        (
            '[notify.x]\ntype = "webhook"\nurl = "https://a"\nheaders = { X = 1 }\n',
            "[notify.x] headers: X: expected a string value",
        ),
        ('[notify.x]\ntype = "command"\n', "[notify.x] run: missing"),
        ('[notify.x]\ntype = "command"\nrun = []\n', "[notify.x] run: missing"),
        (
            '[notify.x]\ntype = "command"\nrun = "notify.sh"\n',
            "[notify.x] run: expected a list of strings",
        ),
        ("[notify]\nx = 1\n", "[notify.x] must be a table"),
        ('[notify."a b\\nc"]\ntype = "x"\n', '[notify."a b\\nc"] type: unknown type'),
        ("[targets.grok.x]\n", "unknown key 'x'"),
        (
            "[defaults]\nerror_after = 0\n",
            "[defaults] error_after: expected a whole number from 1 to 1000",
        ),
        (
            '[notify.x]\ntype = "webhook"\nurl = "https://a"\ntoken = "abc"\n',
            "API keys are not allowed in the config file",
        ),
    ],
)
def test_notify_validation_names_file_table_and_key(cwd: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(cwd, table)
    text = str(error.value)
    assert text.startswith("fpmon.toml: ") and message in text
    assert "\n" not in text and error.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key", "X-Auth-Token", "X-Signature"])
def test_a_literal_secret_header_is_refused_without_echoing_it(cwd: Path, header: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(
            cwd,
            f'[notify.x]\ntype = "webhook"\nurl = "https://a"\n'
            f'headers = {{ {header} = "Bearer abc123secret" }}\n',
        )
    assert f"headers: {header}: secrets are not written in the config file" in str(error.value)
    assert "abc123secret" not in str(error.value)


def test_a_literal_url_is_never_echoed(cwd: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load(cwd, '[notify.x]\ntype = "webhook"\nurl = "hooks.slack.com/services/T/B/s3cr3t"\n')
    assert "s3cr3t" not in str(error.value)


def test_notify_must_hold_tables(cwd: Path) -> None:
    (cwd / "fpmon.toml").write_text("notify = 1\n" + TARGETS)
    with pytest.raises(ConfigError, match=r"^fpmon.toml: notify must hold \[notify.NAME\] tables$"):
        load_config()


def test_unknown_notifier_name(cwd: Path) -> None:
    config = load(cwd, '[notify.slack]\ntype = "webhook"\nurl = "https://a"\n')
    with pytest.raises(ConfigError, match=r"no \[notify.slakc\] table \(did you mean 'slack'\?\)"):
        config.notifier("slakc")
