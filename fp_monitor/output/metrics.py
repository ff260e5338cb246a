"""Prometheus metrics: a snapshot of the watched targets (read from the history by the
pipeline, advanced by each check), exposed by a collector on a registry of its own: served
over HTTP by `fpmon watch`, written as a node-exporter textfile by `fpmon check --metrics-file`.

Every value is in base units (seconds, Unix time). The collector reads the snapshot whole on
each scrape, so a scrape never sees half a check, and a fingerprint that stops being served
disappears from `fpmon_fingerprint_info` instead of lingering as a stale series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fp_monitor.config.settings import Target, target_canary
from fp_monitor.domain.canary import CanaryMode
from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.models import ABSENT, CHANGE_STATUSES, NULL, CheckResult, Status, TargetState
from fp_monitor.domain.text import clean, shorten
from fp_monitor.fileio import check_writable, write_atomic

# Label values for the fingerprint states a string cannot show.
_LABELS = {NULL: "<null>", ABSENT: "<absent>", "": "<empty>"}
LABEL_LIMIT = 128
"""Characters of a label value; fingerprints and model names are far shorter."""


@dataclass(frozen=True)
class Snapshot:
    targets: tuple[Target, ...]
    states: Mapping[str, TargetState]
    last_check: datetime | None = None
    interval: float | None = None
    """The watch's --every; None for a one-off check."""
    traffic_after: int = 0
    """The last check row the snapshot has seen: traffic recorded after it is still to count."""
    samples: Mapping[tuple[str, str | None], int] = field(default_factory=dict)
    """(target, site) -> samples recorded; site None: records made before sites."""


def snapshot_of(
    targets: Sequence[Target],
    states: Mapping[str, TargetState],
    traffic_after: int,
    interval: float | None = None,
) -> Snapshot:
    """Where each target stands, from its state in the history."""
    times = [s.last_checked_at for s in states.values() if s.last_checked_at is not None]
    return Snapshot(tuple(targets), states, max(times, default=None), interval, traffic_after)


def advance(
    snapshot: Snapshot, result: CheckResult, served: Mapping[str, frozenset[tuple[str, str]]]
) -> Snapshot:
    """The snapshot after one more check; `served`: its (fingerprint, model) pairs per target."""
    states = dict(snapshot.states)
    for target in result.targets:
        old = states.get(target.name, TargetState())
        ok = target.status is not Status.ERROR
        counts = dict(old.status_counts)
        counts[target.status.value] = counts.get(target.status.value, 0) + 1
        states[target.name] = TargetState(
            last_checked_at=result.checked_at,
            last_ok=ok,
            latency_ms=target.latency_ms,
            served=served.get(target.name, frozenset()) if ok else old.served,
            status_counts=counts,
            last_change_at=(
                result.checked_at if target.status in CHANGE_STATUSES else old.last_change_at
            ),
            canary_distance=(
                target.canary.distance
                if target.canary is not None and target.canary.distance is not None
                else old.canary_distance
            ),
        )
    return replace(snapshot, states=states, last_check=result.checked_at)


def with_traffic(
    snapshot: Snapshot, changes: Iterable[tuple[str, Status, datetime]], last_row: int
) -> Snapshot:
    """The snapshot with the traffic checks recorded since it was taken (by applications'
    recording clients and `fpmon proxy`, up to check row `last_row`): a value first seen there
    counts as a probe's would (TRAFFIC_STATUSES)."""
    states = dict(snapshot.states)
    for name, status, checked_at in changes:
        if (old := states.get(name)) is None:
            continue  # not a watched target
        counts = dict(old.status_counts)
        counts[status.value] = counts.get(status.value, 0) + 1
        last_change = max(old.last_change_at or checked_at, checked_at)
        states[name] = replace(old, status_counts=counts, last_change_at=last_change)
    return replace(snapshot, states=states, traffic_after=last_row)


def label(text: str) -> str:
    """A label value that every Prometheus parser reads back: control characters escaped, a
    server's long string cut with a marker (a 1 MB fingerprint would be a 1 MB series)."""
    return _LABELS.get(text) or shorten(clean(text), LABEL_LIMIT)


def families(snapshot: Snapshot) -> list[Metric]:
    info = GaugeMetricFamily(
        "fpmon_fingerprint_info",
        "1 for each (fingerprint, resolved model) of the target's latest successful check",
        labels=["target", "provider", "model", "fingerprint"],
    )
    success = GaugeMetricFamily(
        "fpmon_probe_success",
        "1 when a sample of the target's latest check succeeded, else 0",
        labels=["target"],
    )
    duration = GaugeMetricFamily(
        "fpmon_probe_duration_seconds",
        "Median latency of the successful samples of the target's latest check",
        labels=["target"],
    )
    changes = CounterMetricFamily(
        "fpmon_fingerprint_changes",
        "Checks whose status moved the served set: first, new, changed or learned",
        labels=["target", "status"],
    )
    last_change = GaugeMetricFamily(
        "fpmon_last_change_timestamp_seconds",
        "When a check of the target last had a status that moved the served set",
        labels=["target"],
    )
    samples = CounterMetricFamily(
        "fpmon_samples",
        "Samples recorded for the target (probes and traffic), by the site they were made from",
        labels=["target", "site"],
    )
    for (target_name, site), count in sorted(
        _merged_samples(snapshot.samples).items(), key=lambda kv: kv[0]
    ):
        samples.add_metric([target_name, site], count)
    drifts = CounterMetricFamily(
        "fpmon_canary_drift",
        "Checks whose status was drift: every fingerprint known, the behaviour not (the canary)",
        labels=["target"],
    )
    distance = GaugeMetricFamily(
        "fpmon_canary_distance",
        "The canary's distance (nats; total variation in sampled mode) of the latest check's "
        "most unusual sample from the nearest known behaviour",
        labels=["target"],
    )
    for target in snapshot.targets:
        state = snapshot.states.get(target.name, TargetState())
        name = label(target.name)
        # Two values that differ only past the cut give one series: a duplicate series makes
        # node-exporter reject the whole textfile.
        served = {(label(fingerprint), label(model)) for fingerprint, model in state.served}
        for fingerprint, model in sorted(served):
            info.add_metric([name, label(target.provider), model, fingerprint], 1)
        if state.last_ok is not None:
            success.add_metric([name], 1 if state.last_ok else 0)
        if state.latency_ms is not None:
            duration.add_metric([name], state.latency_ms / 1000)
        # Every status from 0, so that increase() sees the first change too.
        for status in CHANGE_STATUSES:
            changes.add_metric([name, status.value], state.status_counts.get(status, 0))
        if state.last_change_at is not None:
            last_change.add_metric([name], state.last_change_at.timestamp())
        if target_canary(target)[0] is not CanaryMode.OFF:
            drifts.add_metric([name], state.status_counts.get(Status.DRIFT, 0))
            if state.canary_distance is not None:
                distance.add_metric([name], state.canary_distance)
    found: list[Metric] = [info, success, duration, changes, last_change, samples]
    found += [family for family in (drifts, distance) if family.samples]
    if snapshot.last_check is not None:
        found.append(
            GaugeMetricFamily(
                "fpmon_last_check_timestamp_seconds",
                "When the latest check finished",
                value=snapshot.last_check.timestamp(),
            )
        )
    if snapshot.interval is not None:
        found.append(
            GaugeMetricFamily(
                "fpmon_watch_interval_seconds",
                "The watch's --every: alert when no check came for a few of these",
                value=snapshot.interval,
            )
        )
    return found


def _merged_samples(counts: Mapping[tuple[str, str | None], int]) -> dict[tuple[str, str], int]:
    """Counts by label values: two sites that differ only past the label's cut are one series
    (a duplicate series makes node-exporter reject the whole textfile); records without a
    site have an empty label, which Prometheus reads as no label."""
    merged: dict[tuple[str, str], int] = {}
    for (target, site), count in counts.items():
        key = (label(target), "" if site is None else label(site))
        merged[key] = merged.get(key, 0) + count
    return merged


class SnapshotCollector(Collector):
    """Exposes whichever snapshot was set last (swapped whole by the watch loop)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return families(self.snapshot)


def _registry(collector: Collector) -> CollectorRegistry:
    """A registry of our own: no process or platform collectors, no global state."""
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def exposition(snapshot: Snapshot) -> str:
    """The Prometheus text format."""
    return generate_latest(_registry(SnapshotCollector(snapshot))).decode()


def serve(collector: SnapshotCollector, addr: str, port: int) -> tuple[WSGIServer, str]:
    """Serve /metrics in a daemon thread; the server and its URL (port 0: any free port)."""
    try:
        server, _thread = start_http_server(port, addr=addr, registry=_registry(collector))
    except OSError as exc:
        raise ConfigError(
            f"--metrics-port {port}: cannot listen on {addr}: {exc.strerror or exc}"
        ) from None
    host = f"[{addr}]" if ":" in addr else addr
    return server, f"http://{host}:{server.server_port}/metrics"


def check_textfile(path: Path) -> None:
    """Refuse, before anything is probed, a --metrics-file that could not be written."""
    check_writable(path, "--metrics-file")


def write_textfile(path: Path, snapshot: Snapshot) -> None:
    """The snapshot's metrics in node-exporter textfile format, written atomically."""
    write_atomic(path, exposition(snapshot))
