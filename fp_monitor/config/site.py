"""Where observations are made from: the `site` key (settable in [defaults]), `FPMON_SITE`,
else this machine's host name. A team writing one history from several regions tells them
apart by it (`fpmon stats` shows the shares served at each site)."""

from __future__ import annotations

import os
import socket

from fp_monitor.domain.errors import ConfigError

SITE_LIMIT = 64
"""Characters of a site name: a label in tables and metrics, not a description."""
SITE_VARIABLE = "FPMON_SITE"


def site_problem(value: object) -> str | None:
    """Why `value` is not a site name (a short printable string), or None when it is one."""
    if not isinstance(value, str) or not value.strip():
        return 'expected a non-empty string, like site = "eu-west"'
    if len(value) > SITE_LIMIT:
        return f"expected at most {SITE_LIMIT} characters, got {len(value)}"
    if not value.isprintable():
        # Never echoed: a control character would reach the terminal.
        return "expected printable characters only (no control characters or line breaks)"
    return None


def machine_site() -> str:
    """$FPMON_SITE, else the host name: the site of what this machine records."""
    if (value := os.environ.get(SITE_VARIABLE)) is not None:
        if problem := site_problem(value):
            raise ConfigError(f"{SITE_VARIABLE}: {problem}")
        return value
    # A host name is no user's typo: a long one (a fully qualified name) is cut, not refused.
    name = socket.gethostname()[:SITE_LIMIT]
    if site_problem(name):
        raise ConfigError(
            f"this machine's host name is not a usable site name; set {SITE_VARIABLE}, "
            'or site = "NAME" in [defaults]'
        )
    return name
