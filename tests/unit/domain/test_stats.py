"""Stats figures on a handcrafted history, computed by hand in the comments."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from fp_monitor.domain.models import NULL, CheckRecord, Sample
from fp_monitor.domain.stats import SERVED_CHECKS, Cell, Share, percentile, target_stats

T0 = datetime(2026, 11, 1, tzinfo=UTC)
S, N, X = Cell.SERVED, Cell.NOT_SERVED, Cell.NO_CHECK

# (day, status, samples as (fingerprint or error kind, latency)); one check a day.
HISTORY: list[tuple[int, str, list[tuple[str, float | None]]]] = [
    (0, "first", [("fp_a", 100.0), ("fp_a", 200.0)]),
    (1, "same", [("fp_a", 300.0), ("!timeout", None)]),
    (2, "new", [("fp_b", 400.0), ("fp_b", 500.0)]),
    (3, "changed", [("fp_a", 600.0), ("fp_a", 700.0)]),
    (4, "error", [("!server", 20.0), ("!server", 30.0)]),
    (5, "new", [("fp_c", 800.0), ("fp_b", 900.0)]),
]


def build(
    history: list[tuple[int, str, list[tuple[str, float | None]]]],
) -> tuple[list[CheckRecord], list[Sample]]:
    checks, samples = [], []
    for n, (day, status, drawn) in enumerate(history):
        ok = {fp for fp, _ in drawn if not fp.startswith("!")}
        checks.append(
            CheckRecord(
                id=n + 1,
                check_id=f"c{n}",
                target="grok",
                checked_at=T0 + timedelta(days=day),
                status=status,
                fingerprints=frozenset(ok) if ok else None,
                models=frozenset({"m-1"}) if ok else None,
                samples=len(drawn),
                errors=sum(fp.startswith("!") for fp, _ in drawn),
            )
        )
        for value, latency in drawn:
            failed = value.startswith("!")
            samples.append(
                Sample(
                    check_id=f"c{n}",
                    fingerprint=None if failed else value,
                    model=None if failed else "m-1",
                    error_kind=value[1:] if failed else None,
                    latency_ms=latency,
                )
            )
    return checks, samples


def test_figures_of_a_handcrafted_history() -> None:
    checks, samples = build(HISTORY)
    stats = target_stats("grok", checks, samples, start=T0, end=T0 + timedelta(days=6), cells=6)
    assert (stats.checks, stats.successful_checks, stats.observations) == (6, 5, 12)
    assert stats.fingerprints == ("fp_a", "fp_b", "fp_c")
    assert stats.models == ("m-1",)
    # All 5 successful checks are among the latest 10: a in 5, b in 3, c in 1 of 9 samples.
    assert stats.served_checks == 5
    assert stats.served_fingerprints == (
        Share("fp_a", pytest.approx(5 / 9)),
        Share("fp_b", pytest.approx(3 / 9)),
        Share("fp_c", pytest.approx(1 / 9)),
    )
    assert stats.served_models == (Share("m-1", 1.0),)
    # `new` on day 2 and day 5: one gap of 3 days.
    assert (stats.new_events, stats.median_between_new) == (2, timedelta(days=3))
    # One `changed` among 5 successful checks.
    assert (stats.changed, stats.flap_rate) == (1, pytest.approx(0.2))
    # 3 of 12 samples failed: 2 server, 1 timeout.
    assert (stats.errors, stats.error_rate) == (3, pytest.approx(0.25))
    assert stats.errors_by_kind == (("server", 2), ("timeout", 1))
    # Latencies of the 9 successful samples, 100..900 ms: nearest ranks 5 and 9.
    assert (stats.latency_p50_ms, stats.latency_p95_ms) == (500.0, 900.0)


def test_timeline_marks_served_checked_without_and_unchecked_cells() -> None:
    checks, samples = build(HISTORY)
    stats = target_stats("grok", checks, samples, start=T0, end=T0 + timedelta(days=6), cells=6)
    rows = {row.value: row.cells for row in stats.timeline.rows}
    assert list(rows) == ["fp_a", "fp_b", "fp_c"]  # in order of appearance
    # day 4 failed entirely: nobody knows what was served then
    assert rows["fp_a"] == (S, S, N, S, X, N)
    assert rows["fp_b"] == (N, N, S, N, X, S)
    assert rows["fp_c"] == (N, N, N, N, X, S)
    assert (stats.timeline.start, stats.timeline.end) == (T0, T0 + timedelta(days=6))


def test_served_now_counts_only_the_latest_successful_checks() -> None:
    old = [(day, "same", [("fp_old", 10.0)]) for day in range(2)]
    latest = [(day, "same", [("fp_new", 10.0), (NULL, 10.0)]) for day in range(2, 2 + 10)]
    failed = [(12, "error", [("!timeout", None)])]
    checks, samples = build(old + latest + failed)
    stats = target_stats("grok", checks, samples, start=T0, end=T0 + timedelta(days=13))
    assert SERVED_CHECKS == 10 and stats.served_checks == 10
    assert stats.served_fingerprints == (Share(NULL, 0.5), Share("fp_new", 0.5))
    assert stats.fingerprints == ("fp_old", NULL, "fp_new")


def test_no_success_and_no_samples_give_no_rates() -> None:
    checks, samples = build([(0, "error", [("!auth", None)])])
    stats = target_stats("grok", checks, samples, start=T0, end=T0)
    assert (stats.flap_rate, stats.error_rate) == (None, 1.0)
    assert (stats.latency_p50_ms, stats.median_between_new) == (None, None)
    assert stats.served_fingerprints == () and stats.timeline.rows == ()
    empty = target_stats("grok", [], [], start=T0, end=T0)
    assert (empty.error_rate, empty.flap_rate, empty.checks) == (None, None, 0)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, None),
        ([7.0], 95, 7.0),
        ([1.0, 2.0], 50, 1.0),
        ([float(v) for v in range(1, 101)], 95, 95.0),
        ([float(v) for v in range(1, 101)], 50, 50.0),
        ([float(v) for v in range(1, 21)], 95, 19.0),
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


def test_each_site_has_its_own_served_now() -> None:
    checks, samples = build(HISTORY)
    # Days 0-3 from eu, day 5 from us (day 4 failed everywhere).
    sited = [dataclasses.replace(s, site="us" if s.check_id == "c5" else "eu") for s in samples]
    sited.append(Sample("c3", "fp_a", "m-1", None, 1.0, site=None))  # recorded before sites
    stats = target_stats("grok", checks, sited, start=T0, end=T0 + timedelta(days=6))
    by_site = {s.site: s for s in stats.sites}
    assert list(by_site) == ["eu", "us", None]  # by name, records without a site last
    # eu: 7 successful samples: a 5, b 2; us: c 1, b 1.
    assert by_site["eu"].samples == 7
    assert by_site["eu"].fingerprints == (
        Share("fp_a", pytest.approx(5 / 7)),
        Share("fp_b", pytest.approx(2 / 7)),
    )
    assert by_site["us"].fingerprints == (Share("fp_b", 0.5), Share("fp_c", 0.5))
    assert by_site["us"].only_here == ("fp_c",)  # served at us, at no other site
    assert by_site["eu"].only_here == ()  # fp_a is served at the site-less records too
    assert by_site[None].samples == 1


def test_a_site_counts_only_its_own_latest_checks() -> None:
    history = [(day, "same", [("fp_old" if day < 2 else "fp_new", 1.0)]) for day in range(14)]
    checks, samples = build(history)
    # eu checks every day, us only on the first two: its served-now is still its own.
    sited = [
        dataclasses.replace(s, site="us" if s.check_id in ("c0", "c1") else "eu") for s in samples
    ]
    stats = target_stats("grok", checks, sited, start=T0, end=T0 + timedelta(days=14))
    by_site = {s.site: s for s in stats.sites}
    assert by_site["us"].fingerprints == (Share("fp_old", 1.0),)
    assert by_site["eu"].samples == SERVED_CHECKS
    assert by_site["us"].only_here == ("fp_old",)


def test_one_site_has_nothing_only_here() -> None:
    checks, samples = build(HISTORY)
    stats = target_stats(
        "grok",
        checks,
        [dataclasses.replace(s, site="eu") for s in samples],
        start=T0,
        end=T0 + timedelta(days=6),
    )
    assert [(s.site, s.only_here) for s in stats.sites] == [("eu", ())]
