"""The canary in detection: a check's canary verdict, judged against the lock or the history,
and what it does to the check's status (`drift`) and its diff (a `behaviour` row).

Pure: the target's signatures and samples in, the verdict, the result and the signatures to
store out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from fp_monitor.domain.canary import (
    CanaryMode,
    CanarySample,
    CanaryStatus,
    CanaryVerdict,
    Signature,
    judge,
)
from fp_monitor.domain.models import Change, FailOn, Observation, Status, TargetResult

BEHAVIOUR = "behaviour"
"""The diff table's field of a drift."""


@dataclass(frozen=True)
class CanaryContext:
    """What the canary of one target knows before a check."""

    mode: CanaryMode
    """LOGPROBS or SAMPLED: the mode of this check's probe."""
    signatures: tuple[Signature, ...] = ()
    """Learned in the history (updated by every recorded check)."""
    recent: tuple[CanarySample, ...] = ()
    """The latest stored samples, oldest first."""
    locked: bool = False
    """The target has a lock entry: the lock judges, and nothing is learned as `learned`."""
    accepted: tuple[Signature, ...] | None = None
    """The lock entry's signatures; None when it accepts none (behaviour is not judged)."""


def canary_samples(observations: Sequence[Observation]) -> list[CanarySample]:
    return [o.canary for o in observations if o.ok and o.canary is not None]


def judge_check(
    context: CanaryContext, observations: Sequence[Observation], *, learning: bool
) -> tuple[CanaryVerdict, tuple[Signature, ...]]:
    """The verdict of one check (from the lock when the target has an entry) and the
    history's signatures after it."""
    samples = canary_samples(observations)
    learned = judge(
        context.signatures,
        samples,
        mode=context.mode,
        learning=learning and not context.locked,
        recent=context.recent,
    )
    if not context.locked:
        return learned.verdict, learned.signatures
    if context.accepted is None:
        unjudged = replace(
            learned.verdict,
            status=CanaryStatus.UNLOCKED,
            known=(),
            p_value=None,
            distance=None,
            noise=None,
            drifted=None,
        )
        return unjudged, learned.signatures
    locked = judge(
        context.accepted, samples, mode=context.mode, learning=False, recent=context.recent
    )
    return locked.verdict, learned.signatures


def with_verdict(result: TargetResult, verdict: CanaryVerdict, fail_on: FailOn) -> TargetResult:
    """The check's result with its canary verdict: `drift` where every fingerprint and model
    is known (same or changed) but the behaviour is not; `new` wins, and so do `first`,
    `learned` and `error`."""
    if verdict.status is not CanaryStatus.DRIFT or result.status not in (
        Status.SAME,
        Status.CHANGED,
    ):
        return replace(result, canary=verdict)
    change = Change(result.name, BEHAVIOUR, verdict.known, (describe_drift(verdict),), None)
    return replace(
        result,
        status=Status.DRIFT,
        unexpected=fail_on is not FailOn.NEVER,
        changes=(*result.changes, change),
        canary=verdict,
    )


def describe_drift(verdict: CanaryVerdict) -> str:
    """The new behaviour, with how far it is and how unlikely under the known ones."""
    figures = []
    if verdict.distance is not None and verdict.mode is CanaryMode.LOGPROBS:
        figures.append(f"distance {verdict.distance:.3f} nats")
        if verdict.noise:
            figures.append(f"{verdict.distance / verdict.noise:.0f}x the noise")
    elif verdict.distance is not None:
        figures.append(f"total variation {verdict.distance:.2f}")
    if verdict.p_value is not None:
        figures.append(f"p {verdict.p_value:.1e}")
    shown = verdict.drifted or "?"
    return f"{shown} ({', '.join(figures)})" if figures else shown


@dataclass(frozen=True)
class CanaryStats:
    """What `fpmon stats` shows of a target's canary over a time range."""

    mode: str
    """Of the latest judged check."""
    checks: int
    """Checks in the range with a canary verdict."""
    statuses: Mapping[str, int]
    """Checks per canary status (drift, suspect, known, ...)."""
    known: int
    """Behaviour signatures known now (unconfirmed ones left out)."""
    latest: str
    latest_p: float | None
    latest_distance: float | None


def canary_stats(
    verdicts: Sequence[Mapping[str, object]], signatures: Sequence[Signature]
) -> CanaryStats | None:
    """The figures of stored verdicts (oldest first, as `verdict_data` wrote them)."""
    if not verdicts:
        return None
    last = verdicts[-1]
    p, distance = last.get("p_value"), last.get("distance")
    return CanaryStats(
        mode=str(last.get("mode")),
        checks=len(verdicts),
        statuses=dict(Counter(str(v.get("status")) for v in verdicts)),
        known=sum(not s.candidate for s in signatures),
        latest=str(last.get("status")),
        latest_p=p if isinstance(p, float) else None,
        latest_distance=distance if isinstance(distance, float) else None,
    )
