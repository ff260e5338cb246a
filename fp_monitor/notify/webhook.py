"""The `webhook` kind: a POST to a URL, as JSON or in Slack's or Discord's shape, bounded by
its timeout from connect to last byte, retried as the probe retries, never redirected."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

import httpx2

from fp_monitor import __version__
from fp_monitor.config.settings import (
    Webhook,
    WebhookFormat,
    carries_credentials,
)
from fp_monitor.domain.errors import NotifyError
from fp_monitor.domain.text import clean, plural, shorten
from fp_monitor.net.redact import redact, register
from fp_monitor.notify.events import Notification
from fp_monitor.notify.payload import expand_field, payload, summary
from fp_monitor.probe.request import (
    RETRYABLE_STATUS,
    BodyTooLarge,
    error_message,
    post_once,
    retry_delay,
)

# Chat services cut or refuse longer messages.
_TEXT_LIMITS = {WebhookFormat.SLACK: 3000, WebhookFormat.DISCORD: 2000}


_DISCORD_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\*_~`|"})


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


def register_url_parts(url: str) -> None:
    """Register each part of a webhook URL that may be its secret (Slack's /services/T…/B…/
    token, Discord's /webhooks/ID/TOKEN, ?sig=…, a password), as written and percent-decoded:
    an answer that echoes any one part of the URL shows *** in its place."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return  # not sent either: post refuses it
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


def post(hook: Webhook, body: dict[str, Any], environ: Mapping[str, str]) -> None:
    url = expand_field(hook, "url", hook.url, environ)
    register_url_parts(url)
    headers = {"user-agent": f"fpmon/{__version__}", "content-type": "application/json"}
    for name, value in hook.headers.items():
        headers[name] = expand_field(hook, f"header {name}", value, environ)
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


def send(
    hook: Webhook, notification: Notification, environ: Mapping[str, str] = os.environ
) -> None:
    post(hook, webhook_body(hook.format, notification), environ)
