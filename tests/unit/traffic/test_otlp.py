"""The OTLP intake's parts: bodies in (content types, gzip, OTLP/JSON), what counts as a call
with a fingerprint, counts into increases, and which target a call belongs to."""

from __future__ import annotations

import gzip
import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from fp_monitor.config.settings import Config, load_config
from fp_monitor.domain.models import NULL, ErrorKind, Usage
from fp_monitor.store.history import History
from fp_monitor.traffic import otlp
from fp_monitor.traffic.otlp import Intake, IntakeOptions, Router, error_kind
from fp_monitor.traffic.otlp_sightings import (
    CountTracker,
    Sighting,
    point_sightings,
    span_sightings,
)
from fp_monitor.traffic.otlp_wire import (
    Encoding,
    Refused,
    answer,
    decompressed,
    parse,
    refusal,
)
from tests.conftest import config_text

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NS = int(NOW.timestamp() * 1e9)
FP = "openai.response.system_fingerprint"
LEGACY = "gen_ai.openai.response.system_fingerprint"


def kv(key: str, value: Any) -> KeyValue:
    if value is None:
        return KeyValue(key=key, value=AnyValue())
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def traces(*spans: dict[str, Any], service: str = "shop") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(kv("service.name", service))
    scope = resource.scope_spans.add()
    for attributes in spans:
        span = scope.spans.add(name="chat", start_time_unix_nano=NS, end_time_unix_nano=NS + 2**20)
        span.attributes.extend(kv(k, v) for k, v in attributes.items())
    return request


def metrics(
    name: str, points: list[tuple[int, int, dict[str, Any]]], temporality: int
) -> ExportMetricsServiceRequest:
    """One histogram; points are (start ns, count, attributes)."""
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    metric = scope.metrics.add(name=name)
    metric.histogram.aggregation_temporality = temporality
    for start, count, attributes in points:
        point = metric.histogram.data_points.add(
            start_time_unix_nano=start, time_unix_nano=NS, count=count
        )
        point.attributes.extend(kv(k, v) for k, v in attributes.items())
    return request


CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA

# --- bodies in and out ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "json_body"),
    [
        ("application/x-protobuf", False),
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
    ],
)
def test_the_content_type_chooses_the_encoding(content_type: str, json_body: bool) -> None:
    assert Encoding.of(content_type).json is json_body


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/grpc", "\x1b[31m"])
def test_other_content_types_are_415(content_type: str) -> None:
    with pytest.raises(Refused) as refused:
        Encoding.of(content_type)
    assert refused.value.status == 415 and "application/x-protobuf" in refused.value.message


def test_gzip_is_undone_and_bounded() -> None:
    assert decompressed(gzip.compress(b"abc") + gzip.compress(b"def"), "gzip", 10) == b"abcdef"
    assert decompressed(b"plain", "identity", 10) == b"plain"
    with pytest.raises(Refused) as bomb:
        decompressed(gzip.compress(b"\0" * 100_000), "gzip", 1000)
    assert bomb.value.status == 413
    with pytest.raises(Refused) as broken:
        decompressed(b"not gzip at all", "gzip", 1000)
    assert broken.value.status == 400
    with pytest.raises(Refused) as cut:
        decompressed(gzip.compress(b"x" * 1000)[:-12], "gzip", 10_000)
    assert cut.value.status == 400
    with pytest.raises(Refused) as brotli:
        decompressed(b"...", "br", 1000)
    assert brotli.value.status == 415 and (b"accept-encoding", b"gzip") in brotli.value.headers


def test_otlp_json_reads_hex_ids_string_integers_and_ignores_unknown_fields() -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"intValue": 1}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "chat",
                                "kind": 3,
                                "startTimeUnixNano": str(NS),
                                "endTimeUnixNano": NS + 5_000_000,
                                "attributes": [
                                    {"key": "server.port", "value": {"intValue": "443"}}
                                ],
                                "someFutureField": {"x": 1},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    request = parse(json.dumps(body).encode(), Encoding(json=True), ExportTraceServiceRequest)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.span_id.hex() == "eee19b7ec3c1b174"
    assert span.end_time_unix_nano - span.start_time_unix_nano == 5_000_000
    assert span.attributes[0].value.int_value == 443


@pytest.mark.parametrize(
    ("body", "json_body", "says"),
    [
        (b"\xff\xff\xff\xff", False, "not a valid protobuf ExportTraceServiceRequest"),
        (b"{", True, "not valid JSON"),
        (b"[1, 2]", True, "expected a JSON object"),
        (b'{"resourceSpans": 3}', True, "not a valid OTLP/JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', True, "hex"),
        (b"[" * 100_000 + b"]" * 100_000, True, "not valid JSON"),
    ],
)
def test_an_unreadable_body_is_400(body: bytes, json_body: bool, says: str) -> None:
    with pytest.raises(Refused) as refused:
        parse(body, Encoding(json=json_body), ExportTraceServiceRequest)
    assert refused.value.status == 400 and says in refused.value.message


def test_answers_are_in_the_encoding_of_the_request() -> None:
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 3
    response.partial_success.error_message = "why"
    as_json = json.loads(answer(response, Encoding(json=True)))
    assert as_json == {"partialSuccess": {"rejectedSpans": "3", "errorMessage": "why"}}
    as_proto = ExportTraceServiceResponse.FromString(answer(response, Encoding(json=False)))
    assert as_proto.partial_success.rejected_spans == 3
    body, content_type = refusal(Refused(400, "bad"), Encoding(json=False))
    status = status_pb2.Status.FromString(body)
    assert (status.code, status.message, content_type) == (3, "bad", "application/x-protobuf")
    body, content_type = refusal(Refused(400, "bad"), Encoding(json=True))
    assert json.loads(body) == {"code": 3, "message": "bad"}


# --- what counts -----------------------------------------------------------------------------


def test_the_four_fingerprint_states_and_the_three_names() -> None:
    extracted = span_sightings(
        traces(
            {FP: "fp_new", "gen_ai.request.model": "m"},
            {"gen_ai.openai.system_fingerprint": ""},
            {LEGACY: None},
            {"gen_ai.request.model": "m", "gen_ai.response.id": "no fingerprint attribute"},
        ),
        NOW,
    )
    assert [s.fingerprint for s in extracted.sightings] == ["fp_new", "", NULL]
    assert extracted.items == 4 and extracted.rejected == 0
    first = extracted.sightings[0]
    assert (first.service, first.observed_at, first.request_model) == ("shop", NOW, "m")
    assert first.latency_ms == pytest.approx(2**20 / 1e6)


def test_span_attributes_are_read() -> None:
    attributes = {
        FP: "fp_1",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.id": "chatcmpl-1",
        "server.address": "API.openai.com",
        "server.port": 8443,
        "gen_ai.system": "openai",
        "error.type": "openai.RateLimitError",
        "gen_ai.usage.input_tokens": 9,
        "gen_ai.usage.output_tokens": 2,
    }
    (sighting,) = span_sightings(traces(attributes), NOW).sightings
    assert sighting.usage == Usage(prompt_tokens=9, completion_tokens=2, total_tokens=11)
    assert sighting.server_address == "api.openai.com" and sighting.server_port == 8443
    assert (sighting.response_model, sighting.response_id) == ("gpt-4o-2024-08-06", "chatcmpl-1")
    assert (sighting.provider, sighting.error_type) == ("openai", "openai.RateLimitError")


def test_a_value_too_long_rejects_its_span_and_a_long_prompt_does_not() -> None:
    extracted = span_sightings(
        traces({FP: "x" * 5000}, {FP: "fp_ok", "gen_ai.prompt": "p" * 2_000_000}), NOW
    )
    assert [s.fingerprint for s in extracted.sightings] == ["fp_ok"]
    assert extracted.rejected == 1
    assert "openai.response.system_fingerprint: a value longer than 1024" in extracted.message


def test_a_span_time_from_a_wrong_clock_is_replaced_by_the_arrival_time() -> None:
    request = traces({FP: "a"}, {FP: "b"})
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].start_time_unix_nano = int((NOW + timedelta(days=400)).timestamp() * 1e9)
    spans[1].start_time_unix_nano = 1  # 1970
    assert [s.observed_at for s in span_sightings(request, NOW).sightings] == [NOW, NOW]


def test_only_the_operation_metric_with_the_legacy_name_counts() -> None:
    attributes = {LEGACY: "fp_1", "gen_ai.request.model": "m"}
    tracker = CountTracker(NOW - timedelta(hours=1))
    counted = point_sightings(
        metrics("gen_ai.client.operation.duration", [(NS, 3, attributes)], DELTA), tracker, NOW
    )
    found = [(s.fingerprint, s.count, s.signal) for s in counted.sightings]
    assert found == [("fp_1", 3, "metric")]
    for name, attrs in (
        ("gen_ai.client.token.usage", attributes),  # two points per call
        ("gen_ai.client.operation.duration", {FP: "fp_1"}),  # the spans carry it
    ):
        ignored = point_sightings(metrics(name, [(NS, 3, attrs)], DELTA), tracker, NOW)
        assert ignored.sightings == [] and ignored.items == 1


def test_cumulative_counts_become_increases_and_a_restart_is_no_burst() -> None:
    started = NOW - timedelta(minutes=10)
    tracker = CountTracker(started)
    before = int((started - timedelta(days=3)).timestamp() * 1e9)
    after = int((started + timedelta(minutes=5)).timestamp() * 1e9)
    # a sender that ran for days before fpmon: its count so far is its past, not new calls
    assert tracker.increase(b"s", before, 10_000) == 0
    assert tracker.increase(b"s", before, 10_004) == 4
    assert tracker.increase(b"s", before, 10_004) == 0
    # restarted while fpmon listened: counts from its restart, not 10,006 again
    assert tracker.increase(b"s", after, 2) == 2
    assert tracker.increase(b"s", after, 5) == 3
    # a count that went down with the same start: a reset, counted from zero
    assert tracker.increase(b"s", after, 1) == 1
    # a new stream that started while fpmon listened: every call it counted is new
    assert tracker.increase(b"t", after, 7) == 7


def test_streams_are_told_apart_by_their_attributes_and_bounded() -> None:
    tracker = CountTracker(NOW - timedelta(hours=1))
    start = NS - 10**9
    points = [(start, 2, {LEGACY: "fp_1"}), (start, 5, {LEGACY: "fp_2"})]
    name = "gen_ai.client.operation.duration"
    first = point_sightings(metrics(name, points, CUMULATIVE), tracker, NOW)
    assert [(s.fingerprint, s.count) for s in first.sightings] == [("fp_1", 2), ("fp_2", 5)]
    points = [(start, 3, {LEGACY: "fp_1"}), (start, 5, {LEGACY: "fp_2"})]
    again = point_sightings(metrics(name, points, CUMULATIVE), tracker, NOW)
    assert [(s.fingerprint, s.count) for s in again.sightings] == [("fp_1", 1)]
    small = CountTracker(NOW - timedelta(hours=2), limit=2)
    for stream in (b"a", b"b", b"c"):
        small.increase(stream, 0, 1)
    assert small.increase(b"a", 0, 5) == 0  # forgotten: counted from here, like a restart


def test_a_histogram_without_temporality_is_rejected() -> None:
    request = metrics("gen_ai.client.operation.duration", [(NS, 1, {LEGACY: "fp"})], 0)
    extracted = point_sightings(request, CountTracker(NOW), NOW)
    assert extracted.rejected == 1 and extracted.sightings == []


# --- which target ------------------------------------------------------------------------------


def sighting(**fields: Any) -> Sighting:
    base: dict[str, Any] = {
        "signal": "span",
        "fingerprint": "fp",
        "request_model": "gpt-4o",
        "response_model": None,
        "response_id": None,
        "server_address": None,
        "server_port": None,
        "provider": None,
        "error_type": None,
        "service": None,
        "observed_at": NOW,
        "latency_ms": None,
    }
    return Sighting(**{**base, **fields})


@pytest.fixture
def fleet(isolated: Path) -> Config:
    path = isolated / "fpmon.toml"
    path.write_text(
        config_text(
            "http://127.0.0.1:9/v1",
            local={"model": "gpt-4o"},
            openai={
                "provider": "openai",
                "base_url": "https://api.openai.com/v1",
                "model": "gpt-4o",
            },
            azure={
                "provider": "azure",
                "base_url": "https://x.openai.azure.com",
                "model": "gpt-4o",
                "deployment": "d",
            },
            other={"model": "llama"},
        )
    )
    return load_config(path)


def test_a_target_is_found_by_model_host_and_port(fleet: Config) -> None:
    router = Router(fleet.targets, only=None, auto=False)
    assert router.route(sighting(request_model="llama")).target == "other"  # type: ignore[union-attr]
    by_host = sighting(server_address="api.openai.com")
    assert router.route(by_host).target == "openai"  # type: ignore[union-attr]
    by_port = sighting(server_address="127.0.0.1", server_port=9)
    assert router.route(by_port).target == "local"  # type: ignore[union-attr]
    assert router.route(sighting(server_address="127.0.0.1", server_port=10)) is None
    assert router.route(sighting(request_model="unknown")) is None


def test_the_provider_decides_among_several_and_ambiguity_is_unmatched(fleet: Config) -> None:
    router = Router(fleet.targets, only=None, auto=False)
    azure = sighting(provider="azure.ai.openai")
    assert router.route(azure).target == "azure"  # type: ignore[union-attr]
    # provider openai: the openai target; `local` is custom, so it is not a candidate
    assert router.route(sighting(provider="openai")).target == "openai"  # type: ignore[union-attr]
    assert router.route(sighting()) is None  # three targets serve gpt-4o: never guessed
    assert router.route(sighting(provider="x_ai")) is None


def test_target_sends_everything_to_one(fleet: Config) -> None:
    router = Router(fleet.targets, only="azure", auto=True)
    route = router.route(sighting(request_model="anything"))
    assert route is not None and (route.target, route.provider) == ("azure", "azure")
    unknown = Router(fleet.targets, only="app", auto=False).route(sighting())
    assert unknown is not None and unknown.target == "app"


def test_auto_targets_are_named_host_slash_model_and_bounded(
    fleet: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(otlp, "AUTO_TARGETS_LIMIT", 2)
    router = Router(fleet.targets, only=None, auto=True)
    made = router.route(sighting(request_model="qwen", server_address="h", server_port=8000))
    assert made is not None and made.target == "h:8000/qwen"
    assert router.route(sighting(request_model="m", provider="x_ai")).target == "xai/m"  # type: ignore[union-attr]
    assert router.route(sighting(request_model="third")) is None
    assert router.route(sighting(request_model="third")) is None
    refused = [r.getMessage() for r in caplog.records if "stays unmatched" in r.getMessage()]
    assert refused == ["fpmon otlp: --auto-targets made 2 targets already: -/third stays unmatched"]
    assert router.route(sighting()) is None  # ambiguous among configured ones: not made


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("openai.RateLimitError", ErrorKind.RATE_LIMITED),
        ("429", ErrorKind.RATE_LIMITED),
        ("AuthenticationError", ErrorKind.AUTH),
        ("openai.APITimeoutError", ErrorKind.TIMEOUT),
        ("openai.APIConnectionError", ErrorKind.CONNECTION),
        ("404", ErrorKind.NOT_FOUND),
        ("_OTHER", ErrorKind.SERVER),
    ],
)
def test_error_type_gives_the_error_kind(error_type: str, kind: ErrorKind) -> None:
    assert error_kind(error_type) is kind


# --- the intake ----------------------------------------------------------------------------


def test_calls_over_the_request_limit_are_rejected_and_the_rest_taken(
    fleet: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp, "REQUEST_LIMIT", 3)
    intake = Intake(fleet, IntakeOptions(target="app"), config=fleet.source)
    taken = intake.traces(traces(*({FP: f"fp_{n}"} for n in range(5))))
    assert (taken.rejected, taken.message) == (2, "more than 3 calls in one request")
    status = intake.status()
    assert (status.spans, status.rejected_spans, status.observations) == (5, 2, 3)
    intake.flush()
    assert intake.status().recorded == 3
    assert fleet.history.is_relative_to(Path.cwd())  # the isolated one


def test_unmatched_calls_are_a_warning_counted_by_host_and_model(
    fleet: Config, caplog: pytest.LogCaptureFixture
) -> None:
    intake = Intake(fleet, IntakeOptions(), config=fleet.source)
    spans = [{FP: "fp", "gen_ai.request.model": "gpt-4o", "gen_ai.system": "openai\x1b[2J"}] * 3
    taken = intake.traces(traces(*spans))
    assert taken == otlp.Taken(0, "3 call(s) with a fingerprint matched no fpmon target")
    (unmatched,) = intake.status().unmatched
    assert (unmatched.host, unmatched.model, unmatched.count) == ("openai\x1b[2j", "gpt-4o", 3)
    (line,) = [r.getMessage() for r in caplog.records]  # once per key
    assert "host openai\\x1b[2j, model gpt-4o match no target" in line


def test_a_full_queue_is_503_with_retry_after_until_the_history_catches_up(
    fleet: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp, "QUEUE_LIMIT", 3)
    History.open(fleet.history).close()
    with closing(sqlite3.connect(fleet.history, isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")  # a slow history: the writer waits for it
        intake = Intake(fleet, IntakeOptions(target="app"), config=fleet.source)
        intake.check_room()
        intake.traces(traces(*[{FP: "fp"}] * 3))
        with pytest.raises(Refused) as busy:
            intake.check_room()
        assert busy.value.status == 503 and (b"retry-after", b"2") in busy.value.headers
        assert intake.status().busy == 1
        blocker.execute("ROLLBACK")
    intake.flush()
    intake.check_room()  # caught up: room again
    assert intake.status().recorded == 3
