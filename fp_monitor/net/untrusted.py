"""JSON from outside (a server's answer, an application's request) decoded as data.

JSON lets a string hold a lone surrogate (`"\\ud800"`), which Python decodes into a str that
cannot be encoded as UTF-8: SQLite, the terminal and every file fpmon writes refuse it, and one
such value used to take down a whole check or batch of records. So every string is made safe
where the JSON is decoded: a lone surrogate is written out as the six characters of its JSON
escape (`\\ud800`). Unlike a replacement character, that keeps two different bad values
different, so that a change between them is still seen. A record with such a value names its
fields in the tag ESCAPED_TAG.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from fp_monitor.domain.models import Observation

ESCAPED_TAG = "fpmon.escaped"
"""Tag of a record: its fields (comma-separated) that hold a written-out surrogate escape."""
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# The escape of a lone surrogate: a high one not followed by a low one, or a low one alone.
_LONE_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
# The fields that hold a server's (or the application's) strings as decoded from JSON.
_DECODED_FIELDS = (
    "fingerprint",
    "resolved_model",
    "requested_model",
    "response_id",
    "error_message",
)


def parse_json(raw: bytes | str) -> Any:
    """`json.loads(raw)` with every string in it, keys included, safe to store and print;
    raises what json.loads raises."""
    return _safe(json.loads(raw))


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, list):
        return [_safe(item) for item in value]
    if isinstance(value, dict):
        return {safe_text(key): _safe(item) for key, item in value.items()}
    return value


def safe_text(text: str) -> str:
    """`text` with each lone surrogate written out as its JSON escape."""
    if _LONE_SURROGATE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def noting_escapes(observation: Observation) -> Observation:
    """`observation`, its tags naming the fields that hold a lone surrogate's escape (whether
    fpmon wrote it out or the server sent those six characters: the text is the same)."""
    escaped = [
        name
        for name in _DECODED_FIELDS
        if _LONE_ESCAPE.search(getattr(observation, name) or "") is not None
    ]
    if not escaped:
        return observation
    return replace(observation, tags={**observation.tags, ESCAPED_TAG: ",".join(escaped)})
