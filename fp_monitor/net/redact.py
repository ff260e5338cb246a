"""Keep API keys out of everything fpmon prints or stores.

Keys are registered when they are read from the environment; any text that leaves the process
(messages, stored error text, tracebacks) goes through `redact` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_registered: set[str] = set()
# Servers echo keys back in error messages ("Incorrect API key provided: sk-proj-abc..."), partly
# masked or whole; anything shaped like a provider key is hidden even when fpmon did not send it.
_KEY_SHAPE = re.compile(r"\b(?:(?:sk|xai|gsk|pplx|fw)[-_]|AIza)[A-Za-z0-9_\-*]{8,}")
_MIN_SECRET = 4  # shorter values would redact ordinary words


def register(secret: str) -> None:
    """Remember a secret so that `redact` hides it from now on."""
    if len(secret) >= _MIN_SECRET:
        _registered.add(secret)


def redact(text: str, also: Iterable[str] = ()) -> str:
    """`text` with every registered secret, each of `also` (one request's own credentials)
    and every key-shaped token replaced by ***."""
    extra = {secret for secret in also if len(secret) >= _MIN_SECRET}
    for secret in sorted(_registered | extra, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _KEY_SHAPE.sub("***", text)
