"""How values are stored in the history's columns: timestamps as fixed-width UTC text,
observations as rows, value sets as JSON, and the SQL fragments that read them back."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

from fp_monitor.domain.canary import sample_column, sample_from_column
from fp_monitor.domain.chain import Row
from fp_monitor.domain.models import (
    ABSENT,
    ALL_SOURCES,
    NULL,
    TRAFFIC_STATUSES,
    ErrorKind,
    Observation,
    Source,
    Usage,
    Window,
    fingerprint_columns,
    fingerprint_token,
)


# Remembered: a recorded response's moment is written three or four times (its record, its
# check, the values it counts), once per response. Bounded, since every moment is another.
@functools.lru_cache(maxsize=256)
def timestamp(moment: datetime) -> str:
    """UTC, fixed width, so that text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    # fromisoformat reads this fixed format over 20 times faster than strptime, which
    # matters when a timeline parses thousands of rows.
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # compared with aware times later: refuse it here, by name
        raise ValueError(f"{text[:40]!r} has no time zone")
    return moment


TRAFFIC_STATUSES_SQL = ", ".join(f"'{status.value}'" for status in TRAFFIC_STATUSES)

FINGERPRINT_TOKEN = (
    f"CASE fingerprint_state WHEN 'null' THEN '{NULL}' WHEN 'absent' THEN '{ABSENT}'"
    " ELSE fingerprint END"
)


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


def window_clause(column: str, window: Window) -> tuple[str, list[Any]]:
    where, params = "", []
    if window.since is not None:
        where += f" AND {column} >= ?"
        params.append(timestamp(window.since))
    if window.until is not None:
        where += f" AND {column} < ?"
        params.append(timestamp(window.until))
    if window.sources != ALL_SOURCES:
        where += f" AND source IN ({placeholders(len(window.sources))})"
        params.extend(sorted(source.value for source in window.sources))
    return where, params


@functools.lru_cache(maxsize=4096)
def value_set(text: str) -> frozenset[str]:
    """A stored JSON list of strings; ValueError when it is anything else."""
    # Cached: a timeline reads the same few sets thousands of times in a row.
    return _strings(json.loads(text))


def _strings(values: Any) -> frozenset[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("expected a JSON list of strings")
    return frozenset(values)


def optional_set(text: str | None) -> frozenset[str] | None:
    return None if text is None else value_set(text)


def header_sets(text: str) -> dict[str, frozenset[str]]:
    headers = json.loads(text)
    if not isinstance(headers, dict):
        raise ValueError("expected a JSON object")
    return {name: _strings(values) for name, values in headers.items()}


def observation_from_row(row: Row) -> Observation:
    """A stored record -> the Observation it was made from (the inverse of observation_row)."""
    return Observation(
        target=row["target"],
        provider=row["provider"],
        base_url=row["base_url"],
        requested_model=row["requested_model"],
        observed_at=parse_timestamp(row["observed_at"]),
        attempts=row["attempts"],
        latency_ms=row["latency_ms"],
        request_shape=row["request_shape"],
        http_status=row["http_status"],
        fingerprint=fingerprint_token(row["fingerprint"], row["fingerprint_state"]),
        resolved_model=row["resolved_model"],
        response_id=row["response_id"],
        request_id=row["request_id"],
        usage=Usage(row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]),
        headers=json.loads(row["headers"]),
        error_kind=ErrorKind(row["error_kind"]) if row["error_kind"] else None,
        error_message=row["error_message"],
        raw_response=row["raw_response"],
        tags=json.loads(row["tags"]),
        canary=sample_from_column(
            row["canary"], fingerprint_token(row["fingerprint"], row["fingerprint_state"])
        ),
        site=row["site"],
    )


JSON = json.JSONEncoder()
"""json.dumps's text. Rows are written once per response: these encoders are made once, where
json.dumps makes one per call whenever it is given an option."""
SORTED_JSON = json.JSONEncoder(sort_keys=True)
"""json.dumps(..., sort_keys=True)'s text (see JSON)."""


def observation_row(
    check_id: str, obs: Observation, prev_hash: str, source: Source = Source.PROBE
) -> dict[str, Any]:
    """The chained columns of `obs` as stored (hash it with chain_hash)."""
    fingerprint, state = fingerprint_columns(obs.fingerprint)
    return {
        "check_id": check_id,
        "observed_at": timestamp(obs.observed_at),
        "source": source.value,
        "target": obs.target,
        "provider": obs.provider,
        "base_url": obs.base_url,
        "requested_model": obs.requested_model,
        "resolved_model": obs.resolved_model,
        "fingerprint": fingerprint,
        "fingerprint_state": state,
        "response_id": obs.response_id,
        "request_id": obs.request_id,
        "http_status": _int_or_none(obs.http_status),
        # REAL and INTEGER columns give back float and int: hash what a reader will see
        "latency_ms": None if obs.latency_ms is None else float(obs.latency_ms),
        "attempts": int(obs.attempts),
        "prompt_tokens": _int_or_none(obs.usage.prompt_tokens),
        "completion_tokens": _int_or_none(obs.usage.completion_tokens),
        "total_tokens": _int_or_none(obs.usage.total_tokens),
        "headers": SORTED_JSON.encode(obs.headers),
        "error_kind": obs.error_kind.value if obs.error_kind else None,
        "error_message": obs.error_message,
        "request_shape": obs.request_shape,
        "raw_response": obs.raw_response,
        "prev_hash": prev_hash,
        "tags": SORTED_JSON.encode(dict(obs.tags)),
        "canary": sample_column(obs.canary),
        "site": obs.site,
    }


def _int_or_none(value: int | None) -> int | None:
    return None if value is None else int(value)
