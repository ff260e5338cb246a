"""`fpmon check` as one core function: probe, detect inside the history's write transaction,
record, and derive the exit code."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from fp_monitor.config.settings import Config, Target, runtime_canary
from fp_monitor.domain.canary import CONFIRM_ROUNDS, RECENT, CanaryMode, Signature
from fp_monitor.domain.detect import detect
from fp_monitor.domain.drift import CanaryContext, judge_check, with_verdict
from fp_monitor.domain.errors import ConfigError, ExitCode, most_severe
from fp_monitor.domain.fingerprints import BUILTIN_GRAMMARS, Grammar, explained
from fp_monitor.domain.learning import (
    LearningSettings,
    LearningState,
    learning_state,
    samples_for_check,
    unseen_estimate,
)
from fp_monitor.domain.models import (
    ALL_SOURCES,
    CheckResult,
    FailOn,
    LockEntry,
    Observation,
    Source,
    Status,
    TargetFacts,
    TargetResult,
)
from fp_monitor.probe.request import DEFAULT_CONCURRENCY, check_credentials, probe
from fp_monitor.store.canary import canary_recent, canary_signatures, logprobs_refused, save_canary
from fp_monitor.store.history import History
from fp_monitor.store.lockfile import read_lock


@dataclass(frozen=True)
class CheckOptions:
    samples: int | None = None
    fail_on: FailOn = FailOn.NEW
    exit_zero: bool = False
    record: bool = True
    concurrency: int = DEFAULT_CONCURRENCY
    locked: bool = False
    """A target without a lock entry is unexpected (the CI gate's strict mode)."""
    sources: frozenset[Source] = ALL_SOURCES
    """Whose observations make the known and previous sets: probes, traffic, or both."""
    read_lock: bool = True
    """False: detect without the lock file (for `accept --probe --replace`, which rewrites a
    lock that cannot be read)."""


@dataclass(frozen=True)
class Plan:
    """What a check will probe, known before the history is opened or a request is sent."""

    targets: tuple[Target, ...]
    lock: Mapping[str, LockEntry]
    grammars: Sequence[Grammar] = BUILTIN_GRAMMARS
    """The fingerprint formats that decode a change into its parts."""


def plan_check(config: Config, names: Sequence[str], options: CheckOptions) -> Plan:
    """The named targets (all enabled when none) and the lock: a usage error here stops the
    check before anything is opened, written or spent."""
    targets = config.select(list(names))
    if not targets:
        raise ConfigError("every target is disabled (enabled = false): nothing to check")
    check_credentials(targets)
    # A broken lock stops everything before any request.
    lock = read_lock(config.baseline) if options.read_lock else {}
    return Plan(tuple(targets), lock, config.grammars)


def run_check(config: Config, names: Sequence[str], options: CheckOptions) -> CheckResult:
    """Probe the named targets (all enabled when none), record every observation, detect."""
    plan = plan_check(config, names, options)
    # The history is opened before any request: when it cannot be used, nothing is spent.
    if options.record:
        with History.open(config.history) as history:
            return run_plan(plan, options, history)
    readonly = History.open_readonly(config.history)
    try:
        return run_plan(plan, options, readonly)
    finally:
        if readonly is not None:
            readonly.close()


def run_plan(plan: Plan, options: CheckOptions, history: History | None) -> CheckResult:
    """Probe, then detect and (options.record) record in one write transaction of `history`
    (None: a dry run with no history yet)."""
    targets, lock = list(plan.targets), plan.lock
    counts = [_samples(t, history, lock, options) for t in targets]
    modes = [_canary_mode(t, history) for t in targets]
    observations = probe(targets, counts, concurrency=options.concurrency, canary=modes)
    observations = _confirm(history, lock, targets, modes, observations, options)
    checked_at = datetime.now(UTC)
    check_id = uuid.uuid4().hex
    if options.record and history is not None:
        # Detection reads the facts inside the transaction that records its result, so
        # two processes checking one target at once see each other's values.
        with history.write():
            results, learned = _detect_all(
                history, lock, targets, observations, options, checked_at, plan.grammars, modes
            )
            for result, target_observations, signatures in zip(
                results, observations, learned, strict=True
            ):
                history.append_check(check_id, checked_at, result, target_observations)
                if signatures is not None:
                    refused = any(o.logprobs_rejected for o in target_observations)
                    save_canary(history, result.name, signatures, checked_at, refused=refused)
    else:
        results, _ = _detect_all(
            history, lock, targets, observations, options, checked_at, plan.grammars, modes
        )
    return CheckResult(
        check_id=check_id,
        checked_at=checked_at,
        targets=tuple(results),
        exit_code=exit_code(results, exit_zero=options.exit_zero),
        recorded=options.record,
    )


def _samples(
    target: Target,
    history: History | None,
    lock: Mapping[str, LockEntry],
    options: CheckOptions,
) -> int:
    """Requests for this check: a learning target's first check bootstraps its served set."""
    if options.samples is not None:
        return options.samples
    facts = history.facts(target.name, options.sources) if history else TargetFacts()
    entry = lock.get(target.name)
    return samples_for_check(
        target.samples,
        settings=target.learning,
        first_check=facts.previous_fingerprints is None,
        has_lock=entry is not None,
        learning=_learning(target.learning, facts, entry, datetime.now(UTC)).learning,
    )


def _detect_all(
    history: History | None,
    lock: Mapping[str, LockEntry],
    targets: Sequence[Target],
    observations: Sequence[Sequence[Observation]],
    options: CheckOptions,
    checked_at: datetime,
    grammars: Sequence[Grammar],
    modes: Sequence[CanaryMode],
) -> tuple[list[TargetResult], list[tuple[Signature, ...] | None]]:
    """Each target's result, and the canary signatures to store (None: the canary is off)."""
    results, learned = [], []
    for target, target_observations, mode in zip(targets, observations, modes, strict=True):
        facts = history.facts(target.name, options.sources) if history else TargetFacts()
        entry = lock.get(target.name)
        result = detect_target(
            target.name,
            target_observations,
            facts,
            settings=target.learning,
            expect=target.expect,
            entry=entry,
            checked_at=checked_at,
            locked=options.locked,
            fail_on=options.fail_on,
            remind=target.remind,
            grammars=grammars,
        )
        signatures = None
        if mode is not CanaryMode.OFF:
            context = _canary_context(target.name, mode, history, entry)
            learning = _learning(target.learning, facts, entry, checked_at).learning
            verdict, signatures = judge_check(context, target_observations, learning=learning)
            result = with_verdict(result, verdict, options.fail_on)
        results.append(result)
        learned.append(signatures)
    return results, learned


def _canary_mode(target: Target, history: History | None) -> CanaryMode:
    refused = history is not None and logprobs_refused(history, target.name) is not None
    return runtime_canary(target, refused)[0]


def _canary_context(
    name: str, mode: CanaryMode, history: History | None, entry: LockEntry | None
) -> CanaryContext:
    return CanaryContext(
        mode=mode,
        signatures=canary_signatures(history, name) if history else (),
        recent=tuple(canary_recent(history, name, RECENT)) if history else (),
        locked=entry is not None,
        accepted=None if entry is None else entry.canary,
    )


def _confirm(
    history: History | None,
    lock: Mapping[str, LockEntry],
    targets: Sequence[Target],
    modes: Sequence[CanaryMode],
    observations: list[list[Observation]],
    options: CheckOptions,
) -> list[list[Observation]]:
    """A target whose canary has a suspect (one unusual response, or a window leaning away)
    takes more samples (as many as its verdict asks) in this check, up to CONFIRM_ROUNDS
    times while it stays a suspect: if they reach the configuration that changed, it is
    confirmed now."""
    now = datetime.now(UTC)
    confirmed = list(observations)
    for _ in range(CONFIRM_ROUNDS):
        suspects, sizes = [], []
        for i, (target, mode) in enumerate(zip(targets, modes, strict=True)):
            if mode is CanaryMode.OFF:
                continue
            entry = lock.get(target.name)
            facts = history.facts(target.name, options.sources) if history else TargetFacts()
            learning = _learning(target.learning, facts, entry, now).learning
            context = _canary_context(target.name, mode, history, entry)
            verdict, _ = judge_check(context, confirmed[i], learning=learning)
            if verdict.wants_confirmation:
                suspects.append(i)
                sizes.append(verdict.confirmation_samples)
        if not suspects:
            break
        more = probe(
            [targets[i] for i in suspects],
            sizes,
            concurrency=options.concurrency,
            canary=[modes[i] for i in suspects],
        )
        for i, extra in zip(suspects, more, strict=True):
            confirmed[i] = [*confirmed[i], *extra]
    return confirmed


def detect_target(
    name: str,
    observations: Sequence[Observation],
    facts: TargetFacts,
    *,
    settings: LearningSettings,
    expect: frozenset[str],
    entry: LockEntry | None,
    checked_at: datetime,
    locked: bool = False,
    fail_on: FailOn = FailOn.NEW,
    remind: float | None = None,
    grammars: Sequence[Grammar] = BUILTIN_GRAMMARS,
) -> TargetResult:
    """Detection for one target's check, learning included: what a probe's check and each
    recorded response of the application's traffic both go through. A fingerprint change
    between values that `grammars` decode is explained by their parts."""
    # Statuses follow the learning state before this check; the result reports the state
    # after it, this check's samples included.
    before = _learning(settings, facts, entry, checked_at)
    result = detect(
        name,
        observations,
        facts,
        samples=len(observations),
        expect=expect,
        lock=entry,
        locked=locked,
        learning=before.learning,
        fail_on=fail_on,
        remind=remind,
        checked_at=checked_at,
    )
    after = _learning(settings, facts, entry, checked_at, before, observations)
    learns = settings.enabled and entry is None
    # One replace for all of it: this runs once per recorded response.
    return replace(
        result,
        learning=after.learning if learns else None,
        unseen_estimate=after.unseen_estimate,
        learning_ended=learns and before.learning and not after.learning,
        changes=explained(result.changes, grammars),
    )


class ResponseDetection:
    """detect_target for one target's recorded responses, each its own check against the facts
    the ones before it left (domain.running_facts): the same results, at a fraction of the cost
    once learning is over. A successful response whose values are all known gets the result
    of the last one with the same values, headers, previous check and known sets, with its own
    latency and unseen estimate: nothing else of the result depends on the response or on the
    facts that change from one response to the next (the counts, the times, the latest `new`
    only decide learning, which is over, and the news of values that are not known)."""

    def __init__(
        self,
        name: str,
        *,
        settings: LearningSettings,
        expect: frozenset[str],
        entry: LockEntry | None,
        remind: float | None,
        grammars: Sequence[Grammar],
    ) -> None:
        self._name = name
        self._settings = settings
        self._expect = expect
        self._entry = entry
        self._remind = remind
        self._grammars = grammars
        self._learns = settings.enabled and entry is None
        self._lock_known = (entry.fingerprints, entry.models) if entry is not None else None
        self._seen: dict[tuple[object, ...], TargetResult] = {}

    def __call__(self, observation: Observation, facts: TargetFacts) -> TargetResult:
        key = self._key(observation, facts)
        seen = self._seen.get(key) if key is not None else None
        if seen is None:
            result = detect_target(
                self._name,
                [observation],
                facts,
                settings=self._settings,
                expect=self._expect,
                entry=self._entry,
                checked_at=observation.observed_at,
                remind=self._remind,
                grammars=self._grammars,
            )
            if key is not None:
                if len(self._seen) >= _SEEN_LIMIT:
                    self._seen.clear()
                self._seen[key] = result
            return result
        counts = dict(facts.fingerprint_counts)
        if observation.fingerprint is not None:
            counts[observation.fingerprint] = counts.get(observation.fingerprint, 0) + 1
        return replace(
            seen,
            latency_ms=observation.latency_ms,
            unseen_estimate=unseen_estimate(counts),
        )

    def _key(self, observation: Observation, facts: TargetFacts) -> tuple[object, ...] | None:
        """What the result depends on besides the latency and the counts; None when more does
        (a failed response, learning not over, a value not known)."""
        if not observation.ok or (self._learns and not facts.learning_ended):
            return None
        fingerprints, models = self._lock_known or (facts.known_fingerprints, facts.known_models)
        fingerprint, model = observation.fingerprint, observation.resolved_model
        expected = fingerprint in fingerprints or fingerprint in self._expect
        if fingerprint is not None and not expected:
            return None
        if model is not None and model not in models:
            return None
        return (
            fingerprint,
            model,
            tuple(sorted(observation.headers.items())),
            facts.previous_fingerprints,
            facts.previous_models,
            tuple(sorted(facts.previous_headers.items())),
            # The known sets: the result lists them, and a change's first-seen times are
            # those of values known (first seen once, as they became known).
            facts.known_fingerprints,
            facts.known_models,
        )


_SEEN_LIMIT = 1024  # results kept by a ResponseDetection: the values are a server's, any number


def _learning(
    settings: LearningSettings,
    facts: TargetFacts,
    entry: LockEntry | None,
    now: datetime,
    before: LearningState | None = None,
    observations: Sequence[Observation] = (),
) -> LearningState:
    """The learning state before the check, or after it when given the state before and the
    check's observations."""
    counts: Mapping[str, int] = facts.fingerprint_counts
    fresh = [o.fingerprint for o in observations if o.ok and o.fingerprint is not None]
    if fresh:  # else the facts' counts as they are: no copy, once per recorded response
        counts = Counter(counts)
        counts.update(fresh)
    first_success = facts.first_success_at
    if first_success is None and any(o.ok for o in observations):
        first_success = now
    # Once a check found learning over it stays over, even if this check's rare value raises
    # the estimate again: otherwise a rollout could reopen learning and pass as `learned`.
    ended = facts.learning_ended or (
        before is not None and not before.learning and facts.first_success_at is not None
    )
    return learning_state(
        counts,
        first_success_age=None if first_success is None else (now - first_success).total_seconds(),
        ended=ended,
        settings=settings,
        has_lock=entry is not None,
    )


def exit_code(results: Sequence[TargetResult], *, exit_zero: bool) -> ExitCode:
    codes = [ExitCode.UNEXPECTED for r in results if r.unexpected]
    codes += [ExitCode.PROBE_FAILED for r in results if r.status is Status.ERROR]
    code = most_severe(codes)
    if exit_zero and code in (ExitCode.UNEXPECTED, ExitCode.PROBE_FAILED):
        return ExitCode.OK
    return code
