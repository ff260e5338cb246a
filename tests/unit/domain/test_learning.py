"""Learning the served set: the Good-Turing estimate, when learning starts and ends, the share
intervals, and `learned` in detection (never unexpected; a lock entry disables learning)."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fp_monitor.domain.detect import detect
from fp_monitor.domain.learning import (
    LearningSettings,
    LearningState,
    estimate_converged,
    learning_state,
    samples_for_check,
    share_interval,
    trust,
    unseen_estimate,
    unseen_probability,
)
from fp_monitor.domain.models import (
    ABSENT,
    NULL,
    FailOn,
    LockEntry,
    Observation,
    Status,
    TargetFacts,
)

DEFAULTS = LearningSettings()
MIN_100 = LearningSettings(min_samples=100)
"""The figures below are counted for 100 samples, the default before issue 16."""
DAY = 86400.0
AT = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def state(
    counts: dict[str, int],
    *,
    age: float | None = 0.0,
    ended: bool = False,
    settings: LearningSettings = DEFAULTS,
    has_lock: bool = False,
) -> LearningState:
    return learning_state(
        counts, first_success_age=age, ended=ended, settings=settings, has_lock=has_lock
    )


# --- settings ---------------------------------------------------------------------------


def test_defaults_are_the_issue_s() -> None:
    expected = LearningSettings(
        enabled=True,
        bootstrap_samples=20,
        min_samples=250,
        learning_samples=9,
        unseen=0.01,
        max_age=86400.0,
    )
    assert expected == DEFAULTS


@pytest.mark.parametrize(
    "bad",
    [
        {"bootstrap_samples": 0},
        {"bootstrap_samples": 1001},
        {"min_samples": -1},
        {"learning_samples": 0},
        {"unseen": -0.1},
        {"unseen": 1.5},
        {"unseen": math.nan},
        {"max_age": -1.0},
        {"max_age": math.nan},
    ],
    ids=repr,
)
def test_impossible_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"bootstrap_samples|learn_"):
        LearningSettings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 1000])
def test_bootstrap_bounds_are_inclusive(n: int) -> None:
    assert LearningSettings(bootstrap_samples=n).bootstrap_samples == n


# --- the Good-Turing estimate on handcrafted histories ----------------------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"fp_a": 1}, 1.0),  # one sample: all we know is one value seen once
        ({"fp_a": 2}, 0.0),
        ({"fp_a": 8, "fp_b": 1, "fp_c": 1}, 0.2),  # two singletons in ten samples
        ({"fp_a": 50, "fp_b": 25, "fp_c": 15, "fp_d": 7, "fp_e": 3}, 0.0),
        ({"fp_a": 60, "fp_b": 38, "fp_c": 1, "fp_d": 1}, 0.02),
        ({"fp_a": 99, "fp_b": 1}, 0.01),
        ({"fp_a": 199, "fp_b": 1}, 0.005),
        ({NULL: 1, ABSENT: 1, "": 1, "fp_a": 1}, 1.0),  # the four value states are four values
        ({"fp_a": 3, "fp_never": 0}, 0.0),  # a zero count is a value not seen
    ],
)
def test_good_turing_estimate(counts: dict[str, int], expected: float) -> None:
    assert unseen_estimate(counts) == pytest.approx(expected)
    assert state(counts).unseen_estimate == pytest.approx(expected)
    assert state(counts).samples == sum(counts.values())


def test_no_sample_gives_no_estimate() -> None:
    assert unseen_estimate({}) is None
    assert unseen_estimate({"fp_a": 0}) is None
    assert state({}, age=None) == LearningState(learning=True, samples=0, unseen_estimate=None)


def test_negative_counts_are_a_bug() -> None:
    with pytest.raises(ValueError, match="negative"):
        unseen_estimate({"fp_a": -1})


# --- learning: start, end by samples + estimate, end by age, never restarts -------------


def test_a_new_target_is_learning() -> None:
    assert state({}, age=None).learning
    assert state({"fp_a": 15, "fp_b": 5}, age=0.0).learning


def test_end_needs_both_min_samples_and_a_low_estimate() -> None:
    # Enough samples and nothing seen once: ended.
    assert not state({"fp_a": 80, "fp_b": 20}, settings=MIN_100).learning
    # A low estimate on too few samples: still learning (a rare value is simply not seen yet).
    assert state({"fp_a": 79, "fp_b": 20}, settings=MIN_100).learning
    assert unseen_estimate({"fp_a": 79, "fp_b": 20}) == 0.0
    # Enough samples but a singleton: 1/100 is not strictly below 0.01.
    assert state({"fp_a": 79, "fp_b": 20, "fp_c": 1}, settings=MIN_100).learning
    # One more sample brings 1/101 below 0.01: ended.
    assert not state({"fp_a": 80, "fp_b": 20, "fp_c": 1}, settings=MIN_100).learning


def test_the_unseen_threshold_is_strict() -> None:
    settings = LearningSettings(min_samples=10, unseen=0.1)
    assert state({"fp_a": 9, "fp_b": 1}, settings=settings).learning  # 0.1 is not < 0.1
    assert not state({"fp_a": 10, "fp_b": 1}, settings=settings).learning  # 1/11 < 0.1


def test_min_samples_is_inclusive() -> None:
    settings = LearningSettings(min_samples=50)
    assert not state({"fp_a": 50}, settings=settings).learning
    assert state({"fp_a": 49}, settings=settings).learning


def test_learn_max_ends_learning_regardless_of_the_estimate() -> None:
    counts = {"fp_a": 5, "fp_b": 1}  # few samples, high estimate
    assert state(counts, age=DAY - 1).learning
    assert not state(counts, age=DAY).learning  # from the first success, inclusive
    assert not state(counts, age=10 * DAY).learning
    assert state(counts, age=599.0, settings=LearningSettings(max_age=600.0)).learning
    assert not state(counts, age=600.0, settings=LearningSettings(max_age=600.0)).learning


def test_no_success_yet_is_not_timed_out() -> None:
    assert state({}, age=None, settings=LearningSettings(max_age=0.0)).learning


def test_ended_never_restarts_even_when_the_estimate_rises() -> None:
    converged = {"fp_a": 80, "fp_b": 20}
    assert not state(converged, settings=MIN_100).learning
    # A rare value appears afterwards: the estimate rises above the threshold again...
    later = {**converged, "fp_rare": 1, "fp_rarer": 1}
    assert unseen_estimate(later) == pytest.approx(2 / 102)
    assert not estimate_converged(later, MIN_100)
    # ...but learning ended at an earlier check and stays ended.
    assert not state(later, ended=True, settings=MIN_100).learning
    assert state(
        later, ended=False, settings=MIN_100
    ).learning  # (what a restart would have looked like)


def test_disabled_is_never_learning() -> None:
    off = LearningSettings(enabled=False)
    for counts in ({}, {"fp_a": 1}, {"fp_a": 3, "fp_b": 1, "fp_c": 1}):
        for age in (None, 0.0, 60.0):
            result = state(counts, age=age, settings=off)
            assert not result.learning
            assert result.unseen_estimate == unseen_estimate(counts)


def test_a_lock_entry_is_never_learning() -> None:
    assert not state({}, age=None, has_lock=True).learning
    assert not state({"fp_a": 1}, has_lock=True).learning


# --- bootstrap ---------------------------------------------------------------------------


def test_bootstrap_sample_count() -> None:
    def n(**kwargs: bool) -> int:
        args = {"first_check": True, "has_lock": False, "explicit": False, **kwargs}
        return samples_for_check(3, settings=settings, **args)

    settings = DEFAULTS
    assert n() == 20
    assert n(first_check=False) == 3
    assert n(first_check=False, learning=True) == 9  # learn_samples while learning
    assert n(first_check=False, learning=True, has_lock=True) == 3
    assert n(has_lock=True) == 3  # the lock decides: no learning, no bootstrap
    assert n(explicit=True) == 3  # an explicit --samples overrides bootstrap_samples
    settings = LearningSettings(enabled=False)
    assert n() == 3
    settings = LearningSettings(bootstrap_samples=7)
    assert n() == 7


# --- share intervals and the probability of an unseen configuration ---------------------


def wilson_by_hand(count: int, total: int) -> tuple[float, float]:
    """The textbook formula, written out separately, z = 1.96."""
    z2 = 1.96**2
    p = count / total
    centre = (count + z2 / 2) / (total + z2)
    half = 1.96 * math.sqrt(total) / (total + z2) * math.sqrt(p * (1 - p) + z2 / (4 * total))
    return centre - half, centre + half


@pytest.mark.parametrize(
    ("count", "total", "low", "high"),
    [
        # Reference values worked by hand: z^2 = 3.8416, for n = 10 the denominator 13.8416.
        (0, 10, 0.0, 0.277540),  # 3.8416 / 13.8416
        (5, 10, 0.236590, 0.763410),  # 0.5 -+ 1.96 / 1.38416 * sqrt(0.025 + 0.009604)
        (10, 10, 0.722460, 1.0),
        (1, 1, 0.206543, 1.0),
        (80, 100, 0.711169, 0.866634),
        (3, 100, 0.010254, 0.084521),
    ],
)
def test_wilson_interval_known_values(count: int, total: int, low: float, high: float) -> None:
    got = share_interval(count, total)
    assert got == pytest.approx((low, high), abs=1e-6)
    assert got == pytest.approx(wilson_by_hand(count, total), abs=1e-12)


def test_wilson_interval_with_no_sample_is_everything() -> None:
    assert share_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("count", "total"), [(-1, 10), (11, 10), (0, -1)])
def test_wilson_interval_refuses_impossible_counts(count: int, total: int) -> None:
    with pytest.raises(ValueError):
        share_interval(count, total)


def test_a_wider_z_gives_a_wider_interval() -> None:
    low95, high95 = share_interval(30, 100)
    low99, high99 = share_interval(30, 100, z=2.576)
    assert low99 < low95 < 0.3 < high95 < high99


@pytest.mark.parametrize(
    ("share", "samples", "expected"),
    [
        (0.03, 0, 1.0),
        (0.03, 1, 0.97),
        (0.03, 100, 0.047553),
        (0.03, 161, 0.007417),
        (0.07, 100, 0.000705),
        (0.5, 3, 0.125),
        (0.0, 1000, 1.0),
        (1.0, 1, 0.0),
    ],
)
def test_unseen_probability(share: float, samples: int, expected: float) -> None:
    assert unseen_probability(share, samples) == pytest.approx(expected, abs=1e-6)


def test_unseen_probability_refuses_impossible_input() -> None:
    with pytest.raises(ValueError):
        unseen_probability(1.5, 10)
    with pytest.raises(ValueError):
        unseen_probability(0.5, -1)


# --- properties -------------------------------------------------------------------------

counts_strategy = st.dictionaries(
    st.text(min_size=0, max_size=12), st.integers(min_value=0, max_value=10_000), max_size=20
)


@given(counts_strategy)
def test_estimate_is_a_share(counts: dict[str, int]) -> None:
    estimate = unseen_estimate(counts)
    if sum(counts.values()) == 0:
        assert estimate is None
    else:
        assert estimate is not None
        assert 0.0 <= estimate <= 1.0


@given(st.integers(min_value=0, max_value=100_000), st.data())
def test_interval_contains_the_share_and_stays_in_0_1(total: int, data: st.DataObject) -> None:
    count = data.draw(st.integers(min_value=0, max_value=total))
    z = data.draw(st.floats(min_value=0.0, max_value=5.0))
    low, high = share_interval(count, total, z)
    share = count / total if total else 0.5
    assert 0.0 <= low <= share <= high <= 1.0


@given(
    counts_strategy,
    st.one_of(st.none(), st.floats(min_value=0, max_value=10 * DAY)),
    st.booleans(),
)
def test_learning_is_the_documented_formula(
    counts: dict[str, int], age: float | None, ended: bool
) -> None:
    result = state(counts, age=age, ended=ended)
    samples = sum(counts.values())
    estimate = unseen_estimate(counts)
    converged = samples >= DEFAULTS.min_samples and estimate is not None and estimate < 0.01
    timed_out = age is not None and age >= DAY
    assert result.learning == (not ended and not converged and not timed_out)
    assert result.samples == samples


# --- detection: `learned` is never unexpected, and a lock entry disables learning -------


def obs(fingerprint: str, model: str = "m-1") -> Observation:
    return Observation(
        target="t",
        provider="custom",
        base_url="http://127.0.0.1:9/v1",
        requested_model="m",
        observed_at=AT,
        attempts=1,
        latency_ms=10.0,
        request_shape="shape",
        http_status=200,
        fingerprint=fingerprint,
        resolved_model=model,
    )


KNOWN = TargetFacts(
    previous_fingerprints=frozenset({"fp_a"}),
    previous_models=frozenset({"m-1"}),
    known_fingerprints=frozenset({"fp_a", "fp_b"}),
    known_models=frozenset({"m-1"}),
)


@pytest.mark.parametrize("fail_on", list(FailOn))
@pytest.mark.parametrize(
    "samples",
    [
        [obs("fp_a"), obs("fp_rare")],  # a fingerprint outside the known set
        [obs("fp_a", "m-2")],  # a resolved model outside its known set
        [obs(NULL), obs(ABSENT), obs("")],  # value states outside the known set
    ],
    ids=["fingerprint", "model", "states"],
)
def test_learned_is_never_unexpected(fail_on: FailOn, samples: list[Observation]) -> None:
    result = detect("t", samples, KNOWN, samples=len(samples), learning=True, fail_on=fail_on)
    assert result.status is Status.LEARNED
    assert not result.unexpected
    # The same check after learning: `new`, unexpected except under --fail-on never.
    after = detect("t", samples, KNOWN, samples=len(samples), learning=False, fail_on=fail_on)
    assert after.status is Status.NEW
    assert after.unexpected == (fail_on is not FailOn.NEVER)


@pytest.mark.parametrize("fail_on", list(FailOn))
def test_learning_keeps_same_and_changed(fail_on: FailOn) -> None:
    same = detect("t", [obs("fp_a")], KNOWN, samples=1, learning=True, fail_on=fail_on)
    assert same.status is Status.SAME
    changed = detect("t", [obs("fp_b")], KNOWN, samples=1, learning=True, fail_on=fail_on)
    assert changed.status is Status.CHANGED
    assert changed.unexpected == (fail_on is FailOn.CHANGE)


@pytest.mark.parametrize("fail_on", [FailOn.NEW, FailOn.CHANGE])
def test_a_lock_entry_disables_learning(fail_on: FailOn) -> None:
    lock = LockEntry(frozenset({"fp_a"}), frozenset({"m-1"}), AT)
    # learning_state says "not learning" for a locked target...
    assert not state({"fp_a": 1}, has_lock=True).learning
    # ...and even a caller that passes learning=True gets `new`: the lock decides.
    result = detect(
        "t", [obs("fp_a"), obs("fp_b")], KNOWN, samples=2, lock=lock, learning=True, fail_on=fail_on
    )
    assert result.status is Status.NEW
    assert result.unexpected


def test_bootstrap_check_is_first_then_learned_then_new() -> None:
    """A short life: bootstrap, a rare value while learning, learning ends, a rollout."""
    settings = LearningSettings(bootstrap_samples=5, min_samples=8, unseen=0.1)
    counts: Counter[str] = Counter()
    facts = TargetFacts()
    ended = False
    statuses = []
    checks = [
        ["fp_a", "fp_a", "fp_b", "fp_a", "fp_b"],  # bootstrap
        ["fp_a", "fp_rare", "fp_a"],  # learning: fp_rare is learned (estimate 1/8 after)
        ["fp_rare", "fp_a", "fp_b"],  # 11 samples, nothing seen once: learning ends after this
        ["fp_a", "fp_rollout", "fp_a"],  # a real rollout: new
    ]
    for i, values in enumerate(checks):
        before = state(counts, age=None if i == 0 else 1800.0 * i, ended=ended, settings=settings)
        result = detect(
            "t", [obs(v) for v in values], facts, samples=len(values), learning=before.learning
        )
        statuses.append((result.status, before.learning))
        counts.update(values)
        after = state(counts, age=1800.0 * i, ended=ended, settings=settings)
        ended = ended or not after.learning
        facts = TargetFacts(
            previous_fingerprints=frozenset(values),
            previous_models=frozenset({"m-1"}),
            known_fingerprints=facts.known_fingerprints | frozenset(values),
            known_models=frozenset({"m-1"}),
        )
    assert statuses == [
        (Status.FIRST, True),
        (Status.LEARNED, True),
        (Status.CHANGED, True),
        (Status.NEW, False),
    ]


def test_trust_figures_for_stats() -> None:
    figures = trust({"fp_a": 8, "fp_b": 2, "fp_c": 0}, learning=True)
    assert (figures.learning, figures.samples, figures.unseen_estimate) == (True, 10, 0.0)
    assert [(v.value, v.samples) for v in figures.values] == [("fp_a", 8), ("fp_b", 2)]
    low, high = share_interval(8, 10)
    assert (figures.values[0].low, figures.values[0].high) == (low, high)
    assert figures.still_unseen[0] == (0.01, pytest.approx(0.99**10))
    assert [s for s, _ in figures.still_unseen] == [0.01, 0.02, 0.05, 0.10]
    empty = trust({}, learning=None)
    assert (empty.samples, empty.unseen_estimate, empty.values) == (0, None, ())
