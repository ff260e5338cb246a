"""The minimal request: every target and sample at once, with retries; response -> Observation."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import json
import os
import random
import ssl
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx2

from fp_monitor import __version__
from fp_monitor.config.providers import PRESETS, Auth
from fp_monitor.config.settings import CANARY_TEMPERATURE, ENV_REFERENCE, Target, expand
from fp_monitor.domain.canary import MAX_TOKEN_CHARS, CanaryMode, CanarySample, parse_top
from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.models import (
    ABSENT,
    NULL,
    ErrorKind,
    Observation,
    Usage,
)
from fp_monitor.net.redact import redact, register, scrub
from fp_monitor.net.untrusted import noting_escapes, parse_json
from fp_monitor.net.urls import in_clear

DEFAULT_CONCURRENCY = 32
MAX_BODY_BYTES = 4 * 1024 * 1024
"""A chat completion capped at one token is a few hundred bytes; more is not what we asked for."""
RETRY_AFTER_CAP = 60.0
RETRYABLE_STATUS = frozenset({408, 409, 429})
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "apim-request-id")


@dataclass(frozen=True)
class _Attempt:
    """What one HTTP attempt produced; the last one becomes the Observation."""

    status: int | None = None
    body: bytes = b""
    headers: httpx2.Headers | None = None
    latency_ms: float | None = None
    error_kind: ErrorKind | None = None
    error_message: str | None = None

    @property
    def retryable(self) -> bool:
        if self.headers is not None and (forced := self.headers.get("x-should-retry")):
            return forced.lower() == "true"
        if self.error_kind in (ErrorKind.TIMEOUT, ErrorKind.CONNECTION):
            return True
        return self.status is not None and (self.status in RETRYABLE_STATUS or self.status >= 500)


def api_key(target: Target) -> str | None:
    """The target's key from the environment (registered for redaction), or None."""
    if target.auth is Auth.NONE or not target.api_key_env:
        return None
    key = os.environ.get(target.api_key_env) or None
    if key:
        register(key)
    return key


def check_credentials(targets: Sequence[Target]) -> None:
    """Refuse, before anything is sent or written, a key or header variable that an HTTP header
    cannot carry as it is (the usual one: a key read from a file or `echo` with its newline).
    The message names the variable, never its value."""
    for target in targets:
        key = api_key(target)
        if key is not None and (problem := _unsendable(key, "key")):
            raise ConfigError(f"{target.api_key_env} {problem}")
        for value in target.headers.values():
            for name in ENV_REFERENCE.findall(value):
                text = os.environ.get(name)
                if text and (problem := _unsendable(text, "value")):
                    raise ConfigError(f"{name} (headers of target {target.name}) {problem}")


def _unsendable(text: str, what: str) -> str | None:
    """What in `text` an HTTP header cannot carry (None: nothing). A key has no whitespace at
    all; a header's value may hold spaces and tabs, never a line break."""
    if what == "key" and any(ch.isspace() for ch in text):
        return (
            "contains whitespace (a trailing newline from a file or `echo`?): set it to the "
            "key alone"
        )
    if any(not (" " <= ch <= "~" or ch == "\t") for ch in text):
        return (
            "contains a line break, a control character or a non-ASCII character, which an "
            f"HTTP header cannot carry: set it to the {what} alone"
        )
    return None


def key_missing(target: Target) -> bool:
    return target.auth in (Auth.BEARER, Auth.API_KEY) and api_key(target) is None


def sends_key_in_clear(target: Target) -> bool:
    """A key over plain http to a host that is not this machine: worth a warning."""
    # The key is read (and so registered for redaction) first, whatever the URL: the CLI
    # calls this before anything else can print a message holding it.
    return api_key(target) is not None and in_clear(target.base_url)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA store costs tens of milliseconds,
    which `fpmon watch` would otherwise pay at every check."""
    return httpx2.create_ssl_context()


def request_body(target: Target, canary: CanaryMode = CanaryMode.OFF) -> dict[str, Any]:
    """One short message, a one-token limit, no temperature, no n: accepted by every model.
    The canary asks for the first token's top logprobs, or samples it at a fixed temperature;
    still one output token."""
    body: dict[str, Any] = {
        "model": target.model,
        "messages": [{"role": "user", "content": target.prompt}],
        target.token_param: 1,
    }
    if target.provider == "azure":
        del body["model"]  # the deployment in the URL names the model
    if canary is CanaryMode.LOGPROBS:
        preset = PRESETS.get(target.provider)
        body["logprobs"] = True
        body["top_logprobs"] = preset.top_logprobs if preset and preset.top_logprobs else 20
    elif canary is CanaryMode.SAMPLED:
        body["temperature"] = CANARY_TEMPERATURE
    return {**body, **target.params}


def _request_headers(target: Target, key: str | None, custom: Mapping[str, str]) -> dict[str, str]:
    """`custom`: the target's own headers, as written (for the shape) or expanded."""
    headers = {"user-agent": f"fpmon/{__version__}", "content-type": "application/json"}
    headers.update(custom)
    if key is not None:
        if target.auth is Auth.API_KEY:
            headers["api-key"] = key
        else:
            headers["authorization"] = f"Bearer {key}"
    return headers


def request_shape(target: Target, canary: CanaryMode = CanaryMode.OFF) -> str:
    """Hash of what fpmon sends (URL, body, header names): a change of fpmon's own probe is
    never mistaken for a backend change."""
    shape = {
        "url": target.endpoint,
        "body": request_body(target, canary),
        "headers": sorted(_request_headers(target, "k", target.headers)),
    }
    canonical = json.dumps(shape, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def probe(
    targets: Sequence[Target],
    samples: Sequence[int] | None = None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    canary: Sequence[CanaryMode] | None = None,
) -> list[list[Observation]]:
    """Probe every target, `samples[i]` requests for target i (default: its `samples`); one
    list of observations per target. `canary[i]`: target i's canary mode (default off)."""
    return asyncio.run(probe_async(targets, samples, concurrency=concurrency, canary=canary))


async def probe_async(
    targets: Sequence[Target],
    samples: Sequence[int] | None = None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    canary: Sequence[CanaryMode] | None = None,
) -> list[list[Observation]]:
    counts = samples if samples is not None else [t.samples for t in targets]
    modes = canary if canary is not None else [CanaryMode.OFF] * len(targets)
    gate = asyncio.Semaphore(concurrency)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # Redirects are never followed, so a key can never travel to another origin.
    async with httpx2.AsyncClient(
        limits=limits, follow_redirects=False, trust_env=False, verify=_tls_context()
    ) as client:
        groups: list[Awaitable[list[Observation]]] = []
        for target, count, mode in zip(targets, counts, modes, strict=True):
            headers = _headers_or_reason(target)
            if isinstance(headers, str):
                # Nothing is sent, so there is one fact to record, not `count` failed samples.
                groups.append(_not_probed(target, headers))
            else:
                groups.append(
                    asyncio.gather(
                        *(_sample(client, gate, target, headers, mode) for _ in range(count))
                    )
                )
        return [list(group) for group in await asyncio.gather(*groups)]


def _headers_or_reason(target: Target) -> dict[str, str] | str:
    """The request headers of `target`, or why it cannot be probed at all: its key, or a
    variable that one of its headers reads, is not set."""
    key = api_key(target)
    if key_missing(target):
        return f"not probed: {target.api_key_env} is not set"
    try:
        custom = {name: expand(value, os.environ) for name, value in target.headers.items()}
    except KeyError as unset:
        return f"not probed: {unset.args[0]} (headers) is not set"
    return _request_headers(target, key, custom)


async def _not_probed(target: Target, reason: str) -> list[Observation]:
    missing = _Attempt(error_kind=ErrorKind.MISSING_KEY, error_message=reason)
    return [_observation(target, datetime.now(UTC), 0, missing)]


async def _sample(
    client: httpx2.AsyncClient,
    gate: asyncio.Semaphore,
    target: Target,
    headers: dict[str, str],
    canary: CanaryMode = CanaryMode.OFF,
) -> Observation:
    """One sample; never a failing sample because of the canary: a 400 to the logprob
    parameters is asked again without them, and noted on the observation."""
    observation = await _plain_sample(client, gate, target, headers, canary)
    if canary is CanaryMode.LOGPROBS and observation.http_status == 400:
        retried = await _plain_sample(client, gate, target, headers, CanaryMode.OFF)
        if retried.ok:
            return replace(retried, logprobs_rejected=True)
    return observation


async def _plain_sample(
    client: httpx2.AsyncClient,
    gate: asyncio.Semaphore,
    target: Target,
    headers: dict[str, str],
    canary: CanaryMode,
) -> Observation:
    observed_at = datetime.now(UTC)
    body = json.dumps(request_body(target, canary)).encode()
    attempts = 0
    while True:
        attempts += 1
        async with gate:
            attempt = await _attempt(client, target, body, headers)
        if not attempt.retryable or attempts > target.retries:
            return _observation(target, observed_at, attempts, attempt, canary)
        await asyncio.sleep(retry_delay(attempt.headers, attempts))


async def _attempt(
    client: httpx2.AsyncClient, target: Target, body: bytes, headers: dict[str, str]
) -> _Attempt:
    started = time.perf_counter()
    try:
        response, content = await post_within(
            client, target.endpoint, content=body, headers=headers, timeout=target.timeout
        )
    except (TimeoutError, httpx2.TimeoutException):
        return _Attempt(
            error_kind=ErrorKind.TIMEOUT,
            error_message=f"no complete answer within {target.timeout:g}s",
        )
    except BodyTooLarge as exc:
        return _Attempt(
            status=exc.response.status_code,
            headers=exc.response.headers,
            error_kind=ErrorKind.BAD_RESPONSE,
            error_message=str(exc),
        )
    except httpx2.HTTPError as exc:
        return _Attempt(
            error_kind=ErrorKind.CONNECTION,
            error_message=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        )
    latency_ms = (time.perf_counter() - started) * 1000
    status = response.status_code
    kind = status_error_kind(status)
    return _Attempt(
        status=status,
        body=content,
        headers=response.headers,
        latency_ms=latency_ms,
        error_kind=kind,
        error_message=None if kind is None else _status_message(response, content),
    )


class BodyTooLarge(Exception):
    """An answer past MAX_BODY_BYTES; its status and headers are in `response`."""

    def __init__(self, response: httpx2.Response) -> None:
        super().__init__(f"response body larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
        self.response = response


async def post_within(
    client: httpx2.AsyncClient,
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> tuple[httpx2.Response, bytes]:
    """POST and read the whole answer (at most MAX_BODY_BYTES) under one deadline, from the
    connection to the last byte: httpx's own timeouts bound each read, so a server that drips
    one byte at a time would stretch them without end. TimeoutError (or
    httpx2.TimeoutException) past the deadline; BodyTooLarge; httpx2.HTTPError."""
    async with asyncio.timeout(timeout):
        async with client.stream(
            "POST", url, content=content, headers=headers, timeout=timeout
        ) as response:
            return response, await _read_bounded(response)


def post_once(
    url: str, *, content: bytes, headers: Mapping[str, str], timeout: float
) -> tuple[httpx2.Response, bytes]:
    """post_within from synchronous code, on a client of its own that follows no redirect."""

    async def post() -> tuple[httpx2.Response, bytes]:
        async with httpx2.AsyncClient(
            follow_redirects=False, trust_env=False, verify=_tls_context()
        ) as client:
            return await post_within(client, url, content=content, headers=headers, timeout=timeout)

    return asyncio.run(post())


async def _read_bounded(response: httpx2.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge(response)
        chunks.append(chunk)
    return b"".join(chunks)


def status_error_kind(status: int) -> ErrorKind | None:
    if 200 <= status < 300:
        return None
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 408:
        return ErrorKind.TIMEOUT
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status >= 500:
        return ErrorKind.SERVER
    if 300 <= status < 400:
        return ErrorKind.BAD_RESPONSE
    return ErrorKind.BAD_REQUEST


def _status_message(response: httpx2.Response, content: bytes) -> str:
    if 300 <= response.status_code < 400:
        location = response.headers.get("location", "?")
        return (
            f"HTTP {response.status_code} redirect to {location}; fpmon does not follow "
            "redirects: set base_url to the final address"
        )
    return f"HTTP {response.status_code}: {error_message(content)}"


def error_message(content: bytes) -> str:
    """The server's own message from any of the error shapes providers use."""
    try:
        data: Any = parse_json(content)
    except (ValueError, RecursionError):
        text = content.decode("utf-8", "replace").strip()
        if text.startswith("<"):
            return "the body is HTML, not an API error (a proxy or gateway answered)"
        return text or "(empty body)"
    if isinstance(data, list) and data:
        data = data[0]  # Gemini has been seen wrapping its error in a list
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, list) and error:
            error = error[0]
        if isinstance(error, str):
            return error
        if isinstance(error, dict):
            for key in ("message", "msg", "detail", "status", "code"):
                if error.get(key):
                    return str(error[key])
    return json.dumps(data)


def retry_delay(headers: httpx2.Headers | None, attempts: int) -> float:
    """The server's retry-after-ms / retry-after when sane, else backoff with jitter."""
    if headers is not None:
        if (delay := _seconds(headers.get("retry-after-ms"), scale=0.001)) is not None:
            return delay
        if (delay := _seconds(headers.get("retry-after"), scale=1.0)) is not None:
            return delay
    return min(0.5 * 2.0 ** (attempts - 1), 8.0) * (1 - 0.25 * random.random())


def _seconds(value: str | None, *, scale: float) -> float | None:
    if not value:
        return None
    delay: float
    try:
        delay = float(value) * scale
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if scale == 1.0 else None
        if parsed is None:
            return None
        delay = (parsed - datetime.now(UTC)).total_seconds()
    return delay if 0 < delay <= RETRY_AFTER_CAP else None


def _observation(
    target: Target,
    observed_at: datetime,
    attempts: int,
    attempt: _Attempt,
    canary: CanaryMode = CanaryMode.OFF,
) -> Observation:
    common: dict[str, Any] = {
        "target": target.name,
        "provider": target.provider,
        "base_url": target.base_url,
        "requested_model": target.model,
        "observed_at": observed_at,
        "attempts": attempts,
        "latency_ms": attempt.latency_ms,
        "request_shape": request_shape(target, canary),
        "http_status": attempt.status,
        "raw_response": attempt.body.decode("utf-8", "replace") if attempt.body else None,
        "site": target.site,
    }
    if attempt.headers is not None:
        common["request_id"] = request_id(attempt.headers)
        common["headers"] = {
            h: attempt.headers[h] for h in target.track_headers if h in attempt.headers
        }
    outcome: dict[str, Any]
    if attempt.error_kind is not None:
        outcome = {"error_kind": attempt.error_kind, "error_message": attempt.error_message or ""}
    elif isinstance(parsed := parse_completion(attempt.body), str):
        outcome = {"error_kind": ErrorKind.BAD_RESPONSE, "error_message": parsed}
    else:
        outcome = parsed
        if canary is not CanaryMode.OFF:
            outcome["canary"] = canary_sample(attempt.body, parsed["fingerprint"])
    return noting_escapes(scrub(Observation(**common, **outcome)))


def canary_sample(body: bytes, fingerprint: str) -> CanarySample:
    """The canary data of a chat completion: the first token's top logprobs (empty when the
    provider sent none, or anything but OpenAI's shape) and the answer, a first token."""
    choice: Any = parse_json(body)["choices"]
    choice = choice[0] if choice and isinstance(choice[0], dict) else {}
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    # Redacted before the cut (`scrub` redacts again, too late for a key across the cut).
    token = redact(content)[:MAX_TOKEN_CHARS] if isinstance(content, str) and content else None
    top: tuple[tuple[str, float], ...] | None = ()
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    if isinstance(tokens, list) and tokens and isinstance(tokens[0], dict):
        top = parse_top(tokens[0].get("top_logprobs"), clean=redact)
    return CanarySample(fingerprint, top or (), token)


def request_id(headers: httpx2.Headers) -> str | None:
    """The provider's id of one request, from whichever header the provider uses."""
    return next((v for h in _REQUEST_ID_HEADERS if (v := headers.get(h))), None)


def parse_completion(body: bytes) -> dict[str, Any] | str:
    """The fields of a chat completion, or a message saying why the body is not one."""
    try:
        data = parse_json(body)
    except UnicodeDecodeError:
        return "the body is not valid UTF-8"
    except (ValueError, RecursionError):
        start = body[:80].decode("utf-8", "replace").strip()
        kind = "HTML" if start.startswith("<") else "not valid JSON (truncated?)"
        return f"HTTP 200 but the body is {kind}, not a chat completion"
    return completion_fields(data)


def completion_fields(data: Any) -> dict[str, Any] | str:
    """The Observation fields of a parsed chat completion (or of one chunk of a streamed one),
    or a message saying why it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        return "HTTP 200 but the JSON is not a chat completion (no choices list)"
    fingerprint = _token(data, "system_fingerprint")
    model = _token(data, "model")
    if fingerprint is None or model is None:
        return "system_fingerprint or model is neither a string nor null"
    usage: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
    response_id = data.get("id")
    return {
        "fingerprint": fingerprint,
        "resolved_model": model,
        "response_id": response_id if isinstance(response_id, str) else None,
        "usage": Usage(
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            total_tokens=_int(usage.get("total_tokens")),
        ),
    }


def _token(data: dict[str, Any], key: str) -> str | None:
    if key not in data:
        return ABSENT
    value = data[key]
    if value is None:
        return NULL
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    """A token count; None for anything else, a count beyond SQLite's INTEGER included."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -(2**63) <= value < 2**63 else None
