"""Delivery: each notification through every notifier that wants it, by the module of its
kind (webhook, command, apprise: a new kind is one module with a `send`).

Notifications go out after the check is committed, so a failing notifier never loses an
observation; it never changes an exit code either: each failure comes back as one line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from fp_monitor.config.settings import (
    AppriseNotifier,
    Command,
    Config,
    Notifier,
    Webhook,
)
from fp_monitor.domain.errors import NotifyError
from fp_monitor.domain.models import (
    Event,
)
from fp_monitor.notify import apprise_kind, command, webhook
from fp_monitor.notify.events import Notification, sample


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
    """Send through the module of the notifier's kind; a command gets the event, not the
    providers' keys."""
    if isinstance(notifier, Command):
        keys = {t.api_key_env for t in config.targets if t.api_key_env}
        command.send(notifier, notification, {k: v for k, v in environ.items() if k not in keys})
    elif isinstance(notifier, AppriseNotifier):
        apprise_kind.send(notifier, notification, environ)
    else:
        assert isinstance(notifier, Webhook)  # the config builds these kinds only
        webhook.send(notifier, notification, environ)
