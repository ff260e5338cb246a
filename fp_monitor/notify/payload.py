"""What a notification says: the versioned JSON event (a webhook's `format = "json"` and a
command's stdin), its one-line summary, and `${NAME}` references expanded from the environment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fp_monitor.config.settings import (
    Notifier,
    expand,
)
from fp_monitor.domain.canary import verdict_data
from fp_monitor.domain.errors import NotifyError
from fp_monitor.domain.models import (
    Event,
)
from fp_monitor.domain.text import clean, describe, iso, json_values, plural
from fp_monitor.notify.events import Notification

PAYLOAD_VERSION = 1


def payload(notification: Notification) -> dict[str, Any]:
    """The documented JSON event (`format = "json"` and a command's stdin), version 1."""
    target = notification.target
    return {
        "version": PAYLOAD_VERSION,
        "event": notification.event.value,
        "target": target.name,
        "status": target.status.value,
        "unexpected": target.unexpected,
        "before": json_values(target.previous),
        "now": json_values(target.fingerprints),
        "models_before": json_values(target.previous_models),
        "models": json_values(target.models),
        "errors": [
            {"kind": e.kind.value, "status_code": e.status_code, "message": e.message}
            for e in target.errors
        ],
        "failed_checks": notification.failed_checks,
        "checked_at": iso(notification.checked_at),
        "check_id": notification.check_id,
        "history": str(
            notification.history.absolute()
            if isinstance(notification.history, Path)
            else notification.history
        ),
        "summary": summary(notification),
        "site": notification.site,
        "canary": None if target.canary is None else verdict_data(target.canary),
    }


def summary(notification: Notification) -> str:
    """One line for people: what happened to which target."""
    target = notification.target
    name = clean(target.name)
    failed = notification.failed_checks
    # Where from: in a team's shared history, one region may be served what the others are not.
    if notification.site is not None:
        name += f" (site {clean(notification.site)})"
    if notification.event is Event.ERROR:
        return f"{name} failed {plural(failed, 'check')} in a row: {describe(target)}"
    if notification.event is Event.RECOVERED:
        return f"{name} recovered after {plural(failed, 'failed check')}: {describe(target)}"
    return f"{name} {target.status.value}: {describe(target)}"


def env_values(tokens: Sequence[str] | None) -> str:
    """Comma-separated, "" for an empty fingerprint; the whole event is JSON on stdin."""
    return ",".join('""' if t == "" else clean(t) for t in tokens or ())


def expand_field(notifier: Notifier, what: str, text: str, environ: Mapping[str, str]) -> str:
    """${NAME} -> the variable's value, which from then on is redacted from every message."""
    try:
        return expand(text, environ)
    except KeyError as unset:
        raise NotifyError(
            f"notify {notifier.name}: {what}: environment variable {unset.args[0]} is not set"
        ) from None
