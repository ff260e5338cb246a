"""`[fingerprint_formats.NAME]`: a team's own fingerprint grammars, tried before the built-in
ones (see `domain.fingerprints`).

    [fingerprint_formats.gateway]
    pattern = '(?P<version>\\d+\\.\\d+)-(?P<region>[a-z]+)-(?P<build_hash>[0-9a-f]{8})'
    opaque = ["build_hash"]          # optional: parts only said to have changed
    labels = { version = "gateway" } # optional: how a part reads (default: its group name)
"""

from __future__ import annotations

import json
import re
from typing import Any

from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.fingerprints import BUILTIN_GRAMMARS, Grammar

FORMAT_KEYS = ("pattern", "opaque", "labels")
MAX_PATTERN = 1000
"""Characters of a pattern: a fingerprint grammar is one line, not a program."""


def grammars(data: dict[str, Any], where: str) -> tuple[Grammar, ...]:
    """The configuration's own grammars, then the built-in ones; a ConfigError naming the table
    and key when one is wrong."""
    tables = data.get("fingerprint_formats", {})
    if not isinstance(tables, dict):
        raise ConfigError(
            f"{where}: fingerprint_formats must be a table of [fingerprint_formats.NAME] tables"
        )
    own = tuple(_grammar(name, table, where) for name, table in tables.items())
    return own + BUILTIN_GRAMMARS


def _grammar(name: str, table: Any, where: str) -> Grammar:
    # quoted as TOML writes it, like the other tables' names in messages (settings._section)
    bare = re.fullmatch(r"[A-Za-z0-9_-]+", name)
    section = f"[fingerprint_formats.{name if bare else json.dumps(name)}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: {section} must be a table")
    for key in table:
        if key not in FORMAT_KEYS:
            raise ConfigError(
                f"{where}: {section} unknown key {key!r} (expected {', '.join(FORMAT_KEYS)})"
            )
    pattern = table.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(
            f"{where}: {section} pattern: expected a regular expression with named groups, "
            "e.g. '(?P<version>[0-9.]+)-(?P<build_hash>[0-9a-f]{8})'"
        )
    if len(pattern) > MAX_PATTERN:
        raise ConfigError(f"{where}: {section} pattern: longer than {MAX_PATTERN} characters")
    opaque = table.get("opaque", [])
    if not isinstance(opaque, list) or not all(isinstance(o, str) for o in opaque):
        raise ConfigError(
            f'{where}: {section} opaque: expected a list of group names, e.g. ["build_hash"]'
        )
    labels = table.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ConfigError(
            f'{where}: {section} labels: expected a table of texts, e.g. {{ version = "gateway" }}'
        )
    try:
        return Grammar.of(name, pattern, labels=labels, opaque=opaque)
    except re.error as exc:
        raise ConfigError(
            f"{where}: {section} pattern: not a valid regular expression: {exc}"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {section} pattern: {exc}") from None
