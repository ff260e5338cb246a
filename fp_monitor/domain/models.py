"""Records that flow between the probe, the history, detection and rendering."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fp_monitor.domain.fingerprints import PartsDiff

from fp_monitor.domain.canary import CanarySample, CanaryVerdict, Signature

# A fingerprint (or resolved model) is kept as a token: the string itself, or one of these for
# the states a string cannot express. Missing, null and "" are distinct on purpose: providers
# differ, and a switch between them is a backend change.
NULL = "<null>"
ABSENT = "<absent>"
RAW_RESPONSE_LIMIT = 16 * 1024
"""Bytes of a response body kept in `Observation.raw_response`."""
ERROR_MESSAGE_LIMIT = 300


class ErrorKind(StrEnum):
    AUTH = "auth"
    NOT_FOUND = "not_found"
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    BAD_RESPONSE = "bad_response"
    MISSING_KEY = "missing_key"


class Status(StrEnum):
    ERROR = "error"
    FIRST = "first"
    NEW = "new"
    CHANGED = "changed"
    SAME = "same"
    LEARNED = "learned"
    DRIFT = "drift"
    """Every fingerprint and model is known, but the behaviour is not (the canary)."""


class Event(StrEnum):
    """What a notification is about (`on = [...]` in a [notify.NAME] table)."""

    NEW = "new"
    CHANGED = "changed"
    LEARNED = "learned"
    DRIFT = "drift"
    ERROR = "error"
    RECOVERED = "recovered"


class Source(StrEnum):
    """Where an observation came from: fpmon's own probe, or an application's real traffic."""

    PROBE = "probe"
    TRAFFIC = "traffic"


ALL_SOURCES = frozenset(Source)


class FailOn(StrEnum):
    NEW = "new"
    CHANGE = "change"
    NEVER = "never"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True)
class Observation:
    """One sample of one target: the final attempt after retries."""

    target: str
    provider: str
    base_url: str
    requested_model: str
    observed_at: datetime
    attempts: int
    latency_ms: float | None
    request_shape: str
    http_status: int | None = None
    fingerprint: str | None = None
    """Token of the fingerprint (see NULL, ABSENT); None when the sample failed."""
    resolved_model: str | None = None
    response_id: str | None = None
    request_id: str | None = None
    usage: Usage = field(default_factory=Usage)
    headers: dict[str, str] = field(default_factory=dict)
    """The target's tracked response headers (lower-cased names)."""
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    raw_response: str | None = None
    """The response body, bounded in size, kept beside the extracted fields."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """What the application said about a response of its own traffic (e.g. a user id)."""
    site: str | None = None
    """Where it was observed from (the `site` key); None in records made before sites."""
    canary: CanarySample | None = None
    """The probe's canary data of this sample (top logprobs, sampled token); None without."""
    logprobs_rejected: bool = False
    """The provider answered 400 to the logprob parameters; the sample was taken without."""

    @property
    def ok(self) -> bool:
        return self.error_kind is None


@dataclass(frozen=True)
class ProbeError:
    kind: ErrorKind
    status_code: int | None
    message: str


@dataclass(frozen=True)
class Announced:
    """The values a `new` check announced (its fingerprints and models), and when."""

    fingerprints: frozenset[str]
    models: frozenset[str]
    at: datetime


@dataclass(frozen=True)
class TargetFacts:
    """What the history knows about a target before this check (detection's input)."""

    previous_fingerprints: frozenset[str] | None = None
    previous_models: frozenset[str] | None = None
    previous_headers: dict[str, frozenset[str]] = field(default_factory=dict)
    known_fingerprints: frozenset[str] = frozenset()
    known_models: frozenset[str] = frozenset()
    first_seen: dict[tuple[str, str], datetime] = field(default_factory=dict)
    """(field, value) -> when the value was first recorded for the target."""
    fingerprint_counts: dict[str, int] = field(default_factory=dict)
    """Successful samples per fingerprint token over the target's whole history."""
    latest_learning: bool | None = None
    """The learning state the latest learning check left; None: the target never learned."""
    previous_at: datetime | None = None
    """When the previous check (see previous_fingerprints) was made."""
    last_new: Announced | None = None
    """The target's latest `new` check: what it announced, and when."""

    @property
    def learning_ended(self) -> bool:
        """Learning ended at an earlier check (it never restarts)."""
        return self.latest_learning is False

    @cached_property  # read twice per recorded response (the learning state before, after)
    def first_success_at(self) -> datetime | None:
        seen = [at for (kind, _), at in self.first_seen.items() if kind == "fingerprint"]
        return min(seen, default=None)


@dataclass(frozen=True)
class Change:
    """One row of the diff table."""

    target: str
    field: str
    before: tuple[str, ...]
    now: tuple[str, ...]
    before_first_seen: datetime | None
    parts: PartsDiff | None = None
    """A fingerprint change between decodable values: which of their parts changed."""


@dataclass(frozen=True)
class TargetResult:
    """The outcome of one target in one check."""

    name: str
    status: Status
    unexpected: bool
    fingerprints: tuple[str, ...]
    models: tuple[str, ...]
    previous: tuple[str, ...] | None
    previous_models: tuple[str, ...] | None
    known: tuple[str, ...]
    known_models: tuple[str, ...]
    samples: int
    errors: tuple[ProbeError, ...]
    latency_ms: float | None
    changes: tuple[Change, ...]
    headers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    in_lock: bool = False
    """The target has an entry in the lock file: only `fpmon accept` widens its known set."""
    learning: bool | None = None
    """After this check: still learning its served set; None when the target does not learn
    (learning = false, or a lock entry)."""
    unseen_estimate: float | None = None
    """After this check: Good-Turing estimate of the share served by values never seen."""
    news: bool = True
    """A `new` status announces its values: the target's latest `new` check (since the lock
    was last accepted) did not hold them all, or a `remind` interval has passed. False: they
    were announced already, so notifiers stay quiet (the status and exit code do not change:
    CI keeps failing until `fpmon accept`)."""
    learning_ended: bool = False
    """This check ended the target's learning: from the next one on, a value never seen is
    `new`."""
    canary: CanaryVerdict | None = None
    """What the canary said of this check; None when it is off."""


@dataclass(frozen=True)
class CheckResult:
    check_id: str
    checked_at: datetime
    targets: tuple[TargetResult, ...]
    exit_code: int
    recorded: bool


@dataclass(frozen=True)
class LockEntry:
    """A target's accepted values in fpmon.lock."""

    fingerprints: frozenset[str]
    models: frozenset[str]
    accepted_at: datetime | None = None
    canary: tuple[Signature, ...] | None = None
    """The accepted behaviour signatures; None: the entry carries none (not judged)."""


@dataclass(frozen=True)
class Window:
    """A time range of the history: `since` included, `until` excluded; None is open. Only
    the records of `sources` (fpmon's probes, an application's traffic, or both)."""

    since: datetime | None = None
    until: datetime | None = None
    sources: frozenset[Source] = ALL_SOURCES


@dataclass(frozen=True)
class CheckRecord:
    """One target's check as the history holds it."""

    id: int
    check_id: str
    target: str
    checked_at: datetime
    status: str
    fingerprints: frozenset[str] | None
    """The values of its successful samples; None when every sample failed."""
    models: frozenset[str] | None
    samples: int
    errors: int
    """Samples that failed."""

    @property
    def succeeded(self) -> bool:
        return self.fingerprints is not None


@dataclass(frozen=True)
class Recorded:
    """An observation as the history holds it, with its record id and check."""

    id: int
    check_id: str
    observation: Observation
    source: Source


@dataclass(frozen=True)
class Sample:
    """One recorded observation reduced to what stats read (one is read per sample in range)."""

    check_id: str
    fingerprint: str | None
    """Token (see NULL, ABSENT); None when the sample failed."""
    model: str | None
    error_kind: str | None
    latency_ms: float | None
    site: str | None = None
    """Where it was observed from; None in records made before sites."""


@dataclass(frozen=True)
class TargetState:
    """Where a target stands after its latest check (what the Prometheus metrics show)."""

    last_checked_at: datetime | None = None
    last_ok: bool | None = None
    """Whether the latest check had a successful sample; None before any check."""
    latency_ms: float | None = None
    """Median of the latest check's successful samples."""
    served: frozenset[tuple[str, str]] = frozenset()
    """(fingerprint, resolved model) tokens of the latest successful check."""
    status_counts: Mapping[str, int] = field(default_factory=dict)
    """Checks per status, over the whole history."""
    last_change_at: datetime | None = None
    """The latest check whose status is a change (see CHANGE_STATUSES)."""
    canary_distance: float | None = None
    """The canary's distance of the latest probe check that judged behaviour."""


CHANGE_STATUSES = (Status.FIRST, Status.NEW, Status.CHANGED, Status.LEARNED)
"""Statuses that move the served set (`first`: the set became known)."""
TRAFFIC_STATUSES = (Status.FIRST, Status.NEW, Status.LEARNED)
"""The statuses of a traffic check that notifications and metrics take like a probe's: each
comes once per value. Not `changed`: one response is one sample, so it would flip with every
response from a fleet that serves several values."""


def fingerprint_columns(token: str | None) -> tuple[str | None, str | None]:
    """Token -> (fingerprint, state): a person querying the file sees real NULLs and ''."""
    if token is None:
        return None, None
    if token == NULL:
        return None, "null"
    if token == ABSENT:
        return None, "absent"
    return token, "empty" if token == "" else "value"


def fingerprint_token(fingerprint: str | None, state: str | None) -> str | None:
    """(fingerprint, state) -> token: the inverse of `fingerprint_columns`."""
    if state == "null":
        return NULL
    if state == "absent":
        return ABSENT
    return fingerprint
