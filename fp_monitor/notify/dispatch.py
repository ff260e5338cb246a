"""Notifications: which events a check sets off (a pure function of its result and of the error
streaks in the history), their payloads, and delivery through webhooks and commands.

Notifications go out after the check is committed, so a failing notifier never loses an
observation; it never changes an exit code either: each failure comes back as one line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

import httpx2

from fp_monitor import __version__
from fp_monitor.config.history_url import HistoryLocation
from fp_monitor.config.settings import (
    Command,
    Config,
    Notifier,
    Webhook,
    WebhookFormat,
    carries_credentials,
    expand,
)
from fp_monitor.domain.errors import NotifyError
from fp_monitor.domain.models import (
    TRAFFIC_STATUSES,
    Change,
    CheckResult,
    ErrorKind,
    Event,
    ProbeError,
    Status,
    TargetResult,
)
from fp_monitor.domain.text import clean, describe, iso, json_values, plural, shorten
from fp_monitor.net.redact import redact, register
from fp_monitor.probe.request import (
    RETRYABLE_STATUS,
    BodyTooLarge,
    error_message,
    post_once,
    retry_delay,
)
from fp_monitor.store.history import History

PAYLOAD_VERSION = 1
STATUS_EVENTS = {
    Status.NEW: Event.NEW,
    Status.CHANGED: Event.CHANGED,
    Status.LEARNED: Event.LEARNED,
}
# Chat services cut or refuse longer messages.
_TEXT_LIMITS = {WebhookFormat.SLACK: 3000, WebhookFormat.DISCORD: 2000}
_DISCORD_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\*_~`|"})


@dataclass(frozen=True)
class Notification:
    """One event of one target in one check."""

    event: Event
    target: TargetResult
    check_id: str
    checked_at: datetime
    history: HistoryLocation
    failed_checks: int = 0
    """error: the checks failed in a row so far; recovered: how many failed before it."""


def events(
    result: CheckResult,
    failed_before: Mapping[str, int],
    error_after: Mapping[str, int],
    history: HistoryLocation,
) -> list[Notification]:
    """The notifications one check calls for. `failed_before`: per target, the checks that
    failed in a row just before this one (from the history, so that separate `fpmon check`
    runs share the streak)."""
    notifications = []
    for target in result.targets:
        failed = failed_before.get(target.name, 0)
        threshold = error_after[target.name]
        found: list[tuple[Event, int]] = []
        if target.status is Status.ERROR:
            # Once per streak: when it reaches the threshold, not on every failure after that.
            if failed + 1 == threshold:
                found.append((Event.ERROR, failed + 1))
        else:
            # Only a streak that was notified is worth a `recovered`.
            if failed >= threshold:
                found.append((Event.RECOVERED, failed))
            if (event := STATUS_EVENTS.get(target.status)) is not None and target.news:
                found.append((event, 0))
        notifications += [
            Notification(event, target, result.check_id, result.checked_at, history, count)
            for event, count in found
        ]
    return notifications


def traffic_events(
    target: TargetResult, check_id: str, checked_at: datetime, history: HistoryLocation
) -> list[Notification]:
    """The notifications of one recorded response of an application's traffic: only `new` and
    `learned` (TRAFFIC_STATUSES), and a `new` only when it is news. Not `changed`, `error` or
    `recovered`: an application's own requests say little of the backend's flaps and failures,
    so these stay the probes'."""
    if target.status not in TRAFFIC_STATUSES or not target.news:
        return []
    event = STATUS_EVENTS.get(target.status)
    return [] if event is None else [Notification(event, target, check_id, checked_at, history)]


def pending(history: History, config: Config, result: CheckResult) -> list[Notification]:
    """The notifications of a recorded check, its error streaks read from `history`."""
    if not config.notifiers or not result.recorded:
        return []  # a dry run sends nothing
    error_after = {t.name: t.error_after for t in config.targets}
    failed = {t.name: history.failed_before(t.name, result.check_id) for t in result.targets}
    return events(result, failed, error_after, history.path)


def deliver(
    config: Config,
    notifications: Sequence[Notification],
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """Send each notification through every notifier that wants it; the failures, one line
    each (a failure never stops the other notifiers)."""
    failures = []
    for notification in notifications:
        for notifier in config.notifiers:
            if notifier.wants(notification.event, notification.target.name):
                try:
                    send(config, notifier, notification, environ)
                except NotifyError as exc:
                    failures.append(str(exc))
    return failures


def send_test(config: Config, name: str, event: Event) -> Notifier:
    """Send a sample `event` through the notifier `name`, whatever its `on` and `targets`."""
    notifier = config.notifier(name)
    send(config, notifier, sample(event, config.history))
    return notifier


def send(
    config: Config,
    notifier: Notifier,
    notification: Notification,
    environ: Mapping[str, str] = os.environ,
) -> None:
    if isinstance(notifier, Webhook):
        _post(notifier, webhook_body(notifier.format, notification), environ)
    else:
        assert isinstance(notifier, Command)  # the config builds these two kinds only
        # The command needs the event, not the providers' keys.
        keys = {t.api_key_env for t in config.targets if t.api_key_env}
        _run(notifier, notification, {k: v for k, v in environ.items() if k not in keys})


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
    }


def summary(notification: Notification) -> str:
    """One line for people: what happened to which target."""
    target = notification.target
    name = clean(target.name)
    failed = notification.failed_checks
    if notification.event is Event.ERROR:
        return f"{name} failed {plural(failed, 'check')} in a row: {describe(target)}"
    if notification.event is Event.RECOVERED:
        return f"{name} recovered after {plural(failed, 'failed check')}: {describe(target)}"
    return f"{name} {target.status.value}: {describe(target)}"


def webhook_body(form: WebhookFormat, notification: Notification) -> dict[str, Any]:
    if form is WebhookFormat.JSON:
        return payload(notification)
    text = "fpmon: " + summary(notification)
    if form is WebhookFormat.SLACK:
        # Slack reads <...> as links and mentions (<!channel>): server strings must not ping.
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return {"text": shorten(escaped, _TEXT_LIMITS[form])}
    # Discord: no markdown from server strings, and no @everyone from them either.
    content = shorten(text.translate(_DISCORD_MARKDOWN), _TEXT_LIMITS[form])
    return {"content": content, "allowed_mentions": {"parse": []}}


def _expand(notifier: Notifier, what: str, text: str, environ: Mapping[str, str]) -> str:
    """${NAME} -> the variable's value, which from then on is redacted from every message."""
    try:
        return expand(text, environ)
    except KeyError as unset:
        raise NotifyError(
            f"notify {notifier.name}: {what}: environment variable {unset.args[0]} is not set"
        ) from None


def _register_url_parts(url: str) -> None:
    """Register each part of a webhook URL that may be its secret (Slack's /services/T…/B…/
    token, Discord's /webhooks/ID/TOKEN, ?sig=…, a password), as written and percent-decoded:
    an answer that echoes any one part of the URL shows *** in its place."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return  # not sent either: _post refuses it
    for segment in [*parts.path.split("/"), password or ""]:
        for form in {segment, unquote(segment)}:
            if _looks_secret(form):
                register(form)
    for item in parts.query.split("&"):
        name, _, value = item.partition("=")
        for form in {value, unquote_plus(value)}:
            if _looks_secret(form) or carries_credentials(unquote_plus(name)):
                register(form)


def _looks_secret(part: str) -> bool:
    """Long enough, and not plain words like `services` or `incoming-webhook`."""
    return len(part) >= 8 and re.fullmatch(r"[a-z]+(?:[-_.][a-z]+)*", part) is None


def _post(hook: Webhook, body: dict[str, Any], environ: Mapping[str, str]) -> None:
    url = _expand(hook, "url", hook.url, environ)
    _register_url_parts(url)
    headers = {"user-agent": f"fpmon/{__version__}", "content-type": "application/json"}
    for name, value in hook.headers.items():
        headers[name] = _expand(hook, f"header {name}", value, environ)
        if not headers[name].isascii():
            raise NotifyError(f"notify {hook.name}: header {name}: the value is not ASCII")
    host = _http_host(url)
    if host is None:
        raise NotifyError(f"notify {hook.name}: url is not an http:// or https:// URL")
    # Not the parser's message: it would quote a piece of the (secret) URL.
    invalid = NotifyError(f"notify {hook.name}: url is not a valid URL")
    try:
        host.encode("idna")  # a label past 63 characters: the resolver would only say "unknown"
    except UnicodeError:
        raise invalid from None
    content = json.dumps(body).encode()
    attempts = 0
    while True:
        attempts += 1
        answer: httpx2.Headers | None = None
        try:
            # Redirects are not followed: the headers may carry a token meant for this origin.
            response, said = post_once(url, content=content, headers=headers, timeout=hook.timeout)
        except (httpx2.InvalidURL, UnicodeError):
            raise invalid from None
        except (TimeoutError, httpx2.TimeoutException):
            problem, retryable = f"no complete answer within {hook.timeout:g}s", True
        except BodyTooLarge as exc:
            if exc.response.is_success:
                return
            problem, retryable = f"HTTP {exc.response.status_code}: {exc}", False
        except httpx2.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            retryable = isinstance(exc, httpx2.TransportError)
        else:
            if response.is_success:
                return
            answer = response.headers
            problem = f"HTTP {response.status_code}: {error_message(said)}"
            retryable = response.status_code in RETRYABLE_STATUS or response.status_code >= 500
        if not retryable or attempts > hook.retries:
            raise NotifyError(
                f"notify {hook.name}: POST to {host} failed after "
                f"{plural(attempts, 'attempt')}: "
                f"{redact(clean(problem))[:300]}"
            )
        # A notifier waits at most its timeout between tries: the watch has checks to run.
        time.sleep(min(retry_delay(answer, attempts), hook.timeout))


def _http_host(url: str) -> str | None:
    """The host of an http:// or https:// URL; None for anything else."""
    try:
        parts = urlsplit(url)
        return parts.hostname if parts.scheme in ("http", "https") else None
    except ValueError:
        return None


def _run(command: Command, notification: Notification, environ: Mapping[str, str]) -> None:
    target = notification.target
    env = {
        **environ,
        "FPMON_EVENT": notification.event.value,
        "FPMON_TARGET": clean(target.name),
        "FPMON_STATUS": target.status.value,
        "FPMON_BEFORE": _env_values(target.previous),
        "FPMON_NOW": _env_values(target.fingerprints),
    }
    program = command.run[0]
    try:
        proc = subprocess.run(
            command.run,
            input=json.dumps(payload(notification)).encode(),
            env=env,
            capture_output=True,
            timeout=command.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise NotifyError(
            f"notify {command.name}: {program} did not finish within {command.timeout:g}s "
            "and was stopped"
        ) from None
    except OSError as exc:
        raise NotifyError(
            f"notify {command.name}: cannot run {program}: {exc.strerror or exc}"
        ) from None
    if proc.returncode != 0:
        said = [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line]
        last = f": {redact(clean(said[-1]))[:300]}" if said else ""
        raise NotifyError(
            f"notify {command.name}: {program} exited with status {proc.returncode}{last}"
        )


def _env_values(tokens: Sequence[str] | None) -> str:
    """Comma-separated, "" for an empty fingerprint; the whole event is JSON on stdin."""
    return ",".join('""' if t == "" else clean(t) for t in tokens or ())


def sample(event: Event, history: HistoryLocation) -> Notification:
    """A realistic event for `fpmon notify test`, on a target named fpmon-test."""
    status, previous, now = _SAMPLES[event]
    model = ("gpt-4o-mini-2024-07-18",)
    moved = bool(now) and not set(now) <= set(previous)
    target = TargetResult(
        name="fpmon-test",
        status=status,
        unexpected=status is Status.NEW,
        fingerprints=now,
        models=model if now else (),
        previous=previous,
        previous_models=model,
        known=tuple(sorted({*previous, *now})),
        known_models=model,
        samples=3,
        errors=() if now else (ProbeError(ErrorKind.TIMEOUT, None, "no answer within 30s"),) * 3,
        latency_ms=412.0 if now else None,
        changes=(Change("fpmon-test", "fingerprint", previous, now, None),) if moved else (),
    )
    failed = 3 if event in (Event.ERROR, Event.RECOVERED) else 0
    return Notification(event, target, "0" * 32, datetime.now(UTC), history, failed)


_OLD, _OTHER, _NEW = "fp_0ba0d124f1", "fp_560af6e559", "fp_e9917c3b55"
# event -> (status, previous fingerprints, fingerprints now) of the sample
_SAMPLES: dict[Event, tuple[Status, tuple[str, ...], tuple[str, ...]]] = {
    Event.NEW: (Status.NEW, (_OLD, _OTHER), (_NEW,)),
    Event.CHANGED: (Status.CHANGED, (_OLD,), (_OTHER,)),
    Event.LEARNED: (Status.LEARNED, (_OLD,), (_NEW,)),
    Event.ERROR: (Status.ERROR, (_OLD, _OTHER), ()),
    Event.RECOVERED: (Status.SAME, (_OLD, _OTHER), (_OLD, _OTHER)),
}
