"""What a fingerprint says about the backend: known grammars decode a value into named parts, a
change between decodable values is told part by part, served values are grouped by their parts,
and values that carry no signal at all are called out.

The grammars are data (BUILTIN_GRAMMARS, and a team's own from `[fingerprint_formats.NAME]` in
fpmon.toml): a regular expression whose named groups are the parts. A value no grammar matches
stays opaque, as it always was: decoding only ever adds an explanation, it never changes what
detection decides.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fp_monitor.domain.models import ABSENT, NULL
from fp_monitor.domain.text import clean, shorten

if TYPE_CHECKING:
    from fp_monitor.domain.models import Change

DECODE_LIMIT = 256
"""Longer values are not decoded: no real fingerprint is that long, and a team's own pattern
then never runs over a hostile server's megabyte."""
NO_SIGNAL_ADVICE = (
    "fpmon cannot see a backend change through it: the canary watches its behaviour (canary = "
    '"logprobs", or "sampled" where the API has no logprobs)'
)
"""What to do about a server whose fingerprint carries no signal (the canary, where there is
one, watches behaviour)."""
CONSTANT_FINGERPRINTS: Mapping[str, str] = {
    "fp_ollama": "Ollama's constant, the same whatever model, build or quantization answers",
}
"""Values known to be the same whatever serves: they carry no signal."""
_STATES = (NULL, ABSENT, "")


@dataclass(frozen=True)
class Part:
    """A named group of a grammar, and how it reads."""

    name: str
    label: str
    opaque: bool = False
    """A hash or commit: only that it changed is worth saying, not from what to what."""
    default: str | None = None
    """The value when the group is optional and the value leaves it out (vLLM omits `tp1`)."""
    flag: bool = False
    """A group that is there or not (vLLM's `-ep`): reads `on` or `off`."""


@dataclass(frozen=True)
class Grammar:
    """One kind of fingerprint: a full-match pattern whose named groups are the parts."""

    name: str
    pattern: re.Pattern[str]
    parts: tuple[Part, ...]

    @classmethod
    def of(
        cls,
        name: str,
        pattern: str,
        *,
        labels: Mapping[str, str] | None = None,
        opaque: Iterable[str] = (),
        defaults: Mapping[str, str] | None = None,
        flags: Iterable[str] = (),
    ) -> Grammar:
        """A grammar from a pattern; every named group is a part, labelled by `labels` or its
        name (underscores read as spaces). Raises re.error or ValueError (a bad pattern, no
        named group, a name in `opaque` that is no group)."""
        compiled = re.compile(pattern)
        groups = sorted(compiled.groupindex, key=compiled.groupindex.__getitem__)
        if not groups:
            raise ValueError("the pattern has no named group, e.g. (?P<version>[0-9.]+)")
        named = {*(labels or {}), *opaque, *(defaults or {}), *flags}
        if unknown := sorted(named - set(groups)):
            raise ValueError(f"no group named {', '.join(unknown)} in the pattern")
        hidden, switched = set(opaque), set(flags)
        parts = tuple(
            Part(
                name=group,
                label=(labels or {}).get(group, group.replace("_", " ")),
                opaque=group in hidden,
                default=(defaults or {}).get(group, "off" if group in switched else None),
                flag=group in switched,
            )
            for group in groups
        )
        return cls(name, compiled, parts)

    def __hash__(self) -> int:
        # The name and pattern decide the parts: hashing those too made a lookup keyed by
        # the grammars (_known_diff_parts, once per recorded response) cost more than it saved.
        return hash((self.name, self.pattern))


@dataclass(frozen=True)
class Decoded:
    grammar: str
    parts: tuple[tuple[Part, str | None], ...]
    """Each part of the grammar with its value (its default when left out; None without one)."""


BUILTIN_GRAMMARS: tuple[Grammar, ...] = (
    # vLLM's `full` mode, and its `hash` mode (no parallelism): vllm-0.11.2-tp4-ep-a3b21f94.
    # The hash covers the serving configuration (model, revision, quantization, attention
    # backend, speculative decoding...); a degree of 1 and expert parallelism off are left out.
    Grammar.of(
        "vllm",
        r"vllm-(?P<version>\d[^-]*)(?:-tp(?P<tp>\d+))?(?:-pp(?P<pp>\d+))?(?:-dp(?P<dp>\d+))?"
        r"(?:-(?P<ep>ep))?-(?P<config_hash>[0-9a-f]{8}|nohash)",
        labels={"version": "vllm", "ep": "expert parallel"},
        opaque=["config_hash"],
        defaults={"tp": "1", "pp": "1", "dp": "1"},
        flags=["ep"],
    ),
    # DeepSeek: fp_feb633d1f5_prod0820_fp8_kvcache, a hash, the deployment, then features.
    Grammar.of(
        "deepseek",
        r"fp_(?P<build_hash>[0-9a-f]{10})_(?P<deployment>[A-Za-z]+[0-9]+)"
        r"(?:_(?P<features>[0-9A-Za-z]+(?:_[0-9A-Za-z]+)*))?",
        labels={"build_hash": "fingerprint hash"},
        opaque=["build_hash"],
        defaults={"features": "none"},
    ),
    # llama.cpp's server: its build number and the commit it was built from, b4567-1d1e6a9.
    Grammar.of(
        "llama.cpp",
        r"b(?P<build>\d+)-(?P<commit>[0-9a-f]{7,40})",
        labels={"build": "llama.cpp build"},
        opaque=["commit"],
    ),
    # SGLang's gateway stamps the worker's weight_version: `default` until weights are updated
    # under a version name (v2, 2026-05-01...). Another naming needs a fingerprint_formats entry.
    Grammar.of(
        "sglang",
        r"(?P<weight_version>default|v\d+(?:\.\d+)*(?:[-+.][0-9A-Za-z]+)*"
        r"|\d{4}-\d{2}-\d{2}(?:[T_.-][0-9A-Za-z:.-]+)?)",
    ),
)


def decode(value: str, grammars: Sequence[Grammar] = BUILTIN_GRAMMARS) -> Decoded | None:
    """The parts of `value` by the first grammar that matches it whole; None when none does."""
    if value in _STATES or len(value) > DECODE_LIMIT:
        return None
    for grammar in grammars:
        match = grammar.pattern.fullmatch(value)
        if match is not None:
            parts = tuple((part, _part_value(part, match[part.name])) for part in grammar.parts)
            return Decoded(grammar.name, parts)
    return None


def _part_value(part: Part, found: str | None) -> str | None:
    if part.flag:
        return "off" if found is None else "on"
    return part.default if found is None else found


# --- changes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartChange:
    part: str
    label: str
    before: tuple[str, ...]
    now: tuple[str, ...]
    opaque: bool


@dataclass(frozen=True)
class PartsDiff:
    """How the new values of a change differ from the values before, part by part."""

    grammar: str
    changes: tuple[PartChange, ...]

    @property
    def summary(self) -> str:
        """`vllm 0.11.2 → 0.12.0, tp 4 → 8; config hash changed`, server strings made safe to
        print."""
        moved = [
            f"{c.label} {_shown(c.before)} → {_shown(c.now)}" for c in self.changes if not c.opaque
        ]
        hidden = [f"{c.label} changed" for c in self.changes if c.opaque]
        return "; ".join(text for text in (", ".join(moved), ", ".join(hidden)) if text)


def _shown(values: tuple[str, ...]) -> str:
    return "/".join(shorten(clean(v), 40) for v in values) or "-"


def diff_parts(
    before: Iterable[str], now: Iterable[str], grammars: Sequence[Grammar] = BUILTIN_GRAMMARS
) -> PartsDiff | None:
    """Which parts the values new in `now` changed against `before`, when they are all of one
    grammar and `before` has values of it too; None otherwise (the values stay opaque)."""
    previous = frozenset(before)
    new = [decode(v, grammars) for v in sorted(frozenset(now) - previous)]
    if not new or any(d is None for d in new):
        return None
    decoded_new = [d for d in new if d is not None]
    grammar = decoded_new[0].grammar
    if any(d.grammar != grammar for d in decoded_new):
        return None
    old = [d for v in sorted(previous) if (d := decode(v, grammars)) and d.grammar == grammar]
    if not old:
        return None
    changes = []
    for index, (part, _) in enumerate(decoded_new[0].parts):
        was = _values(d.parts[index][1] for d in old)
        became = _values(d.parts[index][1] for d in decoded_new)
        if not set(became) <= set(was):
            changes.append(PartChange(part.name, part.label, was, became, part.opaque))
    return PartsDiff(grammar, tuple(changes)) if changes else None


def _values(found: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(sorted({v for v in found if v is not None}))


def explained(changes: tuple[Change, ...], grammars: Sequence[Grammar]) -> tuple[Change, ...]:
    """`changes`, each fingerprint change explained by its parts where they decode."""
    return tuple(_explained(c, tuple(grammars)) for c in changes)


def _explained(change: Change, grammars: tuple[Grammar, ...]) -> Change:
    if change.field != "fingerprint":
        return change
    parts = _known_diff_parts(change.before, change.now, grammars)
    return change if parts is None else replace(change, parts=parts)


@functools.lru_cache(maxsize=256)
def _known_diff_parts(
    before: tuple[str, ...], now: tuple[str, ...], grammars: tuple[Grammar, ...]
) -> PartsDiff | None:
    """diff_parts, remembered: recorded traffic meets the same few changes (a backend's values
    taking turns) once per response. Bounded: the values are a server's, any number of them."""
    return diff_parts(before, now, grammars)


# --- grouping what is served ----------------------------------------------------------------


@dataclass(frozen=True)
class PartsGroup:
    """Served values that share every part but their hashes: one version and topology, say,
    under several configuration hashes."""

    grammar: str
    parts: tuple[tuple[str, str], ...]
    """(label, value) of the parts that are not opaque, nor left out by the value (a default
    says nothing the others do not: vLLM's tp 1, pp 1...)."""
    values: tuple[str, ...]
    share: float


def group_by_parts(
    shares: Iterable[tuple[str, float]], grammars: Sequence[Grammar] = BUILTIN_GRAMMARS
) -> tuple[PartsGroup, ...]:
    """The decodable values of `shares` ((value, share) pairs) grouped by their parts, largest
    share first; () when no value decodes."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[list[str], list[float]]] = {}
    for value, share in shares:
        decoded = decode(value, grammars)
        if decoded is None:
            continue
        key = (
            decoded.grammar,
            tuple(
                (p.label, v)
                for p, v in decoded.parts
                if not p.opaque and v is not None and v != p.default
            ),
        )
        values, weights = groups.setdefault(key, ([], []))
        values.append(value)
        weights.append(share)
    found = [
        PartsGroup(grammar, parts, tuple(sorted(values)), sum(weights))
        for (grammar, parts), (values, weights) in groups.items()
    ]
    return tuple(sorted(found, key=lambda g: (-g.share, g.grammar, g.parts)))


# --- no signal --------------------------------------------------------------------------------


def no_signal(values: Iterable[str]) -> str | None:
    """Why these fingerprint tokens (all a target served) carry no signal, or None when they
    may: every one a null, absent or empty fingerprint, or a known constant."""
    served = frozenset(values)
    if not served:
        return None
    if served <= {NULL}:
        return "every response had a null fingerprint (vLLM's none mode sends this)"
    if served <= {ABSENT}:
        return "no response had a system_fingerprint"
    if served <= set(_STATES):
        return "no response had a fingerprint value (null, empty or missing)"
    constants = sorted(served - set(_STATES))
    if all(value in CONSTANT_FINGERPRINTS for value in constants):
        return "; ".join(f"{v} is {CONSTANT_FINGERPRINTS[v]}" for v in constants)
    return None
