"""Collapsing checks into runs, on handcrafted histories: flaps, errors in between, errors
before the first success, and the newest runs over several targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fp_monitor.domain.models import CheckRecord
from fp_monitor.domain.timeline import Run, newest_runs, runs_newest_first

T0 = datetime(2026, 11, 1, tzinfo=UTC)
FAILED = None


def history(
    *checks: tuple[set[str], set[str]] | None,
    target: str = "grok",
    samples: int = 3,
    start: datetime = T0,
) -> list[CheckRecord]:
    """One check an hour, oldest first: (fingerprints, models) for a success (one failed
    sample when the fingerprint set contains "+err"), FAILED when every sample failed."""
    records = []
    for n, values in enumerate(checks):
        failed = values is None or "+err" in values[0]
        fingerprints = None if values is None else frozenset(values[0] - {"+err"})
        records.append(
            CheckRecord(
                id=n + 1,
                check_id=f"c{n}",
                target=target,
                checked_at=start + timedelta(hours=n),
                status="same",
                fingerprints=fingerprints,
                models=None if values is None else frozenset(values[1]),
                samples=samples,
                errors=samples if values is None else int(failed),
            )
        )
    return records


def runs(records: list[CheckRecord]) -> list[Run]:
    """Runs oldest first, the way a person reads a timeline."""
    return list(runs_newest_first(reversed(records)))[::-1]


def summary(run: Run) -> tuple[tuple[str, ...], int, int, int, int, int]:
    """(fingerprints, first hour, last hour, checks, observations, errors)."""
    first = int((run.first_seen - T0) / timedelta(hours=1))
    last = int((run.last_seen - T0) / timedelta(hours=1))
    return run.fingerprints, first, last, run.checks, run.observations, run.errors


A, B, M = {"fp_a"}, {"fp_b"}, {"m-1"}


def test_equal_consecutive_checks_collapse_into_one_run() -> None:
    found = runs(history((A, M), (A, M), (A, M)))
    assert [summary(r) for r in found] == [(("fp_a",), 0, 2, 3, 9, 0)]
    assert found[0].models == ("m-1",) and found[0].target == "grok"


def test_a_flap_is_three_runs() -> None:
    found = runs(history((A, M), (A, M), (B, M), (A, M), (A, M)))
    assert [summary(r) for r in found] == [
        (("fp_a",), 0, 1, 2, 6, 0),
        (("fp_b",), 2, 2, 1, 3, 0),
        (("fp_a",), 3, 4, 2, 6, 0),
    ]


def test_sets_collapse_only_when_equal_not_when_overlapping() -> None:
    found = runs(history((A | B, M), (A | B, M), (A, M), (A | B, M)))
    assert [r.fingerprints for r in found] == [("fp_a", "fp_b"), ("fp_a",), ("fp_a", "fp_b")]


def test_a_model_change_alone_starts_a_run() -> None:
    found = runs(history((A, M), (A, {"m-2"}), (A, {"m-2"})))
    assert [(r.fingerprints, r.models, r.checks) for r in found] == [
        (("fp_a",), ("m-1",), 1),
        (("fp_a",), ("m-2",), 2),
    ]


def test_failed_checks_in_between_do_not_end_a_run_and_are_counted() -> None:
    found = runs(history((A, M), FAILED, FAILED, (A, M), (A | {"+err"}, M)))
    # five checks: 3 + 3 + 2 successful samples, 3 + 3 + 1 failed ones
    assert [summary(r) for r in found] == [(("fp_a",), 0, 4, 5, 8, 7)]


def test_failures_between_two_runs_belong_to_the_run_being_served() -> None:
    found = runs(history((A, M), FAILED, (B, M), FAILED))
    assert [summary(r) for r in found] == [
        (("fp_a",), 0, 0, 2, 3, 3),
        (("fp_b",), 2, 2, 2, 3, 3),
    ]


def test_a_run_goes_on_after_failures_that_ended_it_in_reading_order() -> None:
    # Read newest first, the failures come before the older checks of the run they belong to.
    found = runs(history((A, M), (A, M), FAILED, (B, M)))
    assert [summary(r) for r in found] == [(("fp_a",), 0, 1, 3, 6, 3), (("fp_b",), 3, 3, 1, 3, 0)]


def test_failures_before_the_first_success_are_a_run_without_values() -> None:
    found = runs(history(FAILED, FAILED, (A, M)))
    assert [summary(r) for r in found] == [((), 0, 1, 2, 0, 6), (("fp_a",), 2, 2, 1, 3, 0)]
    assert found[0].models == ()


def test_only_failures_is_one_run_without_values() -> None:
    assert [summary(r) for r in runs(history(FAILED, FAILED))] == [((), 0, 1, 2, 0, 6)]


def test_no_checks_no_runs() -> None:
    assert runs([]) == []


def test_runs_are_produced_lazily_newest_first() -> None:
    consumed = []

    def newest_first() -> object:
        for check in reversed(history((A, M), (B, M), (A, M), (A, M))):
            consumed.append(check.id)
            yield check

    newest = next(runs_newest_first(newest_first()))  # type: ignore[arg-type]
    assert newest.fingerprints == ("fp_a",) and newest.checks == 2
    assert consumed == [4, 3, 2]  # stopped one check past the run's start


def test_newest_runs_over_targets_by_last_seen_oldest_first() -> None:
    grok = history((A, M), (B, M), (A, M))  # runs last seen at 0:00, 1:00, 2:00
    half_past = T0 + timedelta(minutes=30)
    other = history((A, M), (A, M), (A, M), (B, M), target="other", start=half_past)
    streams = [runs_newest_first(reversed(grok)), runs_newest_first(reversed(other))]
    found = newest_runs(streams, limit=3)
    assert [(r.target, r.last_seen - T0) for r in found] == [
        ("grok", timedelta(hours=2)),
        ("other", timedelta(hours=2, minutes=30)),
        ("other", timedelta(hours=3, minutes=30)),
    ]
    assert len(newest_runs([runs_newest_first(reversed(grok))], limit=50)) == 3
