"""Keep API keys out of everything fpmon prints or stores.

Keys are registered when they are read from the environment; any text that leaves the process
(messages, stored error text, tracebacks) goes through `redact` first, and every answer of a
server goes through `scrub` where it becomes an Observation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from fp_monitor.domain.canary import CanarySample
from fp_monitor.domain.models import ERROR_MESSAGE_LIMIT, RAW_RESPONSE_LIMIT, Observation

_registered: set[str] = set()
# Servers echo keys back in error messages ("Incorrect API key provided: sk-proj-abc..."), partly
# masked or whole; anything shaped like a provider key is hidden even when fpmon did not send it.
_KEY_SHAPE = re.compile(r"\b(?:(?:sk|xai|gsk|pplx|fw)[-_]|AIza)[A-Za-z0-9_\-*]{8,}")
_MIN_SECRET = 4  # shorter values would redact ordinary words
# JSON may write these characters as a two-character escape besides \uXXXX.
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def register(secret: str) -> None:
    """Remember a secret so that `redact` hides it from now on."""
    if len(secret) >= _MIN_SECRET:
        _registered.add(secret)


def redact(text: str, also: Iterable[str] = ()) -> str:
    """`text` with every registered secret and each of `also` (one request's own credentials),
    written plainly or in any form JSON allows (`\\/`, `\\u0041`, any mix), and every
    key-shaped token replaced by ***."""
    secrets = frozenset(_registered.union(s for s in also if len(s) >= _MIN_SECRET))
    if secrets:
        text = _secrets_pattern(secrets).sub("***", text)
    return _KEY_SHAPE.sub("***", text)


def scrub(observation: Observation, also: Iterable[str] = ()) -> Observation:
    """`observation` with every string that came from the server redacted (see `redact`), then
    cut to its bound: applied where an answer becomes an Observation, so that a key the server
    echoes reaches no record, output, lock, metric or notifier. Cutting after redacting keeps
    half of a key at the cut from surviving."""
    secrets = tuple(also)

    def hidden(text: str | None) -> str | None:
        return None if text is None else redact(text, secrets)

    message = hidden(observation.error_message)
    raw = hidden(observation.raw_response)
    scrubbed: dict[str, Any] = {
        "fingerprint": hidden(observation.fingerprint),
        "resolved_model": hidden(observation.resolved_model),
        "response_id": hidden(observation.response_id),
        "request_id": hidden(observation.request_id),
        "headers": {name: redact(value, secrets) for name, value in observation.headers.items()},
        "error_message": None if message is None else message[:ERROR_MESSAGE_LIMIT],
        "raw_response": None if raw is None else _utf8_prefix(raw, RAW_RESPONSE_LIMIT),
        "canary": None
        if observation.canary is None
        else _scrub_canary(observation.canary, secrets),
    }
    # Nothing to hide, the usual case: no copy (fpmon otlp scrubs thousands a second).
    if all(getattr(observation, name) == value for name, value in scrubbed.items()):
        return observation
    return replace(observation, **scrubbed)


def _scrub_canary(sample: CanarySample, secrets: tuple[str, ...]) -> CanarySample:
    """The canary's first tokens and fingerprint are the server's strings too (they reach the
    history, the lock and `check --json`)."""
    return replace(
        sample,
        fingerprint=redact(sample.fingerprint, secrets),
        top=tuple((redact(token, secrets), logprob) for token, logprob in sample.top),
        token=None if sample.token is None else redact(sample.token, secrets),
    )


def _utf8_prefix(text: str, limit: int) -> str:
    """The longest prefix of `text` that is at most `limit` bytes of UTF-8."""
    return text.encode("utf-8", "replace")[:limit].decode("utf-8", "ignore")


@functools.lru_cache(maxsize=32)
def _secrets_pattern(secrets: frozenset[str]) -> re.Pattern[str]:
    # Longest first: a secret that contains another is hidden whole.
    ordered = sorted(secrets, key=len, reverse=True)
    return re.compile("|".join("".join(map(_json_forms, secret)) for secret in ordered))


def _json_forms(char: str) -> str:
    """A pattern for `char` as JSON text may write it: itself, its \\uXXXX escape (a surrogate
    pair beyond the BMP, hex digits in either case) or its short escape."""
    units = char.encode("utf-16-be")
    escape = "".join(r"\\u(?i:" + units[i : i + 2].hex() + ")" for i in range(0, len(units), 2))
    forms = [re.escape(char), escape]
    if char in _SHORT_ESCAPES:
        forms.append(re.escape(_SHORT_ESCAPES[char]))
    return "(?:" + "|".join(forms) + ")"
