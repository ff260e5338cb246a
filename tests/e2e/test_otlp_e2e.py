"""`fpmon otlp` as installed, in its own process, fed by a real application: the official openai
SDK instrumented by opentelemetry-instrumentation-openai-v2, exporting with the OpenTelemetry
SDK's OTLP/HTTP exporters (tests/e2e/otlp_app.py), calling the fake API. Then OTLP/JSON as
OpenLLMetry names the attribute, and hostile requests, each answered per the OTLP spec."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx2
import pytest
import tomli_w
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import FPMON, Run
from tests.e2e.conftest import recorded

APP = Path(__file__).with_name("otlp_app.py")
TOKEN = "otlp-e2e-token-0123456789"
PROTOBUF = {"content-type": "application/x-protobuf"}
# One model (and target) per test: the tests share one receiver and one history.
MODELS = {
    "latest": ["fp_latest0001", "fp_latest0002"],
    "gzip": ["fp_gzip000001"],
    "legacy": ["fp_legacy0001", "fp_legacy0002", "fp_legacy0003"],
    "rotating": ["fp_before0001"],
    "openllmetry": ["unused"],
    "hostile": ["unused"],
    "bulk": ["unused"],
}


class Receiver:
    """One `fpmon otlp` process with its own state directory and fpmon.toml."""

    def __init__(self, state: Path, config: str, *args: str, env: dict[str, str] | None = None):
        assert FPMON is not None
        state.mkdir(parents=True, exist_ok=True)
        (state / "fpmon.toml").write_text(config)
        self.history = state / "history.db"
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith("FPMON_")}
        clean_env.update(
            FPMON_HISTORY=str(self.history),
            XDG_CONFIG_HOME=str(state / "config"),
            XDG_DATA_HOME=str(state / "data"),
            **(env or {}),
        )
        self.process = subprocess.Popen(
            [FPMON, "otlp", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=state,
            env=clean_env,
        )
        assert self.process.stdout is not None
        self.banner = self.process.stdout.readline()
        assert self.banner.startswith("fpmon otlp: http://"), self.banner + self.stop()[1]
        self.url = self.banner.split()[2]

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> httpx2.Response:
        with httpx2.Client(trust_env=False, timeout=60) as http:
            return http.post(self.url + path, content=body, headers=headers or PROTOBUF)

    def status(self, **headers: str) -> dict[str, Any]:
        with httpx2.Client(trust_env=False, timeout=10) as http:
            answer = http.get(self.url + "/status", headers=headers)
        assert answer.status_code == 200
        found: dict[str, Any] = answer.json()
        return found

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit code and what it printed on stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err

    def records(self, count: int, where: str = "1", timeout: float = 30) -> list[dict[str, Any]]:
        """The observations matching `where`, once there are `count` of them."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if self.history.exists():
                try:
                    with closing(sqlite3.connect(self.history)) as db:
                        db.row_factory = sqlite3.Row
                        query = f"SELECT * FROM observations WHERE {where} ORDER BY id"
                        found = [dict(row) for row in db.execute(query)]
                except sqlite3.OperationalError:
                    pass  # the tables not made yet
                if len(found) >= count:
                    return found
            time.sleep(0.05)
        raise AssertionError(f"{len(found)} records, not {count}")

    def checks(self, target: str) -> list[str]:
        with closing(sqlite3.connect(self.history)) as db:
            query = "SELECT status FROM checks WHERE target = ? ORDER BY id"
            return [status for (status,) in db.execute(query, (target,))]


@pytest.fixture(scope="module")
def api() -> Iterator[FakeAPI]:
    models = {name: ModelBehaviour(fps, f"{name}-2026") for name, fps in MODELS.items()}
    with FakeAPI(models) as fake:
        yield fake


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("otlp-events") / "events.jsonl"


@pytest.fixture(scope="module")
def receiver(
    api: FakeAPI, events: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Receiver]:
    state = tmp_path_factory.mktemp("otlp")
    script = state / "record.py"
    script.write_text(
        "import json, os, sys\n"
        "with open(sys.argv[1], 'a') as out:\n"
        "    out.write(json.dumps({'status': os.environ['FPMON_STATUS'],"
        " 'target': os.environ['FPMON_TARGET'], 'now': os.environ['FPMON_NOW']}) + '\\n')\n"
    )
    config = {
        "defaults": {"learning": False},
        "targets": {
            name: {"provider": "custom", "base_url": api.base_url, "model": name} for name in MODELS
        },
        "notify": {
            "log": {"type": "command", "run": [sys.executable, str(script), str(events)]},
        },
    }
    config["notify"]["log"]["on"] = ["new"]
    running = Receiver(state, tomli_w.dumps(config))
    yield running
    code, err = running.stop()
    assert code == 0, err
    assert "Traceback" not in err


def run_app(receiver: Receiver, api: FakeAPI, model: str, calls: int, *flags: str) -> list[Any]:
    """The instrumented application, run to its end; what its SDK got, call by call."""
    done = subprocess.run(
        [sys.executable, str(APP), receiver.url, api.base_url, model, str(calls), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert done.returncode == 0, done.stderr
    assert "Failed to export" not in done.stderr, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


# --- the real application -----------------------------------------------------------------


@pytest.mark.parametrize("model", ["latest", "gzip"])
def test_the_spans_of_an_instrumented_app_are_recorded(
    receiver: Receiver, api: FakeAPI, model: str
) -> None:
    flags = ["--gzip"] if model == "gzip" else []
    calls = run_app(receiver, api, model, 4, *flags)
    rows = receiver.records(4, f"target = '{model}'")
    assert len(rows) == 4  # the metrics of the same calls are not counted again
    assert [(r["fingerprint"], r["response_id"]) for r in rows] == [
        (c["fingerprint"], c["id"]) for c in calls
    ]
    first = rows[0]
    assert (first["source"], first["request_shape"]) == ("traffic", "otlp-span")
    assert (first["requested_model"], first["resolved_model"]) == (model, f"{model}-2026")
    assert json.loads(first["tags"]) == {"intake": "otlp", "service.name": "shop"}
    assert first["latency_ms"] > 0 and first["base_url"] == api.base_url
    assert first["total_tokens"] == first["prompt_tokens"] + first["completion_tokens"] > 0


def test_with_the_legacy_conventions_the_metrics_are_recorded(
    receiver: Receiver, api: FakeAPI
) -> None:
    calls = run_app(receiver, api, "legacy", 5, "--legacy")
    rows = receiver.records(5, "target = 'legacy'")
    assert len(rows) == 5
    assert {r["request_shape"] for r in rows} == {"otlp-metric"}
    assert Counter(r["fingerprint"] for r in rows) == Counter(c["fingerprint"] for c in calls)
    assert {r["resolved_model"] for r in rows} == {"legacy-2026"}


def test_a_rotation_at_the_api_is_new_and_notified(
    receiver: Receiver, api: FakeAPI, events: Path
) -> None:
    run_app(receiver, api, "rotating", 2)
    receiver.records(2, "target = 'rotating'")
    api.rotate("rotating", ["fp_after00001"])
    run_app(receiver, api, "rotating", 1)
    rows = receiver.records(3, "target = 'rotating'")
    assert [r["fingerprint"] for r in rows] == ["fp_before0001"] * 2 + ["fp_after00001"]

    def notified() -> list[dict[str, Any]]:
        return [e for e in recorded(events) if e["target"] == "rotating"]

    deadline = time.monotonic() + 15
    while not notified() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert receiver.checks("rotating") == ["first", "same", "new"]
    (event,) = notified()
    assert event["status"] == "new" and "fp_after00001" in event["now"]
    history = subprocess.run(
        [FPMON, "history", "rotating", "--source", "traffic", "--format", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "FPMON_HISTORY": str(receiver.history)},
    )
    assert history.returncode == 0, history.stderr
    assert "fp_after00001" in history.stdout


# --- OTLP/JSON, as OpenLLMetry names the attribute ------------------------------------------


def openllmetry_span(fingerprint: dict[str, Any], span_id: str) -> dict[str, Any]:
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": "openai.chat",
        "kind": 3,
        "startTimeUnixNano": str(time.time_ns() - 5_000_000),
        "endTimeUnixNano": str(time.time_ns()),
        "attributes": [
            {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "openllmetry"}},
            {"key": "gen_ai.response.model", "value": {"stringValue": "openllmetry-2026"}},
            {"key": "gen_ai.openai.system_fingerprint", "value": fingerprint},
            {"key": "llm.usage.total_tokens", "value": {"intValue": "12"}},
        ],
    }


def test_an_otlp_json_payload_with_openllmetrys_attribute(receiver: Receiver) -> None:
    spans = [
        openllmetry_span({"stringValue": "fp_json000001"}, "eee19b7ec3c1b174"),
        openllmetry_span({"stringValue": ""}, "eee19b7ec3c1b175"),
        openllmetry_span({}, "eee19b7ec3c1b176"),  # an empty AnyValue: null
    ]
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "billing"}}]
                },
                "scopeSpans": [
                    {"scope": {"name": "opentelemetry.instrumentation.openai"}, "spans": spans}
                ],
            }
        ]
    }
    answer = receiver.post(
        "/v1/traces", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json" and answer.json() == {}
    rows = receiver.records(3, "target = 'openllmetry'")
    assert [(r["fingerprint"], r["fingerprint_state"]) for r in rows] == [
        ("fp_json000001", "value"),
        ("", "empty"),
        (None, "null"),
    ]
    assert {json.loads(r["tags"])["service.name"] for r in rows} == {"billing"}


# --- what is not matched ----------------------------------------------------------------------


def span_request(*attribute_sets: dict[str, Any], service: str = "shop") -> bytes:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value=service))
    )
    scope = resource.scope_spans.add()
    now = time.time_ns()
    for attributes in attribute_sets:
        span = scope.spans.add(name="chat", start_time_unix_nano=now, end_time_unix_nano=now + 1)
        for key, value in attributes.items():
            if isinstance(value, int):
                span.attributes.add(key=key, value=AnyValue(int_value=value))
            else:
                span.attributes.add(key=key, value=AnyValue(string_value=value))
    return request.SerializeToString()


def test_unmatched_calls_are_counted_in_status_metrics_and_the_log(
    tmp_path: Path, api: FakeAPI
) -> None:
    config = tomli_w.dumps(
        {"targets": {"a": {"provider": "custom", "base_url": api.base_url, "model": "m"}}}
    )
    receiver = Receiver(tmp_path, config)
    stray = {
        "openai.response.system_fingerprint": "fp_stray",
        "gen_ai.request.model": "other\x1b[31m",
        "server.address": "llm.internal",
        "server.port": 8000,
    }
    for _ in range(2):
        answer = receiver.post("/v1/traces", span_request(stray, stray))
        assert answer.status_code == 200
        response = ExportTraceServiceResponse.FromString(answer.content)
        assert response.partial_success.rejected_spans == 0
        assert "2 call(s) with a fingerprint matched no fpmon target" in (
            response.partial_success.error_message
        )
    status = receiver.status()
    assert status["unmatched"] == [
        {"host": "llm.internal:8000", "model": "other\x1b[31m", "count": 4}
    ]
    assert status["spans"] == 4 and status["observations"] == 0
    with httpx2.Client(trust_env=False) as http:
        metrics = http.get(receiver.url + "/metrics").text
    line = 'fpmon_otlp_unmatched_total{host="llm.internal:8000",model="other\\\\x1b[31m"} 4.0'
    assert line in metrics and "\x1b" not in metrics
    code, err = receiver.stop()
    assert code == 0
    warnings = [w for w in err.splitlines() if "match no target" in w]
    assert warnings == [
        "fpmon otlp: calls from host llm.internal:8000, model other\\x1b[31m match no target: "
        "counted in /status (see --target, --auto-targets)"
    ]


def test_target_and_auto_targets(tmp_path: Path, api: FakeAPI) -> None:
    call = {"openai.response.system_fingerprint": "fp_one", "gen_ai.request.model": "qwen",
            "server.address": "gpu-1", "server.port": 8000}  # fmt: skip
    config = tomli_w.dumps(
        {
            "targets": {"a": {"provider": "custom", "base_url": api.base_url, "model": "m"}},
            "otlp": {"auto_targets": True},
        }
    )
    auto = Receiver(tmp_path / "auto", config)
    assert auto.post("/v1/traces", span_request(call)).status_code == 200
    (row,) = auto.records(1)
    assert row["target"] == "gpu-1:8000/qwen"
    assert auto.stop()[0] == 0
    one = Receiver(tmp_path / "one", config, "--target", "everything")
    assert one.post("/v1/traces", span_request(call, call)).status_code == 200
    assert [r["target"] for r in one.records(2)] == ["everything"] * 2
    assert one.stop()[0] == 0


# --- hostile requests -------------------------------------------------------------------------

BOMB = gzip.compress(b"\0" * (20 * 1024 * 1024))  # 20 MiB of zeros in about 20 KiB


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "says"),
    [
        ("POST", "/v1/traces", PROTOBUF, b"\x0a\xff\xff\xff\xff\x0f", 400, "not a valid protobuf"),
        ("POST", "/v1/metrics", PROTOBUF, b"\xff" * 64, 400, "not a valid protobuf"),
        ("POST", "/v1/traces", {"content-type": "application/json"}, b"{nope", 400, "JSON"),
        ("POST", "/v1/traces", {"content-type": "text/plain"}, b"x", 415, "not supported"),
        ("POST", "/v1/traces", {**PROTOBUF, "content-encoding": "br"}, b"x", 415, "gzip"),
        ("POST", "/v1/traces", {**PROTOBUF, "content-encoding": "gzip"}, b"nope", 400, "gzip"),
        ("POST", "/v1/traces", {**PROTOBUF, "content-encoding": "gzip"}, BOMB, 413, "larger"),
        ("POST", "/v1/traces", PROTOBUF, b"\0" * (17 * 1024 * 1024), 413, "larger"),
        ("GET", "/v1/traces", {}, b"", 405, "takes POST"),
        ("POST", "/v1/logs", PROTOBUF, b"", 404, "no '/v1/logs' here"),
    ],
    ids=[
        "invalid-protobuf",
        "invalid-protobuf-metrics",
        "invalid-json",
        "content-type",
        "brotli",
        "bad-gzip",
        "gzip-bomb",
        "too-large",
        "get",
        "logs",
    ],
)
def test_hostile_requests_are_answered_per_the_spec(
    receiver: Receiver,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    says: str,
) -> None:
    with httpx2.Client(trust_env=False, timeout=60) as http:
        answer = http.request(method, receiver.url + path, content=body, headers=headers)
    assert answer.status_code == status
    if headers.get("content-type") == "application/json":
        assert says in answer.json()["message"]
    else:
        assert answer.headers["content-type"] == "application/x-protobuf"
        assert says in status_pb2.Status.FromString(answer.content).message
    assert receiver.status()["version"] == 1  # still serving


def test_10000_spans_in_one_request(receiver: Receiver) -> None:
    calls = [
        {"openai.response.system_fingerprint": f"fp_bulk{n % 3}", "gen_ai.request.model": "bulk"}
        for n in range(10_000)
    ]
    started = time.monotonic()
    answer = receiver.post("/v1/traces", span_request(*calls))
    assert answer.status_code == 200 and time.monotonic() - started < 10  # not the history's
    assert not ExportTraceServiceResponse.FromString(answer.content).HasField("partial_success")
    rows = receiver.records(10_000, "target = 'bulk'", timeout=120)
    assert Counter(r["fingerprint"] for r in rows) == {"fp_bulk0": 3334, "fp_bulk1": 3333,
                                                      "fp_bulk2": 3333}  # fmt: skip


def test_huge_values_and_control_characters_are_data(receiver: Receiver) -> None:
    hostile = "fp_\x1b[31mred\x07\u202e"
    calls = [
        {"openai.response.system_fingerprint": "fp_h" * 2000, "gen_ai.request.model": "hostile"},
        {"openai.response.system_fingerprint": hostile, "gen_ai.request.model": "hostile",
         "gen_ai.prompt": "p" * 2_000_000, "gen_ai.response.id": "id\r\nx-injected: 1"},
    ]  # fmt: skip
    body = gzip.compress(span_request(*calls, service="s\x1b]0;title\x07"))
    answer = receiver.post("/v1/traces", body, {**PROTOBUF, "content-encoding": "gzip"})
    assert answer.status_code == 200
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_spans == 1
    assert "openai.response.system_fingerprint: a value longer than 1024" in partial.error_message
    (row,) = receiver.records(1, "target = 'hostile'")
    assert row["fingerprint"] == hostile and row["response_id"] == "id\r\nx-injected: 1"
    shown = subprocess.run(
        [FPMON, "history", "hostile", "--source", "traffic"],
        capture_output=True,
        text=True,
        env={**os.environ, "FPMON_HISTORY": str(receiver.history)},
    )
    assert shown.returncode == 0 and "\x1b" not in shown.stdout and "\\x1b" in shown.stdout


# --- senders and the command line -------------------------------------------------------------


def test_a_token_is_asked_when_configured(tmp_path: Path, api: FakeAPI) -> None:
    config = tomli_w.dumps(
        {"targets": {"a": {"provider": "custom", "base_url": api.base_url, "model": "m"}}}
    )
    receiver = Receiver(tmp_path, config, "--token-env", "OTLP_TOKEN", env={"OTLP_TOKEN": TOKEN})
    call = {"openai.response.system_fingerprint": "fp_t", "gen_ai.request.model": "m"}
    refused = receiver.post("/v1/traces", span_request(call))
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    wrong = receiver.post("/v1/traces", span_request(call), {**PROTOBUF, "authorization": "x"})
    assert wrong.status_code == 401
    good = {**PROTOBUF, "authorization": f"Bearer {TOKEN}"}
    assert receiver.post("/v1/traces", span_request(call), good).status_code == 200
    assert receiver.records(1)[0]["fingerprint"] == "fp_t"
    assert receiver.status(authorization=f"Bearer {TOKEN}")["observations"] == 1
    code, err = receiver.stop()
    assert code == 0 and TOKEN not in err
    assert TOKEN.encode() not in receiver.history.read_bytes()


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--token-env", "NOT_SET_ANYWHERE"], {}, "--token-env NOT_SET_ANYWHERE: that environment"),
        (["--listen", "4318"], {}, "expected HOST:PORT"),
        ([], {}, "no targets to record to"),
    ],
)
def test_usage_errors_exit_2(
    fpmon: Callable[..., Run], args: list[str], env: dict[str, str], says: str
) -> None:
    result = fpmon("otlp", *args, env=env)
    assert result.code == 2 and says in result.err, result.err
    assert "Traceback" not in result.err


def test_another_address_than_loopback_is_warned_about(tmp_path: Path) -> None:
    assert FPMON is not None
    process = subprocess.Popen(
        [FPMON, "otlp", "--listen", "0.0.0.0:0", "--target", "app"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "FPMON_HISTORY": str(tmp_path / "h.db")},
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith("fpmon otlp: http://0.0.0.0:")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "warning: 0.0.0.0:0 is reachable from other machines" in err
