"""Your own traffic through the official SDK: recording_client / recording_async_client against
the fake API, streamed and not, tags, on_unexpected, a read-only history, and one history with
the probes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

import fp_monitor
from fp_monitor import UnexpectedFingerprint, UnexpectedFingerprintWarning
from fp_monitor.check import CheckOptions, run_check
from fp_monitor.config.settings import load_config
from fp_monitor.devtools.fake_api import ABSENT, FakeAPI, ModelBehaviour
from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.models import Observation, Source, Status
from fp_monitor.traffic.recording import Recorder, RecordingAsyncClient, RecordingClient
from tests.conftest import Run

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi"}]
KEY = "sk-proj-traffic-0123456789abcdef"
DELAY = 0.2  # between the events of a slow stream


@pytest.fixture
def history(isolated: Path) -> Path:
    return isolated / "state" / "history.db"


@pytest.fixture
def slow(fake: FakeAPI) -> FakeAPI:
    fake.set_model("slow", ModelBehaviour(["fp_slow000001"], "slow-1", stream_delay=DELAY))
    return fake


def rows(path: Path, sql: str = "SELECT * FROM observations ORDER BY id") -> list[dict[str, Any]]:
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql)]


def sdk(fake: FakeAPI, http: RecordingClient) -> OpenAI:
    return OpenAI(base_url=fake.base_url, api_key=KEY, http_client=http, max_retries=0)


def async_sdk(fake: FakeAPI, http: RecordingAsyncClient) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=fake.base_url, api_key=KEY, http_client=http, max_retries=0)


def assert_arrived_one_by_one(arrivals: list[float], count: int) -> None:
    """Each chunk reached the caller before the server sent the next one (DELAY later):
    none was held back."""
    assert len(arrivals) == count
    assert all(at < n * DELAY + DELAY * 0.9 for n, at in enumerate(arrivals)), arrivals


# --- what is recorded ---------------------------------------------------------------------


def test_a_completion_is_recorded_with_the_audit_fields(fake: FakeAPI, history: Path) -> None:
    http = fp_monitor.recording_client("app", history=history, tags={"user": "u-42"})
    raw = sdk(fake, http).chat.completions.with_raw_response.create(
        model="model-a", messages=MESSAGES
    )
    completion = raw.parse()
    http.close()
    (row,) = rows(history)
    assert row["source"] == "traffic"
    assert (row["target"], row["provider"], row["base_url"]) == ("app", "custom", fake.base_url)
    assert (row["requested_model"], row["resolved_model"]) == ("model-a", completion.model)
    assert (row["fingerprint"], row["fingerprint_state"]) == ("fp_aaaaaaaaaa", "value")
    assert row["response_id"] == completion.id
    assert row["request_id"] == raw.headers["x-request-id"]
    assert completion.usage is not None
    assert row["total_tokens"] == completion.usage.total_tokens
    assert row["http_status"] == 200 and row["latency_ms"] > 0 and row["attempts"] == 1
    assert json.loads(row["tags"]) == {"user": "u-42"}
    assert row["raw_response"] is None  # the application's content is not kept
    (check,) = rows(history, "SELECT * FROM checks")
    assert (check["source"], check["status"], check["samples"]) == ("traffic", "first", 1)
    assert check["check_id"] == row["check_id"]
    assert (http.fpmon.recorded, http.fpmon.errors) == (1, 0)


def test_a_stream_reaches_the_caller_as_it_arrives_and_is_one_record(
    slow: FakeAPI, history: Path
) -> None:
    http = fp_monitor.recording_client("app", history=history)
    started = time.monotonic()
    arrivals, pieces = [], []
    stream = sdk(slow, http).chat.completions.create(
        model="slow", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        pieces.append(chunk)
        if len(pieces) == 1:
            assert not history.exists() or rows(history) == []  # recorded when it ends
    assert_arrived_one_by_one(arrivals, 4)
    http.close()
    (row,) = rows(history)
    assert row["fingerprint"] == "fp_slow000001" and row["resolved_model"] == "slow-1"
    assert row["response_id"] == pieces[0].id
    assert pieces[-1].usage is not None and row["total_tokens"] == pieces[-1].usage.total_tokens
    assert row["latency_ms"] >= 3 * DELAY * 1000 * 0.9  # the whole exchange


def test_the_async_client_streams_as_it_arrives_and_records(slow: FakeAPI, history: Path) -> None:
    async def main() -> tuple[list[float], str]:
        http = fp_monitor.recording_async_client("app", history=history)
        async with async_sdk(slow, http) as client:
            plain = await client.chat.completions.create(model="model-b", messages=MESSAGES)
            started = time.monotonic()
            arrivals = []
            async for _ in await client.chat.completions.create(
                model="slow", messages=MESSAGES, stream=True
            ):
                arrivals.append(time.monotonic() - started)
        assert (http.fpmon.recorded, http.fpmon.errors) == (2, 0)
        return arrivals, plain.id

    arrivals, plain_id = asyncio.run(main())
    assert_arrived_one_by_one(arrivals, 3)
    recorded = rows(history)
    assert [r["fingerprint"] for r in recorded] == ["fp_cccccccccc", "fp_slow000001"]
    assert recorded[0]["response_id"] == plain_id
    assert {r["source"] for r in recorded} == {"traffic"}


def test_a_stream_the_caller_leaves_early_is_recorded_once(slow: FakeAPI, history: Path) -> None:
    http = fp_monitor.recording_client("app", history=history)
    with sdk(slow, http).chat.completions.create(model="slow", messages=MESSAGES, stream=True) as s:
        next(iter(s))
    http.close()
    (row,) = rows(history)
    assert row["fingerprint"] == "fp_slow000001"


def test_other_endpoints_pass_untouched(fake: FakeAPI, history: Path) -> None:
    http = fp_monitor.recording_client("app", history=history)
    client = sdk(fake, http)
    assert {m.id for m in client.models.list()} == {"model-a", "model-b"}
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="e", input="x")
    http.close()
    assert not history.exists()
    assert http.fpmon.recorded == 0


def test_tags_come_from_the_client_and_each_request_and_never_leave(
    fake: FakeAPI, history: Path
) -> None:
    http = fp_monitor.recording_client("app", history=history, tags={"team": "search", "user": "x"})
    client = sdk(fake, http)
    client.chat.completions.create(model="model-b", messages=MESSAGES)
    client.chat.completions.create(
        model="model-b", messages=MESSAGES, extra_headers={"X-Fpmon-Tags": "user=u-42,run=7"}
    )
    http.close()
    tags = [json.loads(r["tags"]) for r in rows(history)]
    assert tags == [{"team": "search", "user": "x"}, {"team": "search", "user": "u-42", "run": "7"}]
    assert all("x-fpmon-tags" not in r.headers for r in fake.requests())


def test_error_answers_are_recorded_as_errors(fake: FakeAPI, history: Path) -> None:
    http = fp_monitor.recording_client("app", history=history)
    with pytest.raises(openai.BadRequestError):
        sdk(fake, http).chat.completions.create(model="model-a", messages=[])
    http.close()
    (row,) = rows(history)
    assert (row["error_kind"], row["http_status"], row["fingerprint"]) == ("bad_request", 400, None)
    assert "empty array" in row["error_message"]
    assert rows(history, "SELECT status FROM checks") == [{"status": "error"}]


def test_the_key_is_never_stored(fake: FakeAPI, history: Path) -> None:
    http = fp_monitor.recording_client("app", history=history)
    sdk(fake, http).chat.completions.create(model="model-a", messages=MESSAGES)
    http.close()
    assert fake.requests()[0].auth == "bearer"  # it was sent
    stored = b"".join(p.read_bytes() for p in history.parent.iterdir())
    assert KEY.encode() not in stored
    assert b"Bearer" not in stored and b"authorization" not in stored.lower()


def test_tracked_headers_come_from_the_config(
    fake: FakeAPI, history: Path, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, app={"model": "model-a", "track_headers": ["openai-version"]})
    http = fp_monitor.recording_client("app", history=history)
    sdk(fake, http).chat.completions.create(model="model-a", messages=MESSAGES)
    http.close()
    assert json.loads(rows(history)[0]["headers"]) == {"openai-version": "2020-10-01"}


def test_traffic_records_the_site_of_the_machine_that_records_it(
    fake: FakeAPI, history: Path, write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "app-host-3")
    unconfigured = fp_monitor.recording_client("app", history=history)
    sdk(fake, unconfigured).chat.completions.create(model="model-a", messages=MESSAGES)
    unconfigured.close()
    monkeypatch.setenv("FPMON_SITE", "eu-west")
    write_config(fake.base_url, app={"model": "model-a"})
    configured = fp_monitor.recording_client("app", history=history)
    sdk(fake, configured).chat.completions.create(model="model-a", messages=MESSAGES)
    configured.close()
    assert [row["site"] for row in rows(history)] == ["app-host-3", "eu-west"]


def test_a_broken_config_is_said_when_the_client_is_made(isolated: Path, history: Path) -> None:
    (isolated / "fpmon.toml").write_text("[targets.app]\nprovider = 'nope'\n")
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        fp_monitor.recording_client("app", history=history)
    with pytest.raises(ValueError, match="on_unexpected"):
        fp_monitor.recording_client("x", history=history, on_unexpected="explode")  # type: ignore[arg-type]


# --- on_unexpected ------------------------------------------------------------------------


@pytest.fixture
def known_fp_a(fake: FakeAPI, history: Path, write_config: Callable[..., Path]) -> FakeAPI:
    """Target `app` knows fp_aaaaaaaaaa from one earlier response; learning is off, so the
    next new value is `new`."""
    write_config(fake.base_url, app={"model": "model-a"})
    fake.rotate("model-a", ["fp_aaaaaaaaaa"])
    http = fp_monitor.recording_client("app", history=history)
    sdk(fake, http).chat.completions.create(model="model-a", messages=MESSAGES)
    http.close()
    fake.rotate("model-a", ["fp_rollout001"])
    return fake


def test_raise_stops_a_stream_before_its_first_chunk(known_fp_a: FakeAPI, history: Path) -> None:
    http = fp_monitor.recording_client("app", history=history, on_unexpected="raise")
    stream = sdk(known_fp_a, http).chat.completions.create(
        model="model-a", messages=MESSAGES, stream=True
    )
    received = []
    with pytest.raises(UnexpectedFingerprint) as info:
        for chunk in stream:
            received.append(chunk)
    assert received == []
    assert (info.value.target, info.value.field) == ("app", "fingerprint")
    assert (info.value.before, info.value.now) == (("fp_aaaaaaaaaa",), "fp_rollout001")
    http.close()
    assert [r["status"] for r in rows(history, "SELECT status FROM checks")] == ["first", "new"]


def test_raise_on_a_completion_is_the_callers_exception(known_fp_a: FakeAPI, history: Path) -> None:
    http = fp_monitor.recording_client("app", history=history, on_unexpected="raise")
    client = sdk(known_fp_a, http)
    with pytest.raises(UnexpectedFingerprint, match="fp_rollout001"):
        client.chat.completions.create(model="model-a", messages=MESSAGES)
    http.fpmon.flush()
    # recorded (as `new`), so now known, as after `fpmon check`: an event once, not every call
    assert client.chat.completions.create(model="model-a", messages=MESSAGES).system_fingerprint
    http.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_completion_is_judged_before_its_own_record_can_make_it_known(
    kind: str, known_fp_a: FakeAPI, history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread is as fast as it can be: the judge first lets it write everything
    queued. Were the response's record queued before its judgement, the value would be known
    by then and pass."""
    judge = Recorder.judge

    def judge_after_the_writer(self: Recorder, observation: Observation) -> None:
        self.flush()
        judge(self, observation)

    monkeypatch.setattr(Recorder, "judge", judge_after_the_writer)
    if kind == "sync":
        http = fp_monitor.recording_client("app", history=history, on_unexpected="raise")
        with pytest.raises(UnexpectedFingerprint, match="fp_rollout001"):
            sdk(known_fp_a, http).chat.completions.create(model="model-a", messages=MESSAGES)
        http.close()
    else:

        async def main() -> None:
            http = fp_monitor.recording_async_client("app", history=history, on_unexpected="raise")
            async with async_sdk(known_fp_a, http) as client:
                await client.chat.completions.create(model="model-a", messages=MESSAGES)

        with pytest.raises(UnexpectedFingerprint, match="fp_rollout001"):
            asyncio.run(main())
    assert [r["status"] for r in rows(history, "SELECT status FROM checks")] == ["first", "new"]


def test_raise_on_an_async_stream(known_fp_a: FakeAPI, history: Path) -> None:
    async def main() -> list[Any]:
        http = fp_monitor.recording_async_client("app", history=history, on_unexpected="raise")
        received = []
        async with async_sdk(known_fp_a, http) as client:
            stream = await client.chat.completions.create(
                model="model-a", messages=MESSAGES, stream=True
            )
            with pytest.raises(UnexpectedFingerprint):
                async for chunk in stream:
                    received.append(chunk)
        return received

    assert asyncio.run(main()) == []


def test_warn_lets_the_answer_through(known_fp_a: FakeAPI, history: Path) -> None:
    http = fp_monitor.recording_client("app", history=history, on_unexpected="warn")
    client = sdk(known_fp_a, http)
    with pytest.warns(UnexpectedFingerprintWarning, match="unexpected fingerprint fp_rollout001"):
        chunks = list(
            client.chat.completions.create(model="model-a", messages=MESSAGES, stream=True)
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    http.close()


def test_a_value_first_seen_in_traffic_is_notified_once(
    known_fp_a: FakeAPI, history: Path, isolated: Path
) -> None:
    """The configuration's notifiers hear of `new` as after a probe; the value is known from
    then on, so the next response with it sets nothing off."""
    out = isolated / "notified.txt"
    write = (
        f"open({str(out)!r}, 'a').write(' '.join(os.environ[k] for k in "
        "('FPMON_EVENT', 'FPMON_TARGET', 'FPMON_NOW')) + '\\n')"
    )
    run = json.dumps([sys.executable, "-c", "import os; " + write])
    config = isolated / "fpmon.toml"
    config.write_text(config.read_text() + f'[notify.log]\ntype = "command"\nrun = {run}\n')
    http = fp_monitor.recording_client("app", history=history)
    client = sdk(known_fp_a, http)
    for _ in range(2):
        client.chat.completions.create(model="model-a", messages=MESSAGES)
        http.fpmon.flush()
    http.close()
    assert out.read_text().splitlines() == ["new app fp_rollout001"]
    statuses = [r["status"] for r in rows(history, "SELECT status FROM checks")]
    assert statuses == ["first", "new", "same"]


def test_the_lock_file_decides_what_is_expected(
    fake: FakeAPI, history: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(fake.base_url, app={"model": "model-b", "learning": True})
    (config.parent / "fpmon.lock").write_text(
        'version = 1\n[targets.app]\nfingerprints = ["fp_cccccccccc"]\nmodels = ["model-b-v1"]\n'
    )
    http = fp_monitor.recording_client("app", history=history, on_unexpected="raise")
    client = sdk(fake, http)
    client.chat.completions.create(model="model-b", messages=MESSAGES)  # in the lock: fine
    with pytest.raises(UnexpectedFingerprint) as info:
        client.chat.completions.create(model="model-a", messages=MESSAGES)  # another backend
    assert info.value.before == ("fp_cccccccccc",)
    http.close()


def test_no_check_without_on_unexpected(known_fp_a: FakeAPI, history: Path) -> None:
    http = fp_monitor.recording_client("app", history=history)
    assert sdk(known_fp_a, http).chat.completions.create(model="model-a", messages=MESSAGES)
    http.close()


# --- a history that cannot be written -----------------------------------------------------


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` and its files read-only, for root too (root ignores permission bits)."""
    paths = [directory, *directory.iterdir()]
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
    else:
        for path in paths:
            path.chmod(0o500 if path.is_dir() else 0o400)
    try:
        yield
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", *map(str, paths)], check=True)
        else:
            for path in paths:
                path.chmod(0o700 if path.is_dir() else 0o600)


def test_a_read_only_history_never_breaks_the_call(
    slow: FakeAPI, history: Path, caplog: pytest.LogCaptureFixture
) -> None:
    http = fp_monitor.recording_client("app", history=history)
    client = sdk(slow, http)
    client.chat.completions.create(model="model-a", messages=MESSAGES)
    http.fpmon.flush()
    assert http.fpmon.recorded == 1
    with (
        read_only(history.parent),
        caplog.at_level(logging.WARNING, "fp_monitor.traffic.recording"),
    ):
        assert client.chat.completions.create(model="model-a", messages=MESSAGES).choices
        chunks = list(client.chat.completions.create(model="slow", messages=MESSAGES, stream=True))
        assert len(chunks) == 3
        http.fpmon.flush()
    assert (http.fpmon.recorded, http.fpmon.errors) == (1, 2)
    assert "could not record a response of target app" in caplog.text
    assert str(history) in caplog.text and KEY not in caplog.text
    assert len(rows(history)) == 1


def test_a_read_only_history_never_breaks_an_async_call_or_its_check(
    known_fp_a: FakeAPI, history: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the record nor the check (on_unexpected) can read or write: the answer comes
    all the same, and each failure is counted and logged."""

    async def main() -> tuple[str, int]:
        http = fp_monitor.recording_async_client("app", history=history, on_unexpected="raise")
        async with async_sdk(known_fp_a, http) as client:
            answer = await client.chat.completions.create(model="model-a", messages=MESSAGES)
            await asyncio.to_thread(http.fpmon.flush)
        return answer.choices[0].message.content or "", http.fpmon.errors

    with (
        read_only(history.parent),
        caplog.at_level(logging.WARNING, "fp_monitor.traffic.recording"),
    ):
        content, errors = asyncio.run(main())
    assert content == "Hi" and errors == 2  # the check, then the record
    assert "could not check a response of target app" in caplog.text
    assert "could not record a response of target app" in caplog.text


# --- one history with the probes ----------------------------------------------------------


def test_a_value_first_seen_in_traffic_is_new_like_a_probes(
    fpmon: Callable[..., Run], fake: FakeAPI, history: Path, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, app={"model": "model-a", "samples": 2})
    config = load_config(history=history)
    run_check(config, [], CheckOptions())  # probes: fp_aaaaaaaaaa and fp_bbbbbbbbbb
    fake.rotate("model-a", ["fp_rollout001"])
    http = fp_monitor.recording_client("app", history=history)
    sdk(fake, http).chat.completions.create(model="model-a", messages=MESSAGES)
    http.close()
    statuses = rows(history, "SELECT source, status FROM checks ORDER BY id")
    assert statuses == [
        {"source": "probe", "status": "first"},
        {"source": "traffic", "status": "new"},
    ]
    # The probes alone have not seen it yet; the traffic alone has seen only it.
    probe_only = fpmon("check", "--json", "--no-record", "--source", "probe", env=env(history))
    assert probe_only.code == 1
    (target,) = probe_only.json()["targets"]
    assert target["status"] == "new" and "fp_rollout001" not in target["known"]
    traffic_only = CheckOptions(record=False, sources=frozenset({Source.TRAFFIC}))
    assert run_check(config, [], traffic_only).targets[0].known == ("fp_rollout001",)
    # All sources, the default: known (the traffic saw it first, and that was the event), and
    # changed from what the last probe saw.
    every = run_check(config, [], CheckOptions()).targets[0]
    assert every.status is Status.CHANGED and "fp_rollout001" in every.known


def env(history: Path) -> dict[str, str]:
    return {"FPMON_HISTORY": str(history)}


def test_a_key_the_server_echoes_is_not_stored_whatever_its_shape(history: Path) -> None:
    """A 32-hex key (Azure's shape) has no provider prefix: only knowing it was sent hides it."""
    key = "0123456789abcdef0123456789abcdef"
    with FakeAPI(api_keys=["the-right-key"], echo_key_in_errors=True) as fake:
        http = fp_monitor.recording_client("app", history=history)
        client = OpenAI(base_url=fake.base_url, api_key=key, http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError, match=key):  # the caller sees it all
            client.chat.completions.create(model="model-a", messages=MESSAGES)
        http.close()
    (row,) = rows(history)
    assert row["error_kind"] == "auth" and "Incorrect API key provided: ***" in row["error_message"]
    assert key not in history.read_text(errors="replace")


def test_a_stream_that_never_shows_a_fingerprint_is_judged_at_its_end(
    known_fp_a: FakeAPI, history: Path
) -> None:
    known_fp_a.set_model("model-a", ModelBehaviour([ABSENT], "model-a-2026"))
    http = fp_monitor.recording_client("app", history=history, on_unexpected="raise")
    stream = sdk(known_fp_a, http).chat.completions.create(
        model="model-a", messages=MESSAGES, stream=True
    )
    with pytest.raises(UnexpectedFingerprint) as info:  # at its [DONE], at the latest
        list(stream)
    assert (info.value.field, info.value.now) == ("fingerprint", "<absent>")
    http.close()
    assert [r["status"] for r in rows(history, "SELECT status FROM checks")] == ["first", "new"]


def test_an_unaccepted_value_in_traffic_is_announced_once(
    fake: FakeAPI, history: Path, isolated: Path, write_config: Callable[..., Path]
) -> None:
    """With a lock, every response of a rolled-out value is `new` until `fpmon accept`; its
    notification goes out for the first response only."""
    config = write_config(fake.base_url, app={"model": "model-a"})
    (config.parent / "fpmon.lock").write_text(
        'version = 1\n[targets.app]\nfingerprints = ["fp_aaaaaaaaaa"]\nmodels = ["model-a-2026"]\n'
    )
    out = isolated / "notified.txt"
    write = f"open({str(out)!r}, 'a').write(os.environ['FPMON_NOW'] + '\\n')"
    run = json.dumps([sys.executable, "-c", "import os; " + write])
    config.write_text(config.read_text() + f'[notify.log]\ntype = "command"\nrun = {run}\n')
    fake.rotate("model-a", ["fp_rollout001"])
    http = fp_monitor.recording_client("app", history=history)
    client = sdk(fake, http)
    for _ in range(4):
        client.chat.completions.create(model="model-a", messages=MESSAGES)
        http.fpmon.flush()
    http.close()
    assert out.read_text().splitlines() == ["fp_rollout001"]
    statuses = [r["status"] for r in rows(history, "SELECT status FROM checks")]
    assert statuses == ["new"] * 4
