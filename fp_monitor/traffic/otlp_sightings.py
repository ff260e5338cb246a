"""What an OTLP payload says about fingerprints: each span, and each increase of a metric data
point's count, that carries a fingerprint attribute becomes a Sighting.

Which attributes count (see docs/how-to/otlp.md):
- spans: `openai.response.system_fingerprint` (opentelemetry-instrumentation-openai-v2 with
  the latest conventions), `gen_ai.openai.system_fingerprint` (OpenLLMetry), and
  `gen_ai.openai.response.system_fingerprint`;
- metric data points: only `gen_ai.openai.response.system_fingerprint` (openai-v2 with the
  legacy conventions, which put it on no span), and only in `gen_ai.client.operation.duration`,
  the metric with one measurement per call. With the latest conventions openai-v2 puts the
  fingerprint on the spans and the metrics of the same calls: counting both would count each
  call twice, and the token-usage metric has two points per call.

A span or point without any of them is no sighting: it cannot be told from a streamed call,
whose wrappers capture no fingerprint. An attribute that is present holds one of the four
states: its string, `""`, or, when its AnyValue is empty (OTLP's null), `<null>`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from fp_monitor.domain.models import NULL, Usage

SPAN_FINGERPRINTS = (
    "openai.response.system_fingerprint",
    "gen_ai.openai.system_fingerprint",
    "gen_ai.openai.response.system_fingerprint",
)
"""The span attributes that carry the fingerprint, the first present one taken."""
METRIC_FINGERPRINT = "gen_ai.openai.response.system_fingerprint"
OPERATION_METRIC = "gen_ai.client.operation.duration"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
PROVIDER_NAMES = ("gen_ai.provider.name", "gen_ai.system")
"""The current name of the provider attribute, then the one it replaced."""
ERROR_TYPE = "error.type"
SERVICE_NAME = "service.name"
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
"""The current names of the token counts, then the ones OpenLLMetry still sends."""
_WANTED = frozenset(
    {
        *SPAN_FINGERPRINTS,
        REQUEST_MODEL,
        RESPONSE_MODEL,
        RESPONSE_ID,
        SERVER_ADDRESS,
        SERVER_PORT,
        *PROVIDER_NAMES,
        ERROR_TYPE,
        *INPUT_TOKENS,
        *OUTPUT_TOKENS,
    }
)
VALUE_LIMIT = 1024
"""A kept value (fingerprint, model, id, host...) longer than this rejects its span or point:
no backend sends such a fingerprint, and one would make every table and log line unreadable."""
SERVICE_LIMIT = 256
"""The service.name tag is cut to this length (a label, not an identity)."""
CLOCK_SKEW = timedelta(minutes=1)
LATE = timedelta(days=1)
"""A span's own time is kept between a day back and a minute ahead; outside, the time it
arrived: a wrong clock must not make its record the latest (or first) of its target forever."""
STREAM_LIMIT = 100_000
"""Cumulative metric streams remembered; the oldest is forgotten beyond (it restarts from its
next count, like a restarted sender)."""

Signal = Literal["span", "metric"]
_COUNTED_KINDS = ("histogram", "exponential_histogram")


@dataclass(frozen=True)
class Sighting:
    """One call of the application, as its telemetry describes it."""

    signal: Signal
    fingerprint: str
    """Token: the attribute's string, `""`, or NULL for an empty AnyValue."""
    request_model: str | None
    response_model: str | None
    response_id: str | None
    server_address: str | None
    server_port: int | None
    provider: str | None
    error_type: str | None
    service: str | None
    observed_at: datetime
    latency_ms: float | None
    usage: Usage = field(default_factory=Usage)
    count: int = 1
    """Calls it stands for: a span is one; a data point, the increase of its count."""


@dataclass
class Extracted:
    """A payload's sightings, the items it rejected, and why (one reason per kind)."""

    sightings: list[Sighting] = field(default_factory=list)
    items: int = 0
    """Spans or data points read."""
    rejected: int = 0
    reasons: dict[str, None] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] = None

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


def span_sightings(request: ExportTraceServiceRequest, now: datetime) -> Extracted:
    extracted = Extracted()
    for resource_spans in request.resource_spans:
        service = _service(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                extracted.items += 1
                found = _attributes(span.attributes)
                name = next((n for n in SPAN_FINGERPRINTS if n in found), None)
                if name is None:
                    continue
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                latency = (end - start) / 1e6 if 0 < start <= end else None
                _sight(extracted, "span", found, name, service, _moment(start, now), latency, 1)
    return extracted


class CountTracker:
    """The last count of each cumulative metric stream, to turn counts into increases."""

    def __init__(self, started: datetime, limit: int = STREAM_LIMIT) -> None:
        self._started_ns = int(started.timestamp() * 1e9)
        self._limit = limit
        self._last: dict[bytes, tuple[int, int]] = {}

    def increase(self, stream: bytes, start_ns: int, count: int) -> int:
        """The calls a cumulative `count` adds since the stream's previous one. A stream seen
        for the first time, or restarted (another start time, or a count that went down),
        counts only what it counted since it started, and only if it started while fpmon
        listened: a sender that ran before must not arrive as a burst of old calls."""
        previous = self._last.pop(stream, None)
        self._last[stream] = (start_ns, count)  # re-inserted: the most recent last in order
        if len(self._last) > self._limit:
            del self._last[next(iter(self._last))]
        if previous is not None and previous[0] == start_ns and count >= previous[1]:
            return count - previous[1]
        return count if start_ns >= self._started_ns else 0


def point_sightings(
    request: ExportMetricsServiceRequest, tracker: CountTracker, now: datetime
) -> Extracted:
    extracted = Extracted()
    for resource_metrics in request.resource_metrics:
        resource = resource_metrics.resource.attributes
        service = _service(resource)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data: Any = getattr(metric, kind)
                counted = metric.name == OPERATION_METRIC and kind in _COUNTED_KINDS
                for point in data.data_points:
                    extracted.items += 1
                    found = _attributes(point.attributes) if counted else {}
                    if METRIC_FINGERPRINT not in found:
                        continue
                    temporality = data.aggregation_temporality
                    if temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA:
                        count = point.count
                    elif temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE:
                        stream = _stream_key(
                            resource, scope.name, scope.version, metric.name, point.attributes
                        )
                        count = tracker.increase(stream, point.start_time_unix_nano, point.count)
                    else:
                        extracted.reject("a histogram without an aggregation temporality")
                        continue
                    if count:
                        moment = _moment(point.time_unix_nano, now)
                        _sight(extracted, "metric", found, METRIC_FINGERPRINT, service, moment,
                               None, count)  # fmt: skip
    return extracted


def _sight(
    extracted: Extracted,
    signal: Signal,
    found: dict[str, AnyValue],
    fingerprint_name: str,
    service: str | None,
    observed_at: datetime,
    latency_ms: float | None,
    count: int,
) -> None:
    texts = {name: _text(value) for name, value in found.items()}
    too_long = next(
        (name for name, text in texts.items() if text is not None and len(text) > VALUE_LIMIT),
        None,
    )
    if too_long is not None:
        extracted.reject(f"{too_long}: a value longer than {VALUE_LIMIT} characters")
        return
    fingerprint = texts[fingerprint_name]
    port = found.get(SERVER_PORT)
    extracted.sightings.append(
        Sighting(
            signal=signal,
            fingerprint=NULL if fingerprint is None else fingerprint,
            request_model=texts.get(REQUEST_MODEL),
            response_model=texts.get(RESPONSE_MODEL),
            response_id=texts.get(RESPONSE_ID),
            server_address=(texts.get(SERVER_ADDRESS) or "").lower() or None,
            server_port=_port(port) if port is not None else None,
            provider=next((t for n in PROVIDER_NAMES if (t := texts.get(n))), None),
            error_type=texts.get(ERROR_TYPE),
            service=service,
            observed_at=observed_at,
            latency_ms=latency_ms,
            usage=_usage(found),
            count=count,
        )
    )


def _usage(found: dict[str, AnyValue]) -> Usage:
    prompt, completion = (
        next((n for name in names if (n := _count(found.get(name))) is not None), None)
        for names in (INPUT_TOKENS, OUTPUT_TOKENS)
    )
    total = None if prompt is None or completion is None else prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


def _count(value: AnyValue | None) -> int | None:
    if value is None or value.WhichOneof("value") != "int_value":
        return None
    return value.int_value if 0 <= value.int_value < 2**53 else None


def _attributes(attributes: Iterable[KeyValue]) -> dict[str, AnyValue]:
    """The attributes fpmon reads (the first of a repeated key, as the SDKs keep one)."""
    found: dict[str, AnyValue] = {}
    for attribute in attributes:
        if attribute.key in _WANTED and attribute.key not in found:
            found[attribute.key] = attribute.value
    return found


def _text(value: AnyValue) -> str | None:
    """An attribute's value as text; None for an empty AnyValue (OTLP's null)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind in ("int_value", "double_value"):
        return str(getattr(value, kind))
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return str(value)[: VALUE_LIMIT + 1]  # an array or a map: not a fingerprint, shown as is


def _port(value: AnyValue) -> int | None:
    kind = value.WhichOneof("value")
    if kind == "int_value":
        port = value.int_value
    elif kind == "string_value" and value.string_value.isascii() and value.string_value.isdigit():
        port = int(value.string_value)
    else:
        return None
    return port if 0 < port <= 65535 else None


def _service(attributes: Iterable[KeyValue]) -> str | None:
    for attribute in attributes:
        if attribute.key == SERVICE_NAME:
            text = _text(attribute.value)
            return None if text is None else text[:SERVICE_LIMIT]
    return None


def _moment(unix_nano: int, now: datetime) -> datetime:
    if unix_nano <= 0:
        return now
    moment = datetime.fromtimestamp(unix_nano // 1000 / 1e6, UTC)
    return moment if now - LATE <= moment <= now + CLOCK_SKEW else now


def _stream_key(
    resource: Iterable[KeyValue],
    scope_name: str,
    scope_version: str,
    metric: str,
    attributes: Iterable[KeyValue],
) -> bytes:
    """A metric stream's identity (OTLP data model: resource, scope, name, attributes), as a
    digest: the attributes may be large, and only equality matters."""
    digest = hashlib.blake2b(digest_size=16)
    for part in _identity(resource, scope_name, scope_version, metric, attributes):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def _identity(
    resource: Iterable[KeyValue],
    scope_name: str,
    scope_version: str,
    metric: str,
    attributes: Iterable[KeyValue],
) -> Iterator[bytes]:
    yield from sorted(a.SerializeToString(deterministic=True) for a in resource)
    yield b"|"
    yield scope_name.encode()
    yield scope_version.encode()
    yield metric.encode()
    yield from sorted(a.SerializeToString(deterministic=True) for a in attributes)
