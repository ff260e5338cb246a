"""Prometheus metrics: the snapshot from the history, how a check advances it, and the text
format, read back with prometheus-client's own parser."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fp_monitor.config.providers import Auth
from fp_monitor.config.settings import Target
from fp_monitor.domain.models import (
    ABSENT,
    NULL,
    CheckResult,
    ErrorKind,
    Source,
    Status,
    TargetState,
)
from fp_monitor.output.metrics import Snapshot, advance, exposition
from fp_monitor.pipeline import read_metrics, with_traffic_since
from fp_monitor.store.history import History
from tests.unit.notify.test_notify import target as target_result
from tests.unit.store.test_history import T0, obs, record

TRAFFIC = Source.TRAFFIC
GROK = Target("grok", "xai", "grok-4", "https://api.x.ai/v1", Auth.BEARER, "XAI_API_KEY", "mt")


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """metric sample name -> [(labels, value)], parsed the way Prometheus tools parse it."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_an_empty_snapshot_exposes_zeroed_counters_only() -> None:
    text = exposition(Snapshot((GROK,), {}))
    assert samples(text) == {
        "fpmon_fingerprint_changes_total": [
            ({"target": "grok", "status": s}, 0.0) for s in ("first", "new", "changed", "learned")
        ]
    }


def test_every_metric_with_its_labels_and_base_units() -> None:
    state = TargetState(
        last_checked_at=T0,
        last_ok=True,
        latency_ms=412.0,
        served=frozenset(
            {("fp_a", "grok-4-0709"), (NULL, "grok-4-0709"), (ABSENT, ""), ("", NULL)}
        ),
        status_counts={"first": 1, "same": 7, "new": 2},
        last_change_at=T0 - timedelta(hours=1),
    )
    text = exposition(Snapshot((GROK,), {"grok": state}, last_check=T0, interval=300.0))
    found = samples(text)
    info = sorted((s["fingerprint"], s["model"]) for s, _ in found["fpmon_fingerprint_info"])
    assert info == [
        ("<absent>", "<empty>"),
        ("<empty>", "<null>"),
        ("<null>", "grok-4-0709"),
        ("fp_a", "grok-4-0709"),
    ]
    assert {s["provider"] for s, _ in found["fpmon_fingerprint_info"]} == {"xai"}
    assert {v for _, v in found["fpmon_fingerprint_info"]} == {1.0}
    assert found["fpmon_probe_success"] == [({"target": "grok"}, 1.0)]
    assert found["fpmon_probe_duration_seconds"] == [({"target": "grok"}, 0.412)]
    changes = {s["status"]: v for s, v in found["fpmon_fingerprint_changes_total"]}
    assert changes == {"first": 1, "new": 2, "changed": 0, "learned": 0}
    assert found["fpmon_last_change_timestamp_seconds"] == [
        ({"target": "grok"}, (T0 - timedelta(hours=1)).timestamp())
    ]
    assert found["fpmon_last_check_timestamp_seconds"] == [({}, T0.timestamp())]
    assert found["fpmon_watch_interval_seconds"] == [({}, 300.0)]
    assert "# TYPE fpmon_fingerprint_changes_total counter" in text


def test_advance_applies_one_check() -> None:
    start = Snapshot((GROK,), {})
    later = T0 + timedelta(minutes=5)
    first = advance(
        start,
        CheckResult("a", T0, (target_result(Status.FIRST),), 0, True),
        {"grok": frozenset({("fp_b", "m-1")})},
    )
    failed = advance(first, CheckResult("b", later, (target_result(Status.ERROR),), 3, True), {})
    state = failed.states["grok"]
    assert state.last_ok is False and state.latency_ms is None
    assert state.served == frozenset({("fp_b", "m-1")})  # the latest *successful* check
    assert state.status_counts == {"first": 1, "error": 1}
    assert state.last_change_at == T0 and state.last_checked_at == later
    assert failed.last_check == later
    assert start.states == {}  # snapshots are values: advancing builds a new one


def test_load_snapshot_reads_the_history(tmp_path: Path) -> None:
    with History.open(tmp_path / "h.db") as history:
        record(history, [obs("fp_a"), obs("fp_a")], at=T0)
        record(history, [obs("fp_a"), obs("fp_b", latency=300.0)], at=T0 + timedelta(minutes=1))
        record(history, [obs(NULL, ABSENT), obs("")], at=T0 + timedelta(minutes=2))
        last = T0 + timedelta(minutes=3)
        record(history, [obs(error=ErrorKind.TIMEOUT, latency=None)], at=last)
        snapshot = read_metrics(history, [GROK], interval=60.0)
        other = history.state("nobody")
    state = snapshot.states["grok"]
    assert state.last_checked_at == last and state.last_ok is False
    assert state.latency_ms is None
    assert state.served == frozenset({(NULL, ABSENT), ("", "m-1")})
    assert state.status_counts == {"first": 1, "new": 2, "error": 1}
    assert state.last_change_at == T0 + timedelta(minutes=2)
    assert (snapshot.last_check, snapshot.interval) == (last, 60.0)
    assert other == TargetState()


def test_latency_is_the_median_of_the_successful_samples(tmp_path: Path) -> None:
    with History.open(tmp_path / "h.db") as history:
        record(
            history,
            [obs(latency=100.0), obs(latency=300.0), obs(error=ErrorKind.SERVER, latency=9.0)],
        )
        assert history.state("grok").latency_ms == pytest.approx(200.0)


def test_snapshot_times_are_utc_unix_seconds() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    found = samples(exposition(Snapshot((GROK,), {}, last_check=moment)))
    assert found["fpmon_last_check_timestamp_seconds"] == [({}, 1767225600.0)]


def test_traffic_counts_its_once_per_value_statuses_and_not_the_probe_gauges(
    tmp_path: Path,
) -> None:
    """A value first seen in traffic is a `new` in the counters as a probe's would be; a
    traffic `changed` (one response, one sample) is not counted, and the probe gauges stay the
    probes'."""
    minute = timedelta(minutes=1)
    with History.open(tmp_path / "h.db") as history:
        record(history, [obs("fp_a", latency=100.0), obs("fp_b")], at=T0)  # first
        snapshot = read_metrics(history, [GROK])
        assert with_traffic_since(history, snapshot) == snapshot  # nothing new yet
        for n, fingerprint in enumerate(["fp_a", "fp_b", "fp_c", "fp_c"], start=1):
            record(history, [obs(fingerprint, latency=9.0)], at=T0 + n * minute, source=TRAFFIC)
        record(history, [obs("fp_x", target="other")], target="other", source=TRAFFIC)
        statuses = [s for (s,) in history._db.execute("SELECT status FROM checks ORDER BY id")]
        assert statuses == ["first", "same", "changed", "new", "same", "first"]
        live = with_traffic_since(history, snapshot)
        assert with_traffic_since(history, live) == live  # each traffic check counted once
        reloaded = read_metrics(history, [GROK])
    for state in (live.states["grok"], reloaded.states["grok"]):
        assert state.status_counts.get("new") == 1 and "changed" not in state.status_counts
        assert state.last_change_at == T0 + 3 * minute
        assert state.served == frozenset({("fp_a", "m-1"), ("fp_b", "m-1")})  # the probe's
        assert state.latency_ms == pytest.approx((100.0 + 123.5) / 2)
        assert state.last_checked_at == T0
    assert set(live.states) == {"grok"}  # traffic of an unwatched target is not exported


def test_samples_are_counted_per_site_with_escaped_labels(tmp_path: Path) -> None:
    hostile = "eu\x1b[2J\n" + "x" * 200
    with History.open(tmp_path / "h.db") as history:
        eu = replace(obs("fp_a"), site="eu-west")
        record(history, [eu, eu], at=T0)
        record(history, [replace(obs("fp_b"), site=hostile)], at=T0 + timedelta(minutes=1))
        record(history, [obs("fp_b")], at=T0 + timedelta(minutes=2))  # before sites
        snapshot = read_metrics(history, [GROK])
    found = samples(exposition(snapshot))["fpmon_samples_total"]
    counts = {labels["site"]: value for labels, value in found}
    assert counts["eu-west"] == 2 and counts[""] == 1
    (shown,) = [site for site in counts if site.startswith("eu\\")]
    assert "\x1b" not in shown and "\n" not in shown and len(shown) == 128
    assert {labels["target"] for labels, _ in found} == {"grok"}
