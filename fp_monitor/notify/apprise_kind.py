"""The `apprise` kind: one Apprise URL reaches any of the services that library supports
(e-mail, Microsoft Teams, PagerDuty, Telegram, ntfy, Matrix, ...), instead of fpmon formatting
each service by hand. Needs the extra: `pip install 'fpmon[apprise]'`.

The message is the event's summary line; the title names the event and the target. Every part
of the expanded URL that may be a secret is registered for redaction, as a webhook's is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fp_monitor.config.settings import AppriseNotifier
from fp_monitor.domain.errors import ConfigError, NotifyError
from fp_monitor.domain.text import clean
from fp_monitor.notify.events import Notification
from fp_monitor.notify.payload import expand_field, summary
from fp_monitor.notify.webhook import register_url_parts


def send(
    notifier: AppriseNotifier, notification: Notification, environ: Mapping[str, str] = os.environ
) -> None:
    try:
        import apprise
    except ImportError:
        raise ConfigError(
            f"notify {notifier.name}: the apprise kind needs the Apprise library: "
            "pip install 'fpmon[apprise]'"
        ) from None
    url = expand_field(notifier, "url", notifier.url, environ)
    register_url_parts(url)
    service = apprise.Apprise()
    if not service.add(url):
        raise NotifyError(f"notify {notifier.name}: url is not an Apprise URL this version knows")
    title = f"fpmon: {notification.event.value} on {clean(notification.target.name)}"
    # Apprise reports a failure as False (and logs the reason, with the URL, which fpmon does
    # not pass on): one line, the URL never in it.
    if not service.notify(title=title, body=summary(notification)):
        raise NotifyError(f"notify {notifier.name}: Apprise could not deliver the event")
