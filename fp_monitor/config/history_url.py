"""Where the history lives: a SQLite file (a path) or a PostgreSQL database (a URL).

A URL is checked here, where the config is read, so that a bad one stops a command before
anything is probed: it must name no password. A password written in a URL ends up in shell
history, process lists, CI logs and config files under version control; libpq reads it instead
from PGPASSWORD, a passfile (~/.pgpass, or `passfile=` in the URL) or a service file
(`service=` in the URL), as it does for every PostgreSQL client. Everything else in the URL
(host, port, sslmode, sslrootcert, ...) goes to libpq unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from fp_monitor.domain.errors import ConfigError

SCHEMES = ("postgresql://", "postgres://")
_PASSWORD_ADVICE = (
    "set PGPASSWORD, or use a passfile (~/.pgpass) or a service file (service=NAME in the URL)"
)


@dataclass(frozen=True)
class PostgresURL:
    """A history in PostgreSQL: the URL as given, which names no password."""

    url: str

    def __str__(self) -> str:
        return self.url


HistoryLocation = Path | PostgresURL


def is_postgres(text: str) -> bool:
    return text.lower().startswith(SCHEMES)


def history_location(text: str, where: str, base_dir: Path | None = None) -> HistoryLocation:
    """A `history` value (from the config, --history or FPMON_HISTORY) -> where it lives;
    a relative path is relative to `base_dir` when one is given."""
    if is_postgres(text):
        return postgres_url(text, where)
    path = Path(text).expanduser()
    return path if base_dir is None or path.is_absolute() else base_dir / path


def postgres_url(text: str, where: str) -> PostgresURL:
    try:
        parts = urlsplit(text)
        password = parts.password
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: history: not a valid PostgreSQL URL ({exc})") from None
    if password is not None or any(key == "password" for key, _ in query):
        # Shown without the URL: it holds the password.
        raise ConfigError(
            f"{where}: history: the PostgreSQL URL contains a password; remove it and "
            + _PASSWORD_ADVICE
        )
    return PostgresURL(text)
