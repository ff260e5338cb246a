"""fpmon.lock: the accepted fingerprints and resolved models per target, meant to be committed.

Written with tomli-w, atomically, with sorted keys and values, so that accepting twice with
nothing new leaves the file byte for byte as it was and a review diff shows only what changed.
TOML has no null: values are fpmon's tokens ("<null>", "<absent>", "" or the string).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from fp_monitor.config.settings import read_toml, target_section
from fp_monitor.domain.canary import Signature, signature_data, signature_from_data
from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.models import LockEntry
from fp_monitor.fileio import write_atomic

LOCK_VERSION = 1
HEADER = "# Accepted backend fingerprints. Written by `fpmon accept`; review and commit it.\n"
REGENERATE = "(regenerate it with `fpmon accept --replace`)"


def read_lock(path: Path) -> dict[str, LockEntry]:
    """The lock's entries by target; empty when the file does not exist."""
    if not path.exists():
        return {}
    try:
        data = read_toml(path)
    except ConfigError as exc:
        raise ConfigError(f"{exc} {REGENERATE}") from None
    version = data.get("version")
    if version != LOCK_VERSION:
        found = "no version" if version is None else f"version {version!r}"
        raise ConfigError(
            f"{path}: {found}; this fpmon reads lock files of version {LOCK_VERSION} {REGENERATE}"
        )
    targets = data.get("targets", {})
    if not isinstance(targets, dict):
        raise ConfigError(f"{path}: targets must be a table")
    return {name: _entry(path, name, table) for name, table in targets.items()}


def _entry(path: Path, name: str, table: Any) -> LockEntry:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {target_section(name)} must be a table")
    values = {}
    for key in ("fingerprints", "models"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: {target_section(name)} {key}: expected a list of strings")
        values[key] = frozenset(value)
    accepted_at = table.get("accepted_at")
    if accepted_at is not None and not isinstance(accepted_at, datetime):
        raise ConfigError(f"{path}: {target_section(name)} accepted_at: expected a date-time")
    canary = table.get("canary")
    if canary is not None:
        if not isinstance(canary, list):
            raise ConfigError(f"{path}: {target_section(name)} canary: expected signature tables")
        try:
            canary = tuple(signature_from_data(item) for item in canary)
        except ValueError as exc:
            raise ConfigError(f"{path}: {target_section(name)} canary: {exc}") from None
    return LockEntry(values["fingerprints"], values["models"], accepted_at, canary)


def write_lock(path: Path, entries: Mapping[str, LockEntry]) -> None:
    targets: dict[str, Any] = {}
    for name in sorted(entries):
        entry = entries[name]
        table: dict[str, Any] = {
            "fingerprints": sorted(entry.fingerprints),
            "models": sorted(entry.models),
        }
        if entry.accepted_at is not None:
            table["accepted_at"] = entry.accepted_at.astimezone(UTC).replace(microsecond=0)
        if entry.canary is not None:
            table["canary"] = [signature_data(s) for s in sorted(entry.canary, key=_by_id)]
        targets[name] = table
    write_atomic(path, HEADER + tomli_w.dumps({"version": LOCK_VERSION, "targets": targets}))


def _by_id(signature: Signature) -> str:
    return signature.id


@dataclass(frozen=True)
class Acceptance:
    """What `fpmon accept` changed for one target."""

    target: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    added_models: tuple[str, ...]
    removed_models: tuple[str, ...]
    added_signatures: tuple[str, ...] = ()
    removed_signatures: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(
            self.added
            or self.removed
            or self.added_models
            or self.removed_models
            or self.added_signatures
            or self.removed_signatures
        )


def accept_values(
    name: str,
    current: LockEntry | None,
    fingerprints: frozenset[str],
    models: frozenset[str],
    *,
    replace: bool,
    now: datetime,
    signatures: tuple[Signature, ...] | None = None,
) -> tuple[LockEntry, Acceptance]:
    """The target's new entry and what changed; accepted_at moves only when the entry does.
    `signatures`: the canary's known behaviours (None: the canary is off, the entry keeps
    what it has)."""
    old_fps = current.fingerprints if current else frozenset()
    old_models = current.models if current else frozenset()
    new_fps = fingerprints if replace else old_fps | fingerprints
    new_models = models if replace else old_models | models
    old_canary = {s.id: s for s in (current.canary or ())} if current else {}
    new_canary = dict(old_canary)
    if signatures is not None:
        known = {s.id: s for s in signatures if not s.candidate}
        new_canary = known if replace else {**old_canary, **known}
    change = Acceptance(
        name,
        added=tuple(sorted(new_fps - old_fps)),
        removed=tuple(sorted(old_fps - new_fps)),
        added_models=tuple(sorted(new_models - old_models)),
        removed_models=tuple(sorted(old_models - new_models)),
        added_signatures=tuple(sorted(new_canary.keys() - old_canary.keys())),
        removed_signatures=tuple(sorted(old_canary.keys() - new_canary.keys())),
    )
    if current is not None and not change.changed:
        return current, change
    kept = signatures is None and (current is None or current.canary is None)
    canary = None if kept else tuple(new_canary.values())
    return LockEntry(new_fps, new_models, now, canary), change
