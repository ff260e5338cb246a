"""The facts of a target carried from one check to the next in memory, as the history would give
them once the check is recorded: a batch of recorded responses (each its own check, all in one
transaction) reads the facts once and detects each response against what the ones before it
left, with the same results as reading them again after every one (History.facts), without the
queries.

What a recorded check changes in the facts, as History.facts reads them (every source's
known values; the previous check of the kind being made):
- each value of a successful observation is known, first seen at the observation's time if it
  was not known yet, and counted once more (fingerprints);
- a check that learns leaves its learning state (the latest by id, so the last written);
- a `new` check is the latest announcement unless one later in time is already recorded;
- a successful check is the previous one unless a later one of the same kind is recorded; when
  the previous check was not of this kind (the fallback to any source's latest), the first
  successful one of this kind replaces it, whatever its time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from fp_monitor.domain.models import (
    Announced,
    Observation,
    Status,
    TargetFacts,
    TargetResult,
)


@dataclass(frozen=True)
class RunningFacts:
    facts: TargetFacts
    own_previous: bool
    """The previous check is of the kind being made (not the latest check of any source)."""

    def after(
        self, result: TargetResult, observations: Sequence[Observation], checked_at: datetime
    ) -> RunningFacts:
        """The facts once the check of `result` (its `observations`) is recorded."""
        facts = self.facts
        # The history keeps times in UTC to the microsecond: compare and store them as read back.
        at = checked_at.astimezone(UTC)
        # Copied only when this check adds to them: most responses bring values known already.
        known = {"fingerprint": facts.known_fingerprints, "model": facts.known_models}
        first_seen = facts.first_seen
        counts = dict(facts.fingerprint_counts)
        for observation in observations:
            if not observation.ok:
                continue
            seen_at = observation.observed_at.astimezone(UTC)
            for field, value in (
                ("fingerprint", observation.fingerprint),
                ("model", observation.resolved_model),
            ):
                if value is None:
                    continue
                if value not in known[field]:
                    known[field] = known[field] | {value}
                if (field, value) not in first_seen:
                    first_seen = {**first_seen, (field, value): seen_at}
                if field == "fingerprint":
                    counts[value] = counts.get(value, 0) + 1
        # One replace for all of it: this runs once per recorded response.
        changes: dict[str, object] = {
            "known_fingerprints": known["fingerprint"],
            "known_models": known["model"],
            "first_seen": first_seen,
            "fingerprint_counts": counts,
        }
        if result.learning is not None:
            changes["latest_learning"] = result.learning
        if result.status is Status.NEW and (facts.last_new is None or at >= facts.last_new.at):
            changes["last_new"] = Announced(
                frozenset(result.fingerprints), frozenset(result.models), at
            )
        succeeded = bool(result.fingerprints or result.models)
        own_previous = self.own_previous
        if succeeded and (not own_previous or facts.previous_at is None or at >= facts.previous_at):
            own_previous = True
            changes["previous_fingerprints"] = frozenset(result.fingerprints)
            changes["previous_models"] = frozenset(result.models)
            changes["previous_headers"] = {n: frozenset(v) for n, v in result.headers.items()}
            changes["previous_at"] = at
        changed = replace(facts, **changes)  # type: ignore[arg-type]
        return RunningFacts(changed, own_previous)
