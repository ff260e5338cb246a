"""What the history keeps for the behaviour canary (migration 0015_canary): each target's learned
signatures, the parameters a provider refused, and the reads of the samples and verdicts that
History itself writes (`observations.canary`, `checks.canary`).

Functions of a History, through its own connection and error mapping (a locked or corrupt file
is one line and exit 4, as for every other command); the same SQL runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from fp_monitor.domain.canary import (
    CanarySample,
    Signature,
    sample_from_column,
    signature_data,
    signature_from_data,
)
from fp_monitor.domain.models import TargetState, Window, fingerprint_token
from fp_monitor.store.connection import history_errors
from fp_monitor.store.history import History
from fp_monitor.store.rows import parse_timestamp, timestamp, window_clause

LOGPROBS = "logprobs"
"""What `canary_refusals.refused` holds for a 400 to `logprobs` / `top_logprobs`."""


def canary_signatures(history: History, target: str) -> tuple[Signature, ...]:
    """The target's learned behaviour signatures (unconfirmed candidates included)."""
    rows = history.fetch_all("SELECT signatures FROM canary_signatures WHERE target = ?", (target,))
    if not rows:
        return ()
    return tuple(signature_from_data(item) for item in json.loads(rows[0][0]))


def save_canary(
    history: History,
    target: str,
    signatures: Sequence[Signature],
    at: datetime,
    *,
    refused: bool,
) -> None:
    """Store the signatures a check left, and a refusal of the logprob parameters (its first
    moment is kept); call inside `history.write()`."""
    with history_errors(history.path):
        history._db.execute(
            "INSERT INTO canary_signatures (target, signatures, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (target) DO UPDATE"
            " SET signatures = excluded.signatures, updated_at = excluded.updated_at",
            (target, json.dumps([signature_data(s) for s in signatures]), timestamp(at)),
        )
        if refused:
            history._db.execute(
                "INSERT INTO canary_refusals (target, refused, first_at) VALUES (?, ?, ?)"
                " ON CONFLICT (target, refused) DO NOTHING",
                (target, LOGPROBS, timestamp(at)),
            )


def logprobs_refused(history: History, target: str) -> datetime | None:
    """When the provider first answered 400 to the logprob parameters for `target`."""
    rows = history.fetch_all(
        "SELECT first_at FROM canary_refusals WHERE target = ? AND refused = ?",
        (target, LOGPROBS),
    )
    return parse_timestamp(rows[0][0]) if rows else None


def canary_recent(history: History, target: str, limit: int) -> list[CanarySample]:
    """The target's latest probe samples with canary data, oldest first."""
    rows = history.fetch_all(
        "SELECT canary, fingerprint, fingerprint_state FROM observations"
        " WHERE target = ? AND source = 'probe' AND canary IS NOT NULL"
        " ORDER BY id DESC LIMIT ?",
        (target, limit),
    )
    found = []
    for text, value, state in reversed(rows):
        if (sample := sample_from_column(text, fingerprint_token(value, state))) is not None:
            found.append(sample)
    return found


def canary_verdicts(
    history: History, target: str, window: Window
) -> list[tuple[datetime, dict[str, Any]]]:
    """The canary verdicts of the target's checks in `window`, oldest first."""
    where, params = window_clause("checked_at", window)
    rows = history.fetch_all(
        f"SELECT checked_at, canary FROM checks WHERE target = ?{where}"
        " AND canary IS NOT NULL ORDER BY checked_at, id",
        (target, *params),
    )
    return [(parse_timestamp(at), json.loads(text)) for at, text in rows]


def with_canary_state(history: History, target: str) -> TargetState:
    """`history.state(target)` with the canary's distance of its latest probe check that
    judged behaviour (what the metrics show)."""
    rows = history.fetch_all(
        "SELECT canary FROM checks WHERE target = ? AND source = 'probe'"
        " AND canary IS NOT NULL ORDER BY id DESC LIMIT 1",
        (target,),
    )
    distance = json.loads(rows[0][0]).get("distance") if rows else None
    measured = distance if isinstance(distance, int | float) else None
    return replace(history.state(target), canary_distance=measured)
