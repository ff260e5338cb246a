"""An OpenAI-compatible fake chat-completions server on loopback.

It serves what fpmon watches, ``system_fingerprint`` and the resolved ``model``, the way real
providers do: several fingerprints per model at once, ``null``, ``""`` or no key at all, aliases
resolved to dated models, reasoning models that reject ``max_tokens``, and the failures a probe
meets in the wild (rate limits, HTML from a proxy, truncated bodies, dropped connections...).

    with FakeAPI({"gpt-4o": ModelBehaviour(["fp_aaaaaaaaaa", "fp_bbbbbbbbbb"])}) as fake:
        OpenAI(base_url=fake.base_url, api_key="x").chat.completions.create(...)

Routes: ``POST /v1/chat/completions`` (also without ``/v1``), Azure's
``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` and ``GET /v1/models``.
Models not configured are served with the ``default`` behaviour.

Fingerprints: a string is served as is, ``None`` as JSON null, ``""`` as an empty string and
``ABSENT`` omits the key. Round-robin serves the values in turn, in proportion to ``weights``
when given; random mode draws them by ``weights`` from one generator per model, seeded by
``seed``. A rollout takes ``share`` of the model's traffic once its ``after_requests`` (counted
per model since start, ``reset`` or ``set_model``) and ``after_seconds`` are both reached.

Behaviour (see devtools/behaviour.py): each position of ``fingerprints`` is a configuration
with first-token logits for any prompt, deterministic from the prompt, the model and the
position (two positions with one fingerprint: two configurations that differ by ``numerics``);
each response adds ``noise`` (a share ``outliers`` of responses ``outlier_scale`` times more).
A request with ``logprobs: true`` gets OpenAI's ``choices[0].logprobs.content[0].top_logprobs``
(``top_logprobs`` up to 20); one with ``logprobs`` or a ``temperature`` is answered with a first
token sampled at that temperature (default 1), any other with "Hi". ``logprobs = "rejected"``
answers 400 to the logprob parameters, ``"ignored"`` answers ``"logprobs": null``; a reasoning
model rejects them. ``perturbations`` moves a configuration's logits by a multiple of the noise
without changing its fingerprint: a silent change.

Faults wait in a queue; each applies to the next ``times`` requests whose model matches.

Admin endpoints, to drive a server in another process (never recorded, no key needed):
``POST /_fake/models/{name}`` (a ModelBehaviour as JSON), ``POST /_fake/rotate``
(``{"model": ..., "fingerprints": [...]}``), ``POST /_fake/perturb``
(``{"model": ..., "configuration": 0, "size": 10}``: the silent change; size 0 undoes it),
``POST /_fake/faults`` (a list of Faults),
``GET /_fake/requests`` and ``POST /_fake/reset``. In JSON and TOML input, ``null`` and
``"<null>"`` both mean JSON null.

The file read by ``load_config`` (TOML)::

    api_keys_env = ["FAKE_API_KEY"]  # optional: the keys in these variables are required
    host = "127.0.0.1"               # optional
    port = 0                         # optional; 0 picks a free port

    [default]                        # optional: the behaviour of models not listed
    fingerprints = ["fp_0000000001"]

    [models."gpt-4o"]
    fingerprints = ["fp_aaaaaaaaaa", "fp_bbbbbbbbbb"]  # also "<null>", "<absent>", ""
    resolved_model = "gpt-4o-2024-08-06"
    mode = "random"                  # or "round-robin", the default
    weights = [0.8, 0.2]
    seed = 1
    latency = 0.05                   # seconds
    stream_delay = 0.1               # seconds between the events of a streamed answer
    headers = { server = "fake/1" }
    reasoning = false                # true: reject max_tokens and a non-default temperature
    rollouts = [{ fingerprint = "fp_cccccccccc", share = 0.2, after_requests = 100 }]
    stream_shape = "every-chunk"     # or "azure", "terminal", "first-chunk" (see STREAM_SHAPES)
    noise = 0.02                     # response-to-response noise on each logit (nats)
    outliers = 0.01                  # share of responses with outlier_scale x the noise
    outlier_scale = 5.0
    numerics = 0.1                   # how far two configurations' logits differ
    logprobs = "supported"           # or "rejected" (400) or "ignored" (null)
    perturbations = { "0" = 10.0 }   # configuration (position) -> size, in noise units
"""

from __future__ import annotations

import difflib
import http.client
import json
import os
import random
import re
import secrets
import socket
import string
import threading
import time
import tomllib
import types
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, get_args, get_origin, get_type_hints
from urllib.parse import parse_qs, unquote, urlsplit

from fp_monitor.devtools.behaviour import MAX_TOP_LOGPROBS, logits, logprobs_content, respond
from fp_monitor.stopping import on_stop

ABSENT = "<absent>"
_NULL = "<null>"

_MODES = ("round-robin", "random")
STREAM_SHAPES = {
    "every-chunk": "the fingerprint on every chunk (OpenAI)",
    "azure": "a prompt-filter chunk first (empty id and model, no choices, a null fingerprint), "
    "then the fingerprint on every chunk (Azure OpenAI)",
    "terminal": "the fingerprint only on the last chunk: the usage chunk with include_usage, "
    "else the one with finish_reason; null on the others (vLLM)",
    "first-chunk": "the fingerprint only on the first chunk, null afterwards (SGLang's gateway)",
}
"""Where a streamed answer carries the fingerprint (`ModelBehaviour.stream_shape`)."""
_LOGPROBS = ("supported", "rejected", "ignored")
_FAULT_KINDS = (
    "status",
    "html",
    "truncated",
    "not_chat",
    "drop",
    "drop_mid_body",
    "slow",
    "drip",
    "redirect",
    "huge",
)
# These answer instead of the API; the other kinds change how the API's own answer is delivered.
_REPLACING_FAULTS = ("status", "html", "not_chat", "drop", "redirect")

CONTROL_ENDPOINTS = (
    "POST /_fake/models/{name}",
    "POST /_fake/rotate",
    "POST /_fake/perturb",
    "POST /_fake/faults",
    "GET /_fake/requests",
    "POST /_fake/reset",
)
"""The admin endpoints (see `FakeAPI._admin`), as `fpmon fake-api` lists them when it starts."""

_CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
_MODELS_PATHS = ("/v1/models", "/models")
_AZURE_CHAT = re.compile(r"/openai/deployments/([^/]+)/chat/completions")
_SECRET_HEADERS = ("authorization", "api-key")
_BAD_GATEWAY = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@dataclass
class Rollout:
    """A new value that takes `share` of a model's traffic from a point on."""

    fingerprint: str | None
    share: float
    after_requests: int | None = None
    after_seconds: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"share: must be in (0, 1], got {self.share}")

    def reached(self, served: int, elapsed: float) -> bool:
        return (self.after_requests is None or served >= self.after_requests) and (
            self.after_seconds is None or elapsed >= self.after_seconds
        )


@dataclass
class ModelBehaviour:
    """How the fake serves one model."""

    fingerprints: list[str | None] = field(default_factory=lambda: ["fp_fake000001"])
    resolved_model: str | None = None
    mode: str = "round-robin"
    weights: list[float] | None = None
    seed: int | None = None
    latency: float = 0.0
    stream_delay: float = 0.0
    """Seconds between the events of a streamed answer, the way a model emits tokens."""
    headers: dict[str, str] = field(default_factory=dict)
    reasoning: bool = False
    rollouts: list[Rollout] = field(default_factory=list)
    stream_shape: str = "every-chunk"
    """Which chunks of a streamed answer carry the fingerprint (see STREAM_SHAPES)."""
    noise: float = 0.02
    """Response-to-response noise on each first-token logit, in nats."""
    outliers: float = 0.0
    """Share of responses with `outlier_scale` times the noise."""
    outlier_scale: float = 5.0
    numerics: float = 0.1
    """How far the logits of two configurations (positions in `fingerprints`) differ."""
    logprobs: str = "supported"
    """"supported", "rejected" (400 to the logprob parameters) or "ignored" (null)."""
    perturbations: dict[str, float] = field(default_factory=dict)
    """Configuration (its position, as a string) -> a silent change, in multiples of the noise."""

    def __post_init__(self) -> None:
        if not self.fingerprints:
            raise ValueError("fingerprints: must not be empty")
        if self.stream_shape not in STREAM_SHAPES:
            raise ValueError(
                f"stream_shape: expected one of {', '.join(STREAM_SHAPES)}, got "
                f"{self.stream_shape!r}"
            )
        if self.mode not in _MODES:
            raise ValueError(f"mode: expected 'round-robin' or 'random', got {self.mode!r}")
        if self.weights is not None and (
            len(self.weights) != len(self.fingerprints)
            or min(self.weights) < 0
            or sum(self.weights) <= 0
        ):
            raise ValueError("weights: expected one non-negative weight per fingerprint")
        if self.logprobs not in _LOGPROBS:
            raise ValueError(
                f"logprobs: expected one of {', '.join(_LOGPROBS)}, got {self.logprobs!r}"
            )
        if (
            min(self.noise, self.outliers, self.outlier_scale, self.numerics) < 0
            or self.outliers > 1
        ):
            raise ValueError("noise, outliers, outlier_scale, numerics: expected numbers >= 0")


@dataclass
class Fault:
    """A failure served instead of (or on top of) the normal answer."""

    kind: str
    status: int = 500
    body: Any = None
    """For "status": a dict or list is sent as JSON, a str as text, bytes as they are."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    location: str = ""
    model: str | None = None
    times: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"kind: expected one of {', '.join(_FAULT_KINDS)}, got {self.kind!r}")
        if self.times < 1:
            raise ValueError(f"times: must be at least 1, got {self.times}")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it, minus the credentials."""

    method: str
    path: str
    query: str
    model: str | None
    body: Any
    auth: str | None
    key_ok: bool
    headers: dict[str, str]
    at: float


@dataclass
class _Rotate:
    model: str
    fingerprints: list[str | None]


@dataclass
class _Perturb:
    model: str
    configuration: int
    size: float


@dataclass
class _ConfigFile:
    api_keys_env: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    default: ModelBehaviour | None = None
    models: dict[str, ModelBehaviour] = field(default_factory=dict)


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _path(where: str, key: str) -> str:
    shown = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
    return f"{where}.{shown}" if where else shown


def _fail(where: str, problem: str) -> ValueError:
    return ValueError(f"{where}: {problem}" if where else problem)


def _build(tp: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON or TOML) checked against the type `tp`, dataclasses built on the way.

    The one converter behind the admin API and load_config, so both accept the same input and
    name the offending key the same way.
    """
    if isinstance(tp, type) and is_dataclass(tp):
        if not isinstance(value, dict):
            raise _fail(where, "expected a table")
        names = [f.name for f in fields(tp)]
        for key in value:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _fail(where, f"unknown key {key!r}{hint}")
        for f in fields(tp):
            if f.name not in value and f.default is MISSING and f.default_factory is MISSING:
                raise _fail(_path(where, f.name), "missing")
        hints = get_type_hints(tp)
        kwargs = {key: _build(hints[key], item, _path(where, key)) for key, item in value.items()}
        try:
            return tp(**kwargs)
        except ValueError as e:  # from __post_init__, which names the field first
            raise ValueError(f"{where}.{e}" if where else str(e)) from None
    if tp is Any:
        return value
    origin, args = get_origin(tp), get_args(tp)
    if origin is types.UnionType:
        if value is None or value == _NULL:
            return None
        (inner,) = (arg for arg in args if arg is not type(None))
        return _build(inner, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise _fail(where, "expected a list")
        return [_build(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, "expected a table")
        return {key: _build(args[1], item, _path(where, key)) for key, item in value.items()}
    if tp is float and type(value) is int:
        return float(value)  # people write 1 for 1.0
    # bool is an int to isinstance, but `true` is never meant as a number
    if not isinstance(value, tp) or isinstance(value, bool) != (tp is bool):
        raise _fail(where, f"expected {_TYPE_NAMES[tp]}")
    return value


@dataclass
class _ModelState:
    """Counters and generators of one model; guarded by FakeAPI's lock."""

    behaviour: ModelBehaviour
    started: float = field(default_factory=time.monotonic)
    served: int = 0
    credit: list[float] = field(default_factory=list)
    rng: random.Random = field(init=False)
    configuration: int = 0
    """The position of the value served last: the configuration that answered."""
    noise_rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.behaviour.seed)
        # Its own generator: response noise leaves the order of served values as it was.
        self.noise_rng = random.Random(self.behaviour.seed)

    def next_fingerprint(self) -> str | None:
        b = self.behaviour
        values = list(b.fingerprints)
        weights = list(b.weights or [1.0] * len(values))
        total = sum(weights)
        elapsed = time.monotonic() - self.started
        for rollout in b.rollouts:
            if rollout.reached(self.served, elapsed):
                weights = [w * (1 - rollout.share) for w in weights] + [rollout.share * total]
                values.append(rollout.fingerprint)
        self.served += 1
        if b.mode == "random":
            self.configuration = self.rng.choices(range(len(values)), weights)[0]
            return values[self.configuration]
        # Smooth weighted round-robin (nginx): exact shares over each cycle, evenly interleaved,
        # and plain rotation when the weights are equal.
        if len(self.credit) != len(weights):
            self.credit = [0.0] * len(weights)
        self.credit = [c + w for c, w in zip(self.credit, weights, strict=True)]
        pick = max(range(len(weights)), key=self.credit.__getitem__)
        self.credit[pick] -= total
        self.configuration = pick
        return values[pick]


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    fault: Fault | None = None
    event_delay: float = 0.0
    """A stream: seconds between its events."""


def _json_reply(status: int, obj: Any) -> _Reply:
    # indented like OpenAI's, so that sizes and line counts are as realistic as the content
    return _Reply(status, json.dumps(obj, indent=2).encode(), {"content-type": "application/json"})


def _openai_error(
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _status_error(status: int, model: str | None) -> dict[str, Any]:
    if status == 503:
        # llama.cpp's answer while it loads weights: not OpenAI's shape, and clients meet it
        return {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    if status == 429:
        return _openai_error(
            f"Rate limit reached for {model or 'gpt-4o-mini'} in organization org-fake on "
            "requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 6.596s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            type_="requests",
            code="rate_limit_exceeded",
        )
    if status == 404:
        return _openai_error(
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if status >= 500:
        return _openai_error(
            "The server had an error while processing your request. Sorry about that!",
            type_="server_error",
        )
    return _openai_error(http.client.responses.get(status, "Error"))


def _fault_reply(fault: Fault, model: str | None) -> _Reply:
    if fault.kind == "status":
        body = _status_error(fault.status, model) if fault.body is None else fault.body
        if isinstance(body, bytes):  # any bytes at all: invalid UTF-8, deep nesting...
            return _Reply(fault.status, body, {"content-type": "application/json"})
        if isinstance(body, str):
            return _Reply(fault.status, body.encode(), {"content-type": "text/plain"})
        return _json_reply(fault.status, body)
    if fault.kind == "html":
        return _Reply(200, _BAD_GATEWAY, {"content-type": "text/html"})
    if fault.kind == "not_chat":
        return _json_reply(200, {"object": "list", "data": []})
    if fault.kind == "redirect":
        return _Reply(307, headers={"location": fault.location})
    return _Reply(0)  # drop: the handler sends nothing


def _invalid(body: Any, azure: bool) -> dict[str, Any] | None:
    """OpenAI's 400 error for a malformed chat request, or None."""
    if not isinstance(body, dict):
        return _openai_error(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)"
        )
    if not azure and "model" not in body:
        return _openai_error("you must provide a model parameter")
    if not azure and not isinstance(body["model"], str):
        return _openai_error(
            "Invalid type for 'model': expected a string, but got "
            f"{_TYPE_NAMES[type(body['model'])]} instead.",
            param="model",
            code="invalid_type",
        )
    messages = body.get("messages")
    if messages is None:
        return _openai_error(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        return _openai_error(
            "Invalid type for 'messages': expected an array of objects, but got "
            f"{_TYPE_NAMES[type(messages)]} instead.",
            param="messages",
            code="invalid_type",
        )
    if not messages:
        return _openai_error(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            param="messages",
            code="empty_array",
        )
    return None


def _unsupported(body: dict[str, Any]) -> dict[str, Any] | None:
    """What an o-series or gpt-5 model rejects in a request that is otherwise valid."""
    if body.get("max_tokens") is not None:
        return _openai_error(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            param="max_tokens",
            code="unsupported_parameter",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        return _openai_error(
            f"Unsupported value: 'temperature' does not support {json.dumps(temperature)} with "
            "this model. Only the default (1) value is supported.",
            param="temperature",
            code="unsupported_value",
        )
    return None


def _unauthorized(key: str | None, *, azure: bool, echo: bool) -> _Reply:
    if azure:
        return _json_reply(
            401,
            {
                "error": {
                    "code": "401",
                    "message": "Access denied due to invalid subscription key or wrong API "
                    "endpoint. Make sure to provide a valid key for an active subscription and "
                    "use a correct regional API endpoint for your resource.",
                }
            },
        )
    if key is None:
        return _json_reply(
            401,
            _openai_error(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). "
                "You can obtain an API key from https://platform.openai.com/account/api-keys."
            ),
        )
    # OpenAI's masking; a key too short to mask that way is hidden whole
    masked = key[:3] + "*" * (len(key) - 7) + key[-4:] if len(key) > 7 else "*" * len(key)
    return _json_reply(
        401,
        _openai_error(
            f"Incorrect API key provided: {key if echo else masked}. You can find your API key "
            "at https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        ),
    )


def _credentials(headers: dict[str, str]) -> tuple[str | None, str | None]:
    """(auth style, key) of a request."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return "bearer", token.strip()
    if "api-key" in headers:
        return "api-key", headers["api-key"]
    return None, None


def _random_id(length: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


def _usage(messages: list[Any], reasoning: bool) -> dict[str, Any]:
    prompt = len(json.dumps(messages)) // 4 + 1  # a rough estimate, but it grows with the prompt
    return {
        "prompt_tokens": prompt,
        "completion_tokens": 1,
        "total_tokens": prompt + 1,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 1 if reasoning else 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _asks_behaviour(body: dict[str, Any]) -> bool:
    """A request for the first token's logprobs, or for a sample at a temperature."""
    return body.get("logprobs") is True or body.get("temperature") is not None


def _logprobs_problem(body: dict[str, Any], behaviour: ModelBehaviour) -> dict[str, Any] | None:
    """The 400 error of a request whose logprob parameters this model refuses, or None."""
    asked = body.get("logprobs") not in (None, False) or body.get("top_logprobs") is not None
    if asked and (behaviour.logprobs == "rejected" or behaviour.reasoning):
        return _openai_error(
            "logprobs is not supported with this model",
            param="logprobs",
            code="unsupported_parameter",
        )
    top = body.get("top_logprobs")
    if top is not None and (
        not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP_LOGPROBS
    ):
        return _openai_error(
            f"Invalid 'top_logprobs': expected an integer from 0 to {MAX_TOP_LOGPROBS}, "
            f"got {json.dumps(top)}.",
            param="top_logprobs",
            code="invalid_value",
        )
    if top is not None and body.get("logprobs") is not True:
        return _openai_error(
            "top_logprobs requires logprobs to be true", param="top_logprobs", code="invalid_value"
        )
    return None


def _first_token(
    body: dict[str, Any],
    model: str,
    configuration: int,
    behaviour: ModelBehaviour,
    rng: random.Random,
) -> tuple[str, dict[str, Any] | None]:
    """The answer's first token, sampled from the configuration's logits for the prompt, and
    OpenAI's `logprobs` object when asked for and supported."""
    last = body["messages"][-1]
    prompt = last.get("content") if isinstance(last, dict) else None
    if not isinstance(prompt, str):
        prompt = json.dumps(last, sort_keys=True)
    values = logits(
        prompt,
        model,
        configuration,
        numerics=behaviour.numerics,
        noise=behaviour.noise,
        perturbation=behaviour.perturbations.get(str(configuration), 0.0),
    )
    temperature = body.get("temperature")
    token, ranked = respond(
        values,
        rng,
        noise=behaviour.noise,
        outliers=behaviour.outliers,
        outlier_scale=behaviour.outlier_scale,
        temperature=float(temperature) if isinstance(temperature, int | float) else 1.0,
    )
    if body.get("logprobs") is not True or behaviour.logprobs != "supported":
        return token, None
    top = body.get("top_logprobs") or 0
    return token, {"content": logprobs_content(token, ranked, top), "refusal": None}


def _completion(
    request: dict[str, Any],
    model: str,
    fingerprint: str | None,
    content: str,
    reasoning: bool,
    stream_shape: str = "every-chunk",
    *,
    logprobs: dict[str, Any] | None = None,
) -> _Reply:
    """A successful answer in OpenAI's shape: one ChatCompletion, or a stream of chunks."""
    completion_id = "chatcmpl-" + _random_id(29)
    created = int(time.time())
    usage = _usage(request["messages"], reasoning)
    tail: dict[str, Any] = {"service_tier": "default"}
    if fingerprint != ABSENT:
        tail["system_fingerprint"] = fingerprint

    def head(obj: str) -> dict[str, Any]:
        return {"id": completion_id, "object": obj, "created": created, "model": model}

    if request.get("stream") is not True:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "refusal": None,
            "annotations": [],
        }
        choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": "length"}
        return _json_reply(
            200, {**head("chat.completion"), "choices": [choice], "usage": usage, **tail}
        )
    options = request.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True
    # with include_usage, OpenAI puts "usage": null on every chunk before the last
    extra = {"usage": None} if with_usage else {}

    def chunk(
        delta: dict[str, Any], finish_reason: str | None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return {**head("chat.completion.chunk"), **tail, "choices": [choice], **extra}

    chunks = [
        chunk({"role": "assistant", "content": "", "refusal": None}, None),
        chunk({"content": content}, None, logprobs),
        chunk({}, "length"),
    ]
    if with_usage:
        chunks.append({**head("chat.completion.chunk"), **tail, "choices": [], "usage": usage})
    chunks = _shaped(chunks, stream_shape)
    events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return _Reply(
        200, events + b"data: [DONE]\n\n", {"content-type": "text/event-stream; charset=utf-8"}
    )


def _shaped(chunks: list[dict[str, Any]], shape: str) -> list[dict[str, Any]]:
    """The chunks of a stream that carries its fingerprint the way `shape` says (STREAM_SHAPES);
    a fingerprint left out of the answer stays out of every chunk."""
    if shape == "azure":
        prompt_filter = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "system_fingerprint": None,
            "prompt_filter_results": [
                {
                    "prompt_index": 0,
                    "content_filter_results": {
                        kind: {"filtered": False, "severity": "safe"}
                        for kind in ("hate", "self_harm", "sexual", "violence")
                    },
                }
            ],
        }
        return [prompt_filter, *chunks]
    carrier = {"terminal": len(chunks) - 1, "first-chunk": 0}.get(shape)
    if carrier is None:
        return chunks
    return [
        {**c, "system_fingerprint": None} if n != carrier and "system_fingerprint" in c else c
        for n, c in enumerate(chunks)
    ]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections to real APIs
    # headers and body leave in separate writes: Nagle's algorithm would hold the body ~40 ms
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the terminal belongs to the tests, the demo or the user's pipeline."""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.request, open_=True)

    def finish(self) -> None:
        self.server.track(self.request, open_=False)
        super().finish()

    def handle(self) -> None:
        # a client that goes away mid-exchange leaves nobody to answer
        with suppress(ConnectionError):
            super().handle()

    def _dispatch(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.fake._answer(self.command, self.path, headers, raw)
        kind = reply.fault.kind if reply.fault else ""
        if kind == "drop":
            self.close_connection = True
            return
        body = reply.body[: len(reply.body) // 2] if kind == "truncated" else reply.body
        self.send_response_only(reply.status)
        for name, value in {
            "date": self.date_time_string(),
            **reply.headers,
            "content-length": str(len(body)),
        }.items():
            self.send_header(name, value)
        self.end_headers()
        if kind == "drop_mid_body":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif reply.fault is not None and kind == "drip":
            for i in range(len(body)):
                # a client that went away makes this write fail, which ends the drip
                self.wfile.write(body[i : i + 1])
                time.sleep(reply.fault.delay)
        elif reply.event_delay:
            events = body.split(b"\n\n")[:-1]  # each event ends with a blank line
            for n, event in enumerate(events):
                if n:
                    time.sleep(reply.event_delay)
                self.wfile.write(event + b"\n\n")
        else:
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # stop() must not wait for clients that hold idle keep-alive connections
    block_on_close = False
    # socketserver's default backlog of 5 resets connections when a probe opens dozens at once
    request_queue_size = 1024

    def __init__(self, fake: FakeAPI, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """End every open connection, so that no request is answered after stop()."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class FakeAPI:
    """An OpenAI-compatible chat-completions server on loopback (see the module docstring)."""

    def __init__(
        self,
        models: dict[str, ModelBehaviour] | None = None,
        *,
        default: ModelBehaviour | None = None,
        api_keys: Iterable[str] = (),
        echo_key_in_errors: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._models = dict(models or {})
        self._default = default or ModelBehaviour()
        self._api_keys = frozenset(api_keys)
        self._echo_key = echo_key_in_errors
        self._address = (host, port)
        self._lock = threading.Lock()
        self._states: dict[str, _ModelState] = {}
        self._faults: list[Fault] = []
        self._log: list[RecordedRequest] = []
        self._epoch = time.monotonic()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Serve in a daemon thread."""
        self._server = _Server(self, self._address)
        with self._lock:
            self._epoch = time.monotonic()
        # shutdown() waits for the serving loop to poll: a short interval keeps stop() fast,
        # which a test suite that starts a fake per test feels
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), name="fake-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end open connections; nothing is answered afterwards."""
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) it listens on, or is to listen on (port 0: any free port)."""
        return self._address

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake API is not started")
        return f"http://{self._address[0]}:{self._server.server_port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def models(self) -> list[str]:
        """The models configured by name (any other is served with the default behaviour)."""
        with self._lock:
            return sorted(self._models)

    def set_model(self, name: str, behaviour: ModelBehaviour) -> None:
        """Serve `name` with `behaviour`, its counters and generator started afresh."""
        with self._lock:
            self._models[name] = behaviour
            self._states[name] = _ModelState(behaviour)

    def rotate(self, name: str, fingerprints: list[str | None]) -> None:
        """Serve `fingerprints` for `name` from now on; weights survive if the count matches."""
        with self._lock:
            state = self._state(name)
            weights = state.behaviour.weights
            if weights is not None and len(weights) != len(fingerprints):
                weights = None
            state.behaviour = self._models[name] = replace(
                state.behaviour, fingerprints=list(fingerprints), weights=weights
            )

    def perturb(self, name: str, configuration: int, size: float) -> None:
        """Move configuration `configuration` (a position in the model's fingerprints) of
        `name` by `size` times its noise from now on, its fingerprint unchanged: a silent
        change. Size 0 takes it back."""
        with self._lock:
            state = self._state(name)
            if not 0 <= configuration < len(state.behaviour.fingerprints):
                raise ValueError(
                    f"configuration: expected 0 to {len(state.behaviour.fingerprints) - 1}, "
                    f"got {configuration}"
                )
            moved = {**state.behaviour.perturbations, str(configuration): size}
            if not size:
                del moved[str(configuration)]
            state.behaviour = self._models[name] = replace(state.behaviour, perturbations=moved)

    def add_faults(self, faults: Iterable[Fault]) -> None:
        """Queue faults; each applies to the next `times` requests for its model."""
        copies = [replace(fault) for fault in faults]  # `times` counts down on our own copy
        with self._lock:
            self._faults.extend(copies)

    def requests(self) -> list[RecordedRequest]:
        """Every request received since start or reset, in order."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Forget faults, recorded requests and every model's counters."""
        with self._lock:
            self._faults.clear()
            self._log.clear()
            self._states.clear()
            self._epoch = time.monotonic()

    def _state(self, name: str) -> _ModelState:
        """The serving state of `name`, created on first use; the caller holds the lock."""
        state = self._states.get(name)
        if state is None:
            behaviour = self._models.get(name, self._default)
            state = self._states[name] = _ModelState(behaviour, started=self._epoch)
        return state

    def _take_fault(self, model: str | None) -> Fault | None:
        """The first queued fault for `model`, used once; the caller holds the lock."""
        for fault in self._faults:
            if fault.model is None or fault.model == model:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _answer(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> _Reply:
        """The reply to one request; headers come lower-cased."""
        arrived = time.monotonic()
        url = urlsplit(target)
        if url.path.startswith("/_fake/"):
            return self._admin(method, url.path, raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        azure = _AZURE_CHAT.fullmatch(url.path)
        model: str | None = None
        if azure:
            model = unquote(azure[1])
        elif isinstance(body, dict) and isinstance(body.get("model"), str):
            model = body["model"]
        auth, key = _credentials(headers)
        request = RecordedRequest(
            method=method,
            path=url.path,
            query=url.query,
            model=model,
            body=body,
            auth=auth,
            key_ok=not self._api_keys or key in self._api_keys,
            headers={k: v for k, v in headers.items() if k not in _SECRET_HEADERS},
            at=time.time(),
        )
        with self._lock:
            self._log.append(request)
            fault = self._take_fault(model)
        if fault is not None and fault.kind in _REPLACING_FAULTS:
            reply = _fault_reply(fault, model)
        else:
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.delay)
            huge = fault is not None and fault.kind == "huge"
            reply = self._route(request, key, azure=azure is not None, huge=huge)
        reply.headers = {
            "x-request-id": "req_" + secrets.token_hex(16),
            "openai-version": "2020-10-01",
            "openai-processing-ms": str(round((time.monotonic() - arrived) * 1000)),
            **reply.headers,
            **(fault.headers if fault else {}),
        }
        reply.fault = fault
        return reply

    def _route(
        self, request: RecordedRequest, key: str | None, *, azure: bool, huge: bool
    ) -> _Reply:
        if azure and "api-version" not in parse_qs(request.query):
            return _json_reply(404, {"error": {"code": "404", "message": "Resource not found"}})
        if not request.key_ok:
            return _unauthorized(key, azure=azure, echo=self._echo_key)
        if request.method == "POST" and (azure or request.path in _CHAT_PATHS):
            return self._chat(request, azure=azure, huge=huge)
        if request.method == "GET" and request.path in _MODELS_PATHS:
            with self._lock:
                names = sorted(self._models)
            listed = [
                {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
                for name in names
            ]
            return _json_reply(200, {"object": "list", "data": listed})
        return _json_reply(404, _openai_error(f"Invalid URL ({request.method} {request.path})"))

    def _chat(self, request: RecordedRequest, *, azure: bool, huge: bool) -> _Reply:
        body = request.body
        problem = _invalid(body, azure)
        if problem is not None:
            return _json_reply(400, problem)
        assert request.model is not None  # _invalid made sure of it
        with self._lock:
            state = self._state(request.model)
            behaviour = state.behaviour
            if behaviour.reasoning and (problem := _unsupported(body)):
                return _json_reply(400, problem)
            if problem := _logprobs_problem(body, behaviour):
                return _json_reply(400, problem)
            fingerprint = state.next_fingerprint()
            configuration = state.configuration
            rng = random.Random(state.noise_rng.random())
        time.sleep(behaviour.latency)
        # a reasoning model spends a one-token budget on reasoning and answers ""
        content = "Hi " * 3_500_000 if huge else "" if behaviour.reasoning else "Hi"
        logprobs = None
        if not behaviour.reasoning and not huge and _asks_behaviour(body):
            content, logprobs = _first_token(body, request.model, configuration, behaviour, rng)
        resolved = behaviour.resolved_model or request.model
        reply = _completion(
            body,
            resolved,
            fingerprint,
            content,
            behaviour.reasoning,
            behaviour.stream_shape,
            logprobs=logprobs,
        )
        reply.headers.update(behaviour.headers)
        if body.get("stream") is True:
            reply.event_delay = behaviour.stream_delay
        return reply

    def _admin(self, method: str, path: str, raw: bytes) -> _Reply:
        """The control API that drives a fake running in another process."""
        try:
            data = json.loads(raw) if raw else None
            if (method, path) == ("GET", "/_fake/requests"):
                return _json_reply(200, [asdict(r) for r in self.requests()])
            if method == "POST" and path.startswith("/_fake/models/"):
                name = unquote(path.removeprefix("/_fake/models/"))
                self.set_model(name, _build(ModelBehaviour, data, ""))
            elif (method, path) == ("POST", "/_fake/rotate"):
                rotation = _build(_Rotate, data, "")
                self.rotate(rotation.model, rotation.fingerprints)
            elif (method, path) == ("POST", "/_fake/perturb"):
                change = _build(_Perturb, data, "")
                self.perturb(change.model, change.configuration, change.size)
            elif (method, path) == ("POST", "/_fake/faults"):
                self.add_faults(_build(list[Fault], data, "faults"))
            elif (method, path) == ("POST", "/_fake/reset"):
                self.reset()
            else:
                return _json_reply(404, _openai_error(f"Invalid URL ({method} {path})"))
        except ValueError as e:
            return _json_reply(400, _openai_error(str(e)))
        return _json_reply(200, {"ok": True})


def load_config(path: Path) -> FakeAPI:
    """An unstarted FakeAPI configured by a TOML file (format in the module docstring)."""
    try:
        config: _ConfigFile = _build(_ConfigFile, tomllib.loads(path.read_text("utf-8")), "")
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    for name in config.api_keys_env:
        if not os.environ.get(name):
            raise ValueError(f"{path}: api_keys_env: environment variable {name} is not set")
    return FakeAPI(
        config.models,
        default=config.default,
        api_keys=[os.environ[name] for name in config.api_keys_env],
        host=config.host,
        port=config.port,
    )


def default_fleet() -> dict[str, ModelBehaviour]:
    """What `fpmon fake-api` serves without a config: models that behave like real ones."""
    return {
        "gpt-4o-mini": ModelBehaviour(
            ["fp_0ba0d124f1", "fp_560af6e559", "fp_b8bc95a0ac"],
            resolved_model="gpt-4o-mini-2024-07-18",
        ),
        "grok-4": ModelBehaviour(["fp_6ca29cf396", "fp_9a1b2c3d4e"], resolved_model="grok-4-0709"),
        "o4-mini": ModelBehaviour(
            ["fp_7a3d1b5e9c"], resolved_model="o4-mini-2025-04-16", reasoning=True
        ),
        "legacy": ModelBehaviour([None], resolved_model="gpt-4-0613"),
        "claude-sonnet-4": ModelBehaviour([ABSENT], resolved_model="claude-sonnet-4-20250514"),
    }


def serve(fake: FakeAPI, on_ready: Callable[[str], None]) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop cleanly; call it from the main thread."""

    def terminate(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM ends it as Ctrl-C does

    try:
        with on_stop(terminate), fake:
            on_ready(fake.base_url)
            threading.Event().wait()
    except KeyboardInterrupt:
        pass  # how a server is meant to end
