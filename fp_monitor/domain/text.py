"""Text rules shared by every output: server strings made safe to show, values shortened for
tables, and the JSON contract's encodings of values and times.

Pure functions of their arguments (no rich, no I/O), so that notifications and CI reports
format a value exactly as the tables do.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import datetime, timedelta

from fp_monitor.domain.models import ABSENT, NULL, Status, TargetResult

CELL_LIMIT = 64
"""Tables show values up to this many characters whole."""


def clean(text: str) -> str:
    """Control and format characters (ESC, CR, bidi overrides...) shown as escapes."""
    return "".join(
        repr(ch)[1:-1] if ch != " " and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
        for ch in text
    )


def shorten(text: str, limit: int = CELL_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show_value(token: str) -> str:
    """How a fingerprint or model token reads in a table."""
    if token in (NULL, ABSENT):
        return token
    return '""' if token == "" else shorten(clean(token))


def describe(target: TargetResult) -> str:
    """One line: what changed (before -> now) or why the target failed; the accept hint."""
    if target.status is Status.ERROR:
        shown = sorted({f"{e.kind.value}: {clean(e.message)}" for e in target.errors})
        return "; ".join(shown)
    served = f"fingerprint: {show_values(target.fingerprints)}, model: {show_values(target.models)}"
    if target.status is Status.NEW:
        moves = _outside_known(target) or [f"no lock entry (--locked); {served}"]
    else:
        moves = [_move(c.field, c.before, c.now) + _parts(target, c.field) for c in target.changes]
        moves = moves or [served]
    text = "; ".join(moves)
    if target.unexpected and target.status in (Status.NEW, Status.DRIFT):
        text += f". If expected, accept it: fpmon accept {target.name}"
    return text


def _move(field: str, before: Iterable[str], now: Iterable[str]) -> str:
    return f"{field}: {show_values(before)} -> {show_values(now)}"


def _parts(target: TargetResult, field: str) -> str:
    """ " (vllm 0.11.2 → 0.12.0; config hash changed)": the decoded parts that moved, where the
    values of `field` decode (see domain.fingerprints); "" otherwise."""
    parts = next((c.parts for c in target.changes if c.field == field and c.parts), None)
    return f" ({parts.summary})" if parts else ""


def _outside_known(target: TargetResult) -> list[str]:
    """A `new` target's values against what detection held them to, the values before: the
    lock entry (accepted) or everything recorded for the target (known). Not the previous
    check's, which with a lock is often the same new value, seen once already."""
    moves = [
        _move(field, before, now) + _parts(target, field)
        for field, before, now in (
            ("fingerprint", target.known, target.fingerprints),
            ("model", target.known_models, target.models),
        )
        if set(now) - set(before)
    ]
    headers = [c for c in target.changes if c.field not in ("fingerprint", "model")]
    return moves + [_move(c.field, c.before, c.now) for c in headers]


def show_values(tokens: Iterable[str] | None) -> str:
    shown = [show_value(t) for t in tokens or ()]
    return ", ".join(shown) if shown else "-"


def show_latency(latency_ms: float | None) -> str:
    return f"{latency_ms:.0f} ms" if latency_ms is not None else "-"


def json_value(token: str) -> str | None:
    """The JSON contract: a null fingerprint is JSON null; absent is the string "<absent>"."""
    return None if token == NULL else token


def json_values(tokens: Iterable[str] | None) -> list[str | None] | None:
    return None if tokens is None else [json_value(t) for t in tokens]


def iso(moment: datetime) -> str:
    """A time in the JSON contract: ISO 8601, UTC, with a Z."""
    return moment.isoformat().replace("+00:00", "Z")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def show_duration(delta: timedelta | None) -> str:
    """'3d 4h', '12m', '45s': the two largest units; '250ms' below a second."""
    if delta is None:
        return "-"
    if 0 < delta.total_seconds() < 1:  # "0s" would say there is no time at all
        return f"{max(1, round(delta.total_seconds() * 1000))}ms"
    seconds = int(delta.total_seconds())
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def show_interval(seconds: float) -> str:
    """5m, 2h, 30s: a watch interval as it is written on the command line."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds * 1000:g}ms" if 0 < seconds < 1 else f"{seconds:g}s"
