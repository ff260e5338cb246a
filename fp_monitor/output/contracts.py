"""The versioned JSON contracts: what `check --json`, `targets --json`, `history --format json`
and `stats --json` print (and their JSON lines and CSV columns), built from the records given.
No rich, no I/O: every format prints these same fields."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fp_monitor.config.providers import Realities, realities
from fp_monitor.config.settings import Config, key_status, target_canary
from fp_monitor.domain.canary import sample_data, verdict_data
from fp_monitor.domain.fingerprints import no_signal
from fp_monitor.domain.models import (
    Change,
    CheckResult,
    Recorded,
    fingerprint_columns,
)
from fp_monitor.domain.text import (
    iso,
    json_value,
    json_values,
)

if TYPE_CHECKING:
    from fp_monitor.domain.learning import Trust
    from fp_monitor.domain.stats import Share, TargetStats
    from fp_monitor.domain.timeline import Run


CHECK_TARGET_FIELDS = (
    "name",
    "status",
    "unexpected",
    "fingerprints",
    "models",
    "previous",
    "known",
    "previous_models",
    "known_models",
    "headers",
    "samples",
    "learning",
    "unseen_estimate",
    "errors",
    "latency_ms",
    "changes",
    "no_signal",
    "canary",
)
"""A target's fields in `check --json`, and its columns in JSON lines and CSV."""


def check_json(result: CheckResult) -> dict[str, Any]:
    return {
        "version": 1,
        "exit_code": int(result.exit_code),
        "checked_at": iso(result.checked_at),
        "check_id": result.check_id,
        "recorded": result.recorded,
        "targets": [
            {
                "name": t.name,
                "status": t.status.value,
                "unexpected": t.unexpected,
                "fingerprints": json_values(t.fingerprints),
                "models": json_values(t.models),
                "previous": json_values(t.previous),
                "known": json_values(t.known),
                "previous_models": json_values(t.previous_models),
                "known_models": json_values(t.known_models),
                "headers": {k: list(v) for k, v in t.headers.items()},
                "samples": t.samples,
                "learning": bool(t.learning),
                "unseen_estimate": t.unseen_estimate,
                "errors": [
                    {"kind": e.kind.value, "status_code": e.status_code, "message": e.message}
                    for e in t.errors
                ],
                "latency_ms": _ms(t.latency_ms),
                "changes": [change_json(c) for c in t.changes],
                "no_signal": no_signal(t.fingerprints),
                "canary": None if t.canary is None else verdict_data(t.canary),
            }
            for t in result.targets
        ],
    }


def change_json(change: Change) -> dict[str, Any]:
    """One diff row; `parts` says which parts of decodable fingerprints changed (else null)."""
    parts = change.parts
    return {
        "field": change.field,
        "before": json_values(change.before),
        "now": json_values(change.now),
        "before_first_seen": iso(change.before_first_seen) if change.before_first_seen else None,
        "parts": None
        if parts is None
        else {
            "format": parts.grammar,
            "summary": parts.summary,
            "changes": [
                {
                    "part": c.part,
                    "label": c.label,
                    "before": list(c.before),
                    "now": list(c.now),
                    "opaque": c.opaque,
                }
                for c in parts.changes
            ],
        },
    }


TARGET_FIELDS = (
    "name",
    "provider",
    "model",
    "endpoint",
    "api_key_env",
    "key",
    "samples",
    "timeout",
    "retries",
    "enabled",
    "provider_facts",
    "canary",
)


def targets_json(config: Config) -> dict[str, Any]:
    return {
        "version": 1,
        "config": str(config.source) if config.source else None,
        "history": str(config.history),
        "baseline": str(config.baseline),
        "targets": [
            {
                "name": t.name,
                "provider": t.provider,
                "model": t.model,
                "endpoint": t.endpoint,
                "api_key_env": t.api_key_env,
                "key": key_status(t),
                "samples": t.samples,
                "timeout": t.timeout,
                "retries": t.retries,
                "enabled": t.enabled,
                "provider_facts": facts_json(realities(t.provider)),
                "canary": dict(zip(("mode", "why"), target_canary(t), strict=True)),
            }
            for t in config.targets
        ],
    }


def facts_json(facts: Realities) -> dict[str, Any]:
    return {
        "fingerprint": facts.fingerprint.value,
        "signal": facts.signal,
        "stream": facts.stream.value,
        "logprobs": facts.logprobs.value,
        "note": facts.note,
    }


RUN_FIELDS = (
    "target",
    "fingerprints",
    "models",
    "first_seen",
    "last_seen",
    "checks",
    "observations",
    "errors",
    "samples",
)
"""A run's fields: `samples` is the name of the count in every contract; `observations` is its
older name, kept as an alias within version 1."""


OBSERVATION_FIELDS = (
    "id",
    "check_id",
    "source",
    "observed_at",
    "target",
    "provider",
    "base_url",
    "requested_model",
    "model",
    "fingerprint",
    "fingerprint_state",
    "response_id",
    "request_id",
    "status_code",
    "latency_ms",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "headers",
    "tags",
    "error",
    "request_shape",
    "raw_response",
    "resolved_model",
    "site",
    "canary",
)
"""An observation's fields: `resolved_model` is the name `fpmon export` and the history use;
`model` is its older name here, kept as an alias within version 1 (a new field goes last, so
that a CSV read by column position keeps its columns)."""


def run_json(run: Run) -> dict[str, Any]:
    return {
        "target": run.target,
        "fingerprints": json_values(run.fingerprints),
        "models": json_values(run.models),
        "first_seen": iso(run.first_seen),
        "last_seen": iso(run.last_seen),
        "checks": run.checks,
        "observations": run.observations,
        "errors": run.errors,
        "samples": run.observations,
    }


def observation_json(record: Recorded) -> dict[str, Any]:
    # Imported here: commands that never read the history do not load sqlite3.
    o = record.observation
    return {
        "id": record.id,
        "check_id": record.check_id,
        "source": record.source.value,
        "observed_at": iso(o.observed_at),
        "target": o.target,
        "provider": o.provider,
        "base_url": o.base_url,
        "requested_model": o.requested_model,
        "model": o.resolved_model,
        "fingerprint": None if o.fingerprint is None else json_value(o.fingerprint),
        "fingerprint_state": fingerprint_columns(o.fingerprint)[1],
        "response_id": o.response_id,
        "request_id": o.request_id,
        "status_code": o.http_status,
        "latency_ms": o.latency_ms,
        "attempts": o.attempts,
        "prompt_tokens": o.usage.prompt_tokens,
        "completion_tokens": o.usage.completion_tokens,
        "total_tokens": o.usage.total_tokens,
        "headers": o.headers,
        "tags": dict(o.tags),
        "error": None
        if o.error_kind is None
        else {"kind": o.error_kind.value, "status_code": o.http_status, "message": o.error_message},
        "request_shape": o.request_shape,
        "raw_response": o.raw_response,
        "resolved_model": o.resolved_model,
        "site": o.site,
        "canary": None if o.canary is None else sample_data(o.canary),
    }


def trust_json(trust: Trust) -> dict[str, Any]:
    return {
        "learning": trust.learning,
        "samples": trust.samples,
        "unseen_estimate": _rate(trust.unseen_estimate),
        "values": [
            {
                "value": json_value(v.value),
                "samples": v.samples,
                "share": round(v.samples / trust.samples, 4),
                "interval": [round(v.low, 4), round(v.high, 4)],
            }
            for v in trust.values
        ],
        "still_unseen": [
            {"share": share, "probability": round(p, 6)} for share, p in trust.still_unseen
        ],
    }


def share_json(shares: Sequence[Share]) -> list[dict[str, Any]]:
    return [{"value": json_value(s.value), "share": round(s.share, 4)} for s in shares]


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


STATS_FIELDS = (
    "name",
    "first_check",
    "checks",
    "successful_checks",
    "observations",
    "samples",
    "fingerprints",
    "models",
    "served",
    "new_events",
    "median_between_new_s",
    "changed",
    "flap_rate",
    "errors",
    "error_rate",
    "errors_by_kind",
    "latency_ms",
    "learning",
    "no_signal",
    "sites",
    "canary",
)
"""A target's fields in `stats --json`; `observations` is the older name of `samples`."""


def stats_json(stats: Sequence[TargetStats], since: datetime, now: datetime) -> dict[str, Any]:
    return {
        "version": 1,
        "since": iso(since),
        "until": iso(now),
        "targets": [
            {
                "name": s.target,
                "first_check": iso(s.start),
                "checks": s.checks,
                "successful_checks": s.successful_checks,
                "observations": s.observations,
                "samples": s.observations,
                "fingerprints": json_values(s.fingerprints),
                "models": json_values(s.models),
                "served": {
                    "checks": s.served_checks,
                    "fingerprints": share_json(s.served_fingerprints),
                    "models": share_json(s.served_models),
                    "groups": [
                        {
                            "format": g.grammar,
                            "parts": dict(g.parts),
                            "fingerprints": list(g.values),
                            "share": round(g.share, 4),
                        }
                        for g in s.served_groups
                    ],
                },
                "new_events": s.new_events,
                "median_between_new_s": None
                if s.median_between_new is None
                else s.median_between_new.total_seconds(),
                "changed": s.changed,
                "flap_rate": _rate(s.flap_rate),
                "errors": s.errors,
                "error_rate": _rate(s.error_rate),
                "errors_by_kind": {
                    kind: {"count": count, "rate": _rate(count / s.observations)}
                    for kind, count in s.errors_by_kind
                },
                "latency_ms": {"p50": _ms(s.latency_p50_ms), "p95": _ms(s.latency_p95_ms)},
                "learning": None if s.trust is None else trust_json(s.trust),
                "no_signal": s.no_signal,
                "sites": [
                    {
                        "site": site.site,
                        "samples": site.samples,
                        "fingerprints": share_json(site.fingerprints),
                        "models": share_json(site.models),
                        "only_here": json_values(site.only_here),
                    }
                    for site in s.sites
                ],
                "canary": None
                if s.canary is None
                else {
                    "mode": s.canary.mode,
                    "checks": s.canary.checks,
                    "statuses": dict(s.canary.statuses),
                    "known_signatures": s.canary.known,
                    "latest": s.canary.latest,
                    "p_value": s.canary.latest_p,
                    "distance": s.canary.latest_distance,
                },
            }
            for s in stats
        ],
    }
