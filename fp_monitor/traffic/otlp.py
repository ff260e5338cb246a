"""`fpmon otlp`: an OTLP/HTTP receiver, so that an application already instrumented with
OpenTelemetry has the fingerprints of its calls recorded with no change to its code and no
proxy in its request path.

`POST /v1/traces` and `POST /v1/metrics` take protobuf or JSON, gzip or not (otlp_wire.py);
each span or data point carrying a fingerprint (otlp_sightings.py) goes to the target it
belongs to (Router) and is recorded like any other traffic: one Recorder per target, whose
writer thread does the detection, the learning, the lock, the notifications and the history,
in batches. The answer never waits on the history: when the records waiting for it pass
QUEUE_LIMIT, requests are answered 503 with Retry-After (retryable per the OTLP spec) until it
catches up. `GET /status` (JSON) and `GET /metrics` (Prometheus) give the counts, among them
the calls that matched no target, by host and model.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from fp_monitor.config.settings import Config, Target
from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.models import ABSENT, ErrorKind, Observation
from fp_monitor.domain.text import clean
from fp_monitor.net.redact import scrub
from fp_monitor.net.urls import is_loopback
from fp_monitor.output.otlp_status import (
    IntakeStatus,
    Unmatched,
    status_document,
    status_exposition,
)
from fp_monitor.probe.request import status_error_kind
from fp_monitor.store.history import History
from fp_monitor.traffic.otlp_sightings import (
    CountTracker,
    Extracted,
    Sighting,
    point_sightings,
    span_sightings,
)
from fp_monitor.traffic.otlp_wire import Encoding, Refused, answer, decompressed, parse, refusal
from fp_monitor.traffic.proxy import (
    LifespanApp,
    Receive,
    Scope,
    Send,
    bind,
    parse_listen,
    serve_app,
)
from fp_monitor.traffic.recording import Recorder

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:4318"
"""OTLP/HTTP's registered port, on loopback: another address is a choice (with a warning)."""
MAX_BODY_BYTES = 16 * 1024 * 1024
"""A request body, compressed and once decompressed: 413 beyond."""
REQUEST_LIMIT = 10_000
"""Calls taken from one request; spans or data points beyond are rejected (partial success)."""
QUEUE_LIMIT = 50_000
"""Calls waiting for the history before requests are answered 503."""
RETRY_AFTER_SECONDS = 2
AUTO_TARGETS_LIMIT = 100
"""Targets --auto-targets makes at most: each has its own writer thread."""
UNMATCHED_KEYS_LIMIT = 1000
"""Host and model pairs counted apart; the others are counted together as ("*", "*")."""
# gen_ai.provider.name values of the OpenTelemetry semantic conventions that differ from the
# name of fpmon's preset for the same API.
SEMCONV_PROVIDERS = {
    "azure.ai.openai": "azure",
    "x_ai": "xai",
    "mistral_ai": "mistral",
    "gcp.gemini": "gemini",
    "gcp.gen_ai": "gemini",
}
# error.type values (an exception class or an HTTP status) -> the probe's error kinds.
_ERROR_WORDS = (
    ("ratelimit", ErrorKind.RATE_LIMITED),
    ("authentication", ErrorKind.AUTH),
    ("permissiondenied", ErrorKind.AUTH),
    ("notfound", ErrorKind.NOT_FOUND),
    ("badrequest", ErrorKind.BAD_REQUEST),
    ("unprocessable", ErrorKind.BAD_REQUEST),
    ("timeout", ErrorKind.TIMEOUT),
    ("connection", ErrorKind.CONNECTION),
)
_SHAPES = {"span": "otlp-span", "metric": "otlp-metric"}
"""request_shape of a record: which kind of telemetry it came from (no request is seen)."""


def provider_preset(name: str) -> str:
    """A gen_ai.provider.name (or gen_ai.system) value as fpmon's preset name."""
    name = name.strip().lower()
    return SEMCONV_PROVIDERS.get(name, name)


def error_kind(error_type: str) -> ErrorKind:
    if error_type.isascii() and error_type.isdigit() and len(error_type) == 3:
        return status_error_kind(int(error_type)) or ErrorKind.SERVER
    words = error_type.lower().replace("_", "").replace(".", "")
    return next((kind for word, kind in _ERROR_WORDS if word in words), ErrorKind.SERVER)


def host_key(sighting: Sighting) -> str:
    """What an unmatched call is counted under (and an auto target named after)."""
    if sighting.server_address:
        port = f":{sighting.server_port}" if sighting.server_port else ""
        return sighting.server_address + port
    return provider_preset(sighting.provider) if sighting.provider else "-"


@dataclass(frozen=True)
class Route:
    """Where a call is recorded: its target, and the provider and base URL of its records."""

    target: str
    provider: str
    base_url: str


@dataclass(frozen=True)
class _Endpoint:
    route: Route
    host: str
    port: int


class Router:
    """Which target a call belongs to: the configured target whose model is the request model
    and, where the call names them, whose base URL's host and port are `server.address` and
    `server.port`; among several, the one of the call's provider. Still ambiguous: none."""

    def __init__(self, targets: Sequence[Target], *, only: str | None, auto: bool) -> None:
        self._by_model: dict[str, list[_Endpoint]] = {}
        for target in targets:
            if not target.enabled:
                continue
            parts = urlsplit(target.base_url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            route = Route(target.name, target.provider, target.base_url)
            endpoint = _Endpoint(route, (parts.hostname or "").lower(), port)
            self._by_model.setdefault(target.model, []).append(endpoint)
        named = [e.route for es in self._by_model.values() for e in es if e.route.target == only]
        self._only = None if only is None else (named[0] if named else Route(only, "", ""))
        self._auto = auto
        self._made: dict[str, Route] = {}
        self._refused: set[str] = set()

    def route(self, sighting: Sighting) -> Route | None:
        if self._only is not None:
            return self._only
        model = sighting.request_model
        candidates = [
            e
            for e in self._by_model.get(model or "", ())
            if (sighting.server_address is None or sighting.server_address == e.host)
            and (sighting.server_port is None or sighting.server_port == e.port)
        ]
        if len(candidates) > 1 and sighting.provider:
            provider = provider_preset(sighting.provider)
            candidates = [e for e in candidates if e.route.provider == provider]
        if len(candidates) == 1:
            return candidates[0].route
        if candidates or not self._auto or not model:
            return None  # ambiguous: never guessed
        return self._auto_route(f"{host_key(sighting)}/{model}", sighting)

    def _auto_route(self, name: str, sighting: Sighting) -> Route | None:
        if (made := self._made.get(name)) is not None:
            return made
        if len(self._made) >= AUTO_TARGETS_LIMIT:
            if name not in self._refused:
                self._refused.add(name)
                logger.warning(
                    "fpmon otlp: --auto-targets made %d targets already: %s stays unmatched",
                    AUTO_TARGETS_LIMIT,
                    clean(name),
                )
            return None
        provider = provider_preset(sighting.provider) if sighting.provider else "custom"
        route = Route(name, provider, "")
        self._made[name] = route
        logger.warning("fpmon otlp: new target %s (--auto-targets)", clean(name))
        return route


@dataclass(frozen=True)
class IntakeOptions:
    target: str | None = None
    """Every call to this target (like `fpmon proxy --target`)."""
    auto_targets: bool = False
    token: str | None = field(default=None, repr=False)
    """The bearer token senders must present; None: none asked."""
    max_body_bytes: int = MAX_BODY_BYTES


@dataclass(frozen=True)
class Taken:
    """What became of one request: the items rejected and why, or a warning (unmatched)."""

    rejected: int
    message: str


class Intake:
    """The receiver's state: the router, a Recorder per target, the cumulative metric
    streams, and the counts behind /status."""

    def __init__(
        self,
        loaded: Config,
        options: IntakeOptions,
        *,
        config: Path | None = None,
        history: str | None = None,
    ) -> None:
        self._config_path = config
        self._history_path = history
        self.history = loaded.history
        self._router = Router(loaded.targets, only=options.target, auto=options.auto_targets)
        self._recorders: dict[str, Recorder] = {}
        self._taken: dict[str, int] = {}
        self._tracker = CountTracker(datetime.now(UTC))
        self._unmatched: dict[tuple[str, str], int] = {}
        self.spans = self.data_points = self.rejected_spans = self.rejected_data_points = 0
        self.busy = 0

    @property
    def queued(self) -> int:
        done = sum(r.recorded + r.errors for r in self._recorders.values())
        return sum(self._taken.values()) - done

    def check_room(self) -> None:
        """Refused(503) while the history is behind: the sender retries later, and its data
        waits in its own queue rather than in this process's memory."""
        if self.queued >= QUEUE_LIMIT:
            self.busy += 1
            raise Refused(
                503,
                f"{self.queued} records are waiting for the history; retry later",
                ((b"retry-after", str(RETRY_AFTER_SECONDS).encode()),),
            )

    def traces(self, request: ExportTraceServiceRequest) -> Taken:
        extracted = span_sightings(request, datetime.now(UTC))
        self.spans += extracted.items
        taken = self._take(extracted)
        self.rejected_spans += taken.rejected
        return taken

    def metrics(self, request: ExportMetricsServiceRequest) -> Taken:
        extracted = point_sightings(request, self._tracker, datetime.now(UTC))
        self.data_points += extracted.items
        taken = self._take(extracted)
        self.rejected_data_points += taken.rejected
        return taken

    def _take(self, extracted: Extracted) -> Taken:
        budget = REQUEST_LIMIT
        unmatched = 0
        for sighting in extracted.sightings:
            if sighting.count > budget:
                extracted.reject(f"more than {REQUEST_LIMIT} calls in one request")
                continue
            route = self._router.route(sighting)
            if route is None:
                unmatched += sighting.count
                self._count_unmatched(sighting)
                continue
            budget -= sighting.count
            recorder = self._recorder(route.target)
            observation = _observation(route, sighting, recorder.site)
            for _ in range(sighting.count):
                recorder.record(observation)
            self._taken[route.target] += sighting.count
        message = extracted.message
        if unmatched and not message:
            # A warning with nothing rejected (OTLP spec: partial success with rejected 0).
            message = f"{unmatched} call(s) with a fingerprint matched no fpmon target"
        return Taken(extracted.rejected, message)

    def _recorder(self, target: str) -> Recorder:
        recorder = self._recorders.get(target)
        if recorder is None:
            recorder = Recorder(target, history=self._history_path, config=self._config_path)
            self._recorders[target] = recorder
            self._taken[target] = 0
        return recorder

    def _count_unmatched(self, sighting: Sighting) -> None:
        key = (host_key(sighting), sighting.request_model or "-")
        if key not in self._unmatched:
            if len(self._unmatched) >= UNMATCHED_KEYS_LIMIT:
                key = ("*", "*")
            else:
                logger.warning(
                    "fpmon otlp: calls from host %s, model %s match no target: counted in "
                    "/status (see --target, --auto-targets)",
                    clean(key[0]),
                    clean(key[1]),
                )
        self._unmatched[key] = self._unmatched.get(key, 0) + sighting.count

    def status(self) -> IntakeStatus:
        recorded = sum(r.recorded for r in self._recorders.values())
        failed = sum(r.errors for r in self._recorders.values())
        return IntakeStatus(
            spans=self.spans,
            data_points=self.data_points,
            rejected_spans=self.rejected_spans,
            rejected_data_points=self.rejected_data_points,
            observations=sum(self._taken.values()),
            recorded=recorded,
            failed=failed,
            queued=self.queued,
            busy=self.busy,
            unmatched=tuple(
                Unmatched(host, model, count)
                for (host, model), count in sorted(self._unmatched.items())
            ),
            targets=tuple(sorted(self._recorders)),
        )

    def flush(self) -> None:
        """Write what is queued (at shutdown)."""
        for recorder in list(self._recorders.values()):
            recorder.flush()


def _observation(route: Route, sighting: Sighting, site: str | None) -> Observation:
    tags = {"intake": "otlp"}
    if sighting.service is not None:
        tags["service.name"] = sighting.service
    failed = sighting.error_type is not None
    # Span strings are data like a server's answer: keys scrubbed, the message cut to its bound.
    return scrub(
        Observation(
            target=route.target,
            provider=route.provider or provider_preset(sighting.provider or "custom"),
            base_url=route.base_url,
            requested_model=sighting.request_model or "",
            observed_at=sighting.observed_at,
            attempts=1,
            latency_ms=sighting.latency_ms,
            request_shape=_SHAPES[sighting.signal],
            fingerprint=None if failed else sighting.fingerprint,
            resolved_model=None if failed else (sighting.response_model or ABSENT),
            response_id=sighting.response_id,
            usage=sighting.usage,
            error_kind=error_kind(sighting.error_type) if sighting.error_type is not None else None,
            error_message=f"error.type: {sighting.error_type}" if failed else None,
            tags=tags,
            site=site,
        )
    )


_SIGNALS = {"/v1/traces": "traces", "/v1/metrics": "metrics"}


class OtlpApp(LifespanApp):
    """The ASGI application."""

    def __init__(self, intake: Intake, options: IntakeOptions) -> None:
        self._intake = intake
        self._options = options
        self._authorization = None if options.token is None else f"Bearer {options.token}".encode()

    async def shutdown(self) -> None:
        await anyio.to_thread.run_sync(self._intake.flush)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), value)
        path, method = scope["path"], scope["method"]
        encoding: Encoding | None = None
        try:
            if self._authorization is not None and not hmac.compare_digest(
                headers.get(b"authorization", b""), self._authorization
            ):
                raise Refused(
                    401,
                    "a bearer token is required: Authorization: Bearer TOKEN",
                    ((b"www-authenticate", b'Bearer realm="fpmon otlp"'),),
                )
            if path in _SIGNALS:
                if method != "POST":
                    raise Refused(405, f"{path} takes POST", ((b"allow", b"POST"),))
                encoding = Encoding.of(headers.get(b"content-type", b"").decode("latin-1"))
                body, content_type = await self._export(path, headers, encoding, receive)
            elif path in ("/status", "/metrics"):
                if method != "GET":
                    raise Refused(405, f"{path} takes GET", ((b"allow", b"GET"),))
                body, content_type = self._report(path)
            else:
                raise Refused(404, f"no {path[:100]!r} here: POST /v1/traces or /v1/metrics")
        except _Gone:
            return  # nobody to answer
        except Refused as refused:
            body, content_type = refusal(refused, encoding)
            await _respond(send, refused.status, body, content_type, refused.headers)
            return
        await _respond(send, 200, body, content_type)

    async def _export(
        self, path: str, headers: dict[bytes, bytes], encoding: Encoding, receive: Receive
    ) -> tuple[bytes, str]:
        limit = self._options.max_body_bytes
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            raise Refused(413, f"the body is larger than {limit} bytes")
        self._intake.check_room()
        raw = await _read_body(receive, limit)
        body = decompressed(raw, headers.get(b"content-encoding", b"").decode("latin-1"), limit)
        if _SIGNALS[path] == "traces":
            taken = self._intake.traces(parse(body, encoding, ExportTraceServiceRequest))
            response: Any = ExportTraceServiceResponse()
            if taken.rejected or taken.message:
                response.partial_success.CopyFrom(
                    ExportTracePartialSuccess(
                        rejected_spans=taken.rejected, error_message=taken.message
                    )
                )
        else:
            taken = self._intake.metrics(parse(body, encoding, ExportMetricsServiceRequest))
            response = ExportMetricsServiceResponse()
            if taken.rejected or taken.message:
                response.partial_success.CopyFrom(
                    ExportMetricsPartialSuccess(
                        rejected_data_points=taken.rejected, error_message=taken.message
                    )
                )
        return answer(response, encoding), encoding.content_type

    def _report(self, path: str) -> tuple[bytes, str]:
        status = self._intake.status()
        if path == "/status":
            return json.dumps(status_document(status)).encode(), "application/json"
        return status_exposition(status), "text/plain; version=0.0.4; charset=utf-8"


class _Gone(Exception):
    """The sender went away before its body was read."""


async def _read_body(receive: Receive, limit: int) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        body += message.get("body", b"")
        if len(body) > limit:
            raise Refused(413, f"the body is larger than {limit} bytes")
        if not message.get("more_body", False):
            return bytes(body)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", b"%d" % len(body)),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def check_listen(listen: str) -> bool:
    """Whether `listen` is a loopback address (parsed: a bad one is a usage error)."""
    return is_loopback(parse_listen(listen)[0])


def serve_otlp(
    listen: str,
    loaded: Config,
    options: IntakeOptions,
    *,
    config: Path | None,
    history: str | None,
    on_ready: Callable[[str], None],
) -> None:
    """Serve until SIGTERM or Ctrl-C; what is queued is written before the process ends."""
    host, port = parse_listen(listen)
    if options.target is None and not options.auto_targets and not loaded.targets:
        raise ConfigError(
            "no targets to record to: configure targets (fpmon init), or pass --target NAME "
            "or --auto-targets"
        )
    History.open(loaded.history).close()  # an unusable history stops it before it listens
    intake = Intake(loaded, options, config=config, history=history)
    sock = bind(host, port)
    app = OtlpApp(intake, options)
    serve_app(app, sock, host=host, on_ready=on_ready)
