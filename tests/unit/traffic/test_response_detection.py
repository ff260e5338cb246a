"""ResponseDetection, what the traffic paths detect each recorded response with, gives what
detect_target gives, field for field, on random sequences of responses: learning and after it,
a lock entry, `expect`, errors, the four fingerprint states, header changes, spans out of order;
and it takes its shortcut for most of them once learning is over."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from fp_monitor import check
from fp_monitor.check import ResponseDetection, detect_target
from fp_monitor.domain.fingerprints import BUILTIN_GRAMMARS
from fp_monitor.domain.learning import LearningSettings
from fp_monitor.domain.models import (
    ABSENT,
    NULL,
    ErrorKind,
    LockEntry,
    Observation,
    Status,
    TargetFacts,
)
from fp_monitor.domain.running_facts import RunningFacts
from tests.unit.store.test_history import T0, obs

FINGERPRINTS = ("fp_a", "fp_b", "fp_c", "vllm-0.11.2-tp4-a3b21f94", "vllm-0.12.0-tp8-a3b21f94",
                "", NULL, ABSENT)  # fmt: skip
LOCK = LockEntry(frozenset({"fp_a", "", NULL}), frozenset({"m-1"}), accepted_at=T0)
SETTINGS = {
    "learning": LearningSettings(min_samples=30, unseen=0.2),
    "no learning": LearningSettings(enabled=False),
    "learning for long": LearningSettings(),
}


def responses(seed: int, count: int = 600) -> list[Observation]:
    """Mostly a few values taking turns, sometimes another one, an error, a header flap, a
    response earlier than the one before."""
    rng = random.Random(seed)
    seen = []
    for n in range(count):
        at = n + (rng.uniform(-3, 0) if rng.random() < 0.2 else 0)
        common: dict[str, Any] = {
            "target": "app",
            "at": T0 + timedelta(seconds=at),
            "headers": {"x-backend": "b2" if rng.random() < 0.05 else "b1"},
            "latency": rng.choice((None, rng.uniform(1, 900))),
        }
        if rng.random() < 0.05:
            seen.append(obs(None, None, error=rng.choice(list(ErrorKind)), **common))
            continue
        rare = rng.random() < 0.03
        fingerprint = rng.choice(FINGERPRINTS if rare else FINGERPRINTS[:3])
        model = rng.choice(("m-1", "m-2") if rare else ("m-1",))
        seen.append(obs(fingerprint, model, **common))
    return seen


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("entry", [None, LOCK], ids=["unlocked", "locked"])
@pytest.mark.parametrize("expect", [frozenset(), frozenset({"fp_b"})], ids=["", "expect"])
def test_response_detection_is_detect_target(
    seed: int,
    settings: LearningSettings,
    entry: LockEntry | None,
    expect: frozenset[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full_detections = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        full_detections.append(1)
        return detect_target(*args, **kwargs)

    monkeypatch.setattr(check, "detect_target", counted)
    detection = ResponseDetection(
        "app", settings=settings, expect=expect, entry=entry, remind=3.0,
        grammars=BUILTIN_GRAMMARS,
    )  # fmt: skip
    running = RunningFacts(TargetFacts(), own_previous=False)
    sequence = responses(seed)
    statuses = set()
    for observation in sequence:
        at = observation.observed_at
        result = detection(observation, running.facts)
        expected = detect_target(
            "app",
            [observation],
            running.facts,
            settings=settings,
            expect=expect,
            entry=entry,
            checked_at=at,
            remind=3.0,
            grammars=BUILTIN_GRAMMARS,
        )
        assert result == expected
        statuses.add(result.status)
        running = running.after(result, [observation], at)
    assert {Status.SAME, Status.CHANGED, Status.ERROR} <= statuses
    assert statuses & {Status.NEW, Status.LEARNED}
    # The shortcut taken: for most responses where nothing is learned and every value is
    # accepted (no learning, no lock: each value known once seen), for some in every case.
    assert len(full_detections) < len(sequence)
    if not settings.enabled and entry is None:
        assert len(full_detections) < len(sequence) / 3
