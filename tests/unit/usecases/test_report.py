"""`fpmon report`'s parts without a server: the buckets and error periods (domain), the SQL
aggregates on histories recorded by the real detection (store), and the page (output)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fp_monitor.check import detect_target
from fp_monitor.config.history_url import history_location
from fp_monitor.config.settings import load_config
from fp_monitor.domain.learning import LearningSettings
from fp_monitor.domain.models import (
    ALL_SOURCES,
    NULL,
    Change,
    ErrorKind,
    LockEntry,
    Source,
    Window,
)
from fp_monitor.domain.report import (
    MAX_BUCKETS,
    Band,
    BandKind,
    Buckets,
    ChainState,
    Report,
    Run,
    TargetReport,
    choose_buckets,
    error_periods,
    runs,
)
from fp_monitor.output.html_report import UPLOT_VERSION, asset, render_report
from fp_monitor.reading import read_stats
from fp_monitor.report import build_report
from fp_monitor.store.history import History
from fp_monitor.store.report_queries import (
    change_events,
    check_counts,
    learning_phase,
    sample_counts,
)
from tests.unit.store.test_history import obs, record

T0 = datetime(2026, 11, 29, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
HOSTILE = ["<script>window.pwned=1</script>", '"><img src=x onerror="window.pwned=1">']


# --- buckets, runs, error periods -------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "size"),
    [
        (timedelta(seconds=10), 1),
        (timedelta(hours=2), 60),
        (timedelta(days=7), 3600),
        (timedelta(days=30), 3 * 3600),
        (timedelta(days=90), 6 * 3600),
        (timedelta(days=365), 86400),
    ],
)
def test_the_bucket_is_the_finest_that_keeps_the_range_readable(span: timedelta, size: int) -> None:
    start = T0 + timedelta(minutes=7, seconds=3)
    buckets = choose_buckets(start, start + span)
    assert buckets.size == size
    assert buckets.count <= MAX_BUCKETS
    assert buckets.start <= start and buckets.end >= start + span
    assert buckets.start.timestamp() % size == 0  # 6-hour buckets start at 00, 06, 12, 18


def test_years_of_history_get_whole_days_per_bucket() -> None:
    buckets = choose_buckets(T0, T0 + timedelta(days=20 * 365))
    assert buckets.size % 86400 == 0 and buckets.size > 7 * 86400
    assert buckets.count <= MAX_BUCKETS and buckets.end >= T0 + timedelta(days=20 * 365)


def test_runs_are_the_stretches_with_samples() -> None:
    assert runs([0, 2, 3, 0, 0, 1]) == (Run(1, 2, 5), Run(5, 5, 1))
    assert runs([4]) == (Run(0, 0, 4),)
    assert runs([0, 0]) == ()


def test_error_periods_join_the_kinds_of_consecutive_buckets() -> None:
    buckets = Buckets(T0, 3600, 6)
    timeouts = Band(BandKind.ERROR, "timeout", (0, 2, 0, 0, 1, 0))
    server = Band(BandKind.ERROR, "server", (0, 1, 3, 0, 0, 0))
    first, second = error_periods(buckets, [timeouts, server])
    assert (first.start, first.end, first.failed) == (T0 + HOUR, T0 + 3 * HOUR, 6)
    assert first.kinds == (("server", 4), ("timeout", 2))
    assert (second.start, second.end, second.kinds) == (
        T0 + 4 * HOUR,
        T0 + 5 * HOUR,
        (("timeout", 1),),
    )


# --- the queries, on histories recorded by detection -----------------------------------------


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    with History.open(tmp_path / "history.db") as opened:
        yield opened


@pytest.fixture
def any_history(history_url: str) -> Iterator[History]:
    """The history on each store (SQLite, then PostgreSQL): the queries are the same there."""
    with History.open(history_location(history_url, "test")) as opened:
        yield opened


def check(
    history: History,
    at: datetime,
    fingerprints: list[str],
    *,
    target: str = "grok",
    failed: int = 0,
    model: str = "m-1",
    source: Source = Source.PROBE,
) -> None:
    samples = [obs(fp, model, target=target, at=at) for fp in fingerprints]
    samples += [obs(target=target, at=at, error=ErrorKind.TIMEOUT) for _ in range(failed)]
    record(history, samples, target=target, at=at, source=source)


def test_samples_are_counted_per_bucket_and_value(any_history: History) -> None:
    check(any_history, T0, ["fp_a", "fp_a", "fp_b"])
    check(any_history, T0 + HOUR, ["fp_b"], failed=2)
    check(any_history, T0 + 3 * HOUR, [NULL], model="m-2")
    buckets = Buckets(T0, 3600, 4)
    lock = LockEntry(frozenset({"fp_a"}), frozenset({"m-1"}))
    counts = sample_counts(any_history, "grok", Window(), buckets, lock)
    assert counts.ok == (3, 1, 0, 1)
    assert [(b.kind, b.value, b.counts, b.locked) for b in counts.bands] == [
        (BandKind.FINGERPRINT, "fp_a", (2, 0, 0, 0), True),
        (BandKind.FINGERPRINT, "fp_b", (1, 1, 0, 0), False),
        (BandKind.FINGERPRINT, NULL, (0, 0, 0, 1), False),
        (BandKind.MODEL, "m-1", (3, 1, 0, 0), True),
        (BandKind.MODEL, "m-2", (0, 0, 0, 1), False),
        (BandKind.ERROR, "timeout", (0, 2, 0, 0), False),
    ]


def test_sources_and_ranges_filter_the_counts(any_history: History) -> None:
    check(any_history, T0, ["fp_a"])
    check(any_history, T0 + HOUR, ["fp_t"], source=Source.TRAFFIC)
    buckets = Buckets(T0, 3600, 2)
    traffic = sample_counts(
        any_history, "grok", Window(sources=frozenset({Source.TRAFFIC})), buckets, None
    )
    assert [(b.value, b.counts) for b in traffic.bands if b.kind is BandKind.FINGERPRINT] == [
        ("fp_t", (0, 1))
    ]
    later = sample_counts(any_history, "grok", Window(since=T0 + HOUR), buckets, None)
    assert later.ok == (0, 1)


def test_the_counts_read_covering_indexes_not_the_rows(history: History) -> None:
    for hour in range(3):
        check(history, T0 + hour * HOUR, ["fp_a"] if hour % 2 else ["fp_b"])
    traced: list[str] = []
    history._db.set_trace_callback(traced.append)
    window = Window(since=T0, sources=frozenset({Source.PROBE}))
    sample_counts(history, "grok", window, Buckets(T0, 3600, 3), None)
    check_counts(history, "grok", window)
    change_events(history, "grok", window, limit=2)
    history._db.set_trace_callback(None)
    plans = {
        query: " ".join(row[3] for row in history._db.execute(f"EXPLAIN QUERY PLAN {query}"))
        for query in traced
    }
    (counts,) = [plan for query, plan in plans.items() if "GROUP BY bucket" in query]
    assert "COVERING INDEX observations_report" in counts
    (statuses,) = [plan for query, plan in plans.items() if "GROUP BY status" in query]
    assert "COVERING INDEX checks_report" in statuses
    (newest,) = [plan for query, plan in plans.items() if "WHERE id IN (SELECT" in query]
    assert "COVERING INDEX checks_report" in newest


def test_check_counts_agree_with_stats(history: History, tmp_path: Path) -> None:
    check(history, T0, ["fp_a"])
    check(history, T0 + HOUR, ["fp_b"])  # new
    check(history, T0 + 2 * HOUR, [], failed=1)  # error
    check(history, T0 + 3 * HOUR, ["fp_a"])  # changed
    counts = check_counts(history, "grok", Window(since=T0))
    (stats,) = read_stats(tmp_path / "history.db", "grok", T0, T0 + 4 * HOUR)
    assert counts.checks == stats.checks == 4
    assert counts.successful == stats.successful_checks == 3
    assert counts.new_events == stats.new_events == 1
    assert counts.latest_status == "changed"
    assert counts.last_change_at == T0 + 3 * HOUR


def test_change_events_carry_the_diff_the_check_printed(any_history: History) -> None:
    check(any_history, T0, ["fp_a"])
    check(any_history, T0 + HOUR, [], failed=1)
    with any_history.write():  # as `fpmon check` records it, to compare with what it printed
        observations = [obs("fp_b", "m-2", at=T0 + 2 * HOUR, headers={"server": "b"})]
        facts = any_history.facts("grok")
        printed = detect_target(
            "grok",
            observations,
            facts,
            settings=LearningSettings(enabled=False),
            expect=frozenset(),
            entry=None,
            checked_at=T0 + 2 * HOUR,
        )
        any_history.append_check(uuid.uuid4().hex, T0 + 2 * HOUR, printed, observations)
    newest, first = change_events(any_history, "grok", Window(), limit=10)
    assert check_counts(any_history, "grok", Window()).changes == 2
    assert (newest.status, newest.checked_at, newest.source) == ("new", T0 + 2 * HOUR, Source.PROBE)
    assert newest.changes == printed.changes
    assert [c.field for c in newest.changes] == ["fingerprint", "model", "header server"]
    assert newest.changes[0] == Change("grok", "fingerprint", ("fp_a",), ("fp_b",), T0)
    assert (first.status, first.changes) == ("first", ())
    assert change_events(any_history, "grok", Window(), limit=1) == (newest,)


def test_the_learning_phase_runs_from_the_first_learning_check_to_its_end(
    any_history: History,
) -> None:
    settings = LearningSettings(min_samples=3, unseen=0.5, bootstrap_samples=1)
    assert learning_phase(any_history, "grok") is None
    for hour, values in enumerate((["fp_a"], ["fp_a", "fp_b"], ["fp_a", "fp_b"], ["fp_a"])):
        at = T0 + hour * HOUR
        observations = [obs(v, at=at) for v in values]
        with any_history.write():
            result = detect_target(
                "grok",
                observations,
                any_history.facts("grok"),
                settings=settings,
                expect=frozenset(),
                entry=None,
                checked_at=at,
            )
            any_history.append_check(uuid.uuid4().hex, at, result, observations)
    phase = learning_phase(any_history, "grok")
    assert phase is not None
    assert phase.start == T0
    assert phase.end is not None and T0 < phase.end <= T0 + 3 * HOUR


# --- the use case --------------------------------------------------------------------------------


def test_a_report_is_built_from_the_range_with_the_lock_and_the_chain(
    history: History, tmp_path: Path, isolated: Path
) -> None:
    check(history, T0, ["fp_a"])
    check(history, T0 + HOUR, ["fp_b"], target="other")
    (tmp_path / "fpmon.lock").write_text(
        'version = 1\n[targets.grok]\nfingerprints = ["fp_a"]\nmodels = []\n'
    )
    config = load_config(
        history=tmp_path / "history.db", baseline=tmp_path / "fpmon.lock", require_targets=False
    )
    report = build_report(config, ["grok", "other"], Window(until=T0 + HOUR), T0 + 2 * HOUR)
    assert [t.name for t in report.targets] == ["grok"] and report.idle == ("other",)
    (grok,) = report.targets
    assert grok.lock is not None and grok.of(BandKind.FINGERPRINT)[0].locked
    assert report.records == 2
    assert report.chain is not None and report.chain.broken is None
    assert report.chain.records == 2
    assert report.buckets.start <= T0 and report.buckets.end >= T0 + HOUR
    assert build_report(config, [], Window(), T0 + 2 * HOUR, verify=False).chain is None


# --- the page ---------------------------------------------------------------------------------


def page(**target: object) -> str:
    buckets = Buckets(T0, 3600, 3)
    fingerprints = [
        Band(BandKind.FINGERPRINT, value, (1, 0, 1), locked=i == 0)
        for i, value in enumerate(HOSTILE)
    ]
    base = TargetReport(
        name="</h2><script>window.pwned=1</script>",
        status="same",
        checks=2,
        successful_checks=2,
        new_events=0,
        last_change_at=T0,
        ok=(2, 0, 2),
        bands=(*fingerprints, Band(BandKind.ERROR, "timeout", (0, 1, 0))),
        changes=(),
        change_count=0,
        learning=None,
        lock=LockEntry(frozenset({HOSTILE[0]}), frozenset()),
    )
    report = Report(
        generated_at=T0 + 3 * HOUR,
        version="0.0.test",
        buckets=buckets,
        since=None,
        until=None,
        sources=ALL_SOURCES,
        targets=(replace(base, **target),),  # type: ignore[arg-type]
        idle=(),
        records=5,
        chain=ChainState(5, 5, "ab" * 32, 0, None),
    )
    return render_report(report)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [v or "" for k, v in attrs if k in ("src", "href", "action", "srcset")]


def links(html: str) -> list[str]:
    """Every URL an element of the page names (what a browser would fetch or follow)."""
    parser = _Links()
    parser.feed(html)
    return parser.found


def inline_blocks(html: str, tag: str) -> list[str]:
    return re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)


def test_server_strings_are_escaped_in_the_html_and_in_the_json() -> None:
    html = page()
    outside_data = re.sub(
        r'<script type="application/json" id="report-data">.*?</script>', "", html, flags=re.S
    )
    for hostile in HOSTILE:
        assert hostile not in outside_data
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in outside_data
    assert "&quot;&gt;&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;" in outside_data
    (data,) = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', html)
    assert "<" not in data and ">" not in data
    values = [band["value"] for band in json.loads(data)["targets"][0]["bands"]]
    assert values[:2] == HOSTILE


def test_the_policy_allows_only_the_inline_blocks_and_no_request() -> None:
    html = page()
    (policy,) = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    rules = dict(rule.split(" ", 1) for rule in policy.split("; "))
    assert rules["default-src"] == "'none'"
    for tag, rule in (("script", "script-src"), ("style", "style-src")):
        hashes = {
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in inline_blocks(html, tag)
        }
        assert len(hashes) == 2 and set(rules[rule].split()) == hashes
    assert "unsafe" not in policy
    assert not [link for link in links(html) if not link.startswith("#")]  # nothing to fetch


def test_the_page_inlines_uplot_with_its_version_and_licence() -> None:
    html = page()
    assert asset("uPlot.iife.min.js") in html
    assert f"(v{UPLOT_VERSION})" in asset("uPlot.iife.min.js")
    assert "MIT License" in asset("uPlot.LICENSE")
    assert f"| {UPLOT_VERSION} |" in asset("README.md")
    assert f"uPlot {UPLOT_VERSION}" in html


def test_every_chart_has_a_table_and_the_lock_is_marked() -> None:
    html = page()
    assert len(re.findall(r'<div class="chart (timeline|share)"', html)) == 2
    assert html.count("<details>") == 2
    assert "(lock)" in html
    assert "timeout 1" in html  # the error period with its kind


def test_a_signature_band_is_drawn_where_the_history_has_them() -> None:
    signature = Band(BandKind.SIGNATURE, "sig-7f3a", (1, 1, 1))
    html = page(bands=(signature,), ok=(1, 1, 1))
    (data,) = re.findall(r'id="report-data">(.*?)</script>', html)
    assert json.loads(data)["targets"][0]["bands"][0]["kind"] == "signature"
    assert "one band per signature" in html
