"""Detection: observations + history facts + lock -> status, diff rows, errors, latency."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fp_monitor.domain.detect import detect
from fp_monitor.domain.models import (
    ABSENT,
    NULL,
    Announced,
    Change,
    ErrorKind,
    FailOn,
    LockEntry,
    Observation,
    ProbeError,
    Status,
    TargetFacts,
    TargetResult,
)

NAME = "grok"
AT = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
DAY1 = datetime(2026, 1, 1, tzinfo=UTC)
DAY2 = datetime(2026, 1, 2, tzinfo=UTC)
DAY3 = datetime(2026, 1, 3, tzinfo=UTC)


def obs(
    fingerprint: str = "fp_a",
    model: str = "m-1",
    *,
    latency: float | None = 100.0,
    headers: dict[str, str] | None = None,
) -> Observation:
    """A successful sample."""
    return Observation(
        target=NAME,
        provider="xai",
        base_url="https://api.x.ai/v1",
        requested_model="grok-4",
        observed_at=AT,
        attempts=1,
        latency_ms=latency,
        request_shape="shape",
        http_status=200,
        fingerprint=fingerprint,
        resolved_model=model,
        headers=headers or {},
    )


def fail(
    kind: ErrorKind = ErrorKind.SERVER,
    status: int | None = 500,
    message: str = "upstream exploded",
    latency: float | None = 5000.0,
) -> Observation:
    """A failed sample (its final attempt)."""
    return Observation(
        target=NAME,
        provider="xai",
        base_url="https://api.x.ai/v1",
        requested_model="grok-4",
        observed_at=AT,
        attempts=3,
        latency_ms=latency,
        request_shape="shape",
        http_status=status,
        error_kind=kind,
        error_message=message,
    )


def facts(
    previous: Iterable[str] | None = None,
    previous_models: Iterable[str] | None = None,
    known: Iterable[str] = (),
    known_models: Iterable[str] = (),
    previous_headers: dict[str, Iterable[str]] | None = None,
    first_seen: dict[tuple[str, str], datetime] | None = None,
) -> TargetFacts:
    """History facts; previous models default to {m-1} when there is a previous check."""
    if previous is not None and previous_models is None:
        previous_models = ("m-1",)
    return TargetFacts(
        previous_fingerprints=None if previous is None else frozenset(previous),
        previous_models=None if previous_models is None else frozenset(previous_models),
        previous_headers={k: frozenset(v) for k, v in (previous_headers or {}).items()},
        known_fingerprints=frozenset(known),
        known_models=frozenset(known_models),
        first_seen=first_seen or {},
    )


def seen(previous: Iterable[str], models: Iterable[str] = ("m-1",)) -> TargetFacts:
    """A target whose previous check served `previous`, and which knows only those values."""
    return facts(previous, models, known=previous, known_models=models)


def run(observations: list[Observation], history: TargetFacts, **kwargs: object) -> TargetResult:
    kwargs.setdefault("samples", len(observations))
    return detect(NAME, observations, history, **kwargs)  # type: ignore[arg-type]


def lock(fingerprints: Iterable[str], models: Iterable[str] = ("m-1",)) -> LockEntry:
    return LockEntry(frozenset(fingerprints), frozenset(models), DAY1)


# --- the status table, fingerprints -----------------------------------------------------


def test_first_check() -> None:
    result = run([obs("fp_a"), obs("fp_b")], facts())
    assert result.status is Status.FIRST
    assert not result.unexpected
    assert result.previous is None
    assert result.fingerprints == ("fp_a", "fp_b")
    assert result.changes == ()


def test_same() -> None:
    result = run([obs("fp_a"), obs("fp_a")], seen({"fp_a", "fp_b"}))
    assert result.status is Status.SAME
    assert not result.unexpected
    assert result.previous == ("fp_a", "fp_b")


def test_changed_is_a_flap_among_known_values() -> None:
    history = facts({"fp_a"}, known={"fp_a", "fp_b"}, known_models={"m-1"})
    result = run([obs("fp_b")], history)
    assert result.status is Status.CHANGED
    assert not result.unexpected
    assert result.known == ("fp_a", "fp_b")


def test_new_is_a_value_outside_the_known_set() -> None:
    history = facts({"fp_a"}, known={"fp_a", "fp_b"}, known_models={"m-1"})
    result = run([obs("fp_a"), obs("fp_c")], history)
    assert result.status is Status.NEW
    assert result.unexpected
    assert result.fingerprints == ("fp_a", "fp_c")


def test_error_when_every_sample_failed() -> None:
    observations = [
        fail(ErrorKind.SERVER, 503, "overloaded"),
        fail(ErrorKind.TIMEOUT, None, "no complete answer within 30s"),
    ]
    result = run(observations, seen({"fp_a"}))
    assert result.status is Status.ERROR
    assert not result.unexpected
    assert result.fingerprints == ()
    assert result.models == ()
    assert result.errors == (
        ProbeError(ErrorKind.SERVER, 503, "overloaded"),
        ProbeError(ErrorKind.TIMEOUT, None, "no complete answer within 30s"),
    )
    assert result.latency_ms is None
    assert result.changes == ()


def test_error_on_the_first_check() -> None:
    result = run([fail(ErrorKind.MISSING_KEY, None, "XAI_API_KEY is not set")], facts())
    assert result.status is Status.ERROR
    assert result.errors[0].kind is ErrorKind.MISSING_KEY


# --- the status table, resolved models --------------------------------------------------


def test_first_models() -> None:
    result = run([obs(model="gpt-4o-2024-08-06")], facts())
    assert result.status is Status.FIRST
    assert result.models == ("gpt-4o-2024-08-06",)


def test_same_model() -> None:
    result = run([obs(model="m-1")], seen({"fp_a"}, {"m-1", "m-2"}))
    assert result.status is Status.SAME


def test_changed_model_among_known() -> None:
    history = facts({"fp_a"}, {"m-1"}, known={"fp_a"}, known_models={"m-1", "m-2"})
    result = run([obs("fp_a", "m-2")], history)
    assert result.status is Status.CHANGED
    assert result.previous_models == ("m-1",)


def test_new_model_with_a_known_fingerprint() -> None:
    result = run([obs("fp_a", "m-2")], seen({"fp_a"}, {"m-1"}))
    assert result.status is Status.NEW
    assert result.unexpected
    assert result.known_models == ("m-1",)


def test_error_ignores_models() -> None:
    result = run([fail()], seen({"fp_a"}, {"m-1"}))
    assert result.status is Status.ERROR
    assert result.models == ()


# --- the four value states --------------------------------------------------------------

STATES = (NULL, ABSENT, "", "fp_6ca29cf396")


@pytest.mark.parametrize(("before", "now"), list(itertools.permutations(STATES, 2)), ids=repr)
def test_value_states_are_distinct(before: str, now: str) -> None:
    result = run([obs(now)], seen({before}))
    assert result.status is Status.NEW
    assert result.unexpected


@pytest.mark.parametrize(("before", "now"), list(itertools.permutations(STATES, 2)), ids=repr)
def test_switch_between_known_states_is_changed(before: str, now: str) -> None:
    history = facts({before}, known=STATES, known_models={"m-1"})
    assert run([obs(now)], history).status is Status.CHANGED


@pytest.mark.parametrize("state", STATES, ids=repr)
def test_each_state_equals_itself(state: str) -> None:
    result = run([obs(state), obs(state)], seen({state}))
    assert result.status is Status.SAME
    assert result.fingerprints == (state,)


def test_empty_string_fingerprint_is_kept_as_a_value() -> None:
    result = run([obs(""), obs(NULL), obs(ABSENT)], facts())
    assert set(result.fingerprints) == {"", NULL, ABSENT}


# --- partial failure --------------------------------------------------------------------


def test_partial_failure_status_from_successes_errors_listed() -> None:
    observations = [obs("fp_a"), fail(ErrorKind.RATE_LIMITED, 429, "slow down"), obs("fp_a")]
    result = run(observations, seen({"fp_a"}))
    assert result.status is Status.SAME
    assert not result.unexpected
    assert result.fingerprints == ("fp_a",)
    assert result.errors == (ProbeError(ErrorKind.RATE_LIMITED, 429, "slow down"),)
    assert result.samples == 3


def test_partial_failure_with_a_new_value_is_new() -> None:
    result = run([obs("fp_z"), fail()], seen({"fp_a"}))
    assert result.status is Status.NEW
    assert result.unexpected
    assert len(result.errors) == 1


def test_samples_is_the_number_requested() -> None:
    assert run([obs()], facts(), samples=5).samples == 5


# --- --fail-on --------------------------------------------------------------------------

SCENARIOS: dict[str, tuple[list[Observation], TargetFacts]] = {
    "new": ([obs("fp_new")], seen({"fp_a"})),
    "changed": ([obs("fp_b")], facts({"fp_a"}, known={"fp_a", "fp_b"}, known_models={"m-1"})),
    "same": ([obs("fp_a")], seen({"fp_a"})),
    "first": ([obs("fp_a")], facts()),
    "error": ([fail()], seen({"fp_a"})),
}


@pytest.mark.parametrize(
    ("scenario", "fail_on", "unexpected"),
    [
        ("new", FailOn.NEW, True),
        ("new", FailOn.CHANGE, True),
        ("new", FailOn.NEVER, False),
        ("changed", FailOn.NEW, False),
        ("changed", FailOn.CHANGE, True),
        ("changed", FailOn.NEVER, False),
        ("same", FailOn.NEW, False),
        ("same", FailOn.CHANGE, False),
        ("same", FailOn.NEVER, False),
        ("first", FailOn.NEW, False),
        ("first", FailOn.CHANGE, False),
        ("error", FailOn.NEW, False),
        ("error", FailOn.CHANGE, False),
    ],
)
def test_fail_on(scenario: str, fail_on: FailOn, unexpected: bool) -> None:
    observations, history = SCENARIOS[scenario]
    result = run(observations, history, fail_on=fail_on)
    assert result.status.value == scenario
    assert result.unexpected is unexpected


def test_fail_on_default_is_new() -> None:
    observations, history = SCENARIOS["new"]
    assert run(observations, history).unexpected
    observations, history = SCENARIOS["changed"]
    assert not run(observations, history).unexpected


# --- the lock and expect ----------------------------------------------------------------


def test_lock_replaces_the_history_known_set() -> None:
    # History has seen fp_b, but the lock accepts only fp_a: fp_b is new again.
    history = facts({"fp_a"}, known={"fp_a", "fp_b"}, known_models={"m-1", "m-2"})
    result = run([obs("fp_b")], history, lock=lock({"fp_a"}))
    assert result.status is Status.NEW
    assert result.unexpected
    assert result.known == ("fp_a",)


def test_lock_replaces_the_history_known_models() -> None:
    history = facts({"fp_a"}, {"m-1"}, known={"fp_a"}, known_models={"m-1", "m-2"})
    result = run([obs("fp_a", "m-2")], history, lock=lock({"fp_a"}, {"m-1"}))
    assert result.status is Status.NEW
    assert result.known_models == ("m-1",)


def test_lock_widens_beyond_history() -> None:
    history = seen({"fp_a"})
    result = run([obs("fp_b")], history, lock=lock({"fp_a", "fp_b"}))
    assert result.status is Status.CHANGED
    assert not result.unexpected


def test_lock_is_the_previous_set_without_an_earlier_success() -> None:
    result = run([obs("fp_a")], facts(), lock=lock({"fp_a", "fp_b"}))
    assert result.status is Status.SAME
    assert result.previous == ("fp_a", "fp_b")
    assert result.previous_models == ("m-1",)


def test_lock_without_history_and_an_unlocked_value_is_new() -> None:
    result = run([obs("fp_c")], facts(), lock=lock({"fp_a"}))
    assert result.status is Status.NEW
    assert result.unexpected


def test_history_previous_wins_over_the_lock_as_previous() -> None:
    result = run([obs("fp_b")], seen({"fp_a", "fp_b"}), lock=lock({"fp_a", "fp_b"}))
    assert result.status is Status.SAME
    result = run([obs("fp_b")], seen({"fp_a"}), lock=lock({"fp_a", "fp_b"}))
    assert result.status is Status.CHANGED


def test_locked_without_a_lock_entry_is_new() -> None:
    result = run([obs("fp_a")], seen({"fp_a"}), locked=True)
    assert result.status is Status.NEW
    assert result.unexpected


def test_locked_first_check_without_a_lock_entry_is_new() -> None:
    assert run([obs("fp_a")], facts(), locked=True).status is Status.NEW


def test_locked_with_a_lock_entry_is_judged_normally() -> None:
    result = run([obs("fp_a")], seen({"fp_a"}), lock=lock({"fp_a"}), locked=True)
    assert result.status is Status.SAME


def test_expect_widens_the_known_set() -> None:
    history = seen({"fp_a"})
    assert run([obs("fp_b")], history).status is Status.NEW
    result = run([obs("fp_b")], history, expect=frozenset({"fp_b"}))
    assert result.status is Status.CHANGED
    assert not result.unexpected
    assert result.known == ("fp_a", "fp_b")


def test_expect_widens_the_lock() -> None:
    result = run([obs("fp_b")], seen({"fp_a"}), lock=lock({"fp_a"}), expect=frozenset({"fp_b"}))
    assert result.status is Status.CHANGED


# --- diff rows --------------------------------------------------------------------------


def test_diff_row_per_changed_field() -> None:
    history = facts(
        {"fp_b", "fp_a"},
        {"m-1"},
        known={"fp_a", "fp_b", "fp_c"},
        known_models={"m-1", "m-2"},
        first_seen={
            ("fingerprint", "fp_a"): DAY2,
            ("fingerprint", "fp_b"): DAY1,
            ("fingerprint", "fp_c"): DAY3,
            ("model", "m-1"): DAY3,
        },
    )
    result = run([obs("fp_c", "m-2"), obs("fp_b", "m-2")], history)
    assert result.status is Status.CHANGED
    assert result.changes == (
        Change(NAME, "fingerprint", ("fp_a", "fp_b"), ("fp_b", "fp_c"), DAY1),
        Change(NAME, "model", ("m-1",), ("m-2",), DAY3),
    )


def test_only_the_changed_field_gets_a_row() -> None:
    history = facts({"fp_a"}, {"m-1"}, known={"fp_a"}, known_models={"m-1", "m-2"})
    result = run([obs("fp_a", "m-2")], history)
    assert [c.field for c in result.changes] == ["model"]


def test_before_first_seen_is_none_when_history_has_no_date() -> None:
    history = facts({"fp_a"}, known={"fp_a", "fp_b"}, known_models={"m-1"})
    (change,) = run([obs("fp_b")], history).changes
    assert change.before_first_seen is None


def test_a_new_value_gets_a_diff_row() -> None:
    history = seen({"fp_a"})
    history = dataclasses.replace(history, first_seen={("fingerprint", "fp_a"): DAY1})
    result = run([obs("fp_new")], history)
    assert result.changes == (Change(NAME, "fingerprint", ("fp_a",), ("fp_new",), DAY1),)


def test_a_subset_of_the_previous_set_is_same_without_a_diff_row() -> None:
    result = run([obs("fp_a")], seen({"fp_a", "fp_b", "fp_c"}, {"m-1", "m-2"}))
    assert result.status is Status.SAME
    assert result.changes == ()


def test_tracked_header_change_gets_a_diff_row() -> None:
    history = facts(
        {"fp_a"}, known={"fp_a"}, known_models={"m-1"}, previous_headers={"server": {"nginx/1"}}
    )
    result = run([obs(headers={"server": "nginx/2"})], history)
    assert result.changes == (Change(NAME, "header server", ("nginx/1",), ("nginx/2",), None),)
    assert result.headers == {"server": ("nginx/2",)}


def test_unchanged_tracked_header_gets_no_row() -> None:
    history = facts(
        {"fp_a"}, known={"fp_a"}, known_models={"m-1"}, previous_headers={"server": {"nginx/1"}}
    )
    result = run([obs(headers={"server": "nginx/1"})], history)
    assert result.changes == ()


def test_no_diff_rows_on_a_first_check() -> None:
    assert run([obs("fp_a", headers={"server": "x"})], facts()).changes == ()


# --- latency ----------------------------------------------------------------------------


def test_latency_is_the_median_of_successes() -> None:
    observations = [obs(latency=10.0), obs(latency=90.0), fail(latency=5.0), obs(latency=20.0)]
    assert run(observations, facts()).latency_ms == 20.0


def test_latency_median_of_an_even_count() -> None:
    assert run([obs(latency=10.0), obs(latency=20.0)], facts()).latency_ms == 15.0


# --- properties -------------------------------------------------------------------------

FINGERPRINTS = st.sampled_from([NULL, ABSENT, "", "fp_a", "fp_b", "fp_c"])
MODELS = st.sampled_from(["m-1", "m-2", "m-3"])
FAILURES = st.builds(
    fail,
    st.sampled_from(list(ErrorKind)),
    st.sampled_from([None, 429, 500, 503]),
    st.sampled_from(["a", "b"]),
    st.sampled_from([None, 1.0, 2.0]),
)
FACTS = st.builds(
    facts,
    st.none() | st.frozensets(FINGERPRINTS, min_size=1),
    st.none() | st.frozensets(MODELS, min_size=1),
    st.frozensets(FINGERPRINTS),
    st.frozensets(MODELS),
)
LOCKS = st.none() | st.builds(lock, st.frozensets(FINGERPRINTS), st.frozensets(MODELS))


@given(data=st.data())
def test_never_new_when_every_value_is_known(data: st.DataObject) -> None:
    history = data.draw(FACTS)
    entry = data.draw(LOCKS)
    expect = data.draw(st.frozensets(FINGERPRINTS))
    # The known set K = lock entry + expect with a lock entry; otherwise all recorded + expect.
    known = (entry.fingerprints if entry else history.known_fingerprints) | expect
    known_models = entry.models if entry else history.known_models
    successes: st.SearchStrategy[Observation] = st.nothing()
    if known and known_models:
        successes = st.builds(
            obs,
            st.sampled_from(sorted(known)),
            st.sampled_from(sorted(known_models)),
            latency=st.floats(0, 1e4),
        )
    observations = data.draw(st.lists(successes | FAILURES, min_size=1, max_size=8))
    locked = entry is not None and data.draw(st.booleans())
    result = run(observations, history, expect=expect, lock=entry, locked=locked)
    assert result.status is not Status.NEW
    assert not result.unexpected


def _comparable(result: TargetResult) -> TargetResult:
    # Errors are listed in sample order; as a multiset they must not depend on it.
    return dataclasses.replace(result, errors=tuple(sorted(result.errors, key=repr)))


@given(data=st.data())
def test_order_of_observations_never_changes_the_result(data: st.DataObject) -> None:
    successes = st.builds(
        obs,
        FINGERPRINTS,
        MODELS,
        latency=st.none() | st.floats(0, 1e4),
        headers=st.dictionaries(st.sampled_from(["server"]), st.sampled_from(["s1", "s2"])),
    )
    observations = data.draw(st.lists(successes | FAILURES, min_size=1, max_size=8))
    shuffled = data.draw(st.permutations(observations))
    history = data.draw(FACTS)
    entry = data.draw(LOCKS)
    expect = data.draw(st.frozensets(FINGERPRINTS))
    locked = data.draw(st.booleans())
    fail_on = data.draw(st.sampled_from(list(FailOn)))
    kwargs = {"expect": expect, "lock": entry, "locked": locked, "fail_on": fail_on}
    first = run(observations, history, **kwargs)
    again = run(list(shuffled), history, **kwargs)
    assert _comparable(first) == _comparable(again)


# --- news: a `new` announces its values once (and again with `remind`) ----------------------

HOUR = 3600.0
ROLLED_AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def rolled_out(previous_at: datetime | None) -> TargetFacts:
    """Locked to fp_a (accepted on DAY1); fp_r was recorded and announced by a `new` check at
    ROLLED_AT and is still unaccepted."""
    first_seen = {("fingerprint", "fp_r"): ROLLED_AT, ("model", "m-1"): DAY1}
    announced = Announced(frozenset({"fp_r"}), frozenset({"m-1"}), ROLLED_AT)
    return dataclasses.replace(
        facts({"fp_r"}, first_seen=first_seen), previous_at=previous_at, last_new=announced
    )


def test_a_value_recorded_for_the_first_time_is_news() -> None:
    result = run([obs("fp_r")], facts({"fp_a"}), lock=lock({"fp_a"}))
    assert result.status is Status.NEW and result.news


def test_a_value_announced_before_is_new_but_not_news() -> None:
    later = ROLLED_AT.replace(hour=11)
    result = run([obs("fp_r")], rolled_out(later), lock=lock({"fp_a"}), checked_at=later)
    assert result.status is Status.NEW and result.unexpected and not result.news


def test_another_unaccepted_value_is_news_again() -> None:
    later = ROLLED_AT.replace(hour=11)
    result = run([obs("fp_s")], rolled_out(later), lock=lock({"fp_a"}), checked_at=later)
    assert result.status is Status.NEW and result.news


def test_a_value_is_news_again_after_an_accept_that_left_it_out() -> None:
    later = ROLLED_AT.replace(hour=11)
    accepted = LockEntry(frozenset({"fp_a"}), frozenset({"m-1"}), ROLLED_AT.replace(minute=30))
    result = run([obs("fp_r")], rolled_out(later), lock=accepted, checked_at=later)
    assert result.status is Status.NEW and result.news


@pytest.mark.parametrize(
    ("previous_hours", "now_hours", "due"),
    [(23, 23.5, False), (23, 24, True), (24, 25, False), (47, 48.5, True), (1, 49, True)],
)
def test_remind_is_due_once_per_interval(
    previous_hours: float, now_hours: float, due: bool
) -> None:
    def at(hours: float) -> datetime:
        return datetime.fromtimestamp(ROLLED_AT.timestamp() + hours * HOUR, UTC)

    history = rolled_out(at(previous_hours))
    result = run(
        [obs("fp_r")], history, lock=lock({"fp_a"}), remind=24 * HOUR, checked_at=at(now_hours)
    )
    assert result.news is due
